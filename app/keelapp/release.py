"""Which release this process runs, read once from the release on disk.

The deploy writes release.json at the top of each release folder
(/srv/<app>/releases/<id>/release.json). The app looks for it from its own
code's real location upward, so the answer is the release whose code this
process imported, even after `current` has moved on.
"""

import json
import os
from pathlib import Path

RELEASE_FILE_NAME = "release.json"
UNKNOWN = {"release": "unknown", "sha": "unknown"}


def find_release_file(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / RELEASE_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def read_release(start: Path) -> dict[str, str]:
    """The release id and sha: from $RELEASE_ID, else release.json, else unknown."""
    if release_id := os.environ.get("RELEASE_ID"):
        return {"release": release_id, "sha": os.environ.get("RELEASE_SHA", "unknown")}
    path = find_release_file(start.resolve())
    if path is None:
        return dict(UNKNOWN)
    data = json.loads(path.read_text())
    return {"release": str(data.get("release", "unknown")), "sha": str(data.get("sha", "unknown"))}
