#!/usr/bin/python3
"""What a live site's host looks like now, for status.yml: one call, read-only."""

DOCUMENTATION = r"""
module: keel_status
short_description: Report a Keel host's live release, units, site, certificate, last backup, disk and memory
description:
  - Reads, never changes. Each finding is a line of the report; what is unhealthy is also listed in problems.
  - The site is asked through nginx on this host, with the site's Host header and SNI, as its visitors see it
    (curl). readyz_path must answer 200; an app that does not route it (404) is asked check_path instead, which
    must answer 2xx or 3xx.
options:
  app_root:
    description: "The app's folder (releases/, current); empty on hosts that run no app (db, cache, lb)."
    type: str
    default: ""
  units:
    description: Units that must be active; a name may be a glob (postgresql@*-main.service).
    type: list
    elements: str
    default: []
  site_host: {description: "The site's first domain; empty on hosts without nginx.", type: str, default: ""}
  tls_certificate: {description: "The site's certificate; empty or missing: HTTP.", type: str, default: ""}
  readyz_path: {description: "The app's readiness endpoint.", type: str, default: /readyz}
  check_path: {description: "The page asked when the app has no readiness endpoint.", type: str, default: /}
  certificate_min_days: {description: "Fewer days left than this is a problem.", type: int, default: 14}
  backup_argv:
    description: "keel-backup's list command on hosts that back up; empty: no backup here."
    type: list
    elements: str
    default: []
  backup_max_age_hours: {description: "An older newest backup is a problem.", type: float, default: 26}
  disk_paths: {description: "Folders whose file systems must have room.", type: list, elements: path, default: ["/"]}
  disk_min_free_percent: {description: "Less free space than this is a problem.", type: float, default: 10}
  memory_min_available_percent: {description: "Less available memory than this is a problem.", type: float, default: 5}
"""

RETURN = r"""
lines: {description: The report, one finding per line., type: list, returned: always}
problems: {description: What is unhealthy, one line each., type: list, returned: always}
release: {description: "The live release's release.json, or {}.", type: dict, returned: always}
"""

import datetime
import fnmatch
import json
import os
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.formatters import bytes_to_human as size_text

UNIT_PROPERTIES = ("ActiveState", "SubState", "NRestarts", "LoadState")


class Report:
    def __init__(self):
        self.lines, self.problems = [], []

    def add(self, what, text, problem=None):
        """A finding; problem, if given, says why it is unhealthy."""
        self.lines.append(f"{what:<34} {text}" + (f"   <-- {problem}" if problem else ""))
        if problem:
            self.problems.append(f"{what}: {problem}")


def run(argv, timeout=30):
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return 127, "", str(error)
    return result.returncode, result.stdout, result.stderr


def read_json(path):
    try:
        with open(path) as stream:
            return json.load(stream)
    except (OSError, ValueError):
        return {}


def release_lines(report, app_root):
    live = read_json(os.path.join(app_root, "current", "release.json"))
    if not live:
        report.add("release", "none is live", "no release is live (deploy.yml puts one live)")
        return live
    report.add("release", f"{live.get('release')}  {str(live.get('sha', ''))[:12]} {live.get('ref', '')}, "
                          f"deployed {live.get('deployed_at', '?')} by {live.get('deployed_by', '?')}")  # fmt: skip
    previous = live.get("previous")
    if previous:
        older = read_json(os.path.join(app_root, "releases", previous, "release.json"))
        kept = f"  {str(older.get('sha', ''))[:12]} {older.get('ref', '')}" if older else " (pruned: not on this host)"
        report.add("previous release", previous + kept)
    else:
        report.add("previous release", "none: this is the first")
    return live


def expand(patterns):
    names = []
    for pattern in patterns:
        if not any(sign in pattern for sign in "*?["):
            names.append(pattern)
            continue
        _, output, _ = run(["systemctl", "list-units", "--all", "--plain", "--no-legend", pattern])
        found = [line.split()[0] for line in output.splitlines() if line.split()]
        names.extend(sorted(name for name in found if fnmatch.fnmatch(name, pattern)) or [pattern])
    return names


def unit_lines(report, patterns):
    for unit in expand(patterns):
        _, output, _ = run(["systemctl", "show", unit, *(f"--property={name}" for name in UNIT_PROPERTIES)])
        state = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
        active, sub = state.get("ActiveState", "unknown"), state.get("SubState", "unknown")
        restarts = state.get("NRestarts", "")
        # NRestarts: how often systemd restarted the service after a failure since it was last started.
        text = f"{active}/{sub}" + (f", restarts: {restarts}" if restarts else "")
        if state.get("LoadState") == "not-found":
            report.add(unit, "not installed", "the unit is not installed (run provision.yml)")
        elif active != "active":
            report.add(unit, text, f"{active}: journalctl -u {unit} says why")
        else:
            report.add(unit, text)


def site_lines(report, params):
    host = params["site_host"]
    tls = bool(params["tls_certificate"]) and os.path.exists(params["tls_certificate"])
    scheme, port = ("https", 443) if tls else ("http", 80)

    def ask(path):
        _, output, _ = run([
            "curl", "--silent", "--insecure", "--max-time", "10", "--output", "/dev/null",
            "--write-out", "%{http_code}", "--resolve", f"{host}:{port}:127.0.0.1",
            "--header", "X-Forwarded-Proto: https", f"{scheme}://{host}{path}",
        ])  # fmt: skip
        return int(output) if output.strip().isdigit() else 0

    status = ask(params["readyz_path"])
    where = f"through nginx ({scheme})"
    if status == 200:
        report.add(params["readyz_path"], f"200 {where}")
        return
    if status == 404:
        status = ask(params["check_path"])
        text = f"{status or 'no answer'} {where} (the app has no {params['readyz_path']})"
        report.add(params["check_path"], text, None if 200 <= status < 400 else "the site does not serve")
        return
    report.add(params["readyz_path"], f"{status or 'no answer'} {where}", "the app is not ready")


def certificate_lines(report, path, min_days, now):
    if not path or not os.path.exists(path):
        return
    code, output, error = run(["openssl", "x509", "-enddate", "-noout", "-in", path])
    if code != 0:
        report.add("certificate", "unreadable", f"openssl cannot read {path}: {error.strip()}")
        return
    not_after = datetime.datetime.strptime(output.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")
    days = (not_after.replace(tzinfo=datetime.UTC) - now).days
    text = f"{days} days left (until {not_after:%Y-%m-%d})"
    report.add("certificate", text, f"it expires in {days} days" if days < min_days else None)


def backup_lines(report, argv, max_age_hours, now):
    if not argv:
        return
    code, output, error = run(argv, timeout=120)
    if code != 0:
        report.add("last backup", "unknown", f"keel-backup list failed: {error.strip() or output.strip()}")
        return
    backups = json.loads(output).get("backups", [])
    # A pre-deploy dump holds the database only: the last full backup is what counts.
    full = [backup for backup in backups if not backup.get("label", "").startswith("pre-")]
    if not full:
        report.add("last backup", "none yet", "there is no backup on this host yet (make backup, or wait for cron)")
        return
    newest = full[0]
    created = datetime.datetime.strptime(newest["created"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    hours = (now - created).total_seconds() / 3600
    text = f"{newest['name']}, {hours:.1f} h old, {size_text(newest.get('size', 0))}"
    report.add("last backup", text, f"the newest backup is {hours:.0f} h old" if hours > max_age_hours else None)


def disk_lines(report, paths, min_percent):
    seen = set()
    for path in paths:
        try:
            stat = os.statvfs(path)
            device = os.stat(path).st_dev
        except OSError:
            continue
        if device in seen:
            continue
        seen.add(device)
        percent = 100 * stat.f_bavail / stat.f_blocks if stat.f_blocks else 100
        free, total = stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize
        text = f"{percent:.0f}% free ({size_text(free)} of {size_text(total)})"
        report.add(f"disk {path}", text, f"only {percent:.0f}% free" if percent < min_percent else None)


def memory_lines(report, min_percent):
    info = {}
    with open("/proc/meminfo") as stream:
        for line in stream:
            name, value = line.split(":", 1)
            info[name] = int(value.split()[0]) * 1024
    percent = 100 * info["MemAvailable"] / info["MemTotal"]
    text = f"{percent:.0f}% available ({size_text(info['MemAvailable'])} of {size_text(info['MemTotal'])})"
    report.add("memory", text, f"only {percent:.0f}% available" if percent < min_percent else None)


def status(params, now=None):
    now = now or datetime.datetime.now(datetime.UTC)
    report = Report()
    live = release_lines(report, params["app_root"]) if params["app_root"] else {}
    unit_lines(report, params["units"])
    if params["site_host"]:
        site_lines(report, params)
        certificate_lines(report, params["tls_certificate"], params["certificate_min_days"], now)
    backup_lines(report, params["backup_argv"], params["backup_max_age_hours"], now)
    disk_lines(report, params["disk_paths"], params["disk_min_free_percent"])
    memory_lines(report, params["memory_min_available_percent"])
    return {"lines": report.lines, "problems": report.problems, "release": live}


def main():
    spec = {
        "app_root": {"type": "str", "default": ""},
        "units": {"type": "list", "elements": "str", "default": []},
        "site_host": {"type": "str", "default": ""},
        "tls_certificate": {"type": "str", "default": ""},
        "readyz_path": {"type": "str", "default": "/readyz"},
        "check_path": {"type": "str", "default": "/"},
        "certificate_min_days": {"type": "int", "default": 14},
        "backup_argv": {"type": "list", "elements": "str", "default": []},
        "backup_max_age_hours": {"type": "float", "default": 26},
        "disk_paths": {"type": "list", "elements": "path", "default": ["/"]},
        "disk_min_free_percent": {"type": "float", "default": 10},
        "memory_min_available_percent": {"type": "float", "default": 5},
    }
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    module.exit_json(changed=False, **status(module.params))


if __name__ == "__main__":
    main()
