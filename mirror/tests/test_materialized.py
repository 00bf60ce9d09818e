"""Refreshes of the materialized views (`mirror.materialized`): asked for by a change, run on the
worker one at a time, covering every request made meanwhile with at most one more."""

import threading
import time
from datetime import timedelta
from io import StringIO

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from mirror.materialized import views_refresh, views_refresh_pending, views_refresh_request
from mirror.models import ViewRefresh
from mirror.selectors import kpis_get
from mirror.tests.factories import OrganizationFactory, mirror_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def rio():
    return OrganizationFactory(code="RIO")


@pytest.mark.django_db(transaction=True)
def test_requests_during_a_refresh_cause_exactly_one_more(rio):
    """A refresh blocked by a lock (as by a long one) covers the requests made meanwhile with one more
    refresh; a second runner meanwhile does nothing."""
    views_refresh_request()
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"], port=settings["PORT"], user=settings["USER"], dbname=settings["NAME"], autocommit=False
    ) as blocker:
        blocker.execute("LOCK TABLE pfa_overlay IN ACCESS EXCLUSIVE MODE")
        outcome = {}

        def refresh_in_a_thread():
            try:
                outcome["first"] = views_refresh()
            finally:
                connection.close()  # the thread's own connection

        runner = threading.Thread(target=refresh_in_a_thread)
        runner.start()
        deadline = time.monotonic() + 30
        while not ViewRefresh.objects.filter(running_since__isnull=False).exists():
            assert time.monotonic() < deadline, "the refresh never started"
        views_refresh_request()
        views_refresh_request()
        assert views_refresh().refreshes == 0  # the running one covers these
        blocker.rollback()
    runner.join(timeout=30)
    assert outcome["first"].refreshes == 2
    state = ViewRefresh.objects.get()
    assert state.refreshed == state.requested and state.running_since is None
    assert state.last_refreshed_at is not None and state.last_duration_ms is not None


def test_a_request_is_pending_until_a_refresh_covers_it(rio, django_capture_on_commit_callbacks):
    assert not views_refresh_pending()
    with django_capture_on_commit_callbacks() as enqueued:
        views_refresh_request()
    assert len(enqueued) == 1  # the refresh task goes to the worker once the change commits
    assert views_refresh_pending()
    assert views_refresh().refreshes == 1
    assert not views_refresh_pending()


def test_a_refresh_claimed_by_a_worker_that_died_is_taken_over(rio):
    views_refresh_request()
    ViewRefresh.objects.update(running_since=timezone.now() - timedelta(minutes=5))
    assert views_refresh().refreshes == 0  # a recent claim: that refresh covers the request
    assert views_refresh_pending()
    ViewRefresh.objects.update(running_since=timezone.now() - timedelta(hours=1))
    assert views_refresh().refreshes == 1
    assert not views_refresh_pending() and ViewRefresh.objects.get().running_since is None


def test_refresh_views_command_refreshes_now(rio):
    mirror_record(rio, "P1")
    out = StringIO()
    call_command("refresh_views", stdout=out)
    state = ViewRefresh.objects.get()
    assert "Refreshed the materialized views" in out.getvalue()
    assert state.refreshed == state.requested == 1 and state.last_refreshed_at is not None
    assert kpis_get(organization=rio).summary[0]["record_count"] == 1
