"""The simulator over HTTP: the tenant's REST endpoints and the ``/_sim/`` control endpoints.

SimulatorServer serves a PemsSimulator from a daemon thread. The handler checks the tenant,
credentials or session and the organization header, applies injected faults (status, hang,
truncate, non-JSON, reset, empty page, oversize) and writes answers in the contract's shapes
(docs/pems-api.md); grid pages are written from prebuilt JSON pieces, in chunks, since they are
the hot path.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import chain
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from mirror.simulator.data import ALIASES, COLUMNS, RawJsonValue
from mirror.simulator.filters import BadRequest
from mirror.simulator.grid import PageRows
from mirror.simulator.state import PemsSimulator
from mirror.simulator.store import CORRUPTION_KINDS

logger = logging.getLogger(__name__)


API_PREFIX = "/axis/restservices/"


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
_ROW_PIECES = {"A": _ROW_PIECES_A, "B": _ROW_PIECES_B}
_ROWS_PER_CHUNK = 250


def _rows_json(page: list[tuple[str, ...]], pieces: tuple[str, ...]) -> list[bytes]:
    """A page's rows (values already JSON-escaped) as a JSON array, in chunks.

    One join per few hundred rows keeps every buffer small enough to be reused:
    a single 20 MB string would be fresh memory on every request, which costs
    more to touch than to fill.
    """
    if not page:
        return [b"[]"]
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
    return parts


# orjson escapes control characters in strings, so this byte in its output can only be a placeholder.
_PLACEHOLDER = orjson.Fragment(b"\x00")


def _json_chunks(payload: Any) -> list[bytes]:
    """Serialize an answer into the chunks of its body, each PageRows value's JSON spliced in where it
    stands: written to the socket as it is instead of being copied into one body."""
    spliced: list[list[bytes]] = []

    def placeholder(value: Any) -> orjson.Fragment:
        if isinstance(value, RawJsonValue):
            # A record's poisoned value: served as the grid serves it.
            return orjson.Fragment(b'"' + value.raw + b'"')
        if not isinstance(value, PageRows):
            raise TypeError(f"{type(value).__name__} is not JSON serializable")
        spliced.append(_rows_json(value.rows, _ROW_PIECES[value.shape]))
        return _PLACEHOLDER

    option = orjson.OPT_PASSTHROUGH_SUBCLASS
    head, *tails = orjson.dumps(payload, default=placeholder, option=option).split(b"\x00")
    chunks = [head]
    for rows, tail in zip(spliced, tails, strict=True):
        chunks += rows
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
            self._drop_connection()
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
            self._drop_connection()
            return
        self._send(status, chunks)

    def _drop_connection(self) -> None:
        """Cut the connection without a (further) answer, as a failing server or network does."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the client has already gone

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
            org, ids = _need(payload, "org"), payload.get("pfs_ids")
            count = len(ids) if ids is not None else int(_need(payload, "count"))
            return 200, {"pfs_ids": sim.corrupt_rows(org, count, kinds, pfa_ids=ids)}
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
