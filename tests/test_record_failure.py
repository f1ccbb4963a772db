"""A failed step's message keeps the command's last whole lines: never a line
cut in the middle, at most 1500 characters of them."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_a_long_error_is_cut_at_line_boundaries(tmp_path):
    output = tmp_path / "recorded.txt"
    result = subprocess.run(
        ["ansible-playbook", "tests/playbooks/record-failure.yml", "-i", "localhost,", "-c", "local",
         "-e", f"keel_test_output={output}", "-e", f"ansible_python_interpreter={sys.executable}"],
        cwd=REPO, env={**os.environ, "ANSIBLE_FORCE_COLOR": "0"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:]
    head, reason = output.read_text().split(": the step: ", 1)
    lines = reason.splitlines()
    assert head == "localhost"
    assert lines[-1] == "line 200 of what went wrong"
    assert all(line.startswith("line ") and line.endswith(" of what went wrong") for line in lines)
    assert len(reason) <= 1500 and len(lines) > 10
