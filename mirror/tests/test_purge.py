"""Records deleted in PEMS: the records list leaves them out (`mirror.selectors`), and the purge
(`mirror.purge`, with its command) deletes them for good after the retention days."""

from datetime import date, timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.management import CommandError, call_command
from django.utils import timezone

from mirror.models import PfaMirror
from mirror.purge import pfa_deleted_purge
from mirror.selectors import RecordFilters, records_list
from mirror.tests.factories import OrganizationFactory, PfaMirrorFactory

pytestmark = pytest.mark.django_db


def record(organization, pfa_id: str, *, deleted_days_ago: float | None = None, **fields) -> PfaMirror:
    deleted_at = None if deleted_days_ago is None else timezone.now() - timedelta(days=deleted_days_ago)
    return PfaMirrorFactory(organization=organization, pfa_id=pfa_id, deleted_at=deleted_at, **fields)


def stored_ids() -> set[str]:
    return set(PfaMirror.objects.values_list("pfa_id", flat=True))


@pytest.fixture
def rio():
    return OrganizationFactory(code="RIO")


@pytest.fixture
def hou():
    return OrganizationFactory(code="HOU")


# --- reads --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters",
    [{}, {"category": "CRANES"}, {"forecast_from": date(2026, 1, 1)}, {"forecast_to": date(2026, 12, 31)}],
)
def test_records_list_leaves_out_records_deleted_in_pems(rio, filters):
    forecast = {"category": "CRANES", "forecast_start_date": date(2026, 6, 1), "forecast_end_date": date(2026, 9, 1)}
    record(rio, "PFA-LIVE", **forecast)
    record(rio, "PFA-GONE", deleted_days_ago=1, **forecast)
    listed = records_list(organization=rio, user=AnonymousUser(), filters=RecordFilters(**filters))
    assert [row["pfa_id"] for row in listed.records] == ["PFA-LIVE"]


# --- purge --------------------------------------------------------------------------------------


def test_purge_deletes_records_deleted_longer_ago_than_the_retention(rio, settings):
    settings.SYNC_DELETED_RETENTION_DAYS = 30
    record(rio, "PFA-LIVE")
    record(rio, "PFA-RECENT", deleted_days_ago=29)
    record(rio, "PFA-OLD", deleted_days_ago=31)
    record(rio, "PFA-OLDER", deleted_days_ago=400)
    assert pfa_deleted_purge() == 2
    assert stored_ids() == {"PFA-LIVE", "PFA-RECENT"}
    assert pfa_deleted_purge() == 0


def test_purge_takes_the_retention_given(rio):
    record(rio, "PFA-LIVE")
    record(rio, "PFA-RECENT", deleted_days_ago=0.5)
    record(rio, "PFA-OLD", deleted_days_ago=3)
    assert pfa_deleted_purge(retention_days=2) == 1
    assert pfa_deleted_purge(retention_days=0) == 1
    assert stored_ids() == {"PFA-LIVE"}
    with pytest.raises(ValueError, match="negative"):
        pfa_deleted_purge(retention_days=-1)


def test_purge_of_one_organization_leaves_the_others(rio, hou):
    record(rio, "PFA-RIO", deleted_days_ago=90)
    record(hou, "PFA-HOU", deleted_days_ago=90)
    assert pfa_deleted_purge(organization=rio) == 1
    assert stored_ids() == {"PFA-HOU"}


def test_purge_larger_than_one_batch_purges_every_record(rio, settings):
    settings.SYNC_PURGE_BATCH_SIZE = 2
    for n in range(5):
        record(rio, f"PFA-{n}", deleted_days_ago=90)
    record(rio, "PFA-LIVE")
    assert pfa_deleted_purge() == 5
    assert stored_ids() == {"PFA-LIVE"}


def test_purge_deleted_command_purges_the_organizations_named(rio, hou, capsys):
    record(rio, "PFA-RIO", deleted_days_ago=5)
    record(hou, "PFA-HOU", deleted_days_ago=5)
    call_command("purge_deleted", "--org", "rio", "--days", "3")
    assert "Purged 1 records" in capsys.readouterr().out
    assert stored_ids() == {"PFA-HOU"}
    call_command("purge_deleted", "--days", "3")
    assert "Purged 1 records" in capsys.readouterr().out
    assert stored_ids() == set()


def test_purge_deleted_command_refuses_bad_input(rio):
    record(rio, "PFA-RIO", deleted_days_ago=5)
    with pytest.raises(CommandError, match="NOPE"):
        call_command("purge_deleted", "--org", "RIO", "--org", "NOPE", "--days", "0")
    with pytest.raises(CommandError, match="negative"):
        call_command("purge_deleted", "--days", "-1")
    assert stored_ids() == {"PFA-RIO"}
