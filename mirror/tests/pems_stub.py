"""What the PEMS client's tests share: reading the simulator's request log, a scripted stub server
for answers the simulator never gives, and builders of grid answers in both shapes. (The `sleeps`
and `make_client` fixtures are in conftest.py.)"""

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import orjson

from mirror.pems import PemsClient, PemsSettings, organization_filter

UTC_ZONE = ZoneInfo("UTC")
CHICAGO = ZoneInfo("America/Chicago")


def logged_requests(sim, count: int) -> list[dict]:
    """The simulator's request log once it holds `count` entries.

    The simulator logs a request after answering it, so the client can see the answer a moment
    before the log does.
    """
    deadline = time.monotonic() + 2
    while len(sim.requests) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    return sim.requests


def grid_requests(sim, count: int) -> list[dict]:
    return [r for r in logged_requests(sim, count) if r["path"].endswith(("/grids", "/griddata"))]


def read_all(client, org="RIO") -> tuple[list[dict[str, str]], list]:
    pages = list(client.iter_pages([organization_filter(org)]))
    return [row for page in pages for row in page.rows], pages


def key(number: int) -> str:
    return f"PFA-{number:07d}"


class StubServer:
    """An HTTP server answering each POST with the next scripted (status, body) or (status, body,
    headers) answer."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.bodies: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                stub.bodies.append(orjson.loads(self.rfile.read(length)))
                status, body, *headers = stub.answers.pop(0) if stub.answers else (500, b"")
                payload = body if isinstance(body, bytes) else orjson.dumps(body)
                self.send_response(status)
                for name, value in (headers[0] if headers else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc_info):
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def shape_a(ids, next_cursor, current="1"):
    records = [{"DATAFIELD": [{"FIELDNAME": "pfs_id", "FIELDVALUE": i, "DATATYPE": "VARCHAR"}]} for i in ids]
    data = {"DATARECORD": records, "CURRENTCURSORPOSITION": current, "NEXTCURSORPOSITION": next_cursor}
    return {"ErrorAlert": None, "Result": {"ResultData": data, "SessionID": None}}


def shape_b(ids, current, more):
    rows = [{"CELL": [{"ALIAS_NAME": "pfs_id", "VALUE": i}]} for i in ids]
    metadata = {"CURRENTCURSORPOSITION": current, "MORERECORDPRESENT": more, "RECORDS": "1,000"}
    return {"Result": {"ResultData": {"GRID": {"METADATA": metadata, "DATA": {"ROW": rows}}}}}


def stub_client(stub, sleeps, **overrides):
    values = {
        "base_url": stub.url,
        "tenant": "T",
        "organization": "RIO",
        "username": "u",
        "secret": "pw-secret",
    }
    return PemsClient(PemsSettings(**{**values, **overrides}), sleep=sleeps.append)


def a_row(*cells) -> dict:
    return {"DATAFIELD": [{"FIELDNAME": name, "FIELDVALUE": value, "DATATYPE": "VARCHAR"} for name, value in cells]}


def b_row(*cells) -> dict:
    return {"CELL": [{"ALIAS_NAME": name, "VALUE": value} for name, value in cells]}


def a_answer(records, next_cursor="5", **result_data) -> dict:
    data = {"DATARECORD": records, "CURRENTCURSORPOSITION": "4", "NEXTCURSORPOSITION": next_cursor, **result_data}
    return {"ErrorAlert": None, "ConfirmationAlert": None, "Result": {"ResultData": data, "SessionID": None}}


def b_answer(rows, current="4", more="+", **metadata) -> dict:
    grid = {
        "METADATA": {"CURRENTCURSORPOSITION": current, "MORERECORDPRESENT": more, **metadata},
        "DATA": {"ROW": rows},
    }
    return {"ErrorAlert": None, "Result": {"ResultData": {"GRID": grid}}}


ODD_VALUES = 'Müller "Q" 5\\6\n€ 😀 \u2028'


def with_extra_key(answer: dict, *where: str) -> dict:
    target = answer
    for key in where:
        target = target[key]
    target["SOMETHING_NEW"] = {"nested": [1, 2.5, None]}
    return answer


PLAIN_A = orjson.dumps(a_answer([a_row(("pfs_id", "A"))], next_cursor=None))


class ChunkedStubServer(StubServer):
    """A StubServer answering once, with `Transfer-Encoding: chunked` in small uneven chunks."""

    def __init__(self, body: bytes):
        super().__init__([])
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                stub.bodies.append(orjson.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(body), 4093):
                    chunk = body[start : start + 4093]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args):
                pass

        self.httpd.RequestHandlerClass = Handler
