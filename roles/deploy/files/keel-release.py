"""Django steps of a Keel deploy, run inside one release with its own virtualenv.

The deploy role feeds this file on stdin to the release's own Python, as the
app user, from the folder of manage.py (nothing is installed for it):

    python keel-release.py --env-file ENV build --state-file F [--metadata JSON] [--probe-host H ...]
    python keel-release.py --env-file ENV migrate
    python keel-release.py --env-file ENV probe --host H --release ID [--path /]
    python keel-release.py --env-file ENV ping --app CELERY_APP
    python keel-release.py --env-file ENV unapply --state-file F

Each subcommand boots Django once, so a deploy pays for few interpreter
start-ups. It reads the app's environment file itself (systemd's
KEY="value" format), so no shell ever expands a secret. Failures exit
non-zero with one line on stderr that says what failed.
"""

import argparse
import json
import os
import re
import socket
import sys
import time
from pathlib import Path

ENV_LINE = re.compile(r'^\s*([A-Za-z_][A-Za-z0-9_]*)=(?:"((?:[^"\\]|\\.)*)"|(.*))\s*$')


class DeployStepError(Exception):
    """A step failed; the message is what the user reads."""


def read_env_file(path: Path) -> dict[str, str]:
    """KEY="value" lines with \\ and \" escapes, as Keel's app role writes them."""
    values = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = ENV_LINE.match(line)
        if match is None:
            raise DeployStepError(f"{path}: cannot read the line starting {line[:20]!r}")
        key, quoted, bare = match.groups()
        values[key] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare.strip()
    return values


def boot_django(env_file: Path) -> None:
    os.environ.update(read_env_file(env_file))
    sys.path.insert(0, str(Path.cwd()))
    import django

    try:
        django.setup()
    except Exception as error:  # any import or settings error stops the deploy here
        raise DeployStepError(f"the release's code does not start: {type(error).__name__}: {error}") from error


def code_leaves() -> dict[str, str]:
    """The last migration of each app in this release's code: its schema state."""
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    return dict(sorted(loader.graph.leaf_nodes()))


def pending_migrations() -> list[str]:
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, backwards in plan if not backwards]


def build(args) -> dict:
    """check --deploy, collectstatic, and the release's migration state (main() wrote release.json). With
    --probe-host and no migration pending, the probe too, in the same process: the schema it needs is live."""
    from django.conf import settings
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.SILENCED_SYSTEM_CHECKS = [*settings.SILENCED_SYSTEM_CHECKS, *args.silence]
    try:
        call_command("check", deploy=True, fail_level="WARNING", stdout=sys.stderr)
    except SystemCheckError as error:
        raise DeployStepError(f"manage.py check --deploy failed:\n{error}") from error
    except Exception as error:  # the code fails to import as the checks load it
        raise DeployStepError(f"manage.py check --deploy failed: {type(error).__name__}: {error}") from error
    call_command("collectstatic", interactive=False, verbosity=0, stdout=sys.stderr)
    carried = carry_static_files(Path(args.carry_static_from)) if args.carry_static_from else 0
    state = {"migrations": code_leaves()}
    Path(args.state_file).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    result = {"pending": pending_migrations(), "static_files_carried": carried, **state}
    if args.probe_host and not result["pending"]:
        result["probe"] = probe(args)
    return result


def write_release_json(path: Path, metadata: dict) -> None:
    """What the release is and who deployed it: written whole, then renamed into place."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    partial.replace(path)


def carry_static_files(live_code: Path) -> int:
    """Hard-link the live release's static files that this one lacks.

    Pages the live release served name its hashed files; they must still load
    after the switch, so the new release keeps them until the next deploy.
    """
    from django.conf import settings

    new_root = Path(settings.STATIC_ROOT).resolve()
    try:
        relative = new_root.relative_to(Path.cwd().resolve())
    except ValueError:  # STATIC_ROOT outside the release: shared by releases already
        return 0
    live_root = live_code.resolve() / relative
    if not live_root.is_dir() or live_root == new_root:
        return 0
    carried = 0
    for source in live_root.rglob("*"):
        target = new_root / source.relative_to(live_root)
        if source.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, target)
            carried += 1
    return carried


def migrate(args) -> dict:
    from django.core.management import call_command

    pending = pending_migrations()
    try:
        call_command("migrate", interactive=False, verbosity=1, stdout=sys.stderr)
    except Exception as error:  # the migration's own error, whatever its type
        raise DeployStepError(f"migrate failed: {type(error).__name__}: {error}") from error
    return {"applied": pending}


def probe(args) -> dict:
    """Ask this release's code, in-process, before it serves anyone.

    --path must answer 2xx or 3xx through Django's own request handling: the
    code imports, its URLs and views load, its settings accept the site's
    Host. --readyz and --version are asked only where the app routes them;
    what it has is returned, so the gate through nginx asks the same.
    """
    from django.test import Client
    from django.urls import Resolver404, resolve

    client = Client(HTTP_HOST=args.probe_host)
    found = {}
    for name, path in (("readyz", args.probe_readyz), ("version", args.probe_version)):
        try:
            found[name] = bool(path) and resolve(path.split("?")[0]) is not None
        except Resolver404:
            found[name] = False

    def get(path):
        try:
            return client.get(path, secure=True)
        except Exception as error:  # the view's own error, whatever its type: the real cause
            raise DeployStepError(f"{path} raised {type(error).__name__}: {error}") from error

    response = get(args.probe_path)
    if not 200 <= response.status_code < 400:
        raise DeployStepError(f"{args.probe_path} answered {response.status_code}: {answer_text(response)}")
    if found["readyz"]:
        response = get(args.probe_readyz)
        if response.status_code != 200:
            raise DeployStepError(f"{args.probe_readyz} answered {response.status_code}: {answer_text(response)}")
    if found["version"]:
        response = get(args.probe_version)
        served = response.json().get("release") if response.status_code == 200 else None
        if served != args.release:
            raise DeployStepError(
                f"{args.probe_version} answered {response.status_code} reporting release {served!r}, "
                f"not {args.release!r}"
            )
    return {"readyz": found["readyz"], "version": found["version"]}


def answer_text(response) -> str:
    return response.content.decode(errors="replace")[:500].strip()


def ping(args) -> dict:
    """Wait until the Celery worker NODE answers a ping through the broker."""
    from celery.app.utils import find_app

    app = find_app(args.app)
    deadline = time.monotonic() + args.timeout
    while True:
        replies = app.control.ping(destination=[args.node], timeout=1.0)
        if any(args.node in reply for reply in replies):
            return {"pong": args.node}
        if time.monotonic() >= deadline:
            raise DeployStepError(f"the Celery worker {args.node} does not answer a ping after {args.timeout:g} s")


def unapply(args) -> dict:
    """Migrate every app back to the state recorded for an older release."""
    from django.core.management import call_command

    target = json.loads(Path(args.state_file).read_text())["migrations"]
    steps = []
    for app_label, leaf in code_leaves().items():
        wanted = target.get(app_label, "zero")
        if wanted != leaf:
            steps.append((app_label, wanted))
    for app_label, wanted in steps:
        try:
            call_command("migrate", app_label, wanted, interactive=False, verbosity=1, stdout=sys.stderr)
        except Exception as error:
            failure = f"unapplying {app_label} to {wanted} failed: {type(error).__name__}: {error}"
            raise DeployStepError(failure) from error
    return {"unapplied_to": dict(steps)}


def add_probe_arguments(step, required):
    step.add_argument("--probe-host", required=required, help="the site's name, for the probe's Host header")
    step.add_argument("--release", required=required, help="the release id /version must report")
    step.add_argument("--probe-path", default="/", help="must answer 2xx or 3xx")
    step.add_argument("--probe-readyz", default="/readyz", help="asked if the app routes it")
    step.add_argument("--probe-version", default="/version", help="asked if the app routes it")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, help="the app's environment file")
    steps = parser.add_subparsers(dest="step", required=True)
    build_step = steps.add_parser("build")
    build_step.add_argument("--state-file", required=True)
    build_step.add_argument("--carry-static-from", help="the live release's folder of manage.py")
    build_step.add_argument("--silence", action="append", default=[], help="a check id to silence (repeat)")
    build_step.add_argument("--metadata", help="release.json's content, as JSON, written beside the state file")
    add_probe_arguments(build_step, required=False)
    steps.add_parser("migrate")
    add_probe_arguments(steps.add_parser("probe"), required=True)
    ping_step = steps.add_parser("ping")
    ping_step.add_argument("--app", required=True, help="the Celery app, as for celery -A")
    ping_step.add_argument("--node", default=f"worker@{socket.gethostname()}")
    ping_step.add_argument("--timeout", type=float, default=30)
    unapply_step = steps.add_parser("unapply")
    unapply_step.add_argument("--state-file", required=True)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    step = {"build": build, "migrate": migrate, "probe": probe, "ping": ping, "unapply": unapply}[args.step]
    try:
        if args.env_file is None:
            raise DeployStepError("--env-file is required")
        if getattr(args, "metadata", None):
            # Before Django starts: an app may read its release.json once, as it imports (/version).
            write_release_json(Path(args.state_file).parent / "release.json", json.loads(args.metadata))
        boot_django(args.env_file)
        result = step(args)
    except DeployStepError as error:
        print(f"keel-release {args.step}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
