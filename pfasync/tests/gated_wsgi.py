"""pfasync's WSGI application with one extra path for the graceful-restart tests (test_serve.py):
GET /_gate/<name> writes <GATE_DIR>/<name>.started, then answers only once <GATE_DIR>/<name>.open exists,
so a test holds a request in flight for exactly as long as it needs. Everything else is pfasync."""

import os
import time
from pathlib import Path

from pfasync.wsgi import application as pfasync_application


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if not path.startswith("/_gate/"):
        return pfasync_application(environ, start_response)
    gate = Path(os.environ["GATE_DIR"]) / path.removeprefix("/_gate/")
    gate.with_suffix(".started").write_text(str(os.getpid()))
    while not gate.with_suffix(".open").exists():
        time.sleep(0.02)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"served by {os.getpid()}".encode()]
