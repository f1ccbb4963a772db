"""keel_gate's checks through HTTP, against a real HTTP server on loopback,
and its reading of systemd's unit states (the real units are proven on the
full systems in the Molecule scenarios)."""

import json
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from conftest import load_module

keel_gate = load_module("keel_gate")
RELEASE = "20260101000000-abc1234"


class Site(BaseHTTPRequestHandler):
    answers: ClassVar[dict] = {}  # path -> (status, body), set by each test

    def do_GET(self):
        status, body = self.answers.get(self.path, (404, "not found"))
        self.send_response(status)
        if 300 <= status < 400:
            self.send_header("Location", "https://" + self.headers["Host"] + self.path)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Site)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def gate_params(site, **overrides):
    return {
        "url": f"http://127.0.0.1:{site.server_port}",
        "host": "www.mysite.test",
        "release": RELEASE,
        "release_path": "/_keel/release.json",
        "check_path": "/",
        "version_path": "",
        "readyz_path": "",
        **overrides,
    }


def run_web(site, answers, timeout=1.0, **overrides):
    Site.answers = answers
    checked = []
    deadline = keel_gate.time.monotonic() + timeout
    keel_gate.check_web(gate_params(site, **overrides), deadline, checked)
    return checked


LIVE = {"/_keel/release.json": (200, json.dumps({"release": RELEASE}))}


def test_a_redirect_from_the_app_counts_as_an_answer(site):
    checked = run_web(site, {**LIVE, "/": (301, "")})
    assert checked == [f"/_keel/release.json names {RELEASE}", "/ answers 301"]


def test_the_old_release_in_release_json_fails_and_names_both(site):
    old = {"/_keel/release.json": (200, json.dumps({"release": "20250101000000-0000000"})), "/": (200, "")}
    with pytest.raises(keel_gate.GateError, match=f"20250101000000-0000000.*release {RELEASE} was wanted"):
        run_web(site, old, timeout=0.5)


def test_a_server_error_fails_with_its_status(site):
    with pytest.raises(keel_gate.GateError, match="/ through nginx answers 502"):
        run_web(site, {**LIVE, "/": (502, "Bad Gateway")}, timeout=0.5)


def test_the_apps_own_endpoints_are_asked_when_it_has_them(site):
    answers = {**LIVE, "/": (302, ""), "/version": (200, json.dumps({"release": RELEASE})), "/readyz": (503, "db")}
    with pytest.raises(keel_gate.GateError, match="/readyz through nginx answers 503"):
        run_web(site, answers, timeout=0.5, version_path="/version", readyz_path="/readyz")
    answers["/readyz"] = (200, "{}")
    checked = run_web(site, answers, version_path="/version", readyz_path="/readyz")
    assert checked[-2:] == [f"/version names {RELEASE}", "/readyz answers 200"]


def test_nothing_listening_is_named(site):
    params = gate_params(site, url="http://127.0.0.1:9")
    with pytest.raises(keel_gate.GateError, match="answers nothing"):
        keel_gate.check_web(params, keel_gate.time.monotonic() + 0.3, [])


class Clock:
    """systemd's monotonic clock, as the gate sees it: seconds."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        self.now += 0.5
        return self.now


def states(*sequence):
    """A unit whose `systemctl show` answers each state in turn, then the last one."""
    answers = list(sequence)
    return lambda unit: answers.pop(0) if len(answers) > 1 else answers[0]


def unit(active, sub, pid="42", restarts="0", job="", started_at=100.0):
    return {
        "ActiveState": active,
        "SubState": sub,
        "MainPID": pid,
        "NRestarts": restarts,
        "Job": job,
        "ExecMainStartTimestampMonotonic": str(int(started_at * 1_000_000)),
    }


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(keel_gate.time, "sleep", lambda seconds: None)


def test_a_unit_that_runs_past_the_settle_time_passes():
    clock = Clock()
    state_of = states(unit("deactivating", "stop-sigterm", job="7"), unit("active", "running"))
    keel_gate.settle_unit("w.service", clock.now + 60, 5, monotonic=clock, state_of=state_of)
    assert clock.now >= 105


def test_a_crash_loop_is_caught_though_systemd_never_calls_it_failed():
    clock = Clock()
    state_of = states(unit("active", "running"), unit("activating", "auto-restart", pid="0", restarts="1"))
    with pytest.raises(keel_gate.GateError, match=r"does not stay up.*activating/auto-restart, restarted 1 times"):
        keel_gate.settle_unit("w.service", clock.now + 60, 5, monotonic=clock, state_of=state_of)


def test_a_new_main_process_counts_as_a_restart():
    clock = Clock()
    state_of = states(unit("active", "running", pid="42"), unit("active", "running", pid="43", restarts="1"))
    with pytest.raises(keel_gate.GateError, match="does not stay up"):
        keel_gate.settle_unit("w.service", clock.now + 60, 5, monotonic=clock, state_of=state_of)


def test_a_failed_unit_fails_at_once_and_one_that_never_starts_at_the_deadline():
    clock = Clock()
    with pytest.raises(keel_gate.GateError, match="failed"):
        keel_gate.settle_unit(
            "w.service", clock.now + 60, 5, monotonic=clock, state_of=states(unit("failed", "failed"))
        )
    never = states(unit("activating", "start", job="9"))
    with pytest.raises(keel_gate.GateError, match="not running after the restart"):
        keel_gate.settle_unit("w.service", clock.now + 3, 5, monotonic=clock, state_of=never)


def celery_params(ping_script, units=("app-celery-worker.service", "app-celery-beat.service")):
    return {
        "celery_units": list(units),
        "settle_seconds": 0.0,
        "ping_argv": ["sh", "-c", ping_script] if ping_script else [],
        "ping_stdin": "print('the helper')\n",
    }


@pytest.fixture
def running_units(monkeypatch):
    monkeypatch.setattr(keel_gate, "unit_state", lambda name: unit("active", "running"))
    monkeypatch.setattr(keel_gate, "journal", lambda name: f"(last lines of {name})")


def test_the_worker_answers_a_ping_fed_the_helper_on_stdin(running_units):
    checked = []
    params = celery_params('test "$(cat)" = "print(\'the helper\')"')
    keel_gate.check_celery(params, keel_gate.time.monotonic() + 10, checked)
    assert checked == [
        "app-celery-worker.service runs and stays up",
        "the worker answers a ping",
        "app-celery-beat.service runs and stays up",
    ]


def test_a_worker_that_does_not_answer_fails_with_its_words_and_its_journal(running_units):
    params = celery_params("cat > /dev/null; echo 'the worker does not answer a ping' >&2; exit 1")
    with pytest.raises(keel_gate.GateError) as failed:
        keel_gate.check_celery(params, keel_gate.time.monotonic() + 10, [])
    assert "the worker does not answer a ping" in str(failed.value)
    assert "(last lines of app-celery-worker.service)" in str(failed.value)


def test_a_worker_that_crashes_while_settling_fails_at_once_and_its_ping_is_stopped(monkeypatch):
    now = keel_gate.time.monotonic()
    answers = [unit("active", "running", started_at=now), unit("activating", "auto-restart", pid="0", restarts="1")]
    monkeypatch.setattr(keel_gate, "unit_state", lambda name: answers.pop(0) if len(answers) > 1 else answers[0])
    monkeypatch.setattr(keel_gate, "journal", lambda name: "ModuleNotFoundError: No module named 'x'")
    params = {**celery_params("cat > /dev/null; sleep 30", units=["app-celery-worker.service"]), "settle_seconds": 5.0}
    started = keel_gate.time.monotonic()
    with pytest.raises(keel_gate.GateError, match=r"(?s)worker.service does not stay up.*No module named 'x'"):
        keel_gate.check_celery(params, now + 60, [])
    assert keel_gate.time.monotonic() - started < 5, "the gate waited for the ping of a crashed worker"


def test_a_worker_that_dies_after_the_settle_time_but_before_it_answers_is_caught(monkeypatch):
    # A loaded host: the worker loads the project's tasks (and dies of an ImportError) later than
    # settle_seconds after it started. It is watched until its ping answers, so it is still caught.
    now = keel_gate.time.monotonic()
    running = unit("active", "running", started_at=now - 30)
    answers = [running, running, running, unit("activating", "auto-restart", pid="0", restarts="1")]
    monkeypatch.setattr(keel_gate, "unit_state", lambda name: answers.pop(0) if len(answers) > 1 else answers[0])
    monkeypatch.setattr(keel_gate, "journal", lambda name: "ModuleNotFoundError: No module named 'x'")
    params = {**celery_params("cat > /dev/null; sleep 30", units=["app-celery-worker.service"]), "settle_seconds": 5.0}
    with pytest.raises(keel_gate.GateError, match=r"(?s)does not stay up: its process exited 30 s after.*named 'x'"):
        keel_gate.check_celery(params, now + 60, [])


def test_a_ping_that_never_answers_ends_at_the_deadline_with_the_journal(running_units):
    params = celery_params("cat > /dev/null; sleep 30", units=["app-celery-worker.service"])
    started = keel_gate.time.monotonic()
    with pytest.raises(keel_gate.GateError, match=r"(?s)the answer to a ping did not come before the gate's deadline"):
        keel_gate.check_celery(params, started + 1, [])
    assert keel_gate.time.monotonic() - started < 5, "the ping outlived the gate's deadline"


class Recorder(Site):
    seen: ClassVar[list] = []

    def do_GET(self):
        self.seen.append((self.headers["Host"], self.headers["X-Forwarded-Proto"]))
        super().do_GET()


@pytest.fixture
def tls_site(tmp_path):
    """An HTTPS server on loopback with a self-signed certificate, recording the SNI names it is asked for."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
         "-subj", "/CN=www.mysite.test", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names = []
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.names, server.cert = names, cert
    Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_over_https_the_site_name_goes_in_sni_and_host_and_an_untrusted_certificate_passes(tls_site):
    checked = run_web(tls_site, {**LIVE, "/": (200, "")}, url=f"https://127.0.0.1:{tls_site.server_port}")
    assert checked == [f"/_keel/release.json names {RELEASE}", "/ answers 200"]
    assert set(tls_site.names) == {"www.mysite.test"}
    assert set(Recorder.seen) == {("www.mysite.test", "https")}


def test_the_scheme_follows_the_certificate_unless_a_url_is_given(tmp_path):
    params = {"url": "", "tls_certificate": str(tmp_path / "fullchain.pem")}
    assert keel_gate.gate_url(params) == "http://127.0.0.1"
    (tmp_path / "fullchain.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    assert keel_gate.gate_url(params) == "https://127.0.0.1"
    assert keel_gate.gate_url({**params, "url": "http://10.0.0.5:8080"}) == "http://10.0.0.5:8080"
    assert keel_gate.gate_url({"url": "", "tls_certificate": ""}) == "http://127.0.0.1"
