#!/usr/bin/env python3
"""A bounded HTTP load generator for Keel's test hosts.

It sends GET requests through nginx to one address (a test container on this
machine's Docker network), from a few threads, one connection per request,
until it is stopped, and counts every answer that is not 2xx and every
connection error. It is bounded: it never sends more than --max-requests nor
runs longer than --max-seconds, whatever happens.

    python3 scripts/loadgen.py 172.17.0.2 --host keelapp.test --seconds 10 [--https]

Over HTTPS each connection does a full TLS handshake with the Host name as
SNI; the certificate is not verified (test hosts have test certificates).

Used by the deploy proof (molecule/full-stack/tests) and by `make bench`.
"""

import argparse
import http.client
import itertools
import json
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

# The reference app's probes (over plain HTTP, they answer without a redirect):
# /readyz touches PostgreSQL, Redis and the broker, /version tells which
# release answered. Add a static file's path to exercise nginx alone.
DEFAULT_PATHS = ("/version", "/healthz", "/readyz")


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failures: Counter = field(default_factory=Counter)
    releases: list = field(default_factory=list)
    seconds: float = 0.0
    bounded: bool = False

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    def summary(self) -> str:
        failures = ", ".join(f"{what}: {count}" for what, count in self.failures.most_common()) or "none"
        return (
            f"{self.sent} requests in {self.seconds:.1f} s ({self.sent / max(self.seconds, 0.001):.0f}/s), "
            f"{self.failed} failed ({failures}); releases seen in order: {' -> '.join(self.releases) or 'none'}"
        )


class _SNIConnection(http.client.HTTPSConnection):
    """HTTPS to an address, with the site's name as SNI."""

    def __init__(self, address, name, context):
        super().__init__(name, 443, timeout=30, context=context)
        self.address = address

    def connect(self):
        raw = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


class LoadGenerator:
    """Threads that request paths round-robin until stopped, within bounds."""

    def __init__(
        self,
        address,
        host_header,
        paths=DEFAULT_PATHS,
        threads=4,
        max_requests=50_000,
        max_seconds=600,
        rate=None,
        redirects_ok=False,
        https=False,
    ):
        """rate: requests per second in all, or None for as fast as the threads go.
        redirects_ok: a 3xx answer counts as served (an app that redirects plain
        HTTP to HTTPS answers every page so). https: over TLS to port 443."""
        self.address, self.host_header = address, host_header
        self.highest_ok = 400 if redirects_ok else 300
        self.interval = threads / rate if rate else 0.0
        self.paths = list(paths)
        self.threads, self.max_requests, self.max_seconds = threads, max_requests, max_seconds
        self.https = https
        self._context = ssl.create_default_context()
        self._context.check_hostname = False
        self._context.verify_mode = ssl.CERT_NONE
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._min_requests = 0
        self._workers = []
        self._started = 0.0

    def request(self, path):
        """One request on a new connection: (status or None, body or error name)."""
        if self.https:
            connection = _SNIConnection(self.address, self.host_header, self._context)
        else:
            connection = http.client.HTTPConnection(self.address, 80, timeout=30)
        try:
            connection.request("GET", path, headers={"Host": self.host_header})
            response = connection.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException) as error:
            return None, type(error).__name__
        finally:
            connection.close()

    def _record(self, path, status, body):
        with self._lock:
            self.result.sent += 1
            if status is None:
                self.result.failures[f"error {body}"] += 1
            elif 200 <= status < self.highest_ok:
                self.result.ok += 1
                if path == "/version" and status == 200:
                    release = json.loads(body).get("release", "?")
                    if not self.result.releases or self.result.releases[-1] != release:
                        self.result.releases.append(release)
            else:
                self.result.failures[f"HTTP {status} on {path}"] += 1

    def _done(self):
        if self.result.sent >= self.max_requests or time.monotonic() - self._started >= self.max_seconds:
            self.result.bounded = True
            return True
        return self._stop.is_set() and self.result.sent >= self._min_requests

    def _run(self, offset):
        next_at = time.monotonic() + offset * self.interval / self.threads
        for path in itertools.islice(itertools.cycle(self.paths), offset, None):
            if self.interval:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += self.interval
            if self._done():
                return
            self._record(path, *self.request(path))

    def start(self):
        self._started = time.monotonic()
        for offset in range(self.threads):
            worker = threading.Thread(target=self._run, args=(offset,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self, min_requests=0):
        """Stop once at least min_requests were sent in all; the result."""
        self._min_requests = min_requests
        self._stop.set()
        for worker in self._workers:
            worker.join()
        self.result.seconds = time.monotonic() - self._started
        return self.result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="the test host's address on this machine's Docker network")
    parser.add_argument("--host", required=True, help="the Host header: one of the site's domains")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--rate", type=float, help="requests per second in all (default: as fast as possible)")
    parser.add_argument("--path", action="append", help="a path to request (repeat); default: the probes")
    parser.add_argument("--https", action="store_true", help="over TLS to port 443, the host as SNI")
    args = parser.parse_args()
    paths = args.path or DEFAULT_PATHS
    load = LoadGenerator(
        args.address, args.host, paths, threads=args.threads, max_requests=args.max_requests, rate=args.rate,
        https=args.https,
    )  # fmt: skip
    load.start()
    time.sleep(args.seconds)
    result = load.stop()
    print(result.summary())
    return 1 if result.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
