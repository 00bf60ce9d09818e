"""/metrics: pfasync's state in the Prometheus text format, read from the database at each scrape.

Every number comes from the database, which the web process, the worker processes and the
`sync_pems` command share: one `PfasyncCollector.collect()` per scrape runs a fixed number of
small queries (organizations with their last runs, cached mirror sizes, open edits, the run log's
folded totals and its runs since, the PEMS call counts, the worker's heartbeat), whatever the size
of the mirror or of the run log.
"""

import logging
from collections.abc import Iterator
from uuid import UUID

from django.db import transaction
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from mirror.selectors import EditCounts, edit_counts_by_organization
from ops.heartbeat import worker_heartbeat
from ops.mirror_counts import mirror_counts_refresh
from ops.models import MirrorCount
from ops.pems_calls import OUTCOMES, pems_call_totals, pems_calls_flush, pems_calls_flush_quietly
from ops.run_totals import RUN_DURATION_BUCKETS, run_totals
from synclog.models import PfaSyncLog, SyncStatus
from synclog.selectors import organizations_sync_state

logger = logging.getLogger(__name__)


def metrics_text() -> bytes:
    """The scrape's answer; this process's own PEMS call counts are written first."""
    pems_calls_flush_quietly()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PfasyncCollector())
    return generate_latest(registry)


def run_figures_write(*, organization_ids: list[UUID]) -> None:
    """After runs: write this process's PEMS call counts and recount these organizations' mirrors,
    on a savepoint. Never raises (the database may be what failed the run): the next tick does it."""
    try:
        pems_calls_flush()
        with transaction.atomic():
            mirror_counts_refresh(organization_ids=organization_ids)
    except Exception as error:
        logger.warning("Figures for /metrics wait for the next tick (%s)", type(error).__name__)


def on_run_ended(sender, *, sync_log: PfaSyncLog, **kwargs) -> None:
    """synclog's `run_ended`: write the run's figures (its PEMS calls, its organization's mirror size).

    A run that changed no row leaves the mirror's size as it was (recounting a million rows would
    double an unchanged incremental read's time), unless that size was never counted.
    """
    organization_id = sync_log.organization_id
    try:
        recount = (
            sync_log.changed_merged_view or not MirrorCount.objects.filter(organization_id=organization_id).exists()
        )
    except Exception:  # the database failed the run: run_figures_write says so and leaves it to the tick
        recount = True
    run_figures_write(organization_ids=[organization_id] if recount else [])


class PfasyncCollector(Collector):
    """Reads everything /metrics shows, once per scrape."""

    def collect(self) -> Iterator[Metric]:
        yield from _organization_metrics()
        yield from _run_metrics()
        yield from _pems_call_metrics()
        yield from _worker_metrics()


def _organization_metrics() -> Iterator[Metric]:
    now = timezone.now()
    organizations = list(organizations_sync_state())
    sizes = {row.organization_id: row for row in MirrorCount.objects.filter(organization__in=organizations)}
    edits = edit_counts_by_organization()
    label = ["organization"]
    age = GaugeMetricFamily(
        "pfasync_last_completed_read_age_seconds",
        "Seconds since the organization's last completed read ended (+Inf: none yet).",
        labels=label,
    )
    completed_at = GaugeMetricFamily(
        "pfasync_last_completed_read_timestamp_seconds",
        "When the organization's last completed read ended (Unix time).",
        labels=label,
    )
    status = GaugeMetricFamily(
        "pfasync_last_run_status",
        "1 for the status of the organization's newest run of each direction, 0 for the other statuses.",
        labels=["organization", "direction", "status"],
    )
    failures = GaugeMetricFamily(
        "pfasync_consecutive_failed_reads",
        "Reads failed in a row since the organization's last completed one.",
        labels=label,
    )
    live = GaugeMetricFamily(
        "pfasync_mirror_rows", "Live rows in the organization's mirror, as last counted.", labels=label
    )
    deleted = GaugeMetricFamily(
        "pfasync_mirror_rows_deleted",
        "Rows of the organization's mirror marked deleted in PEMS and not purged yet, as last counted.",
        labels=label,
    )
    kept_aside = GaugeMetricFamily(
        "pfasync_records_kept_aside",
        "PEMS rows the organization's last finished read could not store (kept aside, records_errored).",
        labels=label,
    )
    waiting = GaugeMetricFamily(
        "pfasync_edits_waiting", "Committed edits of the organization waiting to be written to PEMS.", labels=label
    )
    conflicts = GaugeMetricFamily(
        "pfasync_conflicts_open", "Edits of the organization that met a conflicting PEMS change.", labels=label
    )
    for organization in organizations:
        code = [organization.code]
        if organization.last_sync_at is None:
            age.add_metric(code, float("inf"))
        else:
            age.add_metric(code, max((now - organization.last_sync_at).total_seconds(), 0.0))
            completed_at.add_metric(code, organization.last_sync_at.timestamp())
        for direction in PfaSyncLog.Direction.values:
            current = getattr(organization, f"last_{direction}_status")
            if current is not None:
                for value in SyncStatus.values:
                    status.add_metric([organization.code, direction, value], 1.0 if value == current else 0.0)
        failures.add_metric(code, organization.consecutive_failures)
        if (size := sizes.get(organization.pk)) is not None:
            live.add_metric(code, size.live_rows)
            deleted.add_metric(code, size.deleted_rows)
        kept_aside.add_metric(code, organization.kept_aside or 0)
        open_edits = edits.get(organization.pk, EditCounts())
        waiting.add_metric(code, open_edits.waiting)
        conflicts.add_metric(code, open_edits.conflicts)
    yield from (age, completed_at, status, failures, live, deleted, kept_aside, waiting, conflicts)


def _run_metrics() -> Iterator[Metric]:
    totals = run_totals()
    label = ["direction"]
    rows = {
        kind: CounterMetricFamily(f"pfasync_rows_{kind}", description, labels=label)
        for kind, description in (
            ("read", "Rows runs read from their source (PEMS for reads)."),
            ("inserted", "Rows runs inserted at their destination (the mirror for reads)."),
            ("updated", "Rows runs updated at their destination."),
            ("deleted", "Rows runs marked deleted (records PEMS no longer holds)."),
            ("written", "Rows runs wrote to their destination: inserted plus updated."),
        )
    }
    runs = CounterMetricFamily(
        "pfasync_runs", "Runs by direction and status (queued and running included).", labels=["direction", "status"]
    )
    duration = HistogramMetricFamily("pfasync_run_duration_seconds", "How long finished runs took.", labels=label)
    for direction, figures in totals.items():
        for kind, family in rows.items():
            family.add_metric([direction], figures[kind])
        for status in SyncStatus.values:
            runs.add_metric([direction, status], figures[f"status_{status}"])
        buckets = [(floatToGoString(bound), figures[f"le_{i}"]) for i, bound in enumerate(RUN_DURATION_BUCKETS)]
        buckets.append(("+Inf", figures["duration_count"]))
        duration.add_metric([direction], buckets, sum_value=figures["duration_ms"] / 1000)
    yield from (*rows.values(), runs, duration)


def _pems_call_metrics() -> Iterator[Metric]:
    totals = pems_call_totals()
    calls = CounterMetricFamily(
        "pfasync_pems_calls",
        "PEMS calls (all attempts of one request) by outcome: ok, retried (ok after failed attempts), "
        "4xx (refused), 5xx (PEMS failed), timeout (no answer).",
        labels=["outcome"],
    )
    for outcome in OUTCOMES:
        calls.add_metric([outcome], totals.calls.get(outcome, 0))
    latency = HistogramMetricFamily(
        "pfasync_pems_call_duration_seconds", "How long PEMS calls took, attempts and waits between them included."
    )
    latency.add_metric(
        [], [(floatToGoString(bound), count) for bound, count in totals.buckets], sum_value=totals.seconds
    )
    yield from (calls, latency)


def _worker_metrics() -> Iterator[Metric]:
    heartbeat = worker_heartbeat()
    tick = GaugeMetricFamily(
        "pfasync_worker_last_tick_timestamp_seconds", "When the worker's sync tick last ran (Unix time)."
    )
    seen = GaugeMetricFamily(
        "pfasync_worker_last_seen_timestamp_seconds",
        "When a worker was last seen alive: a worker process started or the tick ran (Unix time).",
    )
    if heartbeat is not None:
        seen.add_metric([], heartbeat.seen_at.timestamp())
        if heartbeat.last_tick_at is not None:
            tick.add_metric([], heartbeat.last_tick_at.timestamp())
    yield from (tick, seen)
