"""The background sync worker: the schedules, their tasks, leases, shutdown and the worker's status.

Scheduled, API, admin and command syncs all run through `synclog.runs` and `synclog.dispatch`; this
module only decides when and for whom a sync is queued, and cleans up after workers that died.
"""

import logging
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from croniter import croniter
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from mirror.fields import organization_code_normalize
from mirror.materialized import views_refresh_enqueue, views_refresh_pending
from mirror.models import Organization
from mirror.purge import pfa_deleted_purge
from synclog.dispatch import run_for
from synclog.models import PfaSyncLog, SyncStatus, SyncWorker, stale_runs_expire, workers_alive
from synclog.runs import SyncBatch, client_for_run, sync_start
from synclog.selectors import organizations_to_sync, organizations_with_edits_waiting, organizations_with_last_run
from synclog.signals import run_log_context, tick_end

if TYPE_CHECKING:
    from django_q.models import Schedule

logger = logging.getLogger(__name__)

_shutdown: multiprocessing.synchronize.Event | None = None


@dataclass(frozen=True)
class SyncSchedule:
    """One django-q2 schedule of the worker: its name, its task, and the setting holding its cron."""

    name: str
    func: str
    setting: str
    # An empty setting switches this schedule off; for the others it is an invalid cron.
    optional: bool = False
    # The keyword argument that tells the task the moment it was due (django-q2 passes it).
    due_kwarg: str | None = None

    @property
    def cron(self) -> str:
        return getattr(settings, self.setting)

    @property
    def off_reason(self) -> str:
        """Why the schedule is switched off; empty when it is on."""
        if not settings.ENABLE_SYNC_WORKER:
            return "ENABLE_SYNC_WORKER=false"
        return "" if self.cron else f"{self.setting} is empty"

    @property
    def enabled(self) -> bool:
        return not self.off_reason


# Incremental reads every SYNC_INTERVAL.
TICK_SCHEDULE = SyncSchedule(
    name="pfasync-sync-tick", func="synclog.tasks.sync_tick", setting="SYNC_INTERVAL", due_kwarg="scheduled_for"
)
# Full reads, which also find the records deleted in PEMS, every SYNC_FULL_INTERVAL.
FULL_SCHEDULE = SyncSchedule(
    name="pfasync-sync-full", func="synclog.tasks.sync_full", setting="SYNC_FULL_INTERVAL", optional=True
)
SYNC_SCHEDULES = (TICK_SCHEDULE, FULL_SCHEDULE)


def validate_cron(expression: str, *, setting: str, optional: bool = False) -> None:
    """Raise ImproperlyConfigured naming `setting` unless `expression` is a cron (or empty, if optional)."""
    if optional and not expression:
        return
    if not croniter.is_valid(expression):
        raise ImproperlyConfigured(
            f"{setting} {expression!r} is not a valid cron expression "
            "(five fields: minute hour day-of-month month day-of-week, e.g. '*/15 * * * *')"
            + (f"; leave {setting} empty for none." if optional else ".")
        )


def validate_sync_schedules() -> None:
    """Check the cron setting of every schedule: a wrong one stops start-up instead of never syncing."""
    for schedule in SYNC_SCHEDULES:
        validate_cron(schedule.cron, setting=schedule.setting, optional=schedule.optional)


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


def schedules_upsert() -> dict[SyncSchedule, "Schedule | None"]:
    """Create, update or remove every sync schedule from the environment; idempotent.

    Every cron setting is checked before any schedule changes. Returns each schedule's row, None
    when it is switched off (ENABLE_SYNC_WORKER=false, or an optional cron left empty).
    """
    from django_q.models import Schedule

    validate_sync_schedules()
    rows = {}
    for schedule in SYNC_SCHEDULES:
        if not schedule.enabled:
            Schedule.objects.filter(name=schedule.name).delete()
            rows[schedule] = None
            continue
        rows[schedule], _created = Schedule.objects.update_or_create(
            name=schedule.name,
            defaults={
                "func": schedule.func,
                "schedule_type": Schedule.CRON,
                "cron": schedule.cron,
                "repeats": -1,
                "intended_date_kwarg": schedule.due_kwarg,
                "next_run": next_run_after(schedule.cron, timezone.now()),
            },
        )
    return rows


def scheduled_organizations() -> list[Organization]:
    """The organizations both schedules sync: SYNC_ORGS, or every active one with sync enabled."""
    organizations = organizations_to_sync()
    if not settings.SYNC_ORGS:
        return list(organizations)
    codes = [organization_code_normalize(code) for code in settings.SYNC_ORGS]
    found = {o.code: o for o in organizations.filter(code__in=codes)}
    missing = [code for code in codes if code not in found]
    if missing:
        logger.error(
            "SYNC_ORGS names organization(s) that do not exist, are inactive or have sync disabled: %s",
            ", ".join(missing),
        )
    return [found[code] for code in codes if code in found]


def sync_tick(*, scheduled_for: datetime | None = None) -> str:
    """The incremental schedule's task: free lost runs, queue incremental reads, purge old deletions.

    When the full schedule is due at the same moment (`scheduled_for`; 03:00 is both in the
    defaults), only the full reads are queued: an incremental run queued first would hold its
    organization, and the full read, refused, would wait for its next day.
    """
    if scheduled_for is not None and _full_read_due_at(scheduled_for):
        summary = "left to the full read due at the same time"
    else:
        summary = _queue_scheduled_reads(sync_type=PfaSyncLog.SyncType.INCREMENTAL)
    writes = write_runs_queue(trigger=PfaSyncLog.Trigger.SCHEDULE)
    if writes.queued or writes.refused:
        summary += f"; write runs queued {len(writes.queued)}, skipped {len(writes.refused)}"
    purged = pfa_deleted_purge()  # logs what it purged
    if views_refresh_pending():  # asked for while the broker was down, or by a refresh that died
        views_refresh_enqueue()
    # Last, after queueing: observers (ops: the tick's record, mirror counts, alerts) may take seconds.
    tick_end(now=timezone.now())
    return f"{summary}, purged {purged} deleted record(s)"


def sync_full() -> str:
    """The full schedule's task: free lost runs, then queue a full read per scheduled organization."""
    return _queue_scheduled_reads(sync_type=PfaSyncLog.SyncType.FULL)


def _full_read_due_at(moment: datetime) -> bool:
    if not FULL_SCHEDULE.enabled:
        return False
    return croniter.match(FULL_SCHEDULE.cron, timezone.localtime(moment))


def _queue_scheduled_reads(*, sync_type: str) -> str:
    expired = stale_runs_expire()
    batch = sync_start(
        organizations=scheduled_organizations(), trigger=PfaSyncLog.Trigger.SCHEDULE, sync_type=sync_type
    )
    for refusal in batch.refused:
        # A full read comes seldom: one missed is worth a warning.
        level = logging.WARNING if sync_type == PfaSyncLog.SyncType.FULL else logging.INFO
        logger.log(level, "Scheduled %s sync of %s skipped: %s", sync_type, refusal.organization.code, refusal)
    return f"queued {len(batch.queued)}, skipped {len(batch.refused)} still running, expired {len(expired)} lost run(s)"


def write_runs_queue(*, trigger: str, organizations=None, triggered_by=None) -> SyncBatch:
    """Queue a write run for each organization (default: every one) that has edits waiting and no
    write run active.

    An organization with nothing waiting gets no run: a commit's task that comes after a run wrote
    its edits (many such tasks wait in the broker while the worker is down) would log an empty one.
    """
    waiting = organizations_with_edits_waiting()
    if organizations is not None:
        waiting = waiting.filter(pk__in=[organization.pk for organization in organizations])
    organizations = waiting
    batch = sync_start(
        organizations=list(organizations),
        trigger=trigger,
        triggered_by=triggered_by,
        direction=PfaSyncLog.Direction.WRITE,
    )
    for refusal in batch.refused:
        logger.info("Write run of %s not queued: %s", refusal.organization.code, refusal)
    return batch


def on_edits_committed(sender, *, organization: Organization, user, **kwargs) -> None:
    """`mirror.delta.edits_committed`: queue the organization's write run now, not at the next tick
    (a broker that refuses is only logged: the tick starts it then)."""
    from django_q.tasks import async_task

    try:
        async_task(
            "synclog.tasks.write_after_commit",
            str(organization.pk),
            getattr(user, "pk", None),
            task_name=f"write {organization.code}",
            group="pfasync-write",
        )
    except Exception:
        logger.warning("Could not queue the write run of %s; the next tick will", organization.code, exc_info=True)


def sync_execute_queued(sync_log_id: str) -> str:
    """Run a queued sync in this worker; a run no longer queued (expired, cancelled) is skipped."""
    sync_log = PfaSyncLog.objects.select_related("organization", "api_configuration").get(pk=sync_log_id)
    if sync_log.status != SyncStatus.QUEUED:
        logger.warning("Sync %s is %s, not queued: not running it", sync_log.id, sync_log.status)
        return f"skipped: run is {sync_log.status}"
    client = client_for_run(sync_log)
    stop = shutdown_event()
    # A SIGTERM sent to the worker process itself (systemd stops a whole cgroup) is a stop request
    # too, not a kill mid-page. Only a main thread can take signals (django-q2's sync mode runs
    # tasks in whatever thread enqueued them).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set()) if in_main_thread else None
    try:
        with client, run_log_context(sync_log):
            run_for(sync_log)(sync_log=sync_log, client=client, stop=stop)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    return f"{sync_log.organization.code}: {sync_log.status}, {sync_log.records_processed} records"


def worker_beat(*, cluster_id: uuid.UUID, workers: int, started_at: datetime) -> None:
    """Say the cluster is alive (every SYNC_HEARTBEAT_SECONDS, from `manage.py qcluster`)."""
    now = timezone.now()
    SyncWorker.objects.update_or_create(
        pk=cluster_id,
        defaults={"seen_at": now},
        create_defaults={
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "workers": workers,
            "started_at": started_at,
            "seen_at": now,
        },
    )
    # Clusters killed without a word stay listed (not alive) for a day, for whoever looks.
    SyncWorker.objects.filter(seen_at__lt=now - timedelta(days=1)).delete()


def worker_gone(*, cluster_id: uuid.UUID) -> None:
    """The cluster stopped: it is no longer alive at once, not two heartbeats later."""
    SyncWorker.objects.filter(pk=cluster_id).delete()


def queued_runs_warning(queued: list[PfaSyncLog]) -> str:
    """What to tell whoever just queued `queued`: empty, unless no worker is alive to run them."""
    from django_q.conf import Conf

    if not queued or Conf.SYNC or workers_alive():  # django-q2's sync mode runs them inline
        return ""
    return (
        "No worker is alive (no `manage.py qcluster` seen within two heartbeats): the run waits in the "
        "queue until one starts."
    )


def worker_status() -> dict:
    """Everything an interface shows about the worker: alive, syncs running, both schedules, last runs.

    `alive`: a worker cluster (`manage.py qcluster`) was seen within two heartbeats; `syncs_running`:
    how many runs (reads and writes) are running now, which says nothing of whether a worker is up.
    The top-level `enabled`, `interval` and `next_run` are the incremental schedule's; `full_sync`
    has the same three for the full reads.
    """
    from django_q.models import Schedule

    rows = {row.name: row for row in Schedule.objects.filter(name__in=[s.name for s in SYNC_SCHEDULES])}
    organizations = organizations_with_last_run()
    last_runs = PfaSyncLog.objects.in_bulk([o.last_run_id for o in organizations if o.last_run_id])
    clusters = workers_alive()
    return {
        **_schedule_status(TICK_SCHEDULE, rows.get(TICK_SCHEDULE.name)),
        "alive": bool(clusters),
        "clusters": len(clusters),
        "syncs_running": PfaSyncLog.objects.filter(status=SyncStatus.RUNNING).count(),
        "full_sync": _schedule_status(FULL_SCHEDULE, rows.get(FULL_SCHEDULE.name)),
        "last_runs": {o.code: last_runs.get(o.last_run_id) for o in organizations},
    }


def _schedule_status(schedule: SyncSchedule, row: "Schedule | None") -> dict:
    # A row left behind while the schedule is off (setup_schedules not re-run) has no next run.
    return {
        "enabled": schedule.enabled,
        "interval": schedule.cron or None,
        "next_run": row.next_run if row is not None and schedule.enabled else None,
    }
