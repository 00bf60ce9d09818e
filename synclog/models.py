"""Sync runs (`pfa_sync_log`) with their lifecycle, and the PEMS rows a run had to keep aside."""

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from mirror.models import ApiConfiguration, Organization

logger = logging.getLogger(__name__)


class SyncStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"

    @classmethod
    def active(cls) -> list[str]:
        return [cls.QUEUED, cls.RUNNING]

    @classmethod
    def terminal(cls) -> list[str]:
        return [cls.COMPLETED, cls.FAILED, cls.CANCELLED]


class PfaSyncLog(models.Model):
    """One sync run of one organization: its trigger, live progress, exact counts and outcome."""

    class SyncType(models.TextChoices):
        FULL = "full", "Full"
        INCREMENTAL = "incremental", "Incremental"

    class Direction(models.TextChoices):
        READ = "read", "Read (PEMS to mirror)"
        WRITE = "write", "Write (mirror to PEMS)"

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        API = "api", "API"
        ADMIN = "admin", "Admin"
        COMMAND = "command", "Command"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="sync_logs")
    api_configuration = models.ForeignKey(
        ApiConfiguration, null=True, blank=True, on_delete=models.SET_NULL, related_name="sync_logs"
    )
    sync_type = models.CharField(max_length=16, choices=SyncType, default=SyncType.FULL)
    direction = models.CharField(max_length=8, choices=Direction, default=Direction.READ)
    status = models.CharField(max_length=16, choices=SyncStatus, default=SyncStatus.QUEUED)
    trigger = models.CharField(max_length=16, choices=Trigger)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    command = models.CharField(
        max_length=32,
        blank=True,
        default="",
        db_default="",
        help_text="The management command that ran it (`sync_pems`, `push_pems`); empty for other triggers.",
    )
    batch_id = models.UUIDField(default=uuid.uuid4, db_index=True, help_text="Shared by the runs of one trigger.")
    records_total = models.PositiveBigIntegerField(null=True, blank=True, help_text="PEMS's count at the start.")
    records_processed = models.PositiveBigIntegerField(default=0)
    records_inserted = models.PositiveBigIntegerField(default=0)
    records_updated = models.PositiveBigIntegerField(default=0)
    records_unchanged = models.PositiveBigIntegerField(default=0)
    records_deleted = models.PositiveBigIntegerField(default=0)
    records_errored = models.PositiveBigIntegerField(default=0)
    # A write run's own counts (`records_total` is how many modifications it took, `records_errored`
    # those PEMS refused).
    records_written = models.PositiveBigIntegerField(default=0, db_default=0)
    records_rebased = models.PositiveBigIntegerField(
        default=0, db_default=0, help_text="Written after a three-way merge with a change PEMS took meanwhile."
    )
    records_conflicts = models.PositiveBigIntegerField(default=0, db_default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveBigIntegerField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.UUIDField(
        null=True, blank=True, editable=False, help_text="Set when a worker starts the run: only it may change the run."
    )
    cancel_requested_at = models.DateTimeField(
        null=True, blank=True, help_text="A running run stops at its next page boundary once this is set."
    )
    allow_mass_delete = models.BooleanField(
        default=False,
        help_text="Apply the deletions of a complete full read even past SYNC_DELETE_GUARD_PERCENT.",
    )
    error_message = models.TextField(blank=True)
    error_details = models.JSONField(default=dict, blank=True)

    class Meta:
        db_table = "pfa_sync_log"
        verbose_name = "sync run"
        ordering = ["-created_at"]
        permissions = [("trigger_sync", "Can start a PEMS sync")]
        constraints = [
            # The lock: a second queued/running read run for the same organization cannot exist.
            models.UniqueConstraint(
                fields=["organization"],
                condition=Q(direction="read", status__in=["queued", "running"]),
                name="pfa_sync_log_one_active_read_per_org",
            ),
            # And of write runs: one at a time, so never two writes of one record are in flight.
            models.UniqueConstraint(
                fields=["organization"],
                condition=Q(direction="write", status__in=["queued", "running"]),
                name="pfa_sync_log_one_active_write_per_org",
            ),
        ]
        indexes = [models.Index(fields=["organization", "-created_at"], name="pfa_sync_log_org_created")]

    def __str__(self) -> str:
        what = "write run" if self.direction == PfaSyncLog.Direction.WRITE else f"{self.sync_type} sync"
        return f"{self.organization_id} {what} {self.id} ({self.status})"

    @property
    def triggered_by_name(self) -> str:
        """Who started the run: the user, else the command, else `system` (the schedule)."""
        if self.triggered_by_id:
            return self.triggered_by.username
        return self.command or "system"

    @property
    def is_active(self) -> bool:
        return self.status in SyncStatus.active()

    # Every state change below is a compare-and-set: it applies only while the run is in the state
    # the change starts from and, once running, only for the process that started it (its
    # `claim_token`). A change that finds the run changed under it raises ClaimLost and writes
    # nothing: a run reaped as lost, cancelled or finished elsewhere never acts again.

    def start(self) -> None:
        """Take the run from `queued` to `running`, as its one holder."""
        now, token = timezone.now(), uuid.uuid4()
        changes = {"status": SyncStatus.RUNNING, "started_at": now, "heartbeat_at": now, "claim_token": token}
        if not PfaSyncLog.objects.filter(pk=self.pk, status=SyncStatus.QUEUED).update(**changes):
            raise self._lost("start")
        for name, value in changes.items():
            setattr(self, name, value)

    def beat(self) -> bool:
        """Move the heartbeat; False once the run is no longer this holder's."""
        return bool(self._held().update(heartbeat_at=timezone.now()))

    def set_total(self, records_total: int) -> None:
        self._change(records_total=records_total)

    def set_sync_type(self, sync_type: str) -> None:
        self._change(sync_type=sync_type)

    def add_page(self, *, processed: int, inserted: int, updated: int, unchanged: int, errored: int) -> None:
        """Add one page's counts and beat the heartbeat. Call it in the page's transaction: a lost
        claim rolls the page back, and the run's row stays locked until the page commits, so it
        cannot be reaped in between."""
        now = timezone.now()
        self._change(
            records_processed=F("records_processed") + processed,
            records_inserted=F("records_inserted") + inserted,
            records_updated=F("records_updated") + updated,
            records_unchanged=F("records_unchanged") + unchanged,
            records_errored=F("records_errored") + errored,
            heartbeat_at=now,
            set_attributes=False,
        )
        self.records_processed += processed
        self.records_inserted += inserted
        self.records_updated += updated
        self.records_unchanged += unchanged
        self.records_errored += errored
        self.heartbeat_at = now

    def add_write(self, *, written: int = 0, rebased: int = 0, conflicts: int = 0, errored: int = 0) -> None:
        """Count one modification's outcome (in the transaction that records it)."""
        now = timezone.now()
        self._change(
            set_attributes=False,
            records_processed=F("records_processed") + 1,
            records_written=F("records_written") + written,
            records_rebased=F("records_rebased") + rebased,
            records_conflicts=F("records_conflicts") + conflicts,
            records_errored=F("records_errored") + errored,
            heartbeat_at=now,
        )
        self.records_processed += 1
        self.records_written += written
        self.records_rebased += rebased
        self.records_conflicts += conflicts
        self.records_errored += errored
        self.heartbeat_at = now

    @property
    def changed_merged_view(self) -> bool:
        """Whether the run changed what `pfa_merged_live` (and so the KPI views) holds: mirror rows
        a read inserted, updated or deleted, or edits a write run took out of the committed ones."""
        if self.direction == PfaSyncLog.Direction.WRITE:
            return bool(self.records_written or self.records_conflicts or self.records_errored)
        return bool(self.records_inserted or self.records_updated or self.records_deleted)

    def cancel_requested(self) -> bool:
        return PfaSyncLog.objects.filter(pk=self.pk, cancel_requested_at__isnull=False).exists()

    def finish(
        self, status: str, *, error_message: str = "", error_details: dict | None = None, records_deleted: int = 0
    ) -> None:
        """Close the run in a terminal state; frees the organization for the next run.

        A queued run (never started) may be closed by anyone, once; a running one only by its holder.
        """
        changes = self.closing_changes(
            status, error_message=error_message, error_details=error_details, records_deleted=records_deleted
        )
        if self.status == SyncStatus.QUEUED:
            if not PfaSyncLog.objects.filter(pk=self.pk, status=SyncStatus.QUEUED).update(**changes):
                raise self._lost("finish")
            for name, value in changes.items():
                setattr(self, name, value)
        else:
            self._change(**changes)

    def complete(self, *, records_deleted: int = 0, warning: str = "", error_details: dict | None = None) -> None:
        """Close the run as completed: every row PEMS holds was read (`warning`: what it left undone)."""
        self.finish(
            SyncStatus.COMPLETED, error_message=warning, error_details=error_details, records_deleted=records_deleted
        )

    def fail(self, error_message: str, *, error: BaseException | None = None, error_type: str = "") -> None:
        """Close the run as failed, with what PEMS (or the worker) said in `error_details`."""
        self.finish(
            SyncStatus.FAILED, error_message=error_message, error_details=failure_details(self, error, error_type)
        )

    def cancel(self) -> None:
        """Cancel the run: a queued one at once, a running one at its next page boundary.

        Raises RunEnded when it has ended already.
        """
        queued = PfaSyncLog.objects.filter(pk=self.pk, status=SyncStatus.QUEUED)
        if queued.update(**self.closing_changes(SyncStatus.CANCELLED, error_message="Cancelled before it started.")):
            self.refresh_from_db()
            return
        running = PfaSyncLog.objects.filter(pk=self.pk, status=SyncStatus.RUNNING)
        if running.update(cancel_requested_at=timezone.now()):
            self.refresh_from_db()
            return
        self.refresh_from_db()
        raise RunEnded(f"Run {self.pk} has ended already ({self.status}).")

    def closing_changes(
        self,
        status: str,
        *,
        error_message: str,
        error_details: dict | None = None,
        records_deleted: int | None = None,
        now=None,
    ) -> dict:
        """The fields that close the run in terminal `status`, for the caller's compare-and-set: the
        one place a run's end, duration and outcome are put together (finish, cancel, expiry)."""
        assert status in SyncStatus.terminal(), status
        now = now or timezone.now()
        changes = {
            "status": status,
            "completed_at": now,
            # A run that never started lasted from its claim: the time it waited is what it cost.
            "duration_ms": int((now - (self.started_at or self.created_at)).total_seconds() * 1000),
            "error_message": error_message,
        }
        if error_details is not None:
            changes["error_details"] = error_details
        if records_deleted is not None:
            changes["records_deleted"] = records_deleted
        return changes

    def _held(self) -> QuerySet["PfaSyncLog"]:
        return PfaSyncLog.objects.filter(pk=self.pk, status=SyncStatus.RUNNING, claim_token=self.claim_token)

    def _change(self, *, set_attributes: bool = True, **changes) -> None:
        if self.claim_token is None or not self._held().update(**changes):
            raise self._lost("change")
        if set_attributes:
            for name, value in changes.items():
                setattr(self, name, value)

    def _lost(self, what: str) -> "ClaimLost":
        status = PfaSyncLog.objects.filter(pk=self.pk).values_list("status", flat=True).first()
        return ClaimLost(f"Run {self.pk} could not {what}: it is {status or 'gone'} and no longer this worker's.")


class ClaimLost(Exception):
    """A run found it is no longer its worker's to act on (reaped as lost, cancelled, finished)."""


class RunEnded(Exception):
    """The run has ended already: there is nothing to cancel."""


def failure_details(sync_log: PfaSyncLog, error: BaseException | None, error_type: str = "") -> dict:
    """What a failed run keeps about why: the error's type and, from PEMS, its status and name."""
    details = {"error_type": error_type or type(error).__name__, "records_processed": sync_log.records_processed}
    if getattr(error, "status", None) is not None:
        details["pems_status"] = error.status
    if getattr(error, "pems_name", None):
        details["pems_name"] = error.pems_name
    return details


def stale_runs_expire(*, organization: Organization | None = None, now=None) -> list[PfaSyncLog]:
    """Fail the runs whose worker or task is gone, freeing their organizations (of one, or all).

    A running sync beats its heartbeat every SYNC_HEARTBEAT_SECONDS; one silent for longer than
    the lease lost its worker (killed, host lost). A queued run whose task is lost (`queued_runs_lost`)
    or that no worker picked up within the task timeout is failed too. Each is failed by a
    compare-and-set on its silence, so a run that beat or started meanwhile is left alone, and the
    lost worker, should it wake, finds it no longer holds the run.
    """
    now = now or timezone.now()
    lease_cutoff = now - timedelta(seconds=settings.SYNC_LEASE_SECONDS)
    queue_cutoff = now - timedelta(seconds=settings.SYNC_TASK_TIMEOUT)
    runs = PfaSyncLog.objects.filter(
        Q(status=SyncStatus.RUNNING, heartbeat_at__lt=lease_cutoff)
        | Q(status=SyncStatus.QUEUED, created_at__lt=queue_cutoff)
    )
    lost_tasks = queued_runs_lost(organization=organization, now=now)
    if organization is not None:
        runs = runs.filter(organization=organization)
    expired = []
    for sync_log in [*runs.select_related("organization"), *lost_tasks]:
        if sync_log.status == SyncStatus.RUNNING:
            message = (
                f"Worker lost: no heartbeat since {sync_log.heartbeat_at.isoformat()} "
                f"(lease {settings.SYNC_LEASE_SECONDS} s); pages committed before are kept."
            )
            still_stale, error_type = Q(status=SyncStatus.RUNNING, heartbeat_at__lt=lease_cutoff), "WorkerLost"
        elif sync_log.created_at < queue_cutoff:
            message = f"Never started: no worker picked the run up within {settings.SYNC_TASK_TIMEOUT} s."
            still_stale, error_type = Q(status=SyncStatus.QUEUED), "WorkerLost"
        else:
            message = (
                "Task lost: the task was lost before a worker took it (it is not in the task queue "
                f"{settings.SYNC_QUEUE_LEASE_SECONDS} s after it was queued, and a worker was free to take it). "
                "Nothing was read or written; start the run again."
            )
            still_stale, error_type = Q(status=SyncStatus.QUEUED), "TaskLost"
        changes = sync_log.closing_changes(
            SyncStatus.FAILED,
            error_message=message,
            error_details=failure_details(sync_log, None, error_type),
            now=now,
        )
        if PfaSyncLog.objects.filter(still_stale, pk=sync_log.pk).update(**changes):
            for name, value in changes.items():
                setattr(sync_log, name, value)
            expired.append(sync_log)
            logger.warning("Sync %s of %s: %s", sync_log.id, sync_log.organization.code, message)
    return expired


def queued_runs_lost(*, organization: Organization | None = None, now=None) -> list[PfaSyncLog]:
    """The queued runs (of one organization, or all) whose broker task is lost: Redis restarted, or
    a worker was killed after popping the task (django-q2's Redis broker has no receipts).

    A run is lost when all of these hold:

    - it has waited SYNC_QUEUE_LEASE_SECONDS, counted from when it was queued and started over each
      time a worker became free (a run ended), since until then it may just have been next in line;
    - the worker clusters alive do not have every worker busy with a run: a cluster's pusher takes
      tasks out of the broker ahead of its workers, so behind busy workers a task waits in the
      cluster's memory, not in the broker (with no cluster alive, no memory holds it);
    - its task is not in the broker, which is asked last and only about these runs (one that cannot
      be asked loses no run).
    """
    now = now or timezone.now()
    lease = timedelta(seconds=settings.SYNC_QUEUE_LEASE_SECONDS)
    queued = PfaSyncLog.objects.filter(
        status=SyncStatus.QUEUED,
        created_at__lt=now - lease,
        created_at__gte=now - timedelta(seconds=settings.SYNC_TASK_TIMEOUT),
    ).exclude(trigger=PfaSyncLog.Trigger.COMMAND)  # a command runs its runs inline: no task
    if organization is not None:
        queued = queued.filter(organization=organization)
    if not queued.exists():
        return []
    clusters = workers_alive(now=now)
    if clusters:
        in_workers = PfaSyncLog.objects.exclude(trigger=PfaSyncLog.Trigger.COMMAND)
        if in_workers.filter(status=SyncStatus.RUNNING).count() >= sum(cluster.workers for cluster in clusters):
            return []
        freed_lately = in_workers.filter(
            # Bounds the scan by the created_at index: no run lasts longer than the task timeout.
            created_at__gte=now - lease - 2 * timedelta(seconds=settings.SYNC_TASK_TIMEOUT),
            started_at__isnull=False,
            completed_at__gt=now - lease,
        )
        if freed_lately.exists():
            return []
    from synclog.broker import runs_waiting_in_broker  # here: it reads django-q2's settings

    waiting = runs_waiting_in_broker()
    if waiting is None:
        return []
    return [run for run in queued.select_related("organization") if str(run.pk) not in waiting]


class PfaSyncRecordError(models.Model):
    """A row PEMS sent that could not be stored, kept with the run that saw it."""

    id = models.BigAutoField(primary_key=True)
    sync_log = models.ForeignKey(PfaSyncLog, on_delete=models.CASCADE, related_name="record_errors")
    pfa_id = models.CharField(max_length=200, blank=True)
    reason = models.TextField()
    raw_row = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "pfa_sync_record_errors"
        verbose_name = "record kept aside"
        verbose_name_plural = "records kept aside"
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.pfa_id or '(no id)'}: {self.reason}"


class SyncWorker(models.Model):
    """A worker cluster (`manage.py qcluster`) as it last said it was alive."""

    id = models.UUIDField(primary_key=True, editable=False, help_text="The cluster's id.")
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    workers = models.PositiveSmallIntegerField(help_text="Its worker processes: how many tasks it runs at once.")
    started_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        db_table = "pfa_sync_worker"
        verbose_name = "worker cluster"
        ordering = ["started_at"]

    def __str__(self) -> str:
        return f"{self.host}:{self.pid} ({self.workers} workers, seen {self.seen_at.isoformat()})"


def workers_alive(*, now=None) -> list[SyncWorker]:
    """The worker clusters seen within two heartbeats (each beats every SYNC_HEARTBEAT_SECONDS)."""
    now = now or timezone.now()
    return list(SyncWorker.objects.filter(seen_at__gte=now - timedelta(seconds=2 * settings.SYNC_HEARTBEAT_SECONDS)))
