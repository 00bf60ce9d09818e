"""What the ops dashboard shows: the worker, each organization's sync health, and 30 days of runs.

`dashboard_overview()` gathers everything in a fixed number of queries (no per-organization loop
against the database) and shapes the charts as plain numbers; the template draws them as SVG.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q, Subquery
from django.db.models.functions import TruncDate
from django.utils import timezone

from mirror.materialized import views_refresh_state
from mirror.models import Organization
from mirror.selectors import EditCounts, edit_counts_by_organization, mirror_size_subquery
from synclog.models import PfaSyncLog, SyncStatus
from synclog.selectors import (
    completed_reads,
    interval_length,
    last_write_runs,
    latest_runs,
    organization_is_stale,
    organizations_sync_state,
    sync_stale_after,
)
from synclog.worker import worker_status

CHART_DAYS = 30
# Bars per organization chart: more would not leave room to print each value.
CHART_MAX_RUNS = 30

CHART_WIDTH = 720
CHART_HEIGHT = 200
MARGIN_LEFT = 64
MARGIN_RIGHT = 12
# Room for the title and for the value printed above the tallest bar.
MARGIN_TOP = 36
MAX_BAR_WIDTH = 40
MARGIN_BOTTOM = 42


def compact_number(value: float) -> str:
    """1234 -> '1.2k', so values fit above narrow bars."""
    for limit, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{value:.1f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    value_label: str
    axis_label: str
    failed: bool = False

    @property
    def centre(self) -> float:
        return self.x + self.width / 2


@dataclass
class BarChart:
    """A bar chart already laid out in SVG coordinates, with every value printed."""

    title: str
    y_label: str
    x_label: str
    bars: list[Bar] = field(default_factory=list)
    y_max_label: str = "0"
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    left: int = MARGIN_LEFT
    top: int = MARGIN_TOP
    plot_width: int = CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_height: int = CHART_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM

    @property
    def bottom(self) -> int:
        return self.top + self.plot_height

    @property
    def right(self) -> int:
        return self.left + self.plot_width


def bar_chart(
    *,
    title: str,
    y_label: str,
    x_label: str,
    points: list[tuple[str, float, bool]],
    value_format=compact_number,
) -> BarChart:
    """Lay out `points` (axis label, value, highlighted) as bars scaled to the largest value."""
    chart = BarChart(title=title, y_label=y_label, x_label=x_label)
    if not points:
        return chart
    peak = max(value for _, value, _ in points) or 1
    chart.y_max_label = value_format(peak)
    slot = chart.plot_width / len(points)
    width = min(max(slot * 0.7, 1), MAX_BAR_WIDTH)
    # Label every n-th bar on the x axis so the labels never overlap.
    label_every = max(1, round(len(points) / 10))
    for index, (axis_label, value, highlighted) in enumerate(points):
        height = chart.plot_height * value / peak
        chart.bars.append(
            Bar(
                x=round(chart.left + index * slot + (slot - width) / 2, 1),
                y=round(chart.bottom - height, 1),
                width=round(width, 1),
                height=round(height, 1),
                value_label=value_format(value),
                axis_label=axis_label if index % label_every == 0 else "",
                failed=highlighted,
            )
        )
    return chart


def _organization_rows(*, now: datetime, stale_after: timedelta, last_runs: dict) -> list[dict]:
    completed = completed_reads(latest_runs())
    # Every organization, inactive ones too: the last sync, the failures since, stale and the last
    # write are the answers /metrics and the alerts use (synclog.selectors).
    organizations = organizations_sync_state(Organization.objects.all()).annotate(
        last_success_message=Subquery(completed.values("error_message")[:1]),
        last_success_details=Subquery(completed.values("error_details")[:1]),
        mirror_size=mirror_size_subquery(),
    )
    edits = edit_counts_by_organization()
    last_writes = last_write_runs()
    rows = []
    for organization in organizations:
        rows.append(
            {
                "organization": organization,
                "last_success_at": organization.last_sync_at,
                "age": now - organization.last_sync_at if organization.last_sync_at else None,
                "stale": organization_is_stale(organization, now=now, stale_after=stale_after),
                "last_run": last_runs.get(organization.code),
                "consecutive_failures": organization.consecutive_failures,
                "mirror_size": organization.mirror_size,
                # The last completed read found more records gone than SYNC_DELETE_GUARD_PERCENT
                # allows and deleted none: ops decide (`sync_pems --full --allow-mass-delete`).
                "deletions_held_back": (organization.last_success_details or {}).get("deletions_held_back"),
                "last_success_message": organization.last_success_message,
                "edits": edits.get(organization.pk, EditCounts()),
                "last_write": last_writes.get(organization.pk),
            }
        )
    return rows


def _charts(*, now: datetime) -> dict:
    since = now - timedelta(days=CHART_DAYS)
    runs = (
        PfaSyncLog.objects.filter(direction="read", created_at__gte=since, status__in=SyncStatus.terminal())
        .select_related("organization")
        .only(
            "organization__code",
            "created_at",
            "started_at",
            "status",
            "records_processed",
            "duration_ms",
        )
        .order_by("-created_at")
    )
    # Newest CHART_MAX_RUNS per organization; the runs of 30 days are read once, newest first.
    per_organization: dict[str, list[PfaSyncLog]] = defaultdict(list)
    run_totals: dict[str, int] = defaultdict(int)
    for run in runs.iterator(chunk_size=2000):
        code = run.organization.code
        run_totals[code] += 1
        if len(per_organization[code]) < CHART_MAX_RUNS:
            per_organization[code].append(run)

    organization_charts = []
    for code in sorted(per_organization):
        recent = list(reversed(per_organization[code]))
        labels = [timezone.localtime(run.started_at or run.created_at).strftime("%m-%d %H:%M") for run in recent]
        shown = f"last {len(recent)} of {run_totals[code]} runs" if run_totals[code] > len(recent) else "every run"
        failed = [run.status == SyncStatus.FAILED for run in recent]
        organization_charts.append(
            {
                "code": code,
                "records": bar_chart(
                    title=f"{code}: records processed per run ({shown}, {CHART_DAYS} days)",
                    y_label="records",
                    x_label="run start",
                    points=[
                        (label, run.records_processed, bad)
                        for label, run, bad in zip(labels, recent, failed, strict=True)
                    ],
                ),
                "duration": bar_chart(
                    title=f"{code}: duration per run in seconds ({shown}, {CHART_DAYS} days)",
                    y_label="seconds",
                    x_label="run start",
                    points=[
                        (label, round((run.duration_ms or 0) / 1000, 1), bad)
                        for label, run, bad in zip(labels, recent, failed, strict=True)
                    ],
                ),
            }
        )

    failures_by_day = dict(
        PfaSyncLog.objects.filter(direction="read", created_at__gte=since, status=SyncStatus.FAILED)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(n=Count("pk"))
        .values_list("day", "n")
    )
    today = timezone.localdate(now)
    days = [today - timedelta(days=offset) for offset in range(CHART_DAYS - 1, -1, -1)]
    failures = bar_chart(
        title=f"Failed runs per day, all organizations (last {CHART_DAYS} days)",
        y_label="failed runs",
        x_label="day",
        points=[(day.strftime("%m-%d"), failures_by_day.get(day, 0), True) for day in days],
    )
    return {"organizations": organization_charts, "failures": failures}


def dashboard_overview(*, now: datetime | None = None) -> dict:
    """Everything the dashboard page shows, computed in a fixed number of queries."""
    now = now or timezone.now()
    worker = worker_status()
    interval = interval_length(settings.SYNC_INTERVAL, now=now)
    stale_after = sync_stale_after(now=now)
    active_runs = list(
        PfaSyncLog.objects.filter(status__in=SyncStatus.active()).select_related("organization").order_by("created_at")
    )
    return {
        "now": now,
        "worker": worker,
        "interval": interval,
        "stale_after": stale_after,
        "organizations": _organization_rows(now=now, stale_after=stale_after, last_runs=worker["last_runs"]),
        "active_runs": active_runs,
        "refresh": bool(active_runs),
        "views": views_refresh_state(),
        "charts": _charts(now=now),
        "failed_in_window": PfaSyncLog.objects.filter(
            Q(status=SyncStatus.FAILED),
            direction="read",
            created_at__gte=now - timedelta(days=CHART_DAYS),
        ).count(),
    }
