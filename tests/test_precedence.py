"""Every Keel default loses to what the user sets, wherever Ansible users set it.

Keel's shared settings are role defaults (roles/keel), the lowest precedence.
Each case sets app_name in one place of an inventory: its group_vars/all.yml,
its environment's group_vars, a host's host_vars, or -e. The real provision.yml
must use that value (a bad one is refused with its own words, before any host
changes), and everything derived from app_name must follow it.
"""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
HOST = "keel-precedence-test-nonexistent"
GROUPS = ("web", "worker", "beat", "db", "cache")
SECRETS = {
    "app_repo": "https://git.mysite.test/app.git",
    "app_domains": ["www.mysite.test"],
    "vault_app_secret_key": "Zq8-" * 16,
    "vault_db_password": "db-password-0123456789",
    "vault_redis_password": "redis-password-0123456789",
}
PLACES = ["group_vars/all.yml", "group_vars/test/main.yml", f"host_vars/{HOST}.yml", "-e"]


def inventory_with(folder: Path, place: str, name: str) -> tuple[Path, list[str]]:
    groups = {group: {"hosts": {HOST: None}} for group in GROUPS}
    inventory = {"test": {"vars": {"ansible_connection": "community.docker.docker"}, "children": groups}}
    (folder / "hosts.yml").write_text(yaml.safe_dump(inventory))
    files = {"group_vars/test/main.yml": dict(SECRETS)}
    if place == "-e":
        extra = ["-e", f"app_name={name!r}"]
    else:
        files.setdefault(place, {})["app_name"] = name
        extra = []
    for relative, variables in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(variables))
    return folder / "hosts.yml", extra


def run(playbook: str, inventory: Path, extra: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0"}
    return subprocess.run(
        ["ansible-playbook", playbook, "-i", str(inventory), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("place", PLACES)
def test_a_setting_in_the_inventory_wins_and_what_derives_from_it_follows(tmp_path, place):
    inventory, extra = inventory_with(tmp_path, place, "myproj")
    result = run("tests/playbooks/show-settings.yml", inventory, extra)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    expected = "app_name=myproj app_user=myproj app_root=/srv/myproj app_env_file=/srv/myproj/shared/env"
    assert expected in output, output[-3000:]


@pytest.mark.parametrize("place", PLACES)
def test_the_real_provision_playbook_reads_the_setting_from_there(tmp_path, place):
    inventory, extra = inventory_with(tmp_path, place, "Not A Name")
    result = run("provision.yml", inventory, extra)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "(got 'Not A Name')" in output, output[-3000:]
    assert "PLAY [Prepare the base system and harden every host]" not in output
