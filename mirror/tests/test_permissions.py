"""Each act of the mirror has one rule (`mirror.permissions`), and every interface asks it: a user
without the right is refused by the API and the admin, and `/api/auth/me` says false where it answers."""

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from mirror.models import ApiConfiguration, Organization
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory, user_with

pytestmark = pytest.mark.django_db

VIEW = ["mirror.view_organization", "mirror.view_apiconfiguration", "mirror.view_pfamodification"]


def browser(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def me(user: User) -> dict:
    return api(user).get("/api/auth/me").json()["user"]


def offered_actions(client: Client, url: str) -> set[str]:
    response = client.get(url)
    assert response.status_code == 200
    form = response.context["action_form"]
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


def organization_form(code: str, name: str) -> dict:
    return {"code": code, "name": name, "is_active": "on", "sync_enabled": "on"}


# --- create an organization -----------------------------------------------------------------------


def test_creating_an_organization_without_the_right_is_refused_by_the_admin_and_the_api():
    staff_without = user_with("viewer", *VIEW, is_staff=True)
    add = reverse("admin:mirror_organization_add")
    assert browser(staff_without).post(add, organization_form("RIO", "Rio")).status_code == 403
    assert (
        api(staff_without).post("/api/organizations", {"code": "RIO", "name": "Rio"}, format="json").status_code == 403
    )
    # The permission alone is not enough: organizations are a staff act, in the API as in the admin.
    not_staff = user_with("planner", *VIEW, "mirror.add_organization")
    assert browser(not_staff).post(add, organization_form("RIO", "Rio")).status_code == 302  # to the login page
    assert api(not_staff).post("/api/organizations", {"code": "RIO", "name": "Rio"}, format="json").status_code == 403
    assert not Organization.objects.exists()


def test_creating_an_organization_with_the_right_works_in_the_admin_and_the_api():
    user = user_with("creator", *VIEW, "mirror.add_organization", is_staff=True)
    response = browser(user).post(reverse("admin:mirror_organization_add"), organization_form("RIO", "Rio"))
    assert response.status_code == 302
    assert api(user).post("/api/organizations", {"code": "HOU", "name": "Houston"}, format="json").status_code == 201
    assert set(Organization.objects.values_list("code", flat=True)) == {"RIO", "HOU"}


# --- change an organization -----------------------------------------------------------------------


def test_changing_an_organization_without_the_right_is_refused_by_the_admin_and_the_api():
    rio = OrganizationFactory(code="RIO", name="Rio")
    user = user_with("viewer", *VIEW, "mirror.add_organization", is_staff=True)
    client = browser(user)
    client.post(reverse("admin:mirror_organization_change", args=[rio.pk]), organization_form("RIO", "Renamed"))
    assert not {"enable_sync", "disable_sync"} & offered_actions(
        client, reverse("admin:mirror_organization_changelist")
    )
    assert api(user).patch("/api/organizations/RIO", {"name": "Renamed"}, format="json").status_code == 403
    assert Organization.objects.get(pk=rio.pk).name == "Rio"


def test_changing_an_organization_with_the_right_works_in_the_admin_and_the_api():
    rio = OrganizationFactory(code="RIO", name="Rio")
    user = user_with("changer", *VIEW, "mirror.change_organization", is_staff=True)
    response = browser(user).post(
        reverse("admin:mirror_organization_change", args=[rio.pk]), organization_form("RIO", "By admin")
    )
    assert response.status_code == 302
    assert Organization.objects.get(pk=rio.pk).name == "By admin"
    assert api(user).patch("/api/organizations/RIO", {"name": "By API"}, format="json").status_code == 200
    assert Organization.objects.get(pk=rio.pk).name == "By API"


# --- change a PEMS connection ---------------------------------------------------------------------


def connection_form(configuration: ApiConfiguration, **changes) -> dict:
    fields = {
        "organization": configuration.organization_id,
        "usage": configuration.usage,
        "base_url": configuration.base_url,
        "endpoint": configuration.endpoint,
        "tenant": configuration.tenant,
        "pems_organization_code": "",
        "grid_name": configuration.grid_name,
        "grid_id": configuration.grid_id,
        "page_size": configuration.page_size,
        "request_timeout": configuration.request_timeout,
        "time_zone": configuration.time_zone,
        "auth_type": configuration.auth_type,
        "username": configuration.username,
        "secret": "",
    }
    return {**fields, **changes}


def test_changing_a_connection_without_the_right_is_refused_by_the_admin_and_the_api():
    configuration = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"))
    user = user_with("viewer", *VIEW, "mirror.change_organization", "mirror.add_apiconfiguration", is_staff=True)
    url = reverse("admin:mirror_apiconfiguration_change", args=[configuration.pk])
    browser(user).post(url, connection_form(configuration, time_zone="Europe/Madrid"))
    body = {"baseUrl": configuration.base_url, "tenant": configuration.tenant, "timeZone": "Europe/Madrid"}
    assert api(user).put("/api/organizations/RIO/connection", body, format="json").status_code == 403
    assert ApiConfiguration.objects.get(pk=configuration.pk).time_zone == "America/Chicago"


def test_changing_a_connection_with_the_right_works_in_the_admin_and_the_api():
    configuration = ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"))
    user = user_with("changer", *VIEW, "mirror.change_apiconfiguration", is_staff=True)
    url = reverse("admin:mirror_apiconfiguration_change", args=[configuration.pk])
    assert browser(user).post(url, connection_form(configuration, time_zone="Europe/Madrid")).status_code == 302
    assert ApiConfiguration.objects.get(pk=configuration.pk).time_zone == "Europe/Madrid"
    body = {"baseUrl": configuration.base_url, "tenant": configuration.tenant, "timeZone": "Asia/Tokyo"}
    assert api(user).put("/api/organizations/RIO/connection", body, format="json").status_code == 200
    assert ApiConfiguration.objects.get(pk=configuration.pk).time_zone == "Asia/Tokyo"


def test_creating_a_connection_needs_the_add_right_in_the_admin_and_the_api():
    OrganizationFactory(code="RIO")
    changer = user_with("changer", *VIEW, "mirror.change_apiconfiguration", is_staff=True)
    adder = user_with("adder", *VIEW, "mirror.add_apiconfiguration", is_staff=True)
    body = {
        "baseUrl": "https://eam.example.com",
        "tenant": "ACME",
        "username": "reader",
        "secret": "s3cret-value",
        "timeZone": "America/Chicago",
    }
    add = reverse("admin:mirror_apiconfiguration_add")
    assert browser(changer).get(add).status_code == 403
    assert api(changer).put("/api/organizations/RIO/connection", body, format="json").status_code == 403
    assert browser(adder).get(add).status_code == 200
    response = api(adder).put("/api/organizations/RIO/connection", body, format="json")
    assert response.status_code == 200, response.content


# --- edit records and resolve conflicts -----------------------------------------------------------


def test_editing_and_resolving_without_the_right_are_refused_by_the_api_the_admin_and_me():
    rio = OrganizationFactory(code="RIO")
    user = user_with("viewer", *VIEW, organizations=[rio], is_staff=True)
    assert api(user).patch("/api/organizations/RIO/records/P1", {"category": "X"}, format="json").status_code == 403
    changelist = reverse("admin:mirror_pfamodification_changelist")
    assert not {"resolve_keep_mine", "resolve_take_pems"} & offered_actions(browser(user), changelist)
    assert (me(user)["canEdit"], me(user)["canResolve"]) == (False, False)


def test_editing_and_resolving_with_the_right_are_offered_by_the_api_the_admin_and_me():
    rio = OrganizationFactory(code="RIO")
    user = user_with("editor", *VIEW, "mirror.edit_pfa_records", organizations=[rio], is_staff=True)
    # Past the permission: the record does not exist.
    assert api(user).patch("/api/organizations/RIO/records/P1", {"category": "X"}, format="json").status_code == 404
    changelist = reverse("admin:mirror_pfamodification_changelist")
    assert {"resolve_keep_mine", "resolve_take_pems"} <= offered_actions(browser(user), changelist)
    assert (me(user)["canEdit"], me(user)["canResolve"]) == (True, True)
