"""The worker's signs of life, kept in the database where the web process (readiness, /metrics) sees them."""

import logging
from datetime import datetime

from django.utils import timezone

from ops.models import WorkerHeartbeat

logger = logging.getLogger(__name__)


def worker_seen_record(*, tick: bool = False, now: datetime | None = None) -> None:
    """Note that a worker is alive now (`tick`: because the sync tick ran)."""
    now = now or timezone.now()
    changes = {"seen_at": now, **({"last_tick_at": now} if tick else {})}
    WorkerHeartbeat.objects.update_or_create(pk=1, defaults=changes)


def worker_heartbeat() -> WorkerHeartbeat | None:
    """The worker's last signs of life; None when no worker has ever been seen."""
    return WorkerHeartbeat.objects.filter(pk=1).first()


def on_worker_spawn(sender, proc_name: str = "", **kwargs) -> None:
    """django-q2's `post_spawn`: a worker process of a cluster started, so a cluster is alive even
    before its first tick. Never lets a database problem stop the worker from starting."""
    try:
        worker_seen_record()
    except Exception as error:
        logger.warning("Could not record that worker %s started: %s", proc_name, type(error).__name__)
