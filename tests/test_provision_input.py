"""provision.yml refuses bad input before it changes any host.

Each case runs the real `ansible-playbook provision.yml` against an inventory
whose hosts are containers that do not exist, so not even a broken check
could change anything. A refused run must name the problem and stop before
the first play that touches a host.
"""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
FIRST_CHANGING_PLAY = "PLAY [Prepare the base system and harden every host]"
GROUPS = ("web", "worker", "beat", "db", "cache")
HOST = "keel-input-test-nonexistent"

GOOD_VARS = {
    "app_repo": "https://git.mysite.test/app.git",
    "app_domains": ["www.mysite.net", "mysite.net"],
    "vault_app_secret_key": "Zq8-" * 16,
    "vault_db_password": "db-password-0123456789",
    "vault_redis_password": "redis-password-0123456789",
}


def write_inventory(folder: Path, variables: dict, beat_hosts=(HOST,)) -> Path:
    groups = {group: {"hosts": {HOST: None}} for group in GROUPS}
    groups["beat"] = {"hosts": dict.fromkeys(beat_hosts)}
    inventory = {"test": {"vars": {"ansible_connection": "community.docker.docker"}, "children": groups}}
    (folder / "group_vars" / "test").mkdir(parents=True)
    (folder / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (folder / "group_vars" / "test" / "main.yml").write_text(yaml.safe_dump(variables))
    return folder


def provision(inventory: Path, *options: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_FORCE_COLOR": "0"}
    return subprocess.run(
        ["ansible-playbook", "provision.yml", "-i", str(inventory), *options],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def without(key: str) -> dict:
    return {name: value for name, value in GOOD_VARS.items() if name != key}


CASES = [
    pytest.param(without("app_repo"), (HOST,), "missing required arguments: app_repo", id="missing-app_repo"),
    pytest.param(
        {**GOOD_VARS, "app_domains": ["www.mysite.net", "not a host!"]}, (HOST,), "not a host!", id="bad-domain"
    ),
    pytest.param(
        {**GOOD_VARS, "app_domains": ["www.example.com"]}, (HOST,), "www.example.com", id="placeholder-domain"
    ),
    pytest.param(GOOD_VARS, (HOST, "keel-second-beat"), "The beat group has 2 hosts", id="two-beat-hosts"),
    pytest.param(
        without("vault_app_secret_key"), (HOST,), "vault_app_secret_key is not set", id="missing-vault-secret"
    ),
    pytest.param({**GOOD_VARS, "vault_db_password": "short"}, (HOST,), "vault_db_password", id="weak-vault-secret"),
    pytest.param({**GOOD_VARS, "gunicorn_workers": "many"}, (HOST,), "gunicorn_workers", id="non-integer-workers"),
    pytest.param({**GOOD_VARS, "app_name": "My App"}, (HOST,), "app_name must be lowercase", id="bad-app_name"),
    pytest.param(
        {**GOOD_VARS, "redis_maxmemory_policy": "evict-everything"}, (HOST,), "redis_maxmemory_policy", id="bad-choice"
    ),
    pytest.param(
        {**GOOD_VARS, "app_domains": ["mysite.net", "shop.mysite.test", "10.0.0.5", "intranet"]},
        (HOST,),
        "no public CA issues certificates for shop.mysite.test, 10.0.0.5, intranet",
        id="letsencrypt-private-domain",
    ),
    pytest.param(
        {**GOOD_VARS, "app_domains": ["shop.mysite.test"]},
        (HOST,),
        "set tls_mode: selfsigned",
        id="suggests-selfsigned",
    ),
    pytest.param({**GOOD_VARS, "certbot_email": "ops at mysite"}, (HOST,), "certbot_email is not an email", id="email"),
    pytest.param(
        {**GOOD_VARS, "certbot_acme_server": "http://acme.mysite.net/dir"},
        (HOST,),
        "certbot_acme_server must be the https:// URL of an ACME directory",
        id="acme-url",
    ),
    pytest.param({**GOOD_VARS, "certbot_key_type": "dsa"}, (HOST,), "certbot_key_type", id="key-type"),
    pytest.param({**GOOD_VARS, "tls_mode": "on"}, (HOST,), "tls_mode", id="tls-mode"),
]


@pytest.mark.parametrize(("variables", "beat_hosts", "message"), CASES)
def test_bad_input_is_refused_before_any_host_changes(tmp_path, variables, beat_hosts, message):
    run = provision(write_inventory(tmp_path, variables, beat_hosts))
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert message in output, output[-3000:]
    assert FIRST_CHANGING_PLAY not in output, "a play that changes hosts started"


@pytest.mark.parametrize(
    ("db_vars", "refused"), [({}, True), ({"keel_private_address": "10.0.0.5"}, False)], ids=["unknown", "in-inventory"]
)
def test_a_limit_that_leaves_out_a_host_whose_address_is_unknown_is_refused(tmp_path, db_vars, refused):
    inventory = write_inventory(tmp_path, GOOD_VARS)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    hosts["test"]["children"]["db"] = {"hosts": {"keel-input-test-db": db_vars or None}}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    run = provision(inventory, "--limit", HOST)
    output = " ".join((run.stdout + run.stderr).split())
    message = "The private address of keel-input-test-db is unknown"
    assert run.returncode != 0
    assert (message in output) is refused, output[-3000:]
    assert (FIRST_CHANGING_PLAY in output) is not refused, output[-3000:]


@pytest.mark.parametrize(
    "variables",
    [
        GOOD_VARS,
        {**GOOD_VARS, "tls_mode": "selfsigned", "app_domains": ["shop.mysite.test", "localhost"]},
        {**GOOD_VARS, "certbot_email": "ops@mysite.net", "certbot_acme_server": "https://acme.internal:14000/dir"},
    ],
    ids=["letsencrypt", "selfsigned-private-domains", "email-and-private-acme"],
)
def test_good_input_passes_the_checks(tmp_path, variables):
    run = provision(write_inventory(tmp_path, variables))
    output = run.stdout + run.stderr
    # The checks pass; the run then stops because the host does not exist.
    assert FIRST_CHANGING_PLAY in output, output[-3000:]
    assert run.returncode != 0
