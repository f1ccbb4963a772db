"""Probes: liveness, readiness and the running release."""

import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from kombu import Connection

BROKER_TIMEOUT_SECONDS = 2


@never_cache
def healthz(request):
    """Liveness: the process answers. Touches no dependency."""
    return JsonResponse({"status": "ok"})


def check_database() -> None:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")


def check_cache() -> None:
    key, value = f"readyz:{uuid.uuid4().hex}", uuid.uuid4().hex
    cache.set(key, value, timeout=10)
    if cache.get(key) != value:
        raise RuntimeError("the value read back differs from the value written")
    cache.delete(key)


def check_broker() -> None:
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=BROKER_TIMEOUT_SECONDS) as broker:
        broker.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)


def check_migrations() -> None:
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        pending = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _ in plan)
        raise RuntimeError(f"unapplied migrations: {pending}")


CHECKS = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
    "migrations": check_migrations,
}


@never_cache
def readyz(request):
    """Readiness: 200 when every dependency answers, else 503 naming what failed."""
    results, failed = {}, []
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as error:  # any failure makes the instance unready
            results[name] = f"error: {type(error).__name__}: {error}".strip()
            failed.append(name)
        else:
            results[name] = "ok"
    body = {"status": "unready" if failed else "ready", "checks": results, "release": settings.RELEASE["release"]}
    if failed:
        body["failed"] = failed
    return JsonResponse(body, status=503 if failed else 200)


@never_cache
def version(request):
    """The release this process serves, as read from disk when it started."""
    return JsonResponse(settings.RELEASE)
