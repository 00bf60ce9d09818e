"""/metrics: refused without its token, parsed by prometheus-client's own parser, equal to the database."""

import math
import time

import pytest
from django.db.models import F, Sum
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from mirror.models import PfaMirror
from mirror.tests.factories import PfaMirrorFactory
from ops.mirror_counts import mirror_counts_refresh
from ops.pems_calls import pems_calls_flush
from ops.tests.runs import failed_sync, run_sync
from synclog.models import PfaSyncLog
from synclog.tests.factories import fast_client

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-tests-0123456789"


@pytest.fixture
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics by (name, sorted labels), parsed by prometheus-client."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


# --- the token ----------------------------------------------------------------------------------


def test_metrics_do_not_exist_without_a_configured_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}"],
)
def test_metrics_refuse_a_request_without_the_token(client, metrics_token, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"pfasync_" not in response.content


def test_metrics_answer_with_the_token_and_no_login(client, metrics_token):
    samples = scrape(client)
    assert all(name.startswith("pfasync_") for name, _ in samples)


# --- the values ---------------------------------------------------------------------------------


def test_metrics_equal_the_database_after_a_sync_and_a_failed_sync(client, metrics_token, rio, pems_server):
    before = scrape(client)
    pems_server.simulator.corrupt_rows("RIO", 3)
    requests_before = pems_server.simulator.request_count()
    completed = run_sync(rio)
    requests_completed = pems_server.simulator.request_count() - requests_before
    assert value(scrape(client), "pfasync_records_kept_aside", organization="RIO") == completed.records_errored == 3
    pems_server.simulator.inject_fault("status", status=503, count=50, target="grid")
    failed = run_sync(rio, max_attempts=2)
    assert (completed.status, failed.status) == ("completed", "failed")
    samples = scrape(client)
    now = timezone.now()

    runs = PfaSyncLog.objects.filter(direction="read")
    totals = runs.aggregate(
        read=Sum("records_processed"),
        inserted=Sum("records_inserted"),
        updated=Sum("records_updated"),
        deleted=Sum("records_deleted"),
        duration_ms=Sum("duration_ms"),
    )
    for kind in ("read", "inserted", "updated", "deleted"):
        assert value(samples, f"pfasync_rows_{kind}_total", direction="read") == totals[kind]
    assert value(samples, "pfasync_rows_written_total", direction="read") == totals["inserted"] + totals["updated"]
    assert value(samples, "pfasync_rows_read_total", direction="write") == 0
    assert value(samples, "pfasync_runs_total", direction="read", status="completed") == 1
    assert value(samples, "pfasync_runs_total", direction="read", status="failed") == 1
    assert value(samples, "pfasync_run_duration_seconds_count", direction="read") == 2
    assert value(samples, "pfasync_run_duration_seconds_sum", direction="read") == pytest.approx(
        totals["duration_ms"] / 1000
    )
    assert value(samples, "pfasync_run_duration_seconds_bucket", direction="read", le="+Inf") == 2
    within_a_second = runs.filter(duration_ms__lte=1000).count()
    assert value(samples, "pfasync_run_duration_seconds_bucket", direction="read", le="1.0") == within_a_second
    assert value(samples, "pfasync_run_duration_seconds_bucket", direction="read", le="14400.0") == 2

    rio_only = {"organization": "RIO"}
    assert value(samples, "pfasync_last_run_status", direction="read", status="failed", **rio_only) == 1
    assert value(samples, "pfasync_last_run_status", direction="read", status="completed", **rio_only) == 0
    assert value(samples, "pfasync_consecutive_failed_reads", **rio_only) == 1
    age = value(samples, "pfasync_last_completed_read_age_seconds", **rio_only)
    assert age == pytest.approx((now - completed.completed_at).total_seconds(), abs=5)
    assert value(samples, "pfasync_last_completed_read_timestamp_seconds", **rio_only) == pytest.approx(
        completed.completed_at.timestamp()
    )
    assert (
        value(samples, "pfasync_mirror_rows", **rio_only) == PfaMirror.objects.live().filter(organization=rio).count()
    )
    assert value(samples, "pfasync_mirror_rows", **rio_only) == 247
    assert value(samples, "pfasync_mirror_rows_deleted", **rio_only) == 0
    assert value(samples, "pfasync_records_kept_aside", **rio_only) == failed.records_errored
    assert value(samples, "pfasync_edits_waiting", **rio_only) == 0
    assert value(samples, "pfasync_conflicts_open", **rio_only) == 0

    calls = {
        outcome: value(samples, "pfasync_pems_calls_total", outcome=outcome)
        - value(before, "pfasync_pems_calls_total", outcome=outcome)
        for outcome in ("ok", "retried", "4xx", "5xx", "timeout")
    }
    # The completed read: one call per request (count, page, count again); the failed one: its
    # count, then a page that failed twice with 503.
    assert calls == {"ok": requests_completed + 1, "retried": 0, "4xx": 0, "5xx": 1, "timeout": 0}
    latency_count = value(samples, "pfasync_pems_call_duration_seconds_count") - value(
        before, "pfasync_pems_call_duration_seconds_count"
    )
    assert latency_count == sum(calls.values())
    assert value(samples, "pfasync_pems_call_duration_seconds_bucket", le="+Inf") == value(
        samples, "pfasync_pems_call_duration_seconds_count"
    )


def test_an_organization_never_read_is_infinitely_old_and_its_failures_count(client, metrics_token, rio):
    failed_sync(rio)
    failed_sync(rio)
    samples = scrape(client)
    assert math.isinf(value(samples, "pfasync_last_completed_read_age_seconds", organization="RIO"))
    assert ("pfasync_last_completed_read_timestamp_seconds", (("organization", "RIO"),)) not in samples
    assert value(samples, "pfasync_consecutive_failed_reads", organization="RIO") == 2


def test_pems_calls_are_counted_by_outcome(client, metrics_token, rio, pems_server):
    simulator = pems_server.simulator
    before = scrape(client)
    simulator.inject_fault("status", status=503, count=1, target="count")
    run_sync(rio)  # the first count is retried once
    failed_sync(rio)  # refused: 401
    simulator.inject_fault("hang", seconds=1.0, count=5, target="count")
    run_sync(rio, read_timeout=0.2, max_attempts=1)  # no answer in time
    samples = scrape(client)
    calls = {
        outcome: value(samples, "pfasync_pems_calls_total", outcome=outcome)
        - value(before, "pfasync_pems_calls_total", outcome=outcome)
        for outcome in ("retried", "4xx", "timeout")
    }
    assert calls == {"retried": 1, "4xx": 1, "timeout": 1}


def test_calls_outside_a_run_and_the_mirror_size_show_once_written(client, metrics_token, rio):
    with fast_client(rio) as pems:
        pems.count()  # not in a run: counted in this process until a flush
    before = value(scrape(client), "pfasync_pems_calls_total", outcome="ok")
    with fast_client(rio) as pems:
        pems.count()
    pems_calls_flush()
    assert value(scrape(client), "pfasync_pems_calls_total", outcome="ok") == before + 1
    PfaMirrorFactory(organization=rio)
    assert ("pfasync_mirror_rows", (("organization", "RIO"),)) not in scrape(client)
    mirror_counts_refresh()
    assert value(scrape(client), "pfasync_mirror_rows", organization="RIO") == 1
    PfaMirror.objects.filter(organization=rio).update(deleted_at=timezone.now())
    mirror_counts_refresh()
    samples = scrape(client)
    assert value(samples, "pfasync_mirror_rows", organization="RIO") == 0
    assert value(samples, "pfasync_mirror_rows_deleted", organization="RIO") == 1


def test_the_worker_metrics_show_its_last_tick(client, metrics_token):
    from ops.tick import ops_tick

    samples = scrape(client)
    assert not [key for key in samples if key[0] == "pfasync_worker_last_tick_timestamp_seconds"]
    moment = timezone.now()
    ops_tick(now=moment)
    samples = scrape(client)
    assert value(samples, "pfasync_worker_last_tick_timestamp_seconds") == pytest.approx(moment.timestamp())
    assert value(samples, "pfasync_worker_last_seen_timestamp_seconds") == pytest.approx(moment.timestamp())


def test_the_tick_folds_the_run_log_and_the_call_counts_without_changing_a_counter(client, metrics_token, rio):
    from datetime import timedelta

    from ops.models import PemsCallStat, RunTotals
    from ops.pems_calls import pems_call_stats_compact
    from ops.run_totals import run_totals_fold

    for _ in range(2):
        run_sync(rio)
        failed_sync(rio)
    counters = {key: sample for key, sample in scrape(client).items() if not key[0].startswith("pfasync_last")}
    counters = {key: sample for key, sample in counters.items() if "age" not in key[0]}
    assert PemsCallStat.objects.count() >= 4  # a flush at the end of each run
    PfaSyncLog.objects.update(created_at=F("created_at") - timedelta(days=2))
    run_totals_fold()  # folds the runs created more than a day ago: all four
    pems_call_stats_compact()
    assert RunTotals.objects.get(direction="read").totals["status_completed"] == 2
    keys = list(PemsCallStat.objects.values_list("outcome", "le"))
    assert len(keys) == len(set(keys))  # one row per outcome and bucket
    after = scrape(client)
    assert {key: after[key] for key in counters} == counters
    run_sync(rio)  # a run after the fold is added to the folded totals
    samples = scrape(client)
    assert value(samples, "pfasync_runs_total", direction="read", status="completed") == 3
    assert (
        value(samples, "pfasync_rows_read_total", direction="read")
        == PfaSyncLog.objects.aggregate(n=Sum("records_processed"))["n"]
    )


@pytest.mark.slow
def test_a_scrape_of_a_million_row_mirror_takes_under_100_ms(client, metrics_token, rio):
    from django.db import connection

    from ops.run_totals import run_totals_fold

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO pfa_mirror (organization_id, pfa_id, data, content_hash, version, first_synced_at,
                                    last_synced_at, area_silo, category, category_description, class, source, dor,
                                    manufacturer, model, project_code, equipment_tag, is_actualized,
                                    is_discontinued, is_funds_transferred, deleted_at)
            SELECT %s, 'PFA-' || lpad(n::text, 8, '0'), ('{"pfs_id": "' || n || '"}')::json, md5(n::text), 1, now(), now(),
                   '', 'CAT', '', '', 'Rental', '', '', '', '', '', false, false, false,
                   CASE WHEN n %% 100 = 0 THEN now() END
            FROM generate_series(1, 1000000) AS n
            """,
            [rio.pk],
        )
        # A year of runs: 96 a day.
        cursor.execute(
            """
            INSERT INTO pfa_sync_log (id, organization_id, sync_type, direction, status, trigger, batch_id,
                                      records_total, records_processed, records_inserted, records_updated,
                                      records_unchanged, records_deleted, records_errored, created_at, started_at,
                                      completed_at, duration_ms, allow_mass_delete, error_message, error_details)
            SELECT gen_random_uuid(), %s, 'incremental', 'read', CASE WHEN n %% 50 = 0 THEN 'failed' ELSE 'completed' END,
                   'schedule', gen_random_uuid(), 100, 100, 1, 2, 97, 0, 0,
                   now() - n * interval '15 minutes', now() - n * interval '15 minutes',
                   now() - n * interval '15 minutes' + interval '5 seconds', 5000, false, '', '{}'
            FROM generate_series(1, 35040) AS n
            """,
            [rio.pk],
        )
        cursor.execute("ANALYZE pfa_mirror")
        cursor.execute("ANALYZE pfa_sync_log")
    mirror_counts_refresh()
    run_totals_fold()  # as the worker's tick does
    scrape(client)  # warm: the first request loads the URLconf and templates
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        samples = scrape(client)
        timings.append(time.perf_counter() - started)
    assert value(samples, "pfasync_mirror_rows", organization="RIO") == 990_000
    assert value(samples, "pfasync_mirror_rows_deleted", organization="RIO") == 10_000
    assert value(samples, "pfasync_runs_total", direction="read", status="failed") == 700
    assert sorted(timings)[2] < 0.100, timings


def test_edits_waiting_and_open_conflicts_count_modifications_by_state(client, metrics_token, rio):
    from django.contrib.auth.models import User

    from mirror.models import PfaModification

    ann = User.objects.create_user("ann")
    states = ["draft", "committed", "committed", "writing", "written", "conflict", "failed", "discarded"]
    for n, state in enumerate(states):
        PfaModification.objects.create(
            organization=rio, pfa_id=f"P{n}", author=ann, state=state, base_version=1, changes={"dor": "BEO"}
        )
    samples = scrape(client)
    assert value(samples, "pfasync_edits_waiting", organization="RIO") == 3
    assert value(samples, "pfasync_conflicts_open", organization="RIO") == 1


def test_only_a_run_that_changed_rows_recounts_its_mirror(rio, pems_server):
    from ops.models import MirrorCount

    run_sync(rio)
    counted = MirrorCount.objects.get(organization=rio)
    assert counted.live_rows == 250
    run_sync(rio)  # nothing changed
    assert MirrorCount.objects.get(organization=rio).counted_at == counted.counted_at
    pems_server.simulator.delete_row("RIO", "PFA-0000001")
    run_sync(rio)
    recounted = MirrorCount.objects.get(organization=rio)
    assert (recounted.live_rows, recounted.deleted_rows) == (249, 1) and recounted.counted_at > counted.counted_at
