"""Read-side queries of the sync app: which organizations a sync of all of them reads, each
organization with its last run, and the runs a user sees."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.test.utils import CaptureQueriesContext

from mirror.tests.factories import OrganizationFactory, user_with
from synclog.models import PfaSyncLog, SyncStatus
from synclog.selectors import organizations_to_sync, organizations_with_last_run, sync_logs_visible_to
from synclog.tests.factories import PfaSyncLogFactory

pytestmark = pytest.mark.django_db


def test_a_sync_of_every_organization_reads_the_active_ones_with_sync_enabled():
    rio = OrganizationFactory(code="RIO")
    off = OrganizationFactory(code="OFF", sync_enabled=False)
    OrganizationFactory(code="OLD", is_active=False)
    OrganizationFactory(code="GONE", is_active=False, sync_enabled=False)
    assert list(organizations_to_sync()) == [rio]
    assert set(organizations_to_sync(including_sync_disabled=True)) == {rio, off}


def test_each_organization_comes_with_its_newest_read_run():
    rio, hou = OrganizationFactory(code="RIO"), OrganizationFactory(code="HOU")
    PfaSyncLogFactory(organization=rio, ago=timedelta(hours=2), records_processed=250)
    newest = PfaSyncLogFactory(organization=rio, status=SyncStatus.FAILED, ago=timedelta(hours=1), records_processed=7)
    PfaSyncLogFactory(organization=rio, direction=PfaSyncLog.Direction.WRITE)  # not a read
    rows = {organization.code: organization for organization in organizations_with_last_run()}
    assert (
        rows["RIO"].last_run_id,
        rows["RIO"].last_run_status,
        rows["RIO"].last_run_created_at,
        rows["RIO"].last_run_completed_at,
        rows["RIO"].last_run_records_processed,
    ) == (newest.pk, "failed", newest.created_at, newest.completed_at, 7)
    assert (rows["HOU"].last_run_id, rows["HOU"].last_run_status, rows["HOU"].last_run_completed_at) == (
        None,
        None,
        None,
    )
    assert list(organizations_with_last_run(type(hou).objects.filter(code="HOU"))) == [hou]


def test_the_last_runs_of_many_organizations_take_one_query():
    for code in ("A", "B", "C", "D"):
        PfaSyncLogFactory(organization=OrganizationFactory(code=code))
    with CaptureQueriesContext(connection) as queries:
        statuses = [organization.last_run_status for organization in organizations_with_last_run()]
    assert statuses == ["completed"] * 4 and len(queries) == 1


def test_a_user_sees_the_runs_of_the_organizations_they_see():
    rio, hou = OrganizationFactory(code="RIO"), OrganizationFactory(code="HOU")
    rio_run, hou_run = PfaSyncLogFactory(organization=rio), PfaSyncLogFactory(organization=hou)
    assert list(sync_logs_visible_to(user_with("ana", organizations=[rio]))) == [rio_run]
    assert set(sync_logs_visible_to(user_with("sam", is_staff=True))) == {rio_run, hou_run}
    assert not sync_logs_visible_to(AnonymousUser()).exists()
