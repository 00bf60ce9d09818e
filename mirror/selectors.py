"""Read-side queries of the mirror app: visible organizations, the records list, the merged view, KPIs."""

from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from uuid import UUID

from django.db import connection
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from mirror.fields import organization_code_normalize
from mirror.materialized import views_refresh_state
from mirror.models import Organization, PfaMirror, PfaModification
from mirror.store import psycopg_cursor

# --- Organizations ------------------------------------------------------------------------------


def organizations_visible_to(user) -> QuerySet[Organization]:
    """The organizations `user` may see and act on: their memberships, or every one for staff."""
    if not user.is_authenticated:
        return Organization.objects.none()
    if user.is_staff:
        return Organization.objects.all()
    return Organization.objects.filter(members=user)


def organization_get_visible(*, user, key: str) -> Organization:
    """The organization with UUID or code `key` (any case: codes are normalized) among those `user` sees; raises
    Organization.DoesNotExist, saying which key, otherwise."""
    key = str(key).strip()
    try:
        lookup = {"pk": UUID(key)}
    except ValueError:
        lookup = {"code": organization_code_normalize(key)}
    organization = organizations_visible_to(user).filter(**lookup).first()
    if organization is None:
        raise Organization.DoesNotExist(f"Organization {key!r} not found.")
    return organization


def organizations_named(codes: list[str]) -> list[Organization]:
    """The organizations with these codes (any case: codes are normalized), in the order given, each once; LookupError
    naming the codes that match none."""
    codes = list(dict.fromkeys(organization_code_normalize(code) for code in codes))
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
# The columns a listed record shows: the PFA columns, its version and when a sync last wrote it.
RECORD_COLUMNS = (*(field.attname for field in PfaMirror.pfa_columns()), "version", "last_synced_at")
MODIFICATION_STATE_FILTERS = ("draft", "committed", "conflict")


@dataclass(frozen=True)
class RecordFilters:
    """The records list's filters; None leaves one out. The forecast window keeps the records whose
    forecast overlaps [forecast_from, forecast_to]."""

    pfa_id: str | None = None
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
    last and descending first, ties go by pfa_id. `after` is the previous page's `next_cursor`
    (the last record's ordering value and pfa_id). Each record is a dict of RECORD_COLUMNS plus
    `changes`: for each field whose value differs from PEMS's, {"pems": PEMS's value, "value": the
    one shown, "state", "by"} of the modification that set it, values in their JSON form; and
    `conflict_ids`: the ids of the record's modifications in conflict, in commit order (their
    values are not shown: the record shows PEMS's until they are resolved).
    """
    descending = ordering.startswith("-")
    field = ordering.lstrip("-")
    if field not in RECORD_ORDERINGS:
        raise ValueError(f"cannot order by {ordering!r}")
    viewer_id = user.pk if user.is_authenticated else None
    sql, params = _RecordsStatement(organization, viewer_id, filters, field, descending, after, limit).sql()
    columns = [*RECORD_COLUMNS, "changes"]
    # Binary results: psycopg decodes every column in C; Django's text results cost more
    # than the query (timestamps parsed in Python).
    with psycopg_cursor() as cursor:
        cursor.execute(sql, params, binary=True)
        rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = (rows[-1][field], rows[-1]["pfa_id"])
    conflicts: dict[str, list[int]] = {}
    if rows:  # one query per page, on the (organization, state) index: conflicts are few
        in_conflict = (
            PfaModification.objects.filter(
                organization=organization,
                state=PfaModification.State.CONFLICT,
                pfa_id__in=[row["pfa_id"] for row in rows],
            )
            .in_commit_order()
            .values_list("pfa_id", "id")
        )
        for pfa_id, modification_id in in_conflict:
            conflicts.setdefault(pfa_id, []).append(modification_id)
    for row in rows:
        row["changes"] = row["changes"] or {}  # a mirror row: nobody changed it
        row["conflict_ids"] = conflicts.get(row["pfa_id"], [])
    return RecordPage(records=rows, next_cursor=next_cursor)


def records_count(*, organization: Organization, user, filters: RecordFilters) -> int:
    """How many records `records_list` lists with these filters, over all its pages. Exact, so it
    visits every matching row where a page stops after its limit: about a second for a whole
    1,000,000-record organization (docs/api.md has the measurements)."""
    viewer_id = user.pk if user.is_authenticated else None
    sql, params = _RecordsStatement(organization, viewer_id, filters, "pfa_id", False, None, 0).count_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


# Which modifications the `state` filter looks for.
_STATE_FILTERS = {
    "draft": (PfaModification.State.DRAFT,),
    "committed": PfaModification.SHARED_STATES,
    "conflict": (PfaModification.State.CONFLICT,),
}


class _RecordsStatement:
    """The records list as one SQL statement.

    It reads the rows of `pfa_merged_live` from the view's tables, in three parts: mirror rows with
    no merged row, the shared merged rows, and the viewer's draft rows (which stand in for the
    shared ones). Each part is ordered and limited on its own, so on PostgreSQL each walks an index
    in the list's order and stops after a page, and a Merge Append joins them: read through the
    view, PostgreSQL hashes every overlay row first (tens of ms on 10,000 edits). Written by hand,
    not by the ORM: building and compiling the three-part queryset cost more than running it.
    """

    def __init__(self, organization, viewer_id, filters: RecordFilters, field, descending, after, limit) -> None:
        self.filters, self.field, self.descending, self.after, self.limit = filters, field, descending, after, limit
        self.organization_key = organization.pk
        self.viewer_id = viewer_id
        self.params: list[Any] = []

    def sql(self) -> tuple[str, list[Any]]:
        statement = " UNION ALL ".join(f"SELECT * FROM ({part}) AS part{n}" for n, part in enumerate(self._parts()))
        return f"{statement} ORDER BY {self._order('')} LIMIT {self.limit + 1}", self.params

    def count_sql(self) -> tuple[str, list[Any]]:
        """The rows the list has over all its pages, counted: each part counted, the counts summed."""
        counts = " + ".join(f"({part})" for part in self._parts(counting=True))
        return f"SELECT {counts}", self.params

    def _parts(self, *, counting: bool = False) -> list[str]:
        overlay = "SELECT 1 FROM pfa_overlay o WHERE o.organization_id = t.organization_id AND o.pfa_id = t.pfa_id"
        return [
            self._part(
                "pfa_mirror",
                ["t.deleted_at IS NULL", f"NOT EXISTS ({overlay} AND (o.viewer_id IS NULL OR o.viewer_id = %s))"],
                counting,
            ),
            self._part(
                "pfa_overlay",
                ["t.viewer_id IS NULL", "t.deleted_at IS NULL", f"NOT EXISTS ({overlay} AND o.viewer_id = %s)"],
                counting,
            ),
            self._part("pfa_overlay", ["t.viewer_id = %s", "t.deleted_at IS NULL"], counting),
        ]

    def _part(self, table: str, conditions: list[str], counting: bool) -> str:
        """One part's SELECT (or its count); its parameters join `self.params` in the order they appear."""
        filters, filter_params = self._filters()
        self.params += [self.organization_key, self.viewer_id, *filter_params]
        where = f"FROM {table} t WHERE {' AND '.join(['t.organization_id = %s', *conditions, *filters])}"
        if counting:
            return f"SELECT count(*) {where}"
        columns = ", ".join(f't."{_column(name)}" AS {name}' for name in RECORD_COLUMNS)
        changes = "NULL::jsonb" if table == "pfa_mirror" else "t.changes"
        return f"SELECT {columns}, {changes} AS changes {where} ORDER BY {self._order('t.')} LIMIT {self.limit + 1}"

    def _filters(self) -> tuple[list[str], list[Any]]:
        filters, conditions, params = self.filters, [], []
        for name in ("pfa_id", "category", "source", "dor", "pfa_class"):
            if (value := getattr(filters, name)) is not None:
                conditions.append(f't."{_column(name)}" = %s')
                params.append(value)
        if filters.forecast_from is not None:
            conditions.append("t.forecast_end_date >= %s")
            params.append(filters.forecast_from)
        if filters.forecast_to is not None:
            conditions.append("t.forecast_start_date <= %s")
            params.append(filters.forecast_to)
        if filters.search:
            escaped = filters.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            columns = ("pfa_id", "equipment_tag", "manufacturer", "model")
            conditions.append("(" + " OR ".join(f"t.{name} ILIKE %s ESCAPE '\\'" for name in columns) + ")")
            params += [f"%{escaped}%"] * len(columns)
        if filters.state is not None:
            states = _STATE_FILTERS[filters.state]
            mine = " AND m.author_id = %s" if filters.state == "draft" else ""
            conditions.append(
                "EXISTS (SELECT 1 FROM pfa_modification m WHERE m.organization_id = t.organization_id "
                f"AND m.pfa_id = t.pfa_id AND m.state IN ({', '.join(['%s'] * len(states))}){mine})"
            )
            params += [str(state) for state in states] + ([self.viewer_id] if mine else [])
        if self.after is not None:
            condition, after_params = self._after()
            conditions.append(condition)
            params += after_params
        return conditions, params

    def _after(self) -> tuple[str, list[Any]]:
        """The rows after the cursor's (value, pfa_id) in the list's order."""
        value, pfa_id = self.after
        if self.field == "pfa_id":
            return f"t.pfa_id {'<' if self.descending else '>'} %s", [pfa_id]
        column = f't."{_column(self.field)}"'
        if value is None:  # empty values come first when descending, last when ascending
            tail = f" OR {column} IS NOT NULL" if self.descending else ""
            return f"(({column} IS NULL AND t.pfa_id > %s){tail})", [pfa_id]
        if self.descending:
            return f"({column} < %s OR ({column} = %s AND t.pfa_id > %s))", [value, value, pfa_id]
        return f"({column} > %s OR ({column} = %s AND t.pfa_id > %s) OR {column} IS NULL)", [value, value, pfa_id]

    def _order(self, prefix: str) -> str:
        if self.field == "pfa_id":
            return f"{prefix}pfa_id {'DESC' if self.descending else 'ASC'}"
        column = f'{prefix}"{_column(self.field)}"' if prefix else self.field
        direction = "DESC NULLS FIRST" if self.descending else "ASC NULLS LAST"
        return f"{column} {direction}, {prefix}pfa_id ASC"


def _column(name: str) -> str:
    return PfaMirror._meta.get_field(name).column


def record_get(*, organization: Organization, user, pfa_id: str) -> tuple[dict[str, Any], dict, list[PfaModification]]:
    """One record as `user` sees it (as `records_list` shows it), its raw PEMS row, and the
    modifications `user` may see (everyone's but others' drafts), newest first.
    PfaMirror.DoesNotExist if the organization has no such live record."""
    data = (
        PfaMirror.objects.live().filter(organization=organization, pfa_id=pfa_id).values_list("data", flat=True).get()
    )
    (record,) = records_list(
        organization=organization, user=user, filters=RecordFilters(pfa_id=pfa_id), limit=1
    ).records
    private = Q(state__in=[PfaModification.State.DRAFT, PfaModification.State.DISCARDED])
    modifications = (
        PfaModification.objects.filter(organization=organization, pfa_id=pfa_id)
        .filter(~private | Q(author_id=user.pk))
        .select_related("author")
        .order_by("-updated_at", "-id")
    )
    return record, data, list(modifications)


def conflicts_list(*, organization: Organization) -> list[PfaModification]:
    """The organization's modifications in conflict with PEMS, in commit order."""
    return list(
        PfaModification.objects.filter(organization=organization, state=PfaModification.State.CONFLICT)
        .select_related("author")
        .in_commit_order()
    )


def modification_get_visible(*, user, modification_id: int) -> PfaModification | None:
    """The modification `modification_id` of an organization `user` sees, or None."""
    return (
        PfaModification.objects.filter(pk=modification_id, organization__in=organizations_visible_to(user))
        .select_related("organization", "author")
        .first()
    )


# --- KPIs from the materialized views --------------------------------------------------------------


@dataclass
class Kpis:
    refreshed_at: datetime | None
    summary: list[dict[str, Any]]
    timeline: dict[str, date | None]


_TIMELINE_COLUMNS = ("plan_start", "plan_end", "forecast_start", "forecast_end", "actual_start", "actual_end")
_CENT = Decimal("0.01")


def kpis_get(*, organization: Organization) -> Kpis:
    """The organization's KPIs, from the materialized views (as of their last refresh)."""
    summary_sql = "SELECT * FROM pfa_kpi_summary WHERE organization_id = %s ORDER BY category, source"
    timeline_sql = "SELECT * FROM pfa_timeline_bounds WHERE organization_id = %s"
    refreshed_at = views_refresh_state().last_refreshed_at
    with connection.cursor() as cursor:
        cursor.execute(summary_sql, [organization.pk])
        names = [column[0] for column in cursor.description]
        summary = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        cursor.execute(timeline_sql, [organization.pk])
        names = [column[0] for column in cursor.description]
        bounds = cursor.fetchone()
    for entry in summary:
        del entry["organization_id"]
        for name in ("monthly_rate_sum", "purchase_price_sum", "plan_cost", "forecast_cost", "actual_cost"):
            entry[name] = entry[name].quantize(_CENT, rounding=ROUND_HALF_UP)
    timeline = dict.fromkeys(_TIMELINE_COLUMNS)
    if bounds is not None:
        values = dict(zip(names, bounds, strict=True))
        timeline = {name: values[name] for name in _TIMELINE_COLUMNS}
    return Kpis(refreshed_at=refreshed_at, summary=summary, timeline=timeline)


# --- Modifications at a glance ---------------------------------------------------------------------


@dataclass(frozen=True)
class EditCounts:
    drafts: int = 0
    waiting: int = 0  # committed or being written: not in PEMS yet
    conflicts: int = 0


def edit_counts_by_organization() -> dict[UUID, EditCounts]:
    """Per organization, its open drafts, its edits waiting to be written and its open conflicts (one query)."""
    states = {
        "drafts": Q(state=PfaModification.State.DRAFT),
        "waiting": Q(state__in=PfaModification.SHARED_STATES),
        "conflicts": Q(state=PfaModification.State.CONFLICT),
    }
    rows = (
        PfaModification.objects.filter(state__in=PfaModification.UNFINISHED_STATES)
        .values("organization_id")
        .annotate(**{name: Count("pk", filter=condition) for name, condition in states.items()})
        .order_by()
    )
    return {row.pop("organization_id"): EditCounts(**row) for row in rows}
