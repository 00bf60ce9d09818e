"""Readiness: may this process take traffic? The database answers, its migrations are applied, the
task broker answers (with REDIS_URL) and, with the schedule on, a worker cluster was seen lately.

Each probe returns one word, never an error's text, a host or a version: `/readyz` answers anyone.

Why not django-health-check: its view answers 500, not 503; it names each check by its Python repr
and puts the exception's text (the database driver's message, a host name) in the body; and of our
four probes it has one (the database). The broker and worker probes are django-q2 and pfasync
specific, so the library would bring its plugin machinery (and its psutil and DNS dependencies) for
a `SELECT 1`.
"""

import logging
from datetime import datetime, timedelta
from functools import cache

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from ops.heartbeat import worker_heartbeat
from synclog.selectors import interval_length

logger = logging.getLogger(__name__)

OK = "ok"
UNAVAILABLE = "unavailable"  # the database or the broker does not answer
PENDING = "pending"  # migrations are not all applied
STALE = "stale"  # no worker seen within two sync intervals
UNKNOWN = "unknown"  # cannot tell: the database does not answer
# How long the broker may take to answer a PING.
BROKER_TIMEOUT_SECONDS = 2.0


def readiness(*, now: datetime | None = None) -> dict[str, str]:
    """Each check that applies here, by name, with its state (`ok` or one word for what is wrong)."""
    checks = {"database": database_state()}
    database_up = checks["database"] == OK
    checks["migrations"] = migrations_state() if database_up else UNKNOWN
    if settings.REDIS_URL:
        checks["broker"] = broker_state()
    if settings.ENABLE_SYNC_WORKER:
        checks["worker"] = worker_state(now=now) if database_up else UNKNOWN
    return checks


def database_state() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as error:
        logger.warning("Readiness: the database does not answer (%s)", type(error).__name__)
        if not connection.in_atomic_block:
            connection.close()  # the next probe connects afresh
        return UNAVAILABLE
    return OK


@cache
def _migrations_on_disk() -> frozenset[tuple[str, str]]:
    """Every migration of the installed apps (read once per process: the code does not change under it)."""
    return frozenset(MigrationLoader(None, ignore_no_migrations=True).graph.nodes)


def migrations_state() -> str:
    try:
        applied = MigrationRecorder(connection).applied_migrations()
    except DatabaseError as error:
        logger.warning("Readiness: cannot read the applied migrations (%s)", type(error).__name__)
        return UNKNOWN
    missing = _migrations_on_disk() - applied.keys()
    if missing:
        logger.warning("Readiness: %d migration(s) not applied, e.g. %s", len(missing), ".".join(min(missing)))
        return PENDING
    return OK


def broker_state() -> str:
    """The Redis broker answers a PING (its own short timeouts, not django-q2's connection)."""
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=BROKER_TIMEOUT_SECONDS, socket_timeout=BROKER_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        logger.warning("Readiness: the task broker does not answer (%s)", type(error).__name__)
        return UNAVAILABLE
    finally:
        client.close()
    return OK


def worker_state(*, now: datetime | None = None) -> str:
    """A worker cluster was seen (a worker process started, or the tick ran) within two SYNC_INTERVALs."""
    now = now or timezone.now()
    heartbeat = worker_heartbeat()
    if heartbeat is None or heartbeat.seen_at < now - worker_grace(now=now):
        return STALE
    return OK


def worker_grace(*, now: datetime) -> timedelta:
    """How long the worker may go unseen: two sync intervals."""
    return 2 * interval_length(settings.SYNC_INTERVAL, now=now)
