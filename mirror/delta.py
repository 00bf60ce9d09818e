"""The delta layer: planners' drafts, commits and discards, and the overlay that merges them.

A planner's edits to a record collect in one draft (their own, private) until they commit it; a
committed modification is shared and waits to be written to PEMS. `pfa_overlay` holds, for each
record with open modifications, the mirror's row with the committed changes applied in commit
order (the row every reader sees) and one row per draft (what its author sees). Every change of a
modification or of a mirror row calls `overlay_refresh` for its keys, in the same transaction.
Every change of a modification's state is a transition `PfaModification.TRANSITIONS` allows, made
by `PfaModification.transition` (one) or `PfaModificationQuerySet.transition` (many): a checked
compare-and-set, so an act never applies to a modification someone else moved first.
"""

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.dispatch import Signal
from django.utils import timezone

from mirror.codec import value_from_json, value_to_json
from mirror.materialized import views_refresh_request
from mirror.models import (
    EDITABLE_FIELDS,
    PFA_ALIASES,
    ModificationStateChanged,
    Organization,
    PfaMirror,
    PfaModification,
    PfaOverlay,
)
from mirror.save_rules import places_problem, save_problems, text_kept, value_kept

logger = logging.getLogger(__name__)

State = PfaModification.State
# Record columns a planner sees but may not edit.
READ_ONLY_FIELDS = ("pfa_id", "organization", "pems_record_id", "pems_last_modified")


class NoDraft(Exception):
    """The user has no draft of that record."""


def _field(name: str):
    return PfaMirror._meta.get_field(name)


def field_label(name: str) -> str:
    """A record field as people read it (its verbose name: "monthly rate"), for the admin and stored messages."""
    return str(_field(name).verbose_name)


def changes_parse(values: dict[str, Any]) -> dict[str, Any]:
    """Type the edited values by the mirror columns' own rules (the rules PEMS values are typed by on
    the way in), text trimmed as PEMS trims it; ValidationError naming each field that is unknown,
    read-only or invalid, or an amount with more places than PEMS keeps (PEMS would round it, and
    the edit would not be what PEMS holds). The rules that need the whole record are
    `_check_save`'s."""
    errors: dict[str, list[str]] = {}
    typed: dict[str, Any] = {}
    for name, raw in values.items():
        if name in READ_ONLY_FIELDS:
            errors[name] = ["Cannot be edited: it is a key or PEMS bookkeeping."]
            continue
        if name not in EDITABLE_FIELDS:
            errors[name] = ["Not a field of a PFA record."]
            continue
        field = _field(name)
        problem = _type_problem(field, raw)
        if problem:
            errors[name] = [problem]
            continue
        try:
            value = field.clean(raw, None)
        except ValidationError as error:
            errors[name] = error.messages
            continue
        if isinstance(value, str) and "\x00" in value:
            errors[name] = ["Contains a NUL character."]
            continue
        if isinstance(value, Decimal) and (problem := places_problem(value)):
            errors[name] = [problem]
            continue
        typed[name] = text_kept(value) if isinstance(value, str) else value
    if errors:
        raise ValidationError(errors)
    return typed


def _type_problem(field, raw: Any) -> str | None:
    """Why `raw` is not the JSON form the field takes, or None (field.clean() is lenient: it takes
    1 for True and numbers for text)."""
    kind = field.get_internal_type()
    if raw is None:
        return None if field.null else "May not be null."
    if kind == "BooleanField":
        return None if isinstance(raw, bool) else "Must be true or false."
    if kind == "DecimalField":
        return (
            None
            if isinstance(raw, str | int) and not isinstance(raw, bool)
            else 'Must be a decimal string, e.g. "5200.00".'
        )
    if kind == "DateField":
        if not isinstance(raw, str) or len(raw) != 10:
            return "Must be a date as YYYY-MM-DD."
        return None
    return None if isinstance(raw, str) else "Must be a string."


def draft_save(
    *,
    organization: Organization,
    pfa_id: str,
    user,
    values: dict[str, Any],
    change_reason: str | None = None,
) -> PfaModification:
    """Save `values` (field name -> JSON value) into `user`'s draft of the record, creating it.

    A new draft takes the record's version, PEMS recordid and the mirror's values of the changed
    fields as its base; editing again merges into the draft and keeps that base (a field edited
    for the first time later takes the mirror's value then as its base: the value the user saw).
    A change is judged against the record as the user sees it (PEMS's values with the committed
    edits applied): a field set back to that value leaves the draft, a draft left with no field is
    discarded, and setting a field to PEMS's value while a committed edit sets another is a change
    (it reverses that edit, after it). The record as it would be saved must pass PEMS's save rules.
    PfaMirror.DoesNotExist for an unknown record; ValidationError for a deleted record, a bad
    value, a value PEMS would refuse, or a value the user already sees (nothing to change).

    The record's mirror row is locked for the transaction: one user's simultaneous saves of one
    record follow each other and end in one draft.
    """
    typed = changes_parse(values)
    with transaction.atomic():
        record = PfaMirror.objects.select_for_update().filter(organization=organization, pfa_id=pfa_id).get()
        if record.deleted_at is not None:
            raise ValidationError(
                f"PFA {pfa_id} was deleted in PEMS ({record.deleted_at:%Y-%m-%d %H:%M} UTC): it can no longer be edited."
            )
        draft = (
            PfaModification.objects.select_for_update()
            .filter(organization=organization, pfa_id=pfa_id, author=user, state=State.DRAFT)
            .first()
        )
        if draft is None:
            draft = PfaModification(
                organization=organization,
                pfa_id=pfa_id,
                author=user,
                base_version=record.version,
                base_record_id=record.pems_record_id,
            )
        shared = _shared_values(record, exclude=draft.pk)  # what the user sees, but for their draft
        unchanged = {}
        for name, value in typed.items():
            seen = shared.get(name, getattr(record, name))
            if value_kept(value) == value_kept(seen) and name in draft.changes:  # set back: no longer a change
                del draft.changes[name], draft.base_values[name]
            elif value_kept(value) == value_kept(seen):
                unchanged[name] = [f"Equals the record's value ({value_to_json(name, seen)!r}): nothing to change."]
            else:
                draft.base_values.setdefault(name, value_to_json(name, getattr(record, name)))
                draft.changes[name] = value_to_json(name, value)
        if unchanged:
            raise ValidationError(unchanged)
        after = {**_values_of(record), **shared, **_typed_changes(draft.changes)}
        _check_save(typed, after)
        if change_reason is not None:
            draft.change_reason = change_reason
        content = {"changes": draft.changes, "base_values": draft.base_values, "change_reason": draft.change_reason}
        if draft.pk and not draft.changes:  # every field set back: nothing is left to commit
            draft.transition(from_states=[State.DRAFT], to_state=State.DISCARDED, **content)
        elif draft.pk:  # still a draft, locked above: only its content changes
            draft.save(update_fields=[*content, "updated_at"])
        elif draft.changes:
            draft.save()
        overlay_refresh(organization_id=organization.pk, pfa_ids=[pfa_id])
    return draft


def _typed_changes(changes: dict[str, Any]) -> dict[str, Any]:
    return {name: value_from_json(name, value) for name, value in changes.items()}


def _values_of(record: PfaMirror) -> dict[str, Any]:
    return {name: getattr(record, name) for name in EDITABLE_FIELDS}


def _shared_values(record: PfaMirror, *, exclude: int | None = None) -> dict[str, Any]:
    """The fields the record's committed, unwritten modifications set (but `exclude`), applied in
    commit order: with the mirror's values, the record every reader sees."""
    values: dict[str, Any] = {}
    modifications = (
        PfaModification.objects.shared()
        .filter(organization_id=record.organization_id, pfa_id=record.pfa_id)
        .exclude(pk=exclude)
        .in_commit_order()
    )
    for changes in modifications.values_list("changes", flat=True):
        values.update(_typed_changes(changes))
    return values


def _check_save(changed: dict[str, Any], after: dict[str, Any]) -> None:
    """ValidationError naming each field of `changed` PEMS's save rules refuse on the record as it
    would be saved (`after`: field name -> typed value)."""
    problems = save_problems(
        {PFA_ALIASES[name]: value_kept(value) for name, value in changed.items()},
        {PFA_ALIASES[name]: value_kept(value) for name, value in after.items()},
    )
    if problems:
        names = {alias: name for name, alias in PFA_ALIASES.items()}
        raise ValidationError({names[alias]: [problem] for alias, problem in problems.items()})


def drafts_commit(*, organization: Organization, user, pfa_ids: Sequence[str] | None = None) -> int:
    """Commit `user`'s drafts in the organization (those of `pfa_ids`, or all): they become shared
    and wait to be written, in commit order. Returns how many were committed."""
    return _drafts_end(organization, user, pfa_ids, to_state=State.COMMITTED, committed_at=timezone.now())


def drafts_discard(*, organization: Organization, user, pfa_ids: Sequence[str] | None = None) -> int:
    """Discard `user`'s drafts in the organization (those of `pfa_ids`, or all); the rows stay,
    `discarded`. Returns how many were discarded."""
    return _drafts_end(organization, user, pfa_ids, to_state=State.DISCARDED)


def draft_discard(*, organization: Organization, user, pfa_id: str) -> None:
    """Discard `user`'s draft of one record; NoDraft if there is none."""
    if not drafts_discard(organization=organization, user=user, pfa_ids=[pfa_id]):
        raise NoDraft(f"You have no draft of PFA {pfa_id}.")


def _drafts_end(
    organization: Organization, user, pfa_ids: Sequence[str] | None, *, to_state: str, **fields: Any
) -> int:
    drafts = PfaModification.objects.filter(organization=organization, author=user, state=State.DRAFT)
    with transaction.atomic():
        if pfa_ids is not None:
            drafts = drafts.filter(pfa_id__in=pfa_ids)
        keys = list(drafts.values_list("pfa_id", flat=True))
        # Conditional on the state: a draft ended meanwhile (committed elsewhere, failed by a
        # purge) is neither counted nor revived.
        ended = drafts.filter(pfa_id__in=keys).transition(from_states=[State.DRAFT], to_state=to_state, **fields)
        overlay_refresh(organization_id=organization.pk, pfa_ids=keys)
        if ended and to_state == State.COMMITTED:
            views_refresh_request()
            write_soon(organization, user)
    return ended


# Sent once a transaction that committed drafts commits, with `organization` and `user`: the sync
# app connects its write run to it (this app never imports, nor names, that one).
edits_committed = Signal()


def write_soon(organization: Organization, user) -> None:
    """Once the caller's transaction commits, tell `edits_committed`'s receivers (the sync app
    queues the organization's write run; the tick starts it otherwise)."""

    def announce() -> None:
        for receiver, result in edits_committed.send_robust(sender=None, organization=organization, user=user):
            if isinstance(result, Exception):
                logger.warning("%s failed for %s", receiver, organization.code, exc_info=result)

    transaction.on_commit(announce)


def modifications_hold_deleted(*, organization_id: UUID, pfa_ids: Sequence[str]) -> None:
    """Hold the open modifications (and conflicts) of records a read found deleted in PEMS.

    Held is no state of its own: a modification whose record is marked deleted keeps its state,
    leaves the merged view (the overlay merges onto live records only), and the write run passes
    it by (`PfaModificationQuerySet.to_write`). If a later read finds the record again, it is open
    as before; if the record is purged first, `modifications_fail_purged` fails it. A draft
    committed while the deletion's transaction runs is held alike: nothing here depends on the
    modifications' states, and the overlay refresh waits for that commit's own refresh.
    Runs in the transaction that marks the records deleted.
    """
    overlay_refresh(organization_id=organization_id, pfa_ids=pfa_ids)
    shared = PfaModification.objects.shared().filter(organization_id=organization_id)
    if shared.exists() and shared.filter(pfa_id__in=pfa_ids).exists():
        views_refresh_request()  # the materialized views no longer count those edits


def modifications_fail_purged(*, organization_id: UUID, purged: dict[str, datetime]) -> int:
    """Fail the held modifications (and conflicts) of records purged for good (`purged`: key ->
    when a read found the record gone), saying so. Runs in the transaction that deletes the
    records' rows, after the delete: a commit of one of them that ran meanwhile has ended, and is
    failed too. Returns how many ended."""
    modifications = PfaModification.objects.filter(organization_id=organization_id)
    failed = 0
    by_moment: dict[datetime, list[str]] = defaultdict(list)
    for pfa_id, deleted_at in purged.items():
        by_moment[deleted_at].append(pfa_id)
    for deleted_at, keys in by_moment.items():
        message = (
            f"The record was deleted in PEMS (found gone by a full read at {deleted_at:%Y-%m-%d %H:%M} UTC) "
            "and did not come back before it was purged."
        )
        failed += modifications.filter(pfa_id__in=keys).transition(
            from_states=PfaModification.UNFINISHED_STATES, to_state=State.FAILED, error_message=message
        )
    if failed:
        logger.info("%d held modifications failed: their records were purged", failed)
    return failed


# --- Write-back: a committed modification's way to PEMS (driven by synclog.writeback) --------------


def modification_writing(modification: PfaModification) -> bool:
    """Take a committed modification (or one a dead worker left `writing`) to `writing`; False if
    it left the shared states meanwhile (failed by a purge) or is held (its record was marked
    deleted since the run listed it), and then it is left as it is, in memory too."""
    try:
        modification.transition(
            from_states=PfaModification.SHARED_STATES, to_state=State.WRITING, among=PfaModification.objects.to_write()
        )
    except ModificationStateChanged:
        return False
    return True


def modification_requeue(modification: PfaModification) -> bool:
    """PEMS could not be reached: the modification waits, committed, for the next write run. False
    if it is no longer `writing` (failed by a purge meanwhile): it stays as it is."""
    try:
        modification.transition(from_states=[State.WRITING], to_state=State.COMMITTED)
    except ModificationStateChanged:
        return False
    return True


def modification_written(
    modification: PfaModification, *, record_id: int | None, changes: dict[str, Any] | None = None
) -> None:
    """PEMS holds the modification (`record_id`: its recordid after it; `changes`: its values as
    PEMS keeps them, if they differ in form); the record's mirror row was replaced by PEMS's in the
    same transaction."""
    _end_writing(modification, State.WRITTEN, written_record_id=record_id, **({"changes": changes} if changes else {}))


def modification_conflicted(modification: PfaModification, *, fields: dict[str, dict[str, Any]]) -> None:
    """PEMS changed a field the modification changes, to another value: nothing of it is written;
    `fields` holds each such field's base, mine and theirs for a planner to resolve."""
    _end_writing(modification, State.CONFLICT, conflict=fields, error_message=conflict_message(fields))


def modification_failed(modification: PfaModification, *, message: str) -> None:
    """PEMS refused the modification (a value, or the record is gone): it is not tried again."""
    _end_writing(modification, State.FAILED, error_message=message)


def _end_writing(modification: PfaModification, state: str, **fields: Any) -> None:
    """The outcome of the modification's PATCH; ModificationStateChanged (nothing recorded) if it is
    no longer `writing`: a purge failed it while the PATCH was under way."""
    modification.transition(from_states=[State.WRITING], to_state=state, **fields)
    overlay_refresh(organization_id=modification.organization_id, pfa_ids=[modification.pfa_id])


def conflict_message(fields: dict[str, dict[str, Any]], *, label: Callable[[str], str] = field_label) -> str:
    """What PEMS changed under an edit, each field named by `label`: its verbose name where the
    message is stored (the admin shows it), the API's own name where the API says it."""
    return "PEMS changed " + ", ".join(
        f"{label(name)} to {change['theirs']!r} (from {change['base']!r}; yours: {change['mine']!r})"
        for name, change in fields.items()
    )


# --- Conflicts: a planner decides ----------------------------------------------------------------------


class Resolution:
    KEEP_MINE = "keep_mine"
    TAKE_PEMS = "take_pems"
    MERGE = "merge"
    CHOICES = (KEEP_MINE, TAKE_PEMS, MERGE)


class NotInConflict(Exception):
    """The modification is not (or no longer) in conflict."""


def conflict_resolve(
    *, modification: PfaModification, user, resolution: str, values: dict[str, Any] | None = None
) -> PfaModification:
    """Resolve a conflict: `keep_mine` commits the same change again on PEMS's current record (its
    recordid and values the new base), `take_pems` discards it, `merge` commits the change with
    `values` (field name -> JSON value) in place of its own for those fields. Fields already at the
    value every reader sees (PEMS's, with the other committed edits applied) are left out; a change
    with none left ends discarded. ValidationError for bad values (PEMS's save rules, on the record
    as it would be saved) or a record deleted in PEMS; NotInConflict if someone resolved it first."""
    if resolution not in Resolution.CHOICES:
        raise ValidationError({"resolution": [f"Must be one of {', '.join(Resolution.CHOICES)}."]})
    changes = {name: value_from_json(name, value) for name, value in modification.changes.items()}
    if resolution == Resolution.MERGE:
        if not values:
            raise ValidationError({"values": ["A merge needs the values to commit."]})
        changes.update(changes_parse(values))  # the given fields; mine for the others
    who = user.get_username() if user else "someone"
    with transaction.atomic():
        modification.refresh_from_db()
        if modification.state != State.CONFLICT:
            raise NotInConflict(f"Modification {modification.pk} is not in conflict (any more).")
        record = PfaMirror.objects.filter(
            organization_id=modification.organization_id, pfa_id=modification.pfa_id, deleted_at__isnull=True
        ).first()
        if record is None and resolution != Resolution.TAKE_PEMS:
            raise ValidationError(f"PFA {modification.pfa_id} was deleted in PEMS: only take_pems resolves it.")
        shared = _shared_values(record, exclude=modification.pk) if record else {}
        changes = {
            name: value
            for name, value in changes.items()
            if record and value_kept(value) != value_kept(shared.get(name, getattr(record, name)))
        }
        if changes and resolution != Resolution.TAKE_PEMS:
            _check_save(changes, {**_values_of(record), **shared, **changes})
        try:
            if resolution == Resolution.TAKE_PEMS or not changes:
                modification.transition(
                    from_states=[State.CONFLICT],
                    to_state=State.DISCARDED,
                    error_message=f"Conflict resolved by {who}: PEMS's values kept.",
                )
            else:
                modification.transition(
                    from_states=[State.CONFLICT],
                    to_state=State.COMMITTED,
                    committed_at=timezone.now(),
                    # As PEMS will keep them (a change stored before the save rules were checked may differ).
                    changes={name: value_to_json(name, value_kept(value)) for name, value in changes.items()},
                    base_values={name: value_to_json(name, getattr(record, name)) for name in changes},
                    base_version=record.version,
                    base_record_id=record.pems_record_id,
                    error_message=f"Conflict resolved by {who} ({resolution}); committed again.",
                )
        except ModificationStateChanged:  # another planner (or a purge) was first
            raise NotInConflict(f"Modification {modification.pk} is not in conflict (any more).") from None
        overlay_refresh(organization_id=modification.organization_id, pfa_ids=[modification.pfa_id])
        if modification.state == State.COMMITTED:
            views_refresh_request()
            write_soon(modification.organization, user)
    return modification


# --- The overlay ---------------------------------------------------------------------------------


def overlay_refresh(*, organization_id: UUID, pfa_ids: Iterable[str]) -> None:
    """Recompute the overlay rows of these records from the mirror and their open modifications.

    Call it in the transaction that changed either. It holds a lock per organization
    until that transaction ends, so two refreshes of one record (a sync's page and a commit) follow
    each other and the later one reads what the earlier one committed.
    """
    keys = list(set(pfa_ids))
    if not keys:
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtext('pfa_overlay'), hashtext(%s))", [str(organization_id)]
            )
        open_modifications = PfaModification.objects.filter(
            organization_id=organization_id, state__in=PfaModification.OPEN_STATES
        )
        # A sync's page of thousands of keys usually meets no edit at all: two cheap checks first.
        many = len(keys) > 100
        if (
            many
            and not open_modifications.exists()
            and not PfaOverlay.objects.filter(organization_id=organization_id).exists()
        ):
            return
        modifications: dict[str, list[PfaModification]] = defaultdict(list)
        PfaOverlay.objects.filter(organization_id=organization_id, pfa_id__in=keys).delete()
        for modification in open_modifications.filter(pfa_id__in=keys).select_related("author").in_commit_order():
            modifications[modification.pfa_id].append(modification)
        if not modifications:
            return
        records = {
            record.pfa_id: record
            for record in PfaMirror.objects.live().filter(
                organization_id=organization_id, pfa_id__in=list(modifications)
            )
        }
        rows = []
        for pfa_id, record_modifications in modifications.items():
            if (record := records.get(pfa_id)) is not None:
                rows += _overlay_rows(record, record_modifications)
        PfaOverlay.objects.bulk_create(rows, batch_size=500)


def _overlay_rows(record: PfaMirror, modifications: list[PfaModification]) -> list[PfaOverlay]:
    """The merged rows of one record: the shared one (if anything is committed) and one per draft."""
    shared: dict[str, PfaModification] = {}  # field -> the modification that sets it
    overridden: set[str] = set()  # fields a later modification sets again (perhaps back to PEMS's value)
    for modification in modifications:
        if modification.state in PfaModification.SHARED_STATES:
            overridden.update(name for name in modification.changes if name in shared)
            shared.update(dict.fromkeys(modification.changes, modification))  # in commit order: the latest wins
    rows = [_overlay_row(record, shared, overridden, viewer_id=None)] if shared else []
    for modification in modifications:
        if modification.state == State.DRAFT and modification.author_id is not None:
            setters = {**shared, **dict.fromkeys(modification.changes, modification)}
            mine_over = overridden | (modification.changes.keys() & shared.keys())
            rows.append(_overlay_row(record, setters, mine_over, viewer_id=modification.author_id))
    return rows


def _overlay_row(
    record: PfaMirror, setters: dict[str, PfaModification], overridden: set[str], *, viewer_id: int | None
) -> PfaOverlay:
    values = {field.attname: getattr(record, field.attname) for field in PfaMirror._meta.concrete_fields}
    values.pop("id")
    changes = {}
    for name, modification in setters.items():
        value = modification.changes[name]
        values[name] = value_from_json(name, value)
        pems = value_to_json(name, getattr(record, name))
        # A change back to PEMS's value over another edit is still a change the reader should see.
        if value != pems or name in overridden:
            author = modification.author.get_username() if modification.author_id else None
            changes[name] = {"pems": pems, "value": value, "state": modification.state, "by": author}
    return PfaOverlay(**values, mirror_id=record.pk, viewer_id=viewer_id, changes=changes)
