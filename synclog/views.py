"""The ops dashboard: a page over `dashboard_overview()` and a "Sync now" button over `sync_start()`."""

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from mirror.models import Organization
from synclog.dashboard import dashboard_overview
from synclog.engine import SyncAlreadyRunning, sync_start
from synclog.models import PfaSyncLog


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "synclog/dashboard.html",
        {
            **admin.site.each_context(request),
            **dashboard_overview(),
            "title": "Sync dashboard",
        },
    )


@staff_member_required
@require_POST
def sync_now(request: HttpRequest, code: str) -> HttpResponse:
    organization = get_object_or_404(Organization, code=code)
    batch = sync_start(organizations=[organization], trigger=PfaSyncLog.Trigger.ADMIN, triggered_by=request.user)
    for sync_log in batch.queued:
        messages.success(request, f"Sync of {organization.code} queued (run {sync_log.id}).")
    for refusal in batch.refused:
        level = messages.WARNING if isinstance(refusal, SyncAlreadyRunning) else messages.ERROR
        messages.add_message(request, level, str(refusal))
    return redirect("synclog:dashboard")
