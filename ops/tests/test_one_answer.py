"""One answer per question: the last sync, stale and the last write, as the dashboard, the alerts,
/metrics, the API and the admin give them, agree (they all read `synclog.selectors`)."""

from datetime import datetime, timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from mirror.models import ApiConfiguration
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory, user_with
from ops.alerts import alerts_check
from ops.metrics import metrics_text
from ops.tests.runs import failed_sync, run_sync
from synclog.dashboard import dashboard_overview
from synclog.models import PfaSyncLog, SyncStatus
from synclog.tests.factories import PfaSyncLogFactory

pytestmark = pytest.mark.django_db

ORGANIZATIONS = reverse("admin:mirror_organization_changelist")


@pytest.fixture
def staff_api():
    client = APIClient()
    client.force_authenticate(user_with("staff", "synclog.trigger_sync", is_staff=True))
    return client


def dashboard_rows(*, now: datetime | None = None) -> dict:
    return {row["organization"].code: row for row in dashboard_overview(now=now)["organizations"]}


def api_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def metrics_last_sync(code: str) -> float | None:
    for family in text_string_to_metric_families(metrics_text().decode()):
        for sample in family.samples:
            if sample.name == "pfasync_last_completed_read_timestamp_seconds" and sample.labels == {
                "organization": code
            }:
                return sample.value
    return None


def test_every_interface_gives_the_same_last_sync(rio, staff_api, admin_client):
    completed = run_sync(rio)
    failed = failed_sync(rio)  # newer, and no sync
    PfaSyncLogFactory(organization=rio, direction=PfaSyncLog.Direction.WRITE)  # a write is no sync either
    assert completed.status == SyncStatus.COMPLETED and failed.status == SyncStatus.FAILED
    expected = completed.completed_at

    organizations = {o["code"]: o for o in staff_api.get("/api/organizations").json()["organizations"]}
    summary = staff_api.get("/api/sync/status", {"organizationId": "RIO"}).json()["summary"]
    (admin_row,) = admin_client.get(ORGANIZATIONS).context["cl"].result_list
    (stale,) = alerts_check(organizations=[rio], now=timezone.now() + timedelta(days=1))
    assert {
        "dashboard": dashboard_rows()["RIO"]["last_success_at"],
        "api organizations": api_time(organizations["RIO"]["lastSyncAt"]),
        "api status summary": api_time(summary["lastSync"]),
        "admin": admin_row.last_sync_at,
        "alert": stale.last_completed_at,
        "connection": ApiConfiguration.objects.get(organization=rio, usage="read").last_sync_at,
    } == dict.fromkeys(
        ["dashboard", "api organizations", "api status summary", "admin", "alert", "connection"], expected
    )
    assert metrics_last_sync("RIO") == pytest.approx(expected.timestamp())


def test_an_organization_never_synced_has_no_last_sync_anywhere(rio, staff_api, admin_client):
    failed_sync(rio)
    organizations = {o["code"]: o for o in staff_api.get("/api/organizations").json()["organizations"]}
    (admin_row,) = admin_client.get(ORGANIZATIONS).context["cl"].result_list
    assert (
        dashboard_rows()["RIO"]["last_success_at"],
        organizations["RIO"]["lastSyncAt"],
        staff_api.get("/api/sync/status").json()["summary"]["lastSync"],
        admin_row.last_sync_at,
        metrics_last_sync("RIO"),
    ) == (None, None, None, None, None)


def test_the_dashboard_shows_stale_exactly_the_organizations_the_alerts_call_stale(settings):
    settings.SYNC_STALE_AFTER = None
    settings.SYNC_INTERVAL = "*/15 * * * *"  # stale after 45 minutes
    now = timezone.now()
    ages = {"FRESH": 44, "OLD": 46, "LONG": 600}
    organizations = []
    for code, minutes in ages.items():
        organization = ApiConfigurationFactory(organization=OrganizationFactory(code=code)).organization
        PfaSyncLogFactory(organization=organization, ago=timedelta(minutes=minutes))
        organizations.append(organization)
    # Never read: stale once the limit passed since it was registered, not before.
    for code, registered in (("NEW", now), ("FORGOTTEN", now - timedelta(hours=2))):
        organization = ApiConfigurationFactory(organization=OrganizationFactory(code=code)).organization
        type(organization).objects.filter(pk=organization.pk).update(created_at=registered)
        organizations.append(organization)
    alerted = {
        alert.organization for alert in alerts_check(organizations=organizations, now=now) if alert.kind == "stale"
    }
    shown = {code for code, row in dashboard_rows(now=now).items() if row["stale"]}
    assert shown == alerted == {"OLD", "LONG", "FORGOTTEN"}


def test_the_dashboard_shows_the_last_write_the_alerts_judge(rio):
    run_sync(rio)
    failed = PfaSyncLogFactory(
        organization=rio,
        direction="write",
        status="failed",
        error_message="PEMS is unavailable",
        ago=timedelta(minutes=5),
    )
    # A write run still going is not the last write: it has not ended.
    PfaSyncLogFactory(organization=rio, direction="write", status=SyncStatus.RUNNING)
    alerts = {alert.kind: alert for alert in alerts_check(organizations=[rio])}
    assert dashboard_rows()["RIO"]["last_write"] == failed
    assert alerts["writes_failing"].firing and alerts["writes_failing"].last_write_error == failed.error_message
