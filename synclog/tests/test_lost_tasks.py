"""Lost broker tasks: a queued run whose task vanished (Redis restarted, a worker killed after
popping it) is failed after SYNC_QUEUE_LEASE_SECONDS by the next claim or tick, and frees its
organization; one still waiting in the broker, or behind busy workers, is left alone."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ
from rest_framework.test import APIClient

from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory, user_with
from synclog.models import PfaSyncLog, SyncStatus, SyncWorker
from synclog.tests.factories import PfaSyncLogFactory
from synclog.worker import sync_tick

pytestmark = pytest.mark.django_db(transaction=True)

LOST = "the task was lost before a worker took it"


@pytest.fixture
def rio():
    return ApiConfigurationFactory(organization=OrganizationFactory(code="RIO")).organization


@pytest.fixture
def api(rio) -> APIClient:
    client = APIClient()
    client.force_authenticate(user_with("ana", "synclog.trigger_sync", organizations=[rio]))
    return client


def trigger(api: APIClient):
    return api.post("/api/sync/trigger", {"organizationId": "RIO"}, format="json")


def queued_for(run_id: str, seconds: float) -> PfaSyncLog:
    """The run, as if queued `seconds` ago."""
    PfaSyncLog.objects.filter(pk=run_id).update(created_at=timezone.now() - timedelta(seconds=seconds))
    return PfaSyncLog.objects.get(pk=run_id)


def cluster_alive(workers: int) -> SyncWorker:
    return SyncWorker.objects.create(id=uuid.uuid4(), host="worker-1", pid=4242, workers=workers)


def test_a_run_whose_task_vanished_from_the_broker_is_failed_and_the_organization_freed(api, settings):
    settings.SYNC_QUEUE_LEASE_SECONDS = 300
    first = trigger(api)
    assert first.status_code == 202
    run_id = first.json()["logId"]
    # Past the lease, but its task still waits in the broker (no worker took it yet): not lost.
    queued_for(run_id, 301)
    assert trigger(api).status_code == 409
    OrmQ.objects.all().delete()  # the broker loses it
    again = trigger(api)
    assert again.status_code == 202, again.json()
    lost = PfaSyncLog.objects.get(pk=run_id)
    assert lost.status == SyncStatus.FAILED and LOST in lost.error_message
    assert lost.error_details["error_type"] == "TaskLost"
    assert PfaSyncLog.objects.get(pk=again.json()["logId"]).status == SyncStatus.QUEUED


def test_a_vanished_task_within_the_lease_is_still_waited_for(api, settings):
    settings.SYNC_QUEUE_LEASE_SECONDS = 300
    run_id = trigger(api).json()["logId"]
    OrmQ.objects.all().delete()
    queued_for(run_id, 200)
    assert trigger(api).status_code == 409
    assert PfaSyncLog.objects.get(pk=run_id).status == SyncStatus.QUEUED


def test_the_tick_finds_a_lost_task_too(api, settings):
    settings.SYNC_QUEUE_LEASE_SECONDS = 300
    run_id = trigger(api).json()["logId"]
    OrmQ.objects.all().delete()
    queued_for(run_id, 301)
    assert "expired 1 lost run(s)" in sync_tick()
    assert LOST in PfaSyncLog.objects.get(pk=run_id).error_message


def test_a_run_waiting_behind_busy_workers_is_not_failed(api, rio, settings):
    """Behind busy workers a task waits in the cluster's memory, out of the broker."""
    settings.SYNC_QUEUE_LEASE_SECONDS = 300
    cluster_alive(workers=1)
    busy = PfaSyncLogFactory(
        organization=OrganizationFactory(code="HOU"), status=SyncStatus.RUNNING, ago=timedelta(hours=2)
    )
    run_id = trigger(api).json()["logId"]
    OrmQ.objects.all().delete()  # the cluster's pusher holds it
    queued_for(run_id, 3600)
    assert trigger(api).status_code == 409
    assert PfaSyncLog.objects.get(pk=run_id).status == SyncStatus.QUEUED
    # The worker became free a moment ago: the run may be the next it takes.
    PfaSyncLog.objects.filter(pk=busy.pk).update(status=SyncStatus.COMPLETED, completed_at=timezone.now())
    assert trigger(api).status_code == 409
    # A worker free for a whole lease and the run still not taken: its task is lost.
    PfaSyncLog.objects.filter(pk=busy.pk).update(completed_at=timezone.now() - timedelta(seconds=301))
    assert trigger(api).status_code == 202
    assert LOST in PfaSyncLog.objects.get(pk=run_id).error_message


@pytest.mark.faults
def test_redis_flushed_after_the_202_loses_the_task_and_a_retrigger_works(api, settings, monkeypatch):
    redis = pytest.importorskip("redis")
    redis_url = "redis://127.0.0.1:6379/12"
    connection = redis.Redis.from_url(redis_url)
    try:
        connection.flushdb()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", redis_url)
    settings.SYNC_QUEUE_LEASE_SECONDS = 300
    first = trigger(api)
    assert first.status_code == 202
    run_id = first.json()["logId"]
    assert connection.llen(f"django_q:{Conf.CLUSTER_NAME}:q") == 1
    queued_for(run_id, 301)
    assert trigger(api).status_code == 409  # its task is in Redis: it waits
    connection.flushdb()  # Redis restarted without its data
    again = trigger(api)
    assert again.status_code == 202, again.json()
    lost = PfaSyncLog.objects.get(pk=run_id)
    assert lost.status == SyncStatus.FAILED and LOST in lost.error_message
    connection.flushdb()


def test_a_broker_that_cannot_be_asked_loses_no_run(api, settings, monkeypatch):
    settings.SYNC_QUEUE_LEASE_SECONDS = 300
    run_id = trigger(api).json()["logId"]
    queued_for(run_id, 301)
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", "redis://127.0.0.1:1/0")  # nothing listens there
    assert trigger(api).status_code == 409
    assert PfaSyncLog.objects.get(pk=run_id).status == SyncStatus.QUEUED
