"""The fault suite (`pytest -m faults`): PEMS misbehaves in every way the contract lists while a
read runs. After each fault, once the next run has finished: the mirror equals PEMS, no run is
left queued or running, no two runs of the organization overlapped, and it syncs again.

The worker's own faults (SIGTERM, SIGKILL) are in test_worker.py, and a killed database connection
and a lease that runs out under a live run in test_fencing.py; they carry the same mark.
"""

from dataclasses import replace

import pytest

from mirror.models import PfaMirror
from mirror.pems import PemsClient
from mirror.records import content_hash
from synclog.engine import sync_run
from synclog.models import PfaSyncLog, SyncStatus
from synclog.runs import sync_claim

pytestmark = [pytest.mark.django_db, pytest.mark.faults]

PAGE = 50
MAX_ATTEMPTS = 3

# (fault, options): each is injected once page 1 has been stored, `count` times in a row.
FAULTS = {
    "429 with Retry-After": ("status", {"status": 429, "retry_after": 0}),
    "500, empty body": ("status", {"status": 500}),
    "503 with Retry-After": ("status", {"status": 503, "retry_after": 0}),
    "hang past the read timeout": ("hang", {"seconds": 1.5}),
    "truncated body": ("truncate", {}),
    "non-JSON body": ("non_json", {}),
    "connection reset": ("reset", {}),
    "empty page before the end": ("empty", {}),
}


def read(organization, **kwargs) -> PfaSyncLog:
    sync_log = sync_claim(organization=organization, trigger="command")
    settings = replace(
        organization.api_configurations.get().pems_settings(organization),
        page_size=PAGE,
        read_timeout=1.0,
        max_attempts=MAX_ATTEMPTS,
        backoff_base=0.001,
        backoff_max=0.001,
    )
    try:
        with PemsClient(settings, sleep=lambda seconds: None) as client:
            sync_run(sync_log=sync_log, client=client, **kwargs)
    except Exception:
        pass  # the run records its outcome
    sync_log.refresh_from_db()
    return sync_log


def assert_recovered(organization, simulator) -> None:
    mirror = dict(PfaMirror.objects.live().filter(organization=organization).values_list("pfa_id", "content_hash"))
    assert mirror == {row["pfs_id"]: content_hash(row) for row in simulator.rows(organization.code)}
    runs = list(PfaSyncLog.objects.filter(organization=organization).order_by("started_at"))
    assert all(run.status in SyncStatus.terminal() for run in runs)
    for before, after in zip(runs, runs[1:], strict=False):
        assert before.completed_at <= after.started_at  # never two runs at once
    assert runs[-1].status == SyncStatus.COMPLETED


@pytest.mark.parametrize("name", list(FAULTS))
@pytest.mark.parametrize("outcome", ["retried", "gave up"])
def test_a_pems_fault_during_a_read_is_retried_or_fails_the_run_and_the_next_run_recovers(
    rio, pems_server, name, outcome
):
    simulator = pems_server.simulator
    simulator.set_row_cap(PAGE)
    kind, options = FAULTS[name]
    count = MAX_ATTEMPTS - 1 if outcome == "retried" else MAX_ATTEMPTS

    def fault_after_the_first_page(sync_log):
        if sync_log.records_processed == PAGE:
            simulator.inject_fault(kind, target="grid", count=count, **options)

    first = read(rio, on_progress=fault_after_the_first_page)
    if outcome == "retried":
        assert first.status == SyncStatus.COMPLETED, first.error_message
    else:
        assert first.status == SyncStatus.FAILED
        assert PAGE <= first.records_processed < 250  # pages stored before the fault are kept
        assert "PEMS" in first.error_message and "gave up after 3 attempts" in first.error_message
        simulator.clear_faults()
        assert read(rio).status == SyncStatus.COMPLETED
    assert_recovered(rio, simulator)


def test_an_expired_session_during_a_read_logs_in_again(rio, pems_server):
    simulator = pems_server.simulator
    simulator.set_row_cap(PAGE)

    def expire_after_the_first_page(sync_log):
        if sync_log.records_processed == PAGE:
            assert simulator.expire_sessions() >= 1

    assert read(rio, on_progress=expire_after_the_first_page).status == SyncStatus.COMPLETED
    assert_recovered(rio, simulator)
