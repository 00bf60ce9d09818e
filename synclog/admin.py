"""Admin for organizations (with their last sync and "Sync now"), the read-only sync history (with
"Cancel"), and django-q2's own pages, for superusers only.

Organizations live in `mirror` but are registered here: their list joins the sync history and
starts syncs, and `mirror` never imports `synclog`. Every act asks its one rule, here as in the API
and on the dashboard: starting and cancelling a run `synclog.permissions`; creating, changing,
enabling or disabling sync of an organization `mirror.permissions`.
"""

import json
import uuid
from collections.abc import Iterable

# Imported first so that django-q2's registrations exist, to be replaced below.
import django_q.admin  # noqa: F401
from django.apps import apps
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from mirror.models import Organization
from mirror.permissions import can_change_organization, can_create_organization
from mirror.selectors import mirror_size_subquery
from synclog.models import PfaSyncLog, PfaSyncRecordError, RunEnded, SyncStatus
from synclog.permissions import can_cancel_sync, can_trigger_sync
from synclog.runs import SyncAlreadyRunning, SyncNothingToWrite, sync_cancel, sync_start
from synclog.selectors import organizations_with_last_run
from synclog.worker import queued_runs_warning

STATUS_COLOURS = {
    SyncStatus.QUEUED: "#6c757d",
    SyncStatus.RUNNING: "#0d6efd",
    SyncStatus.COMPLETED: "#198754",
    SyncStatus.FAILED: "#dc3545",
    SyncStatus.CANCELLED: "#b8860b",
}


def status_badge(status: str) -> str:
    """A sync status as a coloured label."""
    return format_html(
        '<span style="color:#fff;background:{};padding:1px 6px;border-radius:3px;white-space:nowrap">{}</span>',
        STATUS_COLOURS.get(status, "#6c757d"),
        SyncStatus(status).label if status in SyncStatus.values else status,
    )


def format_duration(duration_ms: int | None) -> str:
    if duration_ms is None:
        return "-"
    if duration_ms < 1000:
        return f"{duration_ms} ms"
    seconds = duration_ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


# --- the acts, shared with the dashboard ------------------------------------------------------------


def sync_now_with_messages(
    request: HttpRequest, organizations: Iterable[Organization], *, direction: str = PfaSyncLog.Direction.READ
) -> None:
    """Start a sync (or, `direction`, a write run) of each organization, as the admin's actions and
    the dashboard's button do, and say how each went: queued, already running or (a write) nothing
    to write (a warning), or refused (an error: no connection, or the task queue would not take
    it). The caller has checked `can_trigger_sync`."""
    # Every run of the batch is visible before its task is enqueued; the queue has answered once
    # the block ends.
    with transaction.atomic():
        batch = sync_start(
            organizations=list(organizations),
            trigger=PfaSyncLog.Trigger.ADMIN,
            triggered_by=request.user,
            direction=direction,
        )
    what = "Write run" if direction == PfaSyncLog.Direction.WRITE else "Sync"
    for sync_log in batch.queued:
        messages.success(request, f"{what} of {sync_log.organization.code} queued (run {sync_log.id}).")
    if warning := queued_runs_warning(batch.queued):
        messages.warning(request, warning)
    for refusal in batch.refused:
        level = messages.WARNING if isinstance(refusal, SyncAlreadyRunning | SyncNothingToWrite) else messages.ERROR
        messages.add_message(request, level, str(refusal))


def cancel_with_messages(request: HttpRequest, sync_logs: Iterable[PfaSyncLog]) -> None:
    """Cancel each run, as the admin's action and the dashboard's button do: a queued one at once,
    a running one at its next page boundary; one that has ended is a warning. The caller has checked
    `can_trigger_sync`."""
    for sync_log in sync_logs:
        try:
            sync_log = sync_cancel(sync_log=sync_log)
        except RunEnded as ended:
            messages.warning(request, str(ended))
            continue
        code = sync_log.organization.code
        if sync_log.status == SyncStatus.CANCELLED:
            messages.success(request, f"Sync of {code} cancelled before it started (run {sync_log.id}).")
        else:
            messages.success(
                request, f"Sync of {code} stops at its next page boundary and ends cancelled (run {sync_log.id})."
            )


# --- organizations ------------------------------------------------------------------------------


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = (
        "code",
        "name",
        "is_active",
        "sync_enabled",
        "last_sync_at",
        "last_sync_status",
        "last_sync_records",
        "mirror_size",
    )
    list_filter = ("is_active", "sync_enabled")
    search_fields = ("code", "name")
    actions = ("sync_now", "write_now", "enable_sync", "disable_sync")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Organization]:
        return organizations_with_last_run(super().get_queryset(request)).annotate(mirror_size=mirror_size_subquery())

    @admin.display(description="last sync", ordering="last_sync_at")
    def last_sync_at(self, organization: Organization):
        # The last sync as the dashboard, the alerts and the API say it (`last_sync_subquery`);
        # the two columns after it are of the newest read, which may have failed since.
        return organization.last_sync_at

    @admin.display(description="last read status")
    def last_sync_status(self, organization: Organization) -> str:
        return status_badge(organization.last_run_status) if organization.last_run_status else "-"

    @admin.display(description="last read records")
    def last_sync_records(self, organization: Organization) -> int | None:
        return organization.last_run_records_processed

    @admin.display(description="mirror size", ordering="mirror_size")
    def mirror_size(self, organization: Organization) -> int:
        return organization.mirror_size

    def has_add_permission(self, request: HttpRequest) -> bool:
        return can_create_organization(request.user)

    def has_change_permission(self, request: HttpRequest, obj: Organization | None = None) -> bool:
        return can_change_organization(request.user)

    def has_trigger_permission(self, request: HttpRequest) -> bool:
        return can_trigger_sync(request.user)

    @admin.action(description="Sync now", permissions=["trigger"])
    def sync_now(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        sync_now_with_messages(request, queryset)

    @admin.action(description="Write committed edits to PEMS now", permissions=["trigger"])
    def write_now(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        sync_now_with_messages(request, queryset, direction=PfaSyncLog.Direction.WRITE)

    @admin.action(description="Enable scheduled sync", permissions=["change"])
    def enable_sync(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        changed = queryset.update(sync_enabled=True)
        self.message_user(request, f"Sync enabled for {changed} organization(s).", messages.SUCCESS)

    @admin.action(description="Disable scheduled sync", permissions=["change"])
    def disable_sync(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        changed = queryset.update(sync_enabled=False)
        self.message_user(request, f"Sync disabled for {changed} organization(s).", messages.SUCCESS)


# --- sync history -------------------------------------------------------------------------------


class ReadOnlyAdminMixin:
    """History is written by the engine only; the admin shows it."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def pretty_json(value) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


class RecordErrorInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = PfaSyncRecordError
    fields = ("pfa_id", "reason", "raw_pems_row")
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="raw PEMS row")
    def raw_pems_row(self, record_error: PfaSyncRecordError) -> str:
        return pretty_json(record_error.raw_row)


@admin.register(PfaSyncLog)
class PfaSyncLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "started",
        "organization",
        "direction",
        "read_type",
        "trigger",
        "coloured_status",
        "records_processed",
        "records_inserted",
        "records_updated",
        "records_deleted",
        "records_errored",
        "duration",
    )
    list_filter = (
        "status",
        "organization",
        "sync_type",
        "trigger",
        "direction",
        "allow_mass_delete",
        ("created_at", admin.DateFieldListFilter),
    )
    list_select_related = ("organization",)
    # Searching is exact on the batch (or run) UUID; see get_search_results.
    search_fields = ("batch_id",)
    search_help_text = "Exact batch id (or run id) UUID."
    inlines = (RecordErrorInline,)
    actions = ("cancel",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "organization",
                    "api_configuration",
                    "batch_id",
                    "coloured_status",
                    "progress",
                )
            },
        ),
        ("Run", {"fields": ("direction", "read_type", "trigger", "triggered_by", "command", "allow_mass_delete")}),
        (
            "Records",
            {
                "fields": (
                    "records_total",
                    "records_processed",
                    "records_inserted",
                    "records_updated",
                    "records_unchanged",
                    "records_deleted",
                    "records_errored",
                    "records_written",
                    "records_rebased",
                    "records_conflicts",
                )
            },
        ),
        (
            "Timing",
            {
                "fields": (
                    "created_at",
                    "started_at",
                    "heartbeat_at",
                    "completed_at",
                    "duration",
                )
            },
        ),
        ("Error", {"fields": ("error_message", "pretty_error_details")}),
    )
    readonly_fields = (
        "coloured_status",
        "progress",
        "duration",
        "pretty_error_details",
        "read_type",
    )

    @admin.display(description="read type", ordering="sync_type")
    def read_type(self, sync_log: PfaSyncLog) -> str:
        # A write run is neither full nor incremental.
        return "-" if sync_log.direction == PfaSyncLog.Direction.WRITE else sync_log.get_sync_type_display()

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return can_cancel_sync(request.user)

    @admin.action(description="Cancel (queued: at once; running: at its next page boundary)", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[PfaSyncLog]) -> None:
        cancel_with_messages(request, queryset.select_related("organization"))

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        # A UUID column cannot be searched with icontains; anything else than a UUID matches nothing.
        search_term = search_term.strip()
        if not search_term:
            return queryset, False
        try:
            wanted = uuid.UUID(search_term)
        except ValueError:
            return queryset.none(), False
        return queryset.filter(Q(batch_id=wanted) | Q(pk=wanted)), False

    @admin.display(description="started", ordering="created_at")
    def started(self, sync_log: PfaSyncLog):
        return sync_log.started_at or sync_log.created_at

    @admin.display(description="status", ordering="status")
    def coloured_status(self, sync_log: PfaSyncLog) -> str:
        return status_badge(sync_log.status)

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, sync_log: PfaSyncLog) -> str:
        return format_duration(sync_log.duration_ms)

    @admin.display(description="progress")
    def progress(self, sync_log: PfaSyncLog) -> str:
        total = sync_log.records_total
        if not total:
            return f"{sync_log.records_processed} records processed" + (
                " (total not known yet)" if sync_log.is_active else ""
            )
        percent = min(100, round(100 * sync_log.records_processed / total))
        return format_html(
            '<progress max="100" value="{}"></progress> {}% ({} of {} records)',
            percent,
            percent,
            sync_log.records_processed,
            total,
        )

    @admin.display(description="error details")
    def pretty_error_details(self, sync_log: PfaSyncLog) -> str:
        return pretty_json(sync_log.error_details) if sync_log.error_details else "-"


# --- django-q2's pages: superusers only ----------------------------------------------------------


class SuperuserOnlyAdminMixin:
    """No model permission opens these pages: a Schedule's `func` is a dotted path the worker
    imports and calls (editing one runs code on the worker), and tasks carry arguments and results."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return self.has_module_permission(request) and super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, *args) -> bool:
        return self.has_module_permission(request) and super().has_add_permission(request, *args)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return self.has_module_permission(request) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return self.has_module_permission(request) and super().has_delete_permission(request, obj)


def superuser_only(app_label: str) -> None:
    """Register again every model of `app_label` the admin shows, as it shows it, behind the superuser check."""
    for model in apps.get_app_config(app_label).get_models():
        if admin.site.is_registered(model):
            model_admin = type(admin.site.get_model_admin(model))
            admin.site.unregister(model)
            admin.site.register(model, type(model_admin.__name__, (SuperuserOnlyAdminMixin, model_admin), {}))


# Schedule, the Success and Failure task pages, and the ORM queue.
superuser_only("django_q")
