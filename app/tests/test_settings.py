"""Production settings refuse unsafe values at startup, with a message naming the problem."""

import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from keelapp.checks import validate_allowed_hosts, validate_secret_key

from .conftest import APP_DIR

GOOD_KEY = "k3Yq9-xW2p_Lr8Tz5Vb1Nm7Hc4Jd6Fg0Sa2Qe9Ru3Iy8Ot5Pw1Zx7Cv4Bn6Ml0Kj"

BAD_KEYS = [
    pytest.param("", "is not set", id="missing"),
    pytest.param("tooShort-9x2", "too short (12 characters)", id="short"),
    pytest.param("ab" * 30, "fewer than 5 distinct characters", id="low-entropy"),
    pytest.param("django-insecure-" + GOOD_KEY, "contains 'insecure'", id="django-insecure"),
    pytest.param("CHANGE-ME" + GOOD_KEY, "contains 'change-me'", id="placeholder"),
]


@pytest.mark.parametrize(("key", "message"), BAD_KEYS)
def test_bad_secret_key_is_refused(key, message):
    with pytest.raises(ImproperlyConfigured, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_secret_key(key)


def test_random_secret_key_is_accepted():
    validate_secret_key(GOOD_KEY)


def start_django(**env_overrides) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_overrides}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=APP_DIR, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(("key", "message"), BAD_KEYS)
def test_startup_stops_on_a_bad_secret_key(key, message):
    started = start_django(SECRET_KEY=key, DJANGO_DEBUG="false")
    assert started.returncode != 0
    assert "ImproperlyConfigured" in started.stderr and message in started.stderr


def test_startup_refuses_a_wildcard_allowed_hosts():
    started = start_django(SECRET_KEY=GOOD_KEY, ALLOWED_HOSTS="example.com,*")
    assert started.returncode != 0 and "'*' accepts any Host header" in started.stderr


def test_startup_succeeds_with_good_settings():
    started = start_django(SECRET_KEY=GOOD_KEY, ALLOWED_HOSTS="example.com")
    assert started.returncode == 0, started.stderr


def test_debug_mode_runs_without_a_secret_key():
    started = start_django(SECRET_KEY="", DJANGO_DEBUG="true", ALLOWED_HOSTS="")
    assert started.returncode == 0, started.stderr


def test_allowed_hosts_must_not_be_empty_in_production():
    with pytest.raises(ImproperlyConfigured, match="ALLOWED_HOSTS is empty"):
        validate_allowed_hosts([], debug=False)
    validate_allowed_hosts([], debug=True)


def test_production_hardening_is_on(settings):
    assert not settings.DEBUG
    assert settings.SECURE_PROXY_SSL_HEADER == ("HTTP_X_FORWARDED_PROTO", "https")
    assert settings.SECURE_HSTS_SECONDS >= 31_536_000
    assert settings.SESSION_COOKIE_SECURE and settings.CSRF_COOKIE_SECURE
    assert settings.X_FRAME_OPTIONS == "DENY"
    assert settings.STORAGES["staticfiles"]["BACKEND"].endswith("ManifestStaticFilesStorage")
    assert settings.CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert settings.SESSION_ENGINE == "django.contrib.sessions.backends.cached_db"
    assert settings.CSRF_TRUSTED_ORIGINS == ["https://testserver", "https://localhost"]


def test_celery_is_set_for_graceful_deploys(settings):
    assert settings.CELERY_TASK_ACKS_LATE
    assert settings.CELERY_WORKER_PREFETCH_MULTIPLIER == 1
    assert settings.CELERY_TASK_SOFT_TIME_LIMIT < settings.CELERY_TASK_TIME_LIMIT
    assert settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] > settings.CELERY_TASK_TIME_LIMIT


def test_check_deploy_reports_nothing():
    check = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=APP_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert "System check identified no issues (0 silenced)." in check.stdout
