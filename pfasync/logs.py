"""Structured logs: which run a log line belongs to, and one JSON object per line (`LOG_FORMAT=json`).

A run's fields (`run_id`, `batch_id`, `organization`, `direction`) are set by `run_fields_logged`
for the code it wraps (`synclog.signals.run_log_context` enters it for a run: it lives here, in the
project package, so that the sync neither imports ops nor ops the sync's internals for it), and
`RunContextFilter` (on the console handler) puts them on every record logged meanwhile. The run's own thread finds them in a context variable. Its helper threads (the
PEMS read-ahead, the heartbeat) do not inherit context variables; they take the one run running
in their process, which is every run in a worker process or a `sync_pems` command. A thread of a
process running several runs at once logs without run fields rather than with a wrong run's.
"""

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

RUN_FIELDS = ("run_id", "batch_id", "organization", "direction")


@dataclass(frozen=True)
class RunFields:
    """What a log line says about the run it was logged in."""

    run_id: str
    batch_id: str
    organization: str
    direction: str


_current_run: ContextVar[RunFields | None] = ContextVar("pfasync_run", default=None)
_runs_lock = threading.Lock()
# The runs inside `run_fields_logged` in this process, each once per entry.
_process_runs: list[RunFields] = []


def current_run_fields() -> RunFields | None:
    """The run this code runs in: this context's, else the only run of this process, else None."""
    fields = _current_run.get()
    if fields is not None:
        return fields
    with _runs_lock:
        running = set(_process_runs)
    return running.pop() if len(running) == 1 else None


@contextmanager
def run_fields_logged(fields: RunFields) -> Iterator[bool]:
    """Log everything inside as part of the run `fields` describe; gives True, or False when this
    is already inside the same run's context (entering it again adds nothing)."""
    if _current_run.get() == fields:
        yield False
        return
    token = _current_run.set(fields)
    with _runs_lock:
        _process_runs.append(fields)
    try:
        yield True
    finally:
        with _runs_lock:
            _process_runs.remove(fields)
        _current_run.reset(token)


class RunContextFilter(logging.Filter):
    """Puts the fields of the run being logged in (see `current_run_fields`) on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "run_id", None) is None and (fields := current_run_fields()) is not None:
            for name, value in asdict(fields).items():
                setattr(record, name, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time` (UTC, ISO 8601), `level`, `logger`, `message`, the run's
    fields inside a run, and `exception` / `stack` when there is one.

    The text is taken as the handler's filters left it (the secret scrubber runs before), and every
    non-ASCII character is escaped, so a line is valid JSON in any encoding, damaged text included.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in RUN_FIELDS:
            if (value := getattr(record, name, None)) is not None:
                entry[name] = str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=True, default=str)
