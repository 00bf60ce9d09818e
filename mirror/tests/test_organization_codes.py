"""Organization codes are normalized by the model (`organization_code_normalize`): stored upper case
however they were typed, and found by any spelling wherever a code is looked up."""

import importlib

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse
from rest_framework.test import APIClient

from mirror.models import Organization
from mirror.services import organization_create, organization_register
from mirror.tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

migration = importlib.import_module("mirror.migrations.0012_organization_code_normalized")


def staff_api(admin_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def test_a_lowercase_code_made_in_the_admin_is_stored_upper_case(admin_client):
    response = admin_client.post(
        reverse("admin:mirror_organization_add"),
        {"code": " rio ", "name": "Rio", "is_active": "on", "sync_enabled": "on"},
    )
    assert response.status_code == 302
    assert list(Organization.objects.values_list("code", flat=True)) == ["RIO"]


def test_the_admin_refuses_a_code_that_differs_from_another_only_by_case(admin_client):
    OrganizationFactory(code="RIO")
    response = admin_client.post(
        reverse("admin:mirror_organization_add"),
        {"code": "rio", "name": "Rio again", "is_active": "on", "sync_enabled": "on"},
    )
    assert response.status_code == 200 and "already exists" in response.content.decode()
    assert Organization.objects.count() == 1


def test_a_code_saved_by_the_model_itself_is_upper_case_in_the_row_and_the_instance():
    organization = Organization.objects.create(code="hou", name="Houston")
    assert organization.code == "HOU"
    assert Organization.objects.get().code == "HOU"


@pytest.mark.parametrize("spelling", ["rio", "RIO", "Rio"])
def test_the_api_finds_an_organization_by_any_spelling_of_its_code(admin_user, spelling):
    organization_create(code="rio", name="Rio")
    response = staff_api(admin_user).get(f"/api/organizations/{spelling}")
    assert response.status_code == 200 and response.json()["organization"]["code"] == "RIO"


def test_the_api_stores_a_created_or_renamed_code_upper_case(admin_user):
    client = staff_api(admin_user)
    assert (
        client.post("/api/organizations", {"code": "rio", "name": "Rio"}, format="json").json()["organization"]["code"]
        == "RIO"
    )
    assert client.post("/api/organizations", {"code": "Rio", "name": "Again"}, format="json").status_code == 400
    assert (
        client.patch("/api/organizations/rio", {"code": "bog"}, format="json").json()["organization"]["code"] == "BOG"
    )
    assert list(Organization.objects.values_list("code", flat=True)) == ["BOG"]


def test_registering_again_by_another_spelling_updates_the_same_organization():
    fields = {"base_url": "http://127.0.0.1:1", "tenant": "T", "username": "u", "secret": "s3cret", "time_zone": "UTC"}
    first, created = organization_register(code="rio", name="Rio", **fields)
    again, created_again = organization_register(code="RIO", name="Rio de Janeiro", **fields)
    assert (created, created_again, again.pk) == (True, False, first.pk)
    assert Organization.objects.get().name == "Rio de Janeiro"


def test_purge_deleted_takes_org_in_any_spelling(capsys):
    organization_create(code="rio", name="Rio")
    call_command("purge_deleted", "--org", "rio")
    call_command("purge_deleted", "--org", "RIO")
    with pytest.raises(CommandError, match="Unknown organization code"):
        call_command("purge_deleted", "--org", "nope")


# --- the data migration -----------------------------------------------------------------------------


def insert_raw(code: str) -> None:
    # Past the model, as rows from before the migration were written.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO organizations (id, code, name, is_active, sync_enabled, read_watermark_source, created_at,"
            " updated_at) VALUES (gen_random_uuid(), %s, %s, true, true, '', now(), now())",
            [code, code],
        )


def stored_codes() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT code FROM organizations")
        return sorted(row[0] for row in cursor.fetchall())


def test_the_migration_upper_cases_existing_codes():
    insert_raw("rio")
    insert_raw("HOU")
    migration.organization_codes_upper_case(apps, connection.schema_editor())
    assert stored_codes() == ["HOU", "RIO"]


def test_the_migration_refuses_codes_that_differ_only_by_case_and_changes_nothing():
    insert_raw("rio")
    insert_raw("RIO")
    insert_raw("bog")
    with pytest.raises(RuntimeError, match="differ only by case: RIO, rio"):
        migration.organization_codes_upper_case(apps, connection.schema_editor())
    assert stored_codes() == ["RIO", "bog", "rio"]
