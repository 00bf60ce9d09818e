"""The background worker (`synclog.worker`): its schedules, which organizations it syncs, its tasks
and its status, in this process; then `manage.py qcluster` processes for real against the PEMS
simulator (slow)."""

import logging
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_q.models import Schedule, Task
from django_q.tasks import async_task, fetch

from mirror.models import PfaMirror
from mirror.records import content_hash
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory, PfaMirrorFactory
from synclog import tasks
from synclog.dispatch import sync_organizations
from synclog.models import PfaSyncLog, SyncStatus
from synclog.runs import sync_claim, sync_start
from synclog.worker import (
    FULL_SCHEDULE,
    TICK_SCHEDULE,
    SyncSchedule,
    scheduled_organizations,
    schedules_upsert,
    sync_full,
    sync_tick,
    validate_sync_schedules,
    worker_status,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def in_worker_processes(test):
    """A test that starts `manage.py qcluster` processes: slow, on a database they share."""
    for mark in (pytest.mark.slow, pytest.mark.django_db(transaction=True)):
        test = mark(test)
    return test


def set_up_twice(settings, schedule: SyncSchedule, cron: str) -> Schedule:
    """Run `setup_schedules` twice with the worker on and `schedule`'s cron setting at `cron`; the
    one row it leaves."""
    settings.ENABLE_SYNC_WORKER = True
    setattr(settings, schedule.setting, cron)
    call_command("setup_schedules")
    call_command("setup_schedules")
    return Schedule.objects.get(name=schedule.name)


def test_schedule_follows_the_environment_and_is_never_duplicated(settings, capsys):
    schedule = set_up_twice(settings, TICK_SCHEDULE, "*/15 * * * *")
    assert (schedule.func, schedule.schedule_type, schedule.cron) == ("synclog.tasks.sync_tick", "C", "*/15 * * * *")
    assert schedule.next_run > timezone.now() and schedule.next_run.minute % 15 == 0
    settings.SYNC_INTERVAL = "0 * * * *"
    schedules_upsert()
    assert list(Schedule.objects.filter(name=TICK_SCHEDULE.name).values_list("cron", flat=True)) == ["0 * * * *"]
    settings.ENABLE_SYNC_WORKER = False
    call_command("setup_schedules")
    assert not Schedule.objects.exists()
    assert "disabled" in capsys.readouterr().out


def test_full_read_schedule_follows_sync_full_interval_and_is_never_duplicated(settings, capsys):
    full = set_up_twice(settings, FULL_SCHEDULE, "0 3 * * *")
    assert (full.func, full.schedule_type, full.cron) == ("synclog.tasks.sync_full", "C", "0 3 * * *")
    assert full.next_run > timezone.now() and (full.next_run.hour, full.next_run.minute) == (3, 0)
    assert "'pfasync-sync-full': cron '0 3 * * *'" in capsys.readouterr().out
    settings.SYNC_FULL_INTERVAL = "30 1 * * 0"
    schedules_upsert()
    assert list(Schedule.objects.filter(name=FULL_SCHEDULE.name).values_list("cron", flat=True)) == ["30 1 * * 0"]
    settings.SYNC_FULL_INTERVAL = ""
    call_command("setup_schedules")
    assert list(Schedule.objects.values_list("name", flat=True)) == [TICK_SCHEDULE.name]  # the tick stays
    assert "'pfasync-sync-full' is disabled (SYNC_FULL_INTERVAL is empty)" in capsys.readouterr().out
    settings.SYNC_FULL_INTERVAL = "0 3 * * *"
    schedules_upsert()
    settings.ENABLE_SYNC_WORKER = False
    schedules_upsert()
    assert not Schedule.objects.exists()


@pytest.mark.parametrize("expression", ["every night", "0 3 * *", "0 25 * * *"])
def test_invalid_full_interval_is_a_clear_error_and_changes_no_schedule(settings, expression):
    settings.ENABLE_SYNC_WORKER = True
    settings.SYNC_INTERVAL = "*/15 * * * *"
    schedules_upsert()
    before = list(Schedule.objects.order_by("name").values_list("name", "cron", "next_run"))
    settings.SYNC_INTERVAL = "*/5 * * * *"
    settings.SYNC_FULL_INTERVAL = expression
    with pytest.raises(ImproperlyConfigured, match="SYNC_FULL_INTERVAL .* is not a valid cron expression"):
        call_command("setup_schedules")
    with pytest.raises(ImproperlyConfigured, match="SYNC_FULL_INTERVAL"):
        validate_sync_schedules()
    assert list(Schedule.objects.order_by("name").values_list("name", "cron", "next_run")) == before


@pytest.mark.parametrize("expression", ["every 15 minutes", "*/15 * * *", "61 * * * *", ""])
def test_invalid_interval_is_a_clear_error(settings, expression):
    settings.SYNC_INTERVAL = expression
    with pytest.raises(ImproperlyConfigured, match="SYNC_INTERVAL .* is not a valid cron expression"):
        validate_sync_schedules()


def test_sync_orgs_selects_and_reports_unknown_codes(settings, caplog):
    rio, hou = OrganizationFactory(code="RIO"), OrganizationFactory(code="HOU")
    OrganizationFactory(code="OFF", sync_enabled=False)
    assert {o.code for o in scheduled_organizations()} == {"RIO", "HOU"}
    settings.SYNC_ORGS = ["HOU", "NOPE", "OFF"]
    with caplog.at_level(logging.ERROR):
        assert scheduled_organizations() == [hou]
    assert "NOPE, OFF" in caplog.text
    assert rio not in scheduled_organizations()


def test_tick_queues_one_run_per_organization_and_skips_busy_ones(django_capture_on_commit_callbacks):
    rio = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO")).organization
    ApiConfigurationFactory(organization=OrganizationFactory(code="HOU"))
    busy = sync_claim(organization=rio, trigger="api")
    with django_capture_on_commit_callbacks() as enqueued:
        result = sync_tick()
    assert result == "queued 1, skipped 1 still running, expired 0 lost run(s), purged 0 deleted record(s)"
    assert len(enqueued) == 1
    assert PfaSyncLog.objects.filter(organization=rio).get() == busy
    queued = PfaSyncLog.objects.get(organization__code="HOU")
    assert (queued.trigger, queued.sync_type) == ("schedule", "incremental")


def test_full_task_queues_full_reads_of_the_organizations_the_tick_syncs(settings, django_capture_on_commit_callbacks):
    for code in ("RIO", "HOU", "AUS"):
        ApiConfigurationFactory(organization=OrganizationFactory(code=code))
    settings.SYNC_ORGS = ["RIO", "HOU"]
    with django_capture_on_commit_callbacks() as enqueued:
        result = sync_full()
    assert result == "queued 2, skipped 0 still running, expired 0 lost run(s)"
    assert len(enqueued) == 2
    runs = PfaSyncLog.objects.order_by("organization__code")
    assert [(r.organization.code, r.sync_type, r.trigger, r.allow_mass_delete) for r in runs] == [
        ("HOU", "full", "schedule", False),
        ("RIO", "full", "schedule", False),
    ]


def test_tick_due_with_the_full_read_leaves_the_organizations_to_it(settings, django_capture_on_commit_callbacks):
    settings.ENABLE_SYNC_WORKER = True
    settings.SYNC_INTERVAL = "*/15 * * * *"
    settings.SYNC_FULL_INTERVAL = "0 3 * * *"
    ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"))
    three = timezone.now().replace(hour=3, minute=0, second=0, microsecond=0)
    with django_capture_on_commit_callbacks():
        result = tasks.sync_tick(scheduled_for=three.isoformat())  # as django-q2 calls it
    assert result.startswith("left to the full read due at the same time")
    assert not PfaSyncLog.objects.exists()
    with django_capture_on_commit_callbacks():
        sync_full()
        tasks.sync_tick(scheduled_for=(three + timedelta(minutes=15)).isoformat())
    assert list(PfaSyncLog.objects.values_list("sync_type", flat=True)) == ["full"]  # the tick found it busy
    settings.SYNC_FULL_INTERVAL = ""
    PfaSyncLog.objects.update(status=SyncStatus.COMPLETED)
    with django_capture_on_commit_callbacks():
        tasks.sync_tick(scheduled_for=three.isoformat())
    assert PfaSyncLog.objects.filter(sync_type="incremental").count() == 1


def test_tick_purges_records_deleted_longer_ago_than_the_retention(settings, caplog):
    settings.SYNC_DELETED_RETENTION_DAYS = 30
    rio = OrganizationFactory(code="RIO")
    for pfa_id, deleted_at in (
        ("PFA-OLD", timezone.now() - timedelta(days=40)),
        ("PFA-RECENT", timezone.now() - timedelta(days=5)),
        ("PFA-LIVE", None),
    ):
        PfaMirrorFactory(organization=rio, pfa_id=pfa_id, deleted_at=deleted_at)
    with caplog.at_level(logging.INFO, logger="mirror.services"):
        assert sync_tick().endswith("purged 1 deleted record(s)")
    assert set(PfaMirror.objects.values_list("pfa_id", flat=True)) == {"PFA-RECENT", "PFA-LIVE"}
    assert "Purged 1 records deleted in PEMS more than 30 days ago" in caplog.text


def test_worker_status_reports_schedule_syncs_running_and_last_runs(settings):
    settings.ENABLE_SYNC_WORKER = True
    settings.SYNC_FULL_INTERVAL = "0 3 * * *"
    rows = schedules_upsert()
    rio = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO")).organization
    OrganizationFactory(code="HOU")
    run = sync_claim(organization=rio, trigger="api")
    status = worker_status()
    assert (status["enabled"], status["syncs_running"], status["next_run"]) == (True, 0, rows[TICK_SCHEDULE].next_run)
    assert status["full_sync"] == {
        "enabled": True,
        "interval": "0 3 * * *",
        "next_run": rows[FULL_SCHEDULE].next_run,
    }
    assert status["last_runs"] == {"HOU": None, "RIO": run}
    run.start()
    assert worker_status()["syncs_running"] == 1
    settings.SYNC_FULL_INTERVAL = ""
    assert worker_status()["full_sync"] == {"enabled": False, "interval": None, "next_run": None}
    settings.ENABLE_SYNC_WORKER = False
    assert worker_status()["full_sync"]["enabled"] is False


# --- in worker processes ----------------------------------------------------------------------


def wait_until(predicate, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def database_url() -> str:
    db = connection.settings_dict
    if (db["HOST"] or "").startswith("/"):  # a Unix socket's folder (the embedded server)
        return f"postgres://{db['USER'] or 'postgres'}@/{quote(db['HOST'], safe='')}/{db['NAME']}"
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Cluster:
    """A `manage.py qcluster` child process in its own session (so SIGKILL can take all of it)."""

    def __init__(self, tmp_path: Path, name: str, **env):
        self.log_path = tmp_path / f"qcluster-{name}.log"
        environment = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "ENABLE_SYNC_WORKER": "true",
            "SYNC_WORKERS": "2",
            **{key: str(value) for key, value in env.items()},
        }
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_started(self) -> "Cluster":
        wait_until(lambda: "running." in self.output(), timeout=30, what="the cluster to start")
        return self

    def output(self) -> str:
        return self.log_path.read_text()

    def terminate(self) -> float:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        return time.monotonic() - started

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        self.log.close()


@pytest.fixture
def clusters(tmp_path):
    started = []

    def start(name="a", **env):
        cluster = Cluster(tmp_path, name, **env)
        started.append(cluster)
        return cluster.wait_started()

    yield start
    for cluster in started:
        cluster.close()


@pytest.fixture
def organizations(pems_server):
    """RIO (250 rows) and HOU (80 rows), read 20 rows a page so a sync spans many pages."""
    return [
        ApiConfigurationFactory(
            organization=OrganizationFactory(code=code), base_url=pems_server.url, page_size=20
        ).organization
        for code in ("RIO", "HOU")
    ]


def runs(code: str):
    return PfaSyncLog.objects.filter(organization__code=code).order_by("created_at")


@in_worker_processes
def test_scheduled_tick_syncs_every_configured_organization(clusters, organizations):
    cluster = clusters(SYNC_INTERVAL="* * * * *")
    assert "Background sync worker started with interval '* * * * *'" in cluster.output()
    # The schedule exists once and fires on django-q2's next scheduler pass (every 30 s).
    Schedule.objects.filter(name=TICK_SCHEDULE.name).update(next_run=timezone.now() - timedelta(seconds=1))
    assert Schedule.objects.filter(name=TICK_SCHEDULE.name).count() == 1
    for code, total in (("RIO", 250), ("HOU", 80)):
        completed = runs(code).filter(status=SyncStatus.COMPLETED)
        finished = wait_until(completed.first, timeout=90, what=f"{code} synced")
        assert (finished.trigger, finished.records_inserted, finished.triggered_by) == ("schedule", total, None)
    assert PfaMirror.objects.count() == 330
    assert cluster.terminate() < 30
    assert "Background sync worker stopped" in cluster.output()


@in_worker_processes
def test_full_read_due_with_the_tick_reads_every_organization_in_full(clusters, organizations, pems_server):
    # A first read is always full: read once, so a scheduled incremental read would stay incremental.
    sync_organizations(organizations=organizations, trigger="command", sync_type=PfaSyncLog.SyncType.FULL)
    cluster = clusters(SYNC_INTERVAL="*/15 * * * *", SYNC_FULL_INTERVAL="0 3 * * *")
    assert "Scheduled full reads '0 3 * * *'" in cluster.output()
    assert set(Schedule.objects.values_list("name", "func")) == {
        (TICK_SCHEDULE.name, "synclog.tasks.sync_tick"),
        (FULL_SCHEDULE.name, "synclog.tasks.sync_full"),
    }
    # Both due at the same moment, as 03:00 is in these crons: the scheduler fires both in one pass.
    due = (timezone.now() - timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)
    Schedule.objects.update(next_run=due)
    tasks = wait_until(
        lambda: Task.objects.filter(group__in=[TICK_SCHEDULE.name, FULL_SCHEDULE.name]).count() == 2
        and {t.group: t for t in Task.objects.all()},
        timeout=90,
        what="both scheduled tasks",
    )
    assert tasks[TICK_SCHEDULE.name].success and "left to the full read" in tasks[TICK_SCHEDULE.name].result
    for code, total in (("RIO", 250), ("HOU", 80)):
        scheduled = runs(code).filter(trigger="schedule")
        done = wait_until(
            lambda scheduled=scheduled: scheduled.filter(status=SyncStatus.COMPLETED).first(),
            timeout=60,
            what=f"{code}'s scheduled read",
        )
        assert scheduled.count() == 1 and (done.sync_type, done.records_processed) == ("full", total)
    assert Schedule.objects.get(name=FULL_SCHEDULE.name).next_run > timezone.now()


@in_worker_processes
@pytest.mark.faults
def test_tick_during_a_long_sync_does_not_overlap_it(clusters, organizations, pems_server):
    pems_server.simulator.set_latency(0.2)
    clusters()
    async_task("synclog.tasks.sync_tick")
    wait_until(
        lambda: runs("RIO").filter(status=SyncStatus.RUNNING, records_processed__gt=0).exists(),
        timeout=30,
        what="RIO running",
    )
    second_tick = async_task("synclog.tasks.sync_tick")
    task = wait_until(lambda: fetch(second_tick), timeout=30, what="the second tick")
    # RIO is still running, so this tick skips it (HOU, 80 rows, may have finished and be queued again).
    assert task.success and "skipped" in task.result, task.result
    wait_until(lambda: runs("RIO").filter(status=SyncStatus.COMPLETED).exists(), timeout=60, what="RIO done")
    assert runs("RIO").count() == 1
    assert runs("RIO").get().records_inserted == 250


@in_worker_processes
@pytest.mark.faults
def test_sigterm_mid_sync_cancels_the_run_and_frees_the_organization(clusters, organizations, pems_server):
    pems_server.simulator.set_latency(0.2)
    cluster = clusters()
    async_task("synclog.tasks.sync_tick")
    wait_until(lambda: runs("RIO").filter(records_processed__gte=40).exists(), timeout=30, what="RIO progress")
    assert cluster.terminate() < 30
    run = runs("RIO").get()
    assert run.status == SyncStatus.CANCELLED and 0 < run.records_processed < 250
    assert PfaMirror.objects.filter(organization__code="RIO").count() == run.records_inserted
    assert "Background sync worker stopped" in cluster.output()
    pems_server.simulator.set_latency(0)
    clusters("b")  # the organization is free: the next tick reads it whole
    async_task("synclog.tasks.sync_tick")
    wait_until(lambda: runs("RIO").filter(status=SyncStatus.COMPLETED).exists(), timeout=60, what="the next run")
    assert_mirror_is_pems("RIO", pems_server.simulator)


@in_worker_processes
@pytest.mark.faults
def test_sigkill_mid_sync_is_failed_by_the_lease_and_the_next_tick_syncs(clusters, organizations, pems_server):
    pems_server.simulator.set_latency(0.2)
    cluster = clusters(SYNC_LEASE_SECONDS=3, SYNC_HEARTBEAT_SECONDS=1)
    async_task("synclog.tasks.sync_tick")
    wait_until(lambda: runs("RIO").filter(records_processed__gte=40).exists(), timeout=30, what="RIO progress")
    cluster.kill()
    lost = runs("RIO").get()
    assert lost.status == SyncStatus.RUNNING  # nobody is left to say otherwise
    time.sleep(3.5)  # the lease runs out
    pems_server.simulator.set_latency(0)
    clusters("b", SYNC_LEASE_SECONDS=3, SYNC_HEARTBEAT_SECONDS=1)  # the check also runs when a cluster starts
    failed = runs("RIO").filter(pk=lost.pk, status=SyncStatus.FAILED)
    lost = wait_until(failed.first, timeout=30, what="the lost run to be failed")
    assert lost.error_message.startswith("Worker lost")
    async_task("synclog.tasks.sync_tick")
    done = wait_until(lambda: runs("RIO").filter(status=SyncStatus.COMPLETED).first(), timeout=60, what="resync")
    assert done.records_processed == 250
    assert_mirror_is_pems("RIO", pems_server.simulator)


def assert_mirror_is_pems(code, simulator) -> None:
    """The organization's mirror holds what PEMS holds, key for key and hash for hash, and no run
    of it is left active or overlapped another."""
    mirror = dict(PfaMirror.objects.live().filter(organization__code=code).values_list("pfa_id", "content_hash"))
    assert mirror == {row["pfs_id"]: content_hash(row) for row in simulator.rows(code)}
    ordered = list(runs(code).order_by("started_at"))
    assert all(run.status in SyncStatus.terminal() for run in ordered)
    assert all(a.completed_at <= b.started_at for a, b in zip(ordered, ordered[1:], strict=False))


@in_worker_processes
def test_two_redis_clusters_never_run_one_organization_twice(clusters, organizations, pems_server):
    redis = pytest.importorskip("redis")
    redis_url = "redis://127.0.0.1:6379/13"
    try:
        redis.Redis.from_url(redis_url).flushdb()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    pems_server.simulator.set_latency(0.1)
    for name in ("a", "b"):
        clusters(name, REDIS_URL=redis_url)
    enqueue = "from django_q.tasks import async_task\nfor _ in range(6): async_task('synclog.tasks.sync_tick')"
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", enqueue],
        cwd=ROOT,
        check=True,
        env={**os.environ, "DATABASE_URL": database_url(), "REDIS_URL": redis_url},
    )
    most_active = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for code in ("RIO", "HOU"):
            most_active = max(most_active, runs(code).filter(status__in=SyncStatus.active()).count())
        if (
            runs("RIO").filter(status=SyncStatus.COMPLETED).exists()
            and not PfaSyncLog.objects.filter(status__in=SyncStatus.active()).exists()
        ):
            break
        time.sleep(0.1)
    assert most_active == 1
    for code in ("RIO", "HOU"):
        assert runs(code).filter(status=SyncStatus.COMPLETED).exists()
        assert not runs(code).exclude(status=SyncStatus.COMPLETED).exists()


@in_worker_processes
def test_a_worker_is_alive_while_its_cluster_runs_and_not_once_it_stopped(clusters, organizations):
    assert worker_status()["alive"] is False
    cluster = clusters(SYNC_HEARTBEAT_SECONDS=1, SYNC_LEASE_SECONDS=3)
    wait_until(lambda: worker_status()["alive"], timeout=30, what="the cluster to say it is alive")
    assert cluster.terminate() < 30
    assert worker_status()["alive"] is False  # at once, not two heartbeats later


@in_worker_processes
@pytest.mark.faults
def test_a_task_redis_lost_after_the_202_is_failed_at_the_worker_start_and_synced_again(
    clusters, organizations, monkeypatch
):
    redis = pytest.importorskip("redis")
    redis_url = "redis://127.0.0.1:6379/12"  # not the other Redis test's db 13
    connection = redis.Redis.from_url(redis_url)
    try:
        connection.flushdb()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "ORM", None)  # this process enqueues to the same Redis as the cluster
    monkeypatch.setattr(Conf, "REDIS", redis_url)
    rio = organizations[0]
    (queued,) = sync_start(organizations=[rio], trigger="api").queued
    assert connection.llen(f"django_q:{Conf.CLUSTER_NAME}:q") == 1
    connection.flushdb()  # Redis restarted without its data, before any worker took the task
    PfaSyncLog.objects.filter(pk=queued.pk).update(created_at=timezone.now() - timedelta(seconds=10))
    clusters(REDIS_URL=redis_url, SYNC_QUEUE_LEASE_SECONDS=5)  # the check also runs when a cluster starts
    queued.refresh_from_db()
    assert queued.status == SyncStatus.FAILED and "the task was lost before a worker took it" in queued.error_message
    async_task("synclog.tasks.sync_tick")
    done = wait_until(lambda: runs("RIO").filter(status=SyncStatus.COMPLETED).first(), timeout=60, what="resync")
    assert done.records_processed == 250
    connection.flushdb()
