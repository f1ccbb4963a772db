"""Living with the site from the command line, on the converged full-stack host: make status, make
manage and make logs, run as a user runs them (from the repository root, with this scenario's
inventory in place of inventories/<env>)."""

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
INVENTORY = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "") + "/inventory"
APP = "keelapp"
DOMAIN = "keelapp.net"
MANAGE = f"/usr/local/sbin/{APP}-manage"
UNITS = [f"{APP}-gunicorn.service", f"{APP}-celery-worker.service", f"{APP}-celery-beat.service",
         f"{APP}-gunicorn.socket", "nginx.service", "postgresql@17-main.service", "redis-server.service"]  # fmt: skip


def make(*arguments, env=None):
    environment = dict(os.environ, ANSIBLE_ROLES_PATH=str(PROJECT / "roles"), ANSIBLE_NOCOLOR="1", **(env or {}))
    return subprocess.run(
        ["make", "-s", *arguments, f"INVENTORY={INVENTORY}"],
        cwd=PROJECT, env=environment, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def keel_host(*arguments):
    return subprocess.run(
        [sys.executable, str(PROJECT / "scripts" / "keel-host.py"), "-i", INVENTORY, *arguments],
        cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def curl(host, arguments):
    """curl on the host, through nginx, as the site's visitors reach it; URLs say SITE."""
    return host.check_output(f"curl -sk --max-time 10 --resolve {DOMAIN}:443:127.0.0.1 " + arguments)


SITE = f"https://{DOMAIN}"


@pytest.fixture(scope="module", autouse=True)
def a_recent_backup(host):
    """status.yml wants a full backup younger than 26 h: make one if the other tests did not."""
    host.check_output(f"keel-backup --config /etc/keel/backup-{APP}.json --quiet run --no-offsite")


def test_status_shows_every_unit_active_and_exits_0(host):
    result = make("status")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    for unit in UNITS:
        assert re.search(rf"{re.escape(unit)}\s+active/running", result.stdout), unit
    live = host.check_output(f"readlink /srv/{APP}/current").split("/")[-1]
    assert re.search(rf"release\s+{live}", result.stdout)
    assert re.search(r"/readyz\s+200 through nginx \(https\)", result.stdout)
    assert re.search(r"certificate\s+\d+ days left", result.stdout)
    assert re.search(r"last backup\s+\d{8}T\d{6}Z-manual, 0\.\d h old", result.stdout)


def test_status_names_a_stopped_unit_and_fails(host):
    worker = f"{APP}-celery-worker.service"
    host.check_output(f"systemctl stop {worker}")
    try:
        result = make("status")
    finally:
        host.check_output(f"systemctl start {worker}")
    assert result.returncode != 0
    assert f"{worker}: inactive: journalctl -u {worker} says why" in " ".join((result.stdout + result.stderr).split())


def test_manage_creates_a_superuser_who_logs_in_to_the_admin_through_nginx(host):
    password = secrets.token_urlsafe(16)
    names = {"DJANGO_SUPERUSER_USERNAME": "keel-ops", "DJANGO_SUPERUSER_EMAIL": "ops@keelapp.net",
             "DJANGO_SUPERUSER_PASSWORD": password}  # fmt: skip
    host.check_output(f"{MANAGE} shell -c \"from django.contrib.auth.models import User; "
                      "User.objects.filter(username='keel-ops').delete()\"")  # fmt: skip
    result = make("manage", "CMD=createsuperuser --noinput", env=names)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Superuser created successfully" in result.stdout
    assert password not in host.check_output("journalctl --since '-5 min' --no-pager"), "the password is not logged"
    jar = "/tmp/keel-admin-cookies"
    host.check_output(f"rm -f {jar}")
    form = curl(host, f"-c {jar} -b {jar} {SITE}/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    answer = curl(
        host,
        f"-c {jar} -b {jar} -e {SITE}/admin/login/ -o /dev/null -w '%{{http_code}} %{{redirect_url}}' "
        f"--data-urlencode csrfmiddlewaretoken={token} --data-urlencode username=keel-ops "
        f"--data-urlencode password={password} '{SITE}/admin/login/?next=/admin/'",
    )
    assert answer == f"302 {SITE}/admin/", answer
    assert "Site administration" in curl(host, f"-b {jar} {SITE}/admin/")


def test_a_failing_management_command_passes_its_exit_code_on():
    result = keel_host("manage", "--", "shell", "-c", "import sys; print('leaving'); sys.exit(7)")
    assert result.returncode == 7 and "leaving" in result.stdout, result.stdout + result.stderr
    result = make("manage", "CMD=no_such_command")
    assert result.returncode != 0 and "Unknown command: 'no_such_command'" in result.stderr, result.stderr


def test_logs_show_the_line_a_request_just_made(host):
    marker = f"keel-logs-{secrets.token_hex(6)}"
    curl(host, f"-o /dev/null '{SITE}/?probe={marker}'")
    result = make("logs", "SINCE=2 min ago")
    lines = [line for line in result.stdout.splitlines() if marker in line]
    assert result.returncode == 0 and lines, result.stdout[-2000:] + result.stderr
    assert lines[0].startswith(f"{host.backend.get_hostname()} | ") and "gunicorn" in lines[0], lines
    result = make("logs", "UNIT=nginx", "LINES=50")
    assert any(marker in line for line in result.stdout.splitlines()), result.stdout[-2000:]
