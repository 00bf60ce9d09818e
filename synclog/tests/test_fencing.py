"""Fenced runs: a run acts only while it holds its claim, its heartbeat outlasts slow PEMS calls,
and no organization stays blocked by a dead run."""

import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.db import DatabaseError, connection
from django.utils import timezone

from mirror.models import ApiConfiguration, Organization, PfaMirror
from mirror.pems import PemsClient
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory
from synclog.engine import sync_run
from synclog.models import ClaimLost, PfaSyncLog, RunEnded, SyncStatus, stale_runs_expire
from synclog.runs import SyncNotQueued, sync_cancel, sync_claim, sync_start

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def client_for(organization, **overrides) -> PemsClient:
    settings = replace(
        organization.api_configurations.get().pems_settings(organization), backoff_base=0.001, backoff_max=0.001
    )
    return PemsClient(replace(settings, **overrides), sleep=lambda seconds: None)


def run(sync_log, **kwargs) -> PfaSyncLog:
    with client_for(sync_log.organization, page_size=50) as client:
        return sync_run(sync_log=sync_log, client=client, **kwargs)


@pytest.mark.faults
def test_a_run_reaped_while_alive_stops_at_once_and_writes_nothing_more(rio, pems_server):
    pems_server.simulator.set_row_cap(50)
    sync_log = sync_claim(organization=rio, trigger="command")

    def reaped_after_the_first_page(log):
        if log.records_processed == 50:
            PfaSyncLog.objects.filter(pk=log.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
            assert stale_runs_expire() == [log]

    with pytest.raises(ClaimLost):
        run(sync_log, on_progress=reaped_after_the_first_page)
    sync_log.refresh_from_db()
    assert sync_log.status == SyncStatus.FAILED and sync_log.error_message.startswith("Worker lost")
    assert sync_log.records_processed == 50  # the second page's counts were not added,
    assert PfaMirror.objects.filter(organization=rio).count() == 50  # nor its rows kept
    rio.refresh_from_db()
    assert rio.read_watermark is None
    assert ApiConfiguration.objects.get(organization=rio).last_sync_at is None
    # The organization is free, and the next run reads it all.
    assert run(sync_log=sync_claim(organization=rio, trigger="command")).status == SyncStatus.COMPLETED


def test_state_changes_apply_only_from_their_own_state(rio):
    sync_log = sync_claim(organization=rio, trigger="command")
    twin = PfaSyncLog.objects.get(pk=sync_log.pk)
    sync_log.start()
    with pytest.raises(ClaimLost, match="could not start: it is running"):
        twin.start()  # a second worker handed the same task
    with pytest.raises(ClaimLost):
        twin.add_page(processed=1, inserted=1, updated=0, unchanged=0, errored=0)
    sync_log.finish(SyncStatus.COMPLETED)
    with pytest.raises(ClaimLost, match="it is completed"):
        sync_log.finish(SyncStatus.FAILED, error_message="late")
    assert not sync_log.beat()
    assert PfaSyncLog.objects.get(pk=sync_log.pk).status == SyncStatus.COMPLETED


def test_cancel_ends_a_queued_run_at_once_and_a_running_one_at_its_next_page(rio, pems_server):
    queued = sync_claim(organization=rio, trigger="api")
    assert sync_cancel(sync_log=queued).status == SyncStatus.CANCELLED
    with pytest.raises(ClaimLost):
        queued.start()
    with pytest.raises(RunEnded):
        sync_cancel(sync_log=queued)

    pems_server.simulator.set_row_cap(50)
    running = sync_claim(organization=rio, trigger="api")

    def cancel_after_the_first_page(log):
        if log.records_processed == 50:
            sync_cancel(sync_log=PfaSyncLog.objects.get(pk=log.pk))

    finished = run(running, on_progress=cancel_after_the_first_page)
    assert (finished.status, finished.records_processed) == (SyncStatus.CANCELLED, 50)
    assert PfaSyncLog.objects.get(pk=running.pk).error_message.startswith("Cancelled on request")


def test_lease_fails_silent_runs_and_frees_the_organization(settings):
    settings.SYNC_LEASE_SECONDS = 60
    organization = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO")).organization
    lost = sync_claim(organization=organization, trigger="schedule")
    lost.start()
    PfaSyncLog.objects.filter(pk=lost.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=61))
    fresh = ApiConfigurationFactory(organization=OrganizationFactory(code="HOU")).organization
    alive = sync_claim(organization=fresh, trigger="schedule")
    alive.start()
    assert stale_runs_expire() == [lost]
    lost.refresh_from_db()
    assert lost.status == SyncStatus.FAILED and lost.error_message.startswith("Worker lost: no heartbeat since")
    assert lost.error_details["error_type"] == "WorkerLost"
    assert PfaSyncLog.objects.get(pk=alive.pk).status == SyncStatus.RUNNING
    sync_claim(organization=organization, trigger="schedule")  # free again


def test_a_claim_reaps_a_dead_run_of_its_organization_first(rio, settings):
    dead = sync_claim(organization=rio, trigger="schedule")
    dead.start()
    PfaSyncLog.objects.filter(pk=dead.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.SYNC_LEASE_SECONDS + 1)
    )
    fresh = sync_claim(organization=rio, trigger="api")  # no schedule needed to unblock it
    assert fresh.status == SyncStatus.QUEUED
    assert PfaSyncLog.objects.get(pk=dead.pk).status == SyncStatus.FAILED


def test_a_task_the_broker_refuses_fails_its_run_at_once(
    rio, broker_down, monkeypatch, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        batch = sync_start(organizations=[rio], trigger="api")
    assert batch.queued == [] and isinstance(batch.refused[0], SyncNotQueued)
    run_ = PfaSyncLog.objects.get(organization=rio)
    assert run_.status == SyncStatus.FAILED and "the task broker failed (ConnectionError" in run_.error_message
    monkeypatch.undo()
    sync_claim(organization=rio, trigger="api")  # the organization is free


@pytest.mark.faults
@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_beats_during_a_slow_pems_call(pems_server, settings):
    rio = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"), base_url=pems_server.url).organization
    settings.SYNC_HEARTBEAT_SECONDS = 1
    settings.SYNC_LEASE_SECONDS = 3
    pems_server.simulator.set_row_cap(125)
    pems_server.simulator.set_latency(4)  # every call outlasts the lease
    sync_log = sync_claim(organization=rio, trigger="command")
    reaped: list[PfaSyncLog] = []
    done = threading.Event()

    def reaper():
        try:
            while not done.is_set():
                reaped.extend(stale_runs_expire())
                time.sleep(0.25)
        finally:
            connection.close()

    thread = threading.Thread(target=reaper)
    thread.start()
    try:
        finished = run(sync_log, detect_deletions=True)
    finally:
        done.set()
        thread.join()
    assert reaped == []
    assert (finished.status, finished.records_processed) == (SyncStatus.COMPLETED, 250)


def test_a_lease_shorter_than_three_heartbeats_is_refused_at_start_up():
    env = {**os.environ, "SYNC_LEASE_SECONDS": "40", "SYNC_HEARTBEAT_SECONDS": "15"}
    env.setdefault("DJANGO_SECRET_KEY", "test")
    env.setdefault("PFASYNC_ENCRYPTION_KEY", "8m9BF-yBlDUoFTQEgHhWlyx8aQSeg2GqkJHpWZ-B0Ig=")
    refused = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert refused.returncode != 0
    assert "SYNC_LEASE_SECONDS (40) must be at least three heartbeats" in refused.stderr
    assert "SYNC_HEARTBEAT_SECONDS (15) = 45" in refused.stderr
    env["SYNC_LEASE_SECONDS"] = "60"  # a 60-second lease with the default heartbeat is valid
    assert subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, check=False).returncode == 0


@pytest.mark.faults
@pytest.mark.django_db(transaction=True)
def test_a_run_whose_database_connection_died_records_its_real_cause(pems_server):
    rio = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"), base_url=pems_server.url).organization
    pems_server.simulator.set_row_cap(50)
    sync_log = sync_claim(organization=rio, trigger="command")
    settings_dict = connection.settings_dict

    def kill_my_connection(log):
        if log.records_processed == 50:
            pid = connection.connection.info.backend_pid
            with psycopg.connect(
                host=settings_dict["HOST"] or "127.0.0.1",
                port=settings_dict["PORT"] or 5432,
                user=settings_dict["USER"],
                dbname=settings_dict["NAME"],
                autocommit=True,
            ) as other:
                other.execute("SELECT pg_terminate_backend(%s)", [pid])

    with pytest.raises(DatabaseError):
        run(sync_log, on_progress=kill_my_connection)
    sync_log.refresh_from_db()
    assert sync_log.status == SyncStatus.FAILED
    assert sync_log.error_message.startswith("Internal error: ") and "Worker lost" not in sync_log.error_message
    assert "terminat" in sync_log.error_message.lower() or "closed" in sync_log.error_message.lower()
    assert Organization.objects.get(pk=rio.pk) and sync_claim(organization=rio, trigger="command")
