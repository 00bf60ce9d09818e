"""The ops dashboard at /ops/dashboard/: staff only, one row per organization, SVG charts, Sync now."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory, PfaMirrorFactory
from synclog.dashboard import bar_chart, compact_number, interval_length
from synclog.models import PfaSyncLog, SyncStatus
from synclog.tests.factories import PfaSyncLogFactory

pytestmark = pytest.mark.django_db

DASHBOARD = reverse("synclog:dashboard")


def configured(code: str):
    return ApiConfigurationFactory(organization=OrganizationFactory(code=code)).organization


def org_row(body: str, code: str) -> str:
    match = re.search(rf'<tr class="org-row[^"]*" data-org="{code}">.*?</tr>', body, re.S)
    assert match, f"no row for {code}"
    return match.group(0)


def test_anonymous_and_non_staff_users_are_sent_to_the_login(client, django_user_model):
    assert client.get(DASHBOARD).status_code == 302
    user = django_user_model.objects.create_user("viewer", password="pw")
    client.force_login(user)
    response = client.get(DASHBOARD)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_admin_index_links_the_dashboard(admin_client):
    assert f'href="{DASHBOARD}"' in admin_client.get(reverse("admin:index")).content.decode()


def test_dashboard_shows_the_worker_and_one_row_per_organization(admin_client, settings):
    settings.SYNC_INTERVAL = "*/15 * * * *"
    rio = configured("RIO")
    configured("HOU")
    PfaMirrorFactory(organization=rio)
    PfaSyncLogFactory(organization=rio, ago=timedelta(minutes=5), records_processed=250)
    response = admin_client.get(DASHBOARD)
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="worker"' in body and "<code>*/15 * * * *</code>" in body and "0:15:00" in body
    rio_row, hou_row = org_row(body, "RIO"), org_row(body, "HOU")
    assert '<td class="mirror-size">1</td>' in rio_row and "Completed" in rio_row
    assert "never" in hou_row
    assert 'http-equiv="refresh"' not in body


def test_dashboard_shows_both_schedules_and_their_next_runs(admin_client, settings):
    settings.ENABLE_SYNC_WORKER = True
    settings.SYNC_INTERVAL = "*/15 * * * *"
    settings.SYNC_FULL_INTERVAL = "0 3 * * *"
    call_command("setup_schedules")
    worker = re.search(r'<dl class="worker" id="worker">.*?</dl>', admin_client.get(DASHBOARD).content.decode(), re.S)
    worker = worker.group(0)
    assert "<code>*/15 * * * *</code>" in worker and "<code>0 3 * * *</code>" in worker
    next_runs = re.findall(r"<dt>Next (incremental|full) read</dt><dd>\s*(.*?)\s*</dd>", worker, re.S)
    assert [kind for kind, _ in next_runs] == ["incremental", "full"]
    assert all(" (in " in text for _, text in next_runs), next_runs
    settings.SYNC_FULL_INTERVAL = ""
    call_command("setup_schedules")
    body = admin_client.get(DASHBOARD).content.decode()
    assert "none (SYNC_FULL_INTERVAL is empty)" in body
    assert re.search(r"<dt>Next full read</dt><dd>\s*not scheduled\s*</dd>", body)


def test_an_organization_whose_last_full_read_held_back_deletions_shows_a_warning(admin_client):
    rio, hou = configured("RIO"), configured("HOU")
    message = "1,200 of 2,000 records (60.0%) are gone from PEMS: more than 10%, so none were deleted."
    PfaSyncLogFactory(
        organization=rio,
        ago=timedelta(hours=1),
        sync_type=PfaSyncLog.SyncType.FULL,
        error_message=message,
        error_details={"deletions_held_back": 1200},
    )
    PfaSyncLogFactory(
        organization=rio, status=SyncStatus.FAILED, ago=timedelta(minutes=5)
    )  # the warning is the last *completed* read's
    PfaSyncLogFactory(organization=hou, ago=timedelta(minutes=5), error_details={"deletions_held_back": 0})
    body = admin_client.get(DASHBOARD).content.decode()
    warning = re.search(r'<div class="deletions-held-back" role="alert">(.*?)</div>', org_row(body, "RIO"), re.S)
    assert warning and message in warning.group(1) and "1200" in warning.group(1)
    assert "deletions-held-back" in body.split("<style>", 1)[1].split("</style>", 1)[0]  # styled to stand out
    assert 'class="deletions-held-back"' not in org_row(body, "HOU")
    PfaSyncLogFactory(organization=rio, ago=timedelta(minutes=1))  # a later completed read without held-back deletions
    assert 'class="deletions-held-back"' not in org_row(admin_client.get(DASHBOARD).content.decode(), "RIO")


def test_mirror_size_counts_only_records_not_deleted_in_pems(admin_client):
    rio = configured("RIO")
    for deleted_at in [None, None, timezone.now() - timedelta(days=1)]:
        PfaMirrorFactory(organization=rio, deleted_at=deleted_at)
    body = admin_client.get(DASHBOARD).content.decode()
    assert '<td class="mirror-size">2</td>' in org_row(body, "RIO")


def test_a_sync_older_than_the_stale_limit_is_highlighted(admin_client, settings):
    # The limit the alerts use: three intervals unless SYNC_STALE_AFTER says otherwise.
    settings.SYNC_STALE_AFTER = None
    settings.SYNC_INTERVAL = "*/15 * * * *"
    fresh, old = configured("FRESH"), configured("OLD")
    PfaSyncLogFactory(organization=fresh, ago=timedelta(minutes=40))
    PfaSyncLogFactory(organization=old, ago=timedelta(minutes=50))
    body = admin_client.get(DASHBOARD).content.decode()
    assert 'class="org-row" data-org="FRESH"' in body
    assert 'class="org-row stale" data-org="OLD"' in body and "(stale)" in org_row(body, "OLD")
    settings.SYNC_STALE_AFTER = 30 * 60
    body = admin_client.get(DASHBOARD).content.decode()
    assert 'class="org-row stale" data-org="FRESH"' in body and "stale after 0:30:00" in body


def test_consecutive_failures_count_only_failures_after_the_last_success(admin_client):
    rio, hou = configured("RIO"), configured("HOU")
    PfaSyncLogFactory(organization=rio, status=SyncStatus.FAILED, ago=timedelta(hours=5))
    PfaSyncLogFactory(organization=rio, ago=timedelta(hours=4))
    PfaSyncLogFactory(organization=rio, status=SyncStatus.FAILED, ago=timedelta(hours=3))
    PfaSyncLogFactory(organization=rio, status=SyncStatus.CANCELLED, ago=timedelta(hours=2))
    PfaSyncLogFactory(organization=rio, status=SyncStatus.FAILED, ago=timedelta(hours=1))
    PfaSyncLogFactory(organization=hou, status=SyncStatus.FAILED, ago=timedelta(hours=1))
    body = admin_client.get(DASHBOARD).content.decode()
    assert '<td class="failures failures-bad">2</td>' in org_row(body, "RIO")
    assert '<td class="failures failures-bad">1</td>' in org_row(body, "HOU")


def test_charts_are_inline_svg_with_values_printed(admin_client):
    rio = configured("RIO")
    PfaSyncLogFactory(organization=rio, ago=timedelta(days=2), records_processed=1234, duration_ms=61_000)
    PfaSyncLogFactory(organization=rio, status=SyncStatus.FAILED, ago=timedelta(days=1), records_processed=17)
    PfaSyncLogFactory(organization=rio, ago=timedelta(days=40), records_processed=999_999)  # outside the 30 days
    body = admin_client.get(DASHBOARD).content.decode()
    assert body.count('<figure class="chart">') == 3  # failures per day, then records and duration for RIO
    assert "RIO: records processed per run (every run, 30 days)" in body
    assert ">1.2k</text>" in body and ">17</text>" in body and ">61</text>" in body
    assert "1M" not in body
    assert 'class="bar failed"' in body
    assert "https://" not in body.split("<svg", 1)[1]  # nothing loaded from outside


def test_dashboard_refreshes_itself_while_a_run_is_active(admin_client):
    rio = configured("RIO")
    PfaSyncLogFactory(organization=rio, status=SyncStatus.RUNNING, records_total=250, records_processed=100)
    body = admin_client.get(DASHBOARD).content.decode()
    assert '<meta http-equiv="refresh" content="5">' in body
    assert "100 of 250 records" in body


def test_sync_now_queues_an_admin_run_and_redirects_back(admin_client, admin_user, django_capture_on_commit_callbacks):
    rio = configured("RIO")
    url = reverse("synclog:sync-now", args=["RIO"])
    assert admin_client.get(url).status_code == 405
    with django_capture_on_commit_callbacks() as callbacks:
        response = admin_client.post(url)
    assert response.status_code == 302 and response["Location"] == DASHBOARD
    sync_log = PfaSyncLog.objects.get(organization=rio)
    assert (sync_log.status, sync_log.trigger, sync_log.triggered_by) == ("queued", "admin", admin_user)
    assert len(callbacks) == 1

    response = admin_client.post(url, follow=True)
    warnings = [str(m) for m in get_messages(response.wsgi_request) if m.level_tag == "warning"]
    warnings = [warning for warning in warnings if not warning.startswith("No worker is alive")]
    assert len(warnings) == 1 and str(sync_log.id) in warnings[0]
    assert str(sync_log.id) in response.content.decode()


def test_sync_now_needs_a_csrf_token(client, admin_user):
    configured("RIO")
    client.handler.enforce_csrf_checks = True
    client.force_login(admin_user)
    assert client.post(reverse("synclog:sync-now", args=["RIO"])).status_code == 403
    assert not PfaSyncLog.objects.exists()
    assert 'name="csrfmiddlewaretoken"' in client.get(DASHBOARD).content.decode()


@pytest.mark.django_db(transaction=True)
def test_sync_now_whose_task_the_broker_refuses_is_an_error(admin_client, broker_down):
    rio = configured("RIO")

    response = admin_client.post(reverse("synclog:sync-now", args=["RIO"]), follow=True)
    ((level, text),) = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert level == "error" and "Could not be queued" in text
    assert PfaSyncLog.objects.get(organization=rio).status == SyncStatus.FAILED


def test_cancel_button_on_an_active_run(admin_client):
    rio, hou = configured("RIO"), configured("HOU")
    queued = PfaSyncLogFactory(organization=rio, status=SyncStatus.QUEUED)
    running = PfaSyncLogFactory(organization=hou, status=SyncStatus.RUNNING, records_total=250, records_processed=100)
    body = admin_client.get(DASHBOARD).content.decode()
    for sync_log in (queued, running):
        assert f'action="{reverse("synclog:cancel", args=[sync_log.pk])}"' in body
    response = admin_client.post(reverse("synclog:cancel", args=[queued.pk]), follow=True)
    assert [str(m) for m in get_messages(response.wsgi_request)] == [
        f"Sync of RIO cancelled before it started (run {queued.pk})."
    ]
    admin_client.post(reverse("synclog:cancel", args=[running.pk]))
    queued.refresh_from_db(), running.refresh_from_db()
    assert queued.status == SyncStatus.CANCELLED
    assert running.status == SyncStatus.RUNNING and running.cancel_requested_at is not None
    body = admin_client.get(DASHBOARD).content.decode()
    assert "cancel requested" in body and reverse("synclog:cancel", args=[running.pk]) not in body
    response = admin_client.post(reverse("synclog:cancel", args=[queued.pk]), follow=True)
    assert [m.level_tag for m in get_messages(response.wsgi_request)] == ["warning"]  # ended already
    assert admin_client.get(reverse("synclog:cancel", args=[running.pk])).status_code == 405


def test_interval_length_is_the_gap_between_the_next_two_fire_times():
    moment = datetime(2025, 1, 1, 10, 7, tzinfo=UTC)
    assert interval_length("*/15 * * * *", now=moment) == timedelta(minutes=15)
    assert interval_length("0 2 * * *", now=moment) == timedelta(days=1)


def test_bar_chart_scales_to_the_largest_value():
    chart = bar_chart(title="t", y_label="y", x_label="x", points=[("a", 50, False), ("b", 100, True)])
    assert [bar.height for bar in chart.bars] == [chart.plot_height / 2, chart.plot_height]
    assert chart.y_max_label == "100" and chart.bars[1].failed
    assert compact_number(1_500_000) == "1.5M" and compact_number(12.0) == "12"


def test_dashboard_shows_each_organizations_edits_and_the_kpi_views(admin_client):
    from django.contrib.auth.models import User

    from mirror.materialized import views_refresh
    from mirror.models import PfaModification

    rio = configured("RIO")
    configured("HOU")
    ann = User.objects.create_user("ann")
    for n, state in enumerate(["draft", "draft", "committed", "writing", "conflict", "written", "failed"]):
        PfaModification.objects.create(organization=rio, pfa_id=f"P{n}", author=ann, state=state, base_version=1)
    body = admin_client.get(DASHBOARD).content.decode()
    assert 'id="views-refresh">never refreshed' in body
    row = org_row(body, "RIO")
    assert '<td class="drafts">2</td>' in row and '<td class="edits-waiting">2</td>' in row
    assert "state=conflict" in row  # the conflict count links to the modifications to resolve
    assert '<td class="drafts">0</td>' in org_row(body, "HOU")
    views_refresh(now_anyway=True)
    assert re.search(r'id="views-refresh">refreshed .* ago, in \d+ ms', admin_client.get(DASHBOARD).content.decode())


def test_dashboard_shows_each_organizations_last_write_run(admin_client):
    rio = configured("RIO")
    PfaSyncLogFactory(organization=rio, direction="write", records_written=7, records_conflicts=2)
    row = org_row(admin_client.get(DASHBOARD).content.decode(), "RIO")
    assert re.search(r'class="last-write"><a href="[^"]+">Completed</a>, 7 written, 2 conflicts', row), row
