#!/usr/bin/python3
"""keel-backup: the app's backups on this host, made, checked, kept, copied offsite and restored.

Each backup is a folder <dir>/<name>, name = <UTC time>-<label> (label: nightly, manual or pre-deploy).
It holds what this host has of the app: the database as a pg_dump custom-format file (on the db host)
and the media as a tar archive (on the web hosts), with manifest.json: each file's size and SHA-256.
A backup is written as <dir>/.partial-<name> and renamed only once every part is checked, so a folder
without the dot is always a whole, checked backup.

Commands (run as root; the configuration is a JSON file written by Ansible):
  run      make a backup now, check it, prune by retention, copy it offsite (restic)
  list     the backups here (and offsite with --offsite), newest first, as JSON
  verify   check a backup's files against its manifest, and that pg_restore can read the dump
  fetch    copy a backup from the restic repository back here, checked
  restore  put a backup's database (a new database, swapped in) and media (likewise) in place
  offsite-init  create the restic repository if it does not exist

Every run logs to journald (identifier keel-backup). A failure exits non-zero and calls the alert hook.
"""

import argparse
import contextlib
import datetime
import fcntl
import hashlib
import json
import logging
import logging.handlers
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

LOG = logging.getLogger("keel-backup")
NAME_PATTERN = re.compile(r"^(\d{8}T\d{6}Z)-([a-z][a-z0-9-]*)$")
DUMP = "database.dump"
MEDIA = "media.tar.zst"
MANIFEST = "manifest.json"
EXIT_FAILED = 1
EXIT_OFFSITE_FAILED = 3
EXIT_LOCKED = 75


class BackupError(Exception):
    """A failure with a message for the operator."""


# --- names and retention --------------------------------------------------------------------------


def new_name(label, now=None):
    now = now or datetime.datetime.now(datetime.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{label}"


def parse_name(name):
    """(UTC time, label) of a backup name, or None when it is not one."""
    match = NAME_PATTERN.match(name)
    if not match:
        return None
    when = datetime.datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    return when, match.group(2)


def retained(names, daily, weekly, pre_deploy):
    """The backups retention keeps, from a list of names.

    Dumps made before a deploy or a rollback (labels pre-*): the newest `pre_deploy`. The others
    (nightly, manual): every one made in the 24 hours before the newest, so a manual backup never
    removes the one made an hour earlier; then the newest of each of the `daily` newest days that
    have one, and the newest of each of the `weekly` newest ISO weeks; and while there are fewer
    such days or weeks than asked, the oldest backup too. So restic counts --keep-within 1d,
    --keep-daily and --keep-weekly (0.16 and later), and both sides keep the same backups.
    """
    parsed = sorted(((parse_name(n), n) for n in names if parse_name(n)), reverse=True)
    keep = set(sorted((n for (_, label), n in parsed if label.startswith("pre-")), reverse=True)[:pre_deploy])
    regular = [(when, n) for (when, label), n in parsed if not label.startswith("pre-")]
    if regular and (daily or weekly):
        newest = regular[0][0]
        keep.update(n for when, n in regular if when > newest - datetime.timedelta(days=1))
    for limit, bucket in ((daily, lambda t: t.date()), (weekly, lambda t: t.isocalendar()[:2])):
        seen = []
        for when, name in regular:
            key = bucket(when)
            if key in seen:
                continue
            if len(seen) >= limit:
                break
            seen.append(key)
            keep.add(name)
        if 0 < len(seen) < limit:
            keep.add(regular[-1][1])
    return keep


# --- small helpers --------------------------------------------------------------------------------


def run(argv, **kwargs):
    """Run a command; BackupError with its last lines of stderr when it fails."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    result = subprocess.run(argv, stderr=subprocess.PIPE, text=True, check=False, **kwargs)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-12:])
        raise BackupError(f"{os.path.basename(argv[0])} exited {result.returncode}: {tail or '(no output)'}")
    return result.stdout


def as_postgres(argv):
    return ["runuser", "-u", "postgres", "--", *argv]


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def human(size):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def write_json(path, data):
    with open(path, "w") as stream:
        json.dump(data, stream, indent=2, sort_keys=True)
        stream.write("\n")
        stream.flush()
        os.fsync(stream.fileno())


def sql_identifier(name):
    return '"' + name.replace('"', '""') + '"'


def sql_literal(text):
    return "'" + text.replace("'", "''") + "'"


# --- the backup store -----------------------------------------------------------------------------


class Store:
    """The backups of one app on this host, per its configuration."""

    def __init__(self, config):
        self.config = config
        self.app = config["app"]
        self.dir = config["dir"]
        self.database = config.get("database")
        self.media = config.get("media")
        self.offsite = config.get("offsite")
        self.group = config.get("group", "root")

    def path(self, name):
        return os.path.join(self.dir, name)

    def names(self):
        if not os.path.isdir(self.dir):
            return []
        found = [n for n in os.listdir(self.dir) if parse_name(n) and os.path.isfile(self.manifest_path(n))]
        return sorted(found, reverse=True)

    def manifest_path(self, name):
        return os.path.join(self.path(name), MANIFEST)

    def manifest(self, name):
        with open(self.manifest_path(name)) as stream:
            return json.load(stream)

    def describe(self, name):
        manifest = self.manifest(name)
        return {
            "name": name,
            "label": manifest["label"],
            "created": manifest["created"],
            "size": sum(part["size"] for part in manifest["files"].values()),
            "parts": sorted(manifest["files"]),
            "where": "local",
        }

    def remove_partials(self):
        """Folders of runs that were killed before they finished: never a backup."""
        for entry in os.listdir(self.dir):
            if entry.startswith((".partial-", ".fetch-")):
                LOG.warning("removing %s, left by a run that did not finish", entry)
                shutil.rmtree(os.path.join(self.dir, entry), ignore_errors=True)

    # making one

    def make(self, name, label, parts):
        partial = os.path.join(self.dir, ".partial-" + name)
        os.mkdir(partial, 0o750)
        shutil.chown(partial, "root", self.group)
        try:
            files = {}
            if "database" in parts:
                files[DUMP] = self.dump_database(os.path.join(partial, DUMP))
            if "media" in parts:
                files[MEDIA] = self.archive_media(os.path.join(partial, MEDIA))
            if not files:
                raise BackupError("this host holds neither the database nor the media: nothing to back up")
            manifest = {
                "name": name,
                "label": label,
                "app": self.app,
                "host": self.config.get("host", socket.gethostname()),
                "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "release": self.live_release(),
                "database": self.database["name"] if DUMP in files else None,
                "files": files,
            }
            write_json(os.path.join(partial, MANIFEST), manifest)
            os.rename(partial, self.path(name))
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return self.describe(name)

    def live_release(self):
        release = self.config.get("release_file")
        with contextlib.suppress(OSError, ValueError), open(release) as stream:
            return json.load(stream).get("release")
        return None

    def dump_database(self, path):
        database = self.database
        argv = ["pg_dump", "--format=custom", f"--port={database['port']}", f"--compress={self.compression()}",
                "--dbname=" + database["name"]]  # fmt: skip
        started = time.monotonic()
        with open(path, "wb") as stream:
            os.fchmod(stream.fileno(), 0o640)
            shutil.chown(path, "root", self.group)
            run(as_postgres(argv), stdout=stream)
            stream.flush()
            os.fsync(stream.fileno())
        self.check_dump(path)
        LOG.info("dumped database %s in %.1f s: %s", database["name"], time.monotonic() - started,
                 human(os.path.getsize(path)))  # fmt: skip
        return {"size": os.path.getsize(path), "sha256": sha256(path)}

    def compression(self):
        """pg_dump's --compress: the configured one, or zstd where pg_dump has it (16 and later), else gzip:1."""
        if self.database.get("compression"):
            return self.database["compression"]
        version = run(["pg_dump", "--version"]).split()[-1]
        major = int(re.match(r"\d+", version).group(0))
        return "zstd" if major >= 16 else "1"

    def check_dump(self, path):
        """pg_restore lists the dump, then reads every data block (so a damaged one is found now)."""
        run(["pg_restore", "--list", path], stdout=subprocess.DEVNULL)
        run(["pg_restore", "--file=/dev/null", path])

    def archive_media(self, path):
        media = self.media["dir"]
        if not os.path.isdir(media):
            raise BackupError(f"the media folder {media} does not exist")
        started = time.monotonic()
        with open(path, "wb") as stream:
            os.fchmod(stream.fileno(), 0o600)
            run(["tar", "--create", "--zstd", "--file=-", f"--directory={media}", "."], stdout=stream)
            stream.flush()
            os.fsync(stream.fileno())
        run(["tar", "--list", "--zstd", f"--file={path}"], stdout=subprocess.DEVNULL)
        LOG.info("archived media %s in %.1f s: %s", media, time.monotonic() - started, human(os.path.getsize(path)))
        return {"size": os.path.getsize(path), "sha256": sha256(path)}

    # checking one

    def verify(self, name, folder=None, deep=True):
        """The manifest's checksums; with deep, also every block of the dump and the archive, read through."""
        folder = folder or self.path(name)
        with open(os.path.join(folder, MANIFEST)) as stream:
            manifest = json.load(stream)
        for file, expected in manifest["files"].items():
            path = os.path.join(folder, file)
            if not os.path.isfile(path):
                raise BackupError(f"backup {name} is damaged: {file} is missing")
            if os.path.getsize(path) != expected["size"] or sha256(path) != expected["sha256"]:
                raise BackupError(f"backup {name} is damaged: {file} does not match the checksum it was made with")
        if DUMP in manifest["files"] and deep:
            self.check_dump(os.path.join(folder, DUMP))
        if MEDIA in manifest["files"] and deep:
            run(["tar", "--list", "--zstd", "--file=" + os.path.join(folder, MEDIA)], stdout=subprocess.DEVNULL)
        return manifest

    # retention

    def prune(self):
        keep = self.config["keep"]
        names = self.names()
        kept = retained(names, keep["daily"], keep["weekly"], keep["pre_deploy"])
        removed = [n for n in names if n not in kept]
        for name in removed:
            LOG.info("retention removes %s", name)
            shutil.rmtree(self.path(name))
        return removed

    # restoring one

    def restore_database(self, name):
        database = self.database
        live, staging, before = database["name"], database["name"] + "_restore", database["name"] + "_before_restore"
        if len(before.encode()) > 63:
            raise BackupError(f"the database name {live} is too long to keep a copy named {before} beside it")
        psql = as_postgres(["psql", f"--port={database['port']}", "--dbname=postgres", "--no-psqlrc", "--quiet",
                            "--set=ON_ERROR_STOP=1", "--tuples-only", "--no-align"])  # fmt: skip

        def sql(statement):
            return run([*psql, "--command", statement]).strip()

        started = time.monotonic()
        # What the previous restore replaced goes first: DROP DATABASE forces a checkpoint, which is quick
        # now and would have to write out the whole restored database after the load.
        sql(f"DROP DATABASE IF EXISTS {sql_identifier(staging)} WITH (FORCE)")
        sql(f"DROP DATABASE IF EXISTS {sql_identifier(before)} WITH (FORCE)")
        sql(f"CREATE DATABASE {sql_identifier(staging)} OWNER {sql_identifier(database['owner'])} TEMPLATE template0")
        try:
            run(as_postgres(["pg_restore", f"--port={database['port']}", "--dbname=" + staging, "--exit-on-error",
                             f"--jobs={database.get('jobs', 2)}", os.path.join(self.path(name), DUMP)]))  # fmt: skip
        except BackupError as error:
            sql(f"DROP DATABASE IF EXISTS {sql_identifier(staging)} WITH (FORCE)")
            raise BackupError(f"restoring {name} failed, and the live database {live} is untouched: {error}") from None
        exists = sql(f"SELECT count(*) FROM pg_database WHERE datname = {sql_literal(live)}") == "1"
        if exists:
            # No new connection can come in between: the renames find the database idle.
            sql(f"ALTER DATABASE {sql_identifier(live)} WITH ALLOW_CONNECTIONS false")
            sql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = {sql_literal(live)}")
            sql(f"ALTER DATABASE {sql_identifier(live)} RENAME TO {sql_identifier(before)}")
        run(as_postgres(["vacuumdb", f"--port={database['port']}", "--analyze-only", "--quiet",
                         f"--jobs={database.get('jobs', 2)}", "--dbname=" + staging]))  # fmt: skip
        sql(f"ALTER DATABASE {sql_identifier(staging)} RENAME TO {sql_identifier(live)}")
        LOG.info("restored database %s from %s in %.1f s%s", live, name, time.monotonic() - started,
                 f"; the one it replaced is {before}, until the next restore" if exists else "")  # fmt: skip
        return {"database": live, "replaced": before if exists else None}

    def restore_media(self, name):
        media = self.media["dir"].rstrip("/")
        staging, before = media + ".restoring", media + ".before-restore"
        shutil.rmtree(staging, ignore_errors=True)
        os.mkdir(staging, 0o700)
        try:
            run(["tar", "--extract", "--zstd", "--same-owner", "--same-permissions",
                 "--file=" + os.path.join(self.path(name), MEDIA), f"--directory={staging}"])  # fmt: skip
        except BackupError as error:
            shutil.rmtree(staging, ignore_errors=True)
            message = f"restoring the media of {name} failed, and the live media is untouched: {error}"
            raise BackupError(message) from None
        shutil.rmtree(before, ignore_errors=True)
        if os.path.lexists(media):
            os.rename(media, before)
        os.rename(staging, media)
        LOG.info("restored media %s from %s; what it replaced is in %s, until the next restore", media, name, before)
        return {"media": media, "replaced": before}

    # offsite (restic)

    def restic(self, *argv, json_output=False):
        offsite = self.offsite
        env = dict(os.environ, RESTIC_REPOSITORY=offsite["repository"], RESTIC_PASSWORD_FILE=offsite["password_file"])
        env.update(RESTIC_CACHE_DIR=offsite.get("cache_dir", "/var/cache/keel-backup/restic"), **offsite.get("env", {}))
        command = ["restic", *(["--json"] if json_output else []), *(["--no-lock"] if argv[0] == "snapshots" else []),
                   *argv]  # fmt: skip
        try:
            output = run(command, env=env, timeout=offsite.get("timeout", 3600))
        except subprocess.TimeoutExpired:
            raise BackupError(f"the restic repository {offsite['repository']} did not answer in time") from None
        except BackupError as error:
            raise BackupError(f"restic repository {offsite['repository']}: {restic_reason(str(error))}") from None
        return json.loads(output) if json_output else output

    def offsite_snapshots(self):
        snapshots = self.restic("snapshots", "--tag", f"keel-{self.app}", json_output=True) or []
        found = {}
        for snapshot in snapshots:
            names = [tag for tag in snapshot.get("tags", []) if parse_name(tag)]
            if names and snapshot.get("hostname") == self.config.get("host", socket.gethostname()):
                found[names[0]] = snapshot
        return found

    def copy_offsite(self, name, label):
        # The snapshot's time is the backup's (restic's retention counts days by it), in local time as restic reads it.
        when = f"{parse_name(name)[0].astimezone():%Y-%m-%d %H:%M:%S}"
        self.restic("backup", "--host", self.config.get("host", socket.gethostname()), "--tag", f"keel-{self.app}",
                    "--tag", label, "--tag", name, "--time", when, self.path(name))  # fmt: skip
        keep = self.config["keep"]
        self.restic("forget", "--host", self.config.get("host", socket.gethostname()), "--tag", f"keel-{self.app}",
                    "--group-by", "host", "--keep-within", "1d", "--keep-daily", str(keep["daily"]),
                    "--keep-weekly", str(keep["weekly"]), "--prune")  # fmt: skip

    def fetch(self, name):
        snapshot = self.offsite_snapshots().get(name)
        if not snapshot:
            raise BackupError(f"backup {name} is not in the restic repository {self.offsite['repository']}")
        target = tempfile.mkdtemp(prefix=".fetch-", dir=self.dir)
        try:
            self.restic("restore", snapshot["id"], "--target", target, "--include", self.path(name))
            restored = os.path.join(target, self.path(name).lstrip("/"))
            self.verify(name, restored)
            os.chmod(restored, 0o750)
            shutil.chown(restored, "root", self.group)
            os.rename(restored, self.path(name))
        finally:
            shutil.rmtree(target, ignore_errors=True)
        return self.describe(name)


def restic_reason(message):
    """restic's error, said plainly where it is one of the common ones."""
    lowered = message.lower()
    if "wrong password" in lowered or "no key found" in lowered:
        return "the password is wrong (backup_restic_password does not open this repository)"
    if "does not exist" in lowered or "is there a repository at the following location" in lowered:
        return "there is no repository there (provision.yml creates it)"
    return message


# --- the alert hook and the lock ------------------------------------------------------------------


def alert(config, error, name=None):
    hook = config.get("alert", {})
    host = config.get("host", socket.gethostname())
    text = f"keel-backup failed on {host} for {config['app']}: {error}"
    if hook.get("command"):
        env = dict(os.environ, KEEL_BACKUP_APP=config["app"], KEEL_BACKUP_HOST=host, KEEL_BACKUP_ERROR=str(error),
                   KEEL_BACKUP_NAME=name or "")  # fmt: skip
        result = subprocess.run(["/bin/sh", "-c", hook["command"]], env=env, capture_output=True, text=True,
                                timeout=60, check=False)  # fmt: skip
        if result.returncode != 0:
            LOG.error("the alert command exited %s: %s", result.returncode, result.stderr.strip()[-500:])
    if hook.get("webhook"):
        body = json.dumps({"text": text, "app": config["app"], "host": host, "error": str(error), "backup": name})
        request = urllib.request.Request(hook["webhook"], data=body.encode(), method="POST",
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            urllib.request.urlopen(request, timeout=15).close()
        except OSError as failure:
            LOG.error("the alert webhook failed: %s", failure)


@contextlib.contextmanager
def locked(app, wait):
    path = f"/run/lock/keel-backup-{app}.lock"
    with open(path, "a+") as stream:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    stream.seek(0)
                    holder = stream.read().strip() or "unknown"
                    raise LockedError(f"another keel-backup run holds the lock ({holder})") from None
                time.sleep(1)
        stream.seek(0)
        stream.truncate()
        stream.write(f"pid {os.getpid()}, since {datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}")
        stream.flush()
        yield


class LockedError(BackupError):
    pass


# --- commands -------------------------------------------------------------------------------------


def command_run(store, args):
    name = args.name or new_name(args.label)
    if not parse_name(name) or parse_name(name)[1] != args.label:
        raise BackupError(f"{name} is not a backup name for label {args.label} (<YYYYmmddTHHMMSSZ>-{args.label})")
    parts = [part for part in ("database", "media") if store.config.get(part) and part in args.parts]
    with locked(store.app, args.wait):
        os.makedirs(store.dir, 0o750, exist_ok=True)
        shutil.chown(store.dir, "root", store.group)
        store.remove_partials()
        if os.path.exists(store.path(name)):
            raise BackupError(f"backup {name} exists already")
        try:
            result = store.make(name, args.label, parts)
        except OSError as error:
            raise BackupError(f"writing backup {name} in {store.dir} failed: {error}") from None
        LOG.info("backup %s is made and checked: %s", name, human(result["size"]))
        result["pruned"] = store.prune()
        result["offsite"] = "off"
        if store.offsite and args.label in store.offsite.get("labels", ["nightly", "manual"]) and not args.no_offsite:
            try:
                store.copy_offsite(name, args.label)
                result["offsite"] = "copied"
                LOG.info("backup %s is copied to the restic repository", name)
            except BackupError as error:
                result["offsite"] = f"failed: {error}"
                print(json.dumps(result))
                raise OffsiteError(f"backup {name} is made here, but its offsite copy failed: {error}") from None
    print(json.dumps(result))


class OffsiteError(BackupError):
    pass


def command_list(store, args):
    backups = {name: store.describe(name) for name in store.names()}
    problems = []
    if args.offsite and store.offsite:
        try:
            for name, _snapshot in store.offsite_snapshots().items():
                if name in backups:
                    backups[name]["where"] = "local+offsite"
                else:
                    when, label = parse_name(name)
                    backups[name] = {"name": name, "label": label, "created": f"{when:%Y-%m-%dT%H:%M:%SZ}",
                                     "size": None, "parts": None, "where": "offsite"}  # fmt: skip
        except BackupError as error:
            problems.append(str(error))
    listing = [backups[name] for name in sorted(backups, reverse=True)]
    print(json.dumps({"backups": listing, "problems": problems}))


def command_verify(store, args):
    check_known(store, args.name)
    manifest = store.verify(args.name)
    LOG.info("backup %s is whole: its files match their checksums and pg_restore reads the dump", args.name)
    print(json.dumps({"name": args.name, "files": manifest["files"], "database": manifest.get("database")}))


def command_fetch(store, args):
    if not store.offsite:
        raise BackupError("no restic repository is configured (backup_restic_repository)")
    with locked(store.app, args.wait):
        if args.name in store.names():
            print(json.dumps(store.describe(args.name)))
            return
        result = store.fetch(args.name)
    LOG.info("backup %s is fetched from the restic repository and checked", args.name)
    print(json.dumps(result))


def command_restore(store, args):
    check_known(store, args.name)
    with locked(store.app, args.wait):
        # The playbook verified it deeply before the maintenance began; the checksums prove it is unchanged.
        manifest = store.verify(args.name, deep=False)
        result = {"name": args.name}
        if "database" in args.parts and store.database:
            if DUMP not in manifest["files"]:
                raise BackupError(f"backup {args.name} holds no database dump")
            result.update(store.restore_database(args.name))
        if "media" in args.parts and store.media and MEDIA in manifest["files"]:
            result.update(store.restore_media(args.name))
    print(json.dumps(result))


def command_offsite_init(store, args):
    if not store.offsite:
        print(json.dumps({"offsite": "off"}))
        return
    try:
        store.restic("cat", "config")
        state = "exists"
    except BackupError as error:
        if "there is no repository there" not in str(error):
            raise
        store.restic("init")
        state = "created"
    print(json.dumps({"offsite": state, "repository": store.offsite["repository"]}))


def check_known(store, name):
    if name not in store.names():
        known = ", ".join(store.names()) or "none"
        raise BackupError(f"there is no backup named {name} on this host. The backups here: {known}")


# --- main -----------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="keel-backup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the JSON configuration Ansible wrote")
    parser.add_argument("--quiet", action="store_true", help="log to journald only (for cron)")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("run", help="make a backup now")
    make.add_argument("--label", default="manual", choices=["nightly", "manual", "pre-deploy", "pre-rollback"])
    make.add_argument("--name", help="the backup's name (default: the time now and the label)")
    make.add_argument("--parts", default="database,media", type=lambda text: text.split(","))
    make.add_argument("--no-offsite", action="store_true", help="do not copy it to the restic repository")
    make.add_argument("--wait", type=float, default=0, help="seconds to wait for another run to finish")
    listing = commands.add_parser("list", help="the backups, newest first")
    listing.add_argument("--offsite", action="store_true", help="also the ones in the restic repository")
    for command in ("verify", "fetch", "restore"):
        sub = commands.add_parser(command)
        sub.add_argument("name")
        sub.add_argument("--wait", type=float, default=0)
        sub.add_argument("--parts", default="database,media", type=lambda text: text.split(","))
    commands.add_parser("offsite-init")
    return parser.parse_args(argv)


def setup_logging(quiet):
    LOG.setLevel(logging.INFO)
    LOG.handlers.clear()
    if os.path.exists("/dev/log"):
        journal = logging.handlers.SysLogHandler(address="/dev/log")
        journal.ident = "keel-backup: "
        LOG.addHandler(journal)
    if not quiet:
        terminal = logging.StreamHandler(sys.stderr)
        terminal.setFormatter(logging.Formatter("keel-backup: %(message)s"))
        LOG.addHandler(terminal)


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    setup_logging(args.quiet)
    with open(args.config) as stream:
        config = json.load(stream)
    store = Store(config)
    handler = {"run": command_run, "list": command_list, "verify": command_verify, "fetch": command_fetch,
               "restore": command_restore, "offsite-init": command_offsite_init}[args.command]  # fmt: skip
    try:
        handler(store, args)
    except LockedError as error:
        LOG.error("%s", error)
        alert(config, error, getattr(args, "name", None))
        return EXIT_LOCKED
    except OffsiteError as error:
        LOG.error("%s", error)
        alert(config, error, getattr(args, "name", None))
        return EXIT_OFFSITE_FAILED
    except BackupError as error:
        LOG.error("%s", error)
        if args.command in ("run", "verify", "restore"):
            alert(config, error, getattr(args, "name", None))
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
