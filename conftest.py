"""Fixtures shared by every app's tests: a real PEMS simulator served over HTTP, headless Chromium
for the browser tests, and a check that every answer of the API a test client gets is what the
published OpenAPI schema says it is."""

import shutil
import tempfile
from pathlib import Path

import pytest
from django.core.cache import cache

from mirror.simulator import PemsSimulator, SimulatorServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture
def pems_server():
    """A simulator with two small organizations, served on a free localhost port."""
    simulator = PemsSimulator(orgs={"RIO": 250, "HOU": 80}, seed=1, row_cap=10_000)
    with SimulatorServer(simulator, host="127.0.0.1", port=0) as server:
        yield server


@pytest.fixture
def browser():
    """Headless Debian Chromium driven by Selenium (the tests that use it skip without both)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="pfasync-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1800",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each test starts with an empty cache: login throttles count per test, not per suite."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True, scope="session")
def api_answers_match_the_schema():
    """Every answer of a documented API operation to a test client (Django's or DRF's) is checked
    against the schema /api/schema/ publishes: its status is one the operation declares, and its
    body has the declared shape, with no key the schema does not name. The docs cannot drift."""
    from django.test import Client

    from pfasync.tests.schema_check import api_answer_check

    request = Client.request

    def checked(self, **environ):
        response = request(self, **environ)
        api_answer_check(response)
        return response

    patch = pytest.MonkeyPatch()
    patch.setattr(Client, "request", checked)
    yield
    patch.undo()
