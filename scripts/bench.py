#!/usr/bin/env python3
"""`make bench`: measure Keel on local Debian containers; write docs/benchmarks.md.

Two identical containers play VPSes: keel-bench (Keel's deploys) and
keel-naive (the tutorials' deploy, for comparison). Every measurement is the
median of several runs (KEEL_BENCH_RUNS, default 3; provisioning from a bare
image: KEEL_BENCH_PROVISION_RUNS, default 1). Load goes through nginx to the
container under test only, at a fixed rate, bounded in count and time.

Both containers fetch the code from a git repository inside themselves, made
from app/ of this checkout, so that both deploys pull the same commits.

A third, keel-bench-any, runs the any-project fixture (a cookiecutter-django
shaped project with uv.lock and psycopg[c]; molecule/any-project) from the
README's recipe: its first deploy with uv and an empty cache, and deploys with
changed dependencies. `scripts/bench.py --only any-project` measures that part
alone and rewrites only its section of docs/benchmarks.md.

`--only deploy` measures deploy speed over SSH, as users run it, and over
`docker exec` beside it: Keel's code-only deploy (git and controller modes), a
deploy with changed requirements and a rollback, against the tutorials' naive
script on an identical host, all under the same load. The figure is the time
from the command's start until the site (through nginx) answers with the new
release, and the time until the command returns beside it; the table's
breakdown comes from profile_tasks.

`--only backups` times keel-backup on keel-bench (provisioned and deployed
first if it is not): backup, restore and dump size for a database of
BACKUP_ROWS rows, and pg_dump's compression choices.
"""

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
os.environ["PATH"] = f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"

from loadgen import LoadGenerator  # noqa: E402

RUNS = int(os.environ.get("KEEL_BENCH_RUNS", "3"))
PROVISION_RUNS = int(os.environ.get("KEEL_BENCH_PROVISION_RUNS", "1"))
LOAD_RATE = 100  # requests per second during a measured deploy
RATE_SECONDS = 10  # each run of the request-rate measurement
MIN_REQUESTS = 1000
DOMAIN = "keelapp.localhost"
APP = "keelapp"
WORK, BARE = "/root/bench-work", "/var/lib/keel-bench/app.git"
CACHE = REPO / ".cache" / "bench"
REPORT = REPO / "docs" / "benchmarks.md"
ANY_SCENARIO = REPO / "molecule" / "any-project"
ANY_APP, ANY_DOMAIN, ANY_BARE = "cookieproj", "cookieproj.test", "/var/lib/keel-test/cookieproj.git"
ANY_MARKERS = ("<!-- any-project -->", "<!-- /any-project -->")
BACKUP_MARKERS = ("<!-- backups -->", "<!-- /backups -->")
DEPLOY_MARKERS = ("<!-- deploy-speed -->", "<!-- /deploy-speed -->")
SSH_USER = "bench"
SSH_KEY = CACHE / "ssh" / "id_ed25519"
# One SSH connection per host, kept open between commands (as ansible.cfg
# does for Ansible): the naive script's ssh gets the same advantage.
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "ControlMaster=auto", "-o", "ControlPersist=300s",
               "-o", f"ControlPath={CACHE}/ssh/%C"]  # fmt: skip
CONTROLLER_REPO = CACHE / "controller-app"
BACKUP_ROWS = 1_000_000
# A section measured by the tests, not by this script: kept as it is.
TLS_MARKERS = ("<!-- tls -->", "<!-- /tls -->")
# A new dependency set each time: idna at one of several versions, locked by
# the host's own uv.
DEPENDENCY_CHANGE = """python3 - <<'PY'
import re
text = open("pyproject.toml").read()
text = re.sub(r'\\n  "idna==[^"]*",', "", text)
open("pyproject.toml", "w").write(text.replace("dependencies = [", 'dependencies = [\\n  "idna=={version}",', 1))
PY
UV_SYSTEM_CERTS=1 /opt/keel-uv/bin/uv lock -q"""
BENCH_VARS = [f"app_repo={BARE}", "deploy_source=git"]
# What the defaults give a 1 GB, 1-core VPS, on this bigger machine.
ONE_GB = ["keel_memory_mb=1024", "keel_cpus=1"]

NAIVE_SCRIPT = f"""
set -e
cd /srv/{APP}/naive
runuser -u {APP} -- git pull --quiet
runuser -u {APP} -- .venv/bin/pip install --quiet -r app/requirements.txt
set -a; . /srv/{APP}/shared/env; set +a
runuser -u {APP} --preserve-environment -- .venv/bin/python app/manage.py migrate --noinput
runuser -u {APP} --preserve-environment -- .venv/bin/python app/manage.py collectstatic --noinput
systemctl restart naive-gunicorn {APP}-celery-worker {APP}-celery-beat
"""

# The tutorials' gunicorn: it binds its socket itself, so a restart closes it.
NAIVE_UNIT = f"""[Unit]
Description=gunicorn, as the tutorials set it up
After=network.target

[Service]
User={APP}
Group=www-data
WorkingDirectory=/srv/{APP}/naive/app
EnvironmentFile=/srv/{APP}/shared/env
RuntimeDirectory={APP}
RuntimeDirectoryPreserve=yes
ExecStart=/srv/{APP}/naive/.venv/bin/gunicorn --workers 3 --umask 007 \\
  --bind unix:/run/{APP}/gunicorn.sock keelapp.wsgi:application

[Install]
WantedBy=multi-user.target
"""


def say(message):
    print(f"bench: {message}", flush=True)


def run(command, check=True, **kwargs):
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, **kwargs)
    if check and result.returncode != 0:
        sys.exit(f"bench: {' '.join(map(str, command))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def on(host, script, check=True):
    return run(["docker", "exec", host, "bash", "-c", script], check=check).stdout.strip()


def inventory(host, ssh=False):
    """A one-host inventory: the local environment's settings and vault, or for
    keel-bench-any, the any-project scenario's (the README's recipe). ssh:
    reach the host over SSH as SSH_USER (sudo), not through docker exec."""
    folder = CACHE / f"inventory-{host}{'-ssh' if ssh else ''}"
    (folder / "group_vars").mkdir(parents=True, exist_ok=True)
    if host == "keel-bench-any":
        links = {"all.yml": ANY_SCENARIO / "inventory" / "group_vars" / "all.yml",
                 "local.yml": ANY_SCENARIO / "inventory" / "group_vars" / "keel_test.yml"}  # fmt: skip
    else:
        links = {"local": REPO / "inventories" / "local" / "group_vars" / "local"}
    for name, target in links.items():
        if not (folder / "group_vars" / name).exists():
            (folder / "group_vars" / name).symlink_to(target)
    groups = {name: {"hosts": {host: None}} for name in ("web", "worker", "beat", "db", "cache")}
    connection = {"ansible_connection": "community.docker.docker"}
    if ssh:
        connection = {
            "ansible_connection": "ssh",
            "ansible_host": address_of(host),
            "ansible_user": SSH_USER,
            "ansible_ssh_private_key_file": str(SSH_KEY),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        }
    hosts = {"local": {"vars": connection, "children": groups}}
    (folder / "hosts.yml").write_text(json.dumps(hosts, indent=2))
    return folder


def address_of(host):
    return run(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", host]
    ).stdout.strip()


def playbook(host, name, *extra_vars, check=True, ssh=False, env=None):
    """Run a playbook on one container: (seconds, changed count, result)."""
    command = ["ansible-playbook", "-i", str(inventory(host, ssh)), name]
    for assignment in extra_vars:
        command += ["-e", assignment]
    started = time.monotonic()
    result = run(command, check=check, env={**os.environ, **(env or {})})
    seconds = time.monotonic() - started
    changed = sum(int(n) for n in re.findall(r"\bchanged=(\d+)", result.stdout.split("PLAY RECAP")[-1]))
    return seconds, changed, result


def container(host, fresh=False):
    if fresh:
        run(["docker", "rm", "-f", host], check=False)
    return run(["scripts/host-container.sh", host]).stdout.strip().splitlines()[-1]


def give_repository(host):
    """The app's repository inside the host: a work tree and a bare clone."""
    archive = CACHE / "app.tar.gz"
    run(["tar", "-czf", str(archive), "--exclude=__pycache__", "--exclude=staticfiles", "--exclude=.coverage", "app"])
    run(["docker", "cp", str(archive), f"{host}:/root/app.tar.gz"])
    on(
        host,
        f"set -e; git config --system safe.directory '*'; rm -rf {WORK} {BARE}; mkdir -p {WORK} $(dirname {BARE})\n"
        f"cd {WORK}; tar -xzf /root/app.tar.gz; git init -q -b main; git add app\n"
        "git -c user.name=bench -c user.email=bench@keel commit -qm 'First version'\n"
        f"git clone -q --bare {WORK} {BARE}; git remote add origin {BARE}; chmod -R a+rX {BARE}",
    )


def commit(host, message, script):
    on(
        host,
        f"set -e; cd {WORK}; {script}; git add -A\n"
        f"git -c user.name=bench -c user.email=bench@keel commit -qm '{message}'; git push -q origin main",
    )


def code_change(host, number):
    commit(host, f"Change {number}", f"echo '<!-- change {number} -->' >> app/guestbook/templates/guestbook/home.html")


def requirements_change(host, number):
    """A new requirements set each time: idna at one of several versions."""
    version = ["3.10", "3.9", "3.8", "3.7", "3.6"][number % 5]
    commit(
        host,
        f"Requirements {number}",
        f"sed -i '/^idna==/d' app/requirements.txt; echo 'idna=={version}' >> app/requirements.txt",
    )


def static_path(host):
    return "/static/" + on(host, f"cd /srv/{APP}/current/app/staticfiles && ls guestbook/style.*.css | head -n 1")


def request_rates(report, address, paths):
    """Requests per second as fast as 4 threads go, one connection per request,
    for RATE_SECONDS: over HTTPS (selfsigned, a TLS handshake per request), then
    over HTTP with the host re-provisioned with tls_mode none, and back."""
    for label, https, extra in (("HTTPS", True, []), ("plain HTTP (tls_mode none)", False, ["tls_mode=none"])):
        if extra:
            playbook("keel-bench", "provision.yml", *extra)
        rates, failed = [], []
        for _ in range(RUNS):
            load = LoadGenerator(address, DOMAIN, paths, threads=4, max_requests=200_000, max_seconds=60, https=https)
            load.start()
            time.sleep(RATE_SECONDS)
            outcome = load.stop()
            rates.append(outcome.sent / outcome.seconds)
            failed.append(outcome.failed)
        report.add(f"Request rate over {label}, a new connection per request", rates, "req/s")
        report.add(f"Request rate over {label}: failed requests", failed, "", "0", lambda m: m == 0)
    playbook("keel-bench", "provision.yml")


def under_load(address, paths, action):
    """Run action() while requests go to address; (its result, the load result)."""
    load = LoadGenerator(address, DOMAIN, paths, threads=4, max_requests=20_000, max_seconds=900, rate=LOAD_RATE,
                         https=True)  # fmt: skip
    load.start()
    outcome = action()
    return outcome, load.stop(min_requests=MIN_REQUESTS)


# Per process: RSS (which counts shared pages once per process that maps
# them: PostgreSQL's shared buffers, the pages gunicorn workers share with
# their master) and PSS (each shared page split between its sharers).
MEMORY_TABLE = (
    "for p in /proc/[0-9]*; do"
    " pss=$(awk '/^Pss:/ {print $2}' $p/smaps_rollup 2>/dev/null) || continue;"
    ' [ -n "$pss" ] || continue;'
    " rss=$(awk '/^VmRSS:/ {print $2}' $p/status 2>/dev/null);"
    ' echo "$rss $pss $(cat $p/comm) $(tr "\\0" " " < $p/cmdline)"; done'
)


def idle_memory(host):
    """Summed RSS and PSS (MB) of the stack's processes, by service, once the host is idle."""
    time.sleep(20)
    samples = []
    for _ in range(3):
        by_service = {}
        for line in on(host, MEMORY_TABLE).splitlines():
            fields = line.split(None, 3)
            if len(fields) < 3 or not fields[0].isdigit():
                continue
            rss, pss, comm, args = (*fields, "")[:4]
            service = next((name for name, match in SERVICES.items() if match(comm, args)), None)
            if service:
                totals = by_service.setdefault(service, [0.0, 0.0])
                totals[0] += int(rss) / 1024
                totals[1] += int(pss) / 1024
        samples.append(by_service)
        time.sleep(2)
    return {
        name: tuple(statistics.median(s.get(name, [0.0, 0.0])[i] for s in samples) for i in (0, 1)) for name in SERVICES
    }


SERVICES = {
    "PostgreSQL": lambda comm, args: comm.startswith("postgres"),
    "Redis": lambda comm, args: comm.startswith("redis-server"),
    "nginx": lambda comm, args: comm == "nginx",
    "gunicorn": lambda comm, args: "gunicorn" in args and "celery" not in args,
    "Celery": lambda comm, args: "celery" in args,
}


class Report:
    def __init__(self):
        self.rows = []

    def add(self, what, values, unit, target="", met=None, note=""):
        median = statistics.median(values) if values else float("nan")
        runs = ", ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in values)
        verdict = "" if met is None else ("met" if met(median) else "**missed**")
        shown = f"{median:.1f} {unit}" if isinstance(median, float) else f"{median} {unit}"
        self.rows.append((what, shown, runs, target, verdict, note))
        say(f"{what}: median {shown} (runs: {runs}) {target} {verdict}")
        return median

    def lines(self):
        return [
            f"| {what}{' (' + note + ')' if note else ''} | {median} | {runs} | {target} | {verdict} |"
            for what, median, runs, target, verdict, note in self.rows
        ]


def any_project(report):
    """The any-project fixture: first deploy with uv from an empty cache, then
    deploys whose uv.lock changed, under load."""
    host = "keel-bench-any"
    say(f"provisioning {host} for the any-project fixture")
    address = container(host, fresh=True)
    playbook(host, "provision.yml")
    archive = CACHE / "any-project.tar.gz"
    run(["tar", "-czf", str(archive), "-C", str(ANY_SCENARIO / "project"), "--exclude=__pycache__", "."])
    run(["docker", "cp", str(archive), f"{host}:/root/any-project.tar.gz"])
    on(
        host,
        f"set -e; git config --system safe.directory '*'; rm -rf {WORK} {ANY_BARE}\n"
        f"mkdir -p {WORK} $(dirname {ANY_BARE})\n"
        f"cd {WORK}; tar -xzf /root/any-project.tar.gz; git init -q -b main; git add -A\n"
        "git -c user.name=bench -c user.email=bench@keel commit -qm 'First version'\n"
        f"git clone -q --bare {WORK} {ANY_BARE}; git remote add origin {ANY_BARE}; chmod -R a+rX {ANY_BARE}",
    )
    seconds, _, _ = playbook(host, "deploy.yml")
    report.add("Any project: first deploy, uv from an empty cache (psycopg[c] compiled)", [seconds], "s")
    # The same locked dependencies, built into a throwaway virtualenv by pip and by uv, both from cold caches.
    on(host, f"cd {WORK} && /opt/keel-uv/bin/uv export -q --frozen --no-dev --no-hashes -o /root/locked.txt")
    builds = {
        "pip": "rm -rf /root/v && python3 -m venv /root/v && "
        "/root/v/bin/pip install -q --no-cache-dir -r /root/locked.txt",
        "uv": "rm -rf /root/v /root/uv-cache && UV_CACHE_DIR=/root/uv-cache UV_SYSTEM_CERTS=1 "
        "/opt/keel-uv/bin/uv venv -q /root/v && UV_CACHE_DIR=/root/uv-cache UV_SYSTEM_CERTS=1 "
        "/opt/keel-uv/bin/uv pip install -q --python /root/v/bin/python -r /root/locked.txt",
    }
    for tool, script in builds.items():
        times = []
        for _ in range(RUNS):
            started = time.monotonic()
            on(host, script)
            times.append(time.monotonic() - started)
        report.add(f"Any project: the locked dependencies into a new virtualenv, cold cache, {tool}", times, "s")
    times, failed, sent = [], [], []
    for number in range(RUNS):
        version = ["3.10", "3.9", "3.8", "3.7", "3.6"][number % 5]
        commit(host, f"Dependencies {number}", DEPENDENCY_CHANGE.format(version=version))
        load = LoadGenerator(address, ANY_DOMAIN, ["/"], threads=4, max_requests=20_000, max_seconds=900,
                             rate=LOAD_RATE, https=True)  # fmt: skip
        load.start()
        times.append(playbook(host, "deploy.yml")[0])
        outcome = load.stop(min_requests=MIN_REQUESTS)
        failed.append(outcome.failed)
        sent.append(outcome.sent)
    report.add("Any project: deploy with a changed uv.lock (uv sync), under load", times, "s", "≤ 12 s",
               lambda m: m <= 12)  # fmt: skip
    report.add("Any project: failed requests", failed, "", "0", lambda m: m == 0, f"of {sum(sent)} sent")
    run(["docker", "rm", "-f", host], check=False)


def any_project_section(report):
    lines = [
        ANY_MARKERS[0],
        "## Any project: a cookiecutter-django-shaped project with uv",
        "",
        f"Measured at commit {run(['git', 'rev-parse', '--short', 'HEAD']).stdout.strip()}. "
        "The fixture of molecule/any-project (pyproject.toml + uv.lock, psycopg[c] compiled on the host, Celery, "
        "no health endpoints), deployed from the README's recipe over `docker exec`, load on `/` over HTTPS "
        "(its self-signed certificate; any non-2xx answer is a failure). A deploy's gate includes the Celery "
        "settle time (deploy_celery_settle_seconds, 5 s) and a worker ping.",
        "",
        "| What | Median | Runs | Target | |",
        "|---|---|---|---|---|",
        *report.lines(),
        "",
        "Before uv, with pip (the reference app, commit 4fbe35a): first deploy 20.8 s, deploy with changed "
        "requirements 22.4 s under load. The reference app's rows above are those of the last full `make bench` "
        "(its commit is in the header); since this change its virtualenvs are built by `uv pip install` too.",
        ANY_MARKERS[1],
        "",
    ]
    return "\n".join(lines)


def ssh_admin(host):
    """SSH_USER on the host, with the bench's key and passwordless sudo (common_admin_users)."""
    if not SSH_KEY.exists():
        SSH_KEY.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "keel-bench", "-f", str(SSH_KEY)])
    admins = CACHE / "ssh" / "admins.json"
    key = SSH_KEY.with_suffix(".pub").read_text().strip()
    admins.write_text(json.dumps({"common_admin_users": [{"name": SSH_USER, "ssh_keys": [key]}]}))
    return f"@{admins}"


def over_ssh(host, script):
    """The script as root on the host, over SSH as SSH_USER with sudo, as a user runs a deploy script."""
    command = ["ssh", *SSH_OPTIONS, "-i", str(SSH_KEY), f"{SSH_USER}@{address_of(host)}", "sudo", "bash", "-s"]
    return run(command, input=script)


class Watcher:
    """Polls the site's home page through nginx until it shows (or, for a rollback, stops showing) a
    marker: the moment the new release answers. Only the host under test is asked."""

    def __init__(self, address, marker, present=True, domain=DOMAIN):
        self.client = LoadGenerator(address, domain, [MARKER_PATH], https=True)
        self.marker, self.present = marker.encode(), present
        self.seen_at = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.is_set():
            status, body = self.client.request(MARKER_PATH)
            if status == 200 and (self.marker in body) == self.present:
                self.seen_at = time.monotonic()
                return
            time.sleep(0.02)

    def __enter__(self):
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._thread.join(timeout=30)
        self._stop.set()

    @property
    def seconds(self):
        return (self.seen_at - self.started) if self.seen_at else float("nan")


def measured(address, marker, action, present=True, paths=None):
    """Under load, run action(); (seconds until the site answers with the new release, seconds until action
    returned, the load's result)."""
    load = LoadGenerator(address, DOMAIN, paths or ["/version", "/healthz", "/readyz"], threads=4,
                         max_requests=20_000, max_seconds=900, rate=LOAD_RATE, https=True)  # fmt: skip
    load.start()
    with Watcher(address, marker, present) as watcher:
        action()
        returned = time.monotonic() - watcher.started
    return watcher.seconds, returned, load.stop(min_requests=MIN_REQUESTS)


def marker(name):
    return f"change {name}"


MARKER_PATH = "/bench-marker"
MARKER_FILE = "app/keelapp/urls.py"


def marker_script(name):
    """Shell that makes the app answer MARKER_PATH with this change's marker: Python code, so that a running
    process answers the old one until it loads the new code (a template would be read anew from disk)."""
    line = (f'from django.http import HttpResponse as _R; urlpatterns += [path("{MARKER_PATH[1:]}", '
            f'lambda request: _R("{marker(name)}"))]  # bench-marker')  # fmt: skip
    return f"sed -i '/# bench-marker$/d' {MARKER_FILE}; echo {shlex.quote(line)} >> {MARKER_FILE}"


def controller_repository():
    """For deploy_source controller: a checkout of app/ on this machine, with its own commits."""
    run(["rm", "-rf", str(CONTROLLER_REPO)])
    CONTROLLER_REPO.mkdir(parents=True)
    run(["tar", "-cf", str(CACHE / "controller-app.tar"), "--exclude=__pycache__", "--exclude=staticfiles",
         "--exclude=.coverage", "--exclude=.venv", "app"])  # fmt: skip
    run(["tar", "-xf", str(CACHE / "controller-app.tar"), "-C", str(CONTROLLER_REPO)])
    git = ["git", "-C", str(CONTROLLER_REPO), "-c", "user.name=bench", "-c", "user.email=bench@keel"]
    run([*git, "init", "-q", "-b", "main"])
    run([*git, "add", "-A"])
    run([*git, "commit", "-qm", "First version"])
    return git


def deploy_speed(report):
    """Keel against the naive script, over SSH (docker exec beside it), under the same load."""
    admins = ssh_admin("keel-bench")
    say("provisioning keel-bench and keel-naive, each with an SSH administrator")
    addresses = {}
    for host in ("keel-bench", "keel-naive"):
        addresses[host] = container(host)
        playbook(host, "provision.yml", admins)
        give_repository(host)
        playbook(host, "deploy.yml", *BENCH_VARS, "deploy_force=true", ssh=True)
    breakdown = {}

    def keel(name, *extra, ssh=True, profile=""):
        """A Keel playbook on keel-bench; with profile, its tasks' times are kept under that label."""
        env = {"PROFILE_TASKS_TASK_OUTPUT_LIMIT": "100", "PROFILE_TASKS_SORT_ORDER": "none"} if profile else None
        seconds, _, result = playbook("keel-bench", name, *extra, ssh=ssh, env=env)
        if profile:
            breakdown[f"{profile} (`{name} {' '.join(extra)}`)"] = profile_lines(result.stdout)
        return seconds

    rows = {}

    def phase(label, host, change, action, present=True):
        answers, returns, failed, sent, kinds = [], [], [], [], {}
        for number in range(RUNS):
            name = change(number)
            answer, returned, load = measured(addresses[host], marker(name), lambda n=number: action(n), present)
            answers.append(answer)
            returns.append(returned)
            failed.append(load.failed)
            sent.append(load.sent)
            for kind, count in load.failures.items():
                kinds[kind] = kinds.get(kind, 0) + count
        rows[label] = statistics.median(answers)
        report.add(f"{label}: until the new release answers", answers, "s")
        report.add(f"{label}: until the command returns", returns, "s")
        what = ", ".join(f"{kind}: {count}" for kind, count in kinds.items())
        report.add(f"{label}: failed requests", failed, "", "0", lambda m: m == 0,
                   f"of {sum(sent)} sent" + (f"; {what}" if what else ""))  # fmt: skip

    def code(host):
        def change(number):
            name = f"{host}-{time.time_ns()}"
            commit(host, f"Change {name}", marker_script(name))
            return name

        return change

    last = RUNS - 1
    phase(
        "Keel code-only deploy, git mode, over SSH",
        "keel-bench",
        code("keel-bench"),
        lambda n: keel("deploy.yml", *BENCH_VARS, profile="Code-only deploy, git mode" if n == last else ""),
    )
    phase("Keel code-only deploy, git mode, over docker exec", "keel-bench", code("keel-bench"),
          lambda n: keel("deploy.yml", *BENCH_VARS, ssh=False))  # fmt: skip

    git = controller_repository()
    keel("deploy.yml", "deploy_source=controller", f"app_repo={CONTROLLER_REPO}")

    def controller_change(number):
        name = f"controller-{time.time_ns()}"
        run(["bash", "-c", f"cd {CONTROLLER_REPO} && {marker_script(name)}"])
        run([*git, "commit", "-qam", f"Change {name}"])
        return name

    phase("Keel code-only deploy, controller mode, over SSH", "keel-bench", controller_change,
          lambda n: keel("deploy.yml", "deploy_source=controller", f"app_repo={CONTROLLER_REPO}",
                         profile="Code-only deploy, controller mode" if n == last else ""))  # fmt: skip
    keel("deploy.yml", *BENCH_VARS, "deploy_force=true")

    def requirements(number):
        name = f"requirements-{time.time_ns()}"
        version = ["3.10", "3.9", "3.8", "3.7", "3.6"][number % 5]
        commit("keel-bench", f"Requirements {name}",
               f"sed -i '/^idna==/d' app/requirements.txt; echo 'idna=={version}' >> app/requirements.txt; "
               + marker_script(name))  # fmt: skip
        return name

    phase(
        "Keel deploy with changed requirements (uv), over SSH",
        "keel-bench",
        requirements,
        lambda n: keel("deploy.yml", *BENCH_VARS, profile="Deploy with changed requirements" if n == last else ""),
    )

    def rollback_change(number):
        name = code("keel-bench")(number)
        keel("deploy.yml", *BENCH_VARS)
        return name

    phase("Keel rollback, over SSH", "keel-bench", rollback_change,
          lambda n: keel("rollback.yml", profile="Rollback" if n == last else ""), present=False)  # fmt: skip

    say("setting up keel-naive: the tutorials' layout beside Keel's")
    naive_setup("keel-naive")
    phase("Naive script, over SSH", "keel-naive", code("keel-naive"), lambda n: over_ssh("keel-naive", NAIVE_SCRIPT))
    run(["docker", "rm", "-f", "keel-naive"], check=False)
    return rows, breakdown


def naive_setup(host):
    """The tutorials' layout on a host Keel deployed: a git clone, a virtualenv, and a gunicorn that binds its
    own socket, in place of Keel's."""
    on(
        host,
        f"set -e; cd /srv/{APP}; rm -rf naive; runuser -u {APP} -- git clone -q {BARE} naive\n"
        f"runuser -u {APP} -- python3 -m venv naive/.venv\n"
        f"runuser -u {APP} -- naive/.venv/bin/pip install -q -r naive/app/requirements.txt\n"
        f'echo \'{{"release": "naive", "sha": "naive"}}\' > naive/release.json\n'
        f"set -a; . shared/env; set +a\n"
        f"runuser -u {APP} --preserve-environment -- naive/.venv/bin/python naive/app/manage.py"
        " collectstatic -v0 --noinput\n"
        f"ln -sfn naive current\n"
        f"systemctl disable --now {APP}-gunicorn.socket {APP}-gunicorn.service\n"
        f"cat > /etc/systemd/system/naive-gunicorn.service <<'UNIT'\n{NAIVE_UNIT}UNIT\n"
        f"systemctl daemon-reload; systemctl enable --now naive-gunicorn; sleep 2\n"
        f"systemctl restart {APP}-celery-worker {APP}-celery-beat",
    )


def profile_lines(stdout):
    """profile_tasks' lines: (task, seconds), in the order the tasks ran."""
    recap = stdout.split("TASKS RECAP", 1)[-1]
    lines = []
    for match in re.finditer(r"^(.+?) -{2,} ?(\d+\.\d+)s$", re.sub(r"\n\s+(?=[^\n]*-{2,})", " ", recap), re.M):
        lines.append((match.group(1).strip(), float(match.group(2))))
    return lines


def deploy_speed_section(report, rows, breakdown):
    commit_id = run(["git", "rev-parse", "--short", "HEAD"]).stdout.strip()
    naive = rows["Naive script, over SSH"]
    keel = rows["Keel code-only deploy, git mode, over SSH"]
    goals = [
        ("Code-only deploy, git mode, against the naive script", f"{keel / naive:.2f} times", "≤ 1.0 times",
         keel <= naive),
        ("Controller mode, more than git mode",
         f"{rows['Keel code-only deploy, controller mode, over SSH'] - keel:+.1f} s", "≤ +1 s",
         rows["Keel code-only deploy, controller mode, over SSH"] - keel <= 1),
        ("Rollback", f"{rows['Keel rollback, over SSH']:.1f} s", "≤ 3 s", rows["Keel rollback, over SSH"] <= 3),
        ("Deploy with changed requirements", f"{rows['Keel deploy with changed requirements (uv), over SSH']:.1f} s",
         "≤ 12 s", rows["Keel deploy with changed requirements (uv), over SSH"] <= 12),
    ]  # fmt: skip
    lines = [
        DEPLOY_MARKERS[0],
        "## Deploy speed, over SSH",
        "",
        f"Measured by `scripts/bench.py --only deploy` at commit {commit_id}: keel-bench and keel-naive, two "
        "identical Debian 13 containers provisioned with inventories/local, reached over SSH as an administrator "
        "with sudo (common_admin_users), one connection kept open between commands, as ansible.cfg does; "
        f"docker exec beside it. Load: {LOAD_RATE} requests/s over HTTPS through nginx during each run. "
        "`until the new release answers`: from the command's start until the site through nginx answers with "
        "the change, at a URL whose answer the change's Python code sets (the issue's metric); "
        "`until the command returns`: Keel's gate (the Celery units settle 5 s and the worker answers a ping), "
        "pruning and the lock's release come after that moment. "
        "The naive script is the tutorials' `git pull; pip install; migrate; collectstatic; systemctl restart`, "
        "its gunicorn binding its own socket, run with `ssh host sudo bash -s`.",
        "",
        "| Goal | Measured | Target | |",
        "|---|---|---|---|",
        *(f"| {what} | {value} | {target} | {'met' if met else '**missed**'} |" for what, value, target, met in goals),
        "",
        "| What | Median | Runs | Target | |",
        "|---|---|---|---|---|",
        *report.lines(),
        "",
    ]
    for name, tasks in breakdown.items():
        lines += [f"Where the time goes: {name}, the last run, task by task (profile_tasks; tasks under 0.05 s "
                  "are summed in the last row):", "",
                  "| Task | Seconds |", "|---|---|"]  # fmt: skip
        lines += [f"| {task} | {seconds:.2f} |" for task, seconds in tasks if seconds >= 0.05]
        lines += [f"| every other task (under 0.05 s each) | {sum(s for _, s in tasks if s < 0.05):.2f} |", ""]
    lines += [DEPLOY_MARKERS[1], ""]
    return "\n".join(lines)


def write_section(markers, section):
    """Put a section into docs/benchmarks.md, in place of its old one."""
    text = REPORT.read_text() if REPORT.exists() else "# Benchmarks\n"
    if markers[0] in text:
        before, rest = text.split(markers[0], 1)
        text = before + section + rest.split(markers[1], 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    REPORT.write_text(text)
    say(f"wrote the {markers[0]} section of {REPORT.relative_to(REPO)}")


def write_any_project(report):
    write_section(ANY_MARKERS, any_project_section(report))


def timed(host, script):
    started = time.monotonic()
    output = on(host, script)
    return time.monotonic() - started, output


def backups(report):
    """keel-backup on keel-bench, with BACKUP_ROWS notes and 10 MB of media."""
    host = "keel-bench"
    container(host)
    playbook(host, "provision.yml")
    give_repository(host)
    playbook(host, "deploy.yml", *BENCH_VARS, "deploy_force=true")
    tool = f"/usr/local/sbin/keel-backup --config /etc/keel/backup-{APP}.json --quiet"
    on(
        host,
        f'runuser -u postgres -- psql -XAtq -d {APP} -c "TRUNCATE guestbook_note; INSERT INTO guestbook_note '
        f"(text, created_at) SELECT 'note ' || i || ' ' || md5(i::text), now() - i * interval '1 second' "
        f'FROM generate_series(1, {BACKUP_ROWS}) i"\n'
        f"rm -rf /srv/{APP}/shared/media/bench; runuser -u {APP} -- mkdir -p /srv/{APP}/shared/media/bench\n"
        f"for i in $(seq 50); do head -c 200000 /dev/urandom > /srv/{APP}/shared/media/bench/$i.jpg; done\n"
        f"chown -R {APP} /srv/{APP}/shared/media/bench; rm -rf /var/backups/keel/{APP}/*",
    )
    size = on(
        host, f"runuser -u postgres -- psql -XAtq -d {APP} -c \"SELECT pg_size_pretty(pg_database_size('{APP}'))\""
    )
    version = re.search(r"\) (\d+(?:\.\d+)?)", on(host, "pg_dump --version")).group(1)
    backup_times, restore_times, names = [], [], []
    for _ in range(RUNS):
        seconds, output = timed(host, f"{tool} run --no-offsite")
        backup_times.append(seconds)
        names.append(json.loads(output.splitlines()[-1])["name"])
        time.sleep(1)  # one name per second
    dump = int(on(host, f"stat -c %s /var/backups/keel/{APP}/{names[-1]}/database.dump"))
    for name in names:
        restore_times.append(timed(host, f"{tool} restore {name}")[0])
    playbook_times = [playbook(host, "restore.yml", f"backup={names[-1]}", "confirm=yes")[0] for _ in range(RUNS)]
    backup_median = report.add(f"Backup now (database and media, checked), {BACKUP_ROWS:,} rows", backup_times, "s")
    report.add("Restore of that backup (database and media, beside the live ones, swapped in)", restore_times, "s",
               f"≤ twice the backup ({2 * backup_median:.1f} s)", lambda m: m <= 2 * backup_median)  # fmt: skip
    report.add("restore.yml end to end (check, maintenance, database and media, gate)", playbook_times, "s")
    report.add("Dump size", [round(dump / 2**20, 1)], "MiB", "", None, f"database {size}, PostgreSQL {version}")
    for compression in ("0", "6", "1", "zstd"):
        times = []
        for _ in range(RUNS):
            seconds, _ = timed(
                host, f"runuser -u postgres -- pg_dump -Fc --compress={compression} -f /tmp/d.dump {APP}"
            )
            times.append(seconds)
        dump = int(on(host, "stat -c %s /tmp/d.dump && rm -f /tmp/d.dump"))
        label = {"0": "none", "6": "gzip level 6 (pg_dump's default)", "1": "gzip level 1", "zstd": "zstd"}
        report.add(f"pg_dump --compress={compression}: {label[compression]}", times, "s", "", None,
                   f"{dump / 2**20:.1f} MiB")  # fmt: skip
    # What restoring costs PostgreSQL itself, without Keel's steps: the same dump into an empty database.
    times, dump_path = [], f"/var/backups/keel/{APP}/{names[-1]}/database.dump"
    for _ in range(RUNS):
        on(host, f"runuser -u postgres -- createdb --owner={APP} --template=template0 keel_bench_scratch")
        restore = f"runuser -u postgres -- pg_restore --jobs=2 --dbname=keel_bench_scratch {dump_path}"
        times.append(timed(host, restore)[0])
        on(host, "runuser -u postgres -- dropdb keel_bench_scratch")
    report.add("pg_restore alone, the same dump into an empty database (--jobs=2)", times, "s")
    on(
        host,
        f"runuser -u postgres -- psql -XAtq -d {APP} -c 'TRUNCATE guestbook_note'; rm -rf /var/backups/keel/{APP}/*",
    )


def backups_section(report):
    lines = [
        BACKUP_MARKERS[0],
        "## Backups and restore",
        "",
        f"Measured at commit {run(['git', 'rev-parse', '--short', 'HEAD']).stdout.strip()} on keel-bench (Debian 13, "
        f"over `docker exec`): {BACKUP_ROWS:,} rows in the guestbook's notes and 10 MB of media (50 random files, "
        "which do not compress, like photos). A backup is pg_dump, its check (pg_restore reads every block), the "
        "media archive and the checksums; the restore is pg_restore with parallel jobs into a new database, "
        "ANALYZE, and the swap.",
        "",
        "The goal is a restore in at most twice the backup's time. PostgreSQL sets the floor: loading the rows and "
        "building the indexes takes about twice as long as reading them out (compare `pg_restore alone` with the "
        "zstd `pg_dump` row). On top of that floor Keel's restore creates the new database, runs ANALYZE (so the "
        "first queries after it get good plans), swaps the databases and the media folders, and extracts the "
        "media; a backup's own checks, by contrast, cost little. `restore.yml` adds the playbook's work around "
        "it: the deep check of the backup before anything changes, the maintenance page, stopping Celery, "
        "restarting gunicorn and the gate.",
        "",
        "| What | Median | Runs | Target | |",
        "|---|---|---|---|---|",
        *report.lines(),
        BACKUP_MARKERS[1],
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["any-project", "backups", "deploy"], help="measure only this part")
    only = parser.parse_args().only
    CACHE.mkdir(parents=True, exist_ok=True)
    if only == "deploy":
        deploy_report = Report()
        rows, breakdown = deploy_speed(deploy_report)
        write_section(DEPLOY_MARKERS, deploy_speed_section(deploy_report, rows, breakdown))
        return
    if only == "backups":
        backup_report = Report()
        backups(backup_report)
        write_section(BACKUP_MARKERS, backups_section(backup_report))
        return
    if only == "any-project":
        any_report = Report()
        any_project(any_report)
        write_any_project(any_report)
        return
    report = Report()
    loads = {}

    say(f"provisioning keel-bench from a bare Debian 13 image ({PROVISION_RUNS} run(s))")
    provision_times = []
    for _ in range(PROVISION_RUNS):
        container("keel-bench", fresh=True)
        seconds, _, _ = playbook("keel-bench", "provision.yml")
        provision_times.append(seconds)
    report.add("Provision from a bare image", provision_times, "s")

    noop_times, noop_changed = [], []
    for _ in range(RUNS):
        seconds, changed, _ = playbook("keel-bench", "provision.yml")
        noop_times.append(seconds)
        noop_changed.append(changed)
    report.add("No-op re-provision", noop_times, "s")
    report.add("No-op re-provision: tasks changed", noop_changed, "", "0", lambda m: m == 0)

    address = container("keel-bench")
    give_repository("keel-bench")
    seconds, _, _ = playbook("keel-bench", "deploy.yml", *BENCH_VARS)
    report.add("First deploy (virtualenv built from scratch)", [seconds], "s")
    paths = ["/version", "/healthz", "/readyz", static_path("keel-bench")]

    times = []
    for number in range(RUNS):
        code_change("keel-bench", f"idle-{number}")
        times.append(playbook("keel-bench", "deploy.yml", *BENCH_VARS)[0])
    report.add("Code-only deploy, idle host", times, "s", "≤ 15 s", lambda m: m <= 15)

    for phase, change in (("code-only deploy", code_change), ("deploy with changed requirements", requirements_change)):
        times, failed, sent = [], [], []
        for number in range(RUNS):
            change("keel-bench", f"{phase[:4]}-{number}" if change is code_change else number)
            seconds, load = under_load(address, paths, lambda: playbook("keel-bench", "deploy.yml", *BENCH_VARS)[0])
            times.append(seconds)
            failed.append(load.failed)
            sent.append(load.sent)
        loads[phase] = (times, failed, sent)
        report.add(f"Keel {phase}, under load", times, "s")
        report.add(f"Keel {phase}: failed requests", failed, "", "0", lambda m: m == 0, f"of {sum(sent)} sent")

    times, failed, sent = [], [], []
    for _ in range(RUNS):
        seconds, load = under_load(address, paths, lambda: playbook("keel-bench", "rollback.yml")[0])
        times.append(seconds)
        failed.append(load.failed)
        sent.append(load.sent)
    report.add("Rollback, under load", times, "s", "≤ 5 s", lambda m: m <= 5)
    report.add("Rollback: failed requests", failed, "", "0", lambda m: m == 0, f"of {sum(sent)} sent")

    request_rates(report, address, paths)

    memory_notes = []
    for label, sizing in (("this host's defaults", []), ("a 1 GB, 1-core VPS's defaults", ONE_GB)):
        if sizing:
            playbook("keel-bench", "provision.yml", *sizing)
        memory = idle_memory("keel-bench")
        rss, pss = (sum(values[i] for values in memory.values()) for i in (0, 1))
        report.add(f"Idle stack memory, {label}: summed RSS", [rss], "MB", "≤ 700 MB", lambda m: m <= 700)
        report.add(f"Idle stack memory, {label}: summed PSS", [pss], "MB", "≤ 700 MB", lambda m: m <= 700)
        by_service = ", ".join(f"{name} {values[0]:.0f}/{values[1]:.0f}" for name, values in memory.items())
        memory_notes.append(f"with {label}: {by_service} MB (RSS/PSS)")
    memory_note = "; ".join(memory_notes)

    say("setting up keel-naive: provision, a first Keel deploy, then the tutorials' layout")
    naive_address = container("keel-naive")
    playbook("keel-naive", "provision.yml")
    give_repository("keel-naive")
    playbook("keel-naive", "deploy.yml", *BENCH_VARS)
    naive_setup("keel-naive")
    naive_paths = ["/version", "/healthz", "/readyz", static_path("keel-naive")]
    times, failed, sent, kinds = [], [], [], {}
    for number in range(RUNS):
        code_change("keel-naive", f"naive-{number}")

        def naive_deploy():
            started = time.monotonic()
            on("keel-naive", NAIVE_SCRIPT)
            return time.monotonic() - started

        seconds, load = under_load(naive_address, naive_paths, naive_deploy)
        times.append(seconds)
        failed.append(load.failed)
        sent.append(load.sent)
        for kind, count in load.failures.items():
            kinds[kind] = kinds.get(kind, 0) + count
    report.add("Naive code-only deploy (tutorials' script), under load", times, "s")
    keel_code_median = statistics.median(loads["code-only deploy"][0])
    report.add(
        "Naive deploy: failed requests",
        failed,
        "",
        "",
        None,
        f"of {sum(sent)} sent: " + (", ".join(f"{k}: {v}" for k, v in kinds.items()) or "none"),
    )
    write_report(report, memory_note, keel_code_median, statistics.median(times))
    backup_report = Report()
    backups(backup_report)
    write_section(BACKUP_MARKERS, backups_section(backup_report))
    any_report = Report()
    any_project(any_report)
    write_any_project(any_report)


def write_report(report, memory_note, keel_code, naive_code):
    commit = run(["git", "rev-parse", "--short", "HEAD"]).stdout.strip()
    cores = os.cpu_count()
    memory = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) // 1024
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` (scripts/bench.py) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"commit {commit}, on a {cores}-core, {memory // 1024} GiB {platform.machine()} machine (noisy: medians).",
        f"Hosts: Debian 13 containers with systemd, provisioned with inventories/local (tls_mode selfsigned). Load: "
        f"{LOAD_RATE} requests/s through nginx over HTTPS (/version, /healthz, /readyz and a static file), one "
        "connection (and TLS handshake) per request, during each measured "
        f"deploy or rollback and until at least {MIN_REQUESTS} requests; a failure is any non-2xx answer or "
        f"connection error. {RUNS} runs per row unless the runs column shows fewer.",
        "",
        "| What | Median | Runs | Target | |",
        "|---|---|---|---|---|",
    ]
    lines += report.lines()
    lines += [
        "",
        f"Idle memory by service, {memory_note}. RSS counts a shared page once per process that maps it "
        "(PostgreSQL's shared buffers, the pages gunicorn's workers share with their master), so the summed RSS "
        "overstates what the stack takes; PSS splits each shared page between its sharers and sums to the real "
        "figure.",
        "",
        f"Code-only deploy under the same load: Keel {keel_code:.1f} s, the naive script {naive_code:.1f} s "
        f"(target, no slower than the naive script: {'met' if keel_code <= naive_code else 'missed'}). "
        "The naive script is the common tutorials' deploy, run over `docker exec` on an identical container "
        "whose gunicorn binds its own socket as in those tutorials: `git pull; pip install -r requirements.txt; "
        "migrate; collectstatic; systemctl restart gunicorn celery`. Keel does more (a lock, a new release "
        "beside the live one, check --deploy, an in-process probe, a gate through nginx, pruning) and restarts "
        "gunicorn behind a systemd-held socket, so no connection is refused.",
        "",
    ]
    old = REPORT.read_text() if REPORT.exists() else ""
    if TLS_MARKERS[0] in old:
        kept = old.split(TLS_MARKERS[0], 1)[1].split(TLS_MARKERS[1], 1)[0]
        lines += [TLS_MARKERS[0] + kept + TLS_MARKERS[1], ""]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines))
    say(f"wrote {REPORT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
