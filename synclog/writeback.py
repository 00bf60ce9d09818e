"""A write run for one organization: its committed modifications, in commit order, written to PEMS
one at a time, with a three-way merge when PEMS changed the record meanwhile.

Each modification goes `committed` -> `writing` (committed before the PATCH) -> `written`,
`conflict` or `failed`. The PATCH names the `recordid` the change is based on, so PEMS applies it
only to the record as the planner saw it; a stale `recordid` (HTTP 400) means someone else saved
the record meanwhile, and a GET and a three-way merge decide:

- a field PEMS did not change, or changed to the planner's value, is no conflict: the change is
  PATCHed again on PEMS's current `recordid` ("rebased");
- a field changed on both sides to different values is a conflict: nothing of the modification
  is written, and it keeps base, mine and theirs for a planner to resolve.

Exactly once: a worker killed after PEMS took a PATCH but before recording it leaves the
modification `writing`. The next run PATCHes it with the same stale `recordid`, finds every field
already equal to the planner's value in PEMS, and records it as written without a second PATCH.
Values are compared (and sent, and recorded as written) in the form PEMS keeps them
(`mirror.save_rules`: 2 decimal places, trimmed text), so PEMS's rounding of our own write is never
taken for someone else's change.
"""

import logging
import threading
from typing import Any

from django.db import transaction
from django.utils import timezone

from mirror import delta
from mirror.codec import grid_text
from mirror.models import PFA_ALIASES, ModificationStateChanged, Organization, PfaMirror, PfaModification
from mirror.pems import PemsClient, PemsError, PemsNotFound, PemsRecordConflict, PemsRequestError
from mirror.records import PfaRowError, parse_pfa_row
from mirror.save_rules import value_kept
from mirror.store import pfa_record_replace
from synclog.models import ClaimLost, PfaSyncLog, SyncStatus
from synclog.runs import (
    Heartbeat,
    ProgressCallback,
    run_failed_record,
    run_failure_record,
    run_stop_reason,
    views_refresh_if_changed,
)
from synclog.signals import run_log_context

logger = logging.getLogger(__name__)

State = PfaModification.State
# A record PEMS keeps changing under us is tried this many times within one run.
MAX_REBASES = 3


class _PemsGone(Exception):
    """PEMS failed the run, not one edit (unavailable, credentials refused): the edit stays
    committed, and the run stops."""


def write_run(
    *,
    sync_log: PfaSyncLog,
    client: PemsClient,
    stop: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
) -> PfaSyncLog:
    """Write the organization's committed modifications to PEMS, in commit order; return the run.

    PEMS refusing a value or not knowing the record fails that modification and the run goes on;
    PEMS unavailable (after the client's retries) stops the run `failed`, the rest left `committed`
    for the next one. Stop requests and cancels are honoured between modifications.
    """
    with run_log_context(sync_log):
        return _write_run(sync_log=sync_log, client=client, stop=stop, on_progress=on_progress)


def _write_run(*, sync_log, client, stop, on_progress) -> PfaSyncLog:
    organization = sync_log.organization
    sync_log.start()
    taken: set[int] = set()
    try:
        with Heartbeat(sync_log) as heartbeat:
            # Edits committed while the run goes on join it: it ends when none is left.
            while batch := [m for m in _waiting(organization) if m.pk not in taken]:
                sync_log.set_total((sync_log.records_total or 0) + len(batch))
                logger.info("Write %s of %s: %d modifications to write", sync_log.id, organization.code, len(batch))
                for modification in batch:
                    taken.add(modification.pk)
                    if stop_reason := run_stop_reason(sync_log, stop):
                        left = sync_log.records_total - sync_log.records_processed
                        sync_log.finish(
                            SyncStatus.CANCELLED,
                            error_message=f"{stop_reason} {left} modifications left for the next run.",
                        )
                        return sync_log
                    heartbeat.check()
                    try:
                        _write_one(sync_log, client, modification)
                    except _PemsGone as gone:
                        left = sync_log.records_total - sync_log.records_processed
                        run_failed_record(
                            sync_log,
                            f"{str(gone.__cause__).rstrip('.')}. {left} modifications left committed for the next run.",
                            gone.__cause__,
                        )
                        return sync_log
                    if on_progress:
                        on_progress(sync_log)
            sync_log.complete()
    except BaseException as error:
        run_failure_record(sync_log, error, kept="modifications written so far are kept")
        raise
    finally:
        views_refresh_if_changed(sync_log)
    logger.info(
        "Write %s of %s completed: %d written (%d rebased), %d conflicts, %d failed in %d ms",
        sync_log.id,
        organization.code,
        sync_log.records_written,
        sync_log.records_rebased,
        sync_log.records_conflicts,
        sync_log.records_errored,
        sync_log.duration_ms,
    )
    return sync_log


def _waiting(organization: Organization) -> list[PfaModification]:
    """The organization's modifications to write, in commit order: `writing` ones too, which a
    worker that died mid-write left so (see the module's docstring); not those held on a record
    marked deleted."""
    return list(
        PfaModification.objects.filter(organization=organization).to_write().select_related("author").in_commit_order()
    )


def _write_one(sync_log: PfaSyncLog, client: PemsClient, modification: PfaModification) -> None:
    """Write one modification and record its outcome (in one transaction with the run's count)."""
    if not delta.modification_writing(modification):
        return  # resolved or discarded meanwhile
    pems = client.settings
    recordid, base = _base_of(modification)
    # Compared and sent as PEMS keeps them: a value PEMS rounds or trims is PEMS's own after the save.
    mine = {name: value_kept(delta.value_from_json(name, value)) for name, value in modification.changes.items()}
    kept = {name: delta.value_to_json(name, value) for name, value in mine.items()}
    rebased = False
    pems_row = _stored_row(modification)  # the record as last seen: the mirror's, then PEMS's own
    try:
        for _ in range(MAX_REBASES):
            if not sync_log.beat():  # the last moment before acting on PEMS: still ours?
                raise ClaimLost(f"Run {sync_log.pk} is no longer this worker's: not writing.")
            try:
                saved = client.patch_record(
                    modification.pfa_id, str(recordid), _aliases(mine), organization=pems.organization
                )
                # PEMS may answer with the new recordid and stamp only: the rest is what it holds now.
                row = {**pems_row, **_aliases(mine), **saved}
                _record(sync_log, modification, row, pems, written=kept, rebased=rebased)
                return
            except PemsRecordConflict:
                row = client.get_record(modification.pfa_id, organization=pems.organization)
            theirs = _typed(row, pems)
            if theirs is None:
                raise PemsRequestError(f"PEMS's record {modification.pfa_id} cannot be read back")
            conflicts = {
                name: {
                    "base": delta.value_to_json(name, base[name]),
                    "mine": delta.value_to_json(name, value),
                    "theirs": delta.value_to_json(name, getattr(theirs, name)),
                }
                for name, value in mine.items()
                if value_kept(getattr(theirs, name)) not in (base[name], value)
            }
            if conflicts:
                _record(sync_log, modification, row, pems, conflict=conflicts)
                return
            mine = {name: value for name, value in mine.items() if value_kept(getattr(theirs, name)) != value}
            if not mine:  # PEMS holds every value already (e.g. our own PATCH whose answer was lost)
                _record(sync_log, modification, row, pems, written=kept, rebased=rebased)
                return
            recordid, rebased, pems_row = row["recordid"], True, row
        raise PemsRequestError(f"PEMS's record {modification.pfa_id} changed under {MAX_REBASES} tries in a row")
    except PemsNotFound:
        _record(sync_log, modification, None, pems, failed="The record was deleted in PEMS (PEMS answered 404).")
    except PemsRequestError as error:  # PEMS refused the value: never retried
        _record(sync_log, modification, None, pems, failed=f"PEMS refused the change: {error.message}")
    except PemsError as error:  # unavailable, credentials refused, an answer not understood: not this edit's fault
        delta.modification_requeue(modification)  # False when a purge failed it meanwhile: then it stays failed
        raise _PemsGone() from error


def _base_of(modification: PfaModification) -> tuple[int | None, dict[str, Any]]:
    """The recordid a modification is written on and the values it changed from.

    A record's modifications go out in commit order, each on the recordid the one before produced:
    the fields an earlier modification wrote count as the base of the later one.
    """
    base = {name: value_kept(delta.value_from_json(name, value)) for name, value in modification.base_values.items()}
    recordid = modification.base_record_id
    earlier = PfaModification.objects.filter(
        organization_id=modification.organization_id,
        pfa_id=modification.pfa_id,
        state=State.WRITTEN,
        committed_at__lte=modification.committed_at,
        written_record_id__gt=recordid or 0,
    ).exclude(pk=modification.pk)
    for written in earlier.in_commit_order():
        recordid = max(recordid or 0, written.written_record_id)
        base.update((name, value_kept(delta.value_from_json(name, value))) for name, value in written.changes.items())
    return recordid, base


def _aliases(values: dict[str, Any]) -> dict[str, str]:
    return {PFA_ALIASES[name]: grid_text(value) for name, value in values.items()}


def _stored_row(modification: PfaModification) -> dict[str, str]:
    return (
        PfaMirror.objects.filter(organization_id=modification.organization_id, pfa_id=modification.pfa_id)
        .values_list("data", flat=True)
        .first()
        or {}
    )


def _typed(row: dict[str, str], pems):
    """PEMS's row typed as the mirror types it (None when it cannot be)."""
    grid_row = {alias: value for alias, value in row.items() if alias != "recordid"}
    if "recordid" in row:
        grid_row["pfs_recordid"] = row["recordid"]
    try:
        return parse_pfa_row(grid_row, time_zone=pems.zone, organization_code=pems.organization)
    except PfaRowError as error:
        logger.warning("PEMS's record cannot be typed: %s", error)
        return None


def _record(sync_log, modification, row, pems, *, written=None, rebased=False, conflict=None, failed="") -> None:
    """The outcome of one modification, the mirror row as PEMS has it now, and the run's count:
    all or nothing, and only while the run is still this worker's. `written`: the changes PEMS
    holds (field name -> JSON value), when it is written. A modification no longer `writing` (a
    purge failed it during the PATCH) keeps the state it has: nothing of its outcome is recorded."""
    try:
        with transaction.atomic():
            record = _typed(row, pems) if row else None
            if record is not None:
                pfa_record_replace(
                    organization_id=modification.organization_id, record=record, synced_at=timezone.now()
                )
            if written is not None:
                delta.modification_written(
                    modification, record_id=record.pems_record_id if record else None, changes=written
                )
                sync_log.add_write(written=1, rebased=int(rebased))
            elif conflict:
                delta.modification_conflicted(modification, fields=conflict)
                sync_log.add_write(conflicts=1)
            else:
                delta.modification_failed(modification, message=failed)
                sync_log.add_write(errored=1)
    except ModificationStateChanged as error:
        logger.warning("Write %s: %s", sync_log.pk, error)
