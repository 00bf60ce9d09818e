"""The worker's schedule, organization selection, leases and status, without worker processes."""

import logging
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory
from synclog.engine import sync_claim
from synclog.models import PfaSyncLog, SyncStatus
from synclog.worker import (
    SCHEDULE_NAME,
    schedule_upsert,
    scheduled_organizations,
    sync_expire_stale_runs,
    sync_tick,
    validate_sync_interval,
    worker_status,
)

pytestmark = pytest.mark.django_db


def test_schedule_follows_the_environment_and_is_never_duplicated(settings, capsys):
    settings.ENABLE_SYNC_WORKER = True
    settings.SYNC_INTERVAL = "*/15 * * * *"
    call_command("setup_schedules")
    call_command("setup_schedules")
    schedule = Schedule.objects.get(name=SCHEDULE_NAME)
    assert (schedule.func, schedule.schedule_type, schedule.cron) == ("synclog.tasks.sync_tick", "C", "*/15 * * * *")
    assert schedule.next_run > timezone.now() and schedule.next_run.minute % 15 == 0
    settings.SYNC_INTERVAL = "0 * * * *"
    schedule_upsert()
    assert list(Schedule.objects.values_list("cron", flat=True)) == ["0 * * * *"]
    settings.ENABLE_SYNC_WORKER = False
    call_command("setup_schedules")
    assert not Schedule.objects.exists()
    assert "disabled" in capsys.readouterr().out


@pytest.mark.parametrize("expression", ["every 15 minutes", "*/15 * * *", "61 * * * *", ""])
def test_invalid_interval_is_a_clear_error(expression):
    with pytest.raises(ImproperlyConfigured, match="SYNC_INTERVAL .* is not a valid cron expression"):
        validate_sync_interval(expression)


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
    assert sync_expire_stale_runs() == [lost]
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
    assert result == "queued 1, skipped 1 still running, expired 0 lost run(s)"
    assert len(enqueued) == 1
    assert PfaSyncLog.objects.filter(organization=rio).get() == busy
    assert PfaSyncLog.objects.get(organization__code="HOU").trigger == "schedule"


def test_worker_status_reports_schedule_running_and_last_runs(settings):
    settings.ENABLE_SYNC_WORKER = True
    schedule = schedule_upsert()
    rio = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO")).organization
    OrganizationFactory(code="HOU")
    run = sync_claim(organization=rio, trigger="api")
    status = worker_status()
    assert (status["enabled"], status["running"], status["next_run"]) == (True, False, schedule.next_run)
    assert status["last_runs"] == {"HOU": None, "RIO": run}
    run.start()
    assert worker_status()["running"] is True
