"""Purging for good the records PEMS deleted, once they have been marked deleted longer than the
retention; the edits held on them fail with their reason."""

import logging
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from mirror.delta import modifications_fail_purged
from mirror.models import Organization, PfaMirror

logger = logging.getLogger(__name__)


def pfa_deleted_purge(*, organization: Organization | None = None, retention_days: int | None = None) -> int:
    """Delete for good the records marked deleted in PEMS more than `retention_days` days ago
    (default `SYNC_DELETED_RETENTION_DAYS`), of `organization` or of all; returns how many.

    Runs in batches of `SYNC_PURGE_BATCH_SIZE` records, one DELETE statement each, committed on its own
    (unless the caller holds a transaction). A record a sync found again meanwhile (no longer marked deleted) is kept.
    The edits held on a purged record fail with their reason, in the batch's transaction.
    """
    if retention_days is None:
        retention_days = settings.SYNC_DELETED_RETENTION_DAYS
    if retention_days < 0:
        raise ValueError(f"retention_days is {retention_days}: it cannot be negative.")
    cutoff = timezone.now() - timedelta(days=retention_days)
    expired = PfaMirror.objects.filter(deleted_at__lt=cutoff)
    if organization is not None:
        expired = expired.filter(organization=organization)
    # Each batch is its own short transaction, so a large purge neither holds locks on a big table
    # for long nor leaves a huge transaction to undo.
    batch_size = settings.SYNC_PURGE_BATCH_SIZE
    purged = 0
    while batch := list(expired.order_by().values_list("pk", flat=True)[:batch_size]):
        with transaction.atomic():
            # Filtered again, and locked: a sync may have found a record again since the batch was chosen.
            rows = list(
                expired.filter(pk__in=batch)
                .select_for_update()
                .values_list("pk", "organization_id", "pfa_id", "deleted_at")
            )
            _, deleted = PfaMirror.objects.filter(pk__in=[row[0] for row in rows]).delete()
            purged += deleted.get(PfaMirror._meta.label, 0)
            # The edits held on those records fail now (after the delete: a commit that ran meanwhile too).
            by_organization: dict = defaultdict(dict)
            for _, organization_id, pfa_id, deleted_at in rows:
                by_organization[organization_id][pfa_id] = deleted_at
            for organization_id, keys in by_organization.items():
                modifications_fail_purged(organization_id=organization_id, purged=keys)
    if purged:
        logger.info(
            "Purged %d records deleted in PEMS more than %d days ago (%s)",
            purged,
            retention_days,
            organization.code if organization is not None else "all organizations",
        )
    return purged
