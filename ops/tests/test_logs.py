"""Structured logs: with LOG_FORMAT=json every line is a JSON object, inside a run it carries the
run's fields (from the run's helper threads too), and no secret reaches it."""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from mirror.secrets import SecretScrubFilter
from mirror.simulator import DEFAULT_PASSWORD
from pfasync.logs import JsonFormatter, RunContextFilter
from synclog import worker
from synclog.models import PfaSyncLog
from synclog.runs import sync_claim

BASE_DIR = Path(django_settings.BASE_DIR)


@pytest.fixture
def json_lines():
    """Every record logged while the test runs, as the console handler writes it with LOG_FORMAT=json."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SecretScrubFilter())
    handler.addFilter(RunContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)


@pytest.mark.django_db
def test_json_lines_inside_a_run_carry_its_fields(rio, pems_server, json_lines):
    pems_server.simulator.inject_fault(
        "status", status=503, count=1, target="grid"
    )  # retried: logged by the read-ahead thread
    sync_log = sync_claim(organization=rio, trigger=PfaSyncLog.Trigger.SCHEDULE)
    worker.sync_execute_queued(str(sync_log.id))
    logging.getLogger("synclog").warning("After the run; the password is %s", DEFAULT_PASSWORD)

    lines = json_lines()
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    assert all(line["time"].endswith("Z") for line in lines)
    run_fields = {
        "run_id": str(sync_log.id),
        "batch_id": str(sync_log.batch_id),
        "organization": "RIO",
        "direction": "read",
    }
    started = next(line for line in lines if line["message"].startswith(f"Sync {sync_log.id} of RIO started"))
    completed = next(line for line in lines if " completed: 250 processed" in line["message"])
    retried = next(line for line in lines if line["logger"] == "mirror.pems" and "retrying" in line["message"])
    for line in (started, completed, retried):
        assert {name: line.get(name) for name in run_fields} == run_fields
    after = lines[-1]
    assert after["level"] == "WARNING" and after["logger"] == "synclog"
    assert "run_id" not in after
    assert DEFAULT_PASSWORD not in json.dumps(lines) and "the password is ***" in after["message"]


def test_an_exception_is_one_line_of_json(json_lines):
    try:
        raise ValueError("bad\nvalue \udcff")
    except ValueError:
        logging.getLogger("ops").exception("It failed")
    (line,) = json_lines()
    assert line["message"] == "It failed" and line["level"] == "ERROR"
    assert "ValueError: bad\nvalue" in line["exception"]


def manage_py_log(**env) -> str:
    """What `manage.py shell` writes to stderr when it logs one warning, with `env` set."""
    completed = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "import logging; logging.getLogger('synclog').warning('Hello %s', 42)",
        ],
        cwd=BASE_DIR,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stderr.strip().splitlines()[-1]


def test_log_format_json_turns_the_console_into_json_lines():
    line = json.loads(manage_py_log(LOG_FORMAT="json"))
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "synclog", "Hello 42")


def test_the_console_stays_plain_text_by_default():
    line = manage_py_log(LOG_FORMAT="")
    assert line.endswith("WARNING synclog: Hello 42") and not line.startswith("{")
