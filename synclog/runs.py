"""A run's lifecycle, the same for a read and a write: claim, queue, heartbeat, stop and cancel,
failure recording, and what a finished run asks for.

Every interface (command, schedule, API, admin) starts runs through `sync_start` (queued for a
worker) or `runs_claim_each` (claimed one organization at a time, for a command running them
inline), so a run started anywhere leaves the same `pfa_sync_log` row. `synclog.engine` (a read)
and `synclog.writeback` (a write) build on this module and never on each other;
`synclog.dispatch` picks one of them by a run's direction.
"""

import functools
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction

from mirror.materialized import views_refresh_request
from mirror.models import Organization, PfaModification
from mirror.pems import PemsClient, PemsError
from mirror.secrets import secrets_scrub
from mirror.services import pems_client_for, read_configuration_for, write_configuration_for
from synclog.models import ClaimLost, PfaSyncLog, SyncStatus, stale_runs_expire

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[PfaSyncLog], None]


class SyncRefused(Exception):
    """A sync of `organization` cannot be started; str() says why in words for ops."""

    def __init__(self, organization: Organization, message: str):
        self.organization = organization
        super().__init__(message)


class SyncAlreadyRunning(SyncRefused):
    """The organization already has a queued or running run of that direction."""

    def __init__(self, organization: Organization, active_log: PfaSyncLog | None):
        self.active_log = active_log
        if active_log is None:
            detail = "another run holds it"
        else:
            detail = f"run {active_log.id} (batch {active_log.batch_id}) is {active_log.status}"
        super().__init__(organization, f"A sync is already running for organization {organization.code}: {detail}.")


class SyncNotConfigured(SyncRefused):
    """The organization has no PEMS connection for the direction (and there is no default one)."""


class SyncNotQueued(SyncRefused):
    """The task broker would not take the run's task; the run was failed at once."""


class SyncNothingToWrite(SyncRefused):
    """A write was asked of an organization with no committed edit waiting: no run is created."""

    def __init__(self, organization: Organization):
        super().__init__(
            organization, f"Nothing to write for organization {organization.code}: no committed edit waits."
        )


class SyncNotStarted(SyncRefused):
    """A stop was requested before the organization's turn came."""


def sync_claim(
    *,
    organization: Organization,
    trigger: str,
    sync_type: str = PfaSyncLog.SyncType.FULL,
    direction: str = PfaSyncLog.Direction.READ,
    triggered_by=None,
    batch_id: uuid.UUID | None = None,
    allow_mass_delete: bool = False,
    command: str = "",
) -> PfaSyncLog:
    """Create the organization's `queued` run (a read, or a write to PEMS), or raise
    SyncAlreadyRunning naming the active one of that direction (or SyncNotConfigured when it has
    no PEMS connection). Reads and writes of one organization may overlap.

    The partial unique indexes on `pfa_sync_log` are the lock: of two concurrent claims, the
    database lets exactly one insert through.
    """
    write = direction == PfaSyncLog.Direction.WRITE
    try:
        configuration = write_configuration_for(organization) if write else read_configuration_for(organization)
    except ImproperlyConfigured as error:
        raise SyncNotConfigured(organization, str(error)) from None
    # A run whose worker is gone must not block the organization until a schedule notices.
    stale_runs_expire(organization=organization)
    try:
        with transaction.atomic():
            return PfaSyncLog.objects.create(
                organization=organization,
                api_configuration=configuration,
                sync_type=sync_type,
                direction=direction,
                status=SyncStatus.QUEUED,
                trigger=trigger,
                triggered_by=triggered_by,
                batch_id=batch_id or uuid.uuid4(),
                allow_mass_delete=allow_mass_delete,
                command=command,
            )
    except IntegrityError:
        active = PfaSyncLog.objects.filter(
            organization=organization, direction=direction, status__in=SyncStatus.active()
        ).first()
        raise SyncAlreadyRunning(organization, active) from None


def runs_claim_each(
    *, organizations: list[Organization], stop: threading.Event | None = None, **claim
) -> Iterator[PfaSyncLog | SyncRefused]:
    """Claim a run of each organization in turn (`claim`: `sync_claim`'s arguments), yielding the
    run or why there is none; each is claimed only when the caller asks for the next, so a command
    running them inline holds one run at a time.

    A write is refused for an organization with nothing waiting to be written: a run that could
    only end with nothing done would be history without an event.
    """
    write = claim.get("direction") == PfaSyncLog.Direction.WRITE
    for organization in organizations:
        if stop is not None and stop.is_set():
            yield SyncNotStarted(organization, "Not started: stop requested.")
        elif write and not PfaModification.objects.filter(organization=organization).to_write().exists():
            yield SyncNothingToWrite(organization)
        else:
            try:
                yield sync_claim(organization=organization, **claim)
            except SyncRefused as refusal:
                yield refusal


@dataclass
class SyncBatch:
    """The runs one trigger queued (sharing `batch_id`) and the organizations it could not start."""

    batch_id: uuid.UUID
    queued: list[PfaSyncLog]
    refused: list[SyncRefused]


def sync_start(
    *,
    organizations: list[Organization],
    trigger: str,
    triggered_by=None,
    sync_type: str = PfaSyncLog.SyncType.FULL,
    direction: str = PfaSyncLog.Direction.READ,
    allow_mass_delete: bool = False,
) -> SyncBatch:
    """Queue a background run (a read, or a write to PEMS) per organization: the `queued` run exists
    before this returns.

    Each task is enqueued only once the caller's transaction commits, so a worker never picks up
    a run that is not visible yet. An organization already syncing, without a PEMS connection, or
    (for a write) with nothing waiting is refused (listed in `refused`), not queued; so is one whose
    task the broker would not take (SyncNotQueued): its run is failed at once instead of blocking
    the organization.
    """
    batch = SyncBatch(batch_id=uuid.uuid4(), queued=[], refused=[])
    claimed = runs_claim_each(
        organizations=organizations,
        trigger=trigger,
        sync_type=sync_type,
        direction=direction,
        triggered_by=triggered_by,
        batch_id=batch.batch_id,
        allow_mass_delete=allow_mass_delete,
    )
    for sync_log in claimed:
        if isinstance(sync_log, SyncRefused):
            batch.refused.append(sync_log)
            continue
        batch.queued.append(sync_log)
        transaction.on_commit(functools.partial(_enqueue, batch, sync_log))
    return batch


def _enqueue(batch: SyncBatch, sync_log: PfaSyncLog) -> None:
    from django_q.tasks import async_task

    code = sync_log.organization.code
    try:
        async_task(
            "synclog.tasks.sync_execute", str(sync_log.id), task_name=f"sync {code} {sync_log.id}", group="pfasync-sync"
        )
    except Exception as error:  # the broker is down or refused the task
        if not PfaSyncLog.objects.filter(pk=sync_log.pk, status=SyncStatus.QUEUED).exists():
            # django-q2's sync mode ran the task here and then raised its error: the run has
            # recorded its own outcome.
            logger.info("Sync %s of %s ran inline and raised: %s", sync_log.id, code, error)
            return
        message = f"Could not be queued: the task broker failed ({type(error).__name__}: {error}). Nothing was read."
        fail_run(sync_log, message, error)
        batch.queued.remove(sync_log)
        batch.refused.append(SyncNotQueued(sync_log.organization, message))


def sync_cancel(*, sync_log: PfaSyncLog) -> PfaSyncLog:
    """Cancel a run: a queued one ends `cancelled` at once, a running one at its next page
    boundary. Raises RunEnded when it has ended already."""
    sync_log.cancel()
    logger.info("Sync %s of %s: cancel requested (%s)", sync_log.id, sync_log.organization.code, sync_log.status)
    return sync_log


def client_for_run(
    sync_log: PfaSyncLog, client_factory: Callable[[Organization], PemsClient] = pems_client_for
) -> PemsClient:
    """The PEMS client for the run's organization; when its connection cannot make one
    (ImproperlyConfigured), the run is failed with the reason and the error re-raised."""
    try:
        if sync_log.direction == PfaSyncLog.Direction.WRITE:
            return client_factory(sync_log.organization, usage="write")
        return client_factory(sync_log.organization)
    except ImproperlyConfigured as error:
        fail_run(sync_log, str(error), error)
        raise


class Heartbeat:
    """Beats the run's heartbeat every SYNC_HEARTBEAT_SECONDS from a thread of its own, also while
    a PEMS call is in flight, so a slow page never outlives the lease. `check()` raises ClaimLost
    once a beat found the run no longer this worker's (reaped, or finished elsewhere)."""

    def __init__(self, sync_log: PfaSyncLog) -> None:
        self._sync_log = sync_log
        self._done = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{sync_log.pk}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def check(self) -> None:
        if self._lost.is_set():
            raise ClaimLost(f"Run {self._sync_log.pk} is no longer this worker's: its heartbeat found it taken.")

    def _beat(self) -> None:
        try:
            while not self._done.wait(settings.SYNC_HEARTBEAT_SECONDS):
                try:
                    if not self._sync_log.beat():
                        self._lost.set()
                        return
                except DatabaseError as error:  # the next beat tries again; the lease allows three
                    logger.warning("Sync %s: heartbeat failed: %s", self._sync_log.pk, error)
                    connection.close()
        finally:
            connection.close()  # this thread's own connection


def run_stop_reason(sync_log: PfaSyncLog, stop: threading.Event | None) -> str:
    """Why the run is to stop at this boundary (a stop request, or a cancel), or "" to go on."""
    if stop is not None and stop.is_set():
        return "Stopped on request at a page boundary."
    if sync_log.cancel_requested():
        return "Cancelled on request at a page boundary; pages committed so far are kept."
    return ""


def run_failure_record(sync_log: PfaSyncLog, error: BaseException, *, kept: str) -> None:
    """How a run that ends by `error` is recorded: a lost claim only logged (the run is not this
    worker's to change), a PEMS error with PEMS's message, an interrupt as cancelled (`kept` says
    what stays), anything else as an internal error."""
    if isinstance(error, ClaimLost):
        logger.warning("Run %s of %s stopped without writing more: %s", sync_log.id, sync_log.organization.code, error)
    elif isinstance(error, PemsError):
        run_failed_record(sync_log, str(error), error)
    elif isinstance(error, KeyboardInterrupt | SystemExit):
        run_failed_record(sync_log, f"Interrupted; {kept}.", error, cancelled=True)
    else:
        run_failed_record(sync_log, f"Internal error: {type(error).__name__}: {error}", error)


def run_failed_record(sync_log: PfaSyncLog, message: str, error: BaseException, *, cancelled: bool = False) -> None:
    """Close the run as failed (or cancelled) with `message`, if it is still this worker's.

    A run whose database connection died records its real cause on a new connection.
    """
    for attempt in (1, 2):
        try:
            if cancelled:
                sync_log.finish(SyncStatus.CANCELLED, error_message=message)
            else:
                fail_run(sync_log, message, error)
            return
        except ClaimLost as lost:
            logger.warning("Sync %s: not recorded as failed (%s): %s", sync_log.pk, message, lost)
            return
        except (InterfaceError, OperationalError):
            if attempt == 2 or connection.in_atomic_block:
                raise
            connection.close()  # the next query connects again


def fail_run(sync_log: PfaSyncLog, message: str, error: BaseException) -> None:
    """Close the run as failed with `message`, which is scrubbed of every secret the process knows:
    it is stored, returned by the API and logged."""
    message = secrets_scrub(message)
    sync_log.fail(message, error=error)
    logger.error("Sync %s of %s failed: %s", sync_log.id, sync_log.organization.code, message)


def views_refresh_if_changed(sync_log: PfaSyncLog) -> None:
    """Ask for a refresh of the KPI views if the run changed what they read, whatever its outcome
    (a failed run keeps the pages it committed)."""
    if sync_log.changed_merged_view:
        try:
            views_refresh_request()
        except DatabaseError:  # the run's own error, if any, is the one to report
            logger.warning("Could not ask for a refresh of the materialized views", exc_info=True)
