"""Write runs are write runs everywhere: `direction` in every run answer, the admin's list and the
dashboard's rows; no `syncType` on a write run; `triggeredBy` names the user or the command; and no
write run is created when no edit waits."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.urls import reverse
from rest_framework.test import APIClient

from mirror import delta
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory, user_with
from synclog import tasks
from synclog.models import PfaSyncLog, SyncStatus
from synclog.tests.factories import PfaSyncLogFactory

pytestmark = pytest.mark.django_db

KEY = "PFA-0000007"


@pytest.fixture
def rio(pems_server):
    organization = ApiConfigurationFactory(
        organization=OrganizationFactory(code="RIO"), base_url=pems_server.url
    ).organization
    call_command("sync_pems", "--org", "RIO", "--full")
    return organization


@pytest.fixture
def ann():
    return User.objects.create_user("ann")


def viewer(organization) -> APIClient:
    client = APIClient()
    client.force_authenticate(user_with("viewer", organizations=[organization]))
    return client


def commit(organization, user, values: dict) -> None:
    delta.draft_save(organization=organization, pfa_id=KEY, user=user, values=values)
    delta.drafts_commit(organization=organization, user=user, pfa_ids=[KEY])


def write_runs(organization):
    return PfaSyncLog.objects.filter(organization=organization, direction=PfaSyncLog.Direction.WRITE)


def test_run_answers_name_the_direction_and_a_write_run_has_no_sync_type(rio, ann):
    commit(rio, ann, {"monthly_rate": "5200.5"})
    call_command("push_pems", "--org", "RIO")
    write = write_runs(rio).get()
    read = PfaSyncLog.objects.get(organization=rio, direction=PfaSyncLog.Direction.READ)
    client = viewer(rio)
    logs = {log["id"]: log for log in client.get("/api/sync/status", {"organizationId": "RIO"}).json()["logs"]}
    assert logs[str(write.pk)]["direction"] == "write" and "syncType" not in logs[str(write.pk)]
    assert (logs[str(read.pk)]["direction"], logs[str(read.pk)]["syncType"]) == ("read", "full")
    (detail,) = client.get(f"/api/sync/status/{write.pk}").json()["logs"]
    assert detail["direction"] == "write" and "syncType" not in detail
    last = client.get("/api/sync/worker-status").json()["worker"]["lastRuns"]["RIO"]
    assert (last["id"], last["direction"]) == (str(read.pk), "read")


def test_triggered_by_names_the_user_or_the_command(rio, ann):
    commit(rio, ann, {"monthly_rate": "5200.5"})
    call_command("push_pems", "--org", "RIO")
    scheduled = PfaSyncLogFactory(organization=rio, ago=timedelta(days=1))
    by_user = PfaSyncLogFactory(organization=rio, trigger=PfaSyncLog.Trigger.API, triggered_by=ann)
    client = viewer(rio)
    logs = client.get("/api/sync/status", {"organizationId": "RIO", "limit": 10}).json()["logs"]
    by_id = {log["id"]: log["triggeredBy"] for log in logs}
    read = PfaSyncLog.objects.get(organization=rio, command="sync_pems")
    assert by_id[str(read.pk)] == "sync_pems"
    assert by_id[str(write_runs(rio).get().pk)] == "push_pems"
    assert by_id[str(scheduled.pk)] == "system"
    assert by_id[str(by_user.pk)] == "ann"


def test_no_write_run_is_created_when_no_edit_waits(rio, ann):
    """A worker down while planners commit finds one task per commit in the broker when it comes
    back: the first run writes every edit, and the tasks after it must not log empty runs."""
    commit(rio, ann, {"monthly_rate": "5200.5"})
    commit(rio, ann, {"monthly_rate": "5300"})
    tasks.write_after_commit(str(rio.pk), ann.pk)
    run = write_runs(rio).get()
    assert tasks.sync_execute(str(run.pk)).startswith("RIO: completed")
    run.refresh_from_db()
    assert (run.status, run.records_written, run.triggered_by) == (SyncStatus.COMPLETED, 2, ann)
    assert "nothing" in tasks.write_after_commit(str(rio.pk), ann.pk)
    assert write_runs(rio).count() == 1


def test_admin_run_list_has_a_direction_column_and_no_read_type_for_a_write(admin_client):
    organization = OrganizationFactory(code="RIO")
    PfaSyncLogFactory(organization=organization, direction=PfaSyncLog.Direction.WRITE)
    response = admin_client.get(reverse("admin:synclog_pfasynclog_changelist"))
    page = response.content.decode()
    assert "column-direction" in page and "Write (mirror to PEMS)" in page
    assert '<td class="field-read_type">-</td>' in page


def test_dashboard_active_runs_show_their_direction(admin_client):
    organization = OrganizationFactory(code="RIO")
    PfaSyncLogFactory(organization=organization, direction=PfaSyncLog.Direction.WRITE, status=SyncStatus.RUNNING)
    page = admin_client.get(reverse("synclog:dashboard")).content.decode()
    assert '<td class="direction">Write (mirror to PEMS)</td>' in page
