"""`manage.py qcluster`: django-q2's cluster, with the sync schedules, leases and a graceful stop.

On SIGTERM or SIGINT a running sync finishes its current page, is marked `cancelled` and frees its
organization before the cluster exits (django-q2 alone would let it run to its end).
"""

import logging
import signal
import threading

from django_q.cluster import Cluster
from django_q.management.commands.qcluster import Command as DjangoQClusterCommand

from synclog.models import stale_runs_expire
from synclog.worker import (
    FULL_SCHEDULE,
    TICK_SCHEDULE,
    install_shutdown_event,
    schedules_upsert,
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
        while cluster.sentinel.is_alive():
            cluster.sentinel.join(timeout=1)
        logger.info("Background sync worker stopped")
