"""The read sync end to end: simulator over HTTP -> client -> parser -> mirror -> pfa_sync_log."""

import threading
import time

import pytest
from django.db import connection

from mirror.models import ApiConfiguration, PfaMirror
from mirror.pems import PemsUnavailable
from synclog.engine import sync_run
from synclog.models import PfaSyncLog, PfaSyncRecordError, SyncStatus
from synclog.runs import SyncAlreadyRunning, sync_claim
from synclog.tests.factories import fast_client

pytestmark = pytest.mark.django_db


def run_sync(organization, **kwargs) -> PfaSyncLog:
    sync_log = sync_claim(organization=organization, trigger=PfaSyncLog.Trigger.COMMAND)
    with fast_client(organization, **kwargs.pop("client_overrides", {})) as client:
        return sync_run(sync_log=sync_log, client=client, **kwargs)


def counts(sync_log):
    return (sync_log.records_inserted, sync_log.records_updated, sync_log.records_unchanged, sync_log.records_errored)


def test_first_sync_mirrors_every_record_with_exact_counts(rio, pems_server):
    pems_server.simulator.set_row_cap(60)  # pages shorter than asked for: the cursor decides the end
    sync_log = run_sync(rio, client_overrides={"page_size": 100})
    sync_log.refresh_from_db()
    assert sync_log.status == SyncStatus.COMPLETED
    assert (sync_log.records_total, sync_log.records_processed) == (250, 250)
    assert counts(sync_log) == (250, 0, 0, 0)
    assert sync_log.started_at <= sync_log.heartbeat_at <= sync_log.completed_at
    assert sync_log.duration_ms is not None and sync_log.error_message == ""
    source = pems_server.simulator.get_row("RIO", "PFA-0000100")
    stored = PfaMirror.objects.get(organization=rio, pfa_id="PFA-0000100")
    assert stored.data == source and stored.category == source["pfs_f_category"]
    assert PfaMirror.objects.filter(organization=rio).count() == 250
    configuration = ApiConfiguration.objects.get(organization=rio)
    assert configuration.last_sync_at == sync_log.completed_at == configuration.first_sync_at
    assert (configuration.last_sync_record_count, configuration.total_sync_record_count) == (250, 250)


def test_resync_with_nothing_changed_writes_nothing(rio):
    run_sync(rio)
    before = dict(PfaMirror.objects.values_list("pfa_id", "last_synced_at"))
    sync_log = run_sync(rio)
    assert counts(sync_log) == (0, 0, 250, 0)
    assert dict(PfaMirror.objects.values_list("pfa_id", "last_synced_at")) == before
    assert set(PfaMirror.objects.values_list("version", flat=True)) == {1}
    assert ApiConfiguration.objects.get(organization=rio).total_sync_record_count == 500


def test_resync_counts_inserted_and_changed_rows(rio, pems_server):
    run_sync(rio)
    simulator = pems_server.simulator
    for pfa_id in ("PFA-0000003", "PFA-0000150"):
        simulator.update_row("RIO", pfa_id, {"pfs_f_model": "Changed model"})
    for n in range(3):
        simulator.insert_row("RIO", {"pfs_id": f"PFA-9{n:06d}", "pfs_f_category": "GEN"})
    sync_log = run_sync(rio)
    assert (sync_log.records_processed, *counts(sync_log)) == (253, 3, 2, 248, 0)
    changed = PfaMirror.objects.get(organization=rio, pfa_id="PFA-0000150")
    assert (changed.model, changed.version) == ("Changed model", 2)
    assert changed.pems_record_id == int(simulator.get_row("RIO", "PFA-0000150")["pfs_recordid"])


def test_bad_rows_are_kept_aside_while_the_rest_land(rio, pems_server):
    broken = pems_server.simulator.corrupt_rows("RIO", 4, kinds=("bad_date", "bad_decimal", "bad_flag", "missing_id"))
    sync_log = run_sync(rio)
    assert sync_log.status == SyncStatus.COMPLETED
    assert counts(sync_log) == (246, 0, 0, 4)
    assert PfaMirror.objects.filter(organization=rio).count() == 246
    kept = {k.pfa_id: k for k in PfaSyncRecordError.objects.filter(sync_log=sync_log)}
    assert len(kept) == 4 and "" in kept  # the row without a pfs_id is kept under no key
    assert set(kept) - {""} <= set(broken)
    assert not PfaMirror.objects.filter(pfa_id__in=broken).exists()
    reasons = sorted(k.reason.split(":")[0] for k in kept.values())
    assert reasons[0] == "pfs_f_actualized" and "pfs_f_startdate" in reasons and "pfs_id" in reasons
    assert all(k.raw_row.get("pfs_a_org") == "RIO" for k in kept.values())
    assert sync_log.error_details == {"records_kept_aside": 4, "records_not_kept": 0}


@pytest.mark.parametrize("first_load", [True, False], ids=["first_load", "resync"])
def test_a_row_holding_a_nul_character_is_kept_aside_and_the_page_lands(rio, pems_server, first_load):
    simulator = pems_server.simulator
    if not first_load:
        run_sync(rio)
    simulator.update_row("RIO", "PFA-0000007", {"pfs_f_model": "LTM\x001050"})
    sync_log = run_sync(rio)
    assert sync_log.status == SyncStatus.COMPLETED
    assert sync_log.records_errored == 1
    assert PfaMirror.objects.filter(organization=rio).count() == (249 if first_load else 250)
    [kept] = PfaSyncRecordError.objects.filter(sync_log=sync_log)
    assert kept.pfa_id == "PFA-0000007" and kept.reason.startswith("pfs_f_model: 'LTM\\x001050' holds a NUL")
    assert kept.raw_row["pfs_f_model"] == "LTM\u24001050"


def test_pems_outage_mid_run_fails_the_run_and_keeps_committed_pages(rio, pems_server):
    simulator = pems_server.simulator
    simulator.set_row_cap(50)

    def outage_after_two_pages(sync_log):
        # Page 2 is read ahead while page 1 is stored: once PEMS has served it (the count, then
        # two pages), PEMS goes down.
        if sync_log.records_processed == 50:
            deadline = time.monotonic() + 10
            while simulator.request_count("grids") < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            simulator.inject_fault("status", status=503, count=50, target="grid")

    with pytest.raises(PemsUnavailable):
        run_sync(rio, on_progress=outage_after_two_pages, client_overrides={"max_attempts": 3})
    sync_log = PfaSyncLog.objects.get(organization=rio)
    assert sync_log.status == SyncStatus.FAILED
    assert "503" in sync_log.error_message
    assert sync_log.error_details["error_type"] == "PemsUnavailable"
    assert (sync_log.records_processed, sync_log.records_inserted) == (100, 100)
    assert PfaMirror.objects.filter(organization=rio).count() == 100
    simulator.clear_faults()
    assert run_sync(rio).records_inserted == 150  # the organization is free again


def test_a_read_runs_at_most_one_page_ahead_of_the_store(rio, pems_server):
    simulator = pems_server.simulator
    simulator.set_row_cap(100)  # 250 rows: three pages
    ahead = []

    def note_pages_ahead(sync_log):
        # A page is stored: the pages asked for so far (all grid calls but the count) beyond the
        # pages stored. The read holds two pages at most: the one stored and the next one.
        pages_requested = simulator.request_count("grids") - 1
        ahead.append(pages_requested - (len(ahead) + 1))

    sync_log = run_sync(rio, on_progress=note_pages_ahead)
    assert sync_log.records_inserted == 250
    assert ahead and all(0 <= pages <= 1 for pages in ahead)


def test_stop_request_cancels_at_a_page_boundary(rio, pems_server):
    pems_server.simulator.set_row_cap(100)
    stop = threading.Event()
    sync_log = run_sync(rio, stop=stop, on_progress=lambda log: stop.set())
    sync_log.refresh_from_db()
    assert sync_log.status == SyncStatus.CANCELLED and sync_log.completed_at is not None
    assert sync_log.records_processed == 100
    assert PfaMirror.objects.count() == 100


def test_second_claim_is_refused_naming_the_active_run(rio):
    active = sync_claim(organization=rio, trigger=PfaSyncLog.Trigger.API)
    with pytest.raises(SyncAlreadyRunning) as refused:
        sync_claim(organization=rio, trigger=PfaSyncLog.Trigger.COMMAND)
    assert refused.value.active_log == active
    assert str(active.id) in str(refused.value) and "RIO" in str(refused.value)


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_let_exactly_one_through(rio):
    barrier = threading.Barrier(8)
    results = []

    def claim():
        barrier.wait()
        try:
            results.append(sync_claim(organization=rio, trigger=PfaSyncLog.Trigger.API))
        except SyncAlreadyRunning as error:
            results.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [r for r in results if isinstance(r, PfaSyncLog)]
    assert len(claimed) == 1 and len(results) == 8
    assert PfaSyncLog.objects.filter(organization=rio).count() == 1
    assert all(r.active_log.id == claimed[0].id for r in results if isinstance(r, SyncAlreadyRunning))


def run_incremental(organization) -> PfaSyncLog:
    sync_log = sync_claim(organization=organization, trigger="command", sync_type=PfaSyncLog.SyncType.INCREMENTAL)
    with fast_client(organization) as client:
        return sync_run(sync_log=sync_log, client=client)


def test_incremental_sync_reads_only_rows_saved_since_the_watermark(rio, pems_server):
    simulator = pems_server.simulator
    first = run_incremental(rio)
    assert first.sync_type == "full"  # no watermark yet: everything is read
    newest = max(PfaMirror.objects.filter(organization=rio).values_list("pems_last_modified", flat=True))
    rio.refresh_from_db()
    assert rio.read_watermark == newest  # the newest save seen (before PEMS's clock)
    for pfa_id in ("PFA-0000007", "PFA-0000200"):
        simulator.update_row("RIO", pfa_id, {"pfs_f_model": "Re-saved"})
    simulator.insert_row("RIO", {"pfs_id": "PFA-9000001", "pfs_f_category": "GEN"})
    second = run_incremental(rio)
    assert second.sync_type == "incremental"
    # The re-saved rows, the new one, and at most the rows saved within the lookback before it.
    assert (second.records_inserted, second.records_updated) == (1, 2)
    assert second.records_processed == second.records_total < 250
    sent = [r["json"] for r in simulator.requests if r["json"] and "REQUEST_TYPE" in r["json"]][-1]
    assert any(f["ALIAS_NAME"] == "pfs_lastmodified" for f in sent["MULTIADDON_FILTERS"]["MADDON_FILTER"])
    rio.refresh_from_db()
    assert rio.read_watermark > newest
    assert PfaMirror.objects.get(organization=rio, pfa_id="PFA-0000200").model == "Re-saved"


def test_watermark_never_passes_the_servers_clock_at_the_start(rio, pems_server):
    """A row stamped later than PEMS's clock when the read began (saved during the read on a page
    already passed looks the same) leaves the watermark at that clock, so the next incremental read
    still asks for what was saved meanwhile."""
    from datetime import datetime, timedelta

    from django.utils import timezone

    from mirror.simulator.data import format_datetime

    simulator = pems_server.simulator
    ahead = datetime.now(simulator.time_zone) + timedelta(days=1)
    simulator.update_row("RIO", "PFA-0000007", {"pfs_lastmodified": format_datetime(ahead)})
    before = timezone.now()
    assert run_sync(rio).status == SyncStatus.COMPLETED
    rio.refresh_from_db()
    assert PfaMirror.objects.get(organization=rio, pfa_id="PFA-0000007").pems_last_modified > timezone.now()
    assert before - timedelta(minutes=1) <= rio.read_watermark <= timezone.now()
