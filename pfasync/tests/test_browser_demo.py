"""The browser front end against the service `make demo` starts (headless Chromium, through CORS).

The static page (frontend/index.html, served from an origin of its own) logs in to the demo as its
administrator, reads /api/auth/me, lists RIO's rentals, edits one's monthly rate, commits it and waits
until the edit is written. The service is scripts/demo.py as `make demo` runs it (embedded PostgreSQL,
simulator, gunicorn, qcluster), with the page's origin allowed by `--cors-origin`: the write is the
demo worker's, not the web server's. PEMS (the simulator) is then asked over HTTP for the row, and
the demo must stop on SIGTERM with exit 0 and leave nothing running.
"""

import json
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from pfasync.embedded_db import embedded_db_running, embedded_db_stop
from pfasync.tests.browser_page import needs_chromium, page_served, page_url, status_of

ROOT = Path(__file__).resolve().parent.parent.parent
RATE = "2468.25"

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


@dataclass
class DemoService:
    process: subprocess.Popen
    urls: dict  # the ready file: web_url, pems_url, admin_username, admin_password, pids...
    output: Path
    logs: Path
    pgdata: Path


@pytest.fixture
def page_origin():
    with page_served() as origin:
        yield origin


@pytest.fixture
def demo(tmp_path, page_origin):
    """scripts/demo.py, as `make demo` runs it, on a cluster, ports and logs of its own, small organizations,
    and the page's origin allowed to call the API."""
    ready, pgdata, logs = tmp_path / "demo.json", tmp_path / "pgdata", tmp_path / "logs"
    command = [sys.executable, "scripts/demo.py", "--pgdata", str(pgdata), "--logs", str(logs), "--web-port", "0"]
    command += ["--pems-port", "0", "--orgs", "RIO=300,HOU=100", "--ready-file", str(ready)]
    command += ["--cors-origin", page_origin]
    output = tmp_path / "demo.out"
    with open(output, "wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), output.read_text()[-3000:]
        yield DemoService(process, json.loads(ready.read_text()), output, logs, pgdata)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        embedded_db_stop(pgdata=pgdata)


def _simulator_row(pems_url: str, org: str, pfa_id: str) -> dict:
    with urllib.request.urlopen(f"{pems_url}/_sim/rows/{org}/{pfa_id}", timeout=30) as response:
        return json.loads(response.read())["row"]


@pytest.mark.timeout(600)
def test_a_page_on_another_origin_edits_through_the_demo_service_and_its_worker_writes_to_pems(
    browser, demo, page_origin
):
    from selenium.webdriver.common.by import By

    urls = demo.urls
    # Every process the demo started (gunicorn's workers, qcluster's, the simulator), to see them end.
    started = psutil.Process(demo.process.pid).children(recursive=True)
    assert {"web", "worker", "simulator"} <= set(urls["pids"])

    browser.get(
        page_url(
            page_origin,
            api=f"{urls['web_url']}/api",
            username=urls["admin_username"],
            password=urls["admin_password"],
            rate=RATE,
            org="RIO",
        )
    )
    status = status_of(browser, ends=("done", "error"), timeout=180)
    log = browser.find_element(By.ID, "log").text
    assert status == "done", f"{status}\n{log}\n{demo.output.read_text()[-2000:]}"

    assert f"Browser front ends on {page_origin} may call /api/ (CORS)." in demo.output.read_text()
    text = browser.find_element(By.TAG_NAME, "body").text
    assert f"{urls['admin_username']} sees HOU, RIO; may edit: true" in text
    assert " rental records in RIO" in text
    assert len(browser.find_elements(By.CSS_SELECTOR, "#records tr")) == 10  # RIO has hundreds of rentals
    edited = browser.find_element(By.ID, "edited")
    pfa_id, org = edited.get_attribute("data-pfa-id"), edited.get_attribute("data-org")
    assert org == "RIO" and edited.text.endswith(f"-> {RATE}00 (draft)")
    assert f"{pfa_id} written to PEMS: monthly rate {RATE}00" in text
    # Every call crossed origins: the page is on another port than the API.
    assert page_origin != urls["web_url"] and "POST /organizations/RIO/drafts/commit -> 200" in log

    # PEMS has the new value, read back from the simulator over HTTP.
    assert _simulator_row(urls["pems_url"], "RIO", pfa_id)["pfs_f_rental"] == "2,468.25"
    # The demo's worker (qcluster) ran the write, not the web server inline.
    assert "Processed 'synclog.tasks.write_after_commit' (write RIO)" in (demo.logs / "worker.log").read_text()
    assert "Processed " not in (demo.logs / "web.log").read_text()

    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(artifacts / "demo-frontend.png"))

    demo.process.send_signal(signal.SIGTERM)
    assert demo.process.wait(timeout=120) == 0
    assert "Stopped: simulator, web, worker, embedded PostgreSQL" in demo.output.read_text()
    assert [process for process in started if process.is_running()] == []
    assert not embedded_db_running(pgdata=demo.pgdata)
