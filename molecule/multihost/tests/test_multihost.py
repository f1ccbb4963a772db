"""Five hosts: requests through the load balancer, the firewall between the hosts, one beat, and deploys and a
rollback across the hosts under load through the load balancer.

Each test runs once for the whole cluster (no testinfra `host` fixture): it reaches each host by name.
Load goes through the lb's nginx, over HTTPS, to the scenario's own containers only.
"""

import collections
import datetime
import json
import os
import re
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


def healthz_from_the_lb(web):
    """The HTTP status of the web host's /healthz, asked by the lb over the private network as it passes requests."""
    return on(LB).check_output(f"curl -s -o /dev/null -w '%{{http_code}}' -H 'Host: {DOMAIN}' "
                               f"-H 'X-Forwarded-Proto: https' http://{address(web)}/healthz")  # fmt: skip


def test_the_site_answers_through_the_load_balancer_from_both_web_hosts():
    lb = on(LB)
    answer = lb.check_output(f"curl -sk --resolve {DOMAIN}:443:127.0.0.1 https://{DOMAIN}/version")
    assert json.loads(answer)["release"] == live(WEBS[0])["release"]
    # Each web host's nginx answers the lb over the private network, with the same release.
    for web in WEBS:
        assert healthz_from_the_lb(web) == "200", web
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


def switched_at_ns(name):
    """When the host's current link was last replaced (its switch), in nanoseconds since the epoch."""
    return int(on(name).check_output(f"python3 -c 'import os; print(os.lstat(\"{ROOT}/current\").st_mtime_ns)'"))


def lb_upstream():
    return [line.strip() for line in on(LB).file(f"/etc/nginx/sites-available/{APP}.conf").content_string.splitlines()
            if "# keel web host:" in line]  # fmt: skip


def requests_from_the_lb_by_second(web):
    """How many requests the lb passed to this web host's nginx, per second (epoch), from its access log: those
    not from the host itself (the gate's), since UFW admits the lb's alone."""
    seconds = collections.Counter()
    for line in on(web).check_output("cat /var/log/nginx/access.log").splitlines():
        if line.split(" ", 1)[0] not in ("127.0.0.1", "::1"):
            stamp = line.split("[", 1)[1].split("]", 1)[0]
            seconds[int(datetime.datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z").timestamp())] += 1
    return seconds


def test_a_rolling_deploy_under_load_drains_each_web_host_and_drops_no_request(tmp_path):
    before = live(WEBS[0])
    sha = commit("Change a page", "<!-- multihost change -->")
    # A gate_before hook holds each web host 3 s after its switch, still drained: a window to look into.
    hold = tmp_path / "hold.yml"
    hold.write_text("- name: Hold the web host, drained, for 3 s\n  ansible.builtin.command: sleep 3\n"
                    "  changed_when: false\n  when: inventory_hostname in groups['web']\n")  # fmt: skip
    hooks = json.dumps({"deploy_hooks": {"gate_before": [str(hold)]}})
    result, load = under_load("deploy.yml", "deploy_web_batch_size=1", hooks)
    assert_ok(result)
    assert load.failed == 0 and load.sent >= MIN_REQUESTS, load.summary()
    releases = {name: live(name) for name in APP_HOSTS}
    assert {release["sha"] for release in releases.values()} == {sha}
    assert len({release["release"] for release in releases.values()}) == 1, releases
    assert releases[WEBS[0]]["previous"] == before["release"]
    # One web host at a time left the load balancer and came back; then the worker (with beat) switched.
    for web in WEBS:
        assert f"down {web}" in result.stdout and f"up {web}" in result.stdout
    switched = {name: switched_at_ns(name) for name in APP_HOSTS}  # in the hosts' order
    assert list(switched.values()) == sorted(switched.values())
    upstream = lb_upstream()
    assert len(upstream) == len(WEBS) and not any(" down;" in line for line in upstream)
    # While each web host was out, the lb sent it nothing, and sent the other one the load.
    passed = {web: requests_from_the_lb_by_second(web) for web in WEBS}
    for web, other in (WEBS, WEBS[::-1]):
        second = switched[web] // 1_000_000_000
        held = [second + 1, second + 2]  # whole seconds inside the 3 s hold after the switch
        assert [passed[web][at] for at in held] == [0, 0]
        assert all(passed[other][at] > 0 for at in held)


def test_a_web_host_that_fails_its_gate_mid_roll_is_switched_back_while_the_others_serve():
    before = {name: live(name)["release"] for name in APP_HOSTS}
    wsgi = CHECKOUT / "app" / "keelapp" / "wsgi.py"
    wsgi.write_text(wsgi.read_text() + (
        "\nimport socket  # noqa: E402\n\n"
        "if socket.gethostname() == 'mh-web2':  # as if a setting this release needs were missing there\n"
        "    raise RuntimeError('this release cannot start on mh-web2')\n"))  # fmt: skip
    git = ["git", "-C", str(CHECKOUT), "-c", "user.name=Keel", "-c", "user.email=keel@keelapp.test"]
    subprocess.run([*git, "commit", "--quiet", "-am", "A release that cannot start on web2"], check=True)
    try:
        result, load = under_load("deploy.yml", "deploy_web_batch_size=1", "deploy_gate_timeout=15")
    finally:
        subprocess.run([*git, "revert", "--quiet", "--no-edit", "HEAD"], check=True)
    assert result.returncode != 0, result.stdout[-4000:]
    assert load.failed == 0 and load.sent >= MIN_REQUESTS, load.summary()
    output = result.stdout + result.stderr
    assert "keel-mh-web2: Check through nginx" in output, output[-4000:]
    assert f"Switched back: {WEBS[0]}, {WEBS[1]}. Never switched: {WORKER}." in output, output[-4000:]
    assert {name: live(name)["release"] for name in APP_HOSTS} == before
    # web2 is back in the load balancer, on the release that was live, and serves.
    assert not any(" down;" in line for line in lb_upstream())
    assert on(WEBS[1]).service(f"{APP}-gunicorn.service").is_running
    assert healthz_from_the_lb(WEBS[1]) == "200"


def test_a_rollback_puts_every_host_back_without_a_failed_request():
    before = live(WEBS[0])
    result, load = under_load("rollback.yml")
    assert_ok(result)
    assert load.failed == 0 and load.sent >= MIN_REQUESTS, load.summary()
    assert {live(name)["release"] for name in APP_HOSTS} == {before["previous"]}


def psql(sql):
    return on(DATA).check_output(f"runuser -u postgres -- psql -d {APP} -tAc {sql!r}")


def test_a_backup_and_a_restore_across_the_hosts():
    result = playbook("backup.yml")
    assert_ok(result)
    name = re.search(r"Backup (\d{8}T\d{6}Z-manual) on", result.stdout).group(1)
    psql("CREATE TABLE keel_after_the_backup ()")
    result = playbook("restore.yml", f"backup={name}", "confirm=yes")
    assert_ok(result)
    # The database is the backup's again, and the site serves through the lb, out of maintenance.
    assert psql("SELECT to_regclass('keel_after_the_backup') IS NULL") == "t"
    answer = on(LB).check_output(f"curl -sk -o /dev/null -w '%{{http_code}}' --resolve {DOMAIN}:443:127.0.0.1 "
                                 f"https://{DOMAIN}/readyz")  # fmt: skip
    assert answer == "200"
    for web in WEBS:
        assert not on(web).file(f"/var/www/keel-maintenance/{APP}/on").exists


def test_status_reports_every_host_healthy():
    result = playbook("status.yml")
    assert_ok(result)
    # Healthy: the data host is not asked for a release. The lb is asked for the site through its nginx, the
    # only one that serves HTTPS (the web hosts behind it serve HTTP).
    for name in [LB, *APP_HOSTS, DATA]:
        assert f"ok: [{name}]" in result.stdout
    assert "200 through nginx (https)" in result.stdout, result.stdout[-3000:]
