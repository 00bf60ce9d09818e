"""A modification's states: the table of allowed transitions, walked, and the one way through it."""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from mirror import delta
from mirror.models import ModificationStateChanged, PfaMirror, PfaModification, TransitionNotAllowed
from mirror.purge import pfa_deleted_purge
from mirror.tests.factories import OrganizationFactory, mirror_record

pytestmark = pytest.mark.django_db(transaction=False)

State = PfaModification.State
ALLOWED = [(source, target) for source, targets in PfaModification.TRANSITIONS.items() for target in targets]
REFUSED = [(source, target) for source in State for target in State if (source, target) not in ALLOWED]


@pytest.fixture
def rio():
    return OrganizationFactory(code="RIO")


@pytest.fixture
def ann():
    return User.objects.create_user("ann")


def modification_in(organization, author, state: str, pfa_id: str = "P1") -> PfaModification:
    return PfaModification.objects.create(
        organization=organization, pfa_id=pfa_id, author=author, state=state, base_version=1, changes={"dor": "X"}
    )


def test_the_table_names_every_state_and_ends_in_the_terminal_ones():
    assert set(PfaModification.TRANSITIONS) == set(State)
    for state in PfaModification.TERMINAL_STATES:
        assert PfaModification.TRANSITIONS[state] == ()
    # From every state that is not terminal, some path leads to a terminal one.
    for state in set(State) - set(PfaModification.TERMINAL_STATES):
        reached, frontier = set(), {state}
        while frontier:
            reached |= frontier
            frontier = {target for source in frontier for target in PfaModification.TRANSITIONS[source]} - reached
        assert reached & set(PfaModification.TERMINAL_STATES), state


@pytest.mark.parametrize(("source", "target"), ALLOWED)
def test_an_allowed_transition_moves_the_modification(rio, ann, source, target):
    modification = modification_in(rio, ann, source)
    before = modification.updated_at
    modification.transition(from_states=[source], to_state=target, error_message="why")
    stored = PfaModification.objects.get(pk=modification.pk)
    assert (stored.state, stored.error_message) == (target, "why")
    assert (modification.state, modification.error_message) == (target, "why")
    assert stored.updated_at >= before and modification.updated_at == stored.updated_at
    # `finished_at` follows the state: set when it ends (or waits for a person), cleared otherwise.
    assert (stored.finished_at is not None) == (target in PfaModification.ENDED_STATES)
    assert modification.finished_at == stored.finished_at


@pytest.mark.parametrize(("source", "target"), REFUSED)
def test_any_other_transition_is_refused(rio, ann, source, target):
    modification = modification_in(rio, ann, source)
    with pytest.raises(TransitionNotAllowed):
        modification.transition(from_states=[source], to_state=target)
    with pytest.raises(TransitionNotAllowed):
        PfaModification.objects.filter(pk=modification.pk).transition(from_states=[source], to_state=target)
    assert PfaModification.objects.get(pk=modification.pk).state == source
    assert modification.state == source


def test_a_transition_from_a_state_the_modification_has_left_changes_nothing(rio, ann):
    modification = modification_in(rio, ann, State.WRITING)
    PfaModification.objects.filter(pk=modification.pk).transition(
        from_states=[State.WRITING], to_state=State.FAILED, error_message="purged"
    )
    # `modification` still says writing: the row says otherwise, and wins.
    with pytest.raises(ModificationStateChanged):
        modification.transition(from_states=[State.WRITING], to_state=State.WRITTEN, written_record_id=9)
    stored = PfaModification.objects.get(pk=modification.pk)
    assert (stored.state, stored.error_message, stored.written_record_id) == (State.FAILED, "purged", None)
    assert (modification.state, modification.written_record_id) == (State.WRITING, None)  # memory untouched


def test_a_bulk_transition_moves_only_the_rows_in_its_states_and_counts_them(rio, ann):
    drafts = [modification_in(rio, ann, State.DRAFT, pfa_id=f"P{n}") for n in range(3)]
    committed = modification_in(rio, ann, State.COMMITTED, pfa_id="P9")
    moved = PfaModification.objects.filter(organization=rio).transition(
        from_states=[State.DRAFT], to_state=State.DISCARDED
    )
    assert moved == 3
    assert set(PfaModification.objects.filter(pk__in=[d.pk for d in drafts]).values_list("state", flat=True)) == {
        State.DISCARDED
    }
    assert PfaModification.objects.get(pk=committed.pk).state == State.COMMITTED


def test_a_held_edit_is_not_taken_for_writing_in_memory_either(rio, ann):
    mirror_record(rio, "P1")
    modification = modification_in(rio, ann, State.COMMITTED)
    PfaMirror.objects.update(deleted_at=timezone.now())
    assert delta.modification_writing(modification) is False
    assert modification.state == State.COMMITTED
    PfaMirror.objects.update(deleted_at=None)  # found again by a read
    assert delta.modification_writing(modification) is True
    assert PfaModification.objects.get(pk=modification.pk).state == modification.state == State.WRITING


def test_an_edit_failed_by_a_purge_while_it_was_written_stays_failed(rio, ann):
    mirror_record(rio, "P1")
    modification = modification_in(rio, ann, State.COMMITTED)
    assert delta.modification_writing(modification)
    PfaMirror.objects.update(deleted_at=timezone.now() - timedelta(days=400))
    pfa_deleted_purge(organization=rio, retention_days=30)
    with pytest.raises(ModificationStateChanged):
        delta.modification_written(modification, record_id=12)
    assert delta.modification_requeue(modification) is False
    stored = PfaModification.objects.get(pk=modification.pk)
    assert stored.state == State.FAILED and "purged" in stored.error_message
    assert stored.written_record_id is None


def test_a_conflict_resolved_by_someone_else_first_is_not_resolved_again(rio, ann):
    mirror_record(rio, "P1")
    conflict = modification_in(rio, ann, State.CONFLICT)
    stale = PfaModification.objects.get(pk=conflict.pk)
    delta.conflict_resolve(modification=conflict, user=ann, resolution=delta.Resolution.TAKE_PEMS)
    with pytest.raises(delta.NotInConflict):
        delta.conflict_resolve(modification=stale, user=ann, resolution=delta.Resolution.KEEP_MINE)
    assert PfaModification.objects.get(pk=conflict.pk).state == State.DISCARDED
