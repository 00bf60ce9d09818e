"""The simulator's injected faults and behaviour knobs (`mirror.simulator.faults`)."""

from __future__ import annotations

import threading
import time

import orjson
import pytest
import requests

from mirror.tests.simulator_requests import GRIDDATA, GRIDS, body, headers, post, record_url, shape_a_rows

# --- faults ----------------------------------------------------------------------------------------


def test_status_fault_with_retry_after_then_recovers(http, server, sim):
    sim.inject_fault("status", count=2, status=503, retry_after=7, target="grid")
    for _ in range(2):
        response = post(http, server, body(rows=1))
        assert response.status_code == 503 and response.headers["Retry-After"] == "7"
        assert response.json()["ErrorAlert"]
    assert post(http, server, body(rows=1)).status_code == 200
    assert sim.faults == []


def test_status_500_has_an_empty_body(http, server, sim):
    sim.inject_fault("status", status=500)
    response = post(http, server, body(rows=1))
    assert response.status_code == 500 and response.content == b""


def test_fault_targets_only_matching_requests(http, server, sim):
    sim.inject_fault("status", status=429, target="count")
    assert post(http, server, body(rows=1)).status_code == 200
    assert http.get(server.url + "/_sim/state", timeout=5).status_code == 200  # controls are never faulted
    assert post(http, server, body(request_type="LIST.COUNT.STORED")).status_code == 429
    sim.inject_fault("non_json", target="record")
    assert post(http, server, body(rows=1)).status_code == 200
    response = http.get(server.url + "/axis/restservices/pfa/PFA-0000001%23RIO", headers=headers(), timeout=5)
    assert response.headers["Content-Type"] == "text/html"
    assert response.text == "<html>Service Unavailable</html>"


def test_hang_times_out_the_client_without_blocking_others(server, sim):
    sim.inject_fault("hang", seconds=3, target="grid")
    outcome = {}

    def slow() -> None:
        started = time.monotonic()
        try:
            requests.post(server.url + GRIDS, json=body(rows=1), headers=headers(), timeout=1)
        except requests.Timeout:
            outcome["timeout_after"] = time.monotonic() - started

    thread = threading.Thread(target=slow)
    thread.start()
    # Once the hang is taken, the slow request is being held.
    deadline = time.monotonic() + 5
    while sim.faults and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sim.faults == []
    started = time.monotonic()
    assert requests.post(server.url + GRIDS, json=body(rows=1), headers=headers(), timeout=5).status_code == 200
    assert time.monotonic() - started < 0.9
    thread.join()
    assert 0.9 < outcome["timeout_after"] < 2.5


def test_truncate_fault_breaks_the_body(http, server, sim):
    sim.inject_fault("truncate", target="grid")
    with pytest.raises(requests.exceptions.RequestException):
        post(http, server, body(rows=50))
    assert len(shape_a_rows(post(http, server, body(rows=50)))) == 50


def test_reset_fault_drops_the_connection(http, server, sim):
    sim.inject_fault("reset")
    with pytest.raises(requests.ConnectionError):
        post(http, server, body(rows=1))
    assert post(http, server, body(rows=1)).status_code == 200


def test_empty_fault_answers_no_rows_yet_claims_more(http, server, sim):
    sim.inject_fault("empty", count=2)  # "any", yet only grid data requests take it
    count = post(http, server, body(request_type="LIST.COUNT.STORED")).json()["Result"]["ResultData"]
    assert count["TOTAL-COUNT"] == "500"
    assert http.get(record_url(server, "PFA-0000007%23RIO"), headers=headers(), timeout=5).status_code == 200
    a = post(http, server, body(rows=10, cursor=21)).json()["Result"]["ResultData"]
    assert a["DATARECORD"] == [] and a["NEXTCURSORPOSITION"] == "21" and a["CURRENTCURSORPOSITION"] == "20"
    b = post(http, server, body(rows=10, cursor=21), path=GRIDDATA).json()["Result"]["ResultData"]["GRID"]
    assert b["DATA"]["ROW"] == []
    assert (b["METADATA"]["MORERECORDPRESENT"], b["METADATA"]["CURRENTCURSORPOSITION"]) == ("+", "20")
    assert len(shape_a_rows(post(http, server, body(rows=10, cursor=21)))) == 10
    assert sim.faults == []
    with pytest.raises(ValueError):
        sim.inject_fault("empty", target="count")


def test_oversize_fault_pads_the_answer_with_json_whitespace(http, server, sim):
    normal = post(http, server, body(rows=5))
    sim.inject_fault("oversize", target="grid")
    padded = post(http, server, body(rows=5))
    assert len(padded.content) == len(normal.content) + 1_000_000
    assert int(padded.headers["Content-Length"]) == len(padded.content)
    assert orjson.loads(padded.content) == orjson.loads(normal.content)
    assert post(http, server, body(rows=5)).content == normal.content
    fault = {"kind": "oversize", "bytes": 5000, "target": "record"}
    assert http.post(server.url + "/_sim/faults", json=fault, timeout=5).status_code == 201
    record = http.get(record_url(server, "PFA-0000007%23RIO"), headers=headers(), timeout=5)
    again = http.get(record_url(server, "PFA-0000007%23RIO"), headers=headers(), timeout=5)
    assert len(record.content) == len(again.content) + 5000 and record.json() == again.json()
    with pytest.raises(ValueError):
        sim.inject_fault("oversize", bytes=0)


def test_latency_delays_requests(http, server, sim):
    sim.set_latency(0.3)
    started = time.monotonic()
    post(http, server, body(rows=1))
    assert time.monotonic() - started >= 0.3
    sim.reset()
    assert sim.latency == 0
