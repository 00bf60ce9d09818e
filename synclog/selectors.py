"""Read-side queries of the sync app: which organizations a sync of all of them reads, each
organization with its last run, and the runs a user sees.

Also the one answer to each question the dashboard, the alerts, /metrics, the API and the admin
all ask, so that they agree by construction:

- "last sync": when the organization's newest completed read ended (`last_sync_subquery`,
  `last_sync_of`); a write run, a failed or a cancelled read is no sync;
- "stale": no sync for longer than `sync_stale_after` since the last one, or since the
  organization was registered when it has none yet (`organization_is_stale`);
- "last write": the organization's newest finished write run (`last_write_runs`);
- "did the run change rows": `PfaSyncLog.changed_merged_view`.
"""

from datetime import UTC, datetime, timedelta

from croniter import croniter
from django.conf import settings
from django.db.models import Count, DateTimeField, Exists, IntegerField, Max, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from mirror.models import Organization, PfaModification
from mirror.selectors import organizations_visible_to
from synclog.models import PfaSyncLog, SyncStatus

# How many sync intervals may pass without a sync before an organization is stale (SYNC_STALE_AFTER unset).
STALE_INTERVALS = 3
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def organizations_to_sync(*, including_sync_disabled: bool = False) -> QuerySet[Organization]:
    """The organizations a sync of "every organization" reads: the active ones with sync enabled
    (the command without --org, and the schedules before SYNC_ORGS narrows them).

    `including_sync_disabled` adds the active ones whose scheduled sync is switched off: the API's
    staff trigger without `organizationId` documents "every active organization", and an explicit
    request is not a schedule.
    """
    organizations = Organization.objects.filter(is_active=True)
    return organizations if including_sync_disabled else organizations.filter(sync_enabled=True)


def latest_runs(direction: str = PfaSyncLog.Direction.READ) -> QuerySet[PfaSyncLog]:
    """Read runs (or write runs, `direction`) of the organization in the enclosing query
    (`OuterRef("pk")`), newest first.

    Slice `[:1]` inside a Subquery to annotate organizations with their last run.
    """
    return PfaSyncLog.objects.filter(organization=OuterRef("pk"), direction=direction).order_by("-created_at", "-pk")


def completed_reads(sync_logs: QuerySet[PfaSyncLog] | None = None) -> QuerySet[PfaSyncLog]:
    """The runs of `sync_logs` (default: every run) that count as a sync: the completed reads."""
    if sync_logs is None:
        sync_logs = PfaSyncLog.objects.all()
    return sync_logs.filter(direction=PfaSyncLog.Direction.READ, status=SyncStatus.COMPLETED)


def last_sync_subquery() -> Subquery:
    """The last sync of the organization in the enclosing query: when its newest completed read
    ended (None: never)."""
    return Subquery(completed_reads(latest_runs()).values("completed_at")[:1])


def last_sync_of(sync_logs: QuerySet[PfaSyncLog]) -> datetime | None:
    """The last sync among `sync_logs`: when the newest completed read of them ended (None: none)."""
    return completed_reads(sync_logs).aggregate(at=Max("completed_at"))["at"]


def interval_length(expression: str, *, now: datetime) -> timedelta:
    """The gap between the next two fire times of a cron expression."""
    fire_times = croniter(expression, now)
    first = fire_times.get_next(datetime)
    return fire_times.get_next(datetime) - first


def sync_stale_after(*, now: datetime) -> timedelta:
    """How long an organization may go without a sync: SYNC_STALE_AFTER seconds, or three
    SYNC_INTERVALs when it is not set."""
    if settings.SYNC_STALE_AFTER is not None:
        return timedelta(seconds=settings.SYNC_STALE_AFTER)
    return STALE_INTERVALS * interval_length(settings.SYNC_INTERVAL, now=now)


def organization_is_stale(organization: Organization, *, now: datetime, stale_after: timedelta) -> bool:
    """Whether `organization` (annotated with `last_sync_at`) went without a sync for longer than
    `stale_after`: since its last sync, or since it was registered when it has none yet (a new
    organization is not stale before it could have been read)."""
    return now - (organization.last_sync_at or organization.created_at) > stale_after


def organizations_with_last_run(organizations: QuerySet[Organization] | None = None) -> QuerySet[Organization]:
    """`organizations` (default: every one), each annotated in the same query with its newest read
    run: `last_run_id`, `last_run_status`, `last_run_created_at`, `last_run_completed_at` and
    `last_run_records_processed` (each None when it has none), and with `last_sync_at`, its last
    sync (`last_sync_subquery`), which may be an older run's."""
    if organizations is None:
        organizations = Organization.objects.all()
    newest = latest_runs()
    return organizations.annotate(
        **{
            f"last_run_{field}": Subquery(newest.values(field)[:1])
            for field in ("id", "status", "created_at", "completed_at", "records_processed")
        },
        last_sync_at=last_sync_subquery(),
    )


def organizations_sync_state(organizations: QuerySet[Organization] | None = None) -> QuerySet[Organization]:
    """`organizations` (default: the active ones), each annotated in the same query with:

    - `last_sync_at`: its last sync, when its newest completed read ended (None: never);
    - `consecutive_failures`: failed reads since then (cancelled runs neither count nor reset);
    - `kept_aside`: `records_errored` of its last finished read, the rows it could not store;
    - `last_<direction>_status`: the status of its newest run of each direction (None: none).

    The dashboard, the alerts and /metrics read it.
    """
    if organizations is None:
        organizations = Organization.objects.filter(is_active=True)
    completed = completed_reads(latest_runs())
    finished = latest_runs().filter(status__in=SyncStatus.terminal())
    failures = PfaSyncLog.objects.filter(
        organization=OuterRef("pk"),
        direction=PfaSyncLog.Direction.READ,
        status=SyncStatus.FAILED,
        created_at__gt=OuterRef("last_completed_created"),
    )
    newest = {
        f"last_{direction}_status": Subquery(
            PfaSyncLog.objects.filter(organization=OuterRef("pk"), direction=direction)
            .order_by("-created_at", "-pk")
            .values("status")[:1]
        )
        for direction in PfaSyncLog.Direction.values
    }
    return (
        organizations.annotate(
            last_sync_at=last_sync_subquery(),
            last_completed_created=Coalesce(
                Subquery(completed.values("created_at")[:1]), Value(_EPOCH, output_field=DateTimeField())
            ),
            kept_aside=Subquery(finished.values("records_errored")[:1]),
            **newest,
        )
        .annotate(
            consecutive_failures=Coalesce(
                Subquery(
                    failures.order_by().values("organization").annotate(n=Count("pk")).values("n"),
                    output_field=IntegerField(),
                ),
                0,
            )
        )
        .order_by("code")
    )


def sync_logs_visible_to(user) -> QuerySet[PfaSyncLog]:
    """The runs of the organizations `user` sees."""
    return PfaSyncLog.objects.filter(organization__in=organizations_visible_to(user)).select_related(
        "organization", "triggered_by"
    )


def organizations_with_edits_waiting() -> QuerySet[Organization]:
    """The active organizations with committed modifications not yet written to PEMS (a write run's work)."""
    waiting = PfaModification.objects.filter(organization=OuterRef("pk")).to_write()
    return Organization.objects.filter(Exists(waiting), is_active=True)


def last_write_runs() -> dict:
    """The last write of each organization: its newest finished write run, by organization id (two
    queries; an organization with none is not in it)."""
    newest = latest_runs(PfaSyncLog.Direction.WRITE).filter(status__in=SyncStatus.terminal()).values("pk")[:1]
    ids = (
        Organization.objects.annotate(run_id=Subquery(newest))
        .filter(run_id__isnull=False)
        .values_list("run_id", flat=True)
    )
    return {run.organization_id: run for run in PfaSyncLog.objects.filter(pk__in=list(ids))}
