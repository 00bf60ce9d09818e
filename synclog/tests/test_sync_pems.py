"""`manage.py sync_pems`: the read run inline, its summary, its exit status and its options (the
progress bars are in ops/tests/test_sync_pems_progress.py)."""

import pytest
from django.core.management import CommandError, call_command

from mirror.models import ApiConfiguration
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory
from synclog.models import PfaSyncLog

pytestmark = pytest.mark.django_db


def test_sync_pems_command_prints_summary_and_fails_when_an_organization_fails(pems_server, capsys):
    rio = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"), base_url=pems_server.url).organization
    call_command("sync_pems", "--org", "RIO", "--full")
    output = capsys.readouterr().out
    assert "RIO" in output and "completed" in output and "250" in output
    assert PfaSyncLog.objects.get(organization=rio).trigger == "command"
    pems_server.simulator.set_auth_failure_status(401)
    ApiConfiguration.objects.filter(organization=rio).update(username="nobody")
    with pytest.raises(CommandError, match="1 of 1 organizations did not complete: RIO"):
        call_command("sync_pems", "--org", "RIO")
    with pytest.raises(CommandError, match="Unknown organization code"):
        call_command("sync_pems", "--org", "NOPE")


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
