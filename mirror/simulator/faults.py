"""The simulated tenant's behaviour knobs: row cap, answer shape, latency, how bad credentials are
answered, injected faults, and the log of the requests it received."""

from __future__ import annotations

from typing import Any

FAULT_KINDS = frozenset({"status", "hang", "truncate", "non_json", "reset", "empty", "oversize"})
FAULT_TARGETS = frozenset({"any", "grid", "count", "record"})
SHAPES = frozenset({"A", "B"})
AUTH_FAILURE_STATUSES = frozenset({400, 401, 500})


class SimulatorFaults:
    """The knobs of a `PemsSimulator` that tests turn, and what it can tell of its requests."""

    def set_row_cap(self, n: int) -> None:
        """Set the maximum rows a grid call returns."""
        if int(n) < 1:
            raise ValueError("row cap must be 1 or more")
        self.row_cap = int(n)

    def set_shape(self, shape: str | None) -> None:
        """Force response shape "A" or "B"; None = per endpoint (/grids A, /griddata B)."""
        if shape is not None and shape not in SHAPES:
            raise ValueError("shape must be 'A', 'B' or None")
        self.shape = shape

    def set_auth_failure_status(self, status: int) -> None:
        """Choose how bad credentials are answered: 401, or the 400/500 tenant variants."""
        if int(status) not in AUTH_FAILURE_STATUSES:
            raise ValueError("auth failure status must be 401, 400 or 500")
        self.auth_failure_status = int(status)

    def set_latency(self, seconds: float) -> None:
        """Delay every API request by ``seconds`` (0 to turn off)."""
        if float(seconds) < 0:
            raise ValueError("latency cannot be negative")
        self.latency = float(seconds)

    def inject_fault(
        self,
        kind: str,
        *,
        count: int = 1,
        status: int | None = None,
        retry_after: int | float | None = None,
        seconds: float | None = None,
        target: str = "any",
        empty_body: bool | None = None,
        bytes: int | None = None,  # noqa: A002 - the option's name in the control API
    ) -> dict[str, Any]:
        """Make the next ``count`` matching API requests fail in the given way.

        ``status`` answers ``status`` (default 503) with an EAM error body; a 500 has
        an empty body unless ``empty_body=False``. ``hang`` waits ``seconds`` before
        answering, ``truncate`` cuts the body short, ``non_json`` answers HTML,
        ``reset`` closes the connection without answering. ``empty`` answers a grid
        data request (never a count or a record, whatever the target) with no rows
        that still claims more, on the cursor asked for. ``oversize`` pads the answer
        with ``bytes`` (default 1,000,000) bytes of leading JSON whitespace.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if target not in FAULT_TARGETS:
            raise ValueError(f"unknown fault target {target!r}")
        if int(count) < 1:
            raise ValueError("count must be 1 or more")
        if kind == "empty" and target not in ("any", "grid"):
            raise ValueError("an empty fault applies to grid data requests: target must be 'grid' or 'any'")
        if kind == "oversize":
            bytes = 1_000_000 if bytes is None else int(bytes)
            if bytes < 1:
                raise ValueError("bytes must be 1 or more")
        if kind == "status":
            status = int(status or 503)
            if not 100 <= status <= 599:
                raise ValueError("status must be an HTTP status")
            if empty_body is None:
                empty_body = status == 500
        if kind == "hang" and seconds is None:
            seconds = 30.0
        fault = {
            "kind": kind,
            "count": int(count),
            "status": status,
            "retry_after": retry_after,
            "seconds": None if seconds is None else float(seconds),
            "target": target,
            "empty_body": bool(empty_body),
            "bytes": bytes,
        }
        with self._lock:
            self._faults.append(fault)
        return dict(fault)

    def clear_faults(self) -> None:
        """Remove every pending fault."""
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Faults, latency, row cap, shape and auth variant back to defaults; data is kept."""
        with self._lock:
            self._faults.clear()
            self.latency = 0.0
            self.row_cap = self.default_row_cap
            self.shape = None
            self.auth_failure_status = 401

    def _take_fault(self, category: str) -> dict[str, Any] | None:
        with self._lock:
            for fault in self._faults:
                if fault["target"] in ("any", category) and (fault["kind"] != "empty" or category == "grid"):
                    fault["count"] -= 1
                    if fault["count"] <= 0:
                        self._faults.remove(fault)
                    return dict(fault)
        return None

    @property
    def faults(self) -> list[dict[str, Any]]:
        """Pending faults."""
        with self._lock:
            return [dict(fault) for fault in self._faults]

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The last 1000 API requests received (secrets masked)."""
        with self._lock:
            return list(self._requests)

    def request_count(self, path_contains: str | None = None) -> int:
        """How many logged API requests have ``path_contains`` in their path."""
        return sum(1 for entry in self.requests if path_contains is None or path_contains in entry["path"])

    def _log_request(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._requests.append(entry)

    def state(self) -> dict[str, Any]:
        """A JSON-ready summary of data and settings."""
        with self._lock:
            return {
                "tenant": self.tenant,
                "orgs": {org: len(data.rows) for org, data in self._orgs.items()},
                "row_cap": self.row_cap,
                "shape": self.shape,
                "faults": [dict(fault) for fault in self._faults],
                "latency": self.latency,
                "auth_failure_status": self.auth_failure_status,
                "data_version": self._version,
                "sessions": len(self._sessions),
                "requests": len(self._requests),
                "time_zone": str(self.time_zone),
            }
