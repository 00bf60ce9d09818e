"""The records list against its definition: on random data with several planners' committed edits
and drafts, every filter, ordering and page size gives what the view `pfa_merged_live` (with the
caller's drafts on top) holds; and fixed answers of the list and the KPIs on one seeded world."""

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User

from mirror import delta
from mirror.materialized import views_refresh
from mirror.models import PfaMergedLive, PfaMirror, PfaOverlay
from mirror.selectors import RECORD_COLUMNS, RECORD_ORDERINGS, RecordFilters, kpis_get, records_count, records_list
from mirror.tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

CATEGORIES = ["CRANES", "TRUCKS", "LIFTS"]


@pytest.fixture
def world():
    rng = random.Random(5)
    rio = OrganizationFactory(code="RIO")
    other = OrganizationFactory(code="HOU")
    for organization, count in ((rio, 60), (other, 5)):
        PfaMirror.objects.bulk_create(
            PfaMirror(
                organization=organization,
                pfa_id=f"P{n:03d}",
                category=rng.choice(CATEGORIES),
                source=rng.choice(["Rental", "Purchase"]),
                equipment_tag=f"TAG-{n % 7}",
                monthly_rate=Decimal(rng.randrange(100, 900)) if rng.random() > 0.1 else None,
                forecast_start_date=date(2027, 1, 1) + timedelta(days=rng.randrange(60)) if n % 9 else None,
                forecast_end_date=date(2027, 4, 1) + timedelta(days=rng.randrange(60)),
                data={"pfs_id": f"P{n:03d}"},
                content_hash="0" * 32,
                deleted_at=None if n % 17 else datetime(2026, 1, 1, tzinfo=UTC),
            )
            for n in range(count)
        )
    users = [User.objects.create_user(name) for name in ("ann", "bob", "cyd")]
    live = list(PfaMirror.objects.live().filter(organization=rio).order_by("pfa_id").values_list("pfa_id", flat=True))
    for user in users:
        for pfa_id in rng.sample(live, 12):
            values = {"category": rng.choice(CATEGORIES), "monthly_rate": str(rng.randrange(1000, 2000))}
            if rng.random() < 0.5:
                values["forecast_start_date"] = str(date(2027, 2, 1) + timedelta(days=rng.randrange(30)))
            current = PfaMirror.objects.get(organization=rio, pfa_id=pfa_id)
            values = {name: value for name, value in values.items() if str(getattr(current, name)) != value}
            delta.draft_save(organization=rio, pfa_id=pfa_id, user=user, values=values)
        if user.username != "ann":
            delta.drafts_commit(organization=rio, user=user)
    return rio, users


def expected(organization, user, filters: RecordFilters, ordering: str) -> list[str]:
    """The list by its definition: the view's rows, the user's draft rows in place of theirs."""
    rows = {row.pfa_id: row for row in PfaMergedLive.objects.filter(organization=organization)}
    rows.update({row.pfa_id: row for row in PfaOverlay.objects.filter(organization=organization, viewer=user)})
    chosen = [
        row
        for row in rows.values()
        if (filters.category is None or row.category == filters.category)
        and (
            filters.forecast_from is None or (row.forecast_end_date and row.forecast_end_date >= filters.forecast_from)
        )
        and (
            filters.forecast_to is None or (row.forecast_start_date and row.forecast_start_date <= filters.forecast_to)
        )
        and (filters.search is None or filters.search.lower() in (row.pfa_id + row.equipment_tag).lower())
    ]
    field, descending = ordering.lstrip("-"), ordering.startswith("-")
    if field == "pfa_id":
        return sorted((row.pfa_id for row in chosen), reverse=descending)
    empty = [row.pfa_id for row in chosen if getattr(row, field) is None]
    present = sorted((row for row in chosen if getattr(row, field) is not None), key=lambda row: row.pfa_id)
    present.sort(key=lambda row: getattr(row, field), reverse=descending)
    ordered = [row.pfa_id for row in present]
    return sorted(empty) + ordered if descending else ordered + sorted(empty)


def paged(organization, user, filters, ordering, limit) -> list[str]:
    seen, after = [], None
    while True:
        page = records_list(
            organization=organization, user=user, filters=filters, ordering=ordering, after=after, limit=limit
        )
        seen += [row["pfa_id"] for row in page.records]
        if page.next_cursor is None:
            return seen
        after = page.next_cursor


@pytest.mark.parametrize(
    "ordering", ["pfa_id", "-pfa_id", "forecast_start_date", "-forecast_start_date", "-monthly_rate"]
)
def test_the_list_is_the_merged_view_with_the_callers_drafts(world, ordering):
    rio, users = world
    filter_sets = [
        RecordFilters(),
        RecordFilters(category="TRUCKS"),
        RecordFilters(category="CRANES", forecast_from=date(2027, 4, 20), forecast_to=date(2027, 2, 10)),
        RecordFilters(search="tag-3"),
    ]
    for user in users:
        for filters in filter_sets:
            want = expected(rio, user, filters, ordering)
            assert paged(rio, user, filters, ordering, limit=7) == want, (user, filters)
            assert records_count(organization=rio, user=user, filters=filters) == len(want), (user, filters)
    assert set(RECORD_ORDERINGS) >= {ordering.lstrip("-")}


def test_fixed_answers_of_the_list_and_the_kpis(world):
    rio, (ann, bob, _) = world
    first = records_list(organization=rio, user=ann, filters=RecordFilters(category="LIFTS"), limit=3).records
    assert [(row["pfa_id"], row["category"], row["monthly_rate"]) for row in first] == [
        ("P008", "LIFTS", Decimal("1280.0000")),
        ("P011", "LIFTS", Decimal("824.0000")),
        ("P020", "LIFTS", Decimal("1901.0000")),
    ]
    views_refresh()  # the KPIs come from the materialized views as of their last refresh
    kpis = kpis_get(organization=rio)
    summary = {(entry.pop("category"), entry.pop("source")): entry for entry in kpis.summary}
    assert {key: entry["record_count"] for key, entry in summary.items()} == {
        ("CRANES", "Purchase"): 6,
        ("CRANES", "Rental"): 8,
        ("LIFTS", "Purchase"): 7,
        ("LIFTS", "Rental"): 8,
        ("TRUCKS", "Purchase"): 17,
        ("TRUCKS", "Rental"): 10,
    }
    assert summary[("TRUCKS", "Rental")]["monthly_rate_sum"] == Decimal("10949.00")
    assert [summary[(category, "Rental")]["forecast_cost"] for category in CATEGORIES] == [
        Decimal("13529.95"),
        Decimal("29909.82"),
        Decimal("17881.92"),
    ]
    assert (kpis.timeline["forecast_start"], kpis.timeline["forecast_end"]) == (date(2027, 1, 4), date(2027, 5, 30))


def test_a_listed_record_has_every_column_as_the_model_types_it(world):
    rio, (ann, _, _) = world
    stored = PfaMirror.objects.live().filter(organization=rio).exclude(pfa_id__in=PfaOverlay.objects.values("pfa_id"))
    stored = stored.order_by("pfa_id").first()
    PfaMirror.objects.filter(pk=stored.pk).update(pems_last_modified=datetime(2026, 5, 1, 12, 30, tzinfo=UTC))
    stored.refresh_from_db()
    (listed,) = records_list(organization=rio, user=ann, filters=RecordFilters(pfa_id=stored.pfa_id)).records
    assert listed == {**{name: getattr(stored, name) for name in RECORD_COLUMNS}, "changes": {}, "conflict_ids": []}
    assert "data" not in listed and "content_hash" not in listed
