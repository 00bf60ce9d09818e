"""`manage.py qcluster`: django-q2's cluster, with the sync schedule, leases and a graceful stop.

On SIGTERM or SIGINT a running sync finishes its current page, is marked `cancelled` and frees its
organization before the cluster exits (django-q2 alone would let it run to its end).
"""

import logging
import signal
import threading

from django.conf import settings
from django_q.cluster import Cluster
from django_q.management.commands.qcluster import Command as DjangoQClusterCommand

from synclog.worker import install_shutdown_event, schedule_upsert, sync_expire_stale_runs

logger = logging.getLogger("synclog.worker")


class Command(DjangoQClusterCommand):
    help = "Start the background sync worker (a django-q2 cluster)."

    def handle(self, *args, **options):
        schedule = schedule_upsert()
        expired = sync_expire_stale_runs()
        if expired:
            logger.warning("Marked %d run(s) failed whose worker was lost", len(expired))
        if schedule is None:
            logger.info("Background sync worker started; the schedule is disabled (ENABLE_SYNC_WORKER=false)")
        else:
            logger.info(
                "Background sync worker started with interval %r (next run %s)",
                settings.SYNC_INTERVAL,
                schedule.next_run.isoformat(),
            )
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
