"""What the sync tells observers outside it (the ops app): a run ended, a tick of the schedule ended.

The sync never calls its observers by name: they connect to these signals in their
`AppConfig.ready`, so the sync runs the same with or without them. A receiver that raises would
break the run, so `send_robust` is used and its failures are logged.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from django.dispatch import Signal

from pfasync.logs import RunFields, run_fields_logged

if TYPE_CHECKING:
    from synclog.models import PfaSyncLog

logger = logging.getLogger(__name__)

# A run (read or write) left `run_log_context`, whatever its outcome. Arguments: `sync_log`.
run_ended = Signal()
# The schedule's tick queued its runs and did its own work. Arguments: `now`.
tick_ended = Signal()


@contextmanager
def run_log_context(sync_log: "PfaSyncLog") -> Iterator[None]:
    """Log everything inside as part of `sync_log`'s run; at its end, send `run_ended`.

    Wrap a run (`synclog.engine.sync_run`, `synclog.writeback.write_run`, or what calls them) with
    it. Entering it again for the same run inside it adds nothing: the run ends once.
    """
    fields = RunFields(
        run_id=str(sync_log.pk),
        batch_id=str(sync_log.batch_id),
        organization=sync_log.organization.code,
        direction=sync_log.direction,
    )
    with run_fields_logged(fields) as outermost:
        try:
            yield
        finally:
            if outermost:
                _send(run_ended, sync_log=sync_log)


def tick_end(*, now: datetime) -> None:
    """Tell the observers the tick did its work (never raises)."""
    _send(tick_ended, now=now)


def _send(signal: Signal, **arguments) -> None:
    # An observer's failure is its own: it never becomes the run's or the tick's.
    for receiver, result in signal.send_robust(sender=None, **arguments):
        if isinstance(result, Exception):
            logger.error("%s failed: %s", getattr(receiver, "__qualname__", receiver), result, exc_info=result)
