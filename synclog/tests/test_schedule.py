"""The worker's schedule, organization selection, leases and status, without worker processes."""

import logging
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.models import Schedule

from mirror.models import PfaMirror
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory
from synclog import tasks
from synclog.engine import sync_claim
from synclog.models import PfaSyncLog, SyncStatus, stale_runs_expire
from synclog.worker import (
    FULL_SCHEDULE,
    TICK_SCHEDULE,
    scheduled_organizations,
    schedules_upsert,
    sync_full,
    sync_tick,
    validate_sync_schedules,
    worker_status,
)

pytestmark = pytest.mark.django_db


def test_schedule_follows_the_environment_and_is_never_duplicated(settings, capsys):
    settings.ENABLE_SYNC_WORKER = True
    settings.SYNC_INTERVAL = "*/15 * * * *"
    call_command("setup_schedules")
    call_command("setup_schedules")
    schedule = Schedule.objects.get(name=TICK_SCHEDULE.name)
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
    settings.ENABLE_SYNC_WORKER = True
    settings.SYNC_FULL_INTERVAL = "0 3 * * *"
    call_command("setup_schedules")
    call_command("setup_schedules")
    full = Schedule.objects.get(name=FULL_SCHEDULE.name)
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
        PfaMirror.objects.create(organization=rio, pfa_id=pfa_id, data={}, content_hash="0" * 32, deleted_at=deleted_at)
    with caplog.at_level(logging.INFO, logger="mirror.services"):
        assert sync_tick().endswith("purged 1 deleted record(s)")
    assert set(PfaMirror.objects.values_list("pfa_id", flat=True)) == {"PFA-RECENT", "PFA-LIVE"}
    assert "Purged 1 records deleted in PEMS more than 30 days ago" in caplog.text


def test_worker_status_reports_schedule_running_and_last_runs(settings):
    settings.ENABLE_SYNC_WORKER = True
    settings.SYNC_FULL_INTERVAL = "0 3 * * *"
    rows = schedules_upsert()
    rio = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO")).organization
    OrganizationFactory(code="HOU")
    run = sync_claim(organization=rio, trigger="api")
    status = worker_status()
    assert (status["enabled"], status["running"], status["next_run"]) == (True, False, rows[TICK_SCHEDULE].next_run)
    assert status["full_sync"] == {
        "enabled": True,
        "interval": "0 3 * * *",
        "next_run": rows[FULL_SCHEDULE].next_run,
    }
    assert status["last_runs"] == {"HOU": None, "RIO": run}
    run.start()
    assert worker_status()["running"] is True
    settings.SYNC_FULL_INTERVAL = ""
    assert worker_status()["full_sync"] == {"enabled": False, "interval": None, "next_run": None}
    settings.ENABLE_SYNC_WORKER = False
    assert worker_status()["full_sync"]["enabled"] is False


# --- sync_pems --allow-mass-delete (beside the other sync_pems tests in test_engine.py, once that is free)


def test_allow_mass_delete_without_full_is_an_error():
    with pytest.raises(CommandError, match="--allow-mass-delete needs --full"):
        call_command("sync_pems", "--allow-mass-delete")
    assert not PfaSyncLog.objects.exists()


@pytest.mark.parametrize(("flags", "allowed"), [(["--full"], False), (["--full", "--allow-mass-delete"], True)])
def test_sync_pems_passes_allow_mass_delete_to_the_run(pems_server, flags, allowed, capsys):
    ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"), base_url=pems_server.url)
    call_command("sync_pems", "--org", "RIO", *flags)
    run = PfaSyncLog.objects.get()
    assert (run.sync_type, run.allow_mass_delete, run.status) == ("full", allowed, "completed")
    assert "Deleted" in capsys.readouterr().out
