"""The grid request's filter and sort language, as a tenant reads it.

Filter entries (``ADDON_FILTER``, ``MULTIADDON_FILTERS``) are validated into hashable tuples and
compiled into row predicates: typed comparisons (dates, numbers, text by code point), EAM's
operators, ``AND`` binding tighter than ``OR``, parentheses. A request that breaks a rule raises
BadRequest, which the HTTP layer answers with a 400 and an ErrorAlert. The helpers at the end
recognise the AND chains a sync client sends (keyset bounds on ``pfs_id``, a lower bound on
``pfs_lastmodified``), which the simulator answers without scanning every row.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from mirror.simulator.data import COLUMN_TYPES, GRID_NAME, INDEX

OPERATORS = frozenset(
    {"=", "!=", "<", ">", "<=", ">=", "BEGINS", "ENDS", "CONTAINS", "NOTCONTAINS", "IN", "IS EMPTY", "NOT EMPTY"}
)


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


def sort_rows(rows: list[tuple[str, ...]], alias: str, descending: bool) -> list[tuple[str, ...]]:
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
