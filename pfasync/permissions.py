"""Who may read the API's schema and docs (SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"]).

A module of its own: drf-spectacular imports it while its views module loads, so it must not
import that module (as `pfasync.api` does).
"""

from django.conf import settings
from rest_framework.permissions import BasePermission


class ApiDocsAccess(BasePermission):
    """The OpenAPI schema and its docs page: signed-in users only (a bearer token or an admin
    session), unless API_DOCS_PUBLIC opens them. Read per request, so tests can toggle it."""

    def has_permission(self, request, view) -> bool:
        return settings.API_DOCS_PUBLIC or bool(request.user and request.user.is_authenticated)
