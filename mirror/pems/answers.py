"""Reading PEMS's answers: JSON bodies, error alerts, grid pages (rows, cursors, the key order) and
single records. A plain grid data page is decoded by `mirror.pems.fast`; anything else goes through
the general JSON decode here. Nothing here sends a request."""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from http.client import IncompleteRead
from typing import Any

import orjson
import requests
from urllib3.exceptions import ProtocolError

from mirror.pems.errors import PemsProtocolError
from mirror.pems.fast import DecodedPage
from mirror.records import pfa_keys, row_with_repeated_columns

# The longest PEMS error message kept: it is shown to users and stored with the run.
_MAX_MESSAGE_CHARS = 500


@dataclass
class GridPage:
    """One page of grid rows, the keys after `after` up to `last_key` (None: the start of the grid);
    `more` says whether PEMS has rows after it.

    `hidden_key_ranges` are the key ranges (low, high), both exclusive, None for no bound, in which
    this page or one before it read a row whose key the client cannot see (see `_visible_keys`):
    PEMS holds some key there that the page does not show."""

    number: int
    rows: list[dict[str, str]]
    after: str | None
    last_key: str | None
    more: bool
    server_date: datetime | None
    hidden_key_ranges: list[tuple[str | None, str | None]] = field(default_factory=list)


# A damaged record can reach the wire with `pfs_id` blank, yet PEMS sorts and filters it under the
# key it holds for it (docs/pems-api.md, section 2); a key that is not valid Unicode text cannot be
# sent back as a filter either. Such a row sits in the key order where the client cannot see, so it
# is not a key of the order nor a bound of the next page: the next page, asked for the keys after
# the last visible one, starts with it again, and is read past it (see `iter_pages`).


def _visible_keys(rows: list[dict[str, str]]) -> list[str]:
    """Each row's key as the client can page by it (the mirror's key, `pfa_keys`); "" for a row whose
    key it cannot see."""
    keys = pfa_keys(rows)
    try:
        "".join(keys).encode()
    except UnicodeEncodeError:  # some key is not valid text (a lone surrogate): hidden
        keys = [key if _is_text(key) else "" for key in keys]
    return keys


def _is_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _last_key(keys: list[str], after: str | None, number: int) -> str | None:
    """The page's last visible key (`after` if it has none), checking that each key is greater than
    the one before (from `after`). Rows without a visible key are not in the visible order."""
    last = after
    for key in keys:
        if not key:
            continue
        if last is not None and key <= last:
            raise PemsProtocolError(
                f"page {number} holds key {key!r} after {last!r}: PEMS did not return the keys in "
                "ascending order, so the read cannot tell which rows it has seen"
            )
        last = key
    return last


def _hidden_key_ranges(
    keys: list[str], after: str | None, *, hidden_before: bool, at_end: bool
) -> list[tuple[str | None, str | None]]:
    """The key ranges of a page (its visible `keys`, after `after`) that hold a row without a visible
    key; `hidden_before`: such rows were read after `after` already; `at_end`: the grid ends here."""
    ranges = []
    low, hidden = after, hidden_before
    for key in keys:
        if not key:
            hidden = True
            continue
        if hidden:
            ranges.append((low, key))
        low, hidden = key, False
    if hidden and at_end:
        ranges.append((low, None))
    return ranges


def _read_already(rows: list[dict[str, str]], keys: list[str], unseen_rows: list[dict[str, str]]) -> int:
    """How many of the first `rows` (without a visible key) are among `unseen_rows`, the rows
    without one read after the same bound: a page asked for the keys after the last visible one
    starts with those again."""
    left = collections.Counter(_row_identity(row) for row in unseen_rows)
    count = 0
    for row, key in zip(rows, keys, strict=True):
        identity = _row_identity(row)
        if key or not left[identity]:
            break
        left[identity] -= 1
        count += 1
    return count


def _row_identity(row: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(row.items()))


# --- response helpers ---------------------------------------------------------------------------


def _loads(content: bytes) -> Any:
    if not content:
        return None
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _loads_damaged(content: bytes) -> Any:
    """A body that is JSON but for damaged text: bytes that are not UTF-8, lone surrogate escapes or
    raw control characters inside strings, which orjson refuses. Such text decodes to strings
    holding lone surrogates, and the parser sets aside the rows that hold one; the rest of the
    page is read. None when the body is not JSON even so."""
    try:
        return json.loads(
            content.decode("utf-8", "surrogateescape"), strict=False, parse_float=_finite, parse_constant=_finite
        )
    except (ValueError, RecursionError):
        return None


def _finite(text: str) -> float:
    """A JSON number as orjson reads it: one beyond a double (or NaN, Infinity) is not JSON."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is not a finite number")
    return number


def _error_alert(payload: Any) -> tuple[str | None, str | None]:
    if not isinstance(payload, dict):
        return None, None
    alert = payload.get("ErrorAlert")
    if isinstance(alert, list):
        alert = alert[0] if alert else None
    if not isinstance(alert, dict):
        return None, None
    name = alert.get("Name")
    message = alert.get("Message")
    return (str(name)[:_MAX_MESSAGE_CHARS] if name else None), (str(message)[:_MAX_MESSAGE_CHARS] if message else None)


def _mentions(name: str | None, message: str | None, words: Sequence[str]) -> bool:
    text = f"{name or ''} {message or ''}".lower()
    return any(word in text for word in words)


def _status_text(status: int) -> str:
    """`HTTP 503 Service Unavailable`: the standard reason phrase, not the one the server sent."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _describe_network_error(exc: Exception, read_timeout: float) -> str:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return f"no answer within the {read_timeout:g} s read timeout"
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, IncompleteRead, ProtocolError)):
        return f"the answer was cut off ({type(exc).__name__})"
    if isinstance(exc, requests.exceptions.ContentDecodingError):
        return "the answer could not be decoded"
    return f"connection failed ({type(exc).__name__})"


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    when = _http_date(value)
    return None if when is None else max(0.0, (when - datetime.now(UTC)).total_seconds())


def _server_date(response: requests.Response) -> datetime | None:
    return _http_date(response.headers.get("Date"))


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)


def _parse_count(value: Any) -> int | None:
    text = str(value).replace(",", "").replace(" ", "").replace("\u00a0", "")
    if text.isascii() and text.isdigit():
        return int(text)
    return None


def _result_data(payload: dict) -> dict:
    result = payload.get("Result")
    if not isinstance(result, dict) or not isinstance(result.get("ResultData"), dict):
        name, message = _error_alert(payload)
        detail = f" (ErrorAlert {name}: {message})" if name or message else ""
        raise PemsProtocolError(f"the answer has no Result.ResultData object{detail}", pems_name=name)
    return result["ResultData"]


def _as_list(value: Any) -> list:
    # JSON converted from XML turns a one-element list into a bare object.
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    raise PemsProtocolError(f"expected a list of rows, got {type(value).__name__}")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _cursor(value: Any, what: str) -> int | None:
    if value is None or value == "":
        return None
    parsed = _parse_count(value)
    if parsed is None:
        raise PemsProtocolError(f"{what} {value!r} is not a whole number")
    return parsed


def _grid_rows(result_data: dict) -> tuple[list[dict[str, str]], int | None]:
    """Rows (alias -> value) and the next cursor position, whichever shape PEMS answered in."""
    if "DATARECORD" in result_data:
        rows = _cell_rows(_as_list(result_data["DATARECORD"]), "DATAFIELD", "FIELDNAME", "FIELDVALUE", "DATARECORD")
        return rows, _cursor(result_data.get("NEXTCURSORPOSITION"), "NEXTCURSORPOSITION")
    grid = result_data.get("GRID")
    if isinstance(grid, dict):
        data = grid.get("DATA")
        entries = _as_list(data.get("ROW") if isinstance(data, dict) else None)
        rows = _cell_rows(entries, "CELL", "ALIAS_NAME", "VALUE", "GRID.DATA.ROW")
        metadata = grid.get("METADATA") if isinstance(grid.get("METADATA"), dict) else {}
        return rows, _grid_next_cursor(metadata.get("MORERECORDPRESENT"), metadata.get("CURRENTCURSORPOSITION"))
    raise PemsProtocolError("the grid answer has neither ResultData.DATARECORD nor ResultData.GRID")


def _decoded_next_cursor(page: DecodedPage) -> int | None:
    """What `_grid_rows` makes of the cursor fields of the same page."""
    if page.shape == "A":
        return _cursor(page.next_position, "NEXTCURSORPOSITION")
    return _grid_next_cursor(page.more_records, page.current_position)


def _grid_next_cursor(more_records: Any, current: Any) -> int | None:
    """Shape B's next cursor position: the one after the current, while more records are present."""
    if more_records != "+":
        return None
    position = _cursor(current, "CURRENTCURSORPOSITION")
    return position + 1 if position is not None else None


def _cell_rows(entries: list, cells_key: str, name_key: str, value_key: str, what: str) -> list[dict[str, str]]:
    rows = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise PemsProtocolError(f"a {what} entry is not an object")
        cells = _as_list(entry.get(cells_key))
        if not all(isinstance(cell, dict) for cell in cells):
            raise PemsProtocolError(f"a {what} cell is not an object")
        row = {_text(cell.get(name_key)): _text(cell.get(value_key)) for cell in cells}
        if len(row) < len(cells):
            row = row_with_repeated_columns([(_text(cell.get(name_key)), _text(cell.get(value_key))) for cell in cells])
        rows.append(row)
    return rows


def _pfa_result(payload: dict) -> dict[str, str]:
    record = _result_data(payload).get("PFA")
    if not isinstance(record, dict):
        raise PemsProtocolError("the record answer has no Result.ResultData.PFA object")
    return {str(alias): _text(value) for alias, value in record.items()}
