"""The delta layer's read path on the benchmark's N-row organization (run by bench_sync.py, after
the syncs, in a process of its own).

Untimed setup: 10,000 committed modifications by nine planners and 1,000 drafts of the querying
planner (half of them on records with committed edits too), on records drawn at random; the
overlay is built by `mirror.delta.overlay_refresh`, as a commit would. Each draft moves its record
to another category, so the list's filters meet records that the drafts move in and out.

Timed, through the whole selector, as the API calls it:
- the records list as the front end asks for it (one category, a forecast window, newest first,
  100 rows) for the querying planner: p50/p95 and the indexes the plan uses;
- the list's exact total (`includeCount=true`, `records_count`) for the same filters, and for the
  whole organization unfiltered (the most it costs): p50/p95;
- `kpis` (the materialized views): p50/p95;
- one `REFRESH MATERIALIZED VIEW CONCURRENTLY` of both views (median of three).
"""

from __future__ import annotations

import datetime as dt
import random
import re
import statistics
import time
from decimal import Decimal
from typing import Any

COMMITTED = 10_000
DRAFTS = 1_000
PLANNERS = 10
LIST_LIMIT = 100
REFRESH_RUNS = 3


def _percentiles(timings: list[float]) -> dict[str, float]:
    timings = sorted(timings)
    return {
        "runs": len(timings),
        "p50_ms": round(statistics.median(timings), 2),
        "p95_ms": round(timings[min(len(timings) - 1, round(0.95 * len(timings)) - 1)], 2),
        "max_ms": round(timings[-1], 2),
    }


def _timed(function, runs: int) -> list[float]:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def modifications_create(organization, *, committed: int, drafts: int, seed: int = 7) -> dict[str, Any]:
    """The modifications of the setup, created in bulk; the overlay built from them (timed apart)."""
    from django.contrib.auth.models import User
    from django.db import connection, transaction
    from django.utils import timezone

    from mirror.delta import overlay_refresh, value_to_json
    from mirror.models import PfaMirror, PfaModification
    from mirror.simulator import CATEGORIES

    planners = [User.objects.get_or_create(username=f"planner{n}")[0] for n in range(PLANNERS)]
    me, others = planners[0], planners[1:]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pfa_id FROM pfa_mirror WHERE organization_id = %s AND deleted_at IS NULL ORDER BY random() LIMIT %s",
            [organization.pk, committed + drafts // 2],
        )
        keys = [pfa_id for (pfa_id,) in cursor.fetchall()]
    committed_keys = keys[:committed]
    draft_keys = keys[committed:] + keys[: drafts - len(keys[committed:])]
    rows = {row.pfa_id: row for row in PfaMirror.objects.filter(organization=organization, pfa_id__in=set(keys))}
    rng = random.Random(seed)
    now = timezone.now()
    modifications = []
    for n, pfa_id in enumerate(committed_keys):
        row = rows[pfa_id]
        changes = {"monthly_rate": value_to_json("monthly_rate", (row.monthly_rate or Decimal(0)) + 100)}
        if row.forecast_start_date:
            changes["forecast_start_date"] = (row.forecast_start_date + dt.timedelta(days=7)).isoformat()
        modifications.append(
            PfaModification(
                organization=organization,
                pfa_id=pfa_id,
                author=others[n % len(others)],
                state=PfaModification.State.COMMITTED,
                changes=changes,
                base_values={name: value_to_json(name, getattr(row, name)) for name in changes},
                base_version=row.version,
                base_record_id=row.pems_record_id,
                committed_at=now + dt.timedelta(microseconds=n),
            )
        )
    categories = [entry[0] for entry in CATEGORIES]
    for pfa_id in draft_keys:
        row = rows[pfa_id]
        category = rng.choice([code for code in categories if code != row.category])
        modifications.append(
            PfaModification(
                organization=organization,
                pfa_id=pfa_id,
                author=me,
                state=PfaModification.State.DRAFT,
                changes={"category": category},
                base_values={"category": row.category},
                base_version=row.version,
                base_record_id=row.pems_record_id,
            )
        )
    PfaModification.objects.bulk_create(modifications, batch_size=2_000)
    started = time.perf_counter()
    with transaction.atomic():
        overlay_refresh(organization_id=organization.pk, pfa_ids=keys)
    return {"committed": committed, "drafts": drafts, "overlay_build_seconds": round(time.perf_counter() - started, 2)}


def delta_measure(*, org: str, runs: int) -> dict[str, Any]:
    """Set up the modifications, then time the list, the KPIs and a refresh of the views."""
    from django.contrib.auth.models import User
    from django.db import connection

    from mirror.materialized import views_refresh
    from mirror.models import Organization, PfaOverlay
    from mirror.selectors import RecordFilters, _RecordsStatement, kpis_get, records_count, records_list
    from mirror.simulator import CATEGORIES
    from mirror.store import psycopg_cursor

    organization = Organization.objects.get(code=org)
    # 10,000 and 1,000 on the benchmark's million rows; as many per row on a smaller quick run.
    committed = min(COMMITTED, organization.pfa_records.count() // 100)
    drafts = committed * DRAFTS // COMMITTED
    report: dict[str, Any] = {"setup": modifications_create(organization, committed=committed, drafts=drafts)}
    report["overlay_rows"] = PfaOverlay.objects.filter(organization=organization).count()
    with connection.cursor() as cursor:  # as autovacuum would have done by now
        for table in ("pfa_mirror", "pfa_overlay", "pfa_modification"):
            cursor.execute(f"ANALYZE {table}")
    refreshes = [views_refresh(now_anyway=True).duration_ms / 1000 for _ in range(REFRESH_RUNS)]
    report["refresh"] = {"runs_seconds": refreshes, "seconds": round(statistics.median(refreshes), 2)}

    me = User.objects.get(username="planner0")
    rng = random.Random(42)
    first_day = dt.date(2024, 1, 1)

    def filters() -> RecordFilters:
        start = first_day + dt.timedelta(days=rng.randrange(3 * 365))
        return RecordFilters(
            category=CATEGORIES[rng.randrange(len(CATEGORIES))][0],
            forecast_from=start,
            forecast_to=start + dt.timedelta(days=rng.choice((30, 90, 180, 365))),
        )

    def list_page(chosen: RecordFilters | None = None) -> list:
        return records_list(
            organization=organization,
            user=me,
            filters=chosen or filters(),
            ordering="-forecast_start_date",
            limit=LIST_LIMIT,
        ).records

    _timed(list_page, 10)  # warm the caches and the connection; not measured
    returned = []
    report["list"] = _percentiles(_timed(lambda: returned.append(len(list_page())), runs))
    report["list"]["mean_rows_returned"] = round(statistics.mean(returned), 1)
    sql, params = _RecordsStatement(organization, me.pk, filters(), "forecast_start_date", True, None, LIST_LIMIT).sql()
    with psycopg_cursor() as cursor:
        cursor.execute("EXPLAIN ANALYZE " + sql, params)
        plan = "\n".join(line for (line,) in cursor.fetchall())
    report["list"]["indexes_used"] = sorted(set(re.findall(r"Index (?:Only )?Scan(?: Backward)? using (\w+)", plan)))
    report["list"]["explain"] = plan

    # includeCount=true: the exact total, filtered as the list above, and of the whole organization.
    def count(chosen: RecordFilters | None = None) -> int:
        return records_count(organization=organization, user=me, filters=chosen or filters())

    _timed(count, 3)
    report["count"] = {"filtered": _percentiles(_timed(count, runs))}
    whole_runs = max(3, runs // 10)  # a scan of the whole organization each: fewer runs
    report["count"]["whole"] = _percentiles(_timed(lambda: count(RecordFilters()), whole_runs))
    report["count"]["whole"]["records"] = count(RecordFilters())

    kpis = lambda: kpis_get(organization=organization)  # noqa: E731
    _timed(kpis, 10)
    report["kpis"] = _percentiles(_timed(kpis, runs))
    report["kpis"]["summary_rows"] = len(kpis().summary)
    return report
