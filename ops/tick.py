"""What ops does on each tick of the worker, after the tick has queued its reads: it receives
synclog's `tick_ended` (connected in `OpsConfig.ready`)."""

import logging
from contextlib import nullcontext
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from ops.alerts import alerts_check
from ops.heartbeat import worker_seen_record
from ops.mirror_counts import mirror_counts_refresh
from ops.pems_calls import pems_call_stats_compact, pems_calls_flush
from ops.run_totals import run_totals_fold
from synclog.worker import scheduled_organizations

logger = logging.getLogger(__name__)


def ops_tick(*, now: datetime | None = None) -> None:
    """Note the tick (readiness, /metrics), recount the mirrors, write and fold the PEMS call
    counts, fold the run log's totals, then check the alerts.

    Never raises: a step that fails is logged and the next tick tries again. Each step but the last
    runs in a transaction of its own (a savepoint inside another), so a failed one changes nothing;
    the alert check commits each state change as it makes it, so that no transaction stays open
    while an alert is delivered. Call it last in the tick: a webhook may take seconds to answer.
    """
    now = now or timezone.now()
    steps = (
        ("record the tick", True, lambda: worker_seen_record(tick=True, now=now)),
        ("count the mirrors", True, mirror_counts_refresh),
        ("write the PEMS call counts", True, pems_calls_flush),
        ("fold the PEMS call counts", True, pems_call_stats_compact),
        ("fold the run totals", True, lambda: run_totals_fold(now=now)),
        ("check the alerts", False, lambda: alerts_check(organizations=scheduled_organizations(), now=now)),
    )
    for what, atomic, step in steps:
        try:
            with transaction.atomic() if atomic else nullcontext():
                step()
        except Exception:
            logger.exception("Ops tick: could not %s", what)


def on_tick_ended(sender, *, now: datetime, **kwargs) -> None:
    """synclog's `tick_ended`: the tick queued its runs; ops does its own part of the tick."""
    ops_tick(now=now)
