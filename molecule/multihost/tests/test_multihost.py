"""Five hosts: requests through the load balancer, the firewall between the hosts, one beat, and deploys and a
rollback across the hosts under load through the load balancer.

Each test runs once for the whole cluster (no testinfra `host` fixture): it reaches each host by name.
Load goes through the lb's nginx, over HTTPS, to the scenario's own containers only.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(PROJECT / "scripts"))

from loadgen import LoadGenerator  # noqa: E402

INVENTORY = os.environ["MOLECULE_EPHEMERAL_DIRECTORY"] + "/inventory"
CHECKOUT = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "keelapp"
APP, DOMAIN, ROOT = "keelapp", "keelapp.test", "/srv/keelapp"
LB, WEBS, WORKER, DATA = "keel-mh-lb", ["keel-mh-web1", "keel-mh-web2"], "keel-mh-worker1", "keel-mh-data1"
APP_HOSTS = [*WEBS, WORKER]
MIN_REQUESTS = 1000
RECORD = PROJECT / ".cache" / "test-logs" / "multihost.txt"


def on(name):
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={INVENTORY}")


def address(name):
    return on(name).check_output("hostname -I").split()[0]


def reaches(source, target, port):
    """Whether a TCP connection from source to target:port opens within 3 s."""
    return on(source).run(f"timeout 3 bash -c 'exec 3<>/dev/tcp/{address(target)}/{port}'").rc == 0


def live(name):
    return json.loads(on(name).check_output(f"cat {ROOT}/current/release.json"))


def playbook(name, *extra_vars):
    command = ["ansible-playbook", "-i", INVENTORY, name]
    for assignment in extra_vars:
        command += ["-e", assignment]
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(PROJECT / "roles"), ANSIBLE_PIPELINING="True", ANSIBLE_NOCOLOR="1")
    return subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=900, check=False)


def under_load(name, *extra_vars):
    """A playbook while requests go through the load balancer; (its result, the load's result)."""
    load = LoadGenerator(address(LB), DOMAIN, ["/version", "/healthz", "/readyz"], threads=4, max_requests=100_000,
                         max_seconds=900, https=True)  # fmt: skip
    load.start()
    started = time.monotonic()
    result = playbook(name, *extra_vars)
    seconds = time.monotonic() - started
    outcome = load.stop(min_requests=MIN_REQUESTS)
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    with RECORD.open("a") as record:
        record.write(f"{name} (exit {result.returncode}, {seconds:.1f} s): {outcome.summary()}\n")
    return result, outcome


def commit(message, line):
    page = CHECKOUT / "app" / "guestbook" / "templates" / "guestbook" / "home.html"
    page.write_text(page.read_text() + line + "\n")
    git = ["git", "-C", str(CHECKOUT), "-c", "user.name=Keel", "-c", "user.email=keel@keelapp.test"]
    subprocess.run([*git, "commit", "--quiet", "-am", message], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def assert_ok(result):
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_site_answers_through_the_load_balancer_from_both_web_hosts():
    lb = on(LB)
    answer = lb.check_output(f"curl -sk --resolve {DOMAIN}:443:127.0.0.1 https://{DOMAIN}/version")
    assert json.loads(answer)["release"] == live(WEBS[0])["release"]
    # Each web host's nginx answers the lb over the private network, with the same release.
    for web in WEBS:
        status = lb.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: {DOMAIN}' "
                                 f"-H 'X-Forwarded-Proto: https' http://{address(web)}/healthz")  # fmt: skip
        assert status == "200", web
        assert live(web)["release"] == live(WEBS[0])["release"]
    # The lb serves no static file of its own: they come from the web hosts, through it.
    assert not lb.file(f"{ROOT}").exists


@pytest.mark.parametrize("port", [5432, 6379])
def test_postgresql_and_redis_answer_the_app_hosts_only(port):
    for app_host in APP_HOSTS:
        assert reaches(app_host, DATA, port), f"{app_host} cannot reach {DATA}:{port}"
    assert not reaches(LB, DATA, port), f"the load balancer reaches {DATA}:{port}"


def test_the_web_hosts_take_http_from_the_load_balancer_only():
    for web in WEBS:
        assert reaches(LB, web, 80)
        assert not reaches(DATA, web, 80), f"{DATA} reaches {web}:80"
        assert not reaches(WORKER, web, 443)
    assert reaches(WORKER, LB, 443)


def test_exactly_one_beat_runs_in_the_cluster():
    running = [name for name in [LB, *APP_HOSTS, DATA]
               if on(name).run(f"systemctl is-active --quiet {APP}-celery-beat.service").rc == 0]  # fmt: skip
    assert running == [WORKER]
    assert on(WORKER).service(f"{APP}-celery-worker.service").is_running
    for web in WEBS:
        assert not on(web).service(f"{APP}-celery-worker.service").is_running


def test_a_deploy_under_load_through_the_load_balancer_drops_no_request():
    before = live(WEBS[0])
    sha = commit("Change a page", "<!-- multihost change -->")
    result, load = under_load("deploy.yml")
    assert_ok(result)
    assert load.failed == 0 and load.sent >= MIN_REQUESTS, load.summary()
    releases = {name: live(name) for name in APP_HOSTS}
    assert {release["sha"] for release in releases.values()} == {sha}
    assert len({release["release"] for release in releases.values()}) == 1, releases
    assert releases[WEBS[0]]["previous"] == before["release"]


def test_a_rollback_puts_every_host_back_without_a_failed_request():
    before = live(WEBS[0])
    result, load = under_load("rollback.yml")
    assert_ok(result)
    assert load.failed == 0 and load.sent >= MIN_REQUESTS, load.summary()
    assert {live(name)["release"] for name in APP_HOSTS} == {before["previous"]}
