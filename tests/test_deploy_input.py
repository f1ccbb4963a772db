"""deploy.yml and rollback.yml refuse bad input before they touch a host.

As in test_provision_input.py, the inventory's host is a container that does
not exist: a refused run names the problem, and the first task that would
reach a host never starts.
"""

import os
import subprocess
from pathlib import Path

import pytest
from test_provision_input import GOOD_VARS, write_inventory

REPO = Path(__file__).resolve().parent.parent
FIRST_HOST_TASK = {
    "deploy.yml": "TASK [deploy : Take the deploy lock, read which release is live, and fetch",
    "rollback.yml": "TASK [deploy : Take the deploy lock and list the releases on this host",
}


def run(playbook: str, inventory: Path, *extra_vars: str) -> subprocess.CompletedProcess:
    command = ["ansible-playbook", playbook, "-i", str(inventory)]
    for assignment in extra_vars:
        command += ["-e", assignment]
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)


CASES = [
    pytest.param("deploy.yml", ["app_version=--upload-pack=x"], "app_version must name one", id="option-ref"),
    pytest.param("deploy.yml", ['{"app_version": "main; rm -rf /"}'], "app_version must name one", id="ref-with-space"),
    pytest.param("deploy.yml", ["deploy_keep_releases=1"], "deploy_keep_releases must be at least 2", id="keep-one"),
    pytest.param("deploy.yml", ["deploy_source=ftp"], "deploy_source", id="bad-source"),
    pytest.param("deploy.yml", ["deploy_gate_timeout=soon"], "deploy_gate_timeout", id="bad-timeout"),
    pytest.param("rollback.yml", ["rollback_migrations=perhaps"], "rollback_migrations", id="bad-rollback-flag"),
    pytest.param("deploy.yml", ['{"deploy_shared_links": ["../etc"]}'], "not ../etc", id="shared-link-escapes"),
    pytest.param("deploy.yml", ["app_media_link=/var/media"], "not /var/media", id="absolute-media-link"),
    pytest.param("deploy.yml", ["app_dependencies=poetry"], "app_dependencies", id="unknown-dependency-tool"),
    pytest.param(
        "deploy.yml", ["deploy_web_batch_size=-1"], "0 (every host at once) or more, not '-1'", id="negative-batch"
    ),
    pytest.param("deploy.yml", ["deploy_web_batch_size=half"], "not 'half'", id="batch-not-a-number"),
    pytest.param(
        "deploy.yml", ['{"deploy_hooks": {"biuld_after": ["hooks/x.yml"]}}'], "biuld_after", id="misspelt-hook"
    ),
    pytest.param(
        "rollback.yml",
        ['{"deploy_hooks": {"rollback_afterr": ["hooks/x.yml"]}}'],
        "rollback_afterr",
        id="misspelt-rollback-hook",
    ),
]


@pytest.mark.parametrize(("playbook", "extra_vars", "message"), CASES)
def test_bad_input_is_refused_before_any_host_is_touched(tmp_path, playbook, extra_vars, message):
    result = run(playbook, write_inventory(tmp_path, GOOD_VARS), *extra_vars)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in " ".join(output.split()), output[-3000:]
    assert FIRST_HOST_TASK[playbook] not in output, "a task that reaches the host started"


@pytest.mark.parametrize("playbook", ["deploy.yml", "rollback.yml"])
def test_good_input_reaches_the_host(tmp_path, playbook):
    result = run(playbook, write_inventory(tmp_path, GOOD_VARS))
    # The checks pass; the run then stops because the host does not exist.
    assert FIRST_HOST_TASK[playbook] in result.stdout, result.stdout[-3000:]
    assert result.returncode != 0
