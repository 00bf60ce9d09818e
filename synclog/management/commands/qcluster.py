"""`manage.py qcluster`: django-q2's cluster, with the sync schedules, leases and a graceful stop.

On SIGTERM or SIGINT a running sync finishes its current page, is marked `cancelled` and frees its
organization before the cluster exits (django-q2 alone would let it run to its end). While its
sentinel lives, the cluster says it is alive every SYNC_HEARTBEAT_SECONDS (`worker_beat`).
"""

import logging
import signal
import threading
import time

from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.utils import timezone
from django_q.cluster import Cluster
from django_q.conf import Conf
from django_q.management.commands.qcluster import Command as DjangoQClusterCommand

from synclog.models import stale_runs_expire
from synclog.worker import (
    FULL_SCHEDULE,
    TICK_SCHEDULE,
    install_shutdown_event,
    schedules_upsert,
    worker_beat,
    worker_gone,
)

logger = logging.getLogger("synclog.worker")


class Command(DjangoQClusterCommand):
    help = "Start the background sync worker (a django-q2 cluster)."

    def handle(self, *args, **options):
        rows = schedules_upsert()
        expired = stale_runs_expire()
        if expired:
            logger.warning("Marked %d run(s) failed whose worker was lost", len(expired))
        tick, full = rows[TICK_SCHEDULE], rows[FULL_SCHEDULE]
        if tick is None:
            logger.info("Background sync worker started; the schedules are disabled (ENABLE_SYNC_WORKER=false)")
        else:
            logger.info(
                "Background sync worker started with interval %r (next run %s)",
                tick.cron,
                tick.next_run.isoformat(),
            )
            if full is None:
                logger.info("Scheduled full reads are disabled (%s)", FULL_SCHEDULE.off_reason)
            else:
                logger.info("Scheduled full reads %r (next run %s)", full.cron, full.next_run.isoformat())
        shutdown = install_shutdown_event()  # before the cluster forks, so every worker shares it
        cluster = Cluster()
        stopping = threading.Event()

        def stop(signum, frame):
            # Signal handlers must not block: flag the syncs and stop the cluster from a thread.
            if stopping.is_set():
                return
            stopping.set()
            logger.info(
                "Background sync worker stopping (%s): running syncs stop at their next page",
                signal.Signals(signum).name,
            )
            threading.Thread(target=lambda: (shutdown.set(), cluster.stop()), daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        cluster.start()
        started_at, last_beat = timezone.now(), 0.0
        try:
            while cluster.sentinel.is_alive():
                if not stopping.is_set() and time.monotonic() - last_beat >= settings.SYNC_HEARTBEAT_SECONDS:
                    last_beat = time.monotonic()
                    self._beat(cluster, started_at)
                cluster.sentinel.join(timeout=1)
        finally:
            try:
                worker_gone(cluster_id=cluster.cluster_id)
            except DatabaseError:
                logger.warning("Could not record that the worker stopped", exc_info=True)
        logger.info("Background sync worker stopped")

    @staticmethod
    def _beat(cluster: Cluster, started_at) -> None:
        try:
            close_old_connections()  # one broken by a database restart is replaced, not kept failing
            worker_beat(cluster_id=cluster.cluster_id, workers=Conf.WORKERS, started_at=started_at)
        except DatabaseError:  # the cluster goes on; it reads as not alive until the database is back
            logger.warning("Could not record that the worker is alive", exc_info=True)
