"""Tests for the PEMS client, run against the simulator over real HTTP."""

import base64
import json
import logging
import re
import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import orjson
import pytest

from mirror.pems import (
    GridFilter,
    PemsAuthError,
    PemsClient,
    PemsNotFound,
    PemsProtocolError,
    PemsRecordConflict,
    PemsRequestError,
    PemsSettings,
    PemsUnavailable,
    modified_since_filter,
    organization_filter,
)
from mirror.pems.fast import PageDecoder
from mirror.records import REPEATED_COLUMNS, parse_pfa_row
from mirror.simulator import (
    DEFAULT_API_KEY,
    DEFAULT_PASSWORD,
    DEFAULT_TENANT,
    DEFAULT_USERNAME,
    PemsSimulator,
    SimulatorServer,
)

UTC_ZONE = ZoneInfo("UTC")
CHICAGO = ZoneInfo("America/Chicago")


def test_filters():
    assert organization_filter("RIO") == GridFilter("pfs_a_org", "=", "RIO")
    since = datetime(2025, 1, 15, 14, 0, 59, tzinfo=UTC)
    assert modified_since_filter(since, time_zone=CHICAGO) == GridFilter("pfs_lastmodified", ">=", "01/15/2025 08:00")


# --- settings -----------------------------------------------------------------------------------


def test_settings_repr_hides_the_secret():
    settings = PemsSettings(base_url="http://x", tenant="T", organization="RIO", username="u", secret="s3cr3t-pw")
    assert "s3cr3t-pw" not in repr(settings)
    assert "s3cr3t-pw" not in repr(PemsClient(settings))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tenant": ""}, "tenant"),
        ({"secret": ""}, "secret"),
        ({"username": ""}, "username"),
        ({"endpoint": "grid"}, "endpoint"),
        ({"auth_type": "oauth"}, "auth_type"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
    ],
)
def test_settings_reject_incomplete_configuration(overrides, message):
    from django.core.exceptions import ImproperlyConfigured

    values = {"base_url": "http://x", "tenant": "T", "organization": "RIO", "username": "u", "secret": "pw"}
    with pytest.raises(ImproperlyConfigured, match=message):
        PemsSettings(**{**values, **overrides})


# --- the client against the simulator -----------------------------------------------------------


@pytest.fixture
def sim():
    return PemsSimulator(orgs={"RIO": 500, "HOU": 200}, seed=1, row_cap=10_000)


@pytest.fixture
def server(sim):
    with SimulatorServer(sim, host="127.0.0.1", port=0) as running:
        yield running


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def make_client(server, sleeps):
    clients = []

    def make(**overrides) -> PemsClient:
        values = {
            "base_url": server.url,
            "tenant": DEFAULT_TENANT,
            "organization": "RIO",
            "username": DEFAULT_USERNAME,
            "secret": DEFAULT_PASSWORD,
            "page_size": 10_000,
            "read_timeout": 5.0,
        }
        values.update(overrides)
        client = PemsClient(PemsSettings(**values), sleep=sleeps.append)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


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


@pytest.mark.parametrize("endpoint", ["grids", "griddata"])
@pytest.mark.parametrize("shape", ["A", "B"])
def test_full_read_asks_for_the_keys_after_the_last_one_read_past_short_pages(sim, make_client, endpoint, shape):
    sim.set_shape(shape)
    sim.set_row_cap(120)  # the server returns fewer rows than the 1000 asked for
    client = make_client(endpoint=endpoint, page_size=1000)

    rows, pages = read_all(client)

    expected_ids = sorted(row["pfs_id"] for row in sim.rows("RIO"))
    ids = [row["pfs_id"] for row in rows]
    assert ids == expected_ids  # all rows, each once, in pfs_id order
    assert len(pages) == 5 and [len(p.rows) for p in pages] == [120, 120, 120, 120, 20]
    assert [p.number for p in pages] == [1, 2, 3, 4, 5]
    assert [p.more for p in pages] == [True, True, True, True, False]
    assert [p.after for p in pages] == [None, *(pages[n].last_key for n in range(4))]
    assert pages[0].last_key == expected_ids[119] and pages[-1].last_key == expected_ids[-1]
    assert all(row["pfs_a_org"] == "RIO" for row in rows)
    sent = grid_requests(sim, 5)
    assert all(r["path"].endswith("/" + endpoint) for r in sent)
    for request, page in zip(sent, pages, strict=True):
        body = request["json"]
        assert body["GRID"]["CURSOR_POSITION"] in (1, "1")  # never an offset: it shifts when rows go
        filters = body["MULTIADDON_FILTERS"]["MADDON_FILTER"]
        assert filters[0]["ALIAS_NAME"] == "pfs_a_org"
        bound = [f for f in filters if f["ALIAS_NAME"] == "pfs_id"]
        assert bound == ([] if page.after is None else [{**bound[0], "OPERATOR": ">", "VALUE": page.after}])
        assert "ROW_OFFSET" not in json.dumps(body)
        assert body["GRID"]["NUMBER_OF_ROWS_FIRST_RETURNED"] == 1000
        assert body["REQUEST_TYPE"] == "LIST.DATA_ONLY.STORED"
        assert body["ADDON_SORT"] == {"ALIAS_NAME": "pfs_id", "TYPE": "ASC"}
        assert request["headers"]["tenant"] == DEFAULT_TENANT
        assert request["headers"]["organization"] == "RIO"


def test_a_row_deleted_behind_the_read_shifts_nothing(sim, make_client):
    """An offset cursor would skip a row here: the rows after a deleted one move up by one."""
    sim.set_row_cap(100)
    client = make_client(page_size=100)
    expected_ids = sorted(row["pfs_id"] for row in sim.rows("RIO"))
    ids = []
    for page in client.iter_pages([organization_filter("RIO")]):
        ids += [row["pfs_id"] for row in page.rows]
        if page.number == 1:
            sim.delete_row("RIO", page.rows[10]["pfs_id"])
            sim.delete_row("RIO", page.rows[20]["pfs_id"])
    assert ids == expected_ids


def key(number: int) -> str:
    return f"PFA-{number:07d}"


@pytest.mark.parametrize("shape", ["A", "B"])
def test_rows_served_without_their_key_are_read_once_each_wherever_they_sit(sim, make_client, shape):
    """Such rows sort under keys the client cannot see: the next page starts with them again."""
    sim.set_shape(shape)
    sim.set_row_cap(4)
    # Key 2 in the middle of page 1, key 4 at its end, keys 9 to 18 more than two pages in a row.
    hidden = [2, 4, *range(9, 19)]
    sim.corrupt_rows("RIO", len(hidden), kinds=["hidden_id"], pfa_ids=[key(n) for n in hidden])
    client = make_client(page_size=4)
    pages = list(client.iter_pages([organization_filter("RIO"), GridFilter("pfs_id", "<", key(23))]))
    served = [row["pfs_id"] or key(n) for n, row in enumerate((row for page in pages for row in page.rows), 1)]
    assert served == [key(n) for n in range(1, 23)]  # each row once, in order
    assert [row["pfs_recordid"] for page in pages for row in page.rows] == [
        sim.get_row("RIO", key(n))["pfs_recordid"] for n in range(1, 23)
    ]
    assert [(page.after, page.last_key) for page in pages] == [
        (None, key(3)),
        (key(3), key(7)),
        (key(7), key(8)),
        (key(8), key(8)),
        (key(8), key(8)),
        (key(8), key(20)),
        (key(20), key(22)),
    ]
    assert [page.hidden_key_ranges for page in pages] == [
        [(key(1), key(3))],
        [(key(3), key(5))],
        [],
        [],
        [],
        [(key(8), key(19))],
        [],
    ]
    # Request 5 brings rows 9 to 12 again, all read: the next two ask past them (12 and 16 rows).
    cursors = [request["json"]["GRID"]["CURSOR_POSITION"] for request in grid_requests(sim, 8)]
    assert cursors == [1, 1, 1, 1, 1, 5, 9, 1]


def test_a_row_without_its_key_at_the_end_of_the_grid_is_a_hidden_range_to_the_end(sim, make_client):
    sim.set_row_cap(100)
    sim.corrupt_rows("RIO", 1, kinds=["hidden_id"], pfa_ids=[key(500)])
    pages = list(make_client(page_size=100).iter_pages([organization_filter("RIO")]))
    assert sum(len(page.rows) for page in pages) == 500
    assert pages[-1].last_key == key(499) and pages[-1].hidden_key_ranges == [(key(499), None)]


def test_a_key_that_is_not_valid_text_is_paged_past_like_a_blank_one(sleeps):
    first = a_answer([a_row(("pfs_id", "A")), a_row(("pfs_id", "B?"))], next_cursor="3")
    second = a_answer([a_row(("pfs_id", "B?")), a_row(("pfs_id", "C"))], next_cursor=None)
    # A lone surrogate escape, which no JSON encoder writes: it cannot be sent back as a bound.
    answers = [(200, orjson.dumps(answer).replace(b"B?", b"B\\ud800")) for answer in (first, second)]
    with StubServer(answers) as stub:
        pages = list(stub_client(stub, sleeps).iter_pages())
    assert [row["pfs_id"] for page in pages for row in page.rows] == ["A", "B\ud800", "C"]
    assert [(page.after, page.last_key) for page in pages] == [(None, "A"), ("A", "C")]
    assert pages[1].hidden_key_ranges == [("A", "C")]
    assert stub.bodies[1]["MULTIADDON_FILTERS"]["MADDON_FILTER"][0]["VALUE"] == "A"


@pytest.mark.parametrize("shape", [None, "A", "B"])
def test_every_parsed_row_of_a_read_is_typed(sim, make_client, shape):
    sim.set_shape(shape)
    rows, _ = read_all(make_client(page_size=300))
    records = [parse_pfa_row(row, time_zone=UTC_ZONE, organization_code="RIO") for row in rows]
    assert len({r.pfa_id for r in records}) == len(sim.rows("RIO"))
    assert any(r.monthly_rate is not None for r in records)


def test_pages_carry_the_server_date(make_client):
    page = next(make_client().iter_pages([organization_filter("RIO")]))
    assert page.server_date is not None and page.server_date.tzinfo is not None
    assert abs(page.server_date - datetime.now(UTC)) < timedelta(minutes=1)


def test_empty_result_yields_one_empty_page(make_client):
    pages = list(make_client().iter_pages([organization_filter("NOPE")]))
    assert len(pages) == 1 and pages[0].rows == [] and not pages[0].more and pages[0].last_key is None
    assert pages[0].server_date is not None


@pytest.mark.parametrize("endpoint", ["grids", "griddata"])
@pytest.mark.parametrize("shape", ["A", "B"])
def test_count(sim, make_client, endpoint, shape):
    sim.set_shape(shape)
    client = make_client(endpoint=endpoint, organization="*")
    assert client.count([organization_filter("RIO")]) == 500
    assert client.count([organization_filter("HOU")]) == 200
    assert client.count() == 700
    assert grid_requests(sim, 3)[-1]["json"]["REQUEST_TYPE"] == "LIST.COUNT.STORED"


def test_basic_auth_then_session_reuse(sim, make_client):
    sim.set_row_cap(200)
    rows, _ = read_all(make_client(page_size=1000))
    assert len(rows) == 500

    first, *later = grid_requests(sim, 3)
    assert len(later) == 2
    assert first["headers"]["keepsession"] == "true"
    assert first["headers"]["authorization"] == "***"
    assert "sessionid" not in first["headers"]
    for request in later:
        assert request["headers"].get("sessionid")
        assert "authorization" not in request["headers"]
        assert "x-api-key" not in request["headers"]


def test_api_key_auth(sim, make_client):
    client = make_client(auth_type="api_key", username="", secret=DEFAULT_API_KEY)
    assert client.count([organization_filter("RIO")]) == 500
    first = grid_requests(sim, 1)[0]
    assert "x-api-key" in first["headers"]
    assert "authorization" not in first["headers"]


def test_wrong_api_key_is_an_auth_error(sim, make_client):
    with pytest.raises(PemsAuthError):
        make_client(auth_type="api_key", username="", secret="wrong-key").count()
    assert len(logged_requests(sim, 1)) == 1


@pytest.mark.parametrize("status", [401, 400, 500])
def test_bad_credentials_are_an_auth_error_and_not_retried(sim, make_client, sleeps, status):
    sim.set_auth_failure_status(status)
    client = make_client(secret="wrong-password")
    with pytest.raises(PemsAuthError) as caught:
        list(client.iter_pages([organization_filter("RIO")]))
    assert caught.value.status == status
    assert len(logged_requests(sim, 1)) == 1
    assert sleeps == []
    assert "wrong-password" not in str(caught.value)


def test_expired_session_logs_in_again_once(sim, make_client):
    sim.set_row_cap(100)
    client = make_client(page_size=1000)
    pages = client.iter_pages([organization_filter("RIO")])
    first = next(pages)
    sim.expire_sessions()
    rest = list(pages)

    ids = [row["pfs_id"] for page in [first, *rest] for row in page.rows]
    assert ids == sorted(row["pfs_id"] for row in sim.rows("RIO"))
    sent = grid_requests(sim, 6)
    statuses = [r["status"] for r in sent]
    assert statuses.count(400) == 1
    expired = statuses.index(400)
    assert sent[expired]["headers"].get("sessionid")
    relogin = sent[expired + 1]
    assert relogin["headers"]["authorization"] == "***"
    assert relogin["headers"]["keepsession"] == "true"
    assert relogin["json"] == sent[expired]["json"]  # the same page asked again
    assert all(r["headers"].get("sessionid") for r in sent[expired + 2 :])


def test_429_honours_retry_after(sim, make_client, sleeps):
    sim.inject_fault("status", count=1, status=429, retry_after=2, target="grid")
    rows, _ = read_all(make_client())
    assert len(rows) == 500
    assert sleeps == [2.0]
    assert [r["status"] for r in grid_requests(sim, 2)] == [429, 200]


def test_retry_after_is_capped_at_backoff_max(sim, make_client, sleeps):
    sim.inject_fault("status", count=1, status=503, retry_after=120, target="grid")
    read_all(make_client(backoff_max=7.0))
    assert sleeps == [7.0]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_with_backoff(sim, make_client, sleeps, caplog, status):
    sim.inject_fault("status", count=2, status=status, target="grid")
    with caplog.at_level(logging.WARNING, logger="mirror.pems"):
        rows, _ = read_all(make_client(backoff_base=0.5))
    assert len(rows) == 500
    assert [r["status"] for r in grid_requests(sim, 3)] == [status, status, 200]
    assert len(sleeps) == 2
    assert 0.1 <= sleeps[0] <= 0.5 and 0.1 <= sleeps[1] <= 1.0
    warnings = [r for r in caplog.records if r.name == "mirror.pems" and r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "attempt 1 of 5" in warnings[0].getMessage() and str(status) in warnings[0].getMessage()


def test_backoff_never_sleeps_zero(sim, make_client, sleeps):
    sim.inject_fault("status", count=4, status=503, target="grid")
    read_all(make_client(backoff_base=0.0))
    assert len(sleeps) == 4 and all(delay > 0 for delay in sleeps)


def test_retries_exhausted_raise_unavailable(sim, make_client, sleeps):
    sim.inject_fault("status", count=10, status=503, target="grid")
    with pytest.raises(PemsUnavailable) as caught:
        read_all(make_client(max_attempts=3))
    assert caught.value.attempts == 3
    assert caught.value.status == 503
    assert "503" in str(caught.value) and "3 attempts" in str(caught.value)
    assert len(grid_requests(sim, 3)) == 3
    assert len(sleeps) == 2


def test_hanging_server_hits_the_read_timeout_and_is_retried(sim, make_client, sleeps):
    sim.inject_fault("hang", count=1, seconds=2, target="grid")
    rows, _ = read_all(make_client(read_timeout=0.3))
    assert len(rows) == 500
    assert len(sleeps) == 1


def test_hang_until_retries_run_out_says_timeout(sim, make_client):
    sim.inject_fault("hang", count=2, seconds=1, target="grid")
    with pytest.raises(PemsUnavailable) as caught:
        read_all(make_client(read_timeout=0.2, max_attempts=2))
    assert "timeout" in caught.value.message and "2 attempts" in caught.value.message


@pytest.mark.parametrize("kind", ["truncate", "non_json", "reset"])
def test_broken_bodies_are_retried(sim, make_client, sleeps, kind):
    sim.inject_fault(kind, count=2, target="grid")
    rows, _ = read_all(make_client())
    assert [row["pfs_id"] for row in rows] == sorted(row["pfs_id"] for row in sim.rows("RIO"))
    assert len(sleeps) == 2


def test_faults_on_count_and_record_are_retried(sim, make_client, sleeps):
    client = make_client()
    sim.inject_fault("status", count=1, status=503, target="count")
    assert client.count([organization_filter("RIO")]) == 500
    pfa_id = sim.rows("RIO")[0]["pfs_id"]
    sim.inject_fault("status", count=1, status=502, target="record")
    assert client.get_record(pfa_id)["pfs_id"] == pfa_id
    assert len(sleeps) == 2


def test_bad_request_is_not_retried(sim, make_client, sleeps):
    with pytest.raises(PemsRequestError) as caught:
        make_client(grid_name="NOSUCHGRID").count()
    assert caught.value.status == 400
    assert caught.value.message
    assert len(logged_requests(sim, 1)) == 1
    assert sleeps == []


def test_spelled_out_operator_is_rejected_with_the_pems_message(sim, make_client):
    client = make_client()
    with pytest.raises(PemsRequestError) as caught:
        list(client.iter_pages([GridFilter("pfs_a_org", "EQUALS", "RIO")]))
    assert caught.value.status == 400
    assert caught.value.pems_name
    assert "EQUALS" in caught.value.message
    assert caught.value.message in str(caught.value)
    assert len(grid_requests(sim, 1)) == 1


def test_filters_are_sent_in_order_and_must_all_hold(sim, make_client):
    client = make_client(organization="*")
    assert client.count([organization_filter("RIO"), GridFilter("pfs_id", "NOT EMPTY")]) == 500
    assert client.count([organization_filter("RIO"), organization_filter("HOU")]) == 0
    sent = grid_requests(sim, 2)[0]["json"]["MULTIADDON_FILTERS"]["MADDON_FILTER"]
    assert [(entry["SEQNUM"], entry["ALIAS_NAME"], entry["JOINER"]) for entry in sent] == [
        (1, "pfs_a_org", "AND"),
        (2, "pfs_id", "AND"),
    ]
    assert sent[1]["OPERATOR"] == "NOT EMPTY"


def test_unreachable_server_is_unavailable_after_the_retries(sleeps):
    settings = PemsSettings(
        base_url=f"http://127.0.0.1:{free_port()}", tenant="T", organization="RIO", username="u",
        secret="pw-secret", max_attempts=3, connect_timeout=0.5,
    )  # fmt: skip
    with PemsClient(settings, sleep=sleeps.append) as client, pytest.raises(PemsUnavailable) as caught:
        client.count()
    assert caught.value.attempts == 3 and caught.value.status is None
    assert "connection failed" in caught.value.message and "3 attempts" in caught.value.message
    assert len(sleeps) == 2


def test_unknown_path_is_not_found(server, make_client):
    with pytest.raises(PemsNotFound):
        make_client(base_url=server.url + "/nowhere").count()


def test_get_and_patch_a_record(sim, make_client):
    client = make_client()
    pfa_id = sim.rows("RIO")[0]["pfs_id"]
    record = client.get_record(pfa_id)
    assert record["pfs_id"] == pfa_id
    assert record["recordid"]
    get = logged_requests(sim, 1)[-1]
    assert get["method"] == "GET"
    assert get["path"].endswith(f"/pfa/{pfa_id}%23RIO")

    saved = client.patch_record(pfa_id, record["recordid"], {"pfs_f_model": "NEW MODEL"})

    assert int(saved["recordid"]) == int(record["recordid"]) + 1
    assert saved["pfs_lastmodified"]
    assert sim.get_row("RIO", pfa_id)["pfs_f_model"] == "NEW MODEL"
    patch = logged_requests(sim, 2)[-1]
    assert patch["method"] == "PATCH"
    assert patch["json"] == {"PFA": {"recordid": record["recordid"], "pfs_f_model": "NEW MODEL"}}


def test_patch_with_a_stale_recordid_is_a_conflict(sim, make_client, sleeps):
    client = make_client()
    pfa_id = sim.rows("RIO")[0]["pfs_id"]
    stale = client.get_record(pfa_id)["recordid"]
    client.patch_record(pfa_id, stale, {"pfs_f_model": "FIRST"})

    with pytest.raises(PemsRecordConflict) as caught:
        client.patch_record(pfa_id, stale, {"pfs_f_model": "SECOND"})

    assert isinstance(caught.value, PemsRequestError)
    assert "another user" in caught.value.message
    assert sim.get_row("RIO", pfa_id)["pfs_f_model"] == "FIRST"
    assert sleeps == []


def test_unknown_record_is_not_found(make_client):
    client = make_client()
    with pytest.raises(PemsNotFound):
        client.get_record("PFA-DOES-NOT-EXIST")
    with pytest.raises(PemsNotFound):
        client.patch_record("PFA-DOES-NOT-EXIST", "1", {"pfs_f_model": "X"})


def test_secret_never_appears_in_logs_or_errors(sim, make_client, caplog):
    secret = DEFAULT_PASSWORD
    encoded = base64.b64encode(f"{DEFAULT_USERNAME}:{secret}".encode()).decode()
    texts = []
    with caplog.at_level(logging.DEBUG):
        client = make_client()
        sim.inject_fault("status", count=1, status=503, target="grid")
        sim.inject_fault("truncate", count=1, target="grid")
        read_all(client)
        sim.inject_fault("status", count=5, status=500, target="grid")
        with pytest.raises(PemsUnavailable) as unavailable:
            read_all(client)
        texts.append(str(unavailable.value))
        sim.set_auth_failure_status(500)
        with pytest.raises(PemsAuthError) as auth:
            make_client(secret="not-" + secret).count()
        texts.append(str(auth.value))
        with pytest.raises(PemsRequestError) as bad:
            list(client.iter_pages([GridFilter("pfs_a_org", "EQUALS", "RIO")]))
        texts.append(str(bad.value))
    session_ids = {r["headers"]["sessionid"] for r in logged_requests(sim, 1) if r["headers"].get("sessionid")}
    assert len(caplog.records) >= 6  # the retries above were logged
    for text in [caplog.text, *texts, repr(client.settings), repr(client)]:
        assert secret not in text
        assert encoded not in text
        for session_id in session_ids:
            assert session_id not in text


# --- the client against a scripted stub (answers the simulator never gives) ---------------------


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


def test_a_key_that_does_not_advance_is_a_pems_error(sleeps):
    answers = [(200, shape_a(["A", "B"], "3")), (200, shape_a(["C", "B"], "3"))]
    with StubServer(answers) as stub, pytest.raises(PemsProtocolError, match="key 'B' after 'C'"):
        list(stub_client(stub, sleeps).iter_pages())
    answers = [(200, shape_a(["A", "B"], "3")), (200, shape_a(["B"], None))]
    with StubServer(answers) as stub, pytest.raises(PemsProtocolError, match="key 'B' after 'B'"):
        list(stub_client(stub, sleeps).iter_pages())


@pytest.mark.parametrize("last_next", [None, ""])
def test_shape_a_stops_on_an_empty_next_position(sleeps, last_next):
    answers = [(200, shape_a(["A"], "2")), (200, shape_a(["B"], last_next))]
    with StubServer(answers) as stub:
        pages = list(stub_client(stub, sleeps).iter_pages())
    assert [row["pfs_id"] for page in pages for row in page.rows] == ["A", "B"]
    assert len(stub.bodies) == 2


def test_an_empty_page_before_the_end_is_asked_again_then_a_pems_error(sleeps):
    answers = [(200, shape_a(["A"], "2")), (200, shape_a([], "3")), (200, shape_a(["B"], None))]
    with StubServer(answers) as stub:
        pages = list(stub_client(stub, sleeps).iter_pages())
    assert [row["pfs_id"] for page in pages for row in page.rows] == ["A", "B"]
    assert len(stub.bodies) == 3 and len(sleeps) == 1
    assert stub.bodies[1] == stub.bodies[2]  # the same page, asked again
    answers = [(200, shape_a(["A"], "2")), *[(200, shape_a([], "3"))] * 2]
    with StubServer(answers) as stub, pytest.raises(PemsProtocolError, match="page 2 is empty although PEMS says"):
        list(stub_client(stub, sleeps, max_attempts=2).iter_pages())


def test_an_empty_last_page_ends_the_read(sleeps):
    answers = [(200, shape_a(["A"], "2")), (200, shape_a([], None)), (200, shape_a(["never"], None))]
    with StubServer(answers) as stub:
        pages = list(stub_client(stub, sleeps).iter_pages())
    assert [row["pfs_id"] for page in pages for row in page.rows] == ["A"]
    assert len(stub.bodies) == 2 and sleeps == []


def test_shape_b_follows_more_record_present_on_any_endpoint(sleeps):
    answers = [(200, shape_b(["A", "B"], "2", "+")), (200, shape_b(["C"], "3", "-"))]
    with StubServer(answers) as stub:
        pages = list(stub_client(stub, sleeps, endpoint="grids").iter_pages())
    assert [row["pfs_id"] for page in pages for row in page.rows] == ["A", "B", "C"]
    assert [body["GRID"]["CURSOR_POSITION"] for body in stub.bodies] == [1, 1]


@pytest.mark.parametrize(
    "result_data", [{"TOTAL-COUNT": "12,345"}, {"GRID": {"TOTAL-COUNT": "12,345", "METADATA": {}}}]
)
def test_count_reads_either_shape_with_separators(sleeps, result_data):
    with StubServer([(200, {"Result": {"ResultData": result_data}})]) as stub:
        assert stub_client(stub, sleeps).count() == 12345


@pytest.mark.parametrize(
    "answer",
    [
        {"Result": {"ResultData": {"SOMETHING": []}}},
        {"Result": None, "ErrorAlert": None},
        [1, 2, 3],
    ],
)
def test_unknown_200_shape_is_a_protocol_error(sleeps, answer):
    with StubServer([(200, answer)]) as stub, pytest.raises(PemsProtocolError):
        list(stub_client(stub, sleeps).iter_pages())
    assert len(stub.bodies) == 1


def test_second_session_expiry_in_a_row_is_an_error(sleeps):
    expired = {
        "ErrorAlert": [{"Name": "com.dstm.mp.businessprocess.NoSessionException", "Message": "Session expired"}],
        "Result": None,
    }
    with StubServer([(400, expired), (400, expired), (200, shape_a(["A"], None))]) as stub:
        with pytest.raises(PemsAuthError, match="Session expired"):
            list(stub_client(stub, sleeps).iter_pages())
    assert len(stub.bodies) == 2


@pytest.mark.parametrize(
    ("status", "alert"),
    [
        (400, {"Name": "com.dstm.mp.AuthenticationException", "Message": "Invalid user"}),
        (500, {"Name": "SomeServerError", "Message": "Login failed: bad credentials"}),
    ],
)
def test_authentication_error_alerts_are_auth_errors(sleeps, status, alert):
    with StubServer([(status, {"ErrorAlert": [alert], "Result": None})]) as stub:
        with pytest.raises(PemsAuthError) as caught:
            stub_client(stub, sleeps).count()
    assert caught.value.message == alert["Message"] and caught.value.pems_name == alert["Name"]
    assert len(stub.bodies) == 1 and sleeps == []


def test_empty_500_body_is_retried_then_reported(sleeps):
    with StubServer([(500, b"")] * 3) as stub, pytest.raises(PemsUnavailable, match="HTTP 500.*3 attempts"):
        stub_client(stub, sleeps, max_attempts=3).count()
    assert len(stub.bodies) == 3


def test_non_json_400_is_a_request_error_with_only_the_status(sleeps):
    """A body that is not a PEMS error document is never echoed: the host may not be PEMS at all."""
    with StubServer([(400, b"<html>Bad Request: grid locked</html>")]) as stub:
        with pytest.raises(PemsRequestError) as caught:
            stub_client(stub, sleeps).count()
    assert caught.value.message == "HTTP 400 Bad Request"
    assert "grid locked" not in str(caught.value) and "html" not in str(caught.value)
    assert len(stub.bodies) == 1 and sleeps == []


def test_grid_cells_with_null_or_number_values_become_strings(sleeps):
    records = [
        {"DATAFIELD": [{"FIELDNAME": "pfs_id", "FIELDVALUE": "A"}, {"FIELDNAME": "pfs_f_rental", "FIELDVALUE": None}]},
        {"DATAFIELD": [{"FIELDNAME": "pfs_id", "FIELDVALUE": "B"}, {"FIELDNAME": "pfs_recordid", "FIELDVALUE": 7}]},
        {"DATAFIELD": [{"FIELDNAME": "pfs_id"}]},
    ]
    with StubServer([(200, a_answer(records, next_cursor=None))]) as stub:
        [page] = stub_client(stub, sleeps).iter_pages()
    assert page.rows == [{"pfs_id": "A", "pfs_f_rental": ""}, {"pfs_id": "B", "pfs_recordid": "7"}, {"pfs_id": ""}]
    assert not page.more


@pytest.mark.parametrize("shape", ["A", "B"])
def test_simulator_pages_are_read_whole_in_either_shape(sim, make_client, shape):
    sim.set_shape(shape)
    sim.set_row_cap(150)
    rows, pages = read_all(make_client(page_size=1000))
    assert rows == sim.rows("RIO")
    assert [page.more for page in pages] == [True, True, True, False]


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


@pytest.mark.parametrize(
    ("answer", "path", "rows", "cursor"),
    [
        # plain pages, odd only in ways the typed path knows
        (a_answer([a_row(("pfs_id", "A"))]), "typed", [{"pfs_id": "A"}], 5),
        (a_answer([a_row(("pfs_id", ODD_VALUES), ("é", "ü"))]), "typed", [{"pfs_id": ODD_VALUES, "é": "ü"}], 5),
        # a column named twice: the last value, and the mark that sets the row aside
        (a_answer([a_row(("pfs_id", "A"), ("pfs_id", "B"))]), "typed",
         [{"pfs_id": "B", REPEATED_COLUMNS: "'pfs_id': 'A', 'B'"}], 5),
        (b_answer([b_row(("pfs_id", "A"), ("x", "1"), ("pfs_id", "B"))]), "typed",
         [{"pfs_id": "B", "x": "1", REPEATED_COLUMNS: "'pfs_id': 'A', 'B'"}], 5),
        (a_answer([a_row(("pfs_id", "A"), ("pfs_id", "B"), ("pfs_recordid", 7))]), "generic",
         [{"pfs_id": "B", "pfs_recordid": "7", REPEATED_COLUMNS: "'pfs_id': 'A', 'B'"}], 5),
        (a_answer([a_row(("pfs_id", "A"))], next_cursor=5), "typed", [{"pfs_id": "A"}], 5),
        (a_answer([a_row(("pfs_id", "A"))], next_cursor="1,001"), "typed", [{"pfs_id": "A"}], 1001),
        (a_answer([a_row(("pfs_id", "A"))], next_cursor=None), "typed", [{"pfs_id": "A"}], None),
        (a_answer([a_row(("pfs_id", "A"))], next_cursor=""), "typed", [{"pfs_id": "A"}], None),
        (a_answer([a_row(("pfs_id", "A"))], GRID={"DATA": {"ROW": "ignored"}}), "generic", [{"pfs_id": "A"}], 5),
        (a_answer(None, next_cursor=None), "typed", [], None),
        (a_answer([], next_cursor=None), "typed", [], None),
        (b_answer([b_row(("pfs_id", "A"), ("x", ODD_VALUES))]), "typed", [{"pfs_id": "A", "x": ODD_VALUES}], 5),
        (b_answer([b_row(("pfs_id", "A"))], current=4), "typed", [{"pfs_id": "A"}], 5),
        (b_answer([b_row(("pfs_id", "A"))], more="-"), "typed", [{"pfs_id": "A"}], None),
        (b_answer([b_row(("pfs_id", "A"))], more=None), "typed", [{"pfs_id": "A"}], None),
        (b_answer([b_row(("pfs_id", "A"))], more="-", current=4.5), "generic", [{"pfs_id": "A"}], None),
        # odd but legal answers the typed path leaves to the generic one
        (a_answer([a_row(("pfs_id", "A"), ("pfs_recordid", 7))]), "generic", [{"pfs_id": "A", "pfs_recordid": "7"}], 5),
        (a_answer([a_row(("pfs_id", "A"), ("pfs_f_rental", None))]), "generic", [{"pfs_id": "A", "pfs_f_rental": ""}], 5),
        (b_answer([b_row(("pfs_id", "A"), ("pfs_f_rental", None))]), "generic", [{"pfs_id": "A", "pfs_f_rental": ""}], 5),
        (b_answer([b_row(("pfs_id", "A"), ("pfs_f_flag", True))]), "generic", [{"pfs_id": "A", "pfs_f_flag": "True"}], 5),
        (b_answer([{"CELL": [{"ALIAS_NAME": "pfs_id"}]}]), "generic", [{"pfs_id": ""}], 5),
        (a_answer({"DATAFIELD": {"FIELDNAME": "pfs_id", "FIELDVALUE": "A"}}), "generic", [{"pfs_id": "A"}], 5),
        (b_answer({"CELL": []}), "generic", [{}], 5),
        (a_answer([{"DATAFIELD": None}, a_row(("pfs_id", "B"))]), "generic", [{}, {"pfs_id": "B"}], 5),
        (a_answer("", next_cursor=None), "generic", [], None),
        (with_extra_key(a_answer([a_row(("pfs_id", "A"))]), "Result", "ResultData", "DATARECORD", 0, "DATAFIELD", 0),
         "generic", [{"pfs_id": "A"}], 5),
        (with_extra_key(b_answer([b_row(("pfs_id", "A"))]), "Result", "ResultData", "GRID", "METADATA"),
         "generic", [{"pfs_id": "A"}], 5),
        (with_extra_key(a_answer([a_row(("pfs_id", "A"))])), "generic", [{"pfs_id": "A"}], 5),
        ({**a_answer([a_row(("pfs_id", "A"))]), "ErrorAlert": [{"Name": "W", "Message": "m"}]}, "generic",
         [{"pfs_id": "A"}], 5),
        (b_answer([b_row(("pfs_id", "A"))], current=2**63), "generic", [{"pfs_id": "A"}], 2**63 + 1),
    ],
)  # fmt: skip
def test_grid_pages_are_read_to_the_same_rows_however_plain_or_odd(sleeps, answer, path, rows, cursor):
    """`path`: whether `mirror.pems.fast` reads the page ("typed") or leaves it to the general decode."""
    with StubServer([(200, answer)]) as stub:
        page = next(stub_client(stub, sleeps).iter_pages())
    assert page.rows == rows
    assert page.more == (cursor is not None)
    assert (PageDecoder().decode(orjson.dumps(answer)) is not None) == (path == "typed")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (a_answer([{"DATAFIELD": [["pfs_id", "A"]]}]), "DATARECORD cell is not an object"),
        (b_answer([b_row(("pfs_id", "A")), "junk"]), "GRID.DATA.ROW entry is not an object"),
        (a_answer([a_row(("pfs_id", "A"))], next_cursor="abc"), "NEXTCURSORPOSITION 'abc' is not a whole number"),
        (a_answer([a_row(("pfs_id", "A"))], next_cursor=5.0), "NEXTCURSORPOSITION 5.0 is not a whole number"),
        (b_answer([b_row(("pfs_id", "A"))], current="-1"), "CURRENTCURSORPOSITION '-1' is not a whole number"),
        (a_answer(7), "expected a list of rows, got int"),
        ({"Result": {"ResultData": {"NEXTCURSORPOSITION": "2"}}}, "neither ResultData.DATARECORD nor ResultData.GRID"),
        ({"Result": {"ResultData": None}}, "no Result.ResultData object"),
    ],
)
def test_malformed_grid_pages_raise_the_generic_errors(sleeps, answer, error):
    with StubServer([(200, answer)]) as stub, pytest.raises(PemsProtocolError) as caught:
        list(stub_client(stub, sleeps).iter_pages())
    assert error in caught.value.message
    assert len(stub.bodies) == 1 and sleeps == []


PLAIN_A = orjson.dumps(a_answer([a_row(("pfs_id", "A"))], next_cursor=None))


@pytest.mark.parametrize(
    "body",
    [
        PLAIN_A[:-2],  # truncated JSON
        PLAIN_A + b"x",  # trailing garbage
        PLAIN_A.replace(b'"VARCHAR"', b"1e400"),  # a number beyond a double
        PLAIN_A.replace(b'"VARCHAR"', b"[" * 2000 + b"]" * 2000),  # nested deeper than orjson allows
    ],
)
def test_a_200_page_that_is_not_json_is_retried_as_before(sleeps, body):
    with StubServer([(200, body), (200, PLAIN_A)]) as stub:
        pages = list(stub_client(stub, sleeps).iter_pages())
    assert len(sleeps) == 1  # the broken answer was retried once
    assert [page.rows for page in pages] == [[{"pfs_id": "A"}]]
    with (
        StubServer([(200, body)]) as stub,
        pytest.raises(PemsUnavailable, match="HTTP 200 with a body that is not JSON"),
    ):
        list(stub_client(stub, sleeps, max_attempts=1).iter_pages())


@pytest.mark.parametrize(
    ("body", "value"),
    [
        (PLAIN_A.replace(b'"VARCHAR"', b'"VAR\xffCHAR"'), "A"),  # not UTF-8 in a value the client ignores
        (PLAIN_A.replace(b'"VARCHAR"', b'"\\ud800"'), "A"),  # a lone surrogate
        (PLAIN_A.replace(b'"A"', b'"A\x01"'), "A\x01"),  # a raw control character
        (PLAIN_A.replace(b'"A"', b'"\\ud800A"'), "\ud800A"),  # a lone surrogate in a value
        (PLAIN_A.replace(b'"A"', b'"\xc3\xa9\xed\xa0\x80"'), "\u00e9\udced\udca0\udc80"),  # an encoded surrogate
        (PLAIN_A.replace(b'"A"', b'"A\xff"'), "A\udcff"),  # a byte that is not UTF-8
    ],
)
def test_a_page_with_damaged_text_is_read_with_the_damage_kept_for_the_parser(sleeps, body, value):
    with StubServer([(200, body)]) as stub:
        pages = list(stub_client(stub, sleeps).iter_pages())
    assert [page.rows for page in pages] == [[{"pfs_id": value}]] and sleeps == []


def test_an_answer_larger_than_the_page_size_allows_is_a_pems_error(sleeps):
    big = orjson.dumps(a_answer([a_row(("pfs_id", "A"), ("x", "y" * 1_100_000))], next_cursor=None))
    with StubServer([(200, big)]) as stub:
        assert len(list(stub_client(stub, sleeps, page_size=100).iter_pages())[0].rows) == 1
    with StubServer([(200, big)]) as stub, pytest.raises(PemsProtocolError, match="larger than 1,064,960 bytes"):
        list(stub_client(stub, sleeps, page_size=1).iter_pages())
    assert len(stub.bodies) == 1 and sleeps == []  # never retried
    with ChunkedStubServer(big * 2) as stub, pytest.raises(PemsProtocolError, match="larger than"):
        list(stub_client(stub, sleeps, page_size=1).iter_pages())


def test_a_chunked_answer_is_read_whole(sleeps):
    body = orjson.dumps(
        a_answer([a_row(("pfs_id", f"PFA-{n:05d}"), ("x", "y" * 300)) for n in range(400)], next_cursor=None)
    )
    with ChunkedStubServer(body) as stub:
        pages = list(stub_client(stub, sleeps).iter_pages())
    assert [row["pfs_id"] for row in pages[0].rows] == [f"PFA-{n:05d}" for n in range(400)]
    assert not pages[0].more and sleeps == []


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


# --- the total deadline of one call ----------------------------------------------------------------


def test_a_call_gives_up_when_its_next_wait_would_pass_its_deadline(sleeps):
    """Attempts, waits and backoff together stay within `call_deadline`, however many attempts are left."""
    overloaded = (503, b"", {"Retry-After": "25"})
    with StubServer([overloaded] * 10) as stub:
        settings = PemsSettings(
            base_url=stub.url, tenant="T", organization="RIO", username="u", secret="pw-secret",
            max_attempts=10, backoff_max=60.0, call_deadline=60.0,
        )  # fmt: skip
        # The client's clock moves with the waits it asks for, as a real one would.
        client = PemsClient(settings, sleep=sleeps.append, clock=lambda: time.monotonic() + sum(sleeps))
        with pytest.raises(PemsUnavailable) as caught:
            client.count()
    assert sleeps == [25.0, 25.0]  # a third wait would end past 60 s
    assert len(stub.bodies) == 3 and caught.value.attempts == 3 and caught.value.status == 503
    assert re.search(r"gave up after 3 attempts in 50\.\d s", str(caught.value)), str(caught.value)


def test_an_attempt_waits_no_longer_than_the_deadline_leaves(sim, make_client, sleeps):
    sim.inject_fault("hang", count=1, seconds=3, target="count")
    started = time.monotonic()
    with pytest.raises(PemsUnavailable, match="gave up after 1 attempts"):
        make_client(read_timeout=5.0, call_deadline=0.5).count()
    assert time.monotonic() - started < 2.5  # the read timeout of 5 s was cut to the 0.5 s left
    assert sleeps == []


def test_the_deadline_must_be_positive():
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="call_deadline"):
        PemsSettings(base_url="http://x", tenant="T", organization="RIO", username="u", secret="pw", call_deadline=0)
