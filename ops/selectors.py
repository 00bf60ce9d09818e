"""Read-side queries of ops: each organization's sync state, in one query, for /metrics and alerts."""

from datetime import UTC, datetime

from django.db.models import Count, DateTimeField, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from mirror.models import Organization
from synclog.models import PfaSyncLog, SyncStatus
from synclog.selectors import latest_runs

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def organizations_sync_state(organizations: QuerySet[Organization] | None = None) -> QuerySet[Organization]:
    """`organizations` (default: the active ones), each annotated in the same query with:

    - `last_completed_at`: when its last completed read ended (None: never);
    - `consecutive_failures`: failed reads since then (cancelled runs neither count nor reset);
    - `kept_aside`: `records_errored` of its last finished read, the rows it could not store;
    - `last_<direction>_status`: the status of its newest run of each direction (None: none).
    """
    if organizations is None:
        organizations = Organization.objects.filter(is_active=True)
    completed = latest_runs().filter(status=SyncStatus.COMPLETED)
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
            last_completed_at=Subquery(completed.values("completed_at")[:1]),
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
