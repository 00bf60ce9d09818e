"""How a PEMS call travels (`mirror.pems.transport`): settings, credentials and sessions, retries and
backoff, the errors of each failure kind, secrets kept out of texts, the size of an answer and the
deadline of a call."""

import base64
import logging
import re
import time

import orjson
import pytest

from mirror.pems import (
    GridFilter,
    PemsAuthError,
    PemsClient,
    PemsProtocolError,
    PemsRequestError,
    PemsSettings,
    PemsUnavailable,
    organization_filter,
)
from mirror.simulator import DEFAULT_API_KEY, DEFAULT_PASSWORD, DEFAULT_USERNAME
from mirror.tests.pems_stub import (
    PLAIN_A,
    ChunkedStubServer,
    StubServer,
    a_answer,
    a_row,
    free_port,
    grid_requests,
    logged_requests,
    read_all,
    shape_a,
    stub_client,
)

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
