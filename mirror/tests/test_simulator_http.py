"""The simulator's HTTP server: control endpoints, unknown paths and the `pems_simulator` command
(`mirror.simulator.http`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from mirror.simulator import DEFAULT_TENANT, NO_SESSION_EXCEPTION
from mirror.tests.simulator_requests import GRIDS, body, error_of, headers, post, shape_a_rows


def test_unknown_path_is_404(http, server):
    assert post(http, server, body(), path="/axis/restservices/nothing").status_code == 404
    assert http.get(server.url + GRIDS, headers=headers(), timeout=5).status_code == 404


# --- control interface -----------------------------------------------------------------------------


def test_control_endpoints_over_http(http, server, sim):
    control = server.url + "/_sim/"
    assert http.get(control + "state", timeout=5).json()["orgs"] == {"RIO": 500, "HOU": 200}
    inserted = http.post(control + "rows", json={"org": "HOU", "row": {"pfs_id": "PFA-0000900"}}, timeout=5)
    assert inserted.status_code == 201 and sim.get_row("HOU", "PFA-0000900")["pfs_recordid"] == "1"
    patched = http.patch(control + "rows/HOU/PFA-0000900", json={"pfs_f_model": "M"}, timeout=5)
    assert patched.json()["row"]["pfs_recordid"] == "2" and sim.get_row("HOU", "PFA-0000900")["pfs_f_model"] == "M"
    assert http.delete(control + "rows/HOU/PFA-0000900", timeout=5).status_code == 200
    assert sim.get_row("HOU", "PFA-0000900") is None
    assert http.delete(control + "rows/HOU/PFA-0000900", timeout=5).status_code == 404
    assert http.post(control + "rows", json={"row": {"pfs_id": "X"}}, timeout=5).status_code == 400

    config = {"row_cap": 50, "shape": "B", "latency": 0.01, "auth_failure_status": 500}
    state = http.post(control + "config", json=config, timeout=5).json()
    assert (state["row_cap"], state["shape"], state["latency"], state["auth_failure_status"]) == (50, "B", 0.01, 500)
    assert http.post(control + "config", json={"shape": "C"}, timeout=5).status_code == 400

    fault = {"kind": "status", "count": 1, "status": 503, "retry_after": 3, "target": "grid"}
    assert http.post(control + "faults", json=fault, timeout=5).status_code == 201
    assert sim.faults[0]["status"] == 503
    assert http.delete(control + "faults", timeout=5).status_code == 200 and sim.faults == []

    session_id = post(http, server, body(rows=1), keepsession="true").json()["Result"]["SessionID"]
    assert http.post(control + "expire-sessions", timeout=5).json()["expired"] == 1
    hdrs = {"tenant": DEFAULT_TENANT, "organization": "RIO", "sessionid": session_id}
    assert error_of(post(http, server, body(), hdrs=hdrs))["Name"] == NO_SESSION_EXCEPTION

    before, started = {row["pfs_id"]: row for row in sim.rows("RIO")}, sim.now()
    corrupted = http.post(control + "corrupt", json={"org": "RIO", "count": 2, "kinds": ["bad_flag"]}, timeout=5)
    assert [sim.get_row("RIO", pfa_id)["pfs_f_actualized"] for pfa_id in corrupted.json()["pfs_ids"]] == ["X", "X"]
    for pfa_id in corrupted.json()["pfs_ids"]:  # saved as PEMS saves: an incremental read meets it
        row = sim.get_row("RIO", pfa_id)
        assert int(row["pfs_recordid"]) == int(before[pfa_id]["pfs_recordid"] or 0) + 1
        assert row["pfs_lastmodified"] in {started, sim.now()} - {before[pfa_id]["pfs_lastmodified"]}

    state = http.post(control + "reset", timeout=5).json()
    assert (state["row_cap"], state["shape"], state["latency"], state["auth_failure_status"]) == (10000, None, 0, 401)
    assert state["orgs"]["HOU"] == 200  # data kept

    moved = http.post(control + "rows/RIO/PFA-0000301/move", json={"to": "HOU"}, timeout=5)
    assert moved.status_code == 200 and moved.json()["row"]["pfs_a_org"] == "HOU"
    assert "PFA-0000301" in [row["pfs_id"] for row in shape_a_rows(post(http, server, body(), org="HOU"))]
    assert "PFA-0000301" not in [row["pfs_id"] for row in shape_a_rows(post(http, server, body()))]
    assert http.post(control + "rows/RIO/PFA-0000301/move", json={"to": "HOU"}, timeout=5).status_code == 404
    assert http.post(control + "rows/RIO/PFA-0000007/move", json={"to": "HOU"}, timeout=5).status_code == 400
    assert http.post(control + "rows/RIO/PFA-0000008/move", json={}, timeout=5).status_code == 400


def test_touch_over_http_returns_the_count_and_rejects_bad_input(http, server, sim):
    control = server.url + "/_sim/touch"
    version = sim.data_version
    answer = http.post(control, json={"org": "HOU", "fraction": 0.05, "seed": 3}, timeout=5)
    assert answer.status_code == 200 and answer.json() == {"count": 10}
    assert sim.data_version > version
    assert http.post(control, json={"org": "HOU", "fraction": 0}, timeout=5).json() == {"count": 0}
    assert http.post(control, json={"org": "HOU", "fraction": 1.5}, timeout=5).status_code == 400
    assert http.post(control, json={"fraction": 0.1}, timeout=5).status_code == 400
    assert http.post(control, json={"org": "NOPE", "fraction": 0.1}, timeout=5).status_code == 404


# --- command ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "bad_part"), [("RIO=50000,HOU", "HOU"), ("RIO=lots", "RIO=lots"), ("=5", "=5"), ("RIO=-1", "RIO=-1")]
)
def test_command_rejects_bad_orgs(value, bad_part):
    with pytest.raises(CommandError, match=re.escape(bad_part)):
        call_command("pems_simulator", orgs=value, port=0)


def test_every_control_route_is_documented():
    root = Path(__file__).resolve().parents[2]
    source = (root / "mirror" / "simulator" / "http.py").read_text()
    routes = set(re.findall(r'route == \("(GET|POST|PATCH|DELETE)", "([a-z-]+)", \d\)', source))
    assert ("POST", "corrupt") in routes and len(routes) >= 12
    documented = (root / "docs" / "simulator.md").read_text()
    missing = sorted(f"{method} /_sim/{name}" for method, name in routes if f"`{method} /_sim/{name}" not in documented)
    assert missing == []
