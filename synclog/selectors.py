"""Read-side queries of the sync app: which organizations a sync of all of them reads, each
organization with its last run, and the runs a user sees."""

from django.db.models import Exists, OuterRef, QuerySet, Subquery

from mirror.models import Organization, PfaModification
from mirror.selectors import organizations_visible_to
from synclog.models import PfaSyncLog, SyncStatus


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


def organizations_with_last_run(organizations: QuerySet[Organization] | None = None) -> QuerySet[Organization]:
    """`organizations` (default: every one), each annotated in the same query with its newest read
    run: `last_run_id`, `last_run_status`, `last_run_created_at`, `last_run_completed_at` and
    `last_run_records_processed` (each None when it has none)."""
    if organizations is None:
        organizations = Organization.objects.all()
    newest = latest_runs()
    return organizations.annotate(
        **{
            f"last_run_{field}": Subquery(newest.values(field)[:1])
            for field in ("id", "status", "created_at", "completed_at", "records_processed")
        }
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
    """Each organization's newest finished write run, by organization id (two queries)."""
    newest = latest_runs(PfaSyncLog.Direction.WRITE).filter(status__in=SyncStatus.terminal()).values("pk")[:1]
    ids = (
        Organization.objects.annotate(run_id=Subquery(newest))
        .filter(run_id__isnull=False)
        .values_list("run_id", flat=True)
    )
    return {run.organization_id: run for run in PfaSyncLog.objects.filter(pk__in=list(ids))}
