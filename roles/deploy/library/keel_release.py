#!/usr/bin/python3
"""The deploy's release folder on one host: the lock, creating a release, listing, the switch, pruning."""

DOCUMENTATION = r"""
module: keel_release
short_description: Manage a Keel app's releases on a host (lock, create, list, switch, prune)
description:
  - The layout under root is Keel's. releases/<YYYYmmddHHMMSS>-<sha> is one release. current is a symlink to the
    live one. venvs/<key> holds the virtualenvs that releases link as .venv. deploy.lock/ is the lock, with an
    owner file.
  - A release is complete once it has release.json, .keel-migrations.json and a finished virtualenv
    (.venv/.keel-complete); only complete releases can go live.
  - C(lock) takes the lock, or fails naming its owner. C(break_lock) removes a lock that a killed run left first.
    C(unlock) releases it.
  - C(create) makes releases/<release> from a commit of the git cache (source=git) or from a tar.gz archive
    (source=archive; the archive is removed afterwards). It checks that manage.py is in django_dir. A failed
    creation leaves nothing behind.
  - C(list) reports the live release, the one before it, every release, and the complete ones.
  - C(switch) points current at a complete release. A new link is renamed over the old one, so current always
    names one whole release.
  - C(prune) keeps the newest C(keep) releases, and never removes the live release or the one before it. It then
    removes the virtualenvs that no kept release uses. What goes is renamed away at once and deleted in the
    background.
options:
  action: {description: What to do., type: str, required: true, choices: [lock, unlock, create, list, switch, prune]}
  root: {description: "The app's folder (app_root).", type: path, required: true}
  current: {description: "The name of the live release's link in root.", type: str, default: current}
  owner: {description: "Who takes the lock and why, written to its owner file.", type: str, default: ""}
  break_lock: {description: "Remove a lock that is there before taking it.", type: bool, default: false}
  release: {description: "The release id, for create and switch.", type: str, default: ""}
  source: {description: "Where create takes the code from.", type: str, choices: [git, archive], default: git}
  repo_cache: {description: "The bare git cache, for source=git.", type: path}
  sha: {description: "The commit, for source=git.", type: str, default: ""}
  archive: {description: "The tar.gz archive, for source=archive.", type: path}
  django_dir: {description: "manage.py's folder in the release.", type: str, default: "."}
  keep: {description: "Releases prune keeps (at least 2).", type: int, default: 5}
"""

RETURN = r"""
live: {description: "The live release, or an empty string.", type: str, returned: always}
previous: {description: "The release before the live one (by id), or an empty string.", type: str, returned: always}
releases: {description: "Every release, oldest first.", type: list, returned: list}
complete: {description: "The releases that can go live, oldest first.", type: list, returned: list}
removed: {description: "What prune removed.", type: list, returned: prune}
"""

import contextlib
import os
import re
import shutil
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

RELEASE_ID = re.compile(r"[0-9]{14}-[0-9a-f]{7,40}")
COMPLETE_MARKERS = ("release.json", ".keel-migrations.json", os.path.join(".venv", ".keel-complete"))


class ReleaseError(Exception):
    """The action cannot be done; the message says why, and nothing was changed."""


class Layout:
    def __init__(self, root, current="current"):
        self.root = root
        self.releases_dir = os.path.join(root, "releases")
        self.venvs_dir = os.path.join(root, "venvs")
        self.current = os.path.join(root, current)
        self.lock = os.path.join(root, "deploy.lock")

    def release(self, release_id):
        if not RELEASE_ID.fullmatch(release_id or ""):
            raise ReleaseError(f"'{release_id}' is not a release id (YYYYmmddHHMMSS-<commit>)")
        return os.path.join(self.releases_dir, release_id)

    def releases(self):
        try:
            names = os.listdir(self.releases_dir)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if RELEASE_ID.fullmatch(name) and os.path.isdir(self.release(name)))

    def is_complete(self, release_id):
        return all(os.path.exists(os.path.join(self.release(release_id), marker)) for marker in COMPLETE_MARKERS)

    def live(self):
        try:
            return os.path.basename(os.readlink(self.current))
        except OSError:
            return ""

    def state(self):
        releases, live = self.releases(), self.live()
        older = [release for release in releases if release < live]
        return {
            "live": live,
            "previous": older[-1] if older else "",
            "releases": releases,
            "complete": [release for release in releases if self.is_complete(release)],
        }


def take_lock(layout, owner, break_lock=False):
    if break_lock:
        shutil.rmtree(layout.lock, ignore_errors=True)
    try:
        os.mkdir(layout.lock)
    except FileExistsError:
        try:
            with open(os.path.join(layout.lock, "owner")) as stream:
                holder = stream.read().strip() or "owner unknown"
        except OSError:
            holder = "owner unknown"
        raise ReleaseError(
            f"another deploy holds the lock on this host ({holder}). If no deploy is running (one was killed), "
            "run again with -e deploy_break_lock=true."
        ) from None
    with open(os.path.join(layout.lock, "owner"), "w") as stream:
        stream.write(owner + "\n")
    return {"changed": True}


def release_lock(layout):
    existed = os.path.isdir(layout.lock)
    shutil.rmtree(layout.lock, ignore_errors=True)
    return {"changed": existed}


def create(layout, release_id, source, django_dir=".", repo_cache=None, sha="", archive=None):
    path = layout.release(release_id)
    if source == "git" and not (repo_cache and sha):
        raise ReleaseError("source=git needs repo_cache and sha")
    if source == "archive" and not (archive and os.path.isfile(archive)):
        raise ReleaseError(f"the archive {archive} is missing")
    os.mkdir(path)
    try:
        if source == "git":
            extract_commit(repo_cache, sha, path)
        else:
            extract_archive(archive, path)
        if not os.path.isfile(os.path.join(path, django_dir, "manage.py")):
            raise ReleaseError(f"commit {sha[:12] or release_id} has no manage.py in {django_dir} (app_django_dir)")
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        if archive and source == "archive":
            with contextlib.suppress(OSError):
                os.unlink(archive)
    return {"changed": True, "release": release_id}


def extract_commit(repo_cache, sha, path):
    """git archive of the commit, unpacked by tar into path."""
    git = subprocess.Popen(["git", f"--git-dir={repo_cache}", "archive", "--format=tar", sha],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    tar = subprocess.run(["tar", "-x", "-C", path], stdin=git.stdout, capture_output=True, text=True, check=False)
    git.stdout.close()
    git_error = git.stderr.read().decode(errors="replace").strip()
    git.stderr.close()
    if git.wait() != 0:
        raise ReleaseError(f"git archive of {sha[:12]} failed: {git_error}")
    if tar.returncode != 0:
        raise ReleaseError(f"unpacking commit {sha[:12]} failed: {tar.stderr.strip()}")


def extract_archive(archive, path):
    tar = subprocess.run(["tar", "-xzf", archive, "-C", path], capture_output=True, text=True, check=False)
    if tar.returncode != 0:
        raise ReleaseError(f"the archive {archive} cannot be unpacked: {tar.stderr.strip()}")


def switch(layout, release_id):
    path = layout.release(release_id)
    if not os.path.isdir(path) or not layout.is_complete(release_id):
        state = layout.state()
        raise ReleaseError(
            f"Release {release_id} is not on this host, or is incomplete. Releases that can go live: "
            f"{', '.join(state['complete']) or 'none'}."
        )
    before = layout.live()
    if before == release_id:
        return {"changed": False, "was": before}
    link = os.path.join(layout.root, ".current.next")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(os.path.join("releases", release_id), link)
    os.replace(link, layout.current)
    return {"changed": True, "was": before}


def prune(layout, keep):
    if keep < 2:
        raise ReleaseError(f"keep is {keep}: at least 2 (the live release and the one before it)")
    state = layout.state()
    releases, protected = state["releases"], {state["live"], state["previous"]}
    removed = [release for release in releases[: max(len(releases) - keep, 0)] if release not in protected]
    kept = [release for release in releases if release not in removed]
    used = set()
    for release in kept:
        with contextlib.suppress(OSError):
            used.add(os.path.basename(os.readlink(os.path.join(layout.release(release), ".venv"))))
    try:
        venvs = sorted(
            name for name in os.listdir(layout.venvs_dir) if os.path.isdir(os.path.join(layout.venvs_dir, name))
        )
    except FileNotFoundError:
        venvs = []
    unused = [name for name in venvs if name not in used]
    leftovers = (
        [name for name in os.listdir(layout.releases_dir) if name.startswith(".") and name.endswith(".tar.gz")]
        if os.path.isdir(layout.releases_dir)
        else []
    )
    if not (removed or unused or leftovers):
        return {"changed": False, "removed": []}
    trash = os.path.join(layout.root, f".trash-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(trash)
    for release in removed:
        os.rename(layout.release(release), os.path.join(trash, f"release-{release}"))
    for name in unused:
        os.rename(os.path.join(layout.venvs_dir, name), os.path.join(trash, f"venv-{name}"))
    for name in leftovers:
        os.unlink(os.path.join(layout.releases_dir, name))
    # The deploy does not wait for thousands of files to go.
    subprocess.Popen(["rm", "-rf", "--", trash], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return {"changed": True, "removed": [f"release {r}" for r in removed] + [f"virtualenv {v}" for v in unused]}


def run(params):
    layout = Layout(params["root"], params.get("current") or "current")
    action = params["action"]
    if action == "lock":
        result = take_lock(layout, params["owner"], params["break_lock"])
    elif action == "unlock":
        result = release_lock(layout)
    elif action == "create":
        result = create(layout, params["release"], params["source"], params["django_dir"], params["repo_cache"],
                        params["sha"], params["archive"])  # fmt: skip
    elif action == "switch":
        result = switch(layout, params["release"])
    elif action == "prune":
        result = prune(layout, params["keep"])
    else:
        result = {"changed": False}
    state = layout.state()
    result.update(live=state["live"], previous=state["previous"])
    if action == "list":
        result.update(releases=state["releases"], complete=state["complete"])
    return result


def main():
    spec = {
        "action": {"type": "str", "required": True, "choices": ["lock", "unlock", "create", "list", "switch", "prune"]},
        "root": {"type": "path", "required": True},
        "current": {"type": "str", "default": "current"},
        "owner": {"type": "str", "default": ""},
        "break_lock": {"type": "bool", "default": False},
        "release": {"type": "str", "default": ""},
        "source": {"type": "str", "choices": ["git", "archive"], "default": "git"},
        "repo_cache": {"type": "path"},
        "sha": {"type": "str", "default": ""},
        "archive": {"type": "path"},
        "django_dir": {"type": "str", "default": "."},
        "keep": {"type": "int", "default": 5},
    }
    module = AnsibleModule(argument_spec=spec, supports_check_mode=False)
    try:
        module.exit_json(**run(module.params))
    except ReleaseError as error:
        module.fail_json(msg=str(error))


if __name__ == "__main__":
    main()
