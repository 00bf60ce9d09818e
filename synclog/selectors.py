"""Read-side queries of the sync app: the runs a user sees."""

from django.db.models import QuerySet

from mirror.selectors import organizations_visible_to
from synclog.models import PfaSyncLog


def sync_logs_visible_to(user) -> QuerySet[PfaSyncLog]:
    """The runs of the organizations `user` sees."""
    return PfaSyncLog.objects.filter(organization__in=organizations_visible_to(user)).select_related(
        "organization", "triggered_by"
    )
