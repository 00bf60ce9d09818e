"""The same act needs the same permission in the API, the admin and the dashboard; view-only staff can
only look; django-q2's pages are for superusers only."""

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from mirror.models import Organization
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory, user_with
from synclog.models import PfaSyncLog, SyncStatus
from synclog.tests.factories import PfaSyncLogFactory

pytestmark = pytest.mark.django_db

ORGANIZATIONS = reverse("admin:mirror_organization_changelist")
SYNC_LOGS = reverse("admin:synclog_pfasynclog_changelist")
DASHBOARD = reverse("synclog:dashboard")
VIEW = ["mirror.view_organization", "mirror.view_apiconfiguration", "synclog.view_pfasynclog"]


def browser(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def configured(code: str) -> Organization:
    return ApiConfigurationFactory(organization=OrganizationFactory(code=code)).organization


def admin_action(client, url: str, action: str, *objects):
    return client.post(url, {"action": action, "_selected_action": [str(o.pk) for o in objects]}, follow=True)


def offered_actions(client, url: str) -> set[str]:
    response = client.get(url)
    assert response.status_code == 200
    form = response.context["action_form"]
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


@pytest.fixture
def viewer() -> User:
    return user_with("viewer", *VIEW, is_staff=True)


@pytest.fixture
def trigger() -> User:
    return user_with("trigger", *VIEW, "synclog.trigger_sync", is_staff=True)


@pytest.fixture
def changer() -> User:
    return user_with("changer", *VIEW, "mirror.change_organization", "mirror.change_apiconfiguration", is_staff=True)


# --- start a sync -----------------------------------------------------------------------------------


def test_sync_now_without_trigger_sync_is_refused_in_the_admin_the_dashboard_and_the_api(viewer, changer):
    rio = configured("RIO")
    for user in (viewer, changer):
        client = browser(user)
        assert "sync_now" not in offered_actions(client, ORGANIZATIONS)
        admin_action(client, ORGANIZATIONS, "sync_now", rio)
        assert client.post(reverse("synclog:sync-now", args=["RIO"])).status_code == 403
        assert 'class="button sync-now"' not in client.get(DASHBOARD).content.decode()
        assert api(user).post("/api/sync/trigger", {"organizationId": "RIO"}, format="json").status_code == 403
    assert not PfaSyncLog.objects.exists()


def test_sync_now_with_trigger_sync_starts_a_run_in_the_admin_the_dashboard_and_the_api(
    trigger, django_capture_on_commit_callbacks
):
    rio, hou, bog = configured("RIO"), configured("HOU"), configured("BOG")
    client = browser(trigger)
    assert "sync_now" in offered_actions(client, ORGANIZATIONS)
    with django_capture_on_commit_callbacks():
        admin_action(client, ORGANIZATIONS, "sync_now", rio)
        assert 'class="button sync-now"' in client.get(DASHBOARD).content.decode()
        assert client.post(reverse("synclog:sync-now", args=["HOU"])).status_code == 302
        assert api(trigger).post("/api/sync/trigger", {"organizationId": "BOG"}, format="json").status_code == 202
    assert {sync_log.organization for sync_log in PfaSyncLog.objects.all()} == {rio, hou, bog}


# --- cancel a run -----------------------------------------------------------------------------------


def queued(code: str) -> PfaSyncLog:
    return PfaSyncLogFactory(organization=configured(code), trigger="api", status=SyncStatus.QUEUED)


def test_cancel_without_trigger_sync_is_refused_in_the_admin_the_dashboard_and_the_api(viewer, changer):
    sync_log = queued("RIO")
    for user in (viewer, changer):
        client = browser(user)
        assert "cancel" not in offered_actions(client, SYNC_LOGS)
        admin_action(client, SYNC_LOGS, "cancel", sync_log)
        assert client.post(reverse("synclog:cancel", args=[sync_log.pk])).status_code == 403
        assert 'class="button cancel-run"' not in client.get(DASHBOARD).content.decode()
        assert api(user).post(f"/api/sync/cancel/{sync_log.pk}").status_code == 403
    sync_log.refresh_from_db()
    assert sync_log.status == SyncStatus.QUEUED


def test_cancel_with_trigger_sync_cancels_in_the_admin_the_dashboard_and_the_api(trigger):
    by_admin, by_dashboard, by_api = queued("RIO"), queued("HOU"), queued("BOG")
    client = browser(trigger)
    assert "cancel" in offered_actions(client, SYNC_LOGS)
    admin_action(client, SYNC_LOGS, "cancel", by_admin)
    assert 'class="button cancel-run"' in client.get(DASHBOARD).content.decode()
    assert client.post(reverse("synclog:cancel", args=[by_dashboard.pk])).status_code == 302
    assert api(trigger).post(f"/api/sync/cancel/{by_api.pk}").status_code == 202
    assert set(PfaSyncLog.objects.values_list("status", flat=True)) == {SyncStatus.CANCELLED}


# --- enable and disable sync --------------------------------------------------------------------------


def test_enabling_or_disabling_sync_needs_the_change_permission_on_organizations(viewer, trigger, changer):
    rio = configured("RIO")
    for user in (viewer, trigger):
        client = browser(user)
        assert not {"enable_sync", "disable_sync"} & offered_actions(client, ORGANIZATIONS)
        admin_action(client, ORGANIZATIONS, "disable_sync", rio)
        assert Organization.objects.get(pk=rio.pk).sync_enabled
    client = browser(changer)
    assert {"enable_sync", "disable_sync"} <= offered_actions(client, ORGANIZATIONS)
    admin_action(client, ORGANIZATIONS, "disable_sync", rio)
    assert not Organization.objects.get(pk=rio.pk).sync_enabled


# --- view-only staff ----------------------------------------------------------------------------------


def test_view_only_staff_can_look_at_every_page(viewer):
    sync_log = queued("RIO")
    client = browser(viewer)
    for url in (
        ORGANIZATIONS,
        reverse("admin:mirror_organization_change", args=[sync_log.organization_id]),
        SYNC_LOGS,
        reverse("admin:synclog_pfasynclog_change", args=[sync_log.pk]),
        reverse("admin:mirror_apiconfiguration_changelist"),
        DASHBOARD,
    ):
        assert client.get(url).status_code == 200, url
    assert offered_actions(client, ORGANIZATIONS) == set()
    assert offered_actions(client, SYNC_LOGS) == set()


# --- django-q2 ----------------------------------------------------------------------------------------

DJANGO_Q_PAGES = [
    reverse("admin:django_q_schedule_changelist"),
    reverse("admin:django_q_schedule_add"),
    reverse("admin:django_q_success_changelist"),
    reverse("admin:django_q_failure_changelist"),
    reverse("admin:django_q_ormq_changelist"),
]


def test_django_q_pages_are_for_superusers_only_whatever_the_model_permissions(admin_client):
    every_django_q_permission = [
        f"django_q.{codename}"
        for codename in Permission.objects.filter(content_type__app_label="django_q").values_list("codename", flat=True)
    ]
    client = browser(user_with("operator", *every_django_q_permission, is_staff=True))
    for url in DJANGO_Q_PAGES:
        assert client.get(url).status_code == 403, url
    from django_q.models import Schedule

    schedule = Schedule.objects.create(func="synclog.tasks.sync_tick", name="tick")
    change = reverse("admin:django_q_schedule_change", args=[schedule.pk])
    assert client.get(change).status_code == 403
    client.post(change, {"func": "os.system", "name": "tick", "schedule_type": "O", "repeats": "-1"})
    assert Schedule.objects.get(pk=schedule.pk).func == "synclog.tasks.sync_tick"
    assert 'href="/admin/django_q/' not in client.get(reverse("admin:index")).content.decode()
    for url in [*DJANGO_Q_PAGES, change]:
        assert admin_client.get(url).status_code == 200, url
    assert 'href="/admin/django_q/' in admin_client.get(reverse("admin:index")).content.decode()


# --- every organization at once, and a mass deletion: staff acts ----------------------------------------


def test_syncing_every_organization_needs_staff_in_the_api(django_capture_on_commit_callbacks):
    configured("RIO")
    member = user_with("member", "synclog.trigger_sync", organizations=Organization.objects.all())
    staff = user_with("staff", "synclog.trigger_sync", is_staff=True)
    assert api(member).post("/api/sync/trigger", {"organizationId": "*"}, format="json").status_code == 403
    assert not PfaSyncLog.objects.exists()
    with django_capture_on_commit_callbacks():
        assert api(staff).post("/api/sync/trigger", {"organizationId": "*"}, format="json").status_code == 202
    assert PfaSyncLog.objects.count() == 1


def test_allowing_a_mass_deletion_needs_staff_in_the_api(django_capture_on_commit_callbacks):
    configured("RIO")
    member = user_with("member", "synclog.trigger_sync", organizations=Organization.objects.all())
    staff = user_with("staff", "synclog.trigger_sync", is_staff=True)
    body = {"organizationId": "RIO", "syncType": "full", "allowMassDelete": True}
    assert api(member).post("/api/sync/trigger", body, format="json").status_code == 403
    assert not PfaSyncLog.objects.exists()
    with django_capture_on_commit_callbacks():
        assert api(staff).post("/api/sync/trigger", body, format="json").status_code == 202
    assert PfaSyncLog.objects.get().allow_mass_delete


def test_me_says_whether_the_user_may_start_and_cancel_runs(viewer, changer, trigger):
    assert [api(user).get("/api/auth/me").json()["user"]["canTriggerSync"] for user in (viewer, changer, trigger)] == [
        False,
        False,
        True,
    ]
