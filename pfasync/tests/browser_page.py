"""The static front end of the browser tests (frontend/index.html) and what drives it: the page served
from an origin of its own (a throwaway http.server), its URL, and the wait for its status to end."""

import contextlib
import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest

PAGE_FOLDER = Path(__file__).resolve().parent / "frontend"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)",
)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 (the stdlib's signature)
        pass


@contextlib.contextmanager
def page_served() -> Iterator[str]:
    """The page's own origin: http.server on a free port of 127.0.0.1, yielded as `http://127.0.0.1:<port>`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(PAGE_FOLDER)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def page_url(origin: str, *, api: str, username: str, password: str, rate: str, org: str = "") -> str:
    """The page that logs in to `api` (the API's base URL, `.../api`), edits a rental of `org` (else of the
    user's first organization) to the monthly rate `rate`, commits it and waits until PEMS has it."""
    query = {"api": api, "username": username, "password": password, "rate": rate}
    if org:
        query["org"] = org
    return f"{origin}/index.html?{urlencode(query)}"


def status_of(browser, *, ends: tuple[str, ...], timeout: float = 120) -> str:
    """The page's status once it starts with one of `ends` (`done`, `error`), waiting up to `timeout` s."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def ended(driver) -> str | bool:
        text = driver.find_element(By.ID, "status").text
        return text if text.startswith(ends) else False

    return WebDriverWait(browser, timeout, poll_frequency=0.5).until(ended)
