"""The PEMS client: grid pages in, rows (alias -> string) out, one error type per failure kind.

Speaks the contract in docs/pems-api.md: both grid endpoints (`grids`, `griddata`), both response
shapes (`DATARECORD` and `GRID`), cursor paging, session reuse, retries with backoff, and the
single-record GET/PATCH used to write changes back. Rows come out as alias -> string dicts;
`mirror.records` types them. A plain grid data page is decoded by `mirror.pems_fast`; anything
else about an answer goes through the general JSON decode here.

This module does not touch the database or Django settings; callers build a `PemsSettings`.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from http.client import HTTPException, IncompleteRead
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import requests
from django.core.exceptions import ImproperlyConfigured
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ProtocolError

from mirror.pems_fast import DecodedPage, PageDecoder
from mirror.records import row_with_repeated_columns
from mirror.secrets import secret_register, secrets_scrub

logger = logging.getLogger("mirror.pems")

NO_SESSION_EXCEPTION = "com.dstm.mp.businessprocess.NoSessionException"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
ENDPOINTS = ("grids", "griddata")
# Rows asked for per grid call. A 5,000-row page is about 10 MB of JSON and some 30 MB once
# parsed, and the sync holds two; larger pages save little time (PEMS caps them anyway).
DEFAULT_PAGE_SIZE = 5_000
AUTH_TYPES = ("basic", "api_key")

# What a PEMS answer may weigh (see PemsSettings.max_body_bytes).
_BODY_BASE_BYTES = 1 << 20
_BODY_BYTES_PER_ROW = 16 << 10

# A zero delay would turn backoff into a hammer when jitter draws 0.
BACKOFF_FLOOR = 0.1
# Seconds one PEMS call may take with all its attempts, waits and backoff.
DEFAULT_CALL_DEADLINE = 300.0
# The longest PEMS error message kept: it is shown to users and stored with the run.
_MAX_MESSAGE_CHARS = 500

_NETWORK_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    IncompleteRead,
    ProtocolError,
)
# Anything else the HTTP stack raises for a request it could not send (an invalid header value, a
# bad URL, ...): not retried, and its text, which may quote a header, is scrubbed. (A bare OSError
# left is a network failure.)
_SEND_ERRORS = (requests.exceptions.RequestException, Urllib3Error, HTTPException, ValueError)
_AUTH_WORDS = ("authenticat", "credential", "login", "log in", "logon", "password", "unauthori")
_CONFLICT_WORDS = ("modified by another user", "changed by another user")


# --- errors -------------------------------------------------------------------------------------


class PemsError(Exception):
    """A PEMS call failed; `message` is PEMS's own text where it sent one.

    Its texts are scrubbed of every registered secret as it is made, so whatever stores, logs or
    shows one cannot leak a secret.
    """

    summary = "PEMS request failed"

    def __init__(self, message: str, *, pems_name: str | None = None, status: int | None = None) -> None:
        message = secrets_scrub(message)
        super().__init__(message)
        self.message = message
        self.pems_name = secrets_scrub(pems_name) if pems_name else pems_name
        self.status = status

    def __str__(self) -> str:
        details = []
        if self.status is not None:
            details.append(f"HTTP {self.status}")
        if self.pems_name:
            details.append(self.pems_name)
        where = f" ({', '.join(details)})" if details else ""
        return f"{self.summary}{where}: {self.message}"


class PemsAuthError(PemsError):
    """PEMS refused the credentials (or a fresh session expired at once)."""

    summary = "PEMS refused the credentials"


class PemsRequestError(PemsError):
    """PEMS rejected the request as invalid; retrying would not help."""

    summary = "PEMS rejected the request"


class PemsRecordConflict(PemsRequestError):
    """A PATCH was based on a `recordid` that is no longer current."""

    summary = "PEMS refused the change because the record was modified since it was read"


class PemsNotFound(PemsError):
    """The path or record does not exist (HTTP 404)."""

    summary = "PEMS has no such resource"


class PemsUnavailable(PemsError):
    """PEMS kept failing (overload, server fault, network) until the retries ran out."""

    summary = "PEMS is unavailable"

    def __init__(self, message: str, *, attempts: int, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.attempts = attempts


class PemsProtocolError(PemsError):
    """PEMS answered 200 with JSON the contract does not describe."""

    summary = "PEMS answered in a shape the client does not know"


# --- settings and value types -------------------------------------------------------------------


@dataclass(frozen=True)
class PemsSettings:
    """Where and how to reach one PEMS tenant's PFA grid."""

    base_url: str
    tenant: str
    organization: str
    endpoint: str = "grids"
    auth_type: str = "basic"
    username: str = ""
    # Password or API key; kept out of repr() so it cannot leak through logs or tracebacks.
    secret: str = field(default="", repr=False)
    grid_name: str = "CUPFAG"
    grid_id: str = "100541"
    page_size: int = DEFAULT_PAGE_SIZE
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    time_zone: str = "UTC"
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    # A call's attempts, waits and backoff together never take longer.
    call_deadline: float = DEFAULT_CALL_DEADLINE

    def __post_init__(self) -> None:
        missing = [name for name in ("base_url", "tenant", "organization") if not getattr(self, name)]
        if self.auth_type == "basic" and not self.username:
            missing.append("username")
        if not self.secret:
            missing.append("secret")
        if missing:
            raise ImproperlyConfigured(f"PEMS settings are missing: {', '.join(missing)}.")
        if self.endpoint not in ENDPOINTS:
            raise ImproperlyConfigured(f"PEMS endpoint {self.endpoint!r} is not one of {ENDPOINTS}.")
        if self.auth_type not in AUTH_TYPES:
            raise ImproperlyConfigured(f"PEMS auth_type {self.auth_type!r} is not one of {AUTH_TYPES}.")
        if self.page_size < 1 or self.max_attempts < 1:
            raise ImproperlyConfigured("PEMS page_size and max_attempts must be at least 1.")
        if not self.call_deadline > 0:
            raise ImproperlyConfigured(f"PEMS call_deadline {self.call_deadline!r} must be more than 0 seconds.")
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ImproperlyConfigured(f"PEMS time_zone {self.time_zone!r} is not an IANA zone name.") from None

    @property
    def zone(self) -> ZoneInfo:
        """The tenant's time zone."""
        return ZoneInfo(self.time_zone)

    @property
    def max_body_bytes(self) -> int:
        """The largest answer accepted: a grid row takes about 2 KB, so this leaves room eight times over."""
        return _BODY_BASE_BYTES + self.page_size * _BODY_BYTES_PER_ROW

    @property
    def grid_source(self) -> str:
        """Which grid these settings read: base URL, tenant and PEMS organization. A read watermark
        holds for that grid only."""
        return f"{self.base_url.rstrip('/')}|{self.tenant}|{self.organization}"


@dataclass(frozen=True)
class GridFilter:
    """One entry of MULTIADDON_FILTERS; a grid call's filters must all hold (they are joined by AND)."""

    alias: str
    operator: str
    value: str = ""


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
    """Each row's key as the client can page by it; "" for a row whose key it cannot see."""
    keys = [row.get("pfs_id") or "" for row in rows]
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


def organization_filter(org_code: str) -> GridFilter:
    """Filter the grid to one organization's rows."""
    return GridFilter("pfs_a_org", "=", org_code)


def modified_since_filter(since: datetime, *, time_zone: ZoneInfo, until: datetime | None = None) -> GridFilter:
    """Filter to rows saved at or after `since` (aware), in the tenant's minute-precision local time.

    PEMS compares wall-clock times. Where the clock was set back between `since` and `until` (the
    hour repeated when daylight saving ends), a row saved after the change carries an earlier stamp
    than one saved before it, so the bound is the earliest wall-clock reading of that window.
    """
    local = _earliest_wall_time(since, until or since, time_zone)
    # Rounding down keeps the boundary minute in: PEMS stores no seconds.
    return GridFilter("pfs_lastmodified", ">=", local.strftime("%m/%d/%Y %H:%M"))


def _earliest_wall_time(start: datetime, end: datetime, zone: ZoneInfo) -> datetime:
    """The earliest wall-clock reading in `zone` from `start` to `end` (aware): `start`'s, or the
    reading just after a moment the clock was set back, found to the minute."""
    earliest = start.astimezone(zone).replace(tzinfo=None)
    step = timedelta(hours=1)  # zones change their offset at most once in an hour
    moment = start
    while moment < end:
        following = min(moment + step, end)
        if following.astimezone(zone).utcoffset() < moment.astimezone(zone).utcoffset():
            before, after = moment, following
            while after - before > timedelta(minutes=1):
                middle = before + (after - before) / 2
                if middle.astimezone(zone).utcoffset() < before.astimezone(zone).utcoffset():
                    after = middle
                else:
                    before = middle
            earliest = min(earliest, after.astimezone(zone).replace(tzinfo=None))
        moment = following
    return earliest


# --- call outcomes ------------------------------------------------------------------------------
#
# Each PEMS call (one request with all its attempts, waits and backoff) ends in one outcome: "ok",
# "retried" (ok after failed attempts), "4xx" (refused: credentials, a bad request, no such record,
# 429 until the retries ran out, or a request that could not be sent), "5xx" (PEMS failed, or
# answered what the contract does not describe) or "timeout" (no answer: timeouts, lost connections,
# the call's deadline). The call observer, when one is registered (the ops app registers one in
# its `AppConfig.ready` to count calls for /metrics; this app names no observer), receives it with
# the call's seconds; whatever it does, the call goes on as before.

call_observer: Callable[[str, float], None] | None = None


def call_observer_register(observer: Callable[[str, float], None] | None) -> None:
    """Make `observer` the one that receives each PEMS call's outcome and seconds (None: none)."""
    global call_observer
    call_observer = observer


def _call_outcome(error: PemsError | None, attempts: int) -> str:
    if error is None:
        return "ok" if attempts <= 1 else "retried"
    if isinstance(error, PemsUnavailable) and error.status is None:
        return "timeout"
    if error.status is not None and 400 <= error.status < 500:
        return "4xx"
    if error.status is None and not isinstance(error, PemsUnavailable | PemsProtocolError):
        return "4xx"  # the request could not be sent
    return "5xx"


def _observed(send: Callable[..., Any]) -> Callable[..., Any]:
    """Reports each call of `send` (PemsClient._send) to `call_observer`."""

    def observed(client: PemsClient, *args: Any, **kwargs: Any) -> Any:
        observer = call_observer
        if observer is None:
            return send(client, *args, **kwargs)
        started = time.monotonic()
        client._attempts = 0
        error: PemsError | None = None
        try:
            return send(client, *args, **kwargs)
        except PemsError as failure:
            error = failure
            raise
        except BaseException:
            observer = None  # not a PEMS outcome (an interrupt, a bug): not counted
            raise
        finally:
            if observer is not None:
                try:
                    observer(_call_outcome(error, client._attempts), time.monotonic() - started)
                except Exception:
                    logger.debug("The PEMS call observer failed", exc_info=True)

    return observed


# --- one attempt's outcome ---------------------------------------------------------------------
#
# An attempt that fails for good raises its PemsError; these are the other ways it can end, which
# the retry policy in `PemsClient._send` acts on.


@dataclass(frozen=True)
class _Answered:
    """A 2xx answer the contract describes: the JSON object, or what `typed` made of it."""

    answer: Any
    response: requests.Response


@dataclass(frozen=True)
class _SessionExpired:
    """PEMS no longer knows the session: log in again and repeat the request."""

    pems_name: str
    message: str | None
    status: int


@dataclass(frozen=True)
class _Retryable:
    """A failure another attempt may mend: overload, a server fault, the network, a broken body."""

    failure: str
    status: int | None = None
    retry_after: float | None = None


_Outcome = _Answered | _SessionExpired | _Retryable


# --- the client ---------------------------------------------------------------------------------


class PemsClient:
    """A connection to one PEMS tenant; reuses one HTTP session and one PEMS session."""

    def __init__(
        self,
        settings: PemsSettings,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._owns_session = session is None
        self._http = session if session is not None else requests.Session()
        self._sleep = sleep
        self._clock = clock
        self._session_id: str | None = None
        self._root = f"{settings.base_url.rstrip('/')}/axis/restservices"
        # The Basic token is the password in another form: both are scrubbed from every text.
        self._basic_token = base64.b64encode(f"{settings.username}:{settings.secret}".encode()).decode("ascii")
        secret_register(settings.secret, *([self._basic_token] if settings.auth_type == "basic" else []))

    def __repr__(self) -> str:
        return f"<PemsClient {self.settings.tenant}/{self.settings.organization} at {self.settings.base_url}>"

    def __enter__(self) -> PemsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._owns_session:
            self._http.close()

    # grid reads

    def count(self, filters: Sequence[GridFilter] = ()) -> int:
        """Number of rows matching `filters`, from LIST.COUNT.STORED."""
        payload, _ = self._send("POST", self.settings.endpoint, self._grid_body("LIST.COUNT.STORED", filters))
        result_data = _result_data(payload)
        grid = result_data.get("GRID") if isinstance(result_data.get("GRID"), dict) else {}
        metadata = grid.get("METADATA") if isinstance(grid.get("METADATA"), dict) else {}
        for where in (result_data, grid, metadata):
            total = where.get("TOTAL-COUNT")
            if total is not None and total != "":
                parsed = _parse_count(total)
                if parsed is None:
                    raise PemsProtocolError(f"TOTAL-COUNT {total!r} is not a whole number")
                return parsed
        raise PemsProtocolError("the count answer carries no TOTAL-COUNT")

    def iter_pages(self, filters: Sequence[GridFilter] = ()) -> Iterator[GridPage]:
        """Yield the grid in `pfs_id` order, page by page, to its end.

        Each call asks for the rows after the last key already read (`pfs_id > last`), never for
        an offset: PEMS re-runs the query on every call, so a row deleted or moved on a page
        already read would shift every later offset and a row would be skipped. A page whose keys
        are not each greater than the one before is a PEMS error, and so is an empty page while
        PEMS says more rows follow (retried first, like a failed call). The first page is always
        yielded, even when empty, so the caller learns the server's clock.

        Rows without a visible key after the last key (see `_visible_keys`) come again at the start
        of the next page and are dropped there, so each row is yielded once. Only when a whole page
        holds nothing but such rows read already does the next call ask for a position, just past
        them, among the rows after that key.
        """
        last_key: str | None = None
        # Rows without a visible key read after `last_key`, while the pages start at the first row
        # after it (cursor 1); past them, `cursor` - 1 is how many there are.
        unseen_rows: list[dict[str, str]] = []
        cursor = 1
        number = 0
        decoder = PageDecoder()
        while True:
            bound = [GridFilter("pfs_id", ">", last_key)] if last_key is not None else []
            body = self._grid_body("LIST.DATA_ONLY.STORED", [*filters, *bound], sort=("pfs_id", "ASC"), cursor=cursor)
            number += 1
            rows, more, server_date = self._grid_page(body, decoder, number)
            keys = _visible_keys(rows)
            if unseen_rows and (repeated := _read_already(rows, keys, unseen_rows)):
                rows, keys = rows[repeated:], keys[repeated:]
            page = GridPage(
                number,
                rows,
                after=last_key,
                last_key=_last_key(keys, last_key, number),
                more=more,
                server_date=server_date,
            )
            hidden_before = bool(unseen_rows) or cursor > 1
            if hidden_before or not all(keys):
                page.hidden_key_ranges = _hidden_key_ranges(
                    keys, last_key, hidden_before=hidden_before, at_end=not more
                )
                if page.last_key != last_key:  # the next page starts after this one's last visible key
                    visible = max(index for index, key in enumerate(keys) if key)
                    unseen_rows, cursor = rows[visible + 1 :], 1
                elif cursor > 1:
                    cursor += len(rows)
                elif rows:
                    unseen_rows = unseen_rows + rows
                else:  # the page held only rows read already: the next starts past them
                    unseen_rows, cursor = [], 1 + len(unseen_rows)
            del rows
            if page.rows or number == 1 or page.hidden_key_ranges:
                yield page
            if not page.more:
                return
            last_key = page.last_key

    def _grid_page(
        self, body: dict[str, Any], decoder: PageDecoder, number: int
    ) -> tuple[list[dict[str, str]], bool, datetime | None]:
        """One grid page: its rows, whether PEMS says more follow, and the server's clock.

        Asking again for an empty page is part of the same call: one deadline covers it all.
        """
        started = self._clock()
        deadline = started + self.settings.call_deadline
        attempts = 0
        while True:
            attempts += 1
            answer, response = self._send("POST", self.settings.endpoint, body, typed=decoder.decode, deadline=deadline)
            if isinstance(answer, DecodedPage):
                rows, next_cursor = answer.rows, _decoded_next_cursor(answer)
            else:
                rows, next_cursor = _grid_rows(_result_data(answer))
            # Only `rows` lives on while the caller works on the page: the body and its parsed
            # form are released first.
            del answer
            more = next_cursor is not None
            if rows or not more:
                return rows, more, _server_date(response)
            failure = f"page {number} is empty although PEMS says more rows follow"
            delay, give_up = self._next_wait(attempts, None, started, deadline)
            if give_up:
                raise PemsProtocolError(f"{failure}; {give_up}")
            logger.warning("PEMS %s; asking again in %.2f s", failure, delay)
            self._sleep(delay)

    # single records

    def get_record(self, pfa_id: str, *, organization: str | None = None) -> dict[str, str]:
        """The current values of one PFA record, `recordid` included."""
        payload, _ = self._send("GET", self._record_path(pfa_id, organization))
        return _pfa_result(payload)

    def patch_record(
        self, pfa_id: str, recordid: str, changes: dict[str, str], *, organization: str | None = None
    ) -> dict[str, str]:
        """Save `changes` on a record read at `recordid`; returns the new `recordid` and `pfs_lastmodified`."""
        if "recordid" in changes:
            raise ValueError("pass the recordid as its own argument, not in changes")
        body = {"PFA": {"recordid": str(recordid), **changes}}
        # Retrying a PATCH after a lost answer is safe: if the first one landed, the recordid is
        # stale and PEMS answers with a conflict instead of applying the change twice.
        payload, _ = self._send("PATCH", self._record_path(pfa_id, organization), body)
        return _pfa_result(payload)

    # plumbing

    def _record_path(self, pfa_id: str, organization: str | None) -> str:
        org = organization or self.settings.organization
        if org == "*":
            raise ValueError("a record key needs a real organization code, not '*'")
        return f"pfa/{quote(pfa_id, safe='')}%23{quote(org, safe='')}"

    def _grid_body(
        self,
        request_type: str,
        filters: Sequence[GridFilter],
        *,
        sort: tuple[str, str] | None = None,
        cursor: int = 1,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "GRID": {
                "GRID_NAME": self.settings.grid_name,
                "GRID_ID": self.settings.grid_id,
                "NUMBER_OF_ROWS_FIRST_RETURNED": self.settings.page_size,
                # The first rows but past rows without a visible key (see `iter_pages`): a read
                # pages by key (`pfs_id >` the last one read).
                "CURSOR_POSITION": cursor,
            },
            "GRID_TYPE": {"TYPE": "LIST"},
            "REQUEST_TYPE": request_type,
        }
        if sort is not None:
            body["ADDON_SORT"] = {"ALIAS_NAME": sort[0], "TYPE": sort[1]}
        if filters:
            entries = [
                {
                    "SEQNUM": seqnum,
                    "ALIAS_NAME": grid_filter.alias,
                    "OPERATOR": grid_filter.operator,
                    "VALUE": grid_filter.value,
                    "JOINER": "AND",
                }
                for seqnum, grid_filter in enumerate(filters, start=1)
            ]
            body["MULTIADDON_FILTERS"] = {"MADDON_FILTER": entries}
        return body

    def _headers(self) -> dict[str, str]:
        headers = {
            "tenant": self.settings.tenant,
            "organization": self.settings.organization,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        if self._session_id:
            headers["sessionid"] = self._session_id
            return headers
        if self.settings.auth_type == "api_key":
            headers["X-API-KEY"] = self.settings.secret
        else:
            headers["Authorization"] = f"Basic {self._basic_token}"
        headers["keepsession"] = "true"
        return headers

    @_observed
    def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        typed: Callable[[bytes], Any] | None = None,
        deadline: float | None = None,
    ) -> tuple[Any, requests.Response]:
        """One PEMS call: attempts until one is answered; returns the answer and the response.

        The answer is the JSON object, or, when `typed` can decode a 2xx answer (it returns None
        when it cannot), what it made of it, which carries a `session_id`.

        An expired session is renewed once per call, without counting as a failed attempt. A
        failure another attempt may mend is retried with backoff; any other is raised at once.
        The attempts, waits and backoff together end by `deadline` (on the client's clock; default:
        `call_deadline` from now): each attempt waits for PEMS no longer than the time left, and a
        wait that would pass the deadline is not begun.
        """
        url = f"{self._root}/{path}"
        data = orjson.dumps(body) if body is not None else None
        started = self._clock()
        if deadline is None:
            deadline = started + self.settings.call_deadline
        attempts = 0
        renewed_session = False
        while True:
            left = deadline - self._clock()
            if left <= 0:
                raise PemsUnavailable(
                    f"{method} {path}: {self._gave_up(attempts, started)}", attempts=attempts, status=None
                )
            attempts += 1
            self._attempts = attempts  # for _observed
            outcome = self._attempt(method, path, url, data, timeout_left=left, typed=typed)
            if isinstance(outcome, _Answered):
                return outcome.answer, outcome.response
            if isinstance(outcome, _SessionExpired):
                self._session_id = None
                if renewed_session:
                    raise PemsAuthError(
                        self._scrub(outcome.message or "the session expired again right after logging in"),
                        pems_name=outcome.pems_name,
                        status=outcome.status,
                    )
                renewed_session = True
                # Logging in again is not a failed attempt; it must not eat into the retries.
                attempts -= 1
                logger.info("PEMS session expired; logging in again")
                continue
            delay, give_up = self._next_wait(attempts, outcome.retry_after, started, deadline)
            if give_up:
                raise PemsUnavailable(
                    f"{method} {path}: {outcome.failure}; {give_up}", attempts=attempts, status=outcome.status
                )
            logger.warning(
                "PEMS %s %s attempt %d of %d failed (status %s: %s); retrying in %.2f s",
                method,
                path,
                attempts,
                self.settings.max_attempts,
                outcome.status if outcome.status is not None else "none",
                outcome.failure,
                delay,
            )
            self._sleep(delay)

    def _attempt(
        self,
        method: str,
        path: str,
        url: str,
        data: bytes | None,
        *,
        timeout_left: float,
        typed: Callable[[bytes], Any] | None,
    ) -> _Outcome:
        """One request, waiting for PEMS no longer than `timeout_left`, and how it ended.

        A failure no other attempt can mend is raised: a request that cannot be sent, an answer
        larger than the page size allows, and whatever `_classify` raises.
        """
        timeout = (min(self.settings.connect_timeout, timeout_left), min(self.settings.read_timeout, timeout_left))
        try:
            response = self._http.request(method, url, headers=self._headers(), data=data, timeout=timeout, stream=True)
            content = self._read_body(response)
        except _NETWORK_ERRORS as exc:
            return _Retryable(_describe_network_error(exc, timeout[1]))
        except PemsError:
            raise
        except _SEND_ERRORS as exc:
            # `from None`: the original exception's text may hold a secret, and a chained
            # traceback would print it.
            raise PemsError(
                f"{method} {path}: the request could not be sent ({type(exc).__name__}: {self._scrub(str(exc))})"
            ) from None
        except OSError as exc:  # what is left of OSError is a network failure
            return _Retryable(_describe_network_error(exc, timeout[1]))
        return self._classify(method, response, content, typed)

    def _classify(
        self, method: str, response: requests.Response, content: bytes, typed: Callable[[bytes], Any] | None
    ) -> _Outcome:
        """What an answer means: answered, the session expired, or a failure worth another attempt
        (overload, a server fault, a body that is not JSON). A final failure is raised: refused
        credentials, a bad request, no such resource, a 2xx answer the contract does not describe."""
        status = response.status_code
        success = 200 <= status < 300
        if success and typed is not None and (answer := typed(content)) is not None:
            self._remember_session(answer.session_id)
            return _Answered(answer, response)
        payload = _loads(content)
        if payload is None and success:
            payload = _loads_damaged(content)
        if success and payload is not None:
            if not isinstance(payload, dict):
                raise PemsProtocolError("the answer is JSON but not an object", status=status)
            result = payload.get("Result")
            self._remember_session(result.get("SessionID") if isinstance(result, dict) else None)
            return _Answered(payload, response)
        name, message = _error_alert(payload)
        if status == 400 and name == NO_SESSION_EXCEPTION:
            return _SessionExpired(name, message, status)
        self._raise_for_status(status, name, message, method)
        failure = f"HTTP {status}"
        if message:
            failure += f" ({self._scrub(message)})"
        elif success or content:
            failure += " with a body that is not JSON"
        return _Retryable(failure, status, _retry_after(response.headers.get("Retry-After")))

    def _read_body(self, response: requests.Response) -> bytes:
        """The whole body, or PemsProtocolError once it is larger than `max_body_bytes`."""
        cap = self.settings.max_body_bytes
        length = _parse_count(response.headers.get("Content-Length", ""))
        too_large = PemsProtocolError(
            f"the answer is larger than {cap:,} bytes, the most a {self.settings.page_size:,}-row page may take"
        )
        if length is not None and length > cap:
            response.close()
            raise too_large
        # Read in pieces, so that an answer without a length (chunked) is refused once it is too large.
        chunks, size = [], 0
        for chunk in response.iter_content(1 << 20):
            size += len(chunk)
            if size > cap:
                response.close()
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    def _raise_for_status(self, status: int, name: str | None, message: str | None, method: str) -> None:
        """Raise the error for a final (non-retryable) answer; return for retryable ones.

        The error's text is PEMS's own ErrorAlert message, else only the status: never a body
        excerpt, since a connection may point at a host that is not PEMS.
        """
        text = self._scrub(message or _status_text(status))
        if status in (401, 403):
            raise PemsAuthError(text, pems_name=name, status=status)
        if (status == 400 or status >= 500) and _mentions(name, message, _AUTH_WORDS):
            raise PemsAuthError(text, pems_name=name, status=status)
        if status == 404:
            raise PemsNotFound(text, pems_name=name, status=status)
        if status in RETRYABLE_STATUSES or status >= 500 or 200 <= status < 300:
            return
        if method == "PATCH" and status == 400 and _mentions(name, message, _CONFLICT_WORDS):
            raise PemsRecordConflict(text, pems_name=name, status=status)
        raise PemsRequestError(text, pems_name=name, status=status)

    def _next_wait(
        self, attempts: int, retry_after: float | None, started: float, deadline: float
    ) -> tuple[float, str | None]:
        """The retry policy after a failed attempt: the wait before the next one, and why there is
        to be none (the attempts have run out, or the wait would pass the call's deadline)."""
        if attempts >= self.settings.max_attempts:
            return 0.0, f"gave up after {attempts} attempts"
        delay = self._backoff(attempts, retry_after)
        if self._clock() + delay >= deadline:
            return delay, self._gave_up(attempts, started)
        return delay, None

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = self.settings.backoff_max
        if retry_after is not None:
            return min(cap, max(BACKOFF_FLOOR, retry_after))
        # Full jitter spreads out clients that failed together.
        ceiling = min(cap, self.settings.backoff_base * 2 ** (attempt - 1))
        return max(BACKOFF_FLOOR, random.uniform(0, ceiling))

    def _gave_up(self, attempts: int, started: float) -> str:
        return (
            f"gave up after {attempts} attempts in {self._clock() - started:.1f} s "
            f"(a PEMS call may take {self.settings.call_deadline:g} s in all)"
        )

    def _remember_session(self, session_id: Any) -> None:
        if session_id:
            self._session_id = str(session_id)

    def _scrub(self, text: str) -> str:
        """`text` without the registered secrets, nor this client's PEMS session id."""
        text = secrets_scrub(text)
        if self._session_id and len(self._session_id) >= 4:
            text = text.replace(self._session_id, "***")
        return text


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
