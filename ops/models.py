"""What ops keeps in the database so that every process sees it: the worker's last signs of life,
cached mirror sizes, counted PEMS calls and the alert state of each organization."""

from django.db import models
from django.utils import timezone

from mirror.models import Organization


class WorkerHeartbeat(models.Model):
    """When a worker cluster last showed it is alive (one row): a worker process started, or the tick ran."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    seen_at = models.DateTimeField(help_text="A worker process started or the sync tick ran.")
    last_tick_at = models.DateTimeField(null=True, blank=True, help_text="The sync tick last ran.")

    class Meta:
        db_table = "ops_worker_heartbeat"

    def __str__(self) -> str:
        return f"worker seen {self.seen_at.isoformat()}"


class MirrorCount(models.Model):
    """An organization's mirror size as last counted: read by every scrape instead of counting a
    million rows each time."""

    organization = models.OneToOneField(
        Organization, primary_key=True, on_delete=models.CASCADE, related_name="mirror_count"
    )
    live_rows = models.PositiveBigIntegerField()
    deleted_rows = models.PositiveBigIntegerField(help_text="Rows marked deleted, not purged yet.")
    counted_at = models.DateTimeField()

    class Meta:
        db_table = "ops_mirror_count"

    def __str__(self) -> str:
        return f"{self.organization_id}: {self.live_rows} live, {self.deleted_rows} deleted"


class PemsCallStat(models.Model):
    """PEMS calls of one outcome whose latency fell in one histogram bucket, added by one flush.

    Rows are only ever inserted by the processes that made the calls (never updated, so no flush
    waits for another) and folded together by the tick; a scrape sums them.
    """

    id = models.BigAutoField(primary_key=True)
    outcome = models.CharField(max_length=16)
    # The bucket's upper bound in seconds; null: above the largest bound.
    le = models.FloatField(null=True, blank=True)
    calls = models.PositiveBigIntegerField()
    seconds = models.FloatField(help_text="The calls' latencies added up.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "ops_pems_call_stat"
        verbose_name = "PEMS call count"

    def __str__(self) -> str:
        return f"{self.calls} {self.outcome} PEMS call(s) up to {self.le if self.le is not None else '+Inf'} s"


class AlertState(models.Model):
    """Whether an organization is in an alert's state (stale data, failing runs) as last announced."""

    class Kind(models.TextChoices):
        STALE = "stale", "Data is stale"
        FAILING = "failing", "Runs keep failing"
        WRITES_FAILING = "writes_failing", "Writes to PEMS fail"
        CONFLICTS = "conflicts", "Edits in conflict wait for a planner"

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="alert_states")
    kind = models.CharField(max_length=16, choices=Kind)
    active = models.BooleanField(default=False)
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "ops_alert_state"
        constraints = [models.UniqueConstraint(fields=["organization", "kind"], name="ops_alert_state_one_per_kind")]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.kind}: {'active' if self.active else 'clear'}"


class RunTotals(models.Model):
    """The run log's totals for one direction, over the runs created before `through` (folded by
    the tick), so that a scrape adds up only the runs since."""

    direction = models.CharField(max_length=8, primary_key=True)
    through = models.DateTimeField()
    totals = models.JSONField(help_text="Row counts, runs per status and the duration histogram.")

    class Meta:
        db_table = "ops_run_totals"
        verbose_name_plural = "run totals"

    def __str__(self) -> str:
        return f"{self.direction} runs created before {self.through.isoformat()}"
