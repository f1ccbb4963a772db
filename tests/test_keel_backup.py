"""keel-backup (roles/backup/files/keel_backup.py) on a temporary folder: names, retention, the lock,
and a media-only store made, checked, damaged and restored. The database side runs against real
PostgreSQL in the full-stack scenario (molecule/full-stack/tests/test_backup.py)."""

import datetime
import importlib.util
import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from conftest import REPO

spec = importlib.util.spec_from_file_location("keel_backup", REPO / "roles" / "backup" / "files" / "keel_backup.py")
keel_backup = importlib.util.module_from_spec(spec)
spec.loader.exec_module(keel_backup)

needs_zstd = pytest.mark.skipif(not shutil.which("zstd"), reason="tar --zstd needs zstd")


def name(day, hour=3, label="nightly", month=11):
    return f"2026{month:02d}{day:02d}T{hour:02d}1700Z-{label}"


def test_a_new_name_is_the_utc_time_and_the_label():
    now = datetime.datetime(2026, 11, 23, 3, 17, 5, tzinfo=datetime.UTC)
    assert keel_backup.new_name("manual", now) == "20261123T031705Z-manual"
    assert keel_backup.parse_name("20261123T031705Z-pre-deploy")[1] == "pre-deploy"
    assert keel_backup.parse_name("20261123-nightly") is None
    assert keel_backup.parse_name("../20261123T031705Z-nightly") is None


def test_retention_keeps_the_newest_of_each_recent_day_and_week():
    # Two backups a day for 30 days (November 2026).
    names = [name(day, hour) for day in range(1, 31) for hour in (3, 15)]
    kept = keel_backup.retained(names, daily=7, weekly=4, pre_deploy=5)
    days = sorted(n for n in kept if n >= name(24))
    assert days == [*(name(day, 15) for day in range(24, 30)), name(30, 3), name(30, 15)], (
        "the newest of each of the last 7 days, and all of the last 24 hours"
    )
    # ISO weeks: Nov 23-29 and Nov 30 are in the daily set; the two weeks before keep their Sunday's newest.
    assert sorted(kept - set(days)) == [name(15, 15), name(22, 15)]


def test_retention_counts_pre_deploy_dumps_apart_and_never_counts_them_as_days():
    names = [name(day, 3, "pre-deploy") for day in range(1, 11)] + [name(10, 4, "pre-rollback"), name(9)]
    kept = keel_backup.retained(names, daily=1, weekly=0, pre_deploy=3)
    assert kept == {name(10, 4, "pre-rollback"), name(10, 3, "pre-deploy"), name(9, 3, "pre-deploy"), name(9)}


def test_retention_keeps_the_oldest_while_fewer_weeks_than_asked_have_a_backup():
    names = [name(day) for day in range(3, 10)]  # Nov 3-8 are ISO week 45, Nov 9 week 46
    assert keel_backup.retained(names, daily=3, weekly=4, pre_deploy=0) == {name(3), name(7), name(8), name(9)}


def test_retention_with_zero_keeps_nothing_of_that_kind():
    assert keel_backup.retained([name(1), name(2)], daily=0, weekly=0, pre_deploy=0) == set()


def test_retention_keeps_every_backup_of_the_last_24_hours():
    names = [name(23, 3), name(23, 10, "manual"), name(23, 11, "manual"), name(22, 12), name(22, 10)]
    assert keel_backup.retained(names, daily=1, weekly=0, pre_deploy=0) == set(names[:4])


def test_a_second_run_is_refused_while_the_first_holds_the_lock():
    app = f"test{os.getpid()}"
    held = r"another keel-backup run holds the lock \(pid \d+"
    with keel_backup.locked(app, wait=0), pytest.raises(keel_backup.LockedError, match=held):
        second = keel_backup.locked(app, wait=1.2)
        second.__enter__()
    with keel_backup.locked(app, wait=0):
        pass


@pytest.fixture
def media_store(tmp_path):
    media = tmp_path / "shared" / "media"
    (media / "uploads" / "2026").mkdir(parents=True)
    (media / "uploads" / "2026" / "photo.jpg").write_bytes(os.urandom(50_000))
    (media / "note.txt").write_text("hello")
    alert_log = tmp_path / "alerts.log"
    config = {
        "app": f"test{os.getpid()}",
        "host": "web1",
        "dir": str(tmp_path / "backups"),
        "group": "root",
        "release_file": str(tmp_path / "release.json"),
        "database": None,
        "media": {"dir": str(media)},
        "keep": {"daily": 7, "weekly": 4, "pre_deploy": 5},
        "offsite": None,
        "alert": {"command": f'echo "$KEEL_BACKUP_HOST|$KEEL_BACKUP_NAME|$KEEL_BACKUP_ERROR" >> {alert_log}'},
    }
    config_path = tmp_path / "backup.json"
    config_path.write_text(json.dumps(config))
    return config_path, media, alert_log


def keel(config_path, *argv):
    return keel_backup.main(["--config", str(config_path), "--quiet", *argv])


def digests(folder):
    return {
        str(path.relative_to(folder)): keel_backup.sha256(path) for path in sorted(folder.rglob("*")) if path.is_file()
    }


@needs_zstd
def test_media_is_archived_checked_and_restored_by_a_swap(media_store, capsys):
    config_path, media, alert_log = media_store
    before = digests(media)
    (config_path.parent / "release.json").write_text('{"release": "20261123031500-abc1234", "sha": "abc1234"}')
    assert keel(config_path, "run", "--label=manual", "--name=20261123T031700Z-manual") == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["parts"] == ["media.tar.zst"] and result["offsite"] == "off"
    manifest = json.loads((config_path.parent / "backups" / "20261123T031700Z-manual" / "manifest.json").read_text())
    assert manifest["release"] == "20261123031500-abc1234", "the backup names the release that was live"
    shutil.rmtree(media / "uploads")
    (media / "new.txt").write_text("written after the backup")
    assert keel(config_path, "verify", "20261123T031700Z-manual") == 0
    assert keel(config_path, "restore", "20261123T031700Z-manual") == 0
    assert digests(media) == before
    assert (media.parent / "media.before-restore" / "new.txt").exists(), "what the restore replaced is kept"
    assert not alert_log.exists()


@needs_zstd
def test_a_damaged_backup_is_reported_and_never_restored(media_store):
    config_path, media, alert_log = media_store
    assert keel(config_path, "run", "--name=20261123T031700Z-manual") == 0
    archive = media.parent.parent / "backups" / "20261123T031700Z-manual" / "media.tar.zst"
    with archive.open("r+b") as stream:
        stream.seek(100)
        stream.write(b"\0" * 64)
    (media / "new.txt").write_text("the live media")
    assert keel(config_path, "verify", "20261123T031700Z-manual") == keel_backup.EXIT_FAILED
    assert keel(config_path, "restore", "20261123T031700Z-manual") == keel_backup.EXIT_FAILED
    assert (media / "new.txt").read_text() == "the live media", "the live media is untouched"
    alerts = alert_log.read_text().splitlines()
    assert len(alerts) == 2 and all("does not match the checksum" in line for line in alerts), alerts
    assert alerts[0].startswith("web1|20261123T031700Z-manual|")


@needs_zstd
def test_a_failed_run_keeps_no_partial_backup_and_calls_the_alert_hook(media_store, capsys):
    config_path, media, alert_log = media_store
    shutil.rmtree(media)
    assert keel(config_path, "run") == keel_backup.EXIT_FAILED
    backups = media.parent.parent / "backups"
    assert os.listdir(backups) == [], "no folder of a failed run is left"
    assert "the media folder" in alert_log.read_text() and "does not exist" in alert_log.read_text()


@needs_zstd
def test_an_unknown_name_lists_the_backups_there_are(media_store, caplog):
    config_path, _, _ = media_store
    assert keel(config_path, "run", "--name=20261122T031700Z-manual") == 0
    assert keel(config_path, "verify", "20261123T031700Z-manual") == keel_backup.EXIT_FAILED
    assert "no backup named 20261123T031700Z-manual" in caplog.text
    assert "The backups here: 20261122T031700Z-manual" in caplog.text


@needs_zstd
def test_a_run_prunes_by_retention_and_removes_what_a_killed_run_left(media_store, capsys):
    config_path, _, _ = media_store
    backups = json.loads(config_path.read_text())["dir"]
    for day in (20, 21, 22):
        assert keel(config_path, "run", "--label=nightly", f"--name={name(day)}") == 0
    os.mkdir(os.path.join(backups, ".partial-" + name(23)))
    config = json.loads(config_path.read_text())
    config["keep"]["daily"] = 2
    config_path.write_text(json.dumps(config))
    capsys.readouterr()
    assert keel(config_path, "run", "--label=nightly", f"--name={name(23)}") == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # Two days kept, and of four weeks only two have a backup: the oldest is kept as well (as restic does).
    assert result["pruned"] == [name(21)]
    assert sorted(os.listdir(backups)) == [name(20), name(22), name(23)]


@needs_zstd
def test_a_failure_is_posted_to_the_webhook_as_json(media_store):
    config_path, media, _ = media_store
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            received.append((self.headers["Content-Type"], json.loads(self.rfile.read(length))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = json.loads(config_path.read_text())
        config["alert"] = {"webhook": f"http://127.0.0.1:{server.server_port}/keel"}
        config_path.write_text(json.dumps(config))
        shutil.rmtree(media)
        assert keel(config_path, "run", "--name=20261123T031700Z-manual") == keel_backup.EXIT_FAILED
    finally:
        server.shutdown()
    assert len(received) == 1, received
    kind, body = received[0]
    assert kind == "application/json" and body["host"] == "web1" and body["backup"] == "20261123T031700Z-manual"
    assert body["text"].startswith("keel-backup failed on web1 for ") and "does not exist" in body["error"]
