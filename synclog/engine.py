"""A read run for one organization: stream PEMS's pages, store them, prove the read complete.

`sync_run` runs a run claimed through `synclog.runs` (which holds its lifecycle: start, heartbeat,
stop, failure recording); here are the read itself, its read-ahead thread and its garbage
collector setting, and the deletions a complete full read finds.
"""

import functools
import gc
import logging
import math
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from mirror.delta import modifications_hold_deleted, overlay_refresh
from mirror.models import Organization
from mirror.pems import (
    GridFilter,
    GridPage,
    PemsClient,
    PemsError,
    PemsSettings,
    modified_since_filter,
    organization_filter,
)
from mirror.records import ParsedRows, PfaRowError, content_hash, is_text, parse_pfa_rows, pfa_keys
from mirror.store import (
    pfa_content_hashes,
    pfa_key_range_hashes,
    pfa_live_count,
    pfa_newest_modified,
    pfa_records_mark_deleted,
    pfa_records_upsert,
)
from synclog.models import PfaSyncLog, PfaSyncRecordError, SyncStatus
from synclog.runs import (
    Heartbeat,
    ProgressCallback,
    run_failure_record,
    run_stop_reason,
    views_refresh_if_changed,
)
from synclog.signals import run_log_context

logger = logging.getLogger(__name__)


def sync_run(
    *,
    sync_log: PfaSyncLog,
    client: PemsClient,
    stop: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
    detect_deletions: bool = True,
) -> PfaSyncLog:
    """Run a claimed sync to its end and return the finished log.

    Each page is one transaction (rows, rejected rows and counters together), so progress is
    visible while the run goes on and a failure keeps every page committed before it. A stop
    request is honoured at the next page boundary and leaves the run `cancelled`. A PEMS or
    internal failure fails the run, records why, and is re-raised.

    A full read ends by counting what PEMS holds now: fewer rows read than that fails the run
    (nothing marked deleted, no watermark moved). A complete one marks the mirror's records that
    PEMS no longer holds deleted, unless there are too many (`SYNC_DELETE_GUARD_PERCENT`).
    `detect_deletions=False` leaves them alone (the benchmark measures what detection costs).
    """
    with run_log_context(sync_log):  # log lines of the run carry its id, batch and organization
        try:
            return _sync_run(
                sync_log=sync_log, client=client, stop=stop, on_progress=on_progress, detect_deletions=detect_deletions
            )
        finally:
            views_refresh_if_changed(sync_log)


def _sync_run(
    *,
    sync_log: PfaSyncLog,
    client: PemsClient,
    stop: threading.Event | None,
    on_progress: ProgressCallback | None,
    detect_deletions: bool,
) -> PfaSyncLog:
    organization = sync_log.organization
    pems = client.settings
    sync_log.start()
    logger.info("Sync %s of %s started (%s)", sync_log.id, organization.code, sync_log.sync_type)
    kept_errors = 0
    server_started = None
    last_key, hidden_at_end = None, False
    try:
        with Heartbeat(sync_log) as heartbeat:
            filters = [organization_filter(pems.organization), *_incremental_filters(sync_log, pems)]
            full = sync_log.sync_type == PfaSyncLog.SyncType.FULL
            sync_log.set_total(client.count(filters))
            # A first load finds nothing stored: it skips the per-page lookups and inserts without merging.
            mirror_had_rows = organization.pfa_records.exists()
            deletions = _DeletedKeys(sync_log) if full and mirror_had_rows and detect_deletions else None
            # The read-ahead thread decodes, hashes and (on a first load) types each page while the
            # page before it is being stored.
            prepare = functools.partial(
                _prepare_page, time_zone=pems.zone, organization_code=pems.organization, type_rows=not mirror_had_rows
            )
            with _ReadAhead(client.iter_pages(filters), prepare) as pages, _fewer_gc_passes():
                for page in pages:
                    heartbeat.check()
                    parsed, unchanged = page.parsed, 0
                    if parsed is None:
                        pages.read_next()  # a re-sync types and writes few rows: the next page can start now
                        changed = _changed_rows(organization, page, by_range=full, deletions=deletions)
                        unchanged = len(page.rows) - len(changed)
                        parsed = parse_pfa_rows(changed, time_zone=pems.zone, organization_code=pems.organization)
                    server_started = server_started or page.server_date
                    last_key, hidden_at_end = page.last_key, page.hidden_at_end
                    with _page_transaction():
                        counts = pfa_records_upsert(
                            organization_id=organization.pk,
                            records=parsed.records,
                            synced_at=timezone.now(),
                            batch_size=settings.SYNC_BATCH_SIZE,
                            on_staged=pages.read_next,
                            expect_new=not mirror_had_rows,
                        )
                        # Records with open modifications get their merged rows recomputed.
                        overlay_refresh(
                            organization_id=organization.pk, pfa_ids=[record.pfa_id for record in parsed.records]
                        )
                        kept_errors += _keep_rejected(
                            sync_log, parsed.rejected, room=settings.SYNC_MAX_KEPT_ERRORS - kept_errors
                        )
                        # Last, and fenced: a run that lost its claim rolls its page back here.
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
                    if stop_reason := run_stop_reason(sync_log, stop):
                        sync_log.finish(SyncStatus.CANCELLED, error_message=stop_reason)
                        logger.info(
                            "Sync %s of %s cancelled after %d records",
                            sync_log.id,
                            organization.code,
                            sync_log.records_processed,
                        )
                        return sync_log
            if full:
                _check_complete(sync_log, client.count([organization_filter(pems.organization)]))
            if deletions is not None and not hidden_at_end:
                # (Past a row whose key PEMS does not show, the stored keys may be that one.)
                deletions.add_after(last_key)
            heartbeat.check()
            with transaction.atomic():
                deleted, warning, details = deletions.apply() if deletions is not None else (0, "", {})
                sync_log.complete(
                    records_deleted=deleted,
                    warning=warning,
                    error_details=_error_summary(sync_log, kept_errors) | details,
                )
    except BaseException as error:
        run_failure_record(sync_log, error, kept="pages committed so far are kept")
        raise
    if sync_log.api_configuration_id:
        sync_log.api_configuration.record_sync(
            finished_at=sync_log.completed_at, record_count=sync_log.records_processed
        )
    organization.move_watermark(
        _next_watermark(pfa_newest_modified(organization_id=organization.pk), server_started),
        source=pems.grid_source,
    )
    logger.info(
        "Sync %s of %s completed: %d processed, %d inserted, %d updated, %d unchanged, %d deleted, %d errored in %d ms",
        sync_log.id,
        organization.code,
        sync_log.records_processed,
        sync_log.records_inserted,
        sync_log.records_updated,
        sync_log.records_unchanged,
        sync_log.records_deleted,
        sync_log.records_errored,
        sync_log.duration_ms,
    )
    if warning:
        logger.warning("Sync %s of %s: %s", sync_log.id, organization.code, warning)
    return sync_log


class IncompleteRead(PemsError):
    """A full read saw fewer rows than PEMS holds at its end."""

    summary = "The read is incomplete"


def _check_complete(sync_log: PfaSyncLog, held_now: int) -> None:
    """Raise IncompleteRead unless the read saw at least as many rows as PEMS holds now.

    Keys come in strictly ascending order (the client checks), and a row without a visible key is
    read once (the client drops it where the next page brings it again), so every row read is a
    distinct record, stored or kept aside, as PEMS counts them. Rows deleted during the read make PEMS hold fewer; a row the
    read missed, however it was missed, makes it hold more.
    """
    if sync_log.records_processed < held_now:
        raise IncompleteRead(
            f"PEMS holds {held_now:,} records of {sync_log.organization.code} now, but this read saw "
            f"{sync_log.records_processed:,}: rows were added behind the read while it ran, or PEMS ended "
            "it early. Pages read are kept; nothing was marked deleted and the watermark did not move."
        )


class _DeletedKeys:
    """The keys a full read finds in the mirror but not in PEMS, page by page.

    Pages come in key order and each covers the keys after the page before it, so the mirror's
    live keys in a page's range that the page does not hold are gone from PEMS. Keys are kept only
    while they stay within the guard (`SYNC_DELETE_GUARD_PERCENT` of the live records), so
    memory stays bounded when a broken grid makes everything look deleted.
    """

    def __init__(self, sync_log: PfaSyncLog) -> None:
        self.sync_log = sync_log
        self.organization_id = sync_log.organization_id
        self.live_at_start = pfa_live_count(organization_id=self.organization_id)
        self.limit = (
            None
            if sync_log.allow_mass_delete
            else math.floor(self.live_at_start * settings.SYNC_DELETE_GUARD_PERCENT / 100)
        )
        self.keys: list[str] = []
        self.count = 0

    @property
    def held_back(self) -> bool:
        return self.limit is not None and self.count > self.limit

    def add_page(
        self, stored: dict[str, str], page_keys: list[str], hidden_key_ranges: list[tuple[str | None, str | None]]
    ) -> None:
        """Note the stored keys of a page's range that the page does not hold, but for those in a
        range where it read a row whose key PEMS does not show: that row may be one of them."""
        if gone := stored.keys() - set(page_keys):
            for low, high in hidden_key_ranges:
                gone = {key for key in gone if not ((low is None or key > low) and (high is None or key < high))}
            self._add(gone)

    def add_after(self, last_key: str | None) -> None:
        """Note the stored keys after the last one read: PEMS holds none of them."""
        count = pfa_live_count(organization_id=self.organization_id, after=last_key)
        if self.limit is not None and self.count + count > self.limit:
            self.count += count
            return
        self._add(pfa_key_range_hashes(organization_id=self.organization_id, after=last_key, through=None))

    def _add(self, keys) -> None:
        self.count += len(keys)
        if not self.held_back:
            self.keys.extend(keys)

    def apply(self) -> tuple[int, str, dict]:
        """Mark the keys deleted; returns (how many, a warning, error details) for the run."""
        if self.held_back:
            percent = settings.SYNC_DELETE_GUARD_PERCENT
            warning = (
                f"{self.count:,} of {self.live_at_start:,} records are gone from PEMS, more than "
                f"SYNC_DELETE_GUARD_PERCENT ({percent:g}%): none were marked deleted, since a PEMS permission "
                "change or a broken filter can make a grid look empty. If they really are gone, run "
                "`manage.py sync_pems --full --allow-mass-delete`."
            )
            return 0, warning, {"deletions_held_back": self.count}
        deleted_at = timezone.now()
        deleted = pfa_records_mark_deleted(
            organization_id=self.organization_id, pfa_ids=self.keys, deleted_at=deleted_at
        )
        modifications_hold_deleted(organization_id=self.organization_id, pfa_ids=self.keys)
        return deleted, "", {}


@contextmanager
def _page_transaction() -> Iterator[None]:
    """One page's transaction: its rows, rejected rows and counters, all or nothing.

    On PostgreSQL the commit does not wait for the disk (`synchronous_commit` off, for this
    transaction only): a crash of the database can lose the last fraction of a second of pages,
    which the next sync reads again, but never half a page, and nothing committed before them.
    A first load is 1.12x slower without it (decision 8). Only the read sync commits this way: PEMS
    keeps its rows.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")
        yield


@dataclass
class _PreparedPage:
    """A grid page as the read-ahead thread hands it over: typed on a first load; otherwise each
    row's key and content hash, for finding the rows that changed."""

    rows: list[dict[str, str]]
    server_date: datetime | None
    after: str | None
    last_key: str | None
    hidden_key_ranges: list[tuple[str | None, str | None]]
    parsed: ParsedRows | None = None
    keys: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)

    @property
    def hidden_at_end(self) -> bool:
        """Whether the page read a row whose key PEMS does not show after its last key, at the grid's end."""
        return any(high is None for _, high in self.hidden_key_ranges)


def _prepare_page(page: GridPage, *, time_zone: ZoneInfo, organization_code: str, type_rows: bool) -> _PreparedPage:
    prepared = _PreparedPage(page.rows, page.server_date, page.after, page.last_key, page.hidden_key_ranges)
    if type_rows:
        prepared.parsed = parse_pfa_rows(page.rows, time_zone=time_zone, organization_code=organization_code)
    else:
        prepared.keys = pfa_keys(page.rows)
        prepared.hashes = list(map(content_hash, page.rows))
    return prepared


def _changed_rows(
    organization: Organization, page: _PreparedPage, *, by_range: bool, deletions: "_DeletedKeys | None"
) -> list[dict[str, str]]:
    """The page's rows whose content hash is not the one the mirror holds: only those need typing.

    A full read reads the stored hashes of the page's whole key range (one index range read) and
    notes the stored keys in it that PEMS no longer holds; an incremental read looks up its keys.
    """
    if not by_range:
        stored = pfa_content_hashes(organization_id=organization.pk, pfa_ids=list(filter(is_text, page.keys)))
    elif page.last_key is None:
        stored = {}  # no keyed row: the page covers no range of keys
    else:
        stored = pfa_key_range_hashes(organization_id=organization.pk, after=page.after, through=page.last_key)
        if deletions is not None:
            deletions.add_page(stored, page.keys, page.hidden_key_ranges)
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


def _incremental_filters(sync_log: PfaSyncLog, pems: PemsSettings) -> list[GridFilter]:
    """The `pfs_lastmodified` filter of an incremental read; none for a full one.

    The watermark is the organization's, for the grid it was taken from: without one (no completed
    read yet, or the connection now reads another base URL, tenant or PEMS organization) an
    incremental run reads everything and says so by becoming a full run.
    """
    if sync_log.sync_type != PfaSyncLog.SyncType.INCREMENTAL:
        return []
    watermark = sync_log.organization.watermark_for(pems.grid_source)
    if watermark is None:
        sync_log.set_sync_type(PfaSyncLog.SyncType.FULL)
        logger.info(
            "Sync %s: no watermark for this grid yet, so a full read instead of an incremental one", sync_log.id
        )
        return []
    try:
        since = watermark - timedelta(minutes=settings.SYNC_INCREMENTAL_LOOKBACK_MINUTES)
        return [modified_since_filter(since, time_zone=pems.zone, until=timezone.now())]
    except OverflowError:
        return []  # a watermark at the start of year 1: no save can be older, so every row is read


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
