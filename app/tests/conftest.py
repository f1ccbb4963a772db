import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.db import connection

APP_DIR = Path(__file__).resolve().parent.parent
# Nothing listens on port 1: connecting there fails at once, like a dead server.
CLOSED_PORT = 1


@pytest.fixture(scope="session", autouse=True)
def collected_static(tmp_path_factory):
    """Run collectstatic into a scratch STATIC_ROOT, as a deploy does, so hashed names resolve."""
    settings.STATIC_ROOT = str(tmp_path_factory.mktemp("static"))
    call_command("collectstatic", interactive=False, verbosity=0)
    return Path(settings.STATIC_ROOT)


@pytest.fixture(scope="session", autouse=True)
def empty_broker():
    """Start from an empty Redis: no cache keys or queued tasks from an earlier run."""
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


def wait_for(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(interval)
    return predicate()


@pytest.fixture
def celery_worker_and_beat(transactional_db):
    """A real `celery worker --beat` process on the real broker, writing to the test database."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "HEARTBEAT_SECONDS": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "keelapp", "worker", "--beat", "--pool=solo",
         "--loglevel=INFO", "--schedule", "/tmp/keelapp-test-celerybeat-schedule"],
        cwd=APP_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    yield process
    process.send_signal(signal.SIGTERM)  # warm shutdown, as systemd stops it
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    connection.close()
