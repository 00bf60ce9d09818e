"""A browser front end on another origin, end to end through CORS (headless Chromium).

A static page (frontend/index.html, served by a throwaway http.server on its own port) logs in to
the API of a live server, reads /api/auth/me, lists records with their total, edits one, commits it
and waits until the edit is written to PEMS (the simulator). django-q2 runs the write run inline on
enqueue (`Conf.SYNC`), so no worker process is needed. A screenshot lands in artifacts/.
"""

from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User

from mirror.models import PfaMirror, PfaModification
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory
from ops.tests.runs import run_sync
from pfasync.tests.browser_page import needs_chromium, page_served, page_url, status_of
from synclog.models import PfaSyncLog, SyncStatus

PASSWORD = "planner-Password-1"
RATE = "4321.50"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), needs_chromium]


@pytest.fixture
def page_origin():
    """The page's own origin (127.0.0.1; the API of the live server is on localhost)."""
    with page_served() as origin:
        yield origin


@pytest.fixture
def inline_tasks(monkeypatch):
    """django-q2 runs an enqueued task at once, in the process (here: the live server) that enqueued it."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def rio(pems_server):
    """RIO, read from the simulator, and a planner of RIO who may edit."""
    organization = ApiConfigurationFactory(
        organization=OrganizationFactory(code="RIO", name="Rio site"), base_url=pems_server.url
    ).organization
    assert run_sync(organization).status == SyncStatus.COMPLETED
    planner = User.objects.create_user("ann", password=PASSWORD)
    planner.organizations.add(organization)
    planner.user_permissions.add(Permission.objects.get(codename="edit_pfa_records"))
    return organization


def planner_page_url(origin: str, live_server) -> str:
    return page_url(origin, api=f"{live_server.url}/api", username="ann", password=PASSWORD, rate=RATE)


def test_a_page_on_another_origin_logs_in_edits_commits_and_sees_the_write_land(
    browser, live_server, pems_server, page_origin, rio, inline_tasks, settings
):
    from selenium.webdriver.common.by import By

    settings.CORS_ALLOWED_ORIGINS = [page_origin]
    browser.get(planner_page_url(page_origin, live_server))
    status = status_of(browser, ends=("done", "error"))
    log = browser.find_element(By.ID, "log").text
    assert status == "done", f"{status}\n{log}"

    text = browser.find_element(By.TAG_NAME, "body").text
    assert "ann sees RIO; may edit: true" in text
    rentals = PfaMirror.objects.live().filter(organization=rio, source="Rental").count()
    assert f"{rentals} rental records in RIO" in text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#records tr")) == min(10, rentals)
    pfa_id = browser.find_element(By.ID, "edited").get_attribute("data-pfa-id")

    # In PEMS (the simulator), and in the mirror, as the page saw it.
    assert pems_server.simulator.get_row("RIO", pfa_id)["pfs_f_rental"] == "4,321.50"
    modification = PfaModification.objects.get(organization=rio, pfa_id=pfa_id)
    assert (modification.state, modification.author.username) == (PfaModification.State.WRITTEN, "ann")
    record = PfaMirror.objects.get(organization=rio, pfa_id=pfa_id)
    assert record.monthly_rate == Decimal(RATE)
    assert f"{pfa_id} written to PEMS: monthly rate {RATE}00, recordid {record.pems_record_id}" in text
    assert PfaSyncLog.objects.get(direction="write").records_written == 1

    artifacts = Path(settings.BASE_DIR) / "artifacts"
    artifacts.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(artifacts / "frontend.png"))


def test_a_page_on_an_origin_not_allowed_cannot_call_the_api(browser, live_server, page_origin, rio, settings):
    settings.CORS_ALLOWED_ORIGINS = ["http://localhost:5173"]  # another front end's, not this page's
    browser.get(planner_page_url(page_origin, live_server))
    assert status_of(browser, ends=("done", "error"), timeout=60).startswith("error")
    assert not PfaModification.objects.exists()
