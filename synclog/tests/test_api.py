"""The sync REST API: trigger (with its 409 race), cancel, status, the worker status, and the
organizations with their last run."""

import threading
import uuid

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory, user_with
from synclog.models import PfaSyncLog, PfaSyncRecordError, SyncStatus
from synclog.tests.factories import PfaSyncLogFactory

pytestmark = pytest.mark.django_db

LOG_KEYS = {
    "id",
    "batchId",
    "organizationCode",
    "organizationName",
    "syncType",
    "status",
    "recordsTotal",
    "recordsProcessed",
    "recordsInserted",
    "recordsUpdated",
    "recordsErrored",
    "recordsWritten",
    "recordsRebased",
    "recordsConflicts",
    "startedAt",
    "completedAt",
    "durationMs",
    "errorMessage",
    "triggeredBy",
    "trigger",
    "recordsUnchanged",
    "recordsDeleted",
    "heartbeatAt",
}


def client_for(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def rio():
    return ApiConfigurationFactory(organization=OrganizationFactory(code="RIO", name="Rio Tinto")).organization


@pytest.fixture
def hou():
    return ApiConfigurationFactory(organization=OrganizationFactory(code="HOU", name="Houston")).organization


@pytest.fixture
def rio_user(rio):
    return user_with("ana", "synclog.trigger_sync", organizations=[rio])


def assert_error(response, status_code: int, code: str) -> dict:
    assert response.status_code == status_code, response.content
    body = response.json()
    assert body["success"] is False and body["error"] == code and body["message"], body
    return body


# --- trigger --------------------------------------------------------------------------------------------


def test_trigger_creates_the_queued_run_before_answering(rio, rio_user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client_for(rio_user).post("/api/sync/trigger", {"organizationId": "RIO"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["success"] is True and body["message"] == "Sync triggered for organization RIO"
    sync_log = PfaSyncLog.objects.get(pk=body["logId"])
    assert str(sync_log.batch_id) == body["batchId"] and body["logIds"] == [body["logId"]]
    assert sync_log.status == SyncStatus.QUEUED and sync_log.organization == rio
    assert sync_log.triggered_by == rio_user and sync_log.trigger == PfaSyncLog.Trigger.API
    assert sync_log.sync_type == "full"
    assert len(callbacks) == 1  # the task is enqueued only once the run is committed


def test_trigger_accepts_the_uuid_and_a_sync_type(rio, rio_user):
    response = client_for(rio_user).post(
        "/api/sync/trigger", {"organizationId": str(rio.pk), "syncType": "incremental"}, format="json"
    )
    assert response.status_code == 202
    assert PfaSyncLog.objects.get(pk=response.json()["logId"]).sync_type == "incremental"


def test_trigger_while_a_run_is_active_is_409_naming_it(rio, rio_user):
    first = client_for(rio_user).post("/api/sync/trigger", {"organizationId": "RIO"}, format="json").json()
    body = assert_error(
        client_for(rio_user).post("/api/sync/trigger", {"organizationId": "RIO"}, format="json"),
        409,
        "SYNC_IN_PROGRESS",
    )
    assert (body["batchId"], body["logId"]) == (first["batchId"], first["logId"])
    assert PfaSyncLog.objects.filter(organization=rio).count() == 1


def test_trigger_an_unknown_organization_is_404(rio_user):
    assert_error(
        client_for(rio_user).post("/api/sync/trigger", {"organizationId": "NOPE"}, format="json"), 404, "NOT_FOUND"
    )


def test_trigger_another_users_organization_is_404_and_creates_nothing(rio_user, hou):
    for key in ("HOU", str(hou.pk)):
        response = client_for(rio_user).post("/api/sync/trigger", {"organizationId": key}, format="json")
        assert_error(response, 404, "NOT_FOUND")
    assert not PfaSyncLog.objects.exists()


def test_trigger_without_the_permission_is_403(rio):
    viewer = user_with("viewer", organizations=[rio])
    response = client_for(viewer).post("/api/sync/trigger", {"organizationId": "RIO"}, format="json")
    assert_error(response, 403, "FORBIDDEN")
    assert not PfaSyncLog.objects.exists()


def test_staff_without_the_permission_is_403_but_a_superuser_may(rio):
    staff = user_with("staff", is_staff=True)
    assert_error(
        client_for(staff).post("/api/sync/trigger", {"organizationId": "RIO"}, format="json"), 403, "FORBIDDEN"
    )
    root = User.objects.create_superuser("root", password="pw")
    assert client_for(root).post("/api/sync/trigger", {"organizationId": "RIO"}, format="json").status_code == 202


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"organizationId": "RIO", "syncType": "sideways"}, "syncType"),
        ({"organizationId": ""}, "organizationId"),
        ({"organizationId": ["RIO"]}, "organizationId"),
        ({}, "organizationId"),  # only staff may leave it out
    ],
)
def test_trigger_with_a_malformed_body_is_400_naming_the_field(rio_user, payload, field):
    body = assert_error(client_for(rio_user).post("/api/sync/trigger", payload, format="json"), 400, "VALIDATION_ERROR")
    assert field in body["fields"] and field in body["message"]


def test_staff_trigger_of_every_organization_queues_every_active_one_in_one_batch(rio, hou):
    OrganizationFactory(code="OLD", is_active=False)
    staff = user_with("staff", "synclog.trigger_sync", is_staff=True)
    running = PfaSyncLogFactory(organization=hou, status=SyncStatus.RUNNING)
    response = client_for(staff).post("/api/sync/trigger", {"organizationId": "*"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    queued = PfaSyncLog.objects.filter(batch_id=body["batchId"])
    assert [str(sync_log.pk) for sync_log in queued] == body["logIds"]
    assert [sync_log.organization.code for sync_log in queued] == ["RIO"]
    assert body["skipped"] == [
        {
            "organizationId": str(hou.pk),
            "organizationCode": "HOU",
            "batchId": str(running.batch_id),
            "logId": str(running.pk),
            "message": body["skipped"][0]["message"],
        }
    ]


def test_trigger_an_organization_without_a_connection_is_400():
    bare = OrganizationFactory(code="BARE")
    user = user_with("bob", "synclog.trigger_sync", organizations=[bare])
    body = assert_error(
        client_for(user).post("/api/sync/trigger", {"organizationId": "BARE"}, format="json"), 400, "NOT_CONFIGURED"
    )
    assert "BARE" in body["message"]
    assert not PfaSyncLog.objects.exists()


def test_staff_may_allow_a_mass_deletion(rio, hou):
    staff = user_with("staff", "synclog.trigger_sync", is_staff=True)
    response = client_for(staff).post(
        "/api/sync/trigger", {"organizationId": "RIO", "allowMassDelete": True}, format="json"
    )
    assert response.status_code == 202, response.content
    assert PfaSyncLog.objects.get(pk=response.json()["logId"]).allow_mass_delete is True
    response = client_for(staff).post("/api/sync/trigger", {"organizationId": "HOU"}, format="json")
    assert PfaSyncLog.objects.get(pk=response.json()["logId"]).allow_mass_delete is False


def test_a_non_staff_user_asking_for_a_mass_deletion_is_403(rio, rio_user):
    response = client_for(rio_user).post(
        "/api/sync/trigger", {"organizationId": "RIO", "allowMassDelete": True}, format="json"
    )
    body = assert_error(response, 403, "FORBIDDEN")
    assert "allowMassDelete" in body["message"]
    assert not PfaSyncLog.objects.exists()
    response = client_for(rio_user).post(
        "/api/sync/trigger", {"organizationId": "RIO", "allowMassDelete": False}, format="json"
    )
    assert response.status_code == 202


@pytest.mark.parametrize(
    "payload",
    [
        {"organizationId": "RIO", "allowMassDelete": "true"},
        {"organizationId": "RIO", "allowMassDelete": 1},
        {"organizationId": "RIO", "allowMassDelete": None},
        {"organizationId": "RIO", "allowMassDelete": True, "syncType": "incremental"},
        {"organizationId": "*", "allowMassDelete": True},  # every organization at once: never
    ],
)
def test_allow_mass_delete_must_be_a_boolean_on_a_full_read_of_one_organization(rio, payload):
    staff = user_with("staff", "synclog.trigger_sync", is_staff=True)
    body = assert_error(client_for(staff).post("/api/sync/trigger", payload, format="json"), 400, "VALIDATION_ERROR")
    assert set(body["fields"]) == {"allowMassDelete"} and "allowMassDelete" in body["message"]
    assert not PfaSyncLog.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_triggers_start_exactly_one_run():
    rio = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO")).organization
    user = user_with("ana", "synclog.trigger_sync", organizations=[rio])
    barrier = threading.Barrier(20)
    statuses: list[int] = []

    def trigger():
        try:
            client = client_for(user)
            barrier.wait()
            statuses.append(client.post("/api/sync/trigger", {"organizationId": "RIO"}, format="json").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=trigger) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [202] + [409] * 19
    assert PfaSyncLog.objects.filter(organization=rio).count() == 1


@pytest.mark.django_db(transaction=True)
def test_trigger_whose_task_the_broker_refuses_is_503_and_leaves_nothing_blocked(broker_down, monkeypatch):
    rio = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO")).organization
    user = user_with("ana", "synclog.trigger_sync", organizations=[rio])

    body = assert_error(
        client_for(user).post("/api/sync/trigger", {"organizationId": "RIO"}, format="json"), 503, "QUEUE_UNAVAILABLE"
    )
    assert "Could not be queued" in body["message"]
    failed = PfaSyncLog.objects.get(organization=rio)
    assert str(failed.batch_id) == body["batchId"] and failed.status == SyncStatus.FAILED
    monkeypatch.undo()  # the broker is back: the organization is not blocked by the failed run
    monkeypatch.setattr("django_q.tasks.async_task", lambda *args, **kwargs: "task-id")
    assert client_for(user).post("/api/sync/trigger", {"organizationId": "RIO"}, format="json").status_code == 202


# --- cancel ---------------------------------------------------------------------------------------------


def cancel(user, sync_log_or_id):
    return client_for(user).post(f"/api/sync/cancel/{getattr(sync_log_or_id, 'pk', sync_log_or_id)}")


def test_cancel_a_queued_run_ends_it_cancelled_at_once(rio, rio_user):
    queued = PfaSyncLogFactory(organization=rio, trigger="api", status=SyncStatus.QUEUED)
    response = cancel(rio_user, queued)
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["success"], body["logId"], body["status"]) == (True, str(queued.pk), "cancelled")
    queued.refresh_from_db()
    assert queued.status == SyncStatus.CANCELLED and queued.completed_at is not None


def test_cancel_a_running_run_asks_it_to_stop_at_its_next_page(rio, rio_user):
    running = PfaSyncLogFactory(organization=rio, trigger="api", status=SyncStatus.RUNNING)
    response = cancel(rio_user, running)
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "running"
    running.refresh_from_db()
    assert running.status == SyncStatus.RUNNING and running.cancel_requested_at is not None


@pytest.mark.parametrize("ended", [SyncStatus.COMPLETED, SyncStatus.FAILED, SyncStatus.CANCELLED])
def test_cancel_a_run_that_has_ended_is_409(rio, rio_user, ended):
    sync_log = PfaSyncLogFactory(organization=rio, trigger="api", status=ended)
    body = assert_error(cancel(rio_user, sync_log), 409, "RUN_ENDED")
    assert (body["logId"], body["status"]) == (str(sync_log.pk), ended)
    sync_log.refresh_from_db()
    assert sync_log.status == ended


def test_cancel_a_run_out_of_reach_is_404_and_changes_nothing(rio_user, hou):
    theirs = PfaSyncLogFactory(organization=hou, trigger="api", status=SyncStatus.QUEUED)
    assert_error(cancel(rio_user, theirs), 404, "NOT_FOUND")
    assert_error(cancel(rio_user, uuid.uuid4()), 404, "NOT_FOUND")
    assert_error(cancel(rio_user, "not-a-uuid"), 404, "NOT_FOUND")
    theirs.refresh_from_db()
    assert theirs.status == SyncStatus.QUEUED


def test_cancel_needs_the_permission_to_start_syncs(rio):
    queued = PfaSyncLogFactory(organization=rio, trigger="api", status=SyncStatus.QUEUED)
    viewer = user_with("viewer", organizations=[rio])
    staff = user_with("staff", is_staff=True)
    for user in (viewer, staff):
        assert_error(cancel(user, queued), 403, "FORBIDDEN")
    queued.refresh_from_db()
    assert queued.status == SyncStatus.QUEUED
    assert_error(APIClient().post(f"/api/sync/cancel/{queued.pk}"), 401, "UNAUTHORIZED")


# --- status -------------------------------------------------------------------------------------


def make_log(organization, **fields) -> PfaSyncLog:
    return PfaSyncLog.objects.create(organization=organization, trigger=fields.pop("trigger", "schedule"), **fields)


def test_status_lists_newest_first_with_a_summary(rio, rio_user):
    failed = make_log(rio, status=SyncStatus.FAILED, error_message="PEMS said no")
    completed = make_log(
        rio,
        status=SyncStatus.COMPLETED,
        triggered_by=rio_user,
        trigger="api",
        records_total=5,
        records_processed=5,
        records_inserted=5,
        duration_ms=12,
        completed_at=timezone.now(),
    )
    response = client_for(rio_user).get("/api/sync/status", {"organizationId": "RIO"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert [log["id"] for log in body["logs"]] == [str(completed.pk), str(failed.pk)]
    newest = body["logs"][0]
    assert set(newest) >= LOG_KEYS
    assert (newest["organizationCode"], newest["organizationName"], newest["triggeredBy"]) == (
        "RIO",
        "Rio Tinto",
        "ana",
    )
    assert body["logs"][1]["triggeredBy"] == "system" and body["logs"][1]["errorMessage"] == "PEMS said no"
    assert newest["completedAt"].endswith(("Z", "+00:00"))
    assert body["summary"] == {
        "totalSyncs": 2,
        "successfulSyncs": 1,
        "failedSyncs": 1,
        "lastSync": newest["completedAt"],
    }


def test_status_limit_and_summary_count_the_same_filter(rio, hou, rio_user):
    for _ in range(3):
        make_log(rio, status=SyncStatus.COMPLETED)
    make_log(hou, status=SyncStatus.COMPLETED)
    body = client_for(rio_user).get("/api/sync/status", {"limit": 2}).json()
    assert len(body["logs"]) == 2 and {log["organizationCode"] for log in body["logs"]} == {"RIO"}
    assert body["summary"]["totalSyncs"] == 3
    staff = user_with("staff", "synclog.trigger_sync", is_staff=True)
    assert client_for(staff).get("/api/sync/status").json()["summary"]["totalSyncs"] == 4


def test_status_of_nothing_has_an_empty_summary(rio_user):
    body = client_for(rio_user).get("/api/sync/status").json()
    assert body["logs"] == []
    assert body["summary"] == {"totalSyncs": 0, "successfulSyncs": 0, "failedSyncs": 0, "lastSync": None}


@pytest.mark.parametrize("limit", ["0", "101", "x", "-1"])
def test_status_limit_out_of_range_is_400(rio_user, limit):
    body = assert_error(client_for(rio_user).get("/api/sync/status", {"limit": limit}), 400, "VALIDATION_ERROR")
    assert "limit" in body["fields"]


def test_status_of_another_users_organization_is_404(rio_user, hou):
    make_log(hou)
    assert_error(client_for(rio_user).get("/api/sync/status", {"organizationId": "HOU"}), 404, "NOT_FOUND")


def test_status_of_one_run_has_progress_and_records_kept_aside(rio, rio_user):
    sync_log = make_log(rio, status=SyncStatus.RUNNING, records_total=200, records_processed=50, records_errored=60)
    PfaSyncRecordError.objects.bulk_create(
        PfaSyncRecordError(sync_log=sync_log, pfa_id=f"PFA-{n}", reason="bad date", raw_row={"n": n}) for n in range(60)
    )
    response = client_for(rio_user).get(f"/api/sync/status/{sync_log.pk}")
    assert response.status_code == 200
    body = response.json()
    assert body["batchId"] == str(sync_log.batch_id) and body["finished"] is False
    (log,) = body["logs"]
    assert set(log) >= LOG_KEYS | {"progressPercent", "recordsKeptAside"}
    assert log["progressPercent"] == 25.0
    assert len(log["recordsKeptAside"]) == 50
    assert log["recordsKeptAside"][0] == {"pfaId": "PFA-0", "reason": "bad date", "rawRow": {"n": 0}}


def test_status_of_a_batch_lists_its_runs(rio, hou):
    batch_id = uuid.uuid4()
    make_log(rio, batch_id=batch_id, status=SyncStatus.COMPLETED)
    make_log(hou, batch_id=batch_id, status=SyncStatus.FAILED)
    staff = user_with("staff", "synclog.trigger_sync", is_staff=True)
    body = client_for(staff).get(f"/api/sync/status/{batch_id}").json()
    assert [log["organizationCode"] for log in body["logs"]] == ["HOU", "RIO"]
    assert body["finished"] is True
    assert [log["progressPercent"] for log in body["logs"]] == [0.0, 100.0]


def test_status_of_an_invisible_or_unknown_run_is_404(rio_user, hou):
    other = make_log(hou)
    for key in (other.pk, other.batch_id, uuid.uuid4()):
        assert_error(client_for(rio_user).get(f"/api/sync/status/{key}"), 404, "NOT_FOUND")
    assert_error(client_for(rio_user).get("/api/sync/status/not-a-uuid"), 404, "NOT_FOUND")


# --- worker status ----------------------------------------------------------------------------------


def test_worker_status(rio, hou, rio_user, settings):
    settings.ENABLE_SYNC_WORKER = False
    make_log(hou, status=SyncStatus.RUNNING)
    body = client_for(rio_user).get("/api/sync/worker-status").json()
    assert body["success"] is True
    worker = body["worker"]
    assert set(worker) >= {"enabled", "alive", "syncsRunning", "nextRun", "interval"}
    assert (worker["enabled"], worker["alive"], worker["syncsRunning"], worker["nextRun"]) == (False, False, 1, None)
    assert worker["interval"] == settings.SYNC_INTERVAL
    assert worker["lastRuns"] == {"RIO": None}  # HOU's run is not this user's to see
    assert worker["fullSync"] == {"enabled": False, "nextRun": None, "interval": settings.SYNC_FULL_INTERVAL}


def test_worker_status_shows_both_schedules_and_their_next_runs(rio_user, settings):
    settings.ENABLE_SYNC_WORKER = True
    settings.SYNC_INTERVAL = "*/15 * * * *"
    settings.SYNC_FULL_INTERVAL = "0 3 * * *"
    call_command("setup_schedules")
    worker = client_for(rio_user).get("/api/sync/worker-status").json()["worker"]
    tick, full = (parse_datetime(worker["nextRun"]), parse_datetime(worker["fullSync"]["nextRun"]))
    assert worker["enabled"] is True and worker["interval"] == "*/15 * * * *" and tick.minute % 15 == 0
    assert (worker["fullSync"]["enabled"], worker["fullSync"]["interval"]) == (True, "0 3 * * *")
    assert (full.hour, full.minute) == (3, 0) and full > timezone.now()
    settings.SYNC_FULL_INTERVAL = ""
    call_command("setup_schedules")
    worker = client_for(rio_user).get("/api/sync/worker-status").json()["worker"]
    assert worker["fullSync"] == {"enabled": False, "nextRun": None, "interval": None}
    assert worker["nextRun"] is not None
