"""Admin for organizations (last sync, Sync now, enable/disable) and the read-only sync history."""

import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from mirror.models import Organization, PfaMirror
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory, PfaMirrorFactory
from synclog.models import PfaSyncLog, PfaSyncRecordError, SyncStatus
from synclog.tests.factories import PfaSyncLogFactory

pytestmark = pytest.mark.django_db

SECRET = "s3cret-Value-123"


def message_texts(response) -> list[tuple[str, str]]:
    return [(message.level_tag, str(message)) for message in get_messages(response.wsgi_request)]


def configured(code: str) -> Organization:
    return ApiConfigurationFactory(organization=OrganizationFactory(code=code), password=SECRET).organization


def mirror_rows(organization, count: int) -> None:
    PfaMirror.objects.bulk_create(
        PfaMirrorFactory.build(organization=organization, pfa_id=f"PFA-{n}") for n in range(count)
    )


# --- organizations ------------------------------------------------------------------------------

ORGANIZATIONS = reverse("admin:mirror_organization_changelist")


def test_organization_list_shows_last_sync_and_mirror_size(admin_client):
    rio = configured("RIO")
    PfaSyncLogFactory(organization=rio, records_processed=111, created_at=timezone.now() - timedelta(hours=2))
    PfaSyncLogFactory(organization=rio, status=SyncStatus.FAILED, records_processed=7)
    mirror_rows(rio, 5)
    response = admin_client.get(ORGANIZATIONS)
    assert response.status_code == 200
    (row,) = response.context["cl"].result_list
    assert (row.last_run_status, row.last_run_records_processed, row.mirror_size) == (
        "failed",
        7,
        5,
    )
    body = response.content.decode()
    assert "Failed</span>" in body and "Organization RIO" in body
    assert SECRET not in body


def test_organization_mirror_size_counts_only_records_not_deleted_in_pems(admin_client):
    rio = configured("RIO")
    mirror_rows(rio, 3)
    PfaMirror.objects.filter(pfa_id="PFA-0").update(deleted_at=timezone.now() - timedelta(days=1))
    (row,) = admin_client.get(ORGANIZATIONS).context["cl"].result_list
    assert row.mirror_size == 2


def test_organization_list_query_count_does_not_grow_with_organizations(admin_client):
    configured("AAA")
    with CaptureQueriesContext(connection) as one:
        admin_client.get(ORGANIZATIONS)
    for code in ("BBB", "CCC", "DDD"):
        organization = configured(code)
        PfaSyncLogFactory(organization=organization)
        mirror_rows(organization, 2)
    with CaptureQueriesContext(connection) as four:
        response = admin_client.get(ORGANIZATIONS)
    assert len(response.context["cl"].result_list) == 4
    assert len(four.captured_queries) == len(one.captured_queries)


@pytest.mark.parametrize(("term", "expected"), [("rio", {"RIO"}), ("Organization HOU", {"HOU"})])
def test_organization_search_by_code_or_name(admin_client, term, expected):
    configured("RIO"), configured("HOU")
    response = admin_client.get(ORGANIZATIONS, {"q": term})
    assert {o.code for o in response.context["cl"].result_list} == expected


def organization_action(admin_client, action: str, *organizations):
    return admin_client.post(
        ORGANIZATIONS,
        {"action": action, "_selected_action": [str(o.pk) for o in organizations]},
        follow=True,
    )


def test_sync_now_queues_an_admin_run_and_enqueues_it_on_commit(
    admin_client, admin_user, django_capture_on_commit_callbacks
):
    rio = configured("RIO")
    with django_capture_on_commit_callbacks() as callbacks:
        response = organization_action(admin_client, "sync_now", rio)
    sync_log = PfaSyncLog.objects.get(organization=rio)
    assert (sync_log.status, sync_log.trigger, sync_log.triggered_by) == (
        "queued",
        "admin",
        admin_user,
    )
    assert len(callbacks) == 1
    assert message_texts(response) == [
        ("success", f"Sync of RIO queued (run {sync_log.id})."),
        # No worker cluster has said it is alive in this test.
        (
            "warning",
            "No worker is alive (no `manage.py qcluster` seen within two heartbeats): the run waits in the queue "
            "until one starts.",
        ),
    ]


def test_second_sync_now_while_queued_warns_naming_the_active_run(admin_client, django_capture_on_commit_callbacks):
    rio = configured("RIO")
    with django_capture_on_commit_callbacks():
        organization_action(admin_client, "sync_now", rio)
    active = PfaSyncLog.objects.get(organization=rio)
    with django_capture_on_commit_callbacks() as callbacks:
        response = organization_action(admin_client, "sync_now", rio)
    assert callbacks == []
    assert PfaSyncLog.objects.filter(organization=rio).count() == 1
    ((level, text),) = message_texts(response)
    assert level == "warning"
    assert "already running for organization RIO" in text and str(active.id) in text


def test_sync_now_without_a_connection_reports_it(admin_client):
    lonely = OrganizationFactory(code="LONE")
    ((level, text),) = message_texts(organization_action(admin_client, "sync_now", lonely))
    assert level == "error" and "has no PEMS read connection" in text
    assert not PfaSyncLog.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_sync_now_whose_task_the_broker_refuses_is_an_error_and_blocks_nothing(admin_client, broker_down):
    rio = configured("RIO")

    ((level, text),) = message_texts(organization_action(admin_client, "sync_now", rio))
    assert level == "error" and "Could not be queued" in text
    assert PfaSyncLog.objects.get(organization=rio).status == SyncStatus.FAILED


def test_enable_and_disable_sync(admin_client):
    rio, hou = configured("RIO"), configured("HOU")
    organization_action(admin_client, "disable_sync", rio, hou)
    assert not Organization.objects.filter(sync_enabled=True).exists()
    response = organization_action(admin_client, "enable_sync", rio)
    assert Organization.objects.get(code="RIO").sync_enabled and not Organization.objects.get(code="HOU").sync_enabled
    assert message_texts(response) == [("success", "Sync enabled for 1 organization(s).")]


# --- sync history -------------------------------------------------------------------------------

SYNC_LOGS = reverse("admin:synclog_pfasynclog_changelist")


@pytest.fixture
def history():
    rio, hou = configured("RIO"), configured("HOU")
    old = timezone.now() - timedelta(days=10)
    return {
        "completed": PfaSyncLogFactory(
            organization=rio,
            records_processed=250,
            records_inserted=250,
            created_at=old,
            started_at=old,
        ),
        "failed": PfaSyncLogFactory(
            organization=hou,
            status=SyncStatus.FAILED,
            trigger=PfaSyncLog.Trigger.ADMIN,
            sync_type=PfaSyncLog.SyncType.INCREMENTAL,
            error_message="PEMS request failed (HTTP 500): boom",
            error_details={"error_type": "PemsUnavailable", "pems_status": 500},
        ),
        "running": PfaSyncLogFactory(
            organization=rio, status=SyncStatus.RUNNING, records_total=200, records_processed=50
        ),
    }


def listed(admin_client, **params) -> set:
    response = admin_client.get(SYNC_LOGS, params)
    assert response.status_code == 200
    return {sync_log.pk for sync_log in response.context["cl"].result_list}


def test_sync_log_list_shows_counts_status_and_duration(admin_client, history):
    response = admin_client.get(SYNC_LOGS)
    body = response.content.decode()
    for header in (
        "Organization",
        "Direction",
        "Read type",
        "Trigger",
        "Status",
        "Records processed",
        "Records errored",
        "Duration",
    ):
        assert header in body
    assert "background:#198754" in body and "background:#dc3545" in body  # completed green, failed red
    assert "1.5 s" in body


def test_sync_log_shows_records_deleted_and_whether_a_mass_deletion_was_allowed(admin_client):
    rio = configured("RIO")
    allowed = PfaSyncLogFactory(
        organization=rio, sync_type=PfaSyncLog.SyncType.FULL, records_deleted=4321, allow_mass_delete=True
    )
    PfaSyncLogFactory(organization=rio, created_at=timezone.now() - timedelta(days=1))
    body = admin_client.get(SYNC_LOGS).content.decode()
    assert "Records deleted" in body and "4321" in body
    assert listed(admin_client, allow_mass_delete__exact="1") == {allowed.pk}
    page = admin_client.get(reverse("admin:synclog_pfasynclog_change", args=[allowed.pk])).content.decode()
    field = re.search(r'<div class="[^"]*field-allow_mass_delete.*?</div>\s*</div>', page, re.S)
    assert field and "Allow mass delete" in field.group(0) and 'alt="True"' in field.group(0)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status__exact": "failed"}, {"failed"}),
        ({"sync_type__exact": "incremental"}, {"failed"}),
        ({"trigger__exact": "schedule"}, {"completed", "running"}),
    ],
)
def test_sync_log_filters(admin_client, history, params, expected):
    assert listed(admin_client, **params) == {history[name].pk for name in expected}


def test_sync_log_filter_by_organization_and_date(admin_client, history):
    rio = history["completed"].organization
    assert listed(admin_client, organization__id__exact=str(rio.pk)) == {
        history["completed"].pk,
        history["running"].pk,
    }
    since = str(timezone.now() - timedelta(days=6))
    assert listed(admin_client, created_at__gte=since) == {
        history["failed"].pk,
        history["running"].pk,
    }


def test_sync_log_search_matches_the_exact_batch_id(admin_client, history):
    batch_id = history["failed"].batch_id
    assert listed(admin_client, q=str(batch_id)) == {history["failed"].pk}
    assert listed(admin_client, q=str(batch_id)[:8]) == set()
    assert listed(admin_client, q=str(uuid.uuid4())) == set()


def test_cancel_action_ends_a_queued_run_and_stops_a_running_one_at_its_next_page(admin_client):
    rio, hou, bog = configured("RIO"), configured("HOU"), configured("BOG")
    queued, running, ended = (
        PfaSyncLogFactory(organization=rio, status=SyncStatus.QUEUED),
        PfaSyncLogFactory(organization=hou, status=SyncStatus.RUNNING),
        PfaSyncLogFactory(organization=bog),
    )
    response = admin_client.post(
        SYNC_LOGS,
        {"action": "cancel", "_selected_action": [str(r.pk) for r in (queued, running, ended)]},
        follow=True,
    )
    assert set(message_texts(response)) == {
        ("success", f"Sync of RIO cancelled before it started (run {queued.pk})."),
        ("success", f"Sync of HOU stops at its next page boundary and ends cancelled (run {running.pk})."),
        ("warning", f"Run {ended.pk} has ended already (completed)."),
    }
    for sync_log in (queued, running, ended):
        sync_log.refresh_from_db()
    assert (queued.status, running.status, ended.status) == ("cancelled", "running", "completed")
    assert running.cancel_requested_at is not None


def test_sync_history_is_read_only(admin_client, history):
    sync_log = history["failed"]
    assert admin_client.get(reverse("admin:synclog_pfasynclog_add")).status_code == 403
    delete = admin_client.post(reverse("admin:synclog_pfasynclog_delete", args=[sync_log.pk]), {"post": "yes"})
    assert delete.status_code == 403
    change = admin_client.post(
        reverse("admin:synclog_pfasynclog_change", args=[sync_log.pk]),
        {"status": "completed"},
    )
    assert change.status_code == 403
    sync_log.refresh_from_db()
    assert sync_log.status == "failed"


def test_failed_run_page_shows_the_error_and_the_records_kept_aside(admin_client, history):
    sync_log = history["failed"]
    PfaSyncRecordError.objects.create(
        sync_log=sync_log,
        pfa_id="PFA-9",
        reason="pfs_p_startdate: not a date",
        raw_row={"pfs_id": "PFA-9"},
    )
    response = admin_client.get(reverse("admin:synclog_pfasynclog_change", args=[sync_log.pk]))
    body = response.content.decode()
    assert response.status_code == 200
    assert "PEMS request failed (HTTP 500): boom" in body
    assert "<pre>{\n  &quot;error_type&quot;: &quot;PemsUnavailable&quot;," in body
    assert "Records kept aside" in body and "pfs_p_startdate: not a date" in body and "PFA-9" in body
    assert 'http-equiv="refresh"' not in body


def test_running_run_page_shows_progress_and_refreshes_itself(admin_client, history):
    response = admin_client.get(reverse("admin:synclog_pfasynclog_change", args=[history["running"].pk]))
    body = response.content.decode()
    assert '<meta http-equiv="refresh" content="5">' in body
    assert '<progress max="100" value="25"></progress> 25% (50 of 200 records)' in body
