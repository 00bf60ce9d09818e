"""The dashboard in a real browser: log in, press "Sync now", watch the run finish (headless Chromium).

django-q2 runs the task inline on enqueue (`Conf.SYNC`), so no worker process is needed; the
organization's connection points at the PEMS simulator. A screenshot lands in artifacts/.
"""

from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory
from synclog.models import PfaSyncLog, SyncStatus

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
USERNAME, PASSWORD = "ops", "ops-Password-1"
# The `browser` fixture (headless Chromium through Selenium) is in the root conftest.py.

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)",
    ),
]


@pytest.fixture
def inline_tasks(monkeypatch):
    """django-q2 runs an enqueued task at once, in the process that enqueued it."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


def test_sync_now_from_the_dashboard_runs_to_completion(
    browser, live_server, pems_server, inline_tasks, django_user_model
):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ApiConfigurationFactory(organization=OrganizationFactory(code="RIO", name="Rio site"), base_url=pems_server.url)
    django_user_model.objects.create_superuser(USERNAME, "ops@example.com", PASSWORD)

    dashboard = reverse("synclog:dashboard")
    browser.get(f"{live_server.url}{dashboard}")
    assert "/admin/login/" in browser.current_url  # staff only: the login comes first
    browser.find_element(By.NAME, "username").send_keys(USERNAME)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda driver: driver.current_url.endswith(dashboard))
    row = browser.find_element(By.CSS_SELECTOR, 'tr.org-row[data-org="RIO"]')
    assert "never" in row.text

    row.find_element(By.CSS_SELECTOR, "button.sync-now").click()

    def rio_completed(driver) -> bool:
        if not driver.current_url.endswith(dashboard):
            return False
        text = driver.find_element(By.CSS_SELECTOR, 'tr.org-row[data-org="RIO"]').text
        if "Completed" in text:
            return True
        driver.refresh()  # the page also refreshes itself every 5 s while a run is active
        return False

    # The page may reload itself between finding the row and reading it.
    WebDriverWait(
        browser, 120, poll_frequency=1, ignored_exceptions=(StaleElementReferenceException, NoSuchElementException)
    ).until(rio_completed)
    sync_log = PfaSyncLog.objects.get(organization__code="RIO")
    assert (sync_log.status, sync_log.trigger, sync_log.records_inserted) == (SyncStatus.COMPLETED, "admin", 250)
    body = browser.find_element(By.TAG_NAME, "body").text
    assert f"Sync of RIO queued (run {sync_log.id})." in body
    row = browser.find_element(By.CSS_SELECTOR, 'tr.org-row[data-org="RIO"]')
    assert row.find_element(By.CSS_SELECTOR, "td.mirror-size").text == "250"
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart svg rect.bar")

    artifacts = Path(settings.BASE_DIR) / "artifacts"
    artifacts.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(artifacts / "dashboard.png"))
