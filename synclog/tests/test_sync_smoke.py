"""`manage.py sync_smoke` against a real HTTP server, with the sync running in-process (django-q2 sync mode)."""

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory
from synclog.models import PfaSyncLog, SyncStatus


@pytest.fixture(autouse=True)
def api_settings(settings, monkeypatch):
    """django-q2 running each task inline in the request thread (no worker)."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)  # Conf reads Q_CLUSTER once, at import
    monkeypatch.setenv("PFASYNC_SMOKE_PASSWORD", "smoke-pw")


@pytest.fixture
def admin_user_(transactional_db):
    return User.objects.create_superuser("admin", password="smoke-pw")


def smoke(live_server, *args: str) -> str:
    out = io.StringIO()
    call_command(
        "sync_smoke", "--url", live_server.url, "--username", "admin", "--poll-interval", "0.1", *args, stdout=out
    )
    return out.getvalue()


def test_smoke_syncs_rio_end_to_end(live_server, pems_server, admin_user_):
    ApiConfigurationFactory(organization=OrganizationFactory(code="HOU"), base_url=pems_server.url)
    ApiConfigurationFactory(organization=OrganizationFactory(code="RIO", name="Rio"), base_url=pems_server.url)
    output = smoke(live_server)
    assert "Organizations: HOU, RIO" in output
    assert "completed" in output
    assert "Processed:    250" in output and "Inserted:     250" in output and "Errors:       0" in output
    assert "Triggered by: admin" in output
    sync_log = PfaSyncLog.objects.get()
    assert (sync_log.organization.code, sync_log.status, sync_log.records_inserted) == ("RIO", "completed", 250)


def test_smoke_syncs_the_organization_asked_for(live_server, pems_server, admin_user_):
    ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"), base_url=pems_server.url)
    ApiConfigurationFactory(organization=OrganizationFactory(code="HOU"), base_url=pems_server.url)
    output = smoke(live_server, "--org", "hou")
    assert "Processed:    80" in output
    assert PfaSyncLog.objects.get().organization.code == "HOU"


def test_a_sync_nobody_runs_times_out_non_zero(live_server, pems_server, admin_user_, monkeypatch):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", False)  # no worker: the run stays queued
    ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"), base_url=pems_server.url)
    with pytest.raises(CommandError, match=r"still queued after 0.5 s \(is the worker running"):
        smoke(live_server, "--timeout", "0.5")


def test_a_failed_sync_exits_non_zero_with_the_reason(live_server, pems_server, admin_user_):
    ApiConfigurationFactory(
        organization=OrganizationFactory(code="RIO"), base_url=pems_server.url, password="wrong-password"
    )
    with pytest.raises(CommandError, match=r"of RIO ended failed: .*(?i:auth|credential)") as failure:
        smoke(live_server, "--timeout", "30")
    assert "wrong-password" not in str(failure.value)
    assert PfaSyncLog.objects.get().error_details["error_type"] == "PemsAuthError"


def test_an_active_sync_is_named(live_server, pems_server, admin_user_):
    rio = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"), base_url=pems_server.url).organization
    active = PfaSyncLog.objects.create(organization=rio, trigger="schedule", status=SyncStatus.RUNNING)
    with pytest.raises(CommandError, match=f"already active: run {active.pk}"):
        smoke(live_server)


def test_a_wrong_password_exits_non_zero(live_server, admin_user_, monkeypatch):
    monkeypatch.setenv("PFASYNC_SMOKE_PASSWORD", "nope")
    with pytest.raises(CommandError, match="Login as admin failed: HTTP 401"):
        smoke(live_server)


def test_an_unknown_organization_exits_non_zero(live_server, admin_user_):
    OrganizationFactory(code="RIO")
    with pytest.raises(CommandError, match="Organization XYZ is not visible"):
        smoke(live_server, "--org", "XYZ")
