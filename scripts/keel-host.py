#!/usr/bin/env python3
"""Run the daily commands of a live site on its hosts: manage.py, and the logs.

    scripts/keel-host.py -i inventories/prod manage createsuperuser
    scripts/keel-host.py -i inventories/prod manage shell        (make shell)
    scripts/keel-host.py -i inventories/prod logs --unit web --since "1 hour ago" --follow

The hosts, and how to reach them, come from the inventory (ansible-inventory),
as for ansible-playbook: SSH with the inventory's user, port and key, through
the connection Ansible keeps open (ControlPersist, see ansible.cfg), or the
Docker API for the local demo. manage runs the app's manage.py on the first
web host (or --host) as the app's services run it: as the app user, with the
app's environment and the live release's virtualenv, on a terminal when you
have one. Its exit code is the command's. Variables named DJANGO_SUPERUSER_*
(createsuperuser --noinput reads them) and those named with --env are passed
on; over SSH they are on the remote command line, which the host's root sees.

logs merges the journals of the app's units (web: gunicorn with its access
log, worker, beat) or of PostgreSQL on every host that runs them, in time order,
each line led by its host; --unit nginx shows nginx's access and error logs.
The unit names and the manage script's path are read from roles/keel/vars/main.yml,
where the roles take them from.
"""

import argparse
import hashlib
import json
import os
import queue
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
KEEL_VARS = yaml.safe_load((REPO / "roles" / "keel" / "vars" / "main.yml").read_text())
KEEL_DEFAULTS = yaml.safe_load((REPO / "roles" / "keel" / "defaults" / "main.yml").read_text())
DOCKER_CONNECTIONS = {"docker", "community.docker.docker"}
# What --unit names: the group whose hosts run it, and its systemd unit (the app's from KEEL_VARS).
UNITS = {
    "web": ("web", KEEL_VARS["__keel_units"]["web"]),
    "worker": ("worker", KEEL_VARS["__keel_units"]["worker"]),
    "beat": ("beat", KEEL_VARS["__keel_units"]["beat"]),
    "postgresql": ("db", "postgresql@*-main.service"),
    "nginx": ("web", None),
}
APP_UNITS = ("web", "worker", "beat")
NGINX_LOGS = ("/var/log/nginx/access.log", "/var/log/nginx/error.log")


def for_app(template, app):
    """A name from roles/keel/vars/main.yml, for this app."""
    return template.replace("{{ app_name }}", app)


class Problem(Exception):
    """Something the user must fix; the message says what."""


class Inventory:
    def __init__(self, path):
        result = subprocess.run(
            [str(Path(sys.executable).with_name("ansible-inventory")), "-i", path, "--list"],
            cwd=REPO, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise Problem(f"ansible-inventory cannot read {path}: {result.stderr.strip()[-500:]}")
        data = json.loads(result.stdout)
        self.path = path
        self.hostvars = data.get("_meta", {}).get("hostvars", {})
        self.groups = {name: self._hosts(data, name) for name in data if name != "_meta"}

    @staticmethod
    def _hosts(data, group, seen=None):
        seen = seen or set()
        if group in seen or group not in data:
            return []
        seen.add(group)
        hosts = list(data[group].get("hosts", []))
        for child in data[group].get("children", []):
            hosts += [host for host in Inventory._hosts(data, child, seen) if host not in hosts]
        return hosts

    def group(self, name):
        hosts = self.groups.get(name, [])
        if not hosts:
            raise Problem(f"{self.path} has no host in the '{name}' group")
        return hosts

    def app_name(self, host):
        name = self.hostvars.get(host, {}).get("app_name", KEEL_DEFAULTS["app_name"])
        if "{" in name:
            raise Problem(f"app_name is a template for {host} ({name}): set it plainly in {self.path}'s group_vars")
        return name


def control_path(address, port, user):
    """The socket of the SSH connection Ansible keeps open to this host (its ssh plugin's name for it), so
    that this command reuses it rather than opening another (UFW limits new SSH connections)."""
    digest = hashlib.sha1(f"{address}-{port or None}-{user or None}".encode()).hexdigest()[:10]
    return str(Path.home() / ".ansible" / "cp" / digest)


def remote(inventory, host, argv, tty=False, env=()):
    """The local command that runs argv (a list) on host, as root, with these variables of this
    process's environment."""
    variables = inventory.hostvars.get(host, {})
    connection = variables.get("ansible_connection", "ssh")
    if connection in DOCKER_CONNECTIONS:
        container = variables.get("ansible_host", host)
        passed = [option for name in env for option in ("-e", name)]  # values from this environment
        return ["docker", "exec", "-i", *(["-t"] if tty else []), *passed, container, *argv]
    if connection == "local":
        return argv
    user = variables.get("ansible_user", "")
    if user and user != "root":
        keep = [f"--preserve-env={','.join(env)}"] if env else []
        argv = ["sudo", *([] if tty else ["-n"]), *keep, "--", *argv]
    if env:  # on the remote command line: sshd refuses other variables (AcceptEnv)
        argv = ["env", *(f"{name}={os.environ[name]}" for name in env), *argv]
    address, port = variables.get("ansible_host", host), variables.get("ansible_port")
    ssh = [
        "ssh", "-o", "ControlMaster=auto", "-o", "ControlPersist=300s",
        "-o", f"ControlPath={control_path(address, port, user)}", "-t" if tty else "-T",
    ]  # fmt: skip
    if port:
        ssh += ["-p", str(port)]
    if variables.get("ansible_ssh_private_key_file"):
        ssh += ["-i", variables["ansible_ssh_private_key_file"]]
    ssh += shlex.split(variables.get("ansible_ssh_common_args", ""))
    return [*ssh, f"{user}@{address}" if user else address, shlex.join(argv)]


def manage(inventory, args):
    host = args.host or inventory.group("web")[0]
    if host not in inventory.hostvars:
        raise Problem(f"{host} is not a host of {inventory.path}")
    script = for_app(KEEL_VARS["__keel_manage_script"], inventory.app_name(host))
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    env = sorted({name for name in os.environ if name.startswith("DJANGO_SUPERUSER_")} | set(args.env))
    if missing := [name for name in env if name not in os.environ]:
        raise Problem(f"--env names {', '.join(missing)}, which this environment does not set")
    if args.env:
        os.environ["KEEL_MANAGE_ENV"] = " ".join(args.env)
        env.append("KEEL_MANAGE_ENV")
    Path.home().joinpath(".ansible", "cp").mkdir(parents=True, exist_ok=True)
    command = remote(inventory, host, [script, *args.command], tty=tty, env=env)
    return subprocess.run(command, check=False).returncode


def log_argv(units, args):
    """The command that prints (or follows) these units' logs on a host."""
    if units == [None]:
        return ["tail", "--quiet", f"--lines={args.lines or 100}", *(["--follow=name"] if args.follow else []),
                *NGINX_LOGS]  # fmt: skip
    argv = ["journalctl", "--no-pager", "--output=short-iso", *(f"--unit={unit}" for unit in units)]
    if args.lines or not args.since:
        argv.append(f"--lines={args.lines or 100}")
    if args.since:
        argv.append(f"--since={args.since}")
    if args.follow:
        argv.append("--follow")
    return argv


def logs(inventory, args):
    if args.unit == "nginx" and args.since:
        raise Problem("--since reads the journal; nginx's logs are files: use --lines")
    names = APP_UNITS if args.unit == "app" else (args.unit,)
    wanted = {}  # host: its units, in the order of the groups
    for name in names:
        group, unit = UNITS[name]
        for host in inventory.groups.get(group, []):
            wanted.setdefault(host, []).append(unit and for_app(unit, inventory.app_name(host)))
    if not wanted:
        raise Problem(f"{inventory.path} has no host that runs {args.unit}")
    Path.home().joinpath(".ansible", "cp").mkdir(parents=True, exist_ok=True)
    width = max(len(host) for host in wanted)
    lines, processes = queue.Queue(), []

    def read(host, process):
        for line in process.stdout:
            lines.put((host, line.rstrip("\n")))
        lines.put((host, None))

    for host, units in wanted.items():
        command = remote(inventory, host, log_argv(units, args))
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, errors="replace")
        processes.append(process)
        threading.Thread(target=read, args=(host, process), daemon=True).start()
    gathered, streams, interrupted = [], len(processes), False
    try:
        while streams:
            host, line = lines.get()
            if line is None:
                streams -= 1
            elif args.follow:
                print(f"{host:<{width}} | {line}", flush=True)
            elif not line.startswith("-- "):  # journalctl's "-- No entries --"
                gathered.append((host, line))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for process in processes:
            process.terminate()
    if args.unit != "nginx":
        # One timeline: journalctl's short-iso lines start with their time (a stable sort keeps each host's order).
        gathered.sort(key=lambda entry: entry[1].split(" ", 1)[0])
    for host, line in gathered:
        print(f"{host:<{width}} | {line}")
    codes = [process.wait() for process in processes]
    return 0 if interrupted or all(code == 0 for code in codes) else 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--inventory", required=True, help="inventories/<env>, or any inventory path")
    commands = parser.add_subparsers(dest="what", required=True)
    run = commands.add_parser("manage", help="run manage.py on an app host as the app runs it")
    run.add_argument("--host", help="the host (default: the first web host)")
    run.add_argument("--env", action="append", default=[], metavar="NAME",
                     help="pass this variable on (DJANGO_SUPERUSER_* always are)")  # fmt: skip
    run.add_argument("command", nargs=argparse.REMAINDER, help="manage.py's arguments")
    journal = commands.add_parser("logs", help="the journals of the app's units, merged across hosts")
    journal.add_argument("--unit", choices=["app", *UNITS], default="app", help="default: web, worker and beat")
    journal.add_argument("--since", default="", help='journalctl --since, e.g. "1 hour ago" or "2026-11-23 10:00"')
    journal.add_argument("--lines", type=int, default=0, help="the last lines per host (default 100, all with --since)")
    journal.add_argument("--follow", action="store_true", help="keep printing new lines (Ctrl-C stops)")
    args = parser.parse_args(argv)
    try:
        inventory = Inventory(args.inventory)
        if args.what == "manage":
            args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
            if not args.command:
                raise Problem("say which command: make manage ENV=... CMD='createsuperuser'")
            return manage(inventory, args)
        return logs(inventory, args)
    except Problem as problem:
        print(f"keel-host: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
