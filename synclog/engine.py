"""Running a read sync for one organization: claim the run, stream PEMS pages, store, finish.

Every interface (command, schedule, API, admin) goes through `sync_claim` and `sync_run`, so a run
started anywhere leaves the same `pfa_sync_log` row.
"""

import functools
import gc
import logging
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from mirror.models import Organization
from mirror.pems import (
    GridFilter,
    GridPage,
    PemsClient,
    PemsError,
    modified_since_filter,
    organization_filter,
)
from mirror.records import ParsedRows, PfaRowError, content_hash, parse_pfa_rows, pfa_keys
from mirror.services import pems_client_for, read_configuration_for
from mirror.store import pfa_content_hashes, pfa_newest_modified, pfa_records_upsert
from synclog.models import PfaSyncLog, PfaSyncRecordError, SyncStatus

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[PfaSyncLog], None]


class SyncRefused(Exception):
    """A sync of `organization` cannot be started; str() says why in words for ops."""

    def __init__(self, organization: Organization, message: str):
        self.organization = organization
        super().__init__(message)


class SyncAlreadyRunning(SyncRefused):
    """The organization already has a queued or running read sync."""

    def __init__(self, organization: Organization, active_log: PfaSyncLog | None):
        self.active_log = active_log
        if active_log is None:
            detail = "another run holds it"
        else:
            detail = f"run {active_log.id} (batch {active_log.batch_id}) is {active_log.status}"
        super().__init__(organization, f"A sync is already running for organization {organization.code}: {detail}.")


class SyncNotConfigured(SyncRefused):
    """The organization has no PEMS read connection (and there is no default one)."""


def sync_claim(
    *,
    organization: Organization,
    trigger: str,
    sync_type: str = PfaSyncLog.SyncType.FULL,
    triggered_by=None,
    batch_id: uuid.UUID | None = None,
) -> PfaSyncLog:
    """Create the organization's `queued` run, or raise SyncAlreadyRunning naming the active one
    (or SyncNotConfigured when it has no PEMS connection).

    The partial unique index on `pfa_sync_log` is the lock: of two concurrent claims, the
    database lets exactly one insert through.
    """
    try:
        configuration = read_configuration_for(organization)
    except ImproperlyConfigured as error:
        raise SyncNotConfigured(organization, str(error)) from None
    try:
        with transaction.atomic():
            return PfaSyncLog.objects.create(
                organization=organization,
                api_configuration=configuration,
                sync_type=sync_type,
                direction=PfaSyncLog.Direction.READ,
                status=SyncStatus.QUEUED,
                trigger=trigger,
                triggered_by=triggered_by,
                batch_id=batch_id or uuid.uuid4(),
            )
    except IntegrityError:
        active = PfaSyncLog.objects.filter(
            organization=organization, direction=PfaSyncLog.Direction.READ, status__in=SyncStatus.active()
        ).first()
        raise SyncAlreadyRunning(organization, active) from None


def sync_run(
    *,
    sync_log: PfaSyncLog,
    client: PemsClient,
    stop: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
) -> PfaSyncLog:
    """Run a claimed sync to its end and return the finished log.

    Each page is one transaction (rows, rejected rows and counters together), so progress is
    visible while the run goes on and a failure keeps every page committed before it. A stop
    request is honoured at the next page boundary and leaves the run `cancelled`. A PEMS or
    internal failure fails the run, records why, and is re-raised.
    """
    organization = sync_log.organization
    pems_code = client.settings.organization
    time_zone = client.settings.zone
    filters = [organization_filter(pems_code), *_incremental_filters(sync_log, time_zone)]
    sync_log.start()
    logger.info("Sync %s of %s started (%s)", sync_log.id, organization.code, sync_log.sync_type)
    kept_errors = 0
    server_started = None
    # A first load finds nothing stored: it skips the per-page lookups and inserts without merging.
    mirror_had_rows = organization.pfa_records.exists()
    try:
        sync_log.set_total(client.count(filters))
        # The read-ahead thread decodes, hashes and (on a first load) types each page while the
        # page before it is being stored.
        prepare = functools.partial(
            _prepare_page, time_zone=time_zone, organization_code=pems_code, type_rows=not mirror_had_rows
        )
        with _ReadAhead(client.iter_pages(filters), prepare) as pages, _fewer_gc_passes():
            for page in pages:
                parsed, unchanged = page.parsed, 0
                if parsed is None:
                    pages.read_next()  # a re-sync types and writes few rows: the next page can start now
                    changed = _changed_rows(organization, page)
                    unchanged = len(page.rows) - len(changed)
                    parsed = parse_pfa_rows(changed, time_zone=time_zone, organization_code=pems_code)
                server_started = server_started or page.server_date
                with _page_transaction():
                    counts = pfa_records_upsert(
                        organization_id=organization.pk,
                        records=parsed.records,
                        synced_at=timezone.now(),
                        batch_size=settings.SYNC_BATCH_SIZE,
                        on_staged=pages.read_next,
                        expect_new=not mirror_had_rows,
                    )
                    kept_errors += _keep_rejected(
                        sync_log, parsed.rejected, room=settings.SYNC_MAX_KEPT_ERRORS - kept_errors
                    )
                    sync_log.add_page(
                        processed=len(page.rows),
                        inserted=counts.inserted,
                        updated=counts.updated,
                        unchanged=counts.unchanged + unchanged,
                        errored=len(parsed.rejected),
                    )
                del page, parsed  # the next page is already on its way: two pages in memory at most
                if on_progress:
                    on_progress(sync_log)
                if stop is not None and stop.is_set():
                    sync_log.finish(SyncStatus.CANCELLED, error_message="Stopped on request at a page boundary.")
                    logger.info(
                        "Sync %s of %s cancelled after %d records",
                        sync_log.id,
                        organization.code,
                        sync_log.records_processed,
                    )
                    return sync_log
    except PemsError as error:
        fail_run(sync_log, str(error), error)
        raise
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt | SystemExit):
            sync_log.finish(SyncStatus.CANCELLED, error_message="Interrupted; pages committed so far are kept.")
        else:
            fail_run(sync_log, f"Internal error: {type(error).__name__}: {error}", error)
        raise
    sync_log.finish(SyncStatus.COMPLETED, error_details=_error_summary(sync_log, kept_errors))
    if sync_log.api_configuration_id:
        sync_log.api_configuration.record_sync(
            finished_at=sync_log.completed_at,
            record_count=sync_log.records_processed,
            watermark=_next_watermark(pfa_newest_modified(organization_id=organization.pk), server_started),
        )
    logger.info(
        "Sync %s of %s completed: %d processed, %d inserted, %d updated, %d unchanged, %d errored in %d ms",
        sync_log.id,
        organization.code,
        sync_log.records_processed,
        sync_log.records_inserted,
        sync_log.records_updated,
        sync_log.records_unchanged,
        sync_log.records_errored,
        sync_log.duration_ms,
    )
    return sync_log


@contextmanager
def _page_transaction() -> Iterator[None]:
    """One page's transaction: its rows, rejected rows and counters, all or nothing.

    On PostgreSQL the commit does not wait for the disk (`synchronous_commit` off, for this
    transaction only): a crash of the database can lose the last fraction of a second of pages,
    which the next sync reads again, but never half a page, and nothing committed before them.
    A first load is about 4% faster. Only the read sync commits this way: PEMS keeps its rows.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = off")
        yield


@dataclass
class _PreparedPage:
    """A grid page as the read-ahead thread hands it over: typed on a first load; otherwise each
    row's key and content hash, for finding the rows that changed."""

    rows: list[dict[str, str]]
    server_date: datetime | None
    parsed: ParsedRows | None = None
    keys: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)


def _prepare_page(page: GridPage, *, time_zone: ZoneInfo, organization_code: str, type_rows: bool) -> _PreparedPage:
    prepared = _PreparedPage(page.rows, page.server_date)
    if type_rows:
        prepared.parsed = parse_pfa_rows(page.rows, time_zone=time_zone, organization_code=organization_code)
    else:
        prepared.keys = pfa_keys(page.rows)
        prepared.hashes = list(map(content_hash, page.rows))
    return prepared


def _changed_rows(organization: Organization, page: _PreparedPage) -> list[dict[str, str]]:
    """The page's rows whose content hash is not the one the mirror holds: only those need typing."""
    stored = pfa_content_hashes(organization_id=organization.pk, pfa_ids=page.keys)
    return [
        raw for key, digest, raw in zip(page.keys, page.hashes, page.rows, strict=True) if stored.get(key) != digest
    ]


_gc_lock = threading.Lock()
_gc_runs = 0  # syncs running in this process
_gc_thresholds = gc.get_threshold()


@contextmanager
def _fewer_gc_passes() -> Iterator[None]:
    """Let the cyclic garbage collector run every 100,000 container allocations instead of 700
    while a sync runs in this process.

    A page allocates tens of thousands of short-lived containers (and frees them): at the default
    threshold the collector ran hundreds of times per 100,000 rows, each pass walking every live
    object, about a sixth of the sync's CPU time. The rows hold no reference cycles. The process's
    own thresholds are back once its last running sync ends.
    """
    global _gc_runs, _gc_thresholds
    with _gc_lock:
        if _gc_runs == 0:
            _gc_thresholds = gc.get_threshold()
            gc.set_threshold(max(_gc_thresholds[0], 100_000), *_gc_thresholds[1:])
        _gc_runs += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_runs -= 1
            if _gc_runs == 0:
                gc.set_threshold(*_gc_thresholds)


class _ReadAhead:
    """Reads and prepares grid pages in a thread, one page ahead of the caller.

    The thread starts on page N+1 once the caller calls `read_next()` while it works on page N
    (at the latest when it asks for page N+1). The caller calls it when what is left of page N is
    waiting on the database, so PEMS and the parsing work while PostgreSQL merges, not while
    the caller still needs the interpreter. The thread never touches the database. An error
    raised while reading or preparing is raised to the caller, in order, after the pages before it.
    """

    _END = object()

    def __init__(self, pages: Iterator[GridPage], prepare: Callable[[GridPage], _PreparedPage]) -> None:
        self._pages = pages
        self._prepare = prepare
        self._handoff: queue.SimpleQueue = queue.SimpleQueue()
        self._may_read_next = threading.Semaphore(0)
        self._read_next_granted = False
        self._closed = threading.Event()

    def __enter__(self) -> "_ReadAhead":
        threading.Thread(target=self._read, name="pems-read-ahead", daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closed.set()

    def __iter__(self) -> Iterator[_PreparedPage]:
        while (item := self._handoff.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item
            self._read_next_granted = False
            yield item
            del item
            self.read_next()

    def read_next(self) -> None:
        """Let the thread read the next page (once per page; later calls do nothing)."""
        if not self._read_next_granted:
            self._read_next_granted = True
            self._may_read_next.release()

    def _read(self) -> None:
        try:
            for page in self._pages:
                self._handoff.put(self._prepare(page))
                del page
                while not self._may_read_next.acquire(timeout=0.5):
                    if self._closed.is_set():
                        return
                if self._closed.is_set():
                    return
            self._handoff.put(self._END)
        except BaseException as error:  # handed to the caller, which raises it
            self._handoff.put(error)
        finally:
            self._pages.close()


def _incremental_filters(sync_log: PfaSyncLog, time_zone: ZoneInfo) -> list[GridFilter]:
    """The `pfs_lastmodified` filter of an incremental read; none for a full one.

    Without a watermark (no completed read yet) an incremental run reads everything and says so
    by becoming a full run.
    """
    if sync_log.sync_type != PfaSyncLog.SyncType.INCREMENTAL:
        return []
    configuration = sync_log.api_configuration
    watermark = configuration.incremental_watermark if configuration else None
    if watermark is None:
        sync_log.sync_type = PfaSyncLog.SyncType.FULL
        sync_log.save(update_fields=["sync_type"])
        logger.info("Sync %s: no completed read yet, so a full read instead of an incremental one", sync_log.id)
        return []
    since = watermark - timedelta(minutes=settings.SYNC_INCREMENTAL_LOOKBACK_MINUTES)
    return [modified_since_filter(since, time_zone=time_zone)]


def _next_watermark(newest_modified: datetime | None, server_started: datetime | None) -> datetime | None:
    """The newest save the mirror holds, but never later than PEMS's clock when the read began: a
    row saved during the read on a page already passed is then read next time."""
    if newest_modified is None:
        return None  # nothing read: keep the watermark
    return min(newest_modified, server_started) if server_started else newest_modified


def _keep_rejected(sync_log: PfaSyncLog, rejected: list[tuple[PfaRowError, dict]], *, room: int) -> int:
    if room <= 0 or not rejected:
        return 0
    PfaSyncRecordError.objects.bulk_create(
        PfaSyncRecordError(sync_log=sync_log, pfa_id=(error.pfa_id or "")[:200], reason=error.reason, raw_row=raw)
        for error, raw in rejected[:room]
    )
    return min(room, len(rejected))


def _error_summary(sync_log: PfaSyncLog, kept_errors: int) -> dict:
    if not sync_log.records_errored:
        return {}
    return {
        "records_kept_aside": kept_errors,
        "records_not_kept": sync_log.records_errored - kept_errors,
    }


def fail_run(sync_log: PfaSyncLog, message: str, error: BaseException) -> None:
    sync_log.fail(message, error=error)
    logger.error("Sync %s of %s failed: %s", sync_log.id, sync_log.organization.code, message)


@dataclass
class SyncOutcome:
    """What happened to one organization in `sync_organizations`: its run, or why it has none."""

    organization: Organization
    sync_log: PfaSyncLog | None
    error_message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.sync_log is not None and self.sync_log.status == SyncStatus.COMPLETED


def sync_organizations(
    *,
    organizations: list[Organization],
    trigger: str,
    triggered_by=None,
    sync_type: str = PfaSyncLog.SyncType.FULL,
    stop: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
    client_factory: Callable[[Organization], PemsClient] = pems_client_for,
) -> list[SyncOutcome]:
    """Sync organizations one after another under one batch id; one failure never stops the next."""
    batch_id = uuid.uuid4()
    outcomes = []
    for organization in organizations:
        if stop is not None and stop.is_set():
            outcomes.append(SyncOutcome(organization, None, "Not started: stop requested."))
            continue
        try:
            sync_log = sync_claim(
                organization=organization,
                trigger=trigger,
                sync_type=sync_type,
                triggered_by=triggered_by,
                batch_id=batch_id,
            )
        except SyncRefused as refusal:
            outcomes.append(SyncOutcome(organization, None, str(refusal)))
            continue
        try:
            client = client_factory(organization)
        except ImproperlyConfigured as error:
            fail_run(sync_log, str(error), error)
            outcomes.append(SyncOutcome(organization, sync_log, sync_log.error_message))
            continue
        try:
            with client:
                sync_run(sync_log=sync_log, client=client, stop=stop, on_progress=on_progress)
        except PemsError:
            pass  # the run is failed with the PEMS message; the next organization still runs
        except Exception:
            logger.exception("Sync %s of %s failed unexpectedly", sync_log.id, organization.code)
        outcomes.append(SyncOutcome(organization, sync_log, sync_log.error_message))
    return outcomes


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
) -> SyncBatch:
    """Queue a background sync per organization: the `queued` run exists before this returns.

    Each task is enqueued only once the caller's transaction commits, so a worker never picks up
    a run that is not visible yet. An organization already syncing, or without a PEMS connection,
    is refused (listed in `refused`), not queued.
    """
    from django_q.tasks import async_task

    batch = SyncBatch(batch_id=uuid.uuid4(), queued=[], refused=[])
    for organization in organizations:
        try:
            sync_log = sync_claim(
                organization=organization,
                trigger=trigger,
                sync_type=sync_type,
                triggered_by=triggered_by,
                batch_id=batch.batch_id,
            )
        except SyncRefused as refusal:
            batch.refused.append(refusal)
            continue
        batch.queued.append(sync_log)
        # robust: a broker error (or, in django-q2's sync mode, a failing sync) must not turn the
        # already committed trigger into an error; the run itself records what happened.
        transaction.on_commit(
            lambda log_id=str(sync_log.id), code=organization.code: async_task(
                "synclog.tasks.sync_execute", log_id, task_name=f"sync {code} {log_id}", group="pfasync-sync"
            ),
            robust=True,
        )
    return batch
