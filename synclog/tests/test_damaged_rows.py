"""No row content fails a read: damaged rows are set aside, counted as seen, and the read completes.

Every test reads the simulator over HTTP through the engine: stamps Python cannot convert to UTC,
rows PEMS serves with `pfs_id` blank while it sorts and filters them under their key (in the middle
of a page, at a page boundary, a run longer than a page, at the end of the grid), and keys holding
a NUL character on the re-reads that look their key ranges up in the mirror.
"""

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from mirror.models import PfaMirror
from mirror.pems import PemsClient
from synclog.engine import sync_run
from synclog.models import PfaSyncLog, PfaSyncRecordError, SyncStatus
from synclog.runs import sync_claim

pytestmark = pytest.mark.django_db


def run(organization, *, sync_type="full", page_size=None) -> PfaSyncLog:
    sync_log = sync_claim(organization=organization, trigger="command", sync_type=sync_type)
    settings = replace(sync_log.api_configuration.pems_settings(organization), backoff_base=0.001, backoff_max=0.001)
    if page_size:
        settings = replace(settings, page_size=page_size)
    with PemsClient(settings, sleep=lambda seconds: None) as client:
        try:
            sync_run(sync_log=sync_log, client=client)
        except Exception:
            pass  # the run records why it failed; the tests look at it
    sync_log.refresh_from_db()
    return sync_log


def kept_aside(sync_log) -> list[tuple[str, str]]:
    return sorted(PfaSyncRecordError.objects.filter(sync_log=sync_log).values_list("pfa_id", "reason"))


def live_keys(organization) -> set[str]:
    return set(PfaMirror.objects.live().filter(organization=organization).values_list("pfa_id", flat=True))


def key(number: int) -> str:
    return f"PFA-{number:07d}"


def test_a_stamp_that_cannot_be_converted_to_utc_is_set_aside_and_every_later_read_completes(rio, pems_server):
    simulator = pems_server.simulator  # stamps in America/Chicago, six hours behind UTC in December
    simulator.update_row("RIO", key(7), {"pfs_lastmodified": "12/31/9999 23:59"})  # past 9999 in UTC
    simulator.update_row("RIO", key(8), {"pfs_lastmodified": "12/31/9999 17:59"})  # 23:59 UTC: storable
    for sync_type in ("full", "full", "incremental"):
        sync_log = run(rio, sync_type=sync_type)
        assert sync_log.status == SyncStatus.COMPLETED, sync_log.error_message
        assert sync_log.records_errored == 1
        assert kept_aside(sync_log) == [
            (key(7), "pfs_lastmodified: '12/31/9999 23:59' is a date and time too close to year 1 or 9999 to be "
             "converted to UTC")
        ]  # fmt: skip
    stored = PfaMirror.objects.get(organization=rio, pfa_id=key(8))
    assert stored.pems_last_modified == datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    assert live_keys(rio) == {key(n) for n in range(1, 251)} - {key(7)}
    # The watermark never passes the server's clock, whatever a stamp says.
    assert rio.watermark_for(sync_log.api_configuration.pems_settings(rio).grid_source) < datetime(
        3000, 1, 1, tzinfo=UTC
    )


# In the middle of page 1, the last row of page 1, a run longer than a page right after page 2, the last row.
HIDDEN = [25, 50, *range(101, 161), 250]


@pytest.mark.parametrize("shape", ["A", "B"])
def test_rows_without_a_visible_key_are_read_once_each_and_the_read_completes_with_exact_counts(
    rio, pems_server, shape
):
    simulator = pems_server.simulator
    simulator.set_shape(shape)
    simulator.set_row_cap(50)
    simulator.corrupt_rows("RIO", len(HIDDEN), kinds=["hidden_id"], pfa_ids=[key(n) for n in HIDDEN])
    sync_log = run(rio, page_size=50)
    assert sync_log.status == SyncStatus.COMPLETED, sync_log.error_message
    assert (sync_log.records_total, sync_log.records_processed) == (250, 250)
    assert (sync_log.records_inserted, sync_log.records_errored) == (250 - len(HIDDEN), len(HIDDEN))
    assert kept_aside(sync_log) == [("", "pfs_id: '' is missing or empty")] * len(HIDDEN)
    kept_rows = PfaSyncRecordError.objects.filter(sync_log=sync_log).values_list("raw_row", flat=True)
    assert sorted(row["pfs_recordid"] + row["pfs_lastmodified"] for row in kept_rows) == sorted(
        simulator.get_row("RIO", key(n))["pfs_recordid"] + simulator.get_row("RIO", key(n))["pfs_lastmodified"]
        for n in HIDDEN
    )
    assert live_keys(rio) == {key(n) for n in range(1, 251)} - {key(n) for n in HIDDEN}


def test_a_stored_record_served_without_its_key_is_not_marked_deleted(rio, pems_server):
    simulator = pems_server.simulator
    assert run(rio).records_inserted == 250
    simulator.set_row_cap(50)
    simulator.corrupt_rows("RIO", len(HIDDEN), kinds=["hidden_id"], pfa_ids=[key(n) for n in HIDDEN])
    simulator.delete_row("RIO", key(200))  # where no row hides its key: really gone
    sync_log = run(rio, page_size=50)
    assert sync_log.status == SyncStatus.COMPLETED, sync_log.error_message
    assert (sync_log.records_processed, sync_log.records_errored) == (249, len(HIDDEN))
    assert (sync_log.records_unchanged, sync_log.records_deleted) == (249 - len(HIDDEN), 1)
    # PEMS still holds the records it serves without their key: they stay as they were read.
    assert live_keys(rio) == {key(n) for n in range(1, 251)} - {key(200)}


@pytest.mark.parametrize("sync_type", ["full", "incremental"])
def test_a_key_holding_a_nul_character_is_set_aside_on_a_re_read(rio, pems_server, sync_type):
    simulator = pems_server.simulator
    assert run(rio).status == SyncStatus.COMPLETED
    nul_key = key(100) + "\x00a"  # sorts right after PFA-0000100: the last row of the first page
    simulator.insert_row("RIO", {"pfs_id": nul_key, "pfs_f_source": "Rental"})
    sync_log = run(rio, sync_type=sync_type, page_size=101)
    assert sync_log.status == SyncStatus.COMPLETED, sync_log.error_message
    assert kept_aside(sync_log) == [
        (key(100) + "\u2400a", "pfs_id: 'PFA-0000100\\x00a' holds a NUL character, which the database cannot store")
    ]
    assert sync_log.records_deleted == 0 and len(live_keys(rio)) == 250


def test_an_incremental_read_from_a_watermark_at_the_start_of_year_one_reads_every_row(rio):
    assert run(rio).status == SyncStatus.COMPLETED
    source = rio.read_watermark_source
    rio.move_watermark(datetime(1, 1, 1, 0, 5, tzinfo=UTC), source=source)  # minus the lookback: before year 1
    sync_log = run(rio, sync_type="incremental")
    assert sync_log.status == SyncStatus.COMPLETED, sync_log.error_message
    assert sync_log.sync_type == "incremental" and sync_log.records_processed == 250
