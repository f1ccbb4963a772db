"""The deploy proof: deploys, a rollback and broken releases, under load.

Each phase runs the real playbook (ansible-playbook deploy.yml / rollback.yml
from the repository root, against this scenario's inventory) while
scripts/loadgen.py sends requests through nginx to the test container, and
only to it, over HTTPS. Every phase must see at least MIN_REQUESTS requests and not one
non-2xx answer or connection error. The tests run in file order: each phase
starts from the state the previous one left.
"""

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(PROJECT / "scripts"))

from loadgen import LoadGenerator  # noqa: E402

APP = "keelapp"
DOMAIN = "keelapp.net"  # the certificate is Pebble's: see ../molecule.yml
ROOT = f"/srv/{APP}"
WORK = "/root/keel-work"
MIN_REQUESTS = 1000
PLAYBOOK_TIMEOUT = 600
# Each phase's load summary, for the record.
RECORD = PROJECT / ".cache" / "test-logs" / "deploy-proof.txt"


@pytest.fixture(scope="module")
def site(host):
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text("")
    return Site(host)


class Site:
    """The test host as the proof sees it: its repository, releases and load."""

    def __init__(self, host):
        self.host = host
        self.address = host.check_output("hostname -I").split()[0]
        css = host.check_output(f"cd {ROOT}/current/app/staticfiles && ls guestbook/style.*.css | head -n 1")
        self.paths = ["/version", "/healthz", "/readyz", f"/static/{css}"]

    def run(self, command):
        return self.host.check_output(command)

    def commit(self, message, script):
        """Change the app in the host's work tree and push it to app_repo's main."""
        self.run(
            f"cd {WORK} && {script} && git add -A && "
            f"git -c user.name=Keel -c user.email=keel@keelapp.test commit --quiet -m '{message}' && "
            "git push --quiet origin main && git rev-parse HEAD"
        )
        return self.run(f"git -C {WORK} rev-parse HEAD")

    def live(self):
        return json.loads(self.run(f"cat {ROOT}/current/release.json"))

    def gunicorn_master(self):
        return self.run(f"systemctl show --property=MainPID --value {APP}-gunicorn.service")

    def gunicorn_restarts(self):
        return self.run(f"systemctl show --property=NRestarts --value {APP}-gunicorn.service")

    def releases(self):
        return sorted(self.run(f"ls -1 {ROOT}/releases").split())

    def venvs(self):
        return sorted(self.run(f"ls -1 {ROOT}/venvs").split())

    def playbook(self, name, *extra_vars):
        command = ["ansible-playbook", "-i", os.environ["MOLECULE_EPHEMERAL_DIRECTORY"] + "/inventory", name]
        for assignment in extra_vars:
            command += ["-e", assignment]
        env = dict(
            os.environ,
            ANSIBLE_ROLES_PATH=str(PROJECT / "roles"),
            ANSIBLE_PIPELINING="True",
            ANSIBLE_CALLBACK_RESULT_FORMAT="json",
            ANSIBLE_NOCOLOR="1",
        )
        return subprocess.run(
            command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=PLAYBOOK_TIMEOUT, check=False
        )

    def under_load(self, name, *extra_vars):
        """Run a playbook while the load generator runs; (playbook result, load result)."""
        load = LoadGenerator(self.address, DOMAIN, self.paths, threads=4, max_requests=100_000, max_seconds=900,
                             https=True)  # fmt: skip
        load.start()
        started = time.monotonic()
        result = self.playbook(name, *extra_vars)
        seconds = time.monotonic() - started
        outcome = load.stop(min_requests=MIN_REQUESTS)
        with RECORD.open("a") as record:
            phase = f"{name} {' '.join(extra_vars)}".strip()
            record.write(f"{phase} (exit {result.returncode}, {seconds:.1f} s): {outcome.summary()}\n")
        return result, outcome

    def newest_backup(self, label):
        """The manifest of the newest backup with this label (keel-backup, the backup role)."""
        listing = json.loads(self.run(f"/usr/local/sbin/keel-backup --config /etc/keel/backup-{APP}.json --quiet list"))
        name = next(backup["name"] for backup in listing["backups"] if backup["label"] == label)
        return json.loads(self.run(f"cat /var/backups/keel/{APP}/{name}/manifest.json"))

    def django(self, code):
        """Python in the live release, as the app user, with the app's environment."""
        return self.run(
            f"systemd-run --quiet --pipe --wait --uid={APP} --gid={APP} -p EnvironmentFile={ROOT}/shared/env "
            f"-p WorkingDirectory={ROOT}/current/app {ROOT}/current/.venv/bin/python -c "
            + shlex.quote(f"import django; django.setup()\n{code}")
        )

    def queue_jobs(self, count):
        code = (
            "from guestbook.models import Job; from guestbook.tasks import process_job\n"
            f"ids = [Job.objects.create(payload='deploy-proof').pk for _ in range({count})]\n"
            "[process_job.delay(pk) for pk in ids]; print(ids)"
        )
        return json.loads(self.django(code))

    def jobs(self, ids):
        jobs = f"Job.objects.filter(pk__in={ids!r}).values_list('status', 'runs')"
        code = f"from guestbook.models import Job; print(list({jobs}))"
        return self.django(code)


def assert_no_failed_request(load):
    assert load.sent >= MIN_REQUESTS, load.summary()
    assert load.failed == 0, load.summary()
    assert not load.bounded, "the load generator hit its bounds: " + load.summary()


def said(result, text):
    """Whether the playbook's output says text (lines may wrap anywhere there is a space)."""
    return " ".join(text.split()) in " ".join((result.stdout + result.stderr).split())


def assert_succeeded(result):
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def wait_for_jobs(site, ids):
    for _ in range(60):
        answer = site.jobs(ids)
        if "queued" not in answer:
            return answer
        site.run("sleep 1")
    return site.jobs(ids)


def test_code_only_deploy_drops_no_request_and_runs_queued_tasks_once(site):
    before, master = site.live(), site.gunicorn_master()
    sha = site.commit("Change a page", "echo '<!-- a new version -->' >> app/guestbook/templates/guestbook/home.html")
    jobs = site.queue_jobs(20)
    result, load = site.under_load("deploy.yml")
    assert_succeeded(result)
    assert_no_failed_request(load)
    live = site.live()
    assert live["sha"] == sha and live["previous"] == before["release"]
    assert live["requirements_hash"] == before["requirements_hash"], "same requirements, same virtualenv"
    assert load.releases[0] == before["release"] and load.releases[-1] == live["release"], load.summary()
    assert wait_for_jobs(site, jobs) == str([("done", 1)] * len(jobs))
    # Same virtualenv: gunicorn was reloaded, not restarted. Its master stays, and every
    # worker is a new one, in the new release's code.
    assert site.gunicorn_master() == master
    for worker in site.run(f"pgrep -P {master}").split():
        assert site.run(f"readlink /proc/{worker}/cwd") == f"{ROOT}/releases/{live['release']}/app"


def test_deploy_with_changed_requirements_runs_a_new_interpreter(site):
    before, master = site.live(), site.gunicorn_master()
    site.commit("Add a dependency", "echo 'idna==3.10' >> app/requirements.txt")
    result, load = site.under_load("deploy.yml")
    assert_succeeded(result)
    assert_no_failed_request(load)
    live = site.live()
    assert live["requirements_hash"] != before["requirements_hash"]
    assert live["requirements_hash"] in site.venvs()
    assert site.gunicorn_master() != master, "a new virtualenv: gunicorn restarted"
    # The gunicorn workers run from the new virtualenv: a HUP would have kept the old one.
    worker = site.run(f"pgrep -u {APP} -f 'gunicorn' | tail -n 1")
    assert f"venvs/{live['requirements_hash']}/" in site.run(f"grep -m1 site-packages /proc/{worker}/maps || true")
    assert load.releases[-1] == live["release"]


def test_gunicorn_reloads_after_the_release_it_started_in_is_pruned(site):
    """The last restart (new requirements) started gunicorn in a release that code-only deploys then prune:
    its reloads must go on in the same master, with no restart by systemd."""
    master, restarts = site.gunicorn_master(), site.gunicorn_restarts()
    started_in = site.live()["release"]
    for number in range(3):
        site.commit(
            f"Change {number}", f"echo '<!-- pruned {number} -->' >> app/guestbook/templates/guestbook/home.html"
        )
        assert_succeeded(site.playbook("deploy.yml", "deploy_keep_releases=2"))
    assert started_in not in site.releases()
    assert (site.gunicorn_master(), site.gunicorn_restarts()) == (master, restarts)


def test_rollback_drops_no_request(site):
    before = site.live()
    result, load = site.under_load("rollback.yml")
    assert_succeeded(result)
    assert_no_failed_request(load)
    assert site.live()["release"] == before["previous"]
    assert load.releases[-1] == before["previous"], load.summary()


def test_release_with_a_failing_migration_is_reverted_without_a_failed_request(site):
    before, releases = site.live(), site.releases()
    migration = (
        "from django.db import migrations\\n\\n"
        'def fail(apps, schema_editor):\\n    raise RuntimeError("this migration fails on purpose")\\n\\n'
        "class Migration(migrations.Migration):\\n"
        '    dependencies = [("guestbook", "0001_initial")]\\n'
        "    operations = [migrations.RunPython(fail)]\\n"
    )
    site.commit("Add a failing migration", f"printf '{migration}' > app/guestbook/migrations/0002_broken.py")
    try:
        result, load = site.under_load("deploy.yml")
        assert result.returncode != 0
        assert said(result, "this migration fails on purpose"), result.stdout[-3000:] + result.stderr
        assert said(result, f"Live: release {before['release']}, which kept serving throughout"), (
            result.stdout[-3000:] + result.stderr
        )
        assert_no_failed_request(load)
        assert site.live() == before and site.releases() == releases
        assert load.releases == [before["release"]], load.summary()
        assert not site.host.file(f"{ROOT}/deploy.lock").exists
    finally:
        site.commit("Remove the failing migration", "git rm --quiet app/guestbook/migrations/0002_broken.py")


def test_release_whose_code_cannot_start_is_reverted(site):
    before, releases = site.live(), site.releases()
    site.commit("Break an import", "echo 'import no_such_module' >> app/guestbook/views.py")
    try:
        result = site.playbook("deploy.yml")
        assert result.returncode != 0
        assert said(result, "No module named 'no_such_module'"), result.stdout[-3000:] + result.stderr
        assert site.live() == before and site.releases() == releases
    finally:
        site.commit("Fix the import", "sed -i '/import no_such_module/d' app/guestbook/views.py")


def test_unknown_app_version_fails_before_any_change(site):
    releases = site.releases()
    result = site.playbook("deploy.yml", "app_version=no-such-branch")
    assert result.returncode != 0
    assert said(result, "app_version 'no-such-branch' is not a branch, tag or commit"), (
        result.stdout[-3000:] + result.stderr
    )
    assert site.releases() == releases
    assert not site.host.file(f"{ROOT}/deploy.lock").exists


def test_concurrent_deploy_is_refused_and_keeps_the_other_lock(site):
    releases = site.releases()
    site.run(f"runuser -u {APP} -- mkdir {ROOT}/deploy.lock && echo 'alice, deploying' > {ROOT}/deploy.lock/owner")
    try:
        result = site.playbook("deploy.yml", "deploy_force=true")
        assert result.returncode != 0
        assert said(result, "another deploy holds the lock on this host (alice, deploying)"), (
            result.stdout[-3000:] + result.stderr
        )
        assert site.host.file(f"{ROOT}/deploy.lock/owner").exists
        assert site.releases() == releases
    finally:
        site.run(f"rm -rf {ROOT}/deploy.lock")


def test_rollback_to_a_release_that_is_not_there_changes_nothing(site):
    before = site.live()
    result = site.playbook("rollback.yml", "release=20000101000000-0000000")
    assert result.returncode != 0
    assert said(result, "Release 20000101000000-0000000 is not on this host, or is incomplete"), result.stdout[-3000:]
    assert site.live() == before


def test_rollback_can_unapply_the_migrations_of_the_release_it_leaves(site):
    migration = (
        "from django.db import migrations, models\\n\\n"
        "class Migration(migrations.Migration):\\n"
        '    dependencies = [("guestbook", "0001_initial")]\\n'
        '    operations = [migrations.AddField("note", "mood", models.CharField(max_length=20, blank=True))]\\n'
    )
    site.commit("Add a field", f"printf '{migration}' > app/guestbook/migrations/0002_note_mood.py")
    left = site.live()["release"]
    result = site.playbook("deploy.yml", "deploy_keep_releases=2")
    assert_succeeded(result)
    applied = "SELECT count(*) FROM django_migrations WHERE name = '0002_note_mood'"
    psql = f"runuser -u postgres -- psql -d {APP} -tAc"
    assert site.run(f'{psql} "{applied}"') == "1"
    # Dumped first, among the backups that restore.yml lists, with the release that was live.
    assert site.newest_backup("pre-deploy")["release"] == left
    # Pruned to the newest 2, and the release live before this one (an older one since the rollback above: the
    # rollback's target), and their virtualenvs only.
    kept = site.releases()
    assert set(kept) == set(kept[-2:]) | {site.live()["previous"]}, kept
    assert len(site.venvs()) == len({site.run(f"readlink {ROOT}/releases/{r}/.venv") for r in site.releases()})

    left = site.live()["release"]
    result = site.playbook("rollback.yml", "rollback_migrations=true")
    assert_succeeded(result)
    assert site.run(f'{psql} "{applied}"') == "0"
    column = (
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'guestbook_note' AND column_name = 'mood'"
    )
    assert site.run(f'{psql} "{column}"') == "0"
    assert site.newest_backup("pre-rollback")["release"] == left
