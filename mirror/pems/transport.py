"""How a PEMS call travels: the settings that say where and how to reach a tenant, headers and the
PEMS session, attempts with retries and backoff, the call's deadline, and the report of each call to
the observer registered with `call_observer_register`.

This module does not touch the database or Django settings; callers build a `PemsSettings`.
"""

from __future__ import annotations

import base64
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPException, IncompleteRead
from typing import Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import requests
from django.core.exceptions import ImproperlyConfigured
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ProtocolError

from mirror.pems.answers import (
    _describe_network_error,
    _error_alert,
    _loads,
    _loads_damaged,
    _mentions,
    _parse_count,
    _retry_after,
    _status_text,
)
from mirror.pems.errors import (
    PemsAuthError,
    PemsError,
    PemsNotFound,
    PemsProtocolError,
    PemsRecordConflict,
    PemsRequestError,
    PemsUnavailable,
)
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


# --- settings -----------------------------------------------------------------------------------


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


# --- call outcomes ------------------------------------------------------------------------------
#
# Each PEMS call (one request with all its attempts, waits and backoff) ends in one outcome: "ok",
# "retried" (ok after failed attempts), "4xx" (refused: credentials, a bad request, no such record,
# 429 until the retries ran out, or a request that could not be sent), "5xx" (PEMS failed, or
# answered what the contract does not describe) or "timeout" (no answer: timeouts, lost connections,
# the call's deadline). The call observer, when one is registered (the ops app registers one in its
# `AppConfig.ready` to count calls for /metrics; this app names no observer), receives it with the
# call's seconds; whatever it does, the call goes on as before.

_call_observer: Callable[[str, float], None] | None = None


def call_observer_register(observer: Callable[[str, float], None] | None) -> None:
    """Make `observer` the one that receives each PEMS call's outcome and seconds (None: none)."""
    global _call_observer
    _call_observer = observer


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
    """Reports each call of `send` (PemsClient._send) to the registered call observer."""

    def observed(client: PemsTransport, *args: Any, **kwargs: Any) -> Any:
        observer = _call_observer
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


# --- the transport ---------------------------------------------------------------------------------


class PemsTransport:
    """Sends PEMS calls for one tenant: headers and session, attempts, retries with backoff, the
    call's deadline; `PemsClient` adds the grid and record requests."""

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session if this client created it."""
        if self._owns_session:
            self._http.close()

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
