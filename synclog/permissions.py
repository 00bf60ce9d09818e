"""Who may do what with syncs: one rule per act, asked alike by the API, the admin and the dashboard.

Seeing is scoping: a user sees the runs of the organizations they see (their memberships, every one
for staff), and anything else is "not found". Acting needs a permission on top: starting and
cancelling a run need `synclog.trigger_sync`, whoever asks and from wherever. The admin's model
acts (enable or disable sync, edit or test a connection) need the model's change permission, which
the admin itself checks; view-only staff can only look.
"""

from django.conf import settings
from django.db.models import QuerySet
from rest_framework.permissions import BasePermission

from mirror.services import organizations_visible_to
from synclog.models import PfaSyncLog

TRIGGER_SYNC = "synclog.trigger_sync"


def can_trigger_sync(user) -> bool:
    """Start a sync run, or cancel one (an inactive user has no permission at all)."""
    return user.has_perm(TRIGGER_SYNC)


def sync_logs_visible_to(user) -> QuerySet[PfaSyncLog]:
    """The runs of the organizations `user` sees."""
    return PfaSyncLog.objects.filter(organization__in=organizations_visible_to(user)).select_related(
        "organization", "triggered_by"
    )


class ApiDocsAccess(BasePermission):
    """The OpenAPI schema and its docs page: signed-in users only (a bearer token or an admin
    session), unless API_DOCS_PUBLIC opens them. Read per request, so tests can toggle it."""

    def has_permission(self, request, view) -> bool:
        return settings.API_DOCS_PUBLIC or bool(request.user and request.user.is_authenticated)
