"""The run log's totals per direction, for /metrics: rows read, inserted, updated, deleted and
written, runs per status, and the histogram of run durations.

Adding up the whole of `pfa_sync_log` at each scrape would cost more as the log grows: a year of
15-minute runs of 20 organizations is 700,000 rows, most of a second. So the tick folds the runs
created more than FOLD_AFTER ago into `ops_run_totals` (never a run still queued or running, nor
any created after the oldest of those, so no folded run can change again), and a scrape adds up
only the runs created since, found by `created_at`'s index. Runs deleted with their organization
stay counted: the counters never go back.
"""

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, F, Min, Q, QuerySet, Sum
from django.utils import timezone

from ops.models import RunTotals
from synclog.models import PfaSyncLog, SyncStatus

# Upper bounds, in seconds, of the run duration histogram: an incremental read takes seconds, a
# million-row first load about half a minute here, a slow PEMS hours (SYNC_TASK_TIMEOUT: 4 h).
RUN_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
FOLD_AFTER = timedelta(days=1)

Totals = dict[str, int]


def run_totals() -> dict[str, Totals]:
    """Every run's figures by direction (each direction present, zeros where none): `read`,
    `inserted`, `updated`, `deleted`, `written` (inserted + updated), `status_<status>` (runs in
    each status), `duration_count` and `duration_ms` (finished runs) and `le_<i>` (finished runs
    that took at most RUN_DURATION_BUCKETS[i] seconds)."""
    folded = list(RunTotals.objects.all())
    through = min((row.through for row in folded), default=None)
    recent = PfaSyncLog.objects.all() if through is None else PfaSyncLog.objects.filter(created_at__gte=through)
    added = _aggregate(recent)
    totals = {direction: _sum(_zeros(), added.get(direction, {})) for direction in PfaSyncLog.Direction.values}
    for row in folded:
        totals[row.direction] = _sum(totals.get(row.direction, _zeros()), row.totals)
    return totals


def run_totals_fold(*, now: datetime | None = None) -> None:
    """Fold the runs created since the last fold and more than FOLD_AFTER ago into `ops_run_totals`.

    Concurrent folds take turns on the locked rows (the very first two may both count every run,
    each correctly, the later one's result standing).
    """
    now = now or timezone.now()
    with transaction.atomic():
        folded = {row.direction: row for row in RunTotals.objects.select_for_update()}
        previous = min((row.through for row in folded.values()), default=None)
        oldest_active = PfaSyncLog.objects.filter(status__in=SyncStatus.active()).aggregate(oldest=Min("created_at"))[
            "oldest"
        ]
        through = now - FOLD_AFTER if oldest_active is None else min(now - FOLD_AFTER, oldest_active)
        if previous is not None and through <= previous:
            return
        runs = PfaSyncLog.objects.filter(created_at__lt=through)
        if previous is not None:
            runs = runs.filter(created_at__gte=previous)
        added = _aggregate(runs)
        for direction in PfaSyncLog.Direction.values:
            kept = folded[direction].totals if direction in folded else {}
            RunTotals.objects.update_or_create(
                direction=direction, defaults={"through": through, "totals": _sum(kept, added.get(direction, {}))}
            )


def _aggregate(runs: QuerySet[PfaSyncLog]) -> dict[str, Totals]:
    """`runs` added up per direction, in one grouped query."""
    finished = Q(status__in=SyncStatus.terminal())
    rows = (
        runs.values("direction")
        .annotate(
            read=Sum("records_processed"),
            inserted=Sum("records_inserted"),
            updated=Sum("records_updated"),
            deleted=Sum("records_deleted"),
            # Rows a read wrote into the mirror; edits a write run wrote to PEMS.
            written=Sum(F("records_inserted") + F("records_updated") + F("records_written")),
            duration_count=Count("pk", filter=finished & Q(duration_ms__isnull=False)),
            duration_total_ms=Sum("duration_ms", filter=finished),
            **{
                f"le_{index}": Count("pk", filter=finished & Q(duration_ms__lte=bound * 1000))
                for index, bound in enumerate(RUN_DURATION_BUCKETS)
            },
            **{f"status_{status}": Count("pk", filter=Q(status=status)) for status in SyncStatus.values},
        )
        .order_by()
    )
    totals = {}
    for row in rows:
        direction = row.pop("direction")
        row["duration_ms"] = row.pop("duration_total_ms")
        totals[direction] = {key: int(value or 0) for key, value in row.items()}
    return totals


def _zeros() -> Totals:
    return dict.fromkeys(_aggregate_keys(), 0)


def _aggregate_keys() -> list[str]:
    return [
        "read",
        "inserted",
        "updated",
        "deleted",
        "written",
        "duration_count",
        "duration_ms",
        *(f"le_{index}" for index in range(len(RUN_DURATION_BUCKETS))),
        *(f"status_{status}" for status in SyncStatus.values),
    ]


def _sum(first: Totals, second: Totals) -> Totals:
    return {key: first.get(key, 0) + second.get(key, 0) for key in first.keys() | second.keys()}
