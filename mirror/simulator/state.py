"""The simulated tenant: `PemsSimulator`, composed of its rows (`store`), its sessions
(`sessions`), its knobs and faults (`faults`), its grid answers (`grid`) and its record answers
(`records`).

PemsSimulator answers the grid, count and record requests of the contract (docs/pems-api.md) from
rows held in memory. Tests and demos change its data (insert, save, delete, move, corrupt, touch)
and its behaviour (row cap, response shape, latency, injected faults) in-process or through the
HTTP control endpoints.
"""

from __future__ import annotations

import collections
import datetime as dt
import threading
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo

from mirror.simulator.faults import SimulatorFaults
from mirror.simulator.grid import GridAnswers
from mirror.simulator.records import RecordAnswers
from mirror.simulator.sessions import SimulatorSessions
from mirror.simulator.store import SimulatorData, _Org

DEFAULT_TENANT = "PEMS_DEMO"
DEFAULT_USERNAME = "pfasync"
DEFAULT_PASSWORD = "pfasync-demo"
DEFAULT_API_KEY = "pfasync-demo-key"
DEFAULT_TIME_ZONE = "America/Chicago"


class PemsSimulator(SimulatorData, SimulatorSessions, SimulatorFaults, GridAnswers, RecordAnswers):
    """In-memory PEMS tenant: PFA rows per organization plus the knobs tests turn."""

    def __init__(
        self,
        orgs: dict[str, int] | None = None,
        *,
        seed: int = 1,
        tenant: str = DEFAULT_TENANT,
        users: dict[str, str] | None = None,
        api_keys: Iterable[str] | None = None,
        row_cap: int = 10000,
        session_ttl: float = 1800.0,
        time_zone: str = DEFAULT_TIME_ZONE,
        reference_time: dt.datetime | None = None,
    ) -> None:
        self.seed = seed
        self.tenant = tenant
        self.users = dict(users if users is not None else {DEFAULT_USERNAME: DEFAULT_PASSWORD})
        self.api_keys = set(api_keys if api_keys is not None else {DEFAULT_API_KEY})
        self.session_ttl = session_ttl
        self.time_zone = ZoneInfo(time_zone)
        # Generated history ends at the start of today (tenant time) unless pinned,
        # so a day's runs produce identical rows and nothing is "modified in the future".
        if reference_time is None:
            reference_time = dt.datetime.now(self.time_zone).replace(hour=0, minute=0, second=0, microsecond=0)
        self.reference_time = reference_time
        self.default_row_cap = row_cap
        self._lock = threading.RLock()
        self._orgs: dict[str, _Org] = {}
        self._version = 0
        self._cache: collections.OrderedDict[
            tuple[Any, ...], tuple[int, list[tuple[str, ...]], dict[tuple[str, ...], tuple[str, ...]]]
        ] = collections.OrderedDict()
        self._sessions: dict[str, float] = {}
        self._faults: list[dict[str, Any]] = []
        self._requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self._corruptions = 0
        self.row_cap = row_cap
        self.shape: str | None = None
        self.latency = 0.0
        self.auth_failure_status = 401
        for org, count in (orgs or {}).items():
            self.add_organization(org, count)
