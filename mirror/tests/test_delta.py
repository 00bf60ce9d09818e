"""The delta layer: drafts, commits and discards, the overlay and the merged view they feed."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.utils import timezone

from mirror import delta
from mirror.models import PfaMergedLive, PfaMirror, PfaModification, PfaOverlay, ViewRefresh
from mirror.purge import pfa_deleted_purge
from mirror.selectors import RecordFilters, kpis_get, record_get, records_list
from mirror.tests.factories import OrganizationFactory, mirror_record

pytestmark = pytest.mark.django_db(transaction=False)

State = PfaModification.State


@pytest.fixture
def rio():
    return OrganizationFactory(code="RIO")


@pytest.fixture
def ann():
    return User.objects.create_user("ann")


@pytest.fixture
def bob():
    return User.objects.create_user("bob")


def merged(organization, pfa_id):
    return PfaMergedLive.objects.get(organization=organization, pfa_id=pfa_id)


def listed(organization, user, **filters):
    page = records_list(organization=organization, user=user, filters=RecordFilters(**filters), limit=500)
    return {row["pfa_id"]: row for row in page.records}


# --- drafts ---------------------------------------------------------------------------------------


def test_a_draft_captures_its_base_and_merges_later_edits(rio, ann):
    row = mirror_record(rio, "P1")
    delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"monthly_rate": "1200.5"}, change_reason="longer")
    PfaMirror.objects.filter(pk=row.pk).update(version=2, pems_record_id=8, category="TRUCKS")
    draft = delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"forecast_end_date": "2027-05-01"})
    assert PfaModification.objects.count() == 1
    assert draft.changes == {"monthly_rate": "1200.5000", "forecast_end_date": "2027-05-01"}
    # The base stays the one from when editing began; a field first edited later takes the value then.
    assert (draft.base_version, draft.base_record_id) == (1, 7)
    assert draft.base_values == {"monthly_rate": "1000.0000", "forecast_end_date": "2027-03-01"}
    assert draft.change_reason == "longer"


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"no_such_field": "x"}, "no_such_field", "Not a field"),
        ({"pems_record_id": 9}, "pems_record_id", "Cannot be edited"),
        ({"pfa_id": "P9"}, "pfa_id", "Cannot be edited"),
        ({"monthly_rate": "12,5"}, "monthly_rate", "number"),
        ({"monthly_rate": "123456789012345.1"}, "monthly_rate", "digits"),
        ({"monthly_rate": "1.00001"}, "monthly_rate", "decimal places"),
        ({"monthly_rate": 1.5}, "monthly_rate", "decimal string"),
        ({"forecast_start_date": "01/02/2027"}, "forecast_start_date", "YYYY-MM-DD"),
        ({"forecast_start_date": "2027-02-30"}, "forecast_start_date", "invalid date"),
        ({"is_discontinued": "yes"}, "is_discontinued", "true or false"),
        ({"is_discontinued": None}, "is_discontinued", "null"),
        ({"category": 5}, "category", "string"),
        ({"category": "CRANES"}, "category", "nothing to change"),
    ],
)
def test_a_bad_edit_is_refused_naming_its_field(rio, ann, values, field, message):
    mirror_record(rio, "P1")
    with pytest.raises(ValidationError) as refused:
        delta.draft_save(organization=rio, pfa_id="P1", user=ann, values=values)
    assert field in refused.value.message_dict
    assert message.lower() in " ".join(refused.value.message_dict[field]).lower()
    assert not PfaModification.objects.exists()


def test_editing_a_record_deleted_in_pems_is_refused(rio, ann):
    mirror_record(rio, "P1", deleted_at=timezone.now())
    with pytest.raises(ValidationError, match="deleted in PEMS"):
        delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"category": "TRUCKS"})


def test_editing_an_unknown_record_is_not_found(rio, ann):
    with pytest.raises(PfaMirror.DoesNotExist):
        delta.draft_save(organization=rio, pfa_id="P404", user=ann, values={"category": "TRUCKS"})


# --- the merged view ------------------------------------------------------------------------------


def test_drafts_are_seen_by_their_author_only(rio, ann, bob):
    mirror_record(rio, "P1")
    delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"category": "TRUCKS"})
    assert merged(rio, "P1").category == "CRANES"
    assert listed(rio, ann)["P1"]["category"] == "TRUCKS"
    assert listed(rio, bob)["P1"]["category"] == "CRANES"
    assert listed(rio, ann)["P1"]["changes"]["category"] == {
        "pems": "CRANES",
        "value": "TRUCKS",
        "state": "draft",
        "by": "ann",
    }
    assert listed(rio, bob)["P1"]["changes"] == {}
    assert listed(rio, ann, category="TRUCKS").keys() == {"P1"}
    assert listed(rio, bob, category="TRUCKS") == {}


def test_committed_edits_apply_in_commit_order_for_everyone(rio, ann, bob):
    mirror_record(rio, "P1")
    mirror_record(rio, "P2")
    delta.draft_save(organization=rio, pfa_id="P1", user=bob, values={"monthly_rate": "3000", "category": "LIFTS"})
    delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"monthly_rate": "2000"})
    assert delta.drafts_commit(organization=rio, user=ann) == 1
    assert delta.drafts_commit(organization=rio, user=bob) == 1
    view = merged(rio, "P1")
    # Bob committed last: his rate wins; Ann's and Bob's fields both apply.
    assert (view.monthly_rate, view.category) == (Decimal("3000.0000"), "LIFTS")
    assert merged(rio, "P2").monthly_rate == Decimal("1000.0000")
    assert PfaMergedLive.objects.filter(organization=rio).count() == 2
    changes = listed(rio, ann)["P1"]["changes"]
    assert changes["monthly_rate"] == {"pems": "1000.0000", "value": "3000.0000", "state": "committed", "by": "bob"}
    order = list(PfaModification.objects.shared().in_commit_order().values_list("author__username", flat=True))
    assert order == ["ann", "bob"]


def test_a_sync_that_changes_a_committed_record_keeps_the_edit_on_top(rio, ann):
    row = mirror_record(rio, "P1")
    delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"monthly_rate": "2000"})
    delta.drafts_commit(organization=rio, user=ann)
    PfaMirror.objects.filter(pk=row.pk).update(category="TRUCKS", version=2)
    delta.overlay_refresh(organization_id=rio.pk, pfa_ids=["P1"])  # what the engine does per page
    view = merged(rio, "P1")
    assert (view.category, view.monthly_rate, view.version) == ("TRUCKS", Decimal("2000.0000"), 2)


def test_discarded_drafts_leave_the_view_and_stay_as_rows(rio, ann):
    mirror_record(rio, "P1")
    mirror_record(rio, "P2")
    delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"category": "TRUCKS"})
    delta.draft_save(organization=rio, pfa_id="P2", user=ann, values={"category": "TRUCKS"})
    delta.draft_discard(organization=rio, user=ann, pfa_id="P1")
    assert listed(rio, ann)["P1"]["category"] == "CRANES"
    assert delta.drafts_discard(organization=rio, user=ann) == 1
    assert set(PfaModification.objects.values_list("state", flat=True)) == {State.DISCARDED}
    assert not PfaOverlay.objects.exists()
    with pytest.raises(delta.NoDraft):
        delta.draft_discard(organization=rio, user=ann, pfa_id="P1")


def test_deletion_in_pems_holds_open_modifications_and_hides_the_record(rio, ann, bob):
    mirror_record(rio, "P1")
    delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"category": "TRUCKS"})
    delta.draft_save(organization=rio, pfa_id="P1", user=bob, values={"category": "LIFTS"})
    delta.drafts_commit(organization=rio, user=bob)
    PfaMirror.objects.filter(pfa_id="P1").update(deleted_at=timezone.now())
    delta.modifications_hold_deleted(organization_id=rio.pk, pfa_ids=["P1"])
    # Held: the states stay, the record and its edits leave every view, the write run passes them by.
    assert sorted(PfaModification.objects.values_list("state", flat=True)) == [State.COMMITTED, State.DRAFT]
    assert listed(rio, ann) == {} and listed(rio, bob) == {}
    assert not PfaOverlay.objects.exists()
    assert not PfaModification.objects.to_write().exists()


def test_a_held_edit_is_open_again_when_its_record_comes_back(rio, ann):
    mirror_record(rio, "P1")
    delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"category": "TRUCKS"})
    delta.drafts_commit(organization=rio, user=ann)
    PfaMirror.objects.filter(pfa_id="P1").update(deleted_at=timezone.now())
    delta.modifications_hold_deleted(organization_id=rio.pk, pfa_ids=["P1"])
    # A later read finds it again (the upsert clears deleted_at, then refreshes the overlay).
    PfaMirror.objects.filter(pfa_id="P1").update(deleted_at=None)
    delta.overlay_refresh(organization_id=rio.pk, pfa_ids=["P1"])
    assert merged(rio, "P1").category == "TRUCKS"
    assert PfaModification.objects.to_write().get().state == State.COMMITTED


def test_the_purge_fails_held_edits_with_their_reason_and_keeps_the_others(rio, ann):
    mirror_record(rio, "P1")
    mirror_record(rio, "P2")
    for key in ("P1", "P2"):
        delta.draft_save(organization=rio, pfa_id=key, user=ann, values={"category": "TRUCKS"})
    delta.drafts_commit(organization=rio, user=ann, pfa_ids=["P1"])
    long_ago = timezone.now() - timedelta(days=400)
    PfaMirror.objects.update(deleted_at=long_ago)
    PfaMirror.objects.filter(pfa_id="P2").update(deleted_at=None)  # found again: kept
    assert pfa_deleted_purge(organization=rio, retention_days=30) == 1
    failed = PfaModification.objects.get(pfa_id="P1")
    assert failed.state == State.FAILED and failed.finished_at is not None
    assert "deleted in PEMS" in failed.error_message and "purged" in failed.error_message
    assert PfaModification.objects.get(pfa_id="P2").state == State.DRAFT


def test_state_filter_and_cursor_pagination(rio, ann, bob):
    for n in range(7):
        mirror_record(rio, f"P{n}", forecast_start_date=date(2027, 1, 1) + timedelta(days=n % 3) if n != 5 else None)
    delta.draft_save(organization=rio, pfa_id="P2", user=ann, values={"category": "TRUCKS"})
    delta.draft_save(organization=rio, pfa_id="P3", user=bob, values={"category": "TRUCKS"})
    delta.drafts_commit(organization=rio, user=bob)
    assert listed(rio, ann, state="draft").keys() == {"P2"}
    assert listed(rio, bob, state="draft") == {}
    assert listed(rio, ann, state="committed").keys() == {"P3"}
    for ordering in ("pfa_id", "-pfa_id", "forecast_start_date", "-forecast_start_date"):
        seen, after = [], None
        while True:
            page = records_list(
                organization=rio, user=ann, filters=RecordFilters(), ordering=ordering, after=after, limit=2
            )
            seen += [row["pfa_id"] for row in page.records]
            if page.next_cursor is None:
                break
            after = page.next_cursor
        whole = records_list(organization=rio, user=ann, filters=RecordFilters(), ordering=ordering, limit=100)
        assert seen == [row["pfa_id"] for row in whole.records]
        assert sorted(seen) == [f"P{n}" for n in range(7)]
    by_date = [
        r["pfa_id"]
        for r in records_list(
            organization=rio, user=ann, filters=RecordFilters(), ordering="forecast_start_date"
        ).records
    ]
    assert by_date[-1] == "P5"  # empty dates last when ascending
    by_date_desc = [
        r["pfa_id"]
        for r in records_list(
            organization=rio, user=ann, filters=RecordFilters(), ordering="-forecast_start_date"
        ).records
    ]
    assert by_date_desc[0] == "P5"


def test_record_get_shows_own_draft_and_visible_modifications(rio, ann, bob):
    mirror_record(rio, "P1")
    delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"category": "TRUCKS"})
    delta.draft_save(organization=rio, pfa_id="P1", user=bob, values={"dor": "BEO"})
    row, data, modifications = record_get(organization=rio, user=ann, pfa_id="P1")
    assert row["category"] == "TRUCKS" and data == {"pfs_id": "P1"}
    assert [m.author.username for m in modifications] == ["ann"]


# --- KPIs -----------------------------------------------------------------------------------------


def test_kpis_read_the_merged_view(rio, ann):
    from mirror.materialized import views_refresh

    mirror_record(
        rio,
        "P1",
        monthly_rate=Decimal("1000"),
        forecast_start_date=date(2027, 1, 1),
        forecast_end_date=date(2027, 1, 31),
    )
    mirror_record(rio, "P2", source="Purchase", monthly_rate=None, purchase_price=Decimal("5000"))
    delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"monthly_rate": "2000"})
    delta.drafts_commit(organization=rio, user=ann)
    views_refresh()
    kpis = kpis_get(organization=rio)
    by_source = {entry["source"]: entry for entry in kpis.summary}
    assert by_source["Rental"]["monthly_rate_sum"] == Decimal("2000.00")
    # 30 days at 2000 a month of 30.4375 days.
    assert by_source["Rental"]["forecast_cost"] == (Decimal(2000) * 30 / Decimal("30.4375")).quantize(Decimal("0.01"))
    assert by_source["Purchase"]["forecast_cost"] == Decimal("5000.00")
    assert kpis.timeline["forecast_start"] == date(2027, 1, 1)
    assert kpis.timeline["forecast_end"] == date(2027, 3, 1)
    assert ViewRefresh.objects.get().requested >= 1


def test_a_field_set_back_leaves_the_draft_and_an_empty_draft_is_discarded(rio, ann):
    mirror_record(rio, "P1")
    delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"monthly_rate": "1200", "dor": "BEO"})
    draft = delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"monthly_rate": "1000"})
    assert (draft.state, draft.changes, draft.base_values) == (State.DRAFT, {"dor": "BEO"}, {"dor": ""})
    draft = delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"dor": ""})
    assert draft.state == State.DISCARDED and not PfaOverlay.objects.exists()


def test_deletion_in_pems_holds_a_conflict_and_the_purge_ends_it(rio, ann):
    mirror_record(rio, "P1")
    conflict = PfaModification.objects.create(
        organization=rio, pfa_id="P1", author=ann, state=State.CONFLICT, base_version=1, changes={"dor": "X"}
    )
    PfaMirror.objects.update(deleted_at=timezone.now() - timedelta(days=400))
    delta.modifications_hold_deleted(organization_id=rio.pk, pfa_ids=["P1"])
    conflict.refresh_from_db()
    assert conflict.state == State.CONFLICT
    pfa_deleted_purge(organization=rio, retention_days=30)
    conflict.refresh_from_db()
    assert conflict.state == State.FAILED


def test_a_held_edit_is_not_taken_for_writing(rio, ann):
    mirror_record(rio, "P1")
    delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"category": "TRUCKS"})
    delta.drafts_commit(organization=rio, user=ann)
    modification = PfaModification.objects.get()
    PfaMirror.objects.update(deleted_at=timezone.now())  # marked deleted after the run listed it
    assert delta.modification_writing(modification) is False
    assert PfaModification.objects.get().state == State.COMMITTED
