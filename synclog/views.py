"""The ops dashboard: a page over `dashboard_overview()`, and its buttons, "Sync now" on an
organization and "Cancel" on an active run, which do what the admin's actions do.

Staff may look; the buttons need `synclog.trigger_sync` (`synclog.permissions`), as in the admin and
the API, and are only shown to those who have it.
"""

import uuid

from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from mirror.selectors import organizations_visible_to
from synclog.admin import cancel_with_messages, sync_now_with_messages
from synclog.dashboard import dashboard_overview
from synclog.permissions import can_cancel_sync, can_trigger_sync
from synclog.selectors import sync_logs_visible_to


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "synclog/dashboard.html",
        {
            **admin.site.each_context(request),
            **dashboard_overview(),
            "title": "Sync dashboard",
            "can_trigger_sync": can_trigger_sync(request.user),
        },
    )


@staff_member_required
@require_POST
def sync_now(request: HttpRequest, code: str) -> HttpResponse:
    organization = get_object_or_404(organizations_visible_to(request.user), code=code)
    if not can_trigger_sync(request.user):
        raise PermissionDenied("Starting a sync needs the synclog.trigger_sync permission.")
    sync_now_with_messages(request, [organization])
    return redirect("synclog:dashboard")


@staff_member_required
@require_POST
def cancel(request: HttpRequest, log_id: uuid.UUID) -> HttpResponse:
    sync_log = get_object_or_404(sync_logs_visible_to(request.user), pk=log_id)
    if not can_cancel_sync(request.user):
        raise PermissionDenied("Cancelling a sync needs the synclog.trigger_sync permission.")
    cancel_with_messages(request, [sync_log])
    return redirect("synclog:dashboard")
