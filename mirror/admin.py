"""Admin for PEMS connections and the mirrored PFA records.

Organizations are registered in `synclog.admin`: their list shows the last sync and offers
"Sync now", and `mirror` never imports `synclog`.
"""

import json
from functools import cached_property

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.core.exceptions import ImproperlyConfigured, PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.utils.html import format_html

from mirror import delta
from mirror.codec import json_from_form
from mirror.models import ApiConfiguration, PfaMirror, PfaModification
from mirror.pems import PemsError
from mirror.permissions import can_change_connection, can_resolve_conflicts
from mirror.services import pems_connection_check

# --- PEMS connections ---------------------------------------------------------------------------


# Written by syncs, shown read-only.
TRACKING_FIELDS = (
    "first_sync_at",
    "last_sync_at",
    "last_sync_record_count",
    "total_sync_record_count",
    "created_at",
    "updated_at",
)


class ApiConfigurationForm(forms.ModelForm):
    """Every setting of a connection; the secret can be replaced but never read back."""

    # Declared so a bare host name gets https (Django 6's default) without the transition warning.
    base_url = forms.URLField(
        max_length=500, assume_scheme="https", help_text=ApiConfiguration._meta.get_field("base_url").help_text
    )
    # Named as the model field, so the model's own checks of the secret (ApiConfiguration.clean) show
    # on it; it is not in Meta.fields, so the plaintext is never copied onto the model: clean() sets it.
    secret = forms.CharField(
        label="Password or API key",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only: leave blank to keep the stored secret. Changing the base URL, tenant, username "
        "or authentication type needs it again.",
    )

    class Meta:
        model = ApiConfiguration
        fields = (
            "organization",
            "usage",
            "base_url",
            "endpoint",
            "tenant",
            "pems_organization_code",
            "auth_type",
            "username",
            "grid_name",
            "grid_id",
            "page_size",
            "request_timeout",
            "time_zone",
        )

    def clean(self) -> dict:
        cleaned = super().clean()
        # Set before the model validates the instance, which then judges the new secret, not the stored one.
        if cleaned.get("secret"):
            try:
                self.instance.set_secret(cleaned["secret"])
            except ValidationError as error:  # its message never repeats the secret
                self.add_error("secret", error)
        return cleaned


@admin.register(ApiConfiguration)
class ApiConfigurationAdmin(admin.ModelAdmin):
    form = ApiConfigurationForm
    list_display = (
        "__str__",
        "organization",
        "usage",
        "base_url",
        "endpoint",
        "tenant",
        "auth_type",
        "username",
        "secret_stored",
        "last_sync_at",
        "last_sync_record_count",
    )
    list_filter = ("usage", "endpoint", "auth_type")
    list_select_related = ("organization",)
    search_fields = ("organization__code", "tenant", "base_url", "username")
    readonly_fields = ("secret_stored", *TRACKING_FIELDS)
    fieldsets = (
        (None, {"fields": ("organization", "usage")}),
        (
            "PEMS",
            {
                "fields": (
                    "base_url",
                    "endpoint",
                    "tenant",
                    "pems_organization_code",
                    "grid_name",
                    "grid_id",
                    "page_size",
                    "request_timeout",
                    "time_zone",
                )
            },
        ),
        (
            "Credentials",
            {"fields": ("auth_type", "username", "secret", "secret_stored")},
        ),
        (
            "Sync tracking",
            {"fields": TRACKING_FIELDS},
        ),
    )
    actions = ("test_connection",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return can_change_connection(request.user, creating=True)

    def has_change_permission(self, request: HttpRequest, obj: ApiConfiguration | None = None) -> bool:
        return can_change_connection(request.user)

    def get_fieldsets(self, request: HttpRequest, obj: ApiConfiguration | None = None) -> list:
        fieldsets = super().get_fieldsets(request, obj)
        editable = self.has_change_permission(request, obj) if obj else self.has_add_permission(request)
        if editable:
            return fieldsets
        # A read-only page shows each field's model value: for `secret` that is the encrypted token.
        return [
            (name, {**options, "fields": tuple(field for field in options["fields"] if field != "secret")})
            for name, options in fieldsets
        ]

    def get_form(self, request: HttpRequest, obj: ApiConfiguration | None = None, change: bool = False, **kwargs):
        # `secret` is the form's own write-only field (the model's is not editable): no model field to build.
        fields = kwargs.pop("fields", None) or flatten_fieldsets(self.get_fieldsets(request, obj))
        kwargs["fields"] = [field for field in fields if field != "secret"]
        return super().get_form(request, obj, change, **kwargs)

    @admin.display(boolean=True, description="secret stored")
    def secret_stored(self, configuration: ApiConfiguration) -> bool:
        return bool(configuration.secret)

    # It sends the stored secret to the stored base URL: an act on the connection, so it needs the
    # change permission, as editing it does; view-only staff can only look.
    @admin.action(description="Test connection (one count request)", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[ApiConfiguration]) -> None:
        for configuration in queryset.select_related("organization"):
            try:
                check = pems_connection_check(configuration=configuration)
            except (PemsError, ImproperlyConfigured) as error:
                # PemsError texts are scrubbed of secrets by the client; ours never carry one.
                self.message_user(request, f"{configuration}: {error}", messages.ERROR)
                continue
            self.message_user(
                request,
                f"{configuration}: PEMS answered with {check.record_count} records for organization "
                f"{check.organization_code} in {check.latency_ms} ms.",
                messages.SUCCESS,
            )


# --- mirrored PFA records -----------------------------------------------------------------------


class EstimatedCountPaginator(Paginator):
    """Counts an unfiltered PostgreSQL table from the planner's estimate instead of a full scan.

    `COUNT(*)` over a million-row table takes seconds on every page load; `reltuples` is kept up
    to date by autovacuum and is good enough for "page 3 of about 40 000". Small or filtered
    querysets (which ride an index) are still counted exactly.
    """

    exact_below = 100_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet):
            estimate = self.estimate(queryset)
            if estimate is not None and estimate >= self.exact_below:
                return estimate
        return super().count

    def estimate(self, queryset: QuerySet) -> int | None:
        """The estimated row count of `queryset`, or None when it must be counted exactly."""
        if not queryset.query.where:
            return _estimated_rows(queryset.model._meta.db_table)
        return None


class LiveRecordsPaginator(EstimatedCountPaginator):
    """Also estimates the default list of live records: the table's estimate less the records
    marked deleted, which are few and counted exactly on their own partial index."""

    def estimate(self, queryset: QuerySet) -> int | None:
        if queryset.query.where == PfaMirror.objects.live().query.where:
            table_rows = _estimated_rows(PfaMirror._meta.db_table)
            return max(table_rows - PfaMirror.objects.filter(deleted_at__isnull=False).count(), 0)
        return super().estimate(queryset)


def _estimated_rows(table: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            [table],
        )
        row = cursor.fetchone()
    # -1 means never analyzed: report 0 so the caller counts exactly.
    return max(int(row[0]), 0) if row and row[0] is not None else 0


class BoundedValuesFilter(admin.SimpleListFilter):
    """Filter on a text column, offering the values found in a bounded sample of rows.

    Django's default filter runs `SELECT DISTINCT` over the whole table on every page load. A
    sample of `sample_size` rows (of the chosen organization when one is picked, which rides the
    (organization, column) index) shows the common values; any other value still works by URL.
    """

    sample_size = 5_000
    max_choices = 50

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        sample = PfaMirror.objects.exclude(**{self.parameter_name: ""}).order_by()
        organization = request.GET.get("organization__id__exact")
        if organization:
            sample = sample.filter(organization_id=organization)
        values = set(sample.values_list(self.parameter_name, flat=True)[: self.sample_size])
        chosen = self.value()
        if chosen:
            values.add(chosen)
        return [(value, value) for value in sorted(values)[: self.max_choices]]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value():
            return queryset.filter(**{self.parameter_name: self.value()})
        return queryset


class CategoryFilter(BoundedValuesFilter):
    title = "category"
    parameter_name = "category"


class SourceFilter(BoundedValuesFilter):
    title = "source"
    parameter_name = "source"


class DorFilter(BoundedValuesFilter):
    title = "DOR"
    parameter_name = "dor"


class DeletedInPemsFilter(admin.SimpleListFilter):
    """Records deleted in PEMS are hidden unless asked for: "No" is the default, not "All"."""

    title = "deleted in PEMS"
    parameter_name = "deleted"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("no", "No"), ("yes", "Yes"), ("all", "All")]

    def choices(self, changelist):
        chosen = self.value() or "no"
        for lookup, title in self.lookup_choices:
            yield {
                "selected": chosen == lookup,
                "query_string": (
                    changelist.get_query_string(remove=[self.parameter_name])
                    if lookup == "no"
                    else changelist.get_query_string({self.parameter_name: lookup})
                ),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(deleted_at__isnull=False)
        if self.value() == "all":
            return queryset
        return queryset.live()


@admin.register(PfaMirror)
class PfaMirrorAdmin(admin.ModelAdmin):
    """Read-only browsing of what PEMS last sent; records deleted in PEMS only when filtered for."""

    list_display = (
        "pfa_id",
        "organization",
        "category",
        "source",
        "dor",
        "version",
        "last_synced_at",
        "deleted_at",
    )
    list_filter = ("organization", DeletedInPemsFilter, CategoryFilter, SourceFilter, DorFilter)
    list_select_related = ("organization",)
    search_fields = ("=pfa_id",)
    paginator = LiveRecordsPaginator
    show_full_result_count = False
    exclude = ("data",)
    readonly_fields = ("raw_pems_row",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: PfaMirror | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: PfaMirror | None = None) -> bool:
        return False

    @admin.display(description="raw PEMS row")
    def raw_pems_row(self, record: PfaMirror) -> str:
        return format_html(
            "<pre>{}</pre>",
            json.dumps(record.data, indent=2, sort_keys=True, ensure_ascii=False),
        )


@admin.register(PfaModification)
class PfaModificationAdmin(admin.ModelAdmin):
    """Planners' edits, from draft to written; made through the API, looked at (and, in conflict,
    resolved) here."""

    list_display = ("pfa_id", "organization", "author", "state", "changed_fields", "committed_at", "updated_at")
    list_filter = ("state", "organization", "author")
    list_select_related = ("organization", "author")
    search_fields = ("=pfa_id",)
    ordering = ("-updated_at",)
    readonly_fields = [field.name for field in PfaModification._meta.fields]
    actions = ("resolve_keep_mine", "resolve_take_pems")
    change_form_template = "admin/mirror/pfamodification/change_form.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # edits come through the records API, which validates them

    def has_change_permission(self, request: HttpRequest, obj: PfaModification | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: PfaModification | None = None) -> bool:
        return False  # the history of what was written stays

    def has_edit_permission(self, request: HttpRequest) -> bool:
        return can_resolve_conflicts(request.user)

    @admin.display(description="fields changed")
    def changed_fields(self, modification: PfaModification) -> str:
        return ", ".join(sorted(delta.field_label(name) for name in modification.changes))

    @admin.action(description="Resolve conflicts: keep mine (commit again on PEMS's record)", permissions=["edit"])
    def resolve_keep_mine(self, request: HttpRequest, queryset: QuerySet[PfaModification]) -> None:
        self._resolve(request, queryset, delta.Resolution.KEEP_MINE)

    @admin.action(description="Resolve conflicts: take PEMS's values (discard mine)", permissions=["edit"])
    def resolve_take_pems(self, request: HttpRequest, queryset: QuerySet[PfaModification]) -> None:
        self._resolve(request, queryset, delta.Resolution.TAKE_PEMS)

    def _resolve(self, request, modifications, resolution: str, values: dict | None = None) -> bool:
        resolved = True
        for modification in modifications:
            try:
                delta.conflict_resolve(
                    modification=modification, user=request.user, resolution=resolution, values=values
                )
            except (delta.NotInConflict, ValidationError) as error:
                messages.error(request, f"{modification.pfa_id}: {'; '.join(_messages(error))}")
                resolved = False
                continue
            modification.refresh_from_db()
            messages.success(request, f"{modification.pfa_id}: {modification.error_message}")
        return resolved

    def get_urls(self):
        merge = self.admin_site.admin_view(self.merge_view)
        return [path("<int:object_id>/merge/", merge, name="mirror_pfamodification_merge"), *super().get_urls()]

    def merge_view(self, request: HttpRequest, object_id: int):
        """Resolve one conflict by merging: a value per conflicting field, committed on PEMS's record."""
        modification = get_object_or_404(PfaModification, pk=object_id, state=PfaModification.State.CONFLICT)
        if not self.has_edit_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            values = {name: request.POST.get(name, "") for name in modification.conflict}
            values = {name: json_from_form(name, value) for name, value in values.items()}
            if self._resolve(request, [modification], delta.Resolution.MERGE, values):
                return redirect("admin:mirror_pfamodification_change", modification.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Merge the conflict of {modification.pfa_id}",
            "modification": modification,
            "conflict_fields": [
                (name, delta.field_label(name), sides) for name, sides in modification.conflict.items()
            ],
            "opts": self.model._meta,
        }
        return render(request, "admin/mirror/pfamodification/merge.html", context)


def _messages(error: Exception) -> list[str]:
    return error.messages if isinstance(error, ValidationError) else [str(error)]
