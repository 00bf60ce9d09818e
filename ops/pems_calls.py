"""PEMS calls counted by outcome and latency, per process in memory and for /metrics in the database.

`mirror.pems` reports every call (all its attempts) to `pems_call_observe`, which only adds to this
process's tally: the call's thread may be one that must not touch the database (the sync's
read-ahead thread), and a call should not wait on a write. The tally reaches `ops_pems_call_stat`
when a run ends (synclog's `run_ended`, `ops.metrics.on_run_ended`), on each tick of the worker and
when this process serves a scrape: a few rows per flush, inserted and never updated, so that
no flush waits for another process's. The tick folds the rows together.

Not at exit: by then the process may point at another database than the one it counted for (a
test run's database is gone and the settings name the real one again).
"""

import logging
import threading
from bisect import bisect_left
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Max, Sum

from ops.models import PemsCallStat

logger = logging.getLogger(__name__)

OUTCOMES = ("ok", "retried", "4xx", "5xx", "timeout")
# Upper bounds, in seconds, of the latency histogram's buckets: a count answers in milliseconds, a
# 5,000-row page in about a second, a struggling PEMS in tens of seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_lock = threading.Lock()
# (outcome, bucket bound or None for above the largest) -> [calls, seconds]
_pending: dict[tuple[str, float | None], list[float]] = {}


def pems_call_observe(outcome: str, seconds: float) -> None:
    """Count one PEMS call in this process's tally (registered with `mirror.pems.call_observer_register`)."""
    index = bisect_left(LATENCY_BUCKETS, seconds)
    bound = LATENCY_BUCKETS[index] if index < len(LATENCY_BUCKETS) else None
    with _lock:
        tally = _pending.setdefault((outcome, bound), [0, 0.0])
        tally[0] += 1
        tally[1] += seconds


def pems_calls_flush() -> int:
    """Write this process's tally to the database; returns the number of calls written.

    On a database error the tally is kept for the next flush and the error raised.
    """
    with _lock:
        taken = dict(_pending)
        _pending.clear()
    if not taken:
        return 0
    try:
        with transaction.atomic():
            PemsCallStat.objects.bulk_create(
                PemsCallStat(outcome=outcome, le=bound, calls=int(calls), seconds=seconds)
                for (outcome, bound), (calls, seconds) in taken.items()
            )
    except BaseException:
        with _lock:
            for key, (calls, seconds) in taken.items():
                tally = _pending.setdefault(key, [0, 0.0])
                tally[0] += calls
                tally[1] += seconds
        raise
    return int(sum(calls for calls, _ in taken.values()))


def pems_calls_flush_quietly() -> None:
    """`pems_calls_flush`, logging instead of raising (before a scrape, at the end of a command)."""
    try:
        pems_calls_flush()
    except Exception as error:
        logger.warning("PEMS call counts not written yet (%s); they are kept for the next flush", type(error).__name__)


def pems_call_stats_compact() -> None:
    """Fold the rows written so far into one per outcome and bucket.

    The rows summed are deleted in the same transaction; if another compaction deleted some of
    them meanwhile, this one rolls back and leaves the folding to it, so no call counts twice.
    """
    try:
        with transaction.atomic():
            newest = PemsCallStat.objects.aggregate(newest=Max("id"))["newest"]
            rows = PemsCallStat.objects.filter(id__lte=newest)
            count = rows.count()
            folded = list(rows.values("outcome", "le").annotate(calls=Sum("calls"), seconds=Sum("seconds")).order_by())
            if len(folded) == count:
                return  # one row per outcome and bucket already
            if rows.delete()[0] != count:
                raise _Raced
            PemsCallStat.objects.bulk_create(PemsCallStat(**row) for row in folded)
    except _Raced:
        logger.info("PEMS call counts were being folded by another process")


class _Raced(Exception):
    """Another compaction took some of the rows: this one rolls back."""


@dataclass
class PemsCallTotals:
    """Every PEMS call counted so far, for /metrics: per outcome, and the latency histogram."""

    calls: dict[str, int] = field(default_factory=dict)
    # Cumulative counts per bucket bound (float("inf") last), as Prometheus wants them.
    buckets: list[tuple[float, int]] = field(default_factory=list)
    seconds: float = 0.0


def pems_call_totals() -> PemsCallTotals:
    """The calls written to the database by every process (one grouped query)."""
    totals = PemsCallTotals(calls=dict.fromkeys(OUTCOMES, 0))
    per_bucket: dict[float, int] = dict.fromkeys((*LATENCY_BUCKETS, float("inf")), 0)
    rows = PemsCallStat.objects.values("outcome", "le").annotate(calls=Sum("calls"), seconds=Sum("seconds")).order_by()
    for row in rows:
        totals.calls[row["outcome"]] = totals.calls.get(row["outcome"], 0) + row["calls"]
        bound = float("inf") if row["le"] is None else row["le"]
        per_bucket[bound] = per_bucket.get(bound, 0) + row["calls"]
        totals.seconds += row["seconds"]
    running = 0
    for bound in sorted(per_bucket):
        running += per_bucket[bound]
        totals.buckets.append((bound, running))
    return totals
