"""Backups that restore, on the converged full-stack host: data made through the app, backed up with
backup.yml, destroyed, restored with restore.yml, and compared (row checksums of every table of the
app's database, and the media files' checksums); once from the host's own backup and once from the
restic repository. Then the failures: a damaged dump, no confirm=yes, an unknown name, a full disk,
a wrong restic password and an unreachable repository, each with nothing lost.

Celery beat is stopped while data is compared (its heartbeat writes a row every 30 s); restore.yml
starts it again. Every test leaves the site serving the data it found.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(PROJECT / "scripts"))

from loadgen import LoadGenerator  # noqa: E402

APP = "keelapp"
DOMAIN = "keelapp.net"
MEDIA = f"/srv/{APP}/shared/media"
BACKUPS = f"/var/backups/keel/{APP}"
KEEL_BACKUP = f"/usr/local/sbin/keel-backup --config /etc/keel/backup-{APP}.json"
ALERTS = "/var/log/keel-backup-alerts.log"
BEAT = f"{APP}-celery-beat.service"


class Site:
    def __init__(self, host):
        self.host = host
        self.address = host.check_output("hostname -I").split()[0]

    def run(self, command):
        return self.host.check_output(command)

    def sql(self, statement, database=APP):
        return self.run(f"runuser -u postgres -- psql -XAtq -d {database} -c {json.dumps(statement)}")

    def table_checksums(self, before="infinity"):
        """Each table of the app's database: its row count and an md5 of its rows in order. Heartbeats
        written from `before` on (beat runs again once a restore is done) are not counted."""
        tables = self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").split()
        query = " UNION ALL ".join(
            f"SELECT '{table}', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
            + (f" WHERE created_at < '{before}'" if table == "guestbook_heartbeat" else "")
            for table in tables
        )
        return {line.split("|")[0]: line.split("|", 1)[1] for line in self.sql(query).splitlines()}

    def media_checksums(self):
        return self.run(f"cd {MEDIA} && find . -type f -print0 | sort -z | xargs -0r sha256sum; stat -c '%a %U' .")

    def playbook(self, name, *extra_vars):
        command = ["ansible-playbook", "-i", os.environ["MOLECULE_EPHEMERAL_DIRECTORY"] + "/inventory", name]
        for assignment in extra_vars:
            command += ["-e", assignment]
        env = dict(os.environ, ANSIBLE_ROLES_PATH=str(PROJECT / "roles"), ANSIBLE_NOCOLOR="1")
        result = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600, check=False)
        return result.returncode, result.stdout + result.stderr

    def add_notes_through_the_app(self, *texts):
        """POST the guestbook's form through nginx over HTTPS, with its CSRF token, as a browser does."""
        curl = f"curl -sk --resolve {DOMAIN}:443:127.0.0.1 -b /tmp/jar -c /tmp/jar"
        for text in texts:
            page = self.run(f"{curl} https://{DOMAIN}/")
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
            status = self.run(
                f"{curl} -o /dev/null -w '%{{http_code}}' -H 'Referer: https://{DOMAIN}/' "
                f"--data-urlencode csrfmiddlewaretoken={token} --data-urlencode text={json.dumps(text)} https://{DOMAIN}/"
            )
            assert status == "302", f"the form answered {status}"

    def add_media(self, tag):
        self.run(
            f"runuser -u {APP} -- sh -c 'mkdir -p {MEDIA}/uploads/{tag} && head -c 300000 /dev/urandom > "
            f"{MEDIA}/uploads/{tag}/photo.bin && echo {tag} > {MEDIA}/{tag}.txt'"
        )

    def backups(self):
        return json.loads(self.run(f"{KEEL_BACKUP} --quiet list --offsite"))["backups"]

    def alerts(self):
        return self.run(f"cat {ALERTS} 2>/dev/null || true").splitlines()


@pytest.fixture(scope="module")
def site(host):
    site = Site(host)
    site.run(f"systemctl stop {BEAT}")
    yield site
    site.run(f"systemctl start {BEAT}")


def backup_now(site):
    code, output = site.playbook("backup.yml")
    assert code == 0, output[-3000:]
    output = " ".join(output.split())
    found = re.search(r"Backup (\d{8}T\d{6}Z-manual) on [\w.-]+: database.dump and media.tar.zst, ([\d.]+ \w+); "
                      r"offsite copy: copied", output)  # fmt: skip
    assert found, output[-3000:]
    return found.group(1)


class Watcher:
    """Asks / through nginx every 0.2 s during a restore: which answers came, in order."""

    def __init__(self, site):
        self.client = LoadGenerator(site.address, DOMAIN, ["/"], threads=1, https=True)
        self.answers = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def watch(self):
        while not self.stop.is_set():
            status, body = self.client.request("/")
            if not self.answers or self.answers[-1][0] != status:
                self.answers.append((status, body if isinstance(body, str) else body.decode(errors="replace")))
            time.sleep(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        time.sleep(1)
        self.stop.set()
        self.thread.join()


def test_the_cron_entry_runs_keel_backup_nightly_and_the_deploy_dump_is_listed(site):
    cron = site.run(f"cat /etc/cron.d/keel-backup-{APP}")
    line = [entry for entry in cron.splitlines() if entry.startswith("17 3 * * * root ")]
    assert line and f"{KEEL_BACKUP} --quiet run --label nightly" in line[0], cron
    # The very command cron runs (cron turns \% into %).
    site.run("sh -c " + json.dumps(line[0].split(" root ", 1)[1].replace("\\%", "%")))
    nightly = [b for b in site.backups() if b["label"] == "nightly"]
    assert nightly and nightly[0]["where"] == "local+offsite" and nightly[0]["name"].endswith("00Z-nightly"), nightly
    assert "is made and checked" in site.run("journalctl -t keel-backup --since -2min --no-pager -o cat")
    assert any(b["label"] == "pre-deploy" for b in site.backups()), "the first deploy's migrations were dumped"


def test_a_backup_restores_the_data_made_through_the_app(site):
    site.add_notes_through_the_app("before the backup", "üñíçødé, 'quotes' and \"doubles\"")
    site.add_media("first")
    tables, media = site.table_checksums(), site.media_checksums()
    name = backup_now(site)

    restored_at = site.sql("SELECT now()")
    site.sql(f"DROP DATABASE {APP} WITH (FORCE)", database="postgres")
    site.run(f"rm -rf {MEDIA}/uploads {MEDIA}/first.txt")
    with Watcher(site) as watcher:
        code, output = site.playbook("restore.yml", f"backup={name}", "confirm=yes")
    assert code == 0, output[-3000:]
    assert site.table_checksums(before=restored_at) == tables
    assert site.media_checksums() == media
    site.run(f"systemctl stop {BEAT}")
    statuses = [status for status, _ in watcher.answers]
    assert 503 in statuses and statuses[-1] == 200, watcher.answers
    maintenance = next(body for status, body in watcher.answers if status == 503)
    assert "Back in a few minutes" in maintenance
    assert not site.host.file(f"/var/www/keel-maintenance/{APP}/on").exists


def test_a_backup_restores_from_the_restic_repository_when_the_host_lost_its_own(site):
    site.add_notes_through_the_app("only in the offsite copy")
    site.add_media("second")
    tables, media = site.table_checksums(), site.media_checksums()
    name = backup_now(site)
    site.run(f"rm -rf {BACKUPS}/{name}")
    assert [b["where"] for b in site.backups() if b["name"] == name] == ["offsite"]

    restored_at = site.sql("SELECT now()")
    site.sql(f"DROP DATABASE {APP} WITH (FORCE)", database="postgres")
    site.run(f"rm -rf {MEDIA}/uploads/second")
    code, output = site.playbook("restore.yml", "confirm=yes")  # the newest: this one
    assert code == 0, output[-3000:]
    assert f"Backup {name} is restored" in output
    assert site.table_checksums(before=restored_at) == tables
    assert site.media_checksums() == media
    site.run(f"systemctl stop {BEAT}")


def test_retention_prunes_the_oldest_here_and_in_the_restic_repository(site):
    for day in range(1, 10):
        site.run(f"{KEEL_BACKUP} --quiet run --label nightly --name 202001{day:02d}T031700Z-nightly")
    old = sorted(b["name"] for b in site.backups() if b["name"].startswith("2020"))
    # 7 days: today and Jan 4-9; 4 weeks: this week, and 2020's weeks 2 and 1 (Jan 9 and 5, kept as days
    # already); only 3 weeks have a backup, so the oldest (Jan 1) is kept too, as restic keeps it.
    assert old == [f"202001{day:02d}T031700Z-nightly" for day in (1, 4, 5, 6, 7, 8, 9)], old
    offsite = site.run(f"RESTIC_PASSWORD_FILE=/etc/keel/backup-{APP}.restic-password restic -q "
                       f"-r /var/lib/keel-offsite/restic snapshots --json --tag keel-{APP}")  # fmt: skip
    names = {tag for snapshot in json.loads(offsite) for tag in snapshot["tags"] if tag.startswith("2020")}
    assert names == set(old)
    site.run(f"rm -rf {BACKUPS}/2020*")


def test_a_damaged_dump_is_reported_and_refused_and_the_live_database_stays(site):
    name = backup_now(site)
    tables = site.table_checksums()
    dump = f"{BACKUPS}/{name}/database.dump"
    site.run(f"dd if=/dev/urandom of={dump} bs=1 count=64 seek=2000 conv=notrunc status=none")
    alerts = len(site.alerts())
    check = site.host.run(f"{KEEL_BACKUP} verify {name}")
    assert check.rc == 1 and "does not match the checksum" in check.stderr
    assert len(site.alerts()) == alerts + 1 and name in site.alerts()[-1]

    code, output = site.playbook("restore.yml", f"backup={name}", "confirm=yes")
    assert code != 0 and "is damaged" in output and "Nothing was changed" in output, output[-3000:]
    assert site.table_checksums() == tables
    assert site.host.service(BEAT).is_running is False, "the restore stopped before it stopped anything"
    assert not site.host.file(f"/var/www/keel-maintenance/{APP}/on").exists
    site.run(f"rm -rf {BACKUPS}/{name}")


def test_a_restore_without_confirm_or_with_an_unknown_name_changes_nothing(site):
    tables = site.table_checksums()
    code, output = site.playbook("restore.yml")
    assert code != 0 and "-e confirm=yes" in output and "Nothing was changed" in output, output[-2000:]
    code, output = site.playbook("restore.yml", "backup=20200101T000000Z-manual", "confirm=yes")
    assert code != 0 and "There is no backup named 20200101T000000Z-manual" in output, output[-2000:]
    newest = site.backups()[0]["name"]
    assert newest in output, "the message lists the backups there are"
    assert site.table_checksums() == tables


@pytest.fixture
def other_config(site):
    """keel-backup with a changed configuration, in a folder of its own."""
    made = []

    def make(**changes):
        config = json.loads(site.run(f"cat /etc/keel/backup-{APP}.json"))
        config.update(dir=f"/var/tmp/keel-backup-test/{len(made)}", **changes)
        path = f"/etc/keel/test-{len(made)}.json"
        site.run(f"install -m 600 /dev/null {path} && printf '%s' {shlex.quote(json.dumps(config))} > {path}")
        made.append(path)
        return config, f"/usr/local/sbin/keel-backup --config {path}"

    yield make
    site.run(f"rm -f {' '.join(made)}; umount /var/tmp/keel-backup-test/* 2>/dev/null || true")
    site.run("rm -rf /var/tmp/keel-backup-test")


def test_a_full_disk_fails_loudly_and_keeps_no_partial_dump(site, other_config):
    config, command = other_config()
    site.run(f"mkdir -p {config['dir']} && mount -t tmpfs -o size=48k keel-full {config['dir']}")
    alerts = len(site.alerts())
    result = site.host.run(f"{command} run --no-offsite")
    assert result.rc == 1 and "No space left on device" in result.stderr, result.stderr
    assert site.run(f"ls -A {config['dir']}") == "", "nothing is kept of the failed backup"
    assert len(site.alerts()) == alerts + 1 and "No space left on device" in site.alerts()[-1]


@pytest.mark.parametrize(
    ("offsite", "reason"),
    [
        ({"repository": "/var/lib/keel-offsite/restic", "password_file": "/etc/keel/test-wrong-password"},
         "the password is wrong"),
        ({"repository": "rest:http://127.0.0.1:9/", "password_file": f"/etc/keel/backup-{APP}.restic-password"},
         "rest:http://127.0.0.1:9/"),
    ],
    ids=["wrong-password", "unreachable"],
)  # fmt: skip
def test_an_offsite_failure_is_said_plainly_and_the_local_backup_is_still_made(site, other_config, offsite, reason):
    site.run("echo not-the-password > /etc/keel/test-wrong-password && chmod 600 /etc/keel/test-wrong-password")
    config, command = other_config(offsite=dict(offsite, timeout=60))
    started = time.monotonic()
    result = site.host.run(f"{command} run")
    assert result.rc == 3 and "offsite copy failed" in result.stderr and reason in result.stderr, result.stderr
    assert time.monotonic() - started < 90
    made = json.loads(result.stdout.strip().splitlines()[-1])
    assert made["parts"] == ["database.dump", "media.tar.zst"] and made["offsite"].startswith("failed")
    assert site.run(f"ls {config['dir']}") == made["name"]
    site.run("rm -f /etc/keel/test-wrong-password")
