"""Sync runs (`pfa_sync_log`) with their lifecycle, and the PEMS rows a run had to keep aside."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, OuterRef, Q, QuerySet
from django.utils import timezone

from mirror.models import ApiConfiguration, Organization


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
    batch_id = models.UUIDField(default=uuid.uuid4, db_index=True, help_text="Shared by the runs of one trigger.")
    records_total = models.PositiveBigIntegerField(null=True, blank=True, help_text="PEMS's count at the start.")
    records_processed = models.PositiveBigIntegerField(default=0)
    records_inserted = models.PositiveBigIntegerField(default=0)
    records_updated = models.PositiveBigIntegerField(default=0)
    records_unchanged = models.PositiveBigIntegerField(default=0)
    records_deleted = models.PositiveBigIntegerField(default=0)
    records_errored = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveBigIntegerField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
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
        ]
        indexes = [models.Index(fields=["organization", "-created_at"], name="pfa_sync_log_org_created")]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.sync_type} sync {self.id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in SyncStatus.active()

    def start(self) -> None:
        now = timezone.now()
        self.status = SyncStatus.RUNNING
        self.started_at = self.heartbeat_at = now
        self.save(update_fields=["status", "started_at", "heartbeat_at"])

    def set_total(self, records_total: int) -> None:
        self.records_total = records_total
        self.save(update_fields=["records_total"])

    def add_page(self, *, processed: int, inserted: int, updated: int, unchanged: int, errored: int) -> None:
        """Add one committed page's counts and beat the heartbeat (call inside the page's transaction)."""
        now = timezone.now()
        PfaSyncLog.objects.filter(pk=self.pk).update(
            records_processed=F("records_processed") + processed,
            records_inserted=F("records_inserted") + inserted,
            records_updated=F("records_updated") + updated,
            records_unchanged=F("records_unchanged") + unchanged,
            records_errored=F("records_errored") + errored,
            heartbeat_at=now,
        )
        self.records_processed += processed
        self.records_inserted += inserted
        self.records_updated += updated
        self.records_unchanged += unchanged
        self.records_errored += errored
        self.heartbeat_at = now

    def finish(self, status: str, *, error_message: str = "", error_details: dict | None = None) -> None:
        """Close the run in a terminal state; frees the organization for the next run."""
        assert status in SyncStatus.terminal(), status
        now = timezone.now()
        self.status = status
        self.completed_at = now
        self.duration_ms = int((now - (self.started_at or self.created_at)).total_seconds() * 1000)
        self.error_message = error_message
        if error_details is not None:
            self.error_details = error_details
        self.save(update_fields=["status", "completed_at", "duration_ms", "error_message", "error_details"])

    def complete(self, *, records_deleted: int = 0, warning: str = "", error_details: dict | None = None) -> None:
        """Close the run as completed: every row PEMS holds was read (`warning`: what it left undone)."""
        self.records_deleted = records_deleted
        self.save(update_fields=["records_deleted"])
        self.finish(SyncStatus.COMPLETED, error_message=warning, error_details=error_details)

    def fail(self, error_message: str, *, error: BaseException | None = None, error_type: str = "") -> None:
        """Close the run as failed, with what PEMS (or the worker) said in `error_details`."""
        details = {"error_type": error_type or type(error).__name__, "records_processed": self.records_processed}
        if getattr(error, "status", None) is not None:
            details["pems_status"] = error.status
        if getattr(error, "pems_name", None):
            details["pems_name"] = error.pems_name
        self.finish(SyncStatus.FAILED, error_message=error_message, error_details=details)


def latest_read_runs() -> QuerySet[PfaSyncLog]:
    """Read runs of the organization in the enclosing query (`OuterRef("pk")`), newest first.

    Slice `[:1]` inside a Subquery to annotate organizations with their last run.
    """
    return PfaSyncLog.objects.filter(organization=OuterRef("pk"), direction=PfaSyncLog.Direction.READ).order_by(
        "-created_at", "-pk"
    )


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
