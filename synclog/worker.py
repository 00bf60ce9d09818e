"""The background sync worker: the schedule, the tick, leases, shutdown and the worker's status.

Scheduled, API, admin and command syncs all run through `synclog.engine`; this module only decides
when and for whom a sync is queued, and cleans up after workers that died.
"""

import logging
import multiprocessing
import multiprocessing.synchronize
import signal
import threading
from datetime import datetime, timedelta

from croniter import croniter
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Subquery
from django.utils import timezone

from mirror.models import Organization
from mirror.services import pems_client_for
from synclog.engine import fail_run, sync_run, sync_start
from synclog.models import PfaSyncLog, SyncStatus, latest_read_runs

logger = logging.getLogger(__name__)

SCHEDULE_NAME = "pfasync-sync-tick"
_shutdown: multiprocessing.synchronize.Event | None = None


def validate_sync_interval(expression: str) -> None:
    if not croniter.is_valid(expression):
        raise ImproperlyConfigured(
            f"SYNC_INTERVAL {expression!r} is not a valid cron expression "
            "(five fields: minute hour day-of-month month day-of-week, e.g. '*/15 * * * *')."
        )


def install_shutdown_event() -> multiprocessing.synchronize.Event:
    """Create the cluster-wide shutdown flag; call before the cluster forks its workers."""
    global _shutdown
    _shutdown = multiprocessing.Event()
    return _shutdown


def shutdown_event() -> "multiprocessing.synchronize.Event | threading.Event":
    """The flag a running sync checks at each page boundary (never set outside a cluster)."""
    return _shutdown if _shutdown is not None else threading.Event()


def next_run_after(expression: str, moment: datetime) -> datetime:
    return croniter(expression, moment).get_next(datetime)


def schedule_upsert():
    """Create, update or remove the sync schedule from the environment; idempotent."""
    from django_q.models import Schedule

    validate_sync_interval(settings.SYNC_INTERVAL)
    if not settings.ENABLE_SYNC_WORKER:
        Schedule.objects.filter(name=SCHEDULE_NAME).delete()
        return None
    schedule, _created = Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "synclog.tasks.sync_tick",
            "schedule_type": Schedule.CRON,
            "cron": settings.SYNC_INTERVAL,
            "repeats": -1,
            "next_run": next_run_after(settings.SYNC_INTERVAL, timezone.now()),
        },
    )
    return schedule


def scheduled_organizations() -> list[Organization]:
    """The organizations a tick syncs: SYNC_ORGS, or every active one with sync enabled."""
    organizations = Organization.objects.filter(is_active=True, sync_enabled=True)
    if not settings.SYNC_ORGS:
        return list(organizations)
    found = {o.code: o for o in organizations.filter(code__in=settings.SYNC_ORGS)}
    missing = [code for code in settings.SYNC_ORGS if code not in found]
    if missing:
        logger.error(
            "SYNC_ORGS names organization(s) that do not exist, are inactive or have sync disabled: %s",
            ", ".join(missing),
        )
    return [found[code] for code in settings.SYNC_ORGS if code in found]


def sync_expire_stale_runs(*, now: datetime | None = None) -> list[PfaSyncLog]:
    """Fail runs whose worker is gone, freeing their organizations.

    A running sync beats its heartbeat after every page; one silent for longer than the lease
    lost its worker (killed, host lost). A queued run never picked up within the task timeout
    lost its task.
    """
    now = now or timezone.now()
    lease = timedelta(seconds=settings.SYNC_LEASE_SECONDS)
    stale_running = PfaSyncLog.objects.filter(status=SyncStatus.RUNNING, heartbeat_at__lt=now - lease)
    stale_queued = PfaSyncLog.objects.filter(
        status=SyncStatus.QUEUED, created_at__lt=now - timedelta(seconds=settings.SYNC_TASK_TIMEOUT)
    )
    expired = []
    for sync_log in stale_running.select_related("organization"):
        sync_log.fail(
            f"Worker lost: no heartbeat since {sync_log.heartbeat_at.isoformat()} "
            f"(lease {settings.SYNC_LEASE_SECONDS} s); pages committed before are kept.",
            error_type="WorkerLost",
        )
        expired.append(sync_log)
    for sync_log in stale_queued.select_related("organization"):
        sync_log.fail(
            f"Never started: no worker picked the run up within {settings.SYNC_TASK_TIMEOUT} s.",
            error_type="WorkerLost",
        )
        expired.append(sync_log)
    for sync_log in expired:
        logger.warning("Sync %s of %s: %s", sync_log.id, sync_log.organization.code, sync_log.error_message)
    return expired


def sync_tick() -> str:
    expired = sync_expire_stale_runs()
    batch = sync_start(
        organizations=scheduled_organizations(),
        trigger=PfaSyncLog.Trigger.SCHEDULE,
        sync_type=PfaSyncLog.SyncType.INCREMENTAL,
    )
    for refusal in batch.refused:
        logger.info("Scheduled sync of %s skipped: %s", refusal.organization.code, refusal)
    return f"queued {len(batch.queued)}, skipped {len(batch.refused)} still running, expired {len(expired)} lost run(s)"


def sync_execute_queued(sync_log_id: str) -> str:
    """Run a queued sync in this worker; a run no longer queued (expired, cancelled) is skipped."""
    sync_log = PfaSyncLog.objects.select_related("organization", "api_configuration").get(pk=sync_log_id)
    if sync_log.status != SyncStatus.QUEUED:
        logger.warning("Sync %s is %s, not queued: not running it", sync_log.id, sync_log.status)
        return f"skipped: run is {sync_log.status}"
    try:
        client = pems_client_for(sync_log.organization)
    except ImproperlyConfigured as error:
        fail_run(sync_log, str(error), error)
        raise
    stop = shutdown_event()
    # A SIGTERM sent to the worker process itself (systemd stops a whole cgroup) is a stop request
    # too, not a kill mid-page. Only a main thread can take signals (django-q2's sync mode runs
    # tasks in whatever thread enqueued them).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set()) if in_main_thread else None
    try:
        with client:
            sync_run(sync_log=sync_log, client=client, stop=stop)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return f"{sync_log.organization.code}: {sync_log.status}, {sync_log.records_processed} records"


def worker_status() -> dict:
    """Everything an interface shows about the worker: enabled, running now, next run, last runs."""
    from django_q.models import Schedule

    schedule = Schedule.objects.filter(name=SCHEDULE_NAME).first() if settings.ENABLE_SYNC_WORKER else None
    organizations = Organization.objects.annotate(last_run_id=Subquery(latest_read_runs().values("pk")[:1]))
    last_runs = PfaSyncLog.objects.in_bulk([o.last_run_id for o in organizations if o.last_run_id])
    return {
        "enabled": settings.ENABLE_SYNC_WORKER,
        "running": PfaSyncLog.objects.filter(status=SyncStatus.RUNNING).exists(),
        "interval": settings.SYNC_INTERVAL,
        "next_run": schedule.next_run if schedule else None,
        "last_runs": {o.code: last_runs.get(o.last_run_id) for o in organizations},
    }
