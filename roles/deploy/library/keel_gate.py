#!/usr/bin/python3
"""The deploy's gate on one host: the release serves through nginx, Celery runs and stays up."""

DOCUMENTATION = r"""
module: keel_gate
short_description: Check that a release serves through nginx and that its Celery units run and stay up
description:
  - Web, through nginx with the site's Host header; each check polls until it passes or the timeout ends.
    Keel's own proof first, which needs nothing from the app; nginx serves the live release's release.json
    at release_path, and it must name the release. Then check_path must answer 2xx or 3xx (Django's own
    answer: gunicorn runs the new code, since its restart returned). Then, where the app has them,
    version_path must report the release and readyz_path must answer 200.
  - Celery, in systemd. A unit with Restart=on-failure that crash-loops is never "failed", so each unit must
    reach SubState=running with no job pending, and then keep the same main process and restart count
    until that process has run settle_seconds, and, for the worker, until it has answered ping_argv
    (started as soon as the new process runs). A worker that dies while loading the project's tasks
    therefore fails as a unit that does not stay up, however slowly it loads.
  - A failure names the check, the answer or the unit, with the unit's last journal lines.
options:
  url:
    description:
      - Where nginx listens on this host, e.g. http://127.0.0.1. Empty, https://127.0.0.1 if tls_certificate
        exists (nginx then serves the site over HTTPS only), else http://127.0.0.1.
      - Over HTTPS the gate sends host as the SNI name and does not verify the certificate (it speaks to the
        host itself, and a self-signed or test CA's certificate must pass).
    type: str
    default: ""
  tls_certificate: {description: "The site's certificate; empty when nginx serves no TLS.", type: str, default: ""}
  host: {description: "The Host header and SNI name (the site's first domain).", type: str, required: true}
  release: {description: The release id that must be live., type: str, required: true}
  release_path: {description: "nginx's path of release.json; empty: no web checks.", type: str, default: ""}
  check_path: {description: A path of the app that must answer 2xx or 3xx., type: str, default: "/"}
  version_path: {description: "The app's version endpoint, or empty.", type: str, default: ""}
  readyz_path: {description: "The app's readiness endpoint, or empty.", type: str, default: ""}
  celery_units: {description: The Celery units to watch., type: list, elements: str, default: []}
  settle_seconds: {description: How long each Celery main process must run without a restart., type: float, default: 5}
  ping_argv:
    description: A command that exits 0 once the worker answers a ping; empty for none.
    type: list
    elements: str
    default: []
  ping_stdin: {description: Its standard input., type: str, default: ""}
  timeout: {description: Seconds for the whole gate., type: float, default: 60}
"""

RETURN = r"""
seconds: {description: How long the gate took., type: float, returned: always}
checked: {description: What was checked., type: list, returned: always}
"""

import http.client
import json
import os
import socket
import ssl
import subprocess
import time
import urllib.parse

from ansible.module_utils.basic import AnsibleModule

POLL_SECONDS = 0.25
JOURNAL_LINES = 15
UNIT_PROPERTIES = ("ActiveState", "SubState", "MainPID", "NRestarts", "Job", "ExecMainStartTimestampMonotonic")


class GateError(Exception):
    """The release did not pass; the message says what failed."""


class _LoopbackHTTPS(http.client.HTTPSConnection):
    """HTTPS to an address, with another name in SNI and Host: nginx on this host, as the site's clients see it."""

    def __init__(self, address, port, name):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        super().__init__(name, port, timeout=5, context=context)
        self.address = address

    def connect(self):
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def ask(url, host):
    """(status, body) of a GET, without following redirects; status 0 if no answer. The request
    says it came over HTTPS (X-Forwarded-Proto), which nginx believes from this host only."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        connection = _LoopbackHTTPS(parts.hostname, parts.port or 443, host)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=5)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    headers = {"Host": host, "User-Agent": "keel-gate", "X-Forwarded-Proto": "https"}
    try:
        connection.request("GET", target or "/", headers=headers)
        response = connection.getresponse()
        return response.status, response.read(2000).decode(errors="replace")
    except (OSError, http.client.HTTPException) as error:
        return 0, str(error) or type(error).__name__
    finally:
        connection.close()


def gate_url(params):
    if params["url"]:
        return params["url"]
    tls = params["tls_certificate"] and os.path.exists(params["tls_certificate"])
    return "https://127.0.0.1" if tls else "http://127.0.0.1"


def served_release(body):
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    return answer.get("release") if isinstance(answer, dict) else None


def poll(deadline, attempt, describe):
    """Call attempt() until it returns True; at the deadline, fail with describe()."""
    while not attempt():
        if time.monotonic() >= deadline:
            raise GateError(describe())
        time.sleep(POLL_SECONDS)


def check_web(params, deadline, checked):
    url, host, release = gate_url(params).rstrip("/"), params["host"], params["release"]
    last = {}

    def answers(path, fits):
        def attempt():
            last["status"], last["body"] = ask(url + path, host)
            return fits(last["status"], last["body"])

        return attempt

    def said(path, wanted):
        return lambda: (
            f"{path} through nginx answers {last['status'] or 'nothing'} ({last['body'][:300].strip()}), "
            f"where {wanted} was wanted"
        )

    def names_release(status, body):
        return status == 200 and served_release(body) == release

    path = params["release_path"]
    poll(deadline, answers(path, names_release), said(path, f"release {release}"))
    checked.append(f"{path} names {release}")
    path = params["check_path"]
    poll(deadline, answers(path, lambda status, body: 200 <= status < 400), said(path, "2xx or 3xx"))
    checked.append(f"{path} answers {last['status']}")
    if params["version_path"]:
        path = params["version_path"]
        poll(deadline, answers(path, names_release), said(path, f"200 naming release {release}"))
        checked.append(f"{path} names {release}")
    if params["readyz_path"]:
        path = params["readyz_path"]
        poll(deadline, answers(path, lambda status, body: status == 200), said(path, "200"))
        checked.append(f"{path} answers 200")


def unit_state(unit):
    output = subprocess.run(
        ["systemctl", "show", unit, *(f"--property={name}" for name in UNIT_PROPERTIES)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def journal(unit):
    output = subprocess.run(
        ["journalctl", "--unit", unit, "--lines", str(JOURNAL_LINES), "--no-pager", "--output", "cat"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    return "\n".join(line for line in output.splitlines() if line.strip()) or "(the journal has nothing)"


def is_running(state):
    return (
        state.get("ActiveState") == "active"
        and state.get("SubState") == "running"
        and state.get("Job", "") in ("", "0")
    )


def settle_unit(unit, deadline, settle_seconds, monotonic=time.monotonic, state_of=None, on_running=None, until=None):
    """Wait for the unit to run, then watch it: its main process must run settle_seconds with no
    restart, and on until (what, done) as long as done() is False. on_running() is called once the
    new process runs. state_of(unit): its systemd properties."""
    state_of = state_of or unit_state
    state = state_of(unit)
    while not is_running(state):
        if state.get("ActiveState") == "failed":
            raise GateError(f"{unit} failed ({state.get('SubState')})")
        if monotonic() >= deadline:
            raise GateError(
                f"{unit} is not running after the restart ({state.get('ActiveState')}/{state.get('SubState')})"
            )
        time.sleep(POLL_SECONDS)
        state = state_of(unit)
    if on_running is not None:
        on_running()
    what, done = until or ("", lambda: True)
    first = state
    started = int(first.get("ExecMainStartTimestampMonotonic") or 0) / 1_000_000
    while monotonic() - started < settle_seconds or not done():
        if monotonic() >= deadline:
            raise GateError(f"{unit} runs, but {what} did not come before the gate's deadline")
        time.sleep(POLL_SECONDS)
        state = state_of(unit)
        restarts = int(state.get("NRestarts") or 0) - int(first.get("NRestarts") or 0)
        if not is_running(state) or state.get("MainPID") != first.get("MainPID") or restarts:
            raise GateError(
                f"{unit} does not stay up: its process exited {monotonic() - started:.0f} s after it started "
                f"(now {state.get('ActiveState')}/{state.get('SubState')}, restarted {max(restarts, 0)} times so far)"
            )


def check_celery(params, deadline, checked):
    """Each unit must settle. The worker is asked for a ping as soon as its new process runs
    (never the old one's answer), and is watched until the answer comes: a worker that dies
    while it loads the project's tasks fails as a unit that does not stay up."""
    pinging = []

    def start_ping():
        process = subprocess.Popen(
            params["ping_argv"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        process.stdin.write(params["ping_stdin"])  # the helper's source: small, it fits the pipe
        process.stdin.close()
        pinging.append(process)

    def ping_over():
        return pinging[0].poll() is not None

    worker = next((unit for unit in params["celery_units"] if "worker" in unit), None)
    try:
        for unit in params["celery_units"]:
            waits_for_ping = unit == worker and params["ping_argv"]
            try:
                settle_unit(
                    unit, deadline, params["settle_seconds"],
                    on_running=start_ping if waits_for_ping else None,
                    until=("the answer to a ping", ping_over) if waits_for_ping else None,
                )  # fmt: skip
            except GateError as error:
                raise GateError(f"{error}. Its last lines:\n{journal(unit)}") from error
            checked.append(f"{unit} runs and stays up")
            if waits_for_ping and pinging[0].returncode != 0:
                stderr = pinging[0].stderr.read().strip()[-500:]
                raise GateError(f"{stderr}. The last lines of {worker}:\n{journal(worker)}")
            if waits_for_ping:
                checked.append("the worker answers a ping")
    finally:
        for process in pinging:
            if process.poll() is None:
                process.kill()
                process.wait()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", default=""),
            tls_certificate=dict(type="str", default=""),
            host=dict(type="str", required=True),
            release=dict(type="str", required=True),
            release_path=dict(type="str", default=""),
            check_path=dict(type="str", default="/"),
            version_path=dict(type="str", default=""),
            readyz_path=dict(type="str", default=""),
            celery_units=dict(type="list", elements="str", default=[]),
            settle_seconds=dict(type="float", default=5),
            ping_argv=dict(type="list", elements="str", default=[]),
            # The helper's source (about 10 KB): kept out of the host's journal, where Ansible logs arguments.
            ping_stdin=dict(type="str", default="", no_log=True),
            timeout=dict(type="float", default=60),
        ),
        supports_check_mode=True,
    )
    params = module.params
    started = time.monotonic()
    deadline = started + params["timeout"]
    checked = []
    try:
        if params["release_path"]:
            check_web(params, deadline, checked)
        check_celery(params, deadline, checked)
    except GateError as error:
        module.fail_json(msg=f"release {params['release']}: {error}", checked=checked)
    module.exit_json(changed=False, checked=checked, seconds=round(time.monotonic() - started, 2))


if __name__ == "__main__":
    main()
