"""Worker liveness, named as such: `worker.alive` (a cluster seen within two heartbeats) apart from
`syncsRunning`, in the API and on the dashboard, and the trigger's warning when no worker is alive."""

import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory, user_with
from synclog.models import PfaSyncLog, SyncStatus, SyncWorker
from synclog.tests.factories import PfaSyncLogFactory
from synclog.worker import worker_beat, worker_gone, worker_status

pytestmark = pytest.mark.django_db


@pytest.fixture
def rio():
    return ApiConfigurationFactory(organization=OrganizationFactory(code="RIO")).organization


@pytest.fixture
def api(rio) -> APIClient:
    client = APIClient()
    client.force_authenticate(user_with("ana", "synclog.trigger_sync", organizations=[rio]))
    return client


def beat(*, ago: timedelta = timedelta(0)) -> uuid.UUID:
    """A cluster that said it was alive `ago`."""
    cluster_id = uuid.uuid4()
    worker_beat(cluster_id=cluster_id, workers=2, started_at=timezone.now())
    SyncWorker.objects.filter(pk=cluster_id).update(seen_at=timezone.now() - ago)
    return cluster_id


def test_a_worker_is_alive_while_seen_within_two_heartbeats(settings):
    settings.SYNC_HEARTBEAT_SECONDS = 15
    assert worker_status()["alive"] is False  # none ever seen
    cluster = beat(ago=timedelta(seconds=29))
    assert worker_status()["alive"] is True
    worker_gone(cluster_id=cluster)
    assert worker_status()["alive"] is False
    beat(ago=timedelta(seconds=31))  # killed without a word: silent for more than two heartbeats
    assert worker_status()["alive"] is False


def test_worker_status_says_alive_and_syncs_running_apart(api, rio, settings):
    PfaSyncLogFactory(organization=rio, status=SyncStatus.RUNNING)
    worker = api.get("/api/sync/worker-status").json()["worker"]
    # A sync running says nothing of the worker: here none is alive (the run's worker died).
    assert (worker["alive"], worker["syncsRunning"]) == (False, 1)
    assert "running" not in worker
    beat()
    PfaSyncLog.objects.update(status=SyncStatus.COMPLETED)
    worker = api.get("/api/sync/worker-status").json()["worker"]
    assert (worker["alive"], worker["syncsRunning"]) == (True, 0)


def test_a_trigger_with_no_worker_alive_answers_202_with_a_warning(api):
    response = api.post("/api/sync/trigger", {"organizationId": "RIO"}, format="json")
    assert response.status_code == 202
    assert "No worker is alive" in response.json()["warning"]


def test_a_trigger_with_a_worker_alive_has_no_warning(api):
    beat()
    response = api.post("/api/sync/trigger", {"organizationId": "RIO"}, format="json")
    assert response.status_code == 202 and "warning" not in response.json()


def test_dashboard_says_whether_a_worker_is_alive_apart_from_syncs_running(admin_client, rio):
    PfaSyncLogFactory(organization=rio, status=SyncStatus.RUNNING)
    page = admin_client.get(reverse("synclog:dashboard")).content.decode()
    assert "Worker alive" in page and "no: no <code>manage.py qcluster</code> seen" in page
    assert '<dd id="syncs-running">1</dd>' in page
    assert "Running now" not in page
    beat()
    page = admin_client.get(reverse("synclog:dashboard")).content.decode()
    assert "yes (1 cluster seen within two heartbeats)" in page


def test_sync_now_with_no_worker_alive_warns_that_the_run_waits(admin_client, rio):
    response = admin_client.post(reverse("synclog:sync-now", args=["RIO"]), follow=True)
    assert "No worker is alive" in response.content.decode()
