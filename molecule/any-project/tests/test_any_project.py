"""A user's own project, shaped like cookiecutter-django's, goes live with the
README's recipe only, and lives through deploys, a broken worker and a rollback.

Each phase runs the real playbooks against this scenario's inventory. Load goes
through nginx to the test container, and only to it, over HTTPS (the host's
self-signed certificate, the project's own HTTPS redirect on): anything but a
2xx answer is a failure. The tests run in file order.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

SCENARIO = Path(__file__).resolve().parents[1]
PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", SCENARIO.parents[1]))
sys.path.insert(0, str(PROJECT / "scripts"))

from loadgen import LoadGenerator  # noqa: E402

APP = "cookieproj"
DOMAIN = "cookieproj.test"
ROOT = f"/srv/{APP}"
WORK = "/root/keel-work"
MEDIA_FILE = "uploads/keel-proof.txt"
MIN_REQUESTS = 1000
RECORD = PROJECT / ".cache" / "test-logs" / "any-project-proof.txt"


@pytest.fixture(scope="module")
def site(host):
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text("")
    return Site(host)


class Site:
    def __init__(self, host):
        self.host = host
        self.address = host.check_output("hostname -I").split()[0]

    def run(self, command):
        return self.host.check_output(command)

    def live(self):
        return json.loads(self.run(f"cat {ROOT}/current/release.json"))

    def releases(self):
        return sorted(self.run(f"ls -1 {ROOT}/releases").split())

    def commit(self, message, script):
        self.run(
            f"cd {WORK} && {script} && git add -A && "
            f"git -c user.name=Keel -c user.email=keel@keelapp.test commit --quiet -m '{message}' && "
            "git push --quiet origin main"
        )

    def playbook(self, name, *extra_vars):
        command = ["ansible-playbook", "-i", os.environ["MOLECULE_EPHEMERAL_DIRECTORY"] + "/inventory", name]
        for assignment in extra_vars:
            command += ["-e", assignment]
        env = dict(os.environ, ANSIBLE_ROLES_PATH=str(PROJECT / "roles"), ANSIBLE_NOCOLOR="1")
        return subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600, check=False)

    def under_load(self, name, *extra_vars):
        paths = ["/", f"/media/{MEDIA_FILE}"]
        # Over HTTPS, as the project's visitors come: every page must answer 2xx.
        load = LoadGenerator(self.address, DOMAIN, paths, threads=4, max_requests=100_000, max_seconds=900,
                             https=True)  # fmt: skip
        load.start()
        started = time.monotonic()
        result = self.playbook(name, *extra_vars)
        seconds = time.monotonic() - started
        outcome = load.stop(min_requests=MIN_REQUESTS)
        with RECORD.open("a") as record:
            record.write(f"{name} {' '.join(extra_vars)} (exit {result.returncode}, {seconds:.1f} s): ")
            record.write(outcome.summary() + "\n")
        return result, outcome

    def nginx_get(self, path):
        return self.run(f"curl -sk --max-time 10 --resolve {DOMAIN}:443:127.0.0.1 https://{DOMAIN}{path}")


def said(result, text):
    return " ".join(text.split()) in " ".join((result.stdout + result.stderr).split())


def output(result):
    return result.stdout[-4000:] + result.stderr[-2000:]


def assert_no_failed_request(load):
    assert load.sent >= MIN_REQUESTS and load.failed == 0 and not load.bounded, load.summary()


def readme_recipe():
    readme = (PROJECT / "README.md").read_text()
    return readme.split("## Deploy your own project", 1)[1].split("\n## ", 1)[0]


def test_the_project_needs_at_most_twelve_settings_each_in_the_readme_recipe():
    settings = yaml.safe_load((SCENARIO / "inventory" / "group_vars" / "all.yml").read_text())
    assert len(settings) <= 12, sorted(settings)
    recipe = readme_recipe()
    assert [name for name in settings if f"{name}:" not in recipe] == []


def test_dependencies_come_from_uv_lock_with_psycopg_compiled_on_the_host(site):
    assert site.live()["dependencies"] == "uv sync"
    python = f"{ROOT}/current/.venv/bin/python"
    assert site.run(f"{python} -c 'import psycopg; print(psycopg.pq.__impl__)'") == "c"
    assert site.host.run(f"{python} -c 'import debug_toolbar'").rc != 0, "the dev group is not installed"


def test_the_environment_file_speaks_the_names_the_project_reads(site):
    env = site.run(f"cat {ROOT}/shared/env")
    names = {line.split("=", 1)[0] for line in env.splitlines() if "=" in line and not line.startswith("#")}
    wanted = {"DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}
    assert wanted <= names
    assert "SECRET_KEY" not in names
    assert env.count("c00kie-pr0j-t3st") == 1, "the secret is written once"


def test_an_overridden_database_name_and_role_are_followed_end_to_end(site):
    """keel_test.yml names the database cookie_data and its role cookie_owner."""
    env = site.run(f"cat {ROOT}/shared/env")
    assert re.search(r'^DATABASE_URL="postgres://cookie_owner:[^@]+@[^/]+/cookie_data"$', env, re.M), env
    owners = site.run(
        "runuser -u postgres -- psql -XAtq -c \"SELECT datname || ':' || pg_get_userbyid(datdba) FROM pg_database "
        "WHERE datname IN ('cookie_data', 'cookieproj')\""
    )
    assert owners.split() == ["cookie_data:cookie_owner"]
    # The first deploy had migrations to apply: its pre-deploy dump is of cookie_data, checked and listed.
    listing = site.run(f"/usr/local/sbin/keel-backup --config /etc/keel/backup-{APP}.json --quiet list")
    pre_deploy = [backup for backup in json.loads(listing)["backups"] if backup["label"] == "pre-deploy"]
    assert pre_deploy, listing
    contents = site.run(f"pg_restore --list /var/backups/keel/{APP}/{pre_deploy[0]['name']}/database.dump")
    assert "dbname: cookie_data" in contents


def test_an_upload_lands_in_shared_media_inside_the_sandbox_and_nginx_serves_it(site):
    site.run("printf 'uploaded through gunicorn\\n' > /tmp/keel-proof.txt")
    # Straight to gunicorn's socket, as nginx over HTTPS would send it.
    answer = site.run(
        f"curl -s --max-time 10 --unix-socket /run/{APP}/gunicorn.sock -H 'Host: {DOMAIN}' "
        "-H 'X-Forwarded-Proto: https' -F file=@/tmp/keel-proof.txt http://localhost/uploads/"
    )
    assert json.loads(answer)["name"] == MEDIA_FILE, answer
    assert site.host.file(f"{ROOT}/shared/media/{MEDIA_FILE}").exists
    assert site.nginx_get(f"/media/{MEDIA_FILE}") == "uploaded through gunicorn"


def test_a_code_change_deploys_under_load_with_no_failed_request(site):
    before = site.live()
    site.commit("Change the home page", "sed -i 's/cookiecutter-django/cookiecutter-django, deployed/' "
                "cookieproj/pages/templates/pages/home.html")  # fmt: skip
    result, load = site.under_load("deploy.yml")
    assert result.returncode == 0, output(result)
    assert_no_failed_request(load)
    live = site.live()
    assert live["previous"] == before["release"] and live["requirements_hash"] == before["requirements_hash"]
    home = site.run(
        f"curl -s --unix-socket /run/{APP}/gunicorn.sock -H 'Host: {DOMAIN}' -H 'X-Forwarded-Proto: https' http://x/"
    )
    assert "deployed" in home


def test_a_release_whose_celery_worker_cannot_start_is_reverted_and_named(site):
    before, releases = site.live(), site.releases()
    site.commit("Break the worker", "echo 'import no_such_worker_dependency' >> cookieproj/pages/tasks.py")
    try:
        result, load = site.under_load("deploy.yml")
        assert result.returncode != 0
        assert said(result, f"{APP}-celery-worker.service does not stay up"), output(result)
        assert said(result, "No module named 'no_such_worker_dependency'"), output(result)
        assert said(result, f"Live: release {before['release']}"), output(result)
        assert_no_failed_request(load)
        assert site.live() == before and site.releases() == releases
        assert site.host.service(f"{APP}-celery-worker").is_running
    finally:
        site.commit("Mend the worker", "sed -i '/no_such_worker_dependency/d' cookieproj/pages/tasks.py")


def test_rollback_keeps_the_uploaded_media(site):
    before = site.live()
    digest = hashlib.sha256(b"uploaded through gunicorn\n").hexdigest()
    result, load = site.under_load("rollback.yml")
    assert result.returncode == 0, output(result)
    assert_no_failed_request(load)
    assert site.live()["release"] == before["previous"]
    assert site.run(f"sha256sum {ROOT}/current/cookieproj/media/{MEDIA_FILE}").split()[0] == digest
    assert site.nginx_get(f"/media/{MEDIA_FILE}") == "uploaded through gunicorn"
