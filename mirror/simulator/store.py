"""The simulated tenant's rows: per organization, keyed by `pfs_id`, with the indexes a query uses
(the sorted keys, the stamps of incremental reads, the rows JSON must escape), and the changes tests
and demos make to them (insert, save, delete, move, corrupt, touch)."""

from __future__ import annotations

import array
import bisect
import datetime as dt
import logging
import math
import random
import time
from collections.abc import Iterable
from typing import Any

import orjson

from mirror.simulator.data import ALIASES, ID, LASTMOD, ORG, RECORDID, RawJsonValue, format_datetime, generate_rows
from mirror.simulator.filters import date_key, number_key

logger = logging.getLogger(__name__)

CORRUPTION_KINDS = ("bad_date", "bad_decimal", "missing_id", "bad_flag")
# Opt-in: values that break a parser or a numeric column rather than one field's format.
POISON_KINDS = ("huge_decimal", "huge_number", "lone_surrogate", "bad_utf8", "hidden_id")
HUGE_DECIMAL = "123456789012345678901234567.12345"
HUGE_NUMBER = "9" * 5000


def _next_recordid(value: str) -> str:
    """The recordid a save gives: one more, or 1 when the old one is no number a save can count on
    (a poisoned ``huge_number`` overflows every integer type)."""
    number = number_key(value)
    if number is None or not math.isfinite(number):
        return "1"
    return str(int(number) + 1)


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


class SimulatorData:
    """The data of a `PemsSimulator`: its organizations' rows and the changes made to them."""

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
