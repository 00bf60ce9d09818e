"""The simulated tenant's state: PFA rows per organization, sessions, faults and the query engine.

PemsSimulator answers the grid, count and record requests of the contract (docs/pems-api.md) from
rows held in memory: filtered, sorted and paged with a row cap, each query cached per data
version, keyset pages and incremental reads served without a scan of every row. Tests and demos
change its data (insert, save, delete, move, corrupt, touch) and its behaviour (row cap, response
shape, latency, injected faults) in-process or through the HTTP control endpoints.
"""

from __future__ import annotations

import array
import base64
import binascii
import bisect
import collections
import datetime as dt
import logging
import math
import random
import secrets
import threading
import time
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from operator import itemgetter
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import orjson

from mirror.save_rules import decimal_kept, save_problems
from mirror.simulator.data import (
    ALIASES,
    COLUMN_TYPES,
    COLUMNS,
    GRID_ID,
    GRID_NAME,
    ID,
    INDEX,
    LASTMOD,
    ORG,
    READ_ONLY_ALIASES,
    RECORDID,
    RawJsonValue,
    format_datetime,
    generate_rows,
)
from mirror.simulator.filters import (
    BadRequest,
    compile_filters,
    date_key,
    normalize_filters,
    normalize_sort,
    number_key,
    sort_rows,
    split_keyset_bounds,
    split_modified_since,
    without_own_organization,
)

logger = logging.getLogger(__name__)


DEFAULT_TENANT = "PEMS_DEMO"
DEFAULT_USERNAME = "pfasync"
DEFAULT_PASSWORD = "pfasync-demo"
DEFAULT_API_KEY = "pfasync-demo-key"
DEFAULT_TIME_ZONE = "America/Chicago"
NO_SESSION_EXCEPTION = "com.dstm.mp.businessprocess.NoSessionException"
REQUEST_TYPES = frozenset({"LIST.DATA_ONLY.STORED", "LIST.HEAD_DATA.STORED", "LIST.COUNT.STORED"})
FAULT_KINDS = frozenset({"status", "hang", "truncate", "non_json", "reset", "empty", "oversize"})
FAULT_TARGETS = frozenset({"any", "grid", "count", "record"})
CORRUPTION_KINDS = ("bad_date", "bad_decimal", "missing_id", "bad_flag")
# Opt-in: values that break a parser or a numeric column rather than one field's format.
POISON_KINDS = ("huge_decimal", "huge_number", "lone_surrogate", "bad_utf8", "hidden_id")
HUGE_DECIMAL = "123456789012345678901234567.12345"
HUGE_NUMBER = "9" * 5000
SHAPES = frozenset({"A", "B"})
AUTH_FAILURE_STATUSES = frozenset({400, 401, 500})


def _next_recordid(value: str) -> str:
    """The recordid a save gives: one more, or 1 when the old one is no number a save can count on
    (a poisoned ``huge_number`` overflows every integer type)."""
    number = number_key(value)
    if number is None or not math.isfinite(number):
        return "1"
    return str(int(number) + 1)


def _to_int(value: Any, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise BadRequest(f"Invalid {name} {value!r}")
    try:
        number = int(value) if isinstance(value, (int, float)) else int(str(value).strip().replace(",", ""))
    except ValueError:
        raise BadRequest(f"Invalid {name} {value!r}") from None
    if number < 1:
        raise BadRequest(f"Invalid {name} {value!r}: must be 1 or more")
    return number


def _needs_escape(row: tuple[str, ...]) -> bool:
    """Whether the row cannot be served as its plain values: JSON must escape one of them (orjson
    escapes with a backslash) or one is a RawJsonValue."""
    try:
        # Passing subclasses through makes orjson refuse a RawJsonValue instead of writing its text.
        return b"\\" in orjson.dumps(row, option=orjson.OPT_PASSTHROUGH_SUBCLASS)
    except orjson.JSONEncodeError:
        return True


def _json_escaped(row: tuple[str, ...]) -> tuple[str, ...]:
    """The row's values as they read inside JSON strings; a RawJsonValue's bytes are carried as
    surrogate escapes, which the HTTP layer encodes back into those very bytes."""
    return tuple(
        value.raw.decode("utf-8", "surrogateescape")
        if isinstance(value, RawJsonValue)
        else orjson.dumps(value).decode()[1:-1]
        for value in row
    )


class PageRows:
    """A page's rows (values already JSON-escaped) where they stand in a grid answer: the HTTP
    layer writes them as the JSON rows of the answer's shape, ``DATARECORD`` (A) or ``ROW`` (B)."""

    __slots__ = ("rows", "shape")

    def __init__(self, rows: list[tuple[str, ...]], shape: str) -> None:
        self.rows = rows
        self.shape = shape


class _Org:
    """The rows of one organization, keyed by pfs_id, with a lazily sorted key list and an index
    of the keys by ``pfs_lastmodified``. Every row holds the organization's code in ``pfs_a_org``."""

    def __init__(self, rows: Iterable[tuple[str, ...]], *, sorted_keys: list[str] | None = None) -> None:
        self.rows: dict[str, tuple[str, ...]] = {row[ID]: row for row in rows}
        self.sorted_keys = sorted_keys
        # The keys of the rare rows JSON must escape, kept on every write so that
        # serving a page need not check its values.
        self.escape_keys: set[str] = {key for key, row in self.rows.items() if _needs_escape(row)}
        # The keys of rows served with pfs_id blank, though sorted and filtered under their key
        # (a damaged record, docs/pems-api.md section 2).
        self.hidden_keys: set[str] = set()
        # Every storage key in the order of its row's stamp, beside the stamps: an index for
        # incremental reads. The keys written since it was built are in `restamped`, whatever
        # their stamp, and it is built again when they grow too many.
        self.stamps: array.array[int] | None = None
        self.stamp_keys: list[str] = []
        self.restamped: set[str] = set()
        self._index_stamps()

    def ordered(self) -> list[tuple[str, ...]]:
        if self.sorted_keys is None:
            self.sorted_keys = sorted(self.rows)
        rows = self.rows
        return [rows[key] for key in self.sorted_keys]

    def escaped_rows(self) -> dict[tuple[str, ...], tuple[str, ...]]:
        """The rows that need JSON escaping, each mapped to its escaped values; a row with a
        hidden key is served with pfs_id blank."""
        escaped = {row: _json_escaped(row) for row in map(self.rows.__getitem__, self.escape_keys)}
        for row in map(self.rows.__getitem__, self.hidden_keys):
            escaped[row] = _json_escaped((*row[:ID], "", *row[ID + 1 :]))
        return escaped

    def modified_since(self, bound: int, *, inclusive: bool) -> list[tuple[str, ...]]:
        """The rows whose ``pfs_lastmodified`` reads as a stamp at or after ``bound`` (after it, unless
        ``inclusive``), in the order of ``ordered()``: what filtering that list would keep."""
        if self.stamps is None:
            self._index_stamps()
        find = bisect.bisect_left if inclusive else bisect.bisect_right
        restamped, rows = self.restamped, self.rows
        keys = [key for key in self.stamp_keys[find(self.stamps, bound) :] if key not in restamped]
        for key in restamped:
            row = rows.get(key)
            stamp = None if row is None else date_key(row[LASTMOD])
            if stamp is not None and (stamp >= bound if inclusive else stamp > bound):
                keys.append(key)
        if len(keys) * 8 > len(rows):
            # Many rows: walking the sorted keys once costs less than sorting these.
            chosen = set(keys)
            if self.sorted_keys is None:
                self.sorted_keys = sorted(rows)
            return [rows[key] for key in self.sorted_keys if key in chosen]
        keys.sort()
        return [rows[key] for key in keys]

    def _index_stamps(self) -> None:
        keys = list(self.rows)
        # An unreadable stamp counts as -1, before every bound (as it sorts in sort_rows).
        stamps = [date_key(row[LASTMOD]) or -1 for row in self.rows.values()]
        order = sorted(range(len(keys)), key=stamps.__getitem__)
        self.stamp_keys = [keys[n] for n in order]
        self.stamps = array.array("q", [stamps[n] for n in order])
        self.restamped = set()

    def _restamp(self, key: str) -> None:
        if self.stamps is None:
            return
        self.restamped.add(key)
        if len(self.restamped) > 1024 + len(self.rows) // 32:
            # Each read would check too many rows one by one: the next one builds the index again.
            self.stamps, self.stamp_keys, self.restamped = None, [], set()

    def put(self, key: str, row: tuple[str, ...]) -> None:
        """Store a new row or replace one (rows are immutable tuples, never changed in place)."""
        if key not in self.rows:
            self.sorted_keys = None
        self.rows[key] = row
        self._restamp(key)
        if _needs_escape(row):
            self.escape_keys.add(key)
        else:
            self.escape_keys.discard(key)

    def remove(self, key: str) -> None:
        """Delete a row."""
        del self.rows[key]
        self._restamp(key)
        self.escape_keys.discard(key)
        self.hidden_keys.discard(key)
        self.sorted_keys = None


class PemsSimulator:
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

    # -- data control -------------------------------------------------------

    def now(self) -> str:
        """Current tenant-local time as ``MM/DD/YYYY HH:mm``."""
        return format_datetime(dt.datetime.now(self.time_zone))

    @property
    def data_version(self) -> int:
        """Grows on every data change; cached query results of older versions are stale."""
        return self._version

    def _bump(self) -> None:
        self._version += 1
        self._cache.clear()

    def _org(self, org: str) -> _Org:
        try:
            return self._orgs[org]
        except KeyError:
            raise KeyError(f"unknown organization {org!r}") from None

    @property
    def organizations(self) -> dict[str, int]:
        """Row count per organization."""
        with self._lock:
            return {org: len(data.rows) for org, data in self._orgs.items()}

    def add_organization(self, org: str, count: int) -> None:
        """Add an organization with ``count`` generated rows (deterministic per seed and org)."""
        if not org or org == "*":
            raise ValueError(f"invalid organization code {org!r}")
        started = time.perf_counter()
        rows = generate_rows(org, count, seed=self.seed, reference=self.reference_time)
        # Generated in key order.
        data = _Org(rows, sorted_keys=[row[ID] for row in rows])
        with self._lock:
            if org in self._orgs:
                raise ValueError(f"organization {org!r} already exists")
            self._orgs[org] = data
            self._bump()
        logger.info("Generated %d rows for %s in %.2f s", count, org, time.perf_counter() - started)

    def rows(self, org: str) -> list[dict[str, str]]:
        """All rows of an organization as dicts, sorted by pfs_id."""
        with self._lock:
            ordered = self._org(org).ordered()
        return [dict(zip(ALIASES, row)) for row in ordered]

    def get_row(self, org: str, pfa_id: str) -> dict[str, str] | None:
        """One row as a dict, or None."""
        with self._lock:
            data = self._orgs.get(org)
            row = data.rows.get(pfa_id) if data else None
        return dict(zip(ALIASES, row)) if row else None

    def _check_aliases(self, row: dict[str, Any]) -> None:
        unknown = sorted(set(row) - set(ALIASES))
        if unknown:
            raise ValueError(f"unknown aliases: {', '.join(unknown)}")

    def insert_row(self, org: str, row: dict[str, str]) -> dict[str, str]:
        """Insert a row as a PEMS user would: missing columns empty, recordid 1, modified now."""
        self._check_aliases(row)
        pfa_id = str(row.get("pfs_id") or "")
        if not pfa_id:
            raise ValueError("pfs_id is required")
        if pfa_id.startswith("\x00"):
            # Reserved for the storage keys of rows without an id, which must sort first.
            raise ValueError("pfs_id cannot start with NUL")
        values = {alias: "" if row.get(alias) is None else str(row[alias]) for alias in ALIASES}
        values.update(pfs_id=pfa_id, pfs_a_org=org, pfs_recordid="1", pfs_lastmodified=self.now())
        with self._lock:
            data = self._org(org)
            if pfa_id in data.rows:
                raise ValueError(f"{pfa_id} already exists in {org}")
            data.put(pfa_id, tuple(values[alias] for alias in ALIASES))
            self._bump()
        return values

    def update_row(self, org: str, pfa_id: str, changes: dict[str, str]) -> dict[str, str]:
        """Save changes like PEMS does: recordid + 1 and lastmodified now (unless given explicitly)."""
        self._check_aliases(changes)
        if "pfs_id" in changes and changes["pfs_id"] != pfa_id:
            raise ValueError("pfs_id cannot be changed")
        with self._lock:
            data = self._org(org)
            if pfa_id not in data.rows:
                raise KeyError(f"{pfa_id} not found in {org}")
            values = dict(zip(ALIASES, data.rows[pfa_id]))
            recordid = _next_recordid(values["pfs_recordid"])
            values.update({alias: "" if value is None else str(value) for alias, value in changes.items()})
            # Explicit values let tests stage rows "saved" at a chosen time.
            if "pfs_recordid" not in changes:
                values["pfs_recordid"] = recordid
            if "pfs_lastmodified" not in changes:
                values["pfs_lastmodified"] = self.now()
            values["pfs_a_org"] = org
            data.put(pfa_id, tuple(values[alias] for alias in ALIASES))
            self._bump()
        return values

    def delete_row(self, org: str, pfa_id: str) -> None:
        """Delete one row; KeyError if it does not exist."""
        with self._lock:
            data = self._org(org)
            if pfa_id not in data.rows:
                raise KeyError(f"{pfa_id} not found in {org}")
            data.remove(pfa_id)
            self._bump()

    def move_row(self, org: str, pfa_id: str, to_org: str) -> dict[str, str]:
        """Move a row to another organization as a PEMS user's save would: pfs_a_org becomes
        ``to_org``, recordid + 1, lastmodified now. KeyError if the row or an organization does
        not exist, ValueError if ``to_org`` already has the key."""
        with self._lock:
            source, target = self._org(org), self._org(to_org)
            if pfa_id not in source.rows:
                raise KeyError(f"{pfa_id} not found in {org}")
            if pfa_id in target.rows:
                raise ValueError(f"{pfa_id} already exists in {to_org}")
            values = list(source.rows[pfa_id])
            values[ORG] = to_org
            values[RECORDID] = _next_recordid(values[RECORDID])
            values[LASTMOD] = self.now()
            source.remove(pfa_id)
            target.put(pfa_id, tuple(values))
            self._bump()
        return dict(zip(ALIASES, values))

    def corrupt_rows(
        self, org: str, count: int, kinds: Iterable[str] = CORRUPTION_KINDS, *, pfa_ids: Iterable[str] | None = None
    ) -> list[str]:
        """Make ``count`` existing rows malformed (persistently), the kinds taken in turn; returns
        the pfs_ids they had. Each is saved as PEMS saves a row (recordid + 1, lastmodified now), so
        an incremental read meets it too.

        CORRUPTION_KINDS break one field's format. POISON_KINDS, only when asked for, break more:
        ``huge_decimal`` (the amount has more digits than a decimal(18,4) or a 28-digit Decimal
        context hold), ``huge_number`` (a 5000-digit recordid), ``lone_surrogate`` (pfs_f_model is
        served as a ``\\ud800`` escape before its text) and ``bad_utf8`` (pfs_f_manufacturer is
        served with the bytes FF FE before its text) and ``hidden_id`` (the row is served with
        pfs_id blank, but sorted, filtered and counted under its key, as PEMS does; get_row and
        rows() show the key). ``lone_surrogate`` and ``bad_utf8`` are RawJsonValues: get_row and
        rows() read them as U+FFFD followed by the text.

        ``pfa_ids``, when given, are the rows damaged (``count`` is then their number).
        """
        kinds = tuple(kinds)
        known = CORRUPTION_KINDS + POISON_KINDS
        if not kinds or set(kinds) - set(known):
            raise ValueError(f"kinds must be among {', '.join(known)}")
        with self._lock:
            data = self._org(org)
            candidates = sorted(key for key in data.rows if not key.startswith("\x00"))
            if pfa_ids is not None:
                candidates = sorted(set(pfa_ids) & set(candidates))
                if len(candidates) != count:
                    raise ValueError(f"{org} has {len(candidates)} of the {count} rows to corrupt")
            if count > len(candidates):
                raise ValueError(f"cannot corrupt {count} rows: {org} has {len(candidates)}")
            self._corruptions += 1
            rng = random.Random(f"{self.seed}:{org}:corrupt:{self._corruptions}")
            chosen = sorted(rng.sample(candidates, count))
            now = self.now()
            for n, pfa_id in enumerate(chosen):
                values = dict(zip(ALIASES, data.rows[pfa_id]))
                values["pfs_recordid"] = _next_recordid(values["pfs_recordid"])
                values["pfs_lastmodified"] = now
                kind = kinds[n % len(kinds)]
                key = pfa_id
                if kind == "bad_date":
                    values["pfs_f_startdate"] = "13/45/2025"
                elif kind == "bad_decimal":
                    column = "pfs_f_purchase" if values["pfs_f_source"] == "Purchase" else "pfs_f_rental"
                    values[column] = "1,2x4.5.0"
                elif kind == "bad_flag":
                    values["pfs_f_actualized"] = "X"
                elif kind == "huge_decimal":
                    column = "pfs_f_purchase" if values["pfs_f_source"] == "Purchase" else "pfs_f_rental"
                    values[column] = HUGE_DECIMAL
                elif kind == "huge_number":
                    values["pfs_recordid"] = HUGE_NUMBER
                elif kind == "lone_surrogate":
                    model = values["pfs_f_model"]
                    values["pfs_f_model"] = RawJsonValue("\ufffd" + model, b"\\ud800" + orjson.dumps(model)[1:-1])
                elif kind == "bad_utf8":
                    maker = values["pfs_f_manufacturer"]
                    raw = b"\xff\xfe" + orjson.dumps(maker)[1:-1]
                    values["pfs_f_manufacturer"] = RawJsonValue("\ufffd\ufffd" + maker, raw)
                elif kind == "hidden_id":
                    data.hidden_keys.add(pfa_id)
                else:
                    # The row stays in the grid without an id, so it needs another storage key.
                    values["pfs_id"] = ""
                    data.remove(pfa_id)
                    key = f"\x00{pfa_id}"
                data.put(key, tuple(values[alias] for alias in ALIASES))
            self._bump()
        return chosen

    def touch_rows(self, org: str, fraction: float, *, seed: int = 1) -> list[str]:
        """Save a deterministic ``fraction`` of an organization's rows as PEMS does on a save that
        changes no field (recordid + 1, lastmodified now); returns the pfs_ids it saved.

        One call does what thousands of single PATCHes would, so a benchmark can change 1% of a
        million rows between two syncs in well under a second.
        """
        fraction = float(fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be between 0 and 1")
        with self._lock:
            data = self._org(org)
            candidates = sorted(key for key in data.rows if not key.startswith("\x00"))
            rng = random.Random(f"{self.seed}:{org}:touch:{seed}")
            chosen = sorted(rng.sample(candidates, round(len(candidates) * fraction)))
            now = self.now()
            for pfa_id in chosen:
                values = list(data.rows[pfa_id])
                values[RECORDID] = _next_recordid(values[RECORDID])
                values[LASTMOD] = now
                data.put(pfa_id, tuple(values))
            if chosen:
                self._bump()
        return chosen

    # -- behaviour control --------------------------------------------------

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

    def expire_sessions(self) -> int:
        """Expire every session; returns how many there were."""
        with self._lock:
            count = len(self._sessions)
            self._sessions.clear()
        return count

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

    # -- auth -----------------------------------------------------------------

    def authenticate(self, headers: Any) -> str | None:
        """Check a request's session or credentials; returns the session id to report, if any."""
        session_id = (headers.get("sessionid") or "").strip()
        keep = (headers.get("keepsession") or "").strip().lower() == "true"
        with self._lock:
            if session_id:
                expires = self._sessions.get(session_id)
                if expires is None or expires < time.monotonic():
                    self._sessions.pop(session_id, None)
                    raise BadRequest(
                        "Your session has expired or is invalid. Please log in again.", name=NO_SESSION_EXCEPTION
                    )
                self._sessions[session_id] = time.monotonic() + self.session_ttl
                return session_id if keep else None
        if not self._credentials_ok(headers):
            raise BadRequest(
                "Authentication failed: invalid user name, password or API key.",
                name="com.dstm.mp.businessprocess.AuthenticationException",
                status=self.auth_failure_status,
            )
        if keep:
            new_id = secrets.token_hex(16)
            with self._lock:
                self._sessions[new_id] = time.monotonic() + self.session_ttl
            return new_id
        return None

    def _credentials_ok(self, headers: Any) -> bool:
        api_key = headers.get("x-api-key")
        if api_key:
            return api_key in self.api_keys
        authorization = headers.get("authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(sep) and user in self.users and secrets.compare_digest(self.users[user], password)

    # -- queries ----------------------------------------------------------------

    def query(
        self, organization: str, filters: tuple[tuple[Any, ...], ...], sort: tuple[str, bool]
    ) -> tuple[list[tuple[str, ...]], dict[tuple[str, ...], tuple[str, ...]]]:
        """Filtered and sorted rows for one query, cached per data version, and the JSON-escaped
        values of those among them that need it.

        A flat AND chain with a lower bound on ``pfs_lastmodified`` (an incremental read) starts
        from the organization's rows at or after that stamp, found by bisection, instead of
        scanning every row: the same rows in the same order as the scan would keep.
        """
        filters = without_own_organization(filters, organization)
        cache_key = (organization, filters, sort)
        with self._lock:
            if organization != "*" and organization not in self._orgs:
                raise BadRequest(
                    f"Organization {organization} is not valid for this user.",
                    name="com.dstm.mp.businessprocess.InvalidOrganizationException",
                )
            cached = self._cache.get(cache_key)
            if cached is not None and cached[0] == self._version:
                self._cache.move_to_end(cache_key)
                return cached[1], cached[2]
            version = self._version
            if organization == "*":
                orgs = [self._orgs[org] for org in sorted(self._orgs)]
            else:
                orgs = [self._orgs[organization]]
            modified_since = split_modified_since(filters)
            if modified_since is None:
                parts = [data.ordered() for data in orgs]
            else:
                filters, bound, inclusive = modified_since
                parts = [data.modified_since(bound, inclusive=inclusive) for data in orgs]
            snapshot = parts[0] if len(parts) == 1 else [row for part in parts for row in part]
            # Taken with the snapshot: a row saved since is a new tuple, not one of these.
            escaped = {row: values for data in orgs for row, values in data.escaped_rows().items()}
        # Rows are immutable tuples, so filtering the snapshot outside the lock is safe
        # and keeps other requests (and control calls) moving during a 1M-row scan.
        predicate = compile_filters(filters)
        rows = snapshot if predicate is None else [row for row in snapshot if predicate(row)]
        alias, descending = sort
        if organization == "*" or alias != "pfs_id" or descending:
            rows = sort_rows(rows, alias, descending)
        with self._lock:
            if self._version == version:
                self._cache[cache_key] = (version, rows, escaped)
                while len(self._cache) > 16:
                    self._cache.popitem(last=False)
        return rows, escaped

    def _select(
        self, organization: str, filters: tuple[tuple[Any, ...], ...], sort: tuple[str, bool]
    ) -> tuple[list[tuple[str, ...]], int, dict[tuple[str, ...], tuple[str, ...]]]:
        """A query's answer as ``rows[start:]``, with the JSON-escaped values as in ``query()``.

        A keyset page (sorted ``pfs_id ASC``, a flat AND chain with ``pfs_id >``/``>=`` bounds)
        bisects into the cached result of its other filters instead of scanning again, so every
        page of a keyset read shares one scan. The answer is the one ``query()`` would give:
        the result is sorted by the very key the bounds compare, and an empty pfs_id, which no
        bound admits, sorts lowest.
        """
        keyset = split_keyset_bounds(filters) if sort == ("pfs_id", False) else None
        if keyset is None:
            rows, escaped = self.query(organization, filters, sort)
            return rows, 0, escaped
        others, bounds = keyset
        rows, escaped = self.query(organization, others, sort)
        start, row_id = 0, itemgetter(ID)
        for operator, value in bounds:
            find = bisect.bisect_right if operator == ">" else bisect.bisect_left
            start = max(start, find(rows, value, key=row_id))
        return rows, start, escaped

    def grid(
        self, body: Any, organization: str, default_shape: str, *, empty_page: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """Answer a grid request body; returns (ResultData, is_count).

        ``empty_page`` (the ``empty`` fault) answers a data request with no rows that still
        claims more: the cursor does not advance.
        """
        if not isinstance(body, dict):
            raise BadRequest("Request body must be a JSON object")
        grid = body.get("GRID")
        if not isinstance(grid, dict):
            raise BadRequest("GRID is required")
        name = grid.get("GRID_NAME")
        grid_id = grid.get("GRID_ID")
        if name is None and grid_id is None:
            raise BadRequest("GRID_NAME or GRID_ID is required")
        if name is not None and str(name).strip().upper() != GRID_NAME:
            raise BadRequest(f"Grid {name} does not exist.", name="com.dstm.mp.businessprocess.InvalidGridException")
        if grid_id is not None and str(grid_id).strip() != GRID_ID:
            raise BadRequest(
                f"Grid id {grid_id} does not exist.", name="com.dstm.mp.businessprocess.InvalidGridException"
            )
        request_type = str(body.get("REQUEST_TYPE", "")).strip().upper()
        if request_type not in REQUEST_TYPES:
            raise BadRequest(f"Invalid REQUEST_TYPE {body.get('REQUEST_TYPE')!r}")
        wanted = _to_int(grid.get("NUMBER_OF_ROWS_FIRST_RETURNED"), "NUMBER_OF_ROWS_FIRST_RETURNED", self.row_cap)
        cursor = _to_int(grid.get("CURSOR_POSITION"), "CURSOR_POSITION", 1)
        filters = normalize_filters(body)
        compile_filters(filters)  # validate before touching data, even on a cache hit
        sort = normalize_sort(body)
        rows, start, escaped = self._select(organization, filters, sort)
        total = len(rows) - start
        shape = self.shape or default_shape
        if request_type == "LIST.COUNT.STORED":
            if shape == "A":
                return {"TOTAL-COUNT": str(total)}, True
            return {"GRID": {"GRIDID": GRID_ID, "GRIDNAME": GRID_NAME, "TOTAL-COUNT": str(total)}}, True
        first = start + cursor - 1
        page = rows[first : first + min(wanted, self.row_cap)]
        if escaped:
            # The page is served as it is but for these (usually no) rows.
            page = [escaped.get(row, row) for row in page]
        last = cursor - 1 + len(page)
        more = last < total
        if empty_page:
            page, last, more = [], cursor - 1, True
        metadata = {
            "CURRENTCURSORPOSITION": str(last),
            "MORERECORDPRESENT": "+" if more else "-",
            "CLIENTROWS": str(len(page)),
            "RECORDS": f"{len(page):,}",
            "SERVERTIMESTAMP": dt.datetime.now(self.time_zone).strftime("%m/%d/%Y %H:%M:%S"),
        }
        head = request_type == "LIST.HEAD_DATA.STORED"
        fields = [{"name": alias, "type": column_type} for alias, column_type in COLUMNS]
        if shape == "A":
            data: dict[str, Any] = {
                "DATARECORD": PageRows(page, "A"),
                "CURRENTCURSORPOSITION": str(last),
                "NEXTCURSORPOSITION": str(last + 1) if more else None,
                "RECORDS": f"{len(page):,}",
            }
            if head:
                data["METADATA"] = {"GRIDID": GRID_ID, "GRIDNAME": GRID_NAME, **metadata}
                data["FIELDS"] = fields
            return data, False
        grid_data: dict[str, Any] = {
            "GRIDID": GRID_ID,
            "GRIDNAME": GRID_NAME,
            "METADATA": metadata,
            "DATA": {"ROW": PageRows(page, "B")},
        }
        if head:
            grid_data["FIELDS"] = fields
        return {"GRID": grid_data}, False

    def _record_key(self, key: str) -> tuple[str, str]:
        pfa_id, sep, org = unquote(key).rpartition("#")
        if not sep or not pfa_id or not org:
            raise BadRequest(
                f"Record {unquote(key)} not found.", name="com.dstm.mp.businessprocess.NotFoundException", status=404
            )
        return pfa_id, org

    def get_record(self, key: str) -> dict[str, Any]:
        """Answer ``GET pfa/{id}%23{org}``: the record with every alias plus recordid."""
        pfa_id, org = self._record_key(key)
        row = self.get_row(org, pfa_id)
        if row is None:
            raise BadRequest(
                f"Record {pfa_id}#{org} not found.", name="com.dstm.mp.businessprocess.NotFoundException", status=404
            )
        return {"PFA": {**row, "recordid": row["pfs_recordid"]}}

    def patch_record(self, key: str, body: Any) -> dict[str, Any]:
        """Answer ``PATCH pfa/{id}%23{org}``: optimistic-concurrency save of the sent aliases."""
        pfa_id, org = self._record_key(key)
        if not isinstance(body, dict) or not isinstance(body.get("PFA"), dict):
            raise BadRequest('Request body must be {"PFA": {...}}')
        fields = dict(body["PFA"])
        recordid = fields.pop("recordid", None)
        changes: dict[str, str] = {}
        for alias, value in fields.items():
            name = alias.lower()
            if name not in INDEX:
                raise BadRequest(f"Unknown alias {alias!r} for PFA")
            if name in READ_ONLY_ALIASES:
                raise BadRequest(f"Field {alias} cannot be updated")
            changes[name] = _validate_value(name, value)
        with self._lock:
            row = self.get_row(org, pfa_id)
            if row is None:
                raise BadRequest(
                    f"Record {pfa_id}#{org} not found.",
                    name="com.dstm.mp.businessprocess.NotFoundException",
                    status=404,
                )
            if recordid is None or str(recordid).strip() != row["pfs_recordid"]:
                raise BadRequest(
                    "The record has been modified by another user. Please refresh and try again.",
                    name="com.dstm.mp.businessprocess.RecordModifiedException",
                )
            # PEMS's save rules, on the record as it would be saved: a refused save changes nothing.
            saved_row = {**row, **changes}
            problems = save_problems(
                {alias: _typed(alias, text) for alias, text in changes.items()},
                {alias: _typed(alias, text) for alias, text in saved_row.items() if alias in COLUMN_TYPES},
            )
            if problems:
                raise BadRequest("; ".join(f"{alias}: {problem}" for alias, problem in sorted(problems.items())))
            saved = self.update_row(org, pfa_id, changes)
        return {"PFA": {**saved, "recordid": saved["pfs_recordid"]}}


def _typed(alias: str, text: str) -> Any:
    """A valid grid value typed for the save rules: Decimal, date, text, or None if empty."""
    column_type = COLUMN_TYPES[alias]
    if column_type == "VARCHAR":
        return text
    if not text.strip():
        return None
    if column_type == "DECIMAL":
        return Decimal(text.replace(",", ""))
    if column_type == "DATE":
        try:
            return dt.datetime.strptime(text.strip(), "%m/%d/%Y").date()
        except ValueError:
            return None  # a damaged stored row: not this save's concern
    return text


def _validate_value(alias: str, value: Any) -> str:
    """Check a PATCH value against its column type; decimals come back in grid format, kept as
    PEMS keeps them (2 places, rounded half up), text trimmed."""
    text = "" if value is None else str(value).strip()
    column_type = COLUMN_TYPES[alias]
    if not text:
        return ""
    if column_type == "DATE" and (date_key(text) is None or len(text.split()) != 1):
        raise BadRequest(f"Invalid date {text!r} for {alias}: expected MM/DD/YYYY")
    if column_type in ("DECIMAL", "NUMBER"):
        number = number_key(text)
        if number is None:
            raise BadRequest(f"Invalid number {text!r} for {alias}")
        if column_type == "NUMBER":
            return text
        try:
            return f"{decimal_kept(Decimal(text.replace(',', ''))):,.2f}"
        except InvalidOperation:
            raise BadRequest(f"Invalid number {text!r} for {alias}") from None
    if column_type == "CHKBOOLEAN" and text not in ("-1", "0", "Y", "N"):
        raise BadRequest(f"Invalid check box value {text!r} for {alias}")
    return text
