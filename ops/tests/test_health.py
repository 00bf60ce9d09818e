"""/healthz and /readyz: each readiness check failing and recovering, and nothing an outsider can use."""

from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone
from django_q.signals import post_spawn

from ops.heartbeat import worker_seen_record
from ops.models import WorkerHeartbeat
from ops.tick import ops_tick

pytestmark = pytest.mark.django_db

REDIS_URL = "redis://127.0.0.1:6379/13"
# Nothing listens there: connecting is refused at once.
NO_REDIS_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def no_broker_no_worker(settings):
    settings.REDIS_URL = ""
    settings.ENABLE_SYNC_WORKER = False


def ready(client) -> tuple[int, dict]:
    response = client.get("/readyz")
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    return response.status_code, response.json()


def test_healthz_answers_without_looking_at_anything(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_names_each_check_that_applies(client, no_broker_no_worker):
    assert ready(client) == (200, {"status": "ok", "checks": {"database": "ok", "migrations": "ok"}})


def test_readyz_fails_while_a_migration_is_not_applied_and_recovers(client, no_broker_no_worker):
    applied = MigrationRecorder.Migration.objects.get(app="ops", name="0001_initial")
    applied.delete()
    assert ready(client) == (503, {"status": "unavailable", "checks": {"database": "ok", "migrations": "pending"}})
    MigrationRecorder.Migration.objects.create(app="ops", name="0001_initial")
    assert ready(client)[0] == 200


def test_readyz_fails_while_the_broker_does_not_answer_and_recovers(client, settings, no_broker_no_worker):
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.REDIS_URL = NO_REDIS_URL
    status, body = ready(client)
    assert (status, body["checks"]["broker"]) == (503, "unavailable")
    settings.REDIS_URL = REDIS_URL
    status, body = ready(client)
    assert (status, body["checks"]["broker"]) == (200, "ok")


def test_readyz_fails_while_no_worker_was_seen_within_two_intervals_and_recovers(client, settings, no_broker_no_worker):
    settings.ENABLE_SYNC_WORKER = True
    settings.SYNC_INTERVAL = "*/15 * * * *"
    status, body = ready(client)
    assert (status, body["checks"]["worker"]) == (503, "stale")  # never seen

    post_spawn.send(sender="django_q", proc_name="Process-1:1")  # a worker process of a cluster started
    assert ready(client) == (
        200,
        {"status": "ok", "checks": {"database": "ok", "migrations": "ok", "worker": "ok"}},
    )

    WorkerHeartbeat.objects.update(seen_at=timezone.now() - timedelta(minutes=31))
    assert ready(client)[1]["checks"]["worker"] == "stale"
    WorkerHeartbeat.objects.update(seen_at=timezone.now() - timedelta(minutes=29))
    assert ready(client)[1]["checks"]["worker"] == "ok"

    WorkerHeartbeat.objects.update(seen_at=timezone.now() - timedelta(hours=1))
    ops_tick()  # the tick ran: the cluster is alive
    assert ready(client)[0] == 200
    assert WorkerHeartbeat.objects.get().last_tick_at is not None


@pytest.mark.django_db(transaction=True)
def test_readyz_fails_while_the_database_does_not_answer_and_recovers(client, no_broker_no_worker):
    assert ready(client)[0] == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    settings_dict = connection.settings_dict
    with psycopg.connect(
        host=settings_dict["HOST"] or None,
        port=settings_dict["PORT"] or None,
        user=settings_dict["USER"] or None,
        dbname=settings_dict["NAME"],
        autocommit=True,
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    status, body = ready(client)
    assert (status, body) == (
        503,
        {"status": "unavailable", "checks": {"database": "unavailable", "migrations": "unknown"}},
    )
    assert ready(client)[0] == 200  # the next probe connects again


def test_readyz_says_nothing_an_outsider_can_use(client, settings):
    settings.REDIS_URL = NO_REDIS_URL
    settings.ENABLE_SYNC_WORKER = True
    worker_seen_record()
    response = client.get("/readyz")
    text = response.content.decode()
    for secret_or_detail in ("127.0.0.1", "redis", "Error", "refused", "postgres", "django", "python", "version"):
        assert secret_or_detail.lower() not in text.lower()
    assert set(response.json()["checks"].values()) <= {"ok", "unavailable", "pending", "stale", "unknown"}
