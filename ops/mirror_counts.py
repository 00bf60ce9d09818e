"""Each organization's mirror size (live rows, rows marked deleted), counted after each run and on
each tick, so that /metrics reads a few small rows instead of counting the mirror.

Why a cached count: counting a 1M-row organization's live rows means reading every row, since
`deleted_at` is in no index that covers them all (tens to hundreds of milliseconds, more when the
table is not in memory), and a scrape must stay under 100 ms whatever the mirror's size. The
planner's estimate is per table, not per organization, and is only as fresh as the last ANALYZE.
The run log's counts say what a run wrote, not what the mirror holds. So the worker counts, where
a few hundred milliseconds do not matter: the number is exact as of `counted_at`, at most one tick
old (a run's end refreshes its own organization at once).
"""

from collections.abc import Iterable
from uuid import UUID

from django.db.models import Count
from django.utils import timezone

from mirror.models import Organization, PfaMirror
from ops.models import MirrorCount


def mirror_counts_refresh(*, organization_ids: Iterable[UUID] | None = None) -> None:
    """Count the mirror of these organizations (default: every one) and keep the numbers."""
    if organization_ids is None:
        organization_ids = Organization.objects.values_list("pk", flat=True)
    for organization_id in list(organization_ids):
        records = PfaMirror.objects.filter(organization_id=organization_id)
        # Two counts, each served by an index: every row by the (organization, pfa_id) key, and the
        # few deleted ones by the partial index on deleted rows.
        total = records.count()
        deleted = records.filter(deleted_at__isnull=False).aggregate(n=Count("pk"))["n"]
        MirrorCount.objects.update_or_create(
            organization_id=organization_id,
            defaults={"live_rows": max(total - deleted, 0), "deleted_rows": deleted, "counted_at": timezone.now()},
        )
