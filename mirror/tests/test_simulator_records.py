"""The simulator's single-record GET and PATCH with the save rules (`mirror.simulator.records`)."""

from __future__ import annotations

import pytest

from mirror.simulator import DEFAULT_TENANT
from mirror.tests.simulator_requests import basic, error_of, headers, record_url

# --- records ---------------------------------------------------------------------------------------


def test_get_record(http, server, sim):
    response = http.get(record_url(server, "PFA-0000007%23RIO"), headers=headers(), timeout=5)
    pfa = response.json()["Result"]["ResultData"]["PFA"]
    assert pfa == {**sim.get_row("RIO", "PFA-0000007"), "recordid": sim.get_row("RIO", "PFA-0000007")["pfs_recordid"]}
    assert http.get(record_url(server, "PFA-9999999%23RIO"), headers=headers(), timeout=5).status_code == 404
    assert http.get(record_url(server, "PFA-0000007%23NOPE"), headers=headers(), timeout=5).status_code == 404


def test_patch_record_saves_only_sent_aliases_and_checks_recordid(http, server, sim):
    before = sim.get_row("RIO", "PFA-0000007")
    url = record_url(server, "PFA-0000007%23RIO")
    change = {"PFA": {"recordid": before["pfs_recordid"], "pfs_f_model": "NEW MODEL", "pfs_f_rental": "6500"}}
    response = http.patch(url, json=change, headers=headers(), timeout=5)
    assert response.status_code == 200
    pfa = response.json()["Result"]["ResultData"]["PFA"]
    assert pfa["recordid"] == str(int(before["pfs_recordid"]) + 1)
    assert pfa["pfs_lastmodified"] == sim.get_row("RIO", "PFA-0000007")["pfs_lastmodified"]
    after = sim.get_row("RIO", "PFA-0000007")
    assert after["pfs_f_model"] == "NEW MODEL" and after["pfs_f_rental"] == "6,500.00"
    unchanged = {
        k: v for k, v in after.items() if k not in ("pfs_f_model", "pfs_f_rental", "pfs_recordid", "pfs_lastmodified")
    }
    assert unchanged == {k: before[k] for k in unchanged}

    stale = http.patch(url, json=change, headers=headers(), timeout=5)
    assert stale.status_code == 400
    assert "modified by another user" in error_of(stale)["Message"]
    unknown_alias = {"PFA": {"recordid": pfa["recordid"], "pfs_nope": "x"}}
    assert http.patch(url, json=unknown_alias, headers=headers(), timeout=5).status_code == 400
    missing = http.patch(record_url(server, "PFA-9999999%23RIO"), json=change, headers=headers(), timeout=5)
    assert missing.status_code == 404
    assert sim.get_row("RIO", "PFA-0000007")["pfs_recordid"] == pfa["recordid"]


def test_patch_record_applies_the_save_rules(http, server, sim):
    """docs/pems-api.md "Save rules": decimals kept with 2 places rounded half up, text trimmed."""
    url = record_url(server, "PFA-0000007%23RIO")
    recordid = sim.get_row("RIO", "PFA-0000007")["pfs_recordid"]
    change = {"recordid": recordid, "pfs_f_rental": "5200.1299", "pfs_f_purchase": "0.125", "pfs_f_model": "  M 7  "}
    assert http.patch(url, json={"PFA": change}, headers=headers(), timeout=5).status_code == 200
    after = sim.get_row("RIO", "PFA-0000007")
    assert (after["pfs_f_rental"], after["pfs_f_purchase"], after["pfs_f_model"]) == ("5,200.13", "0.13", "M 7")


@pytest.mark.parametrize(
    ("change", "alias"),
    [
        ({"pfs_f_rental": "-0.01"}, "pfs_f_rental"),
        ({"pfs_f_purchase": "-5"}, "pfs_f_purchase"),
        ({"pfs_f_category": "C" * 31}, "pfs_f_category"),
        ({"pfs_p_projcode": "  " + "P" * 31}, "pfs_p_projcode"),
        ({"pfs_f_model": "M" * 81}, "pfs_f_model"),
        ({"pfs_f_enddate": "01/01/2000"}, "pfs_f_enddate"),  # before the stored forecast start
        ({"pfs_p_startdate": "03/02/2027", "pfs_p_enddate": "03/01/2027"}, "pfs_p_enddate"),
        ({"pfs_a_startdate": "01/02/2100"}, "pfs_a_startdate"),
    ],
)
def test_a_save_against_the_rules_is_refused_naming_the_alias_and_changes_nothing(http, server, sim, change, alias):
    sim.update_row("RIO", "PFA-0000007", {"pfs_a_startdate": "01/01/2027", "pfs_a_enddate": "02/01/2027"})
    before = sim.get_row("RIO", "PFA-0000007")
    body = {"PFA": {"recordid": before["pfs_recordid"], "pfs_f_model": "Changed", **change}}
    response = http.patch(record_url(server, "PFA-0000007%23RIO"), json=body, headers=headers(), timeout=5)
    assert response.status_code == 400
    assert alias in error_of(response)["Message"]
    assert sim.get_row("RIO", "PFA-0000007") == before


def test_equal_start_and_end_dates_and_a_long_enough_text_are_taken(http, server, sim):
    before = sim.get_row("RIO", "PFA-0000007")
    body = {"recordid": before["pfs_recordid"], "pfs_f_enddate": before["pfs_f_startdate"], "pfs_f_model": "M" * 80}
    response = http.patch(record_url(server, "PFA-0000007%23RIO"), json={"PFA": body}, headers=headers(), timeout=5)
    assert response.status_code == 200


def test_record_endpoints_require_credentials(http, server):
    hdrs = {"tenant": DEFAULT_TENANT, "Authorization": basic(password="bad")}
    assert http.get(record_url(server, "PFA-0000007%23RIO"), headers=hdrs, timeout=5).status_code == 401
