"""Edits are what PEMS will keep (its save rules checked at the door), "unchanged" is judged against
the record the caller sees, and one user's simultaneous saves of a record end in one draft."""

import threading
import time
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st
from rest_framework.test import APIClient

from mirror import delta
from mirror.codec import grid_text
from mirror.models import PfaMergedLive, PfaMirror, PfaModification, PfaOverlay
from mirror.purge import pfa_deleted_purge
from mirror.save_rules import value_kept
from mirror.selectors import RecordFilters, records_list
from mirror.simulator import PemsSimulator
from mirror.store import pfa_records_mark_deleted
from mirror.tests.factories import OrganizationFactory, mirror_record

State = PfaModification.State


@pytest.fixture
def rio(db):
    organization = OrganizationFactory(code="RIO")
    mirror_record(organization, "P1", plan_start_date=date(2027, 1, 1), plan_end_date=date(2027, 6, 1))
    return organization


@pytest.fixture
def ann(db):
    return User.objects.create_user("ann")


@pytest.fixture
def bob(db):
    return User.objects.create_user("bob")


def save(organization, user, values: dict) -> PfaModification:
    return delta.draft_save(organization=organization, pfa_id="P1", user=user, values=values)


def commit(organization, user, values: dict) -> None:
    save(organization, user, values)
    delta.drafts_commit(organization=organization, user=user)


def seen_by(organization, user) -> dict:
    page = records_list(organization=organization, user=user, filters=RecordFilters(), limit=10)
    return {row["pfa_id"]: row for row in page.records}["P1"]


# --- edits are what PEMS will keep -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"monthly_rate": "5200.1299"}, "monthly_rate", "2 decimal places"),
        ({"purchase_price": "0.125"}, "purchase_price", "2 decimal places"),
        ({"monthly_rate": "-0.01"}, "monthly_rate", "negative"),
        ({"purchase_price": "-10"}, "purchase_price", "negative"),
        ({"category": "C" * 31}, "category", "30 characters"),
        ({"project_code": "P" * 31}, "project_code", "30 characters"),
        ({"model": "M" * 81}, "model", "80 characters"),
        ({"plan_end_date": "2026-12-31"}, "plan_end_date", "before its start"),
        ({"plan_start_date": "2027-06-02"}, "plan_start_date", "before its start"),
        ({"forecast_start_date": "2027-03-02"}, "forecast_start_date", "before its start"),
        ({"actual_start_date": "2027-02-01", "actual_end_date": "2027-01-31"}, "actual_end_date", "before its start"),
    ],
)
def test_a_value_pems_would_not_keep_is_refused_naming_the_field_and_the_rule(rio, ann, values, field, message):
    with pytest.raises(ValidationError) as refused:
        save(rio, ann, values)
    assert message in " ".join(refused.value.message_dict[field])
    assert not PfaModification.objects.exists()


def test_text_is_trimmed_and_values_pems_keeps_are_taken(rio, ann):
    draft = save(
        rio,
        ann,
        {"model": "  Liebherr  ", "category": "C" * 30, "monthly_rate": "5200.13", "plan_end_date": "2027-01-01"},
    )
    assert draft.changes["model"] == "Liebherr" and draft.changes["category"] == "C" * 30
    assert Decimal(draft.changes["monthly_rate"]) == Decimal("5200.13")
    with pytest.raises(ValidationError, match="nothing to change"):
        save(rio, ann, {"source": " Rental "})  # trimmed, it is what the user sees already


def test_dates_are_checked_on_the_record_the_caller_sees(rio, ann, bob):
    commit(rio, bob, {"plan_start_date": "2027-05-01"})  # bob's committed start is later than PEMS's
    with pytest.raises(ValidationError) as refused:
        save(rio, ann, {"plan_end_date": "2027-04-01"})  # after PEMS's start, before the one ann sees
    assert "plan_end_date" in refused.value.message_dict


def test_a_resolution_is_checked_against_the_save_rules(rio, ann):
    conflict = PfaModification.objects.create(
        organization=rio, pfa_id="P1", author=ann, state=State.CONFLICT, base_version=1, changes={"dor": "X"}
    )
    with pytest.raises(ValidationError) as refused:
        delta.conflict_resolve(modification=conflict, user=ann, resolution="merge", values={"monthly_rate": "-1"})
    assert "monthly_rate" in refused.value.message_dict


def test_the_records_api_names_the_field_in_camel_case_and_the_rule(rio, ann):
    ann.organizations.add(rio)
    ann.user_permissions.add(Permission.objects.get(codename="edit_pfa_records"))
    client = APIClient()
    client.force_authenticate(User.objects.get(pk=ann.pk))
    response = client.patch("/api/organizations/RIO/records/P1", {"monthlyRate": "5200.1299"}, format="json")
    assert response.status_code == 400
    assert "2 decimal places" in " ".join(response.json()["fields"]["monthlyRate"])


# --- "unchanged" means unchanged for the caller ----------------------------------------------------------


def test_setting_pems_value_while_a_committed_edit_sets_another_is_an_edit(rio, ann, bob):
    commit(rio, ann, {"monthly_rate": "2000"})
    draft = save(rio, bob, {"monthly_rate": "1000"})  # PEMS's value: reverses ann's edit
    assert draft.state == State.DRAFT and Decimal(draft.changes["monthly_rate"]) == Decimal("1000")
    assert seen_by(rio, bob)["monthly_rate"] == Decimal("1000")
    assert seen_by(rio, bob)["changes"]["monthly_rate"]["by"] == "bob"
    delta.drafts_commit(organization=rio, user=bob)
    assert PfaMergedLive.objects.get(pfa_id="P1").monthly_rate == Decimal("1000")  # the later commit wins
    assert seen_by(rio, ann)["changes"]["monthly_rate"] == {
        "pems": "1000.0000",
        "value": "1000.0000",
        "state": "committed",
        "by": "bob",
    }


def test_pems_value_after_an_intermediate_one_stays_in_the_draft(rio, ann, bob):
    commit(rio, ann, {"monthly_rate": "2000"})
    save(rio, bob, {"monthly_rate": "1500"})
    draft = save(rio, bob, {"monthly_rate": "1000"})
    assert draft.state == State.DRAFT and Decimal(draft.changes["monthly_rate"]) == Decimal("1000")
    assert seen_by(rio, bob)["monthly_rate"] == Decimal("1000")


def test_setting_a_field_back_to_what_others_see_leaves_the_draft(rio, ann, bob):
    commit(rio, ann, {"monthly_rate": "2000"})
    save(rio, bob, {"monthly_rate": "1500", "dor": "BEO"})
    draft = save(rio, bob, {"monthly_rate": "2000"})
    assert draft.changes == {"dor": "BEO"}
    with pytest.raises(ValidationError, match="nothing to change"):
        save(rio, bob, {"monthly_rate": "2000"})


# --- concurrency ---------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_simultaneous_saves_of_one_user_on_one_record_end_in_one_draft(transactional_db):
    rio = OrganizationFactory(code="RIO")
    mirror_record(rio, "P1")
    ann = User.objects.create_user("ann")
    rounds = 8
    for n in range(rounds):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def edit(values: dict, barrier=barrier, errors=errors) -> None:
            try:
                barrier.wait(timeout=10)
                delta.draft_save(organization=rio, pfa_id="P1", user=ann, values=values)
            except BaseException as error:  # noqa: BLE001 - reported by the assertion below
                errors.append(error)
            finally:
                connection.close()

        threads = [
            threading.Thread(target=edit, args=({"model": f"M{n}"},)),
            threading.Thread(target=edit, args=({"dor": f"D{n}"},)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == []
        (draft,) = PfaModification.objects.filter(state=State.DRAFT)
        assert (draft.changes["model"], draft.changes["dor"]) == (f"M{n}", f"D{n}")


def _wait_until_someone_waits_for_a_lock(timeout: float = 20) -> None:
    """Return once another backend of this database waits for a lock (the interleaving under test)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError("no transaction came to wait for the lock")


def _in_thread(target) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as error:  # noqa: BLE001 - reported by the caller's assertion
            errors.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


@pytest.mark.django_db(transaction=True)
def test_a_commit_racing_a_deletion_ends_held_and_the_purge_fails_it(transactional_db):
    rio = OrganizationFactory(code="RIO")
    mirror_record(rio, "P1")
    ann = User.objects.create_user("ann")
    delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"dor": "RACE"})
    marked, release = threading.Event(), threading.Event()

    def deletion() -> None:  # a read's deletion step, held open until the commit waits for it
        with transaction.atomic():
            pfa_records_mark_deleted(organization_id=rio.pk, pfa_ids=["P1"], deleted_at=timezone.now())
            delta.modifications_hold_deleted(organization_id=rio.pk, pfa_ids=["P1"])
            marked.set()
            assert release.wait(timeout=30)

    deleting, deletion_errors = _in_thread(deletion)
    assert marked.wait(timeout=30)
    committing, commit_errors = _in_thread(lambda: delta.drafts_commit(organization=rio, user=ann))
    _wait_until_someone_waits_for_a_lock()
    release.set()
    for thread in (deleting, committing):
        thread.join(timeout=30)
    assert deletion_errors == [] and commit_errors == []
    modification = PfaModification.objects.get()
    # Held: committed on a deleted record, in no view and in no write run.
    assert modification.state == State.COMMITTED
    assert not PfaModification.objects.to_write().exists()
    assert not PfaOverlay.objects.exists() and not PfaMergedLive.objects.filter(pfa_id="P1").exists()
    PfaMirror.objects.update(deleted_at=timezone.now() - timedelta(days=400))
    assert pfa_deleted_purge(organization=rio, retention_days=30) == 1
    modification.refresh_from_db()
    assert modification.state == State.FAILED and "purged" in modification.error_message


@pytest.mark.django_db(transaction=True)
def test_a_commit_racing_the_purge_ends_failed(transactional_db):
    rio = OrganizationFactory(code="RIO")
    mirror_record(rio, "P1")
    ann = User.objects.create_user("ann")
    delta.draft_save(organization=rio, pfa_id="P1", user=ann, values={"dor": "RACE"})
    PfaMirror.objects.update(deleted_at=timezone.now() - timedelta(days=400))
    committed, release = threading.Event(), threading.Event()

    def commit() -> None:  # a commit whose transaction is still open when the purge comes
        with transaction.atomic():
            assert delta.drafts_commit(organization=rio, user=ann) == 1
            committed.set()
            assert release.wait(timeout=30)

    committing, commit_errors = _in_thread(commit)
    assert committed.wait(timeout=30)
    purging, purge_errors = _in_thread(lambda: pfa_deleted_purge(organization=rio, retention_days=30))
    _wait_until_someone_waits_for_a_lock()
    release.set()
    for thread in (committing, purging):
        thread.join(timeout=30)
    assert commit_errors == [] and purge_errors == []
    assert not PfaMirror.objects.exists()
    assert PfaModification.objects.get().state == State.FAILED


# --- one rule for both sides -----------------------------------------------------------------------------


# One simulated tenant for every example: each saves over the record the one before saved.
HELD = PemsSimulator(orgs={"RIO": 1}, seed=1)


@given(
    value=st.decimals(min_value=-(10**13), max_value=10**13, places=4, allow_nan=False, allow_infinity=False),
    text=st.text(alphabet=" \tabcXYZ-7", max_size=12),
)
def test_what_pfasync_calls_kept_is_what_the_simulated_pems_keeps(value, text):
    """Any value sent in the grid's format is held by PEMS (the simulator) as `value_kept` says. The
    rental may not be negative (PEMS refuses it), so its size is what is sent."""
    value = abs(value)
    key = "PFA-0000001%23RIO"
    recordid = HELD.get_record(key)["PFA"]["recordid"]
    change = {"pfs_f_rental": grid_text(value), "pfs_f_model": grid_text(text), "recordid": recordid}
    held = HELD.patch_record(key, {"PFA": change})["PFA"]
    assert Decimal(held["pfs_f_rental"].replace(",", "")) == value_kept(value)
    assert held["pfs_f_model"] == value_kept(text)
