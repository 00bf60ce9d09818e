"""A PEMS (HxGN EAM) simulator serving the contract in PEMS-API.md.

It holds generated PFA rows in memory, answers the grid, count and record
endpoints over HTTP exactly like a tenant would (both response shapes, cursor
paging with a row cap, typed filters, sessions, the error variants), and lets
tests and demos change data and inject faults, in-process or through the
``/_sim/`` control endpoints. It deliberately knows nothing about Django.
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
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import chain
from operator import itemgetter
from typing import Any
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import orjson

logger = logging.getLogger(__name__)

DEFAULT_TENANT = "PEMS_DEMO"
DEFAULT_USERNAME = "pfasync"
DEFAULT_PASSWORD = "pfasync-demo"
DEFAULT_API_KEY = "pfasync-demo-key"
DEFAULT_TIME_ZONE = "America/Chicago"

GRID_NAME = "CUPFAG"
GRID_ID = "100541"
API_PREFIX = "/axis/restservices/"
NO_SESSION_EXCEPTION = "com.dstm.mp.businessprocess.NoSessionException"

# Section 2 of the contract, in grid order, plus one tenant-specific column
# that a client must keep although it does not know it.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("pfs_id", "VARCHAR"),
    ("pfs_a_org", "VARCHAR"),
    ("pfs_recordid", "NUMBER"),
    ("pfs_lastmodified", "DATETIME"),
    ("pfs_f_area", "VARCHAR"),
    ("pfs_f_category", "VARCHAR"),
    ("pfs_f_catdesc", "VARCHAR"),
    ("pfs_f_class", "VARCHAR"),
    ("pfs_f_source", "VARCHAR"),
    ("pfs_f_dor", "VARCHAR"),
    ("pfs_f_rental", "DECIMAL"),
    ("pfs_f_purchase", "DECIMAL"),
    ("pfs_f_manufacturer", "VARCHAR"),
    ("pfs_f_model", "VARCHAR"),
    ("pfs_p_projcode", "VARCHAR"),
    ("pfs_equipment_tag", "VARCHAR"),
    ("pfs_p_startdate", "DATE"),
    ("pfs_p_enddate", "DATE"),
    ("pfs_f_startdate", "DATE"),
    ("pfs_f_enddate", "DATE"),
    ("pfs_a_startdate", "DATE"),
    ("pfs_a_enddate", "DATE"),
    ("pfs_f_actualized", "CHKBOOLEAN"),
    ("pfs_f_discontinued", "CHKBOOLEAN"),
    ("pfs_f_fundstrans", "CHKBOOLEAN"),
    ("pfs_udf_costcode", "VARCHAR"),
)
ALIASES: tuple[str, ...] = tuple(name for name, _ in COLUMNS)
COLUMN_TYPES: dict[str, str] = dict(COLUMNS)
INDEX: dict[str, int] = {name: i for i, name in enumerate(ALIASES)}
ID, ORG, RECORDID, LASTMOD = (INDEX[a] for a in ("pfs_id", "pfs_a_org", "pfs_recordid", "pfs_lastmodified"))
# Saved by the server on every write; a client may not set them through PATCH.
READ_ONLY_ALIASES = frozenset({"pfs_id", "pfs_a_org", "pfs_recordid", "pfs_lastmodified"})

OPERATORS = frozenset(
    {"=", "!=", "<", ">", "<=", ">=", "BEGINS", "ENDS", "CONTAINS", "NOTCONTAINS", "IN", "IS EMPTY", "NOT EMPTY"}
)
REQUEST_TYPES = frozenset({"LIST.DATA_ONLY.STORED", "LIST.HEAD_DATA.STORED", "LIST.COUNT.STORED"})
FAULT_KINDS = frozenset({"status", "hang", "truncate", "non_json", "reset", "empty", "oversize"})
FAULT_TARGETS = frozenset({"any", "grid", "count", "record"})
CORRUPTION_KINDS = ("bad_date", "bad_decimal", "missing_id", "bad_flag")
# Opt-in: values that break a parser or a numeric column rather than one field's format.
POISON_KINDS = ("huge_decimal", "huge_number", "lone_surrogate", "bad_utf8")
HUGE_DECIMAL = "123456789012345678901234567.12345"
HUGE_NUMBER = "9" * 5000
SHAPES = frozenset({"A", "B"})
AUTH_FAILURE_STATUSES = frozenset({400, 401, 500})

# ---------------------------------------------------------------------------
# Data generation
# ---------------------------------------------------------------------------

# (code, description, classes, (manufacturer, model) pairs, monthly rate, purchase price)
CATEGORIES: tuple[tuple[str, str, tuple[str, ...], tuple[tuple[str, str], ...], int, int], ...] = (
    (
        "CRANE",
        "Mobile Crane",
        ("CR-RT", "CR-AT", "CR-CRAWLER"),
        (("Liebherr", "LTM 1100-5.2"), ("Grove", "GMK5150L"), ("Grove", "RT880E"), ("Manitowoc", "MLC300")),
        42000,
        1450000,
    ),
    (
        "GEN",
        "Generator",
        ("GEN-25KVA", "GEN-100KVA", "GEN-250KVA"),
        (("Caterpillar", "XQ230"), ("Cummins", "C150D6"), ("Atlas Copco", "QAS 60")),
        3800,
        95000,
    ),
    (
        "EXC",
        "Hydraulic Excavator",
        ("EXC-20T", "EXC-35T", "EXC-MINI"),
        (("Caterpillar", "320"), ("Komatsu", "PC210LC-11"), ("Hitachi", "ZX350LC-6")),
        9500,
        410000,
    ),
    (
        "LTWR",
        "Light Tower",
        ("LT-DIESEL", "LT-SOLAR"),
        (("Generac", "MLT6SMD"), ("Atlas Copco", "HiLight V5+"), ("Wacker Neuson", "LTN6L")),
        900,
        18000,
    ),
    (
        "FORK",
        "Forklift / Telehandler",
        ("TH-10K", "TH-6K", "FL-5K"),
        (("JLG", "G10-55A"), ("Genie", "GTH-1056"), ("Caterpillar", "TH255C")),
        5200,
        160000,
    ),
    (
        "MEWP",
        "Aerial Work Platform",
        ("BOOM-60", "BOOM-80", "SCISSOR-19"),
        (("JLG", "600S"), ("Genie", "S-65"), ("Skyjack", "SJ3219")),
        2900,
        115000,
    ),
    (
        "COMP",
        "Air Compressor",
        ("AC-185CFM", "AC-375CFM"),
        (("Atlas Copco", "XAS 185"), ("Sullair", "185DPQ"), ("Doosan", "P185WDO")),
        1300,
        32000,
    ),
    (
        "WELD",
        "Welding Machine",
        ("WM-ENGINE", "WM-INVERTER"),
        (("Lincoln Electric", "Vantage 500"), ("Miller", "Big Blue 400")),
        1100,
        24000,
    ),
    (
        "TRUCK",
        "Pickup Truck",
        ("PU-HALF", "PU-3QTR"),
        (("Ford", "F-150"), ("Chevrolet", "Silverado 1500"), ("Ram", "1500")),
        1800,
        52000,
    ),
    ("DOZER", "Crawler Dozer", ("DZ-D6", "DZ-D8"), (("Caterpillar", "D6"), ("Komatsu", "D61PXi-24")), 14500, 520000),
    ("LOADER", "Wheel Loader", ("WL-MED", "WL-LRG"), (("Caterpillar", "950M"), ("Volvo", "L120H")), 11000, 380000),
    ("PUMP", "Dewatering Pump", ("PMP-4IN", "PMP-6IN"), (("Godwin", "CD150M"), ("Pioneer", "PP64C12")), 2400, 41000),
    (
        "TRLR",
        "Office Trailer",
        ("TR-12X60", "TR-24X60"),
        (("Williams Scotsman", "12x60 Office"), ("Mobile Modular", "24x60 Double")),
        1500,
        88000,
    ),
)
AREAS = (
    "AREA-100 PROCESS",
    "AREA-200 UTILITIES",
    "AREA-300 TANK FARM",
    "AREA-400 MARINE",
    "AREA-500 PIPERACK",
    "SILO-CIVIL",
    "SILO-MECHANICAL",
    "SILO-E&I",
    "LAYDOWN-1",
    "CAMP",
)
COST_CODES = tuple(f"CC-{code}" for code in range(4100, 4900, 25))
RECORDID_STRINGS = tuple(str(n) for n in range(0, 21))

_DATE_ORIGIN = dt.date(2023, 1, 1)
_DATE_STRINGS = tuple((_DATE_ORIGIN + dt.timedelta(days=n)).strftime("%m/%d/%Y") for n in range(365 * 7))
_PLAN_START_FIRST = (dt.date(2024, 1, 1) - _DATE_ORIGIN).days
_PLAN_START_SPAN = (dt.date(2027, 6, 30) - dt.date(2024, 1, 1)).days


def format_decimal(value: float) -> str:
    """Format a decimal the way the grid shows it: ``5,500.00``."""
    return f"{value:,.2f}"


def format_datetime(moment: dt.datetime) -> str:
    """Format a tenant-local datetime as ``MM/DD/YYYY HH:mm``."""
    return moment.strftime("%m/%d/%Y %H:%M")


def generate_rows(org: str, count: int, *, seed: int, reference: dt.datetime, start: int = 1) -> list[tuple[str, ...]]:
    """Generate ``count`` PFA rows for ``org``, identical for the same seed, org and count."""
    rng = random.Random(f"{seed}:{org}")
    rand = rng.random
    projects = tuple(f"{org}-PRJ-{100 + n * 7}" for n in range(12))
    today = (reference.date() - _DATE_ORIGIN).days
    reference_naive = reference.replace(tzinfo=None, second=0, microsecond=0)
    minutes_per_year = 365 * 24 * 60
    rates: dict[int, str] = {}
    dates = _DATE_STRINGS
    rows = []
    for number in range(start, start + count):
        code, description, classes, models, rate, price = CATEGORIES[int(rand() * len(CATEGORIES))]
        manufacturer, model = models[int(rand() * len(models))]
        rental = rand() < 0.75
        # Round to 25 so that equal amounts share one string object.
        amount = int((rate if rental else price) * (0.6 + rand() * 0.8) / 25) * 25
        money = rates.get(amount)
        if money is None:
            money = rates[amount] = format_decimal(amount)
        plan_start = _PLAN_START_FIRST + int(rand() * _PLAN_START_SPAN)
        plan_end = plan_start + 30 + int(rand() * 700)
        shift = 0 if rand() < 0.5 else int(rand() * 120) - 30
        forecast_start = plan_start + shift
        forecast_end = plan_end + shift + (int(rand() * 60) if rand() < 0.3 else 0)
        started = forecast_start <= today
        ended = forecast_end <= today
        discontinued = rand() < 0.04
        modified = reference_naive - dt.timedelta(minutes=1 + int(rand() * minutes_per_year))
        rows.append(
            (
                f"PFA-{number:07d}",
                org,
                RECORDID_STRINGS[1 + int(rand() * 20)],
                format_datetime(modified),
                AREAS[int(rand() * len(AREAS))],
                code,
                description,
                classes[int(rand() * len(classes))],
                "Rental" if rental else "Purchase",
                "BEO" if rand() < 0.3 else "PROJECT",
                money if rental else "",
                "" if rental else money,
                manufacturer,
                model,
                projects[int(rand() * len(projects))],
                f"{code}-{10000 + int(rand() * 89999)}" if started else "",
                dates[plan_start],
                dates[plan_end],
                dates[forecast_start],
                dates[forecast_end],
                dates[forecast_start] if started else "",
                dates[forecast_end] if ended else "",
                "-1" if ended else "0",
                "-1" if discontinued else "0",
                "-1" if rand() < 0.1 else "0",
                COST_CODES[int(rand() * len(COST_CODES))],
            )
        )
    return rows


def parse_orgs(text: str) -> dict[str, int]:
    """Parse ``RIO=50000,HOU=20000`` into ``{"RIO": 50000, "HOU": 20000}``; ValueError names the bad part."""
    orgs: dict[str, int] = {}
    for part in text.split(","):
        org, sep, count = part.strip().partition("=")
        org = org.strip()
        try:
            number = int(count.strip())
        except ValueError:
            number = -1
        if not sep or not org or number < 0:
            raise ValueError(f"bad organization spec {part.strip()!r}: expected ORG=COUNT, e.g. RIO=50000")
        orgs[org] = number
    return orgs


# ---------------------------------------------------------------------------
# Typed values, filters and sorting
# ---------------------------------------------------------------------------

_DATE_RE = re.compile(r"^\s*(\d{1,2})/(\d{1,2})/(\d{4})(?:\s+(\d{1,2}):(\d{2})(?::\d{2})?)?\s*$")
_date_cache: dict[str, int | None] = {}
_number_cache: dict[str, float | None] = {}


def date_key(value: str) -> int | None:
    """Turn ``MM/DD/YYYY[ HH:mm]`` into a sortable int (YYYYMMDDHHMM); None if empty or invalid."""
    key = _date_cache.get(value, -1)
    if key != -1:
        return key
    key = _parse_date_key(value)
    if len(_date_cache) < 2_000_000:
        _date_cache[value] = key
    return key


def _parse_date_key(value: str) -> int | None:
    if len(value) == 16 and value[10] == " " and value[13] == ":":
        # The canonical DATETIME: reuse the cached date part, since a 1M-row scan
        # meets hundreds of thousands of distinct timestamps but few distinct days.
        day = date_key(value[:10])
        hour, minute = value[11:13], value[14:16]
        if day is None or not (hour + minute).isascii() or not (hour + minute).isdigit():
            return None
        if int(hour) > 23 or int(minute) > 59:
            return None
        return day + int(hour) * 100 + int(minute)
    match = _DATE_RE.match(value)
    if not match:
        return None
    month, day, year, hour, minute = (int(part or 0) for part in match.groups())
    try:
        dt.datetime(year, month, day, hour, minute)
    except ValueError:
        return None
    return ((year * 100 + month) * 100 + day) * 10000 + hour * 100 + minute


def number_key(value: str) -> float | None:
    """Turn ``1,234.50`` into a float; None if empty or invalid."""
    key = _number_cache.get(value, -1.0)
    if key != -1.0:
        return key
    try:
        key = float(value.replace(",", "")) if value.strip() else None
    except ValueError:
        key = None
    if key is not None and key != key:  # NaN is not a number a tenant would hold
        key = None
    if len(_number_cache) < 2_000_000:
        _number_cache[value] = key
    return key


def text_key(value: str) -> str | None:
    """Order text by code point, as a tenant on a binary collation does; None if empty."""
    return value or None


def folded_text_key(value: str) -> str | None:
    """Text for case-insensitive matching; None if empty."""
    return value.lower() if value else None


def typed_key(column_type: str) -> Callable[[str], Any]:
    """Return the function that orders values of a column type for ``<``, ``>``, ``<=``, ``>=`` and sorts.

    Text orders by raw code point (``"Z" < "a"``), never case-folded, so that a ``pfs_id ASC``
    sort and a ``pfs_id > LASTKEY`` filter always agree, as keyset paging needs. Equality,
    ``IN`` and the text operators (BEGINS, CONTAINS, ...) stay case-insensitive.
    """
    if column_type in ("DATE", "DATETIME"):
        return date_key
    if column_type in ("DECIMAL", "NUMBER"):
        return number_key
    return text_key


class BadRequest(Exception):
    """A business/validation error: answered with HTTP 400 and an ErrorAlert."""

    def __init__(
        self, message: str, name: str = "com.dstm.mp.businessprocess.ValidationException", status: int = 400
    ) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.status = status


def _flag(value: Any) -> bool:
    """Read an EAM boolean flag (true/false, "-1"/"0", ...)."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip().lower() in ("true", "-1", "1", "y", "yes")


def _condition(alias: str, operator: str, value: str) -> Callable[[tuple[str, ...]], bool]:
    """Compile one filter entry into a row predicate.

    Empty values follow SQL NULL semantics: only ``IS EMPTY`` matches them,
    as a database-backed grid would behave.
    """
    index = INDEX[alias]
    if operator == "IS EMPTY":
        return lambda row: not row[index].strip()
    if operator == "NOT EMPTY":
        return lambda row: bool(row[index].strip())
    needle = value.lower()
    if operator == "BEGINS":
        return lambda row: row[index].lower().startswith(needle)
    if operator == "ENDS":
        return lambda row: bool(row[index]) and row[index].lower().endswith(needle)
    if operator == "CONTAINS":
        return lambda row: needle in row[index].lower()
    if operator == "NOTCONTAINS":
        return lambda row: bool(row[index]) and needle not in row[index].lower()
    key = typed_key(COLUMN_TYPES[alias])
    if key is text_key and operator in ("=", "!=", "IN"):
        key = folded_text_key
    if operator == "IN":
        wanted = set()
        for part in value.split(","):
            part_key = key(part.strip())
            if part_key is None:
                raise BadRequest(f"Invalid value {part.strip()!r} in IN list for alias {alias}")
            wanted.add(part_key)
        return lambda row: key(row[index]) in wanted
    target = key(value)
    if target is None:
        raise BadRequest(f"Invalid value {value!r} for alias {alias} ({COLUMN_TYPES[alias]})")
    compare: Callable[[Any, Any], bool] = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        ">=": lambda a, b: a >= b,
    }[operator]

    def predicate(row: tuple[str, ...]) -> bool:
        current = key(row[index])
        return current is not None and compare(current, target)

    return predicate


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def normalize_filters(body: dict[str, Any]) -> tuple[tuple[Any, ...], ...]:
    """Validate ADDON_FILTER / MULTIADDON_FILTERS into a hashable tuple of entries, in SEQNUM order."""
    raw: list[Any] = []
    multi = body.get("MULTIADDON_FILTERS")
    if multi is not None:
        if not isinstance(multi, dict):
            raise BadRequest("MULTIADDON_FILTERS must be an object with MADDON_FILTER")
        raw.extend(_as_list(multi.get("MADDON_FILTER")))
    single = body.get("ADDON_FILTER")
    addon = _as_list(single)
    entries = []
    for position, item in enumerate(raw):
        if not isinstance(item, dict):
            raise BadRequest("Each MADDON_FILTER entry must be an object")
        try:
            seqnum = float(item.get("SEQNUM", position + 1))
        except (TypeError, ValueError):
            raise BadRequest(f"Invalid SEQNUM {item.get('SEQNUM')!r}") from None
        entries.append((seqnum, position, item))
    entries.sort(key=lambda entry: (entry[0], entry[1]))
    ordered = [item for _, _, item in entries]
    if addon:
        # A single ADDON_FILTER sent with a multi filter narrows it further.
        for item in addon:
            if not isinstance(item, dict):
                raise BadRequest("ADDON_FILTER must be an object")
        if ordered:
            ordered[-1] = {**ordered[-1], "JOINER": "AND"}
            ordered = [{**item, "LPAREN": True} if n == 0 else item for n, item in enumerate(ordered)]
            ordered[-1] = {**ordered[-1], "RPAREN": True}
        ordered.extend({**item, "JOINER": "AND"} for item in addon)
    normalized = []
    for item in ordered:
        alias = str(item.get("ALIAS_NAME", "")).strip().lower()
        if alias not in INDEX:
            raise BadRequest(f"Unknown alias {item.get('ALIAS_NAME')!r} in filter on grid {GRID_NAME}")
        operator = " ".join(str(item.get("OPERATOR", "")).split()).upper()
        if operator not in OPERATORS:
            raise BadRequest(f"Invalid operator {item.get('OPERATOR')!r} for alias {alias}")
        value = item.get("VALUE", "")
        value = "" if value is None else str(value)
        joiner = str(item.get("JOINER") or "AND").strip().upper()
        if joiner not in ("AND", "OR"):
            raise BadRequest(f"Invalid joiner {item.get('JOINER')!r} for alias {alias}")
        normalized.append((alias, operator, value, joiner, _flag(item.get("LPAREN")), _flag(item.get("RPAREN"))))
    return tuple(normalized)


def compile_filters(entries: tuple[tuple[Any, ...], ...]) -> Callable[[tuple[str, ...]], bool] | None:
    """Build one predicate from normalized entries: AND binds tighter than OR, parentheses group."""
    if not entries:
        return None
    tokens: list[Any] = []
    for n, (alias, operator, value, joiner, lparen, rparen) in enumerate(entries):
        if lparen:
            tokens.append("(")
        tokens.append(_condition(alias, operator, value))
        if rparen:
            tokens.append(")")
        if n < len(entries) - 1:
            tokens.append(joiner)
    position = 0

    def parse_or() -> Callable[[tuple[str, ...]], bool]:
        nonlocal position
        parts = [parse_and()]
        while position < len(tokens) and tokens[position] == "OR":
            position += 1
            parts.append(parse_and())
        if len(parts) == 1:
            return parts[0]
        return lambda row: any(part(row) for part in parts)

    def parse_and() -> Callable[[tuple[str, ...]], bool]:
        nonlocal position
        parts = [parse_atom()]
        while position < len(tokens) and tokens[position] == "AND":
            position += 1
            parts.append(parse_atom())
        if len(parts) == 1:
            return parts[0]
        if len(parts) == 2:
            first, second = parts
            return lambda row: first(row) and second(row)
        return lambda row: all(part(row) for part in parts)

    def parse_atom() -> Callable[[tuple[str, ...]], bool]:
        nonlocal position
        if position >= len(tokens):
            raise BadRequest("Unbalanced LPAREN/RPAREN in filter")
        token = tokens[position]
        position += 1
        if token == "(":
            inner = parse_or()
            if position >= len(tokens) or tokens[position] != ")":
                raise BadRequest("Unbalanced LPAREN/RPAREN in filter")
            position += 1
            return inner
        if callable(token):
            return token
        raise BadRequest("Unbalanced LPAREN/RPAREN in filter")

    predicate = parse_or()
    if position != len(tokens):
        raise BadRequest("Unbalanced LPAREN/RPAREN in filter")
    return predicate


def is_and_chain(filters: tuple[tuple[Any, ...], ...]) -> bool:
    """Whether normalized entries are a flat AND chain (no OR, no parentheses): a row must pass each."""
    if any(lparen or rparen for *_, lparen, rparen in filters):
        return False
    # A joiner links an entry to the next one: the last entry's joiner links nothing.
    return not any(entry[3] == "OR" for entry in filters[:-1])


def split_keyset_bounds(
    filters: tuple[tuple[Any, ...], ...],
) -> tuple[tuple[tuple[Any, ...], ...], list[tuple[str, str]]] | None:
    """Split a flat AND chain into its other entries and its ``pfs_id >``/``>=`` bounds as
    (operator, value); None unless the filters are such a chain with at least one bound."""
    if not is_and_chain(filters):
        return None
    others, bounds = [], []
    for entry in filters:
        alias, operator, value = entry[:3]
        if alias == "pfs_id" and operator in (">", ">="):
            bounds.append((operator, value))
        else:
            others.append(entry)
    return (tuple(others), bounds) if bounds else None


def without_own_organization(filters: tuple[tuple[Any, ...], ...], organization: str) -> tuple[tuple[Any, ...], ...]:
    """A flat AND chain without its ``pfs_a_org =`` entries that name ``organization`` (equality
    ignores case): every row of an organization holds its code, so such an entry admits every row
    it is asked about. Other filters, and any asked of ``*``, come back as they are."""
    if organization == "*" or not is_and_chain(filters):
        return filters
    own = organization.lower()
    return tuple(
        entry
        for entry in filters
        if not (entry[0] == "pfs_a_org" and entry[1] == "=" and entry[2] and entry[2].lower() == own)
    )


def split_modified_since(
    filters: tuple[tuple[Any, ...], ...],
) -> tuple[tuple[tuple[Any, ...], ...], int, bool] | None:
    """Split a flat AND chain into its other entries and its narrowest lower bound on
    ``pfs_lastmodified`` (``>=`` or ``>``) as (date key, inclusive); None unless the filters are
    such a chain with such a bound, and a bound that does not parse leaves them to the general
    path, which rejects it."""
    if not is_and_chain(filters):
        return None
    bounds = []
    for position, (alias, operator, value, *_) in enumerate(filters):
        if alias == "pfs_lastmodified" and operator in (">=", ">"):
            bound = date_key(value)
            if bound is None:
                return None
            # At one stamp, ">" is the narrower bound.
            bounds.append((bound, operator == ">", position))
    if not bounds:
        return None
    bound, exclusive, position = max(bounds)
    return filters[:position] + filters[position + 1 :], bound, not exclusive


def normalize_sort(body: dict[str, Any]) -> tuple[str, bool]:
    """Validate ADDON_SORT into (alias, descending); default pfs_id ascending."""
    sort = body.get("ADDON_SORT")
    if isinstance(sort, list):
        if len(sort) > 1:
            raise BadRequest("Only one ADDON_SORT column is supported")
        sort = sort[0] if sort else None
    if not sort:
        return "pfs_id", False
    if not isinstance(sort, dict):
        raise BadRequest("ADDON_SORT must be an object")
    alias = str(sort.get("ALIAS_NAME", "")).strip().lower()
    if alias not in INDEX:
        raise BadRequest(f"Unknown alias {sort.get('ALIAS_NAME')!r} in sort on grid {GRID_NAME}")
    direction = str(sort.get("TYPE") or "ASC").strip().upper()
    if direction not in ("ASC", "DESC"):
        raise BadRequest(f"Invalid sort type {sort.get('TYPE')!r}")
    return alias, direction == "DESC"


def _sort_rows(rows: list[tuple[str, ...]], alias: str, descending: bool) -> list[tuple[str, ...]]:
    """Sort rows by one typed column; empty or unreadable values sort lowest, text by code point."""
    index = INDEX[alias]
    column_type = COLUMN_TYPES[alias]
    if column_type in ("DATE", "DATETIME"):

        def key(row: tuple[str, ...]) -> Any:
            return date_key(row[index]) or -1
    elif column_type in ("DECIMAL", "NUMBER"):

        def key(row: tuple[str, ...]) -> Any:
            value = number_key(row[index])
            return float("-inf") if value is None else value
    else:

        def key(row: tuple[str, ...]) -> Any:
            return row[index]

    return sorted(rows, key=key, reverse=descending)


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


# ---------------------------------------------------------------------------
# The simulator: data, sessions, faults, query engine
# ---------------------------------------------------------------------------


class RawJsonValue(str):
    """A cell value served as the exact bytes ``raw`` inside its JSON string, even bytes no JSON
    encoder would write (a lone surrogate escape, invalid UTF-8). As a str it is the readable text
    a lenient client would decode, with U+FFFD for what cannot be decoded."""

    raw: bytes

    def __new__(cls, readable: str, raw: bytes) -> RawJsonValue:
        value = super().__new__(cls, readable)
        value.raw = raw
        return value


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
    surrogate escapes, which _rows_json encodes back into those very bytes."""
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
        """The rows that need JSON escaping, each mapped to its escaped values."""
        return {row: _json_escaped(row) for row in map(self.rows.__getitem__, self.escape_keys)}

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
        # An unreadable stamp counts as -1, before every bound (as it sorts in _sort_rows).
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

    def corrupt_rows(self, org: str, count: int, kinds: Iterable[str] = CORRUPTION_KINDS) -> list[str]:
        """Make ``count`` existing rows malformed (persistently), the kinds taken in turn; returns
        the pfs_ids they had.

        CORRUPTION_KINDS break one field's format. POISON_KINDS, only when asked for, break more:
        ``huge_decimal`` (the amount has more digits than a decimal(18,4) or a 28-digit Decimal
        context hold), ``huge_number`` (a 5000-digit recordid), ``lone_surrogate`` (pfs_f_model is
        served as a ``\\ud800`` escape before its text) and ``bad_utf8`` (pfs_f_manufacturer is
        served with the bytes FF FE before its text). The last two are RawJsonValues: get_row and
        rows() read them as U+FFFD followed by the text.
        """
        kinds = tuple(kinds)
        known = CORRUPTION_KINDS + POISON_KINDS
        if not kinds or set(kinds) - set(known):
            raise ValueError(f"kinds must be among {', '.join(known)}")
        with self._lock:
            data = self._org(org)
            candidates = sorted(key for key in data.rows if not key.startswith("\x00"))
            if count > len(candidates):
                raise ValueError(f"cannot corrupt {count} rows: {org} has {len(candidates)}")
            self._corruptions += 1
            rng = random.Random(f"{self.seed}:{org}:corrupt:{self._corruptions}")
            chosen = sorted(rng.sample(candidates, count))
            for n, pfa_id in enumerate(chosen):
                values = dict(zip(ALIASES, data.rows[pfa_id]))
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
            rows = _sort_rows(rows, alias, descending)
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
                "DATARECORD": _rows_json(page, _ROW_PIECES_A),
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
            "DATA": {"ROW": _rows_json(page, _ROW_PIECES_B)},
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
            saved = self.update_row(org, pfa_id, changes)
        return {"PFA": {**saved, "recordid": saved["pfs_recordid"]}}


def _validate_value(alias: str, value: Any) -> str:
    """Check a PATCH value against its column type; decimals come back in grid format."""
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
        return format_decimal(number) if column_type == "DECIMAL" else text
    if column_type == "CHKBOOLEAN" and text not in ("-1", "0", "Y", "N"):
        raise BadRequest(f"Invalid check box value {text!r} for {alias}")
    return text


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------


# Pages of up to 10,000 rows x 26 cells are the hot path: joining each value
# between the pieces of a prebuilt row of JSON is many times faster than building
# dicts. A row's pieces are its JSON split around its values, in column order.
_ROW_PIECES_A = tuple(
    (
        '{"DATAFIELD":['
        + ",".join(
            f'{{"FIELDNAME":"{alias}","FIELDVALUE":"%s","DATATYPE":"{column_type}"}}' for alias, column_type in COLUMNS
        )
        + "]}"
    ).split("%s")
)
_ROW_PIECES_B = tuple(
    ('{"CELL":[' + ",".join(f'{{"ALIAS_NAME":"{alias}","VALUE":"%s"}}' for alias in ALIASES) + "]}").split("%s")
)
_ROWS_PER_CHUNK = 250


class _Chunks:
    """JSON already serialized, in pieces: like orjson.Fragment, but written to the socket
    as it is instead of being copied into the body."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts


def _rows_json(page: list[tuple[str, ...]], pieces: tuple[str, ...]) -> _Chunks:
    """A page's rows (values already JSON-escaped) as a JSON array.

    One join per few hundred rows keeps every buffer small enough to be reused:
    a single 20 MB string would be fresh memory on every request, which costs
    more to touch than to fill.
    """
    if not page:
        return _Chunks([b"[]"])
    head, *middle, tail = pieces
    # A row's first piece also closes the row before it, so one join covers many rows.
    before_values = (f"{tail},{head}", *middle)
    parts = []
    for start in range(0, len(page), _ROWS_PER_CHUNK):
        rows = page[start : start + _ROWS_PER_CHUNK]
        # Pieces and values alternate; slice assignment interleaves them without a loop per value.
        strings = [""] * (2 * len(before_values) * len(rows))
        strings[::2] = before_values * len(rows)
        strings[1::2] = chain.from_iterable(rows)
        parts.append("".join(strings).encode("utf-8", "surrogateescape"))
    # The first row has none before it to close.
    parts[0] = b"[" + parts[0].removeprefix(f"{tail},".encode())
    parts.append(f"{tail}]".encode())
    return _Chunks(parts)


# orjson escapes control characters in strings, so this byte in its output can only be a placeholder.
_PLACEHOLDER = orjson.Fragment(b"\x00")


def _json_chunks(payload: Any) -> list[bytes]:
    """Serialize an answer into the chunks of its body, each _Chunks value spliced in where it stands."""
    spliced: list[_Chunks] = []

    def placeholder(value: Any) -> orjson.Fragment:
        if isinstance(value, RawJsonValue):
            # A record's poisoned value: served as the grid serves it.
            return orjson.Fragment(b'"' + value.raw + b'"')
        if not isinstance(value, _Chunks):
            raise TypeError(f"{type(value).__name__} is not JSON serializable")
        spliced.append(value)
        return _PLACEHOLDER

    option = orjson.OPT_PASSTHROUGH_SUBCLASS
    head, *tails = orjson.dumps(payload, default=placeholder, option=option).split(b"\x00")
    chunks = [head]
    for value, tail in zip(spliced, tails, strict=True):
        chunks += value.parts
        chunks.append(tail)
    return chunks


def _envelope(result_data: Any, session_id: str | None = None, confirmation: Any = None) -> dict[str, Any]:
    return {
        "ErrorAlert": None,
        "ConfirmationAlert": confirmation,
        "Result": {"ResultData": result_data, "InfoAlert": None, "WarningAlert": None, "SessionID": session_id},
    }


def _error_body(name: str, message: str) -> dict[str, Any]:
    return {"ErrorAlert": [{"Name": name, "Message": message}], "ConfirmationAlert": None, "Result": None}


class _Handler(BaseHTTPRequestHandler):
    """Routes API and ``/_sim/`` control requests to the simulator."""

    protocol_version = "HTTP/1.1"
    server_version = "PEMS-Simulator/1.0"
    # A page goes out in several writes; Nagle's algorithm would hold each one back for
    # the client's delayed ACK, some 40 ms a page.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    # -- plumbing ---------------------------------------------------------------

    def _read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self,
        status: int,
        body: bytes | list[bytes],
        content_type: str = "application/json",
        extra: dict[str, str] | None = None,
    ) -> None:
        chunks = [body] if isinstance(body, bytes) else body
        self._flush_log()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(map(len, chunks))))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            for chunk in chunks:
                self.wfile.write(chunk)

    def _send_json(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        self._send(status, orjson.dumps(payload), extra=extra)

    def _dispatch(self, method: str) -> None:
        raw_path = urlsplit(self.path).path
        try:
            body = self._read_body()
            if raw_path.startswith("/_sim/") or raw_path == "/_sim":
                self._control(method, raw_path, body)
            else:
                self._api(method, raw_path, body)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. its read timeout during a "hang" fault).
            self.close_connection = True

    # -- API ----------------------------------------------------------------------

    def _api(self, method: str, path: str, raw: bytes) -> None:
        sim = self.server.simulator
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            payload = orjson.JSONDecodeError
        entry = {
            "method": method,
            "path": path,
            "headers": {
                name.lower(): "***" if name.lower() in ("authorization", "x-api-key") else value
                for name, value in self.headers.items()
            },
            "json": None if payload is orjson.JSONDecodeError else payload,
            "status": None,
        }
        self._pending_entry: dict[str, Any] | None = entry
        try:
            route, key = self._route(method, path)
            self._api_answer(sim, route, key, payload, entry)
        finally:
            self._flush_log()

    def _flush_log(self) -> None:
        # Logged before the answer goes out, so a client that has its answer
        # always finds its request in the log.
        entry, self._pending_entry = getattr(self, "_pending_entry", None), None
        if entry is not None:
            self.server.simulator._log_request(entry)

    def _route(self, method: str, path: str) -> tuple[str | None, str]:
        if path in (API_PREFIX + "grids", API_PREFIX + "griddata") and method == "POST":
            return path.rsplit("/", 1)[1], ""
        record_prefix = API_PREFIX + "pfa/"
        if path.startswith(record_prefix) and method in ("GET", "PATCH") and len(path) > len(record_prefix):
            return "pfa", path[len(record_prefix) :]
        return None, ""

    def _api_answer(self, sim: PemsSimulator, route: str | None, key: str, payload: Any, entry: dict[str, Any]) -> None:
        if route is None:
            entry["status"] = 404
            self._send_json(404, _error_body("NotFound", f"No service at {entry['method']} {entry['path']}"))
            return
        if route == "pfa":
            category = "record"
        elif isinstance(payload, dict) and str(payload.get("REQUEST_TYPE", "")).upper() == "LIST.COUNT.STORED":
            category = "count"
        else:
            category = "grid"
        fault = sim._take_fault(category)
        if fault and fault["kind"] == "hang":
            self.server.stopping.wait(fault["seconds"] or 0)
        if sim.latency:
            self.server.stopping.wait(sim.latency)
        if fault and fault["kind"] == "reset":
            entry["status"] = None
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if fault and fault["kind"] == "status":
            extra = {} if fault["retry_after"] is None else {"Retry-After": str(fault["retry_after"])}
            status = fault["status"]
            entry["status"] = status
            if fault["empty_body"]:
                self._send(status, b"", extra=extra)
            else:
                self._send_json(
                    status,
                    _error_body(
                        "com.dstm.mp.ServiceUnavailableException",
                        f"The server cannot process the request now (HTTP {status}).",
                    ),
                    extra=extra,
                )
            return
        if fault and fault["kind"] == "non_json":
            entry["status"] = 200
            self._send(200, b"<html>Service Unavailable</html>", content_type="text/html")
            return

        empty_page = fault is not None and fault["kind"] == "empty"
        status, result = self._api_result(sim, route, key, payload, empty_page=empty_page)
        chunks = _json_chunks(result)
        if fault and fault["kind"] == "oversize":
            # Leading whitespace: a client meets all of it before the answer's first byte.
            chunks.insert(0, b" " * fault["bytes"])
        entry["status"] = status
        if fault and fault["kind"] == "truncate":
            body = b"".join(chunks)
            self._flush_log()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) + 1024))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(status, chunks)

    def _api_result(
        self, sim: PemsSimulator, route: str, key: str, payload: Any, *, empty_page: bool = False
    ) -> tuple[int, Any]:
        headers = self.headers
        try:
            tenant = (headers.get("tenant") or "").strip()
            if not tenant:
                raise BadRequest("The tenant header is required.", name="com.dstm.mp.businessprocess.TenantException")
            if tenant != sim.tenant:
                raise BadRequest(f"Tenant {tenant} is not valid.", name="com.dstm.mp.businessprocess.TenantException")
            session_id = sim.authenticate(headers)
            if payload is orjson.JSONDecodeError:
                raise BadRequest("The request body is not valid JSON.")
            if route == "pfa":
                if self.command == "GET":
                    return 200, _envelope(sim.get_record(key), session_id)
                result = sim.patch_record(key, payload)
                return 200, _envelope(result, session_id, confirmation=[{"Name": "Save", "Message": "Record saved."}])
            organization = (headers.get("organization") or "").strip()
            if not organization:
                raise BadRequest(
                    "The organization header is required.",
                    name="com.dstm.mp.businessprocess.InvalidOrganizationException",
                )
            data, _ = sim.grid(payload, organization, "A" if route == "grids" else "B", empty_page=empty_page)
            return 200, _envelope(data, session_id)
        except BadRequest as error:
            return error.status, _error_body(error.name, error.message)

    # -- control ------------------------------------------------------------------

    def _control(self, method: str, path: str, raw: bytes) -> None:
        sim = self.server.simulator
        try:
            payload = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            self._send_json(400, {"error": "body is not valid JSON"})
            return
        parts = [unquote(part) for part in path.strip("/").split("/")[1:]]
        try:
            status, result = self._control_result(sim, method, parts, payload if isinstance(payload, dict) else {})
        except KeyError as error:
            status, result = 404, {"error": str(error.args[0] if error.args else error)}
        except (ValueError, TypeError) as error:
            status, result = 400, {"error": str(error)}
        self._send_json(status, result)

    def _control_result(
        self, sim: PemsSimulator, method: str, parts: list[str], payload: dict[str, Any]
    ) -> tuple[int, Any]:
        route = (method, parts[0] if parts else "", len(parts))
        if route == ("GET", "state", 1):
            return 200, sim.state()
        if route == ("GET", "requests", 1):
            return 200, {"requests": sim.requests}
        if route == ("POST", "rows", 1):
            return 201, {"row": sim.insert_row(_need(payload, "org"), _need(payload, "row"))}
        if route == ("GET", "rows", 3):
            row = sim.get_row(parts[1], parts[2])
            if row is None:
                raise KeyError(f"{parts[2]} not found in {parts[1]}")
            return 200, {"row": row}
        if route == ("PATCH", "rows", 3):
            return 200, {"row": sim.update_row(parts[1], parts[2], payload)}
        if route == ("DELETE", "rows", 3):
            sim.delete_row(parts[1], parts[2])
            return 200, {"deleted": True}
        if route == ("POST", "rows", 4) and parts[3] == "move":
            return 200, {"row": sim.move_row(parts[1], parts[2], str(_need(payload, "to")))}
        if route == ("POST", "orgs", 1):
            sim.add_organization(_need(payload, "org"), int(payload.get("count", 0)))
            return 201, sim.state()
        if route == ("POST", "config", 1):
            if "row_cap" in payload:
                sim.set_row_cap(payload["row_cap"])
            if "shape" in payload:
                sim.set_shape(payload["shape"])
            if "latency" in payload:
                sim.set_latency(payload["latency"])
            if "auth_failure_status" in payload:
                sim.set_auth_failure_status(payload["auth_failure_status"])
            return 200, sim.state()
        if route == ("POST", "faults", 1):
            options = {
                name: payload[name]
                for name in ("count", "status", "retry_after", "seconds", "target", "empty_body", "bytes")
                if payload.get(name) is not None
            }
            fault = sim.inject_fault(str(payload.get("kind")), **options)
            return 201, {"fault": fault, "faults": sim.faults}
        if route == ("DELETE", "faults", 1):
            sim.clear_faults()
            return 200, {"faults": []}
        if route == ("POST", "expire-sessions", 1):
            return 200, {"expired": sim.expire_sessions()}
        if route == ("POST", "corrupt", 1):
            kinds = payload.get("kinds") or CORRUPTION_KINDS
            return 200, {"pfs_ids": sim.corrupt_rows(_need(payload, "org"), int(_need(payload, "count")), kinds)}
        if route == ("POST", "touch", 1):
            touched = sim.touch_rows(
                _need(payload, "org"), _need(payload, "fraction"), seed=int(payload.get("seed", 1))
            )
            return 200, {"count": len(touched)}
        if route == ("POST", "reset", 1):
            sim.reset()
            return 200, sim.state()
        raise KeyError(f"no control endpoint {method} /_sim/{'/'.join(parts)}")


def _need(payload: dict[str, Any], name: str) -> Any:
    """A required control-request field; missing is a 400, not a 404."""
    if payload.get(name) in (None, ""):
        raise ValueError(f"{name} is required")
    return payload[name]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: PemsSimulator) -> None:
        self.simulator = simulator
        # Set on shutdown so hanging/slow requests stop waiting.
        self.stopping = threading.Event()
        super().__init__(address, _Handler)


class SimulatorServer:
    """Serves a PemsSimulator over HTTP from a daemon thread; a context manager."""

    def __init__(self, simulator: PemsSimulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.simulator = simulator
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> SimulatorServer:
        """Bind and serve in a background daemon thread."""
        self._server = _Server((self.host, self.port), self.simulator)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="pems-simulator", daemon=True
        )
        self._thread.start()
        logger.debug("PEMS simulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is None:
            return
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
