"""A `completed` read is a complete read: paging that cannot skip, the count at the end, deletions,
the mass-deletion guard, the organization's own watermark, the fall-back hour and poison rows.

Every test reads the simulator over HTTP and changes its data through its control API while the
read runs (between pages, from the run's progress callback).
"""

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from django.core.management import call_command

from mirror.models import ApiConfiguration, PfaMirror
from mirror.pems import PemsClient, modified_since_filter, organization_filter
from mirror.records import content_hash
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory
from synclog.engine import sync_run
from synclog.models import PfaSyncLog, PfaSyncRecordError, SyncStatus
from synclog.runs import sync_claim

pytestmark = pytest.mark.django_db


def run(organization, *, sync_type="full", page_size=None, allow_mass_delete=False, **kwargs) -> PfaSyncLog:
    sync_log = sync_claim(
        organization=organization, trigger="command", sync_type=sync_type, allow_mass_delete=allow_mass_delete
    )
    configuration = sync_log.api_configuration
    settings = replace(configuration.pems_settings(organization), backoff_base=0.001, backoff_max=0.001)
    if page_size:
        settings = replace(settings, page_size=page_size)
    with PemsClient(settings, sleep=lambda seconds: None) as client:
        try:
            sync_run(sync_log=sync_log, client=client, **kwargs)
        except Exception:
            pass  # the run records why it failed; the tests look at it
    sync_log.refresh_from_db()
    return sync_log


def mirror_hashes(organization) -> dict[str, str]:
    return dict(PfaMirror.objects.live().filter(organization=organization).values_list("pfa_id", "content_hash"))


def pems_hashes(simulator, code: str) -> dict[str, str]:
    return {row["pfs_id"]: content_hash(row) for row in simulator.rows(code)}


def deleted_keys(organization) -> set[str]:
    return set(
        PfaMirror.objects.filter(organization=organization, deleted_at__isnull=False).values_list("pfa_id", flat=True)
    )


def test_a_full_read_while_pems_changes_misses_nothing_and_marks_what_pems_deleted(rio, pems_server):
    simulator = pems_server.simulator
    assert run(rio).status == SyncStatus.COMPLETED
    simulator.set_row_cap(50)

    def change_pems(sync_log):
        if sync_log.records_processed != 50:
            return
        # Behind the read (page 1 holds keys 1 to 50; page 2 may be read ahead already).
        simulator.delete_row("RIO", "PFA-0000005")
        simulator.delete_row("RIO", "PFA-0000010")
        simulator.update_row("RIO", "PFA-0000020", {"pfs_f_model": "Saved behind"})
        simulator.insert_row("RIO", {"pfs_id": "PFA-0000030X", "pfs_f_category": "GEN"})
        # Ahead of it.
        simulator.delete_row("RIO", "PFA-0000160")
        simulator.update_row("RIO", "PFA-0000170", {"pfs_f_model": "Saved ahead"})
        simulator.insert_row("RIO", {"pfs_id": "PFA-9000001", "pfs_f_category": "GEN"})
        simulator.move_row("RIO", "PFA-0000200", "HOU")
        simulator.inject_fault("empty", target="grid")

    sync_log = run(rio, page_size=50, on_progress=change_pems)

    assert sync_log.status == SyncStatus.COMPLETED, sync_log.error_message
    # Nothing ahead of the read was skipped, though two rows behind it went (an offset would skip two).
    assert sync_log.records_processed == 50 + 200 - 2 + 1
    assert sync_log.records_deleted == 2 and deleted_keys(rio) == {"PFA-0000160", "PFA-0000200"}
    stored = mirror_hashes(rio)
    assert stored["PFA-0000170"] == pems_hashes(simulator, "RIO")["PFA-0000170"] and "PFA-9000001" in stored
    # What changed behind the read is the next reads' job: the incremental read takes the saves,
    assert run(rio, sync_type="incremental").status == SyncStatus.COMPLETED
    assert set(pems_hashes(simulator, "RIO").items()) <= set(mirror_hashes(rio).items())
    # and the next full read the deletions.
    assert run(rio).records_deleted == 2
    assert mirror_hashes(rio) == pems_hashes(simulator, "RIO")
    assert deleted_keys(rio) == {"PFA-0000005", "PFA-0000010", "PFA-0000160", "PFA-0000200"}


def test_a_row_inserted_behind_the_read_fails_the_count_and_nothing_is_marked(rio, pems_server):
    simulator = pems_server.simulator
    run(rio)
    simulator.delete_row("RIO", "PFA-0000240")
    simulator.set_row_cap(50)
    watermark = type(rio).objects.get(pk=rio.pk).read_watermark

    def insert_behind(sync_log):
        if sync_log.records_processed == 50:
            simulator.insert_row("RIO", {"pfs_id": "PFA-0000001A"})
            simulator.insert_row("RIO", {"pfs_id": "PFA-0000001B"})

    sync_log = run(rio, page_size=50, on_progress=insert_behind)
    assert sync_log.status == SyncStatus.FAILED
    assert "PEMS holds 251 records of RIO now, but this read saw 249" in sync_log.error_message
    assert sync_log.records_processed == 249  # the pages read are kept
    assert deleted_keys(rio) == set()  # PFA-0000240 is gone, but an incomplete read marks nothing
    rio.refresh_from_db()
    assert rio.read_watermark == watermark
    assert run(rio).status == SyncStatus.COMPLETED
    assert mirror_hashes(rio) == pems_hashes(simulator, "RIO") and deleted_keys(rio) == {"PFA-0000240"}


def test_an_empty_page_before_the_end_is_asked_again_and_the_read_completes(rio, pems_server):
    simulator = pems_server.simulator
    simulator.set_row_cap(100)
    simulator.inject_fault("empty", target="grid", count=2)
    sync_log = run(rio, page_size=100)
    assert sync_log.status == SyncStatus.COMPLETED and sync_log.records_processed == 250
    assert mirror_hashes(rio) == pems_hashes(simulator, "RIO")


def test_an_incremental_read_marks_nothing_deleted(rio, pems_server):
    run(rio)
    pems_server.simulator.delete_row("RIO", "PFA-0000007")
    sync_log = run(rio, sync_type="incremental")
    assert (sync_log.sync_type, sync_log.status, sync_log.records_deleted) == ("incremental", "completed", 0)
    assert deleted_keys(rio) == set()


def test_mass_deletion_is_held_back_until_it_is_allowed(rio, pems_server):
    simulator = pems_server.simulator
    run(rio)
    gone = [f"PFA-{n:07d}" for n in range(1, 31)]  # 30 of 250: 12%, past the 10% guard
    for key in gone:
        simulator.delete_row("RIO", key)

    held = run(rio)
    assert (held.status, held.records_deleted) == (SyncStatus.COMPLETED, 0)
    assert held.error_details["deletions_held_back"] == 30
    assert held.error_message.startswith("30 of 250 records are gone from PEMS, more than SYNC_DELETE_GUARD_PERCENT")
    assert "--allow-mass-delete" in held.error_message
    assert deleted_keys(rio) == set()

    allowed = run(rio, allow_mass_delete=True)
    assert (allowed.status, allowed.records_deleted, allowed.error_message) == (SyncStatus.COMPLETED, 30, "")
    assert deleted_keys(rio) == set(gone)


def test_a_grid_that_looks_empty_deletes_nothing(rio, pems_server):
    simulator = pems_server.simulator
    run(rio)
    for row in simulator.rows("RIO"):
        simulator.delete_row("RIO", row["pfs_id"])
    sync_log = run(rio)
    assert (sync_log.status, sync_log.records_deleted, sync_log.error_details["deletions_held_back"]) == (
        "completed",
        0,
        250,
    )
    assert mirror_hashes(rio).keys() == {f"PFA-{n:07d}" for n in range(1, 251)}


def test_deletions_within_the_guard_are_marked_and_a_record_that_comes_back_is_revived(rio, pems_server):
    simulator = pems_server.simulator
    run(rio)
    simulator.set_row_cap(60)
    back = simulator.get_row("RIO", "PFA-0000061")
    for key in ("PFA-0000001", "PFA-0000061", "PFA-0000250"):  # first, on a page boundary, last
        simulator.delete_row("RIO", key)
    sync_log = run(rio, page_size=60)
    assert (sync_log.records_deleted, sync_log.error_message) == (3, "")
    assert deleted_keys(rio) == {"PFA-0000001", "PFA-0000061", "PFA-0000250"}
    assert not PfaMirror.objects.live().filter(pfa_id="PFA-0000061").exists()

    simulator.insert_row("RIO", {**back, "pfs_id": "PFA-0000061"})
    revived = run(rio, page_size=60)
    assert (revived.records_updated, revived.records_deleted) == (1, 0)
    record = PfaMirror.objects.get(organization=rio, pfa_id="PFA-0000061")
    assert record.deleted_at is None and record.version == 2
    assert mirror_hashes(rio) == pems_hashes(simulator, "RIO")


def test_purge_deletes_records_marked_deleted_past_the_retention(rio, pems_server):
    run(rio)
    pems_server.simulator.delete_row("RIO", "PFA-0000009")
    run(rio)
    call_command("purge_deleted", "--days", "0")
    assert not PfaMirror.objects.filter(organization=rio, pfa_id="PFA-0000009").exists()
    assert PfaMirror.objects.filter(organization=rio).count() == 249


def test_organizations_on_the_default_connection_each_read_their_own_grid_with_their_own_watermark(pems_server):
    simulator = pems_server.simulator
    rio, hou = OrganizationFactory(code="RIO"), OrganizationFactory(code="HOU")
    default = ApiConfigurationFactory(organization=None, base_url=pems_server.url)
    # A code filled in before it was refused on the default connection: never used.
    ApiConfiguration.objects.filter(pk=default.pk).update(pems_organization_code="RIO")

    first_rio = run(rio, sync_type="incremental")
    assert (first_rio.sync_type, first_rio.records_processed) == ("full", 250)
    first_hou = run(hou, sync_type="incremental")  # RIO's completed read moves no watermark of HOU's
    assert (first_hou.sync_type, first_hou.records_processed) == ("full", 80)
    assert mirror_hashes(hou) == pems_hashes(simulator, "HOU")
    rio.refresh_from_db()
    hou.refresh_from_db()
    assert rio.read_watermark_source.endswith("|RIO") and hou.read_watermark_source.endswith("|HOU")

    simulator.update_row("HOU", "PFA-0000003", {"pfs_f_model": "Re-saved"})
    assert run(hou, sync_type="incremental").records_updated == 1
    assert run(rio, sync_type="incremental").sync_type == "incremental"


def test_a_connection_that_reads_another_grid_starts_over_with_a_full_read(rio, pems_server):
    run(rio)
    assert run(rio, sync_type="incremental").sync_type == "incremental"
    ApiConfiguration.objects.filter(organization=rio).update(base_url=pems_server.url + "/")  # the same grid
    assert run(rio, sync_type="incremental").sync_type == "incremental"
    ApiConfiguration.objects.filter(organization=rio).update(pems_organization_code="HOU")
    moved = run(rio, sync_type="incremental")
    assert (moved.sync_type, moved.records_processed) == ("full", 80)


def test_an_incremental_read_over_the_fall_back_hour_reaches_back_to_its_start(rio, pems_server):
    """America/Chicago repeats 01:00-01:59 on 2026-11-01: 06:00-06:59 UTC (CDT), then 07:00-07:59 UTC (CST)."""
    zone = rio.api_configurations.get().pems_settings(rio).zone
    first_pass = datetime(2026, 11, 1, 6, 50, tzinfo=UTC)  # 01:50 CDT: the watermark, less the lookback
    second_pass = datetime(2026, 11, 1, 7, 40, tzinfo=UTC)  # 01:40 CST: the next read starts
    assert modified_since_filter(first_pass, time_zone=zone).value == "11/01/2026 01:50"
    assert modified_since_filter(first_pass, time_zone=zone, until=second_pass).value == "11/01/2026 01:00"
    # No clock change in the window: the bound is the window's start, as before.
    assert modified_since_filter(second_pass, time_zone=zone, until=datetime(2026, 11, 2, tzinfo=UTC)).value == (
        "11/01/2026 01:40"
    )
    assert modified_since_filter(first_pass, time_zone=zone, until=datetime(2026, 11, 1, 6, 59, tzinfo=UTC)).value == (
        "11/01/2026 01:50"
    )
    # A row saved at 01:30 CST (07:30 UTC, after the watermark) is found by the widened filter.
    simulator = pems_server.simulator
    simulator.update_row("RIO", "PFA-0000011", {"pfs_lastmodified": "11/01/2026 01:30"})
    settings = rio.api_configurations.get().pems_settings(rio)
    with PemsClient(settings) as client:
        widened = modified_since_filter(first_pass, time_zone=zone, until=second_pass)
        narrow = modified_since_filter(first_pass, time_zone=zone)
        found = [
            row["pfs_id"] for page in client.iter_pages([organization_filter("RIO"), widened]) for row in page.rows
        ]
        missed = [
            row["pfs_id"] for page in client.iter_pages([organization_filter("RIO"), narrow]) for row in page.rows
        ]
    assert "PFA-0000011" in found and "PFA-0000011" not in missed


def test_poison_rows_are_set_aside_and_the_read_completes(rio, pems_server):
    simulator = pems_server.simulator
    kinds = ("huge_decimal", "huge_number", "lone_surrogate", "bad_utf8")
    poisoned = simulator.corrupt_rows("RIO", 4, kinds=kinds)
    simulator.set_row_cap(100)
    sync_log = run(rio, page_size=100)
    assert sync_log.status == SyncStatus.COMPLETED, sync_log.error_message
    assert (sync_log.records_processed, sync_log.records_inserted, sync_log.records_errored) == (250, 246, 4)
    kept = PfaSyncRecordError.objects.filter(sync_log=sync_log)
    assert sorted(kept.values_list("pfa_id", flat=True)) == sorted(poisoned)
    reasons = " ".join(kept.values_list("reason", flat=True))
    assert "digits before the point" in reasons and "largest number the mirror stores" in reasons
    assert reasons.count("not valid Unicode") == 2
    assert not PfaMirror.objects.filter(pfa_id__in=poisoned).exists()


def test_an_answer_larger_than_its_page_allows_fails_the_run_with_a_pems_error(rio, pems_server):
    pems_server.simulator.inject_fault("oversize", bytes=30_000_000, target="grid")
    sync_log = run(rio, page_size=1000)
    assert sync_log.status == SyncStatus.FAILED
    assert "the answer is larger than" in sync_log.error_message
    assert sync_log.error_details["error_type"] == "PemsProtocolError"
