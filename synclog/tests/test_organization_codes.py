"""A code typed in any case names the organization for every interface that starts a run: `--org` of
the commands, SYNC_ORGS of the schedules and the API's trigger (codes are normalized by the model)."""

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from mirror.models import Organization
from mirror.tests.factories import ApiConfigurationFactory
from synclog.models import PfaSyncLog
from synclog.worker import scheduled_organizations

pytestmark = pytest.mark.django_db


def lowercase_rio(base_url: str) -> Organization:
    organization = Organization(code="rio", name="Rio")
    organization.full_clean()  # as the admin does
    organization.save()
    return ApiConfigurationFactory(organization=organization, base_url=base_url).organization


@pytest.mark.parametrize("spelling", ["rio", "RIO"])
def test_an_organization_made_lowercase_syncs_with_org_in_any_case(pems_server, spelling, capsys):
    rio = lowercase_rio(pems_server.url)
    call_command("sync_pems", "--org", spelling, "--full")
    run = PfaSyncLog.objects.get()
    assert (run.organization, run.status, run.records_processed) == (rio, "completed", 250)


def test_sync_orgs_names_organizations_in_any_case(settings):
    rio = lowercase_rio("http://127.0.0.1:1")
    settings.SYNC_ORGS = ["rio"]
    assert scheduled_organizations() == [rio]


def test_the_api_triggers_a_run_of_an_organization_named_in_any_case(admin_user, django_capture_on_commit_callbacks):
    rio = lowercase_rio("http://127.0.0.1:1")
    client = APIClient()
    client.force_authenticate(admin_user)
    with django_capture_on_commit_callbacks():
        response = client.post("/api/sync/trigger", {"organizationId": "rio"}, format="json")
    assert response.status_code == 202
    assert PfaSyncLog.objects.get().organization == rio
