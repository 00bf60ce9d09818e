"""Read-side queries of the mirror app: visible organizations, the records list, the merged view, KPIs."""

from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from uuid import UUID

from django.db import connection
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from mirror import views_sql
from mirror.materialized import views_refresh_state
from mirror.models import Organization, PfaMergedLive, PfaMirror, PfaModification, PfaOverlay

# --- Organizations ------------------------------------------------------------------------------


def organizations_visible_to(user) -> QuerySet[Organization]:
    """The organizations `user` may see and act on: their memberships, or every one for staff."""
    if not user.is_authenticated:
        return Organization.objects.none()
    if user.is_staff:
        return Organization.objects.all()
    return Organization.objects.filter(members=user)


def organization_get_visible(*, user, key: str) -> Organization:
    """The organization with UUID or code `key` (any case) among those `user` sees; raises
    Organization.DoesNotExist, saying which key, otherwise."""
    key = str(key).strip()
    try:
        lookup = {"pk": UUID(key)}
    except ValueError:
        lookup = {"code__iexact": key}
    organization = organizations_visible_to(user).filter(**lookup).first()
    if organization is None:
        raise Organization.DoesNotExist(f"Organization {key!r} not found.")
    return organization


def organizations_named(codes: list[str]) -> list[Organization]:
    """The organizations with these codes (any case), in the order given, each once; LookupError
    naming the codes that match none."""
    codes = list(dict.fromkeys(code.upper() for code in codes))
    found = {organization.code: organization for organization in Organization.objects.filter(code__in=codes)}
    unknown = [code for code in codes if code not in found]
    if unknown:
        raise LookupError(f"Unknown organization code(s): {', '.join(unknown)}")
    return [found[code] for code in codes]


def mirror_size_subquery() -> Coalesce:
    """Live mirrored records (not deleted in PEMS) of the organization in the enclosing query, as one
    correlated count."""
    counted = (
        PfaMirror.objects.live()
        .filter(organization=OuterRef("pk"))
        .order_by()
        .values("organization")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


# --- Records: the merged view, with the caller's drafts on top --------------------------------------

# What the records list may be ordered by (model field names); ties go by pfa_id.
RECORD_ORDERINGS = (
    "pfa_id",
    "category",
    "source",
    "dor",
    "equipment_tag",
    "monthly_rate",
    "purchase_price",
    "plan_start_date",
    "plan_end_date",
    "forecast_start_date",
    "forecast_end_date",
    "actual_start_date",
    "actual_end_date",
    "pems_last_modified",
)
# The columns a listed record shows: every column but the raw PEMS row and bookkeeping.
RECORD_COLUMNS = tuple(
    field.attname
    for field in PfaMirror._meta.concrete_fields
    if field.name not in {"id", "organization", "data", "content_hash", "first_synced_at", "deleted_at"}
)
MODIFICATION_STATE_FILTERS = ("draft", "committed", "conflict")


@dataclass(frozen=True)
class RecordFilters:
    """The records list's filters; None leaves one out. The forecast window keeps the records whose
    forecast overlaps [forecast_from, forecast_to]."""

    category: str | None = None
    source: str | None = None
    dor: str | None = None
    pfa_class: str | None = None
    forecast_from: date | None = None
    forecast_to: date | None = None
    search: str | None = None
    state: str | None = None


@dataclass
class RecordPage:
    records: list[dict[str, Any]]
    next_cursor: tuple[Any, str] | None


def records_list(
    *,
    organization: Organization,
    user,
    filters: RecordFilters,
    ordering: str = "pfa_id",
    after: tuple[Any, str] | None = None,
    limit: int = 100,
) -> RecordPage:
    """One page of the organization's records as `user` sees them: the merged view (every committed,
    unwritten modification applied) with the user's own drafts on top, filtered and ordered.

    `ordering` is a name of RECORD_ORDERINGS, `-` first for descending; ascending puts empty values
    last and descending first. `after` is the previous page's `next_cursor` (the last record's
    ordering value and pfa_id). Each record is a dict of RECORD_COLUMNS plus `changes` (see
    `record_changes`).
    """
    descending = ordering.startswith("-")
    field = ordering.lstrip("-")
    if field not in RECORD_ORDERINGS:
        raise ValueError(f"cannot order by {ordering!r}")
    parts = [PfaMergedLive.objects.filter(organization=organization)]
    drafts = PfaOverlay.objects.filter(organization=organization, viewer=user)
    if user.is_authenticated and drafts.exists():
        # The user's draft rows stand in for their records' shared rows.
        own = drafts.filter(pfa_id=OuterRef("pfa_id"))
        parts = [parts[0].exclude(Exists(own)), drafts.filter(deleted_at__isnull=True)]
    parts = [_filtered(part, organization, user, filters) for part in parts]
    if after is not None:
        parts = [part.filter(_after(field, descending, after)) for part in parts]
    columns = list(dict.fromkeys((*RECORD_COLUMNS, field)))
    query = parts[0].values(*columns)
    if len(parts) > 1:
        query = query.union(parts[1].values(*columns), all=True)
    if field == "pfa_id":
        order = [F("pfa_id").desc() if descending else F("pfa_id").asc()]
    else:
        order = [F(field).desc(nulls_first=True) if descending else F(field).asc(nulls_last=True), F("pfa_id").asc()]
    rows = list(query.order_by(*order)[: limit + 1])
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = (rows[-1][field], rows[-1]["pfa_id"])
    _add_changes(organization, user, rows)
    return RecordPage(records=rows, next_cursor=next_cursor)


def _filtered(records: QuerySet, organization: Organization, user, filters: RecordFilters) -> QuerySet:
    exact = {"category": filters.category, "source": filters.source, "dor": filters.dor, "pfa_class": filters.pfa_class}
    records = records.filter(**{name: value for name, value in exact.items() if value is not None})
    if filters.forecast_from is not None:
        records = records.filter(forecast_end_date__gte=filters.forecast_from)
    if filters.forecast_to is not None:
        records = records.filter(forecast_start_date__lte=filters.forecast_to)
    if filters.search:
        term = filters.search
        records = records.filter(
            Q(pfa_id__icontains=term)
            | Q(equipment_tag__icontains=term)
            | Q(manufacturer__icontains=term)
            | Q(model__icontains=term)
        )
    if filters.state is not None:
        modifications = PfaModification.objects.filter(organization=organization)
        if filters.state == "draft":
            modifications = modifications.filter(state=PfaModification.State.DRAFT, author=user)
        elif filters.state == "committed":
            modifications = modifications.filter(state__in=PfaModification.SHARED_STATES)
        else:
            modifications = modifications.filter(state=filters.state)
        records = records.filter(Exists(modifications.filter(pfa_id=OuterRef("pfa_id"))))
    return records


def _after(field: str, descending: bool, after: tuple[Any, str]) -> Q:
    """The keyset condition for the rows after (`value`, `pfa_id`) in the list's order."""
    value, pfa_id = after
    if field == "pfa_id":
        return Q(pfa_id__lt=pfa_id) if descending else Q(pfa_id__gt=pfa_id)
    same = Q(**{field: value, "pfa_id__gt": pfa_id})
    if value is None:
        same = Q(**{f"{field}__isnull": True, "pfa_id__gt": pfa_id})
        # Empty values come first when descending, last when ascending.
        return same | Q(**{f"{field}__isnull": False}) if descending else same
    if descending:
        return Q(**{f"{field}__lt": value}) | same
    return Q(**{f"{field}__gt": value}) | same | Q(**{f"{field}__isnull": True})


def record_get(*, organization: Organization, user, pfa_id: str) -> tuple[dict[str, Any], dict, list[PfaModification]]:
    """One record as `user` sees it (as in `records_list`), its raw PEMS row, and the modifications
    `user` may see (everyone's shared ones and their own drafts), newest first.
    PfaMirror.DoesNotExist if the organization has no such live record."""
    mirror_row = PfaMirror.objects.live().filter(organization=organization, pfa_id=pfa_id).get()
    merged = (
        PfaOverlay.objects.filter(organization=organization, pfa_id=pfa_id, viewer=user).values(*RECORD_COLUMNS).first()
        if user.is_authenticated
        else None
    )
    if merged is None:
        merged = PfaMergedLive.objects.filter(organization=organization, pfa_id=pfa_id).values(*RECORD_COLUMNS).get()
    _add_changes(organization, user, [merged])
    modifications = (
        PfaModification.objects.filter(organization=organization, pfa_id=pfa_id)
        .filter(~Q(state__in=[PfaModification.State.DRAFT, PfaModification.State.DISCARDED]) | Q(author=user))
        .select_related("author")
        .order_by("-updated_at", "-id")
    )
    return merged, mirror_row.data, list(modifications)


def _add_changes(organization: Organization, user, rows: list[dict[str, Any]]) -> None:
    """Give each row `changes`: for each field whose value differs from PEMS's, {"pems": the mirror's
    value, "value": the merged one, "state", "by"} of the modification that set it (the latest
    commit, or the user's own draft on top)."""
    for row in rows:
        row["changes"] = {}
    keys = [row["pfa_id"] for row in rows]
    visible = Q(state__in=PfaModification.SHARED_STATES)
    if user.is_authenticated:
        visible |= Q(state=PfaModification.State.DRAFT, author=user)
    modifications = (
        PfaModification.objects.filter(visible, organization=organization, pfa_id__in=keys)
        .select_related("author")
        .order_by("committed_at", "id")  # drafts (not committed) last: they lie on top
    )
    setters: dict[str, dict[str, PfaModification]] = {}
    for modification in modifications:
        fields = setters.setdefault(modification.pfa_id, {})
        for name in modification.changes:
            fields[name] = modification
    if not setters:
        return
    baselines = {
        values["pfa_id"]: values
        for values in PfaMirror.objects.filter(organization=organization, pfa_id__in=list(setters)).values(
            "pfa_id", *{name for fields in setters.values() for name in fields}
        )
    }
    for row in rows:
        for name, modification in setters.get(row["pfa_id"], {}).items():
            pems = baselines[row["pfa_id"]][name]
            if row[name] != pems:
                row["changes"][name] = {
                    "pems": pems,
                    "value": row[name],
                    "state": modification.state,
                    "by": modification.author.get_username() if modification.author else None,
                }


# --- KPIs from the materialized views --------------------------------------------------------------


@dataclass
class Kpis:
    refreshed_at: datetime | None
    summary: list[dict[str, Any]]
    timeline: dict[str, date | None]


_TIMELINE_COLUMNS = ("plan_start", "plan_end", "forecast_start", "forecast_end", "actual_start", "actual_end")
_CENT = Decimal("0.01")


def kpis_get(*, organization: Organization) -> Kpis:
    """The organization's KPIs: from the materialized views on PostgreSQL (as of their last refresh),
    computed by the same SELECTs from the merged view on SQLite (always current)."""
    if connection.vendor == "postgresql":
        summary_sql = "SELECT * FROM pfa_kpi_summary WHERE organization_id = %s ORDER BY category, source"
        timeline_sql = "SELECT * FROM pfa_timeline_bounds WHERE organization_id = %s"
        organization_key: Any = organization.pk
        refreshed_at = views_refresh_state().last_refreshed_at
    else:
        select = views_sql.kpi_summary_select(views_sql.SQLITE_DAYS_BETWEEN)
        summary_sql = f"SELECT * FROM ({select}) WHERE organization_id = %s ORDER BY category, source"
        timeline_sql = f"SELECT * FROM ({views_sql.TIMELINE_BOUNDS_SELECT}) WHERE organization_id = %s"
        organization_key = organization.pk.hex
        refreshed_at = None
    with connection.cursor() as cursor:
        cursor.execute(summary_sql, [organization_key])
        names = [column[0] for column in cursor.description]
        summary = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        cursor.execute(timeline_sql, [organization_key])
        names = [column[0] for column in cursor.description]
        bounds = cursor.fetchone()
    for entry in summary:
        del entry["organization_id"]
        for name in ("monthly_rate_sum", "purchase_price_sum", "plan_cost", "forecast_cost", "actual_cost"):
            entry[name] = Decimal(str(entry[name])).quantize(_CENT, rounding=ROUND_HALF_UP)
    timeline = dict.fromkeys(_TIMELINE_COLUMNS)
    if bounds is not None:
        values = dict(zip(names, bounds, strict=True))
        timeline = {name: _as_date(values[name]) for name in _TIMELINE_COLUMNS}
    return Kpis(refreshed_at=refreshed_at, summary=summary, timeline=timeline)


def _as_date(value: Any) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else value
