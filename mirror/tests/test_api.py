"""The organizations REST API: scoping, staff-only writes, the read connection and its write-only secret."""

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from mirror.models import ApiConfiguration, Organization
from mirror.tests.factories import (
    CONNECTION_PERMISSIONS,
    STAFF_PERMISSIONS,
    ApiConfigurationFactory,
    OrganizationFactory,
    PfaMirrorFactory,
    staff_user,
)

pytestmark = pytest.mark.django_db

SECRET = "s3cret-Do-Not-Leak-42"
ORGANIZATION_KEYS = {
    "id",
    "code",
    "name",
    "isActive",
    "syncEnabled",
    "lastSyncAt",
    "lastSyncStatus",
    "mirrorRecordCount",
}
CONNECTION_KEYS = {
    "baseUrl",
    "endpoint",
    "tenant",
    "pemsOrganizationCode",
    "authType",
    "username",
    "gridName",
    "gridId",
    "pageSize",
    "requestTimeout",
    "timeZone",
    "firstSyncAt",
    "lastSyncAt",
    "lastSyncRecordCount",
    "totalSyncRecordCount",
}


def client_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def rio():
    return ApiConfigurationFactory(
        organization=OrganizationFactory(code="RIO", name="Rio"), password=SECRET
    ).organization


@pytest.fixture
def hou():
    return OrganizationFactory(code="HOU", name="Houston")


@pytest.fixture
def member(rio):
    user = User.objects.create_user("ana", password="pw")
    user.organizations.add(rio)
    return user


# What the admin asks of staff for the same acts: organizations and connections, seen and changed.
@pytest.fixture
def staff():
    return staff_user("boss", *STAFF_PERMISSIONS, *CONNECTION_PERMISSIONS)


def assert_error(response, status_code: int, code: str) -> dict:
    assert response.status_code == status_code, response.content
    body = response.json()
    assert body["success"] is False and body["error"] == code and body["message"], body
    return body


CONNECTION = {
    "baseUrl": "https://eam.example.com",
    "tenant": "ACME",
    "username": "reader",
    "secret": SECRET,
    "authType": "basic",
    "endpoint": "griddata",
    "pageSize": 5000,
    "requestTimeout": 30,
    "timeZone": "America/Chicago",
}


def test_a_member_lists_only_their_organizations(rio, hou, member):
    PfaMirrorFactory(organization=rio)
    body = client_for(member).get("/api/organizations").json()
    assert body["success"] is True
    (organization,) = body["organizations"]
    assert set(organization) >= ORGANIZATION_KEYS
    assert organization["code"] == "RIO" and organization["id"] == str(rio.pk)
    assert (organization["lastSyncAt"], organization["lastSyncStatus"], organization["mirrorRecordCount"]) == (
        None,
        None,
        1,
    )


def test_staff_list_every_organization_with_its_last_run(rio, hou, staff):
    from synclog.models import PfaSyncLog

    PfaSyncLog.objects.create(organization=hou, trigger="schedule", status="failed")
    body = client_for(staff).get("/api/organizations").json()
    assert [o["code"] for o in body["organizations"]] == ["HOU", "RIO"]
    assert body["organizations"][0]["lastSyncStatus"] == "failed"


def test_a_member_sees_their_organization_by_code_or_id_but_not_others(rio, hou, member):
    client = client_for(member)
    assert client.get("/api/organizations/rio").json()["organization"]["code"] == "RIO"
    assert client.get(f"/api/organizations/{rio.pk}").status_code == 200
    assert_error(client.get("/api/organizations/HOU"), 404, "NOT_FOUND")
    assert_error(client.get(f"/api/organizations/{hou.pk}"), 404, "NOT_FOUND")
    assert_error(client.get("/api/organizations/NOPE"), 404, "NOT_FOUND")


def test_staff_create_an_organization(staff):
    response = client_for(staff).post("/api/organizations", {"code": "bog", "name": "Bogota"}, format="json")
    assert response.status_code == 201, response.content
    organization = response.json()["organization"]
    assert (organization["code"], organization["isActive"], organization["syncEnabled"]) == ("BOG", True, True)
    assert Organization.objects.filter(code="BOG").exists()


def test_creating_a_duplicate_or_incomplete_organization_is_400_naming_the_field(rio, staff):
    body = assert_error(
        client_for(staff).post("/api/organizations", {"code": "RIO", "name": "x"}, format="json"),
        400,
        "VALIDATION_ERROR",
    )
    assert list(body["fields"]) == ["code"]
    body = assert_error(
        client_for(staff).post("/api/organizations", {"code": "NEW"}, format="json"), 400, "VALIDATION_ERROR"
    )
    assert list(body["fields"]) == ["name"]


def test_only_staff_create_or_edit_organizations(rio, hou, member):
    client = client_for(member)
    assert_error(client.post("/api/organizations", {"code": "X", "name": "X"}, format="json"), 403, "FORBIDDEN")
    assert_error(client.patch("/api/organizations/RIO", {"name": "Mine"}, format="json"), 403, "FORBIDDEN")
    assert_error(client.patch("/api/organizations/HOU", {"name": "Mine"}, format="json"), 404, "NOT_FOUND")
    assert Organization.objects.get(code="RIO").name == "Rio"


def test_staff_edit_an_organization(rio, staff):
    response = client_for(staff).patch(
        "/api/organizations/RIO", {"name": "Rio Grande", "syncEnabled": False}, format="json"
    )
    assert response.status_code == 200, response.content
    rio.refresh_from_db()
    assert (rio.name, rio.sync_enabled, rio.is_active) == ("Rio Grande", False, True)


def test_renaming_onto_an_existing_code_is_400(rio, hou, staff):
    body = assert_error(
        client_for(staff).patch("/api/organizations/HOU", {"code": "rio"}, format="json"), 400, "VALIDATION_ERROR"
    )
    assert list(body["fields"]) == ["code"]


def test_staff_put_a_new_connection_and_read_it_back_without_the_secret(hou, staff):
    client = client_for(staff)
    response = client.put("/api/organizations/HOU/connection", CONNECTION, format="json")
    assert response.status_code == 200, response.content
    connection = response.json()["connection"]
    assert set(connection) >= CONNECTION_KEYS and "secret" not in connection
    assert (connection["baseUrl"], connection["endpoint"], connection["pageSize"], connection["hasSecret"]) == (
        "https://eam.example.com",
        "griddata",
        5000,
        True,
    )
    stored = ApiConfiguration.objects.get(organization=hou, usage="read")
    assert stored.get_secret() == SECRET and stored.secret != SECRET
    assert client.get("/api/organizations/HOU/connection").json()["connection"] == connection


def test_a_blank_secret_keeps_the_stored_one(rio, staff):
    stored = ApiConfiguration.objects.get(organization=rio)
    same_target = {"baseUrl": stored.base_url, "tenant": stored.tenant, "username": stored.username}
    response = client_for(staff).put(
        "/api/organizations/RIO/connection", {**CONNECTION, **same_target, "secret": ""}, format="json"
    )
    assert response.status_code == 200, response.content
    assert ApiConfiguration.objects.get(organization=rio).get_secret() == SECRET
    response = client_for(staff).put(
        "/api/organizations/RIO/connection", {**CONNECTION, "secret": "new-secret"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert ApiConfiguration.objects.get(organization=rio).get_secret() == "new-secret"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"timeZone": "Mars/Olympus"}, "timeZone"),
        ({"baseUrl": "not a url"}, "baseUrl"),
        ({"pageSize": 0}, "pageSize"),
        ({"authType": "kerberos"}, "authType"),
        ({"tenant": ""}, "tenant"),
    ],
)
def test_an_invalid_connection_is_400_naming_the_field(rio, staff, change, field):
    body = assert_error(
        client_for(staff).put("/api/organizations/RIO/connection", {**CONNECTION, **change}, format="json"),
        400,
        "VALIDATION_ERROR",
    )
    assert list(body["fields"]) == [field]


def test_creating_a_connection_without_a_time_zone_is_400_naming_it(hou, staff):
    without_zone = {name: value for name, value in CONNECTION.items() if name != "timeZone"}
    body = assert_error(
        client_for(staff).put("/api/organizations/HOU/connection", without_zone, format="json"),
        400,
        "VALIDATION_ERROR",
    )
    assert list(body["fields"]) == ["timeZone"]
    assert not ApiConfiguration.objects.filter(organization=hou).exists()


def test_changing_a_connection_without_a_time_zone_keeps_its_zone(rio, staff):
    ApiConfiguration.objects.filter(organization=rio).update(time_zone="Europe/Paris")
    without_zone = {name: value for name, value in CONNECTION.items() if name != "timeZone"}
    response = client_for(staff).put("/api/organizations/RIO/connection", without_zone, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["connection"]["timeZone"] == "Europe/Paris"


def test_organization_list_counts_only_records_pems_still_holds(rio, member):
    PfaMirrorFactory(organization=rio)
    PfaMirrorFactory(organization=rio, deleted_at=timezone.now())
    (organization,) = client_for(member).get("/api/organizations").json()["organizations"]
    assert organization["mirrorRecordCount"] == 1


def test_connection_is_staff_only_and_scoped(rio, hou, member):
    client = client_for(member)
    assert_error(client.get("/api/organizations/RIO/connection"), 403, "FORBIDDEN")
    assert_error(client.put("/api/organizations/RIO/connection", CONNECTION, format="json"), 403, "FORBIDDEN")
    assert_error(client.get("/api/organizations/HOU/connection"), 404, "NOT_FOUND")


def test_staff_acts_need_the_model_permission_the_admin_asks_for(rio, hou):
    viewer = client_for(staff_user("viewer", "view_organization", "view_apiconfiguration"))
    assert viewer.get("/api/organizations/RIO").status_code == 200
    assert viewer.get("/api/organizations/RIO/connection").status_code == 200  # view-only staff can look
    assert_error(viewer.post("/api/organizations", {"code": "X", "name": "X"}, format="json"), 403, "FORBIDDEN")
    assert_error(viewer.patch("/api/organizations/RIO", {"name": "Mine"}, format="json"), 403, "FORBIDDEN")
    assert_error(viewer.put("/api/organizations/RIO/connection", CONNECTION, format="json"), 403, "FORBIDDEN")
    changer = client_for(staff_user("changer", "change_apiconfiguration"))  # may change one, not create one
    assert_error(changer.put("/api/organizations/HOU/connection", CONNECTION, format="json"), 403, "FORBIDDEN")
    bare = client_for(staff_user("bare"))  # staff status alone opens nothing
    assert_error(bare.get("/api/organizations/RIO/connection"), 403, "FORBIDDEN")
    assert Organization.objects.get(code="RIO").name == "Rio" and not Organization.objects.filter(code="X").exists()
    assert not ApiConfiguration.objects.filter(organization=hou).exists()


def test_a_missing_connection_is_404(hou, staff):
    assert_error(client_for(staff).get("/api/organizations/HOU/connection"), 404, "NOT_FOUND")


def test_the_secret_is_in_no_response_body(rio, hou, staff, member):
    """Every endpoint, as staff and as a member: neither the secret nor its Fernet token ever shows."""
    from synclog.models import PfaSyncLog

    token = ApiConfiguration.objects.get(organization=rio).secret
    staff_client, member_client = client_for(staff), client_for(member)
    put = staff_client.put("/api/organizations/HOU/connection", CONNECTION, format="json")
    hou_token = ApiConfiguration.objects.get(organization=hou).secret
    trigger = staff_client.post("/api/sync/trigger", {"organizationId": "RIO"}, format="json")  # 403: no perm
    log = PfaSyncLog.objects.create(organization=rio, trigger="schedule", error_message="boom")
    responses = [put, trigger]
    for client in (staff_client, member_client, APIClient()):
        responses += [
            client.get("/api/organizations"),
            client.get("/api/organizations/RIO"),
            client.get("/api/organizations/RIO/connection"),
            client.get("/api/organizations/HOU/connection"),
            client.patch("/api/organizations/RIO", {"name": "Rio"}, format="json"),
            client.put("/api/organizations/RIO/connection", {**CONNECTION, "baseUrl": "bad"}, format="json"),
            client.put("/api/organizations/RIO/connection", {**CONNECTION, "secret": ""}, format="json"),
            client.get("/api/sync/status"),
            client.get(f"/api/sync/status/{log.pk}"),
            client.get("/api/sync/worker-status"),
        ]
    responses.append(APIClient().get("/api/schema/"))
    for response in responses:
        assert response.status_code < 500, response.content
        for secret in (SECRET, token, hou_token):
            assert secret.encode() not in response.content, response.request
