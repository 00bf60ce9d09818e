"""The SQL of the delta layer's database views, in one place.

Migrations create the views from texts of their own, frozen as they ran. The view of merged records
lists the mirror's columns as the model declares them: a model change that alters the list fails
`test_views_sql` until a migration recreates the view with the new text.
"""

from mirror.models import PfaMirror

# Column names that are SQL reserved words, and so are quoted.
_RESERVED = frozenset({"class"})
# Every column of pfa_mirror, in its order; the overlay's `mirror_id` stands in for its own `id`.
_COLUMNS = ", ".join(
    f'"{field.column}"' if field.column in _RESERVED else field.column
    for field in PfaMirror._meta.concrete_fields
    if field.name != "id"
)

# The mirror's live rows without committed modifications, and the merged rows of those with some.
MERGED_LIVE = f"""
CREATE VIEW pfa_merged_live AS
SELECT m.id, {", ".join("m." + c for c in _COLUMNS.split(", "))}
  FROM pfa_mirror m
 WHERE m.deleted_at IS NULL
   AND NOT EXISTS (SELECT 1 FROM pfa_overlay o
                    WHERE o.organization_id = m.organization_id AND o.pfa_id = m.pfa_id AND o.viewer_id IS NULL)
UNION ALL
SELECT o.mirror_id, {", ".join("o." + c for c in _COLUMNS.split(", "))}
  FROM pfa_overlay o
 WHERE o.viewer_id IS NULL AND o.deleted_at IS NULL
"""

# Average days per month (365.25 / 12): a rental's cost is its monthly rate x the months it runs.
_DAYS_PER_MONTH = "30.4375"


def _cost(start: str, end: str) -> str:
    days = f"GREATEST({end} - {start}, 0)"  # whole days, none when the end is before the start
    return (
        f"COALESCE(SUM(CASE WHEN source = 'Rental' THEN monthly_rate * {days} / {_DAYS_PER_MONTH} "
        f"WHEN source = 'Purchase' THEN purchase_price END), 0)"
    )


# Per organization, category and source: counts, sums and the plan, forecast and actual cost.
KPI_SUMMARY_SELECT = f"""
SELECT organization_id, category, source,
       COUNT(*) AS record_count,
       COALESCE(SUM(monthly_rate), 0) AS monthly_rate_sum,
       COALESCE(SUM(purchase_price), 0) AS purchase_price_sum,
       {_cost("plan_start_date", "plan_end_date")} AS plan_cost,
       {_cost("forecast_start_date", "forecast_end_date")} AS forecast_cost,
       {_cost("actual_start_date", "actual_end_date")} AS actual_cost
  FROM pfa_merged_live
 GROUP BY organization_id, category, source
"""


TIMELINE_BOUNDS_SELECT = """
SELECT organization_id,
       MIN(plan_start_date) AS plan_start, MAX(plan_end_date) AS plan_end,
       MIN(forecast_start_date) AS forecast_start, MAX(forecast_end_date) AS forecast_end,
       MIN(actual_start_date) AS actual_start, MAX(actual_end_date) AS actual_end
  FROM pfa_merged_live
 GROUP BY organization_id
"""

MATERIALIZED_VIEWS = ("pfa_kpi_summary", "pfa_timeline_bounds")

CREATE_MATERIALIZED_VIEWS = f"""
CREATE MATERIALIZED VIEW pfa_kpi_summary AS {KPI_SUMMARY_SELECT};
CREATE UNIQUE INDEX pfa_kpi_summary_key ON pfa_kpi_summary (organization_id, category, source);
CREATE MATERIALIZED VIEW pfa_timeline_bounds AS {TIMELINE_BOUNDS_SELECT};
CREATE UNIQUE INDEX pfa_timeline_bounds_key ON pfa_timeline_bounds (organization_id);
"""
