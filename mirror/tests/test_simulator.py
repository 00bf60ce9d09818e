"""Tests for the PEMS simulator, spoken to with raw HTTP the way a tenant would be."""

from __future__ import annotations

import base64
import datetime as dt
import random
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import orjson
import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError

from mirror.simulator import (
    ALIASES,
    COLUMNS,
    CORRUPTION_KINDS,
    DEFAULT_API_KEY,
    DEFAULT_PASSWORD,
    DEFAULT_TENANT,
    DEFAULT_USERNAME,
    NO_SESSION_EXCEPTION,
    POISON_KINDS,
    PemsSimulator,
    SimulatorServer,
    parse_orgs,
)

GRIDS = "/axis/restservices/grids"
GRIDDATA = "/axis/restservices/griddata"
# Pinned so that the filter cases below select the same rows whatever day the tests run.
REFERENCE_TIME = dt.datetime(2026, 11, 1, tzinfo=ZoneInfo("America/Chicago"))


@pytest.fixture
def sim() -> PemsSimulator:
    return PemsSimulator(
        orgs={"RIO": 500, "HOU": 200},
        seed=1,
        tenant=DEFAULT_TENANT,
        users={DEFAULT_USERNAME: DEFAULT_PASSWORD},
        api_keys={DEFAULT_API_KEY},
        row_cap=10000,
        session_ttl=1800.0,
        reference_time=REFERENCE_TIME,
    )


@pytest.fixture
def server(sim):
    with SimulatorServer(sim, host="127.0.0.1", port=0) as running:
        yield running


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


def basic(user: str = DEFAULT_USERNAME, password: str = DEFAULT_PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def headers(org: str = "RIO", **extra: str) -> dict[str, str]:
    values = {
        "tenant": DEFAULT_TENANT,
        "organization": org,
        "Authorization": basic(),
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    values.update(extra)
    return values


def body(
    rows: int | str = 10000, cursor: int | str = 1, request_type: str = "LIST.DATA_ONLY.STORED", **extra: Any
) -> dict[str, Any]:
    return {
        "GRID": {
            "GRID_NAME": "CUPFAG",
            "GRID_ID": "100541",
            "NUMBER_OF_ROWS_FIRST_RETURNED": rows,
            "CURSOR_POSITION": cursor,
        },
        "GRID_TYPE": {"TYPE": "LIST"},
        "REQUEST_TYPE": request_type,
        **extra,
    }


def post(http, server, payload, path=GRIDS, **header_values) -> requests.Response:
    hdrs = header_values.pop("hdrs", None) or headers(**header_values)
    return http.post(server.url + path, json=payload, headers=hdrs, timeout=10)


def shape_a_rows(response: requests.Response) -> list[dict[str, str]]:
    records = response.json()["Result"]["ResultData"]["DATARECORD"] or []
    return [{f["FIELDNAME"]: f["FIELDVALUE"] for f in record["DATAFIELD"]} for record in records]


def shape_b_rows(response: requests.Response) -> list[dict[str, str]]:
    rows = response.json()["Result"]["ResultData"]["GRID"]["DATA"]["ROW"]
    return [{cell["ALIAS_NAME"]: cell["VALUE"] for cell in row["CELL"]} for row in rows]


def filtered(http, server, filters: list[dict[str, Any]], **extra: Any) -> list[str]:
    payload = body(MULTIADDON_FILTERS={"MADDON_FILTER": filters}, **extra)
    response = post(http, server, payload)
    assert response.status_code == 200, response.text
    return [row["pfs_id"] for row in shape_a_rows(response)]


def error_of(response: requests.Response) -> dict[str, str]:
    data = response.json()
    assert data["Result"] is None
    return data["ErrorAlert"][0]


def as_date(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%m/%d/%Y %H:%M" if " " in value else "%m/%d/%Y")


def as_number(value: str) -> float:
    return float(value.replace(",", ""))


# --- data ------------------------------------------------------------------------------------------


def test_same_seed_org_and_count_generate_identical_rows(sim):
    again = PemsSimulator(orgs={"RIO": 500}, seed=1, reference_time=REFERENCE_TIME)
    other_seed = PemsSimulator(orgs={"RIO": 500}, seed=2, reference_time=REFERENCE_TIME)
    assert again.rows("RIO") == sim.rows("RIO")  # HOU's presence does not change RIO
    assert other_seed.rows("RIO") != sim.rows("RIO")
    assert sim.rows("RIO")[0]["pfs_id"] == "PFA-0000001"
    assert [row["pfs_id"] for row in sim.rows("RIO")] == [f"PFA-{n:07d}" for n in range(1, 501)]


def test_generated_rows_are_realistic_and_in_pems_formats(sim):
    rows = sim.rows("RIO")
    reference = sim.reference_time.replace(tzinfo=None)
    assert all(set(row) == set(ALIASES) for row in rows)
    assert "pfs_udf_costcode" in ALIASES
    assert {row["pfs_f_source"] for row in rows} == {"Rental", "Purchase"}
    assert {row["pfs_f_dor"] for row in rows} == {"BEO", "PROJECT"}
    assert len({row["pfs_f_category"] for row in rows}) >= 8
    for row in rows:
        assert row["pfs_a_org"] == "RIO"
        assert 1 <= int(row["pfs_recordid"]) <= 20
        assert re.fullmatch(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}", row["pfs_lastmodified"])
        assert reference - dt.timedelta(days=366) <= as_date(row["pfs_lastmodified"]) < reference
        if row["pfs_f_source"] == "Rental":
            assert re.fullmatch(r"\d{1,3}(,\d{3})*\.\d{2}", row["pfs_f_rental"]) and row["pfs_f_purchase"] == ""
        else:
            assert re.fullmatch(r"\d{1,3}(,\d{3})*\.\d{2}", row["pfs_f_purchase"]) and row["pfs_f_rental"] == ""
        assert 2024 <= as_date(row["pfs_p_startdate"]).year <= 2027
        assert as_date(row["pfs_p_startdate"]) < as_date(row["pfs_p_enddate"])
        future = as_date(row["pfs_f_startdate"]) > reference
        assert (row["pfs_a_startdate"] == "") == future
        assert {row["pfs_f_actualized"], row["pfs_f_discontinued"], row["pfs_f_fundstrans"]} <= {"-1", "0"}
    assert any(int(row["pfs_f_rental"].replace(",", "").split(".")[0] or 0) >= 1000 for row in rows)


def test_corrupt_rows_are_deterministic_and_malformed(sim):
    twin = PemsSimulator(orgs={"RIO": 500}, seed=1, reference_time=REFERENCE_TIME)
    ids = sim.corrupt_rows("RIO", 8)
    assert ids == twin.corrupt_rows("RIO", 8)
    assert len(set(ids)) == 8
    by_id = {row["pfs_id"]: row for row in sim.rows("RIO")}
    kinds = ["bad_date", "bad_decimal", "missing_id", "bad_flag"] * 2
    for pfa_id, kind in zip(ids, kinds):
        if kind == "missing_id":
            assert pfa_id not in by_id and sim.get_row("RIO", pfa_id) is None
            continue
        row = by_id[pfa_id]
        if kind == "bad_date":
            with pytest.raises(ValueError):
                as_date(row["pfs_f_startdate"])
        elif kind == "bad_decimal":
            with pytest.raises(ValueError):
                as_number(row["pfs_f_rental"] or row["pfs_f_purchase"])
        else:
            assert row["pfs_f_actualized"] not in ("-1", "0")
    assert sum(1 for row in sim.rows("RIO") if row["pfs_id"] == "") == 2
    assert len(sim.rows("RIO")) == 500


def test_row_mutations_follow_pems_save_rules(sim):
    inserted = sim.insert_row("RIO", {"pfs_id": "PFA-0000000", "pfs_f_model": "X1"})
    assert inserted["pfs_recordid"] == "1" and inserted["pfs_a_org"] == "RIO" and inserted["pfs_f_area"] == ""
    assert sim.rows("RIO")[0]["pfs_id"] == "PFA-0000000"
    before = sim.get_row("RIO", "PFA-0000005")
    updated = sim.update_row("RIO", "PFA-0000005", {"pfs_f_model": "X2"})
    assert int(updated["pfs_recordid"]) == int(before["pfs_recordid"]) + 1
    assert updated["pfs_lastmodified"] == sim.now() or as_date(updated["pfs_lastmodified"]) > as_date(
        before["pfs_lastmodified"]
    )
    sim.delete_row("RIO", "PFA-0000005")
    assert sim.get_row("RIO", "PFA-0000005") is None
    with pytest.raises(KeyError):
        sim.delete_row("RIO", "PFA-0000005")
    with pytest.raises(ValueError):
        sim.insert_row("RIO", {"pfs_id": "\x00PFA-1"})  # the storage keys of rows without an id


def test_move_row_saves_the_row_into_another_organization(sim):
    before = sim.get_row("RIO", "PFA-0000300")  # HOU's generated keys end at PFA-0000200
    moved = sim.move_row("RIO", "PFA-0000300", "HOU")
    assert sim.get_row("RIO", "PFA-0000300") is None
    assert sim.get_row("HOU", "PFA-0000300") == moved
    assert moved["pfs_a_org"] == "HOU" and int(moved["pfs_recordid"]) == int(before["pfs_recordid"]) + 1
    assert moved["pfs_lastmodified"][:10] == sim.now()[:10]
    unchanged = set(ALIASES) - {"pfs_a_org", "pfs_recordid", "pfs_lastmodified"}
    assert {alias: moved[alias] for alias in unchanged} == {alias: before[alias] for alias in unchanged}
    assert sim.organizations == {"RIO": 499, "HOU": 201}
    with pytest.raises(KeyError):
        sim.move_row("RIO", "PFA-0000300", "HOU")
    with pytest.raises(ValueError):
        sim.move_row("RIO", "PFA-0000007", "HOU")  # HOU has its own PFA-0000007
    with pytest.raises(KeyError):
        sim.move_row("RIO", "PFA-0000008", "NOPE")
    assert sim.get_row("RIO", "PFA-0000007") is not None and sim.get_row("RIO", "PFA-0000008") is not None


# --- grid reads ----------------------------------------------------------------------------------


def test_shape_a_pages_to_the_end_with_a_cap_smaller_than_asked(http, server, sim):
    sim.set_row_cap(120)
    cursor, seen, positions = 1, [], []
    while cursor:
        response = post(http, server, body(rows=1000, cursor=cursor))
        data = response.json()["Result"]["ResultData"]
        page = shape_a_rows(response)
        assert len(page) <= 120
        assert data["RECORDS"] == str(len(page))
        assert data["CURRENTCURSORPOSITION"] == str(len(seen) + len(page))
        positions.append(data["NEXTCURSORPOSITION"])
        seen.extend(row["pfs_id"] for row in page)
        cursor = data["NEXTCURSORPOSITION"]
    assert positions == ["121", "241", "361", "481", None]
    assert seen == [row["pfs_id"] for row in sim.rows("RIO")]


def test_shape_b_on_griddata_pages_with_morerecordpresent(http, server, sim):
    sim.set_row_cap(300)
    first = post(http, server, body(rows="1000", cursor="1"), path=GRIDDATA)
    meta = first.json()["Result"]["ResultData"]["GRID"]["METADATA"]
    assert (meta["CURRENTCURSORPOSITION"], meta["MORERECORDPRESENT"], meta["CLIENTROWS"]) == ("300", "+", "300")
    assert re.fullmatch(r"\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}", meta["SERVERTIMESTAMP"])
    second = post(http, server, body(rows=1000, cursor=301), path=GRIDDATA)
    meta = second.json()["Result"]["ResultData"]["GRID"]["METADATA"]
    assert (meta["CURRENTCURSORPOSITION"], meta["MORERECORDPRESENT"], meta["RECORDS"]) == ("500", "-", "200")
    ids = [row["pfs_id"] for row in shape_b_rows(first) + shape_b_rows(second)]
    assert ids == [row["pfs_id"] for row in sim.rows("RIO")]
    assert shape_b_rows(first)[0] == sim.rows("RIO")[0]  # every column, unknown ones included


def test_set_shape_overrides_the_endpoint_default(http, server, sim):
    sim.set_shape("B")
    assert "GRID" in post(http, server, body(rows=5)).json()["Result"]["ResultData"]
    sim.set_shape("A")
    assert len(shape_a_rows(post(http, server, body(rows=5), path=GRIDDATA))) == 5
    sim.set_shape(None)
    assert "DATARECORD" in post(http, server, body(rows=5)).json()["Result"]["ResultData"]


def test_records_carries_thousands_separators(http, server, sim):
    sim.add_organization("BIG", 1500)
    data = post(http, server, body(rows=10000), org="BIG").json()["Result"]["ResultData"]
    assert data["RECORDS"] == "1,500"
    assert data["NEXTCURSORPOSITION"] is None


def test_datafield_carries_column_types(http, server):
    record = post(http, server, body(rows=1)).json()["Result"]["ResultData"]["DATARECORD"][0]
    assert [(f["FIELDNAME"], f["DATATYPE"]) for f in record["DATAFIELD"]] == list(COLUMNS)


def test_count_in_both_shapes(http, server):
    org_filter = {"ADDON_FILTER": {"ALIAS_NAME": "pfs_f_source", "OPERATOR": "=", "VALUE": "Purchase"}}
    a = post(http, server, body(request_type="LIST.COUNT.STORED")).json()["Result"]["ResultData"]
    b = post(http, server, body(request_type="LIST.COUNT.STORED"), path=GRIDDATA).json()["Result"]["ResultData"]
    assert a["TOTAL-COUNT"] == "500"
    assert b["GRID"]["TOTAL-COUNT"] == "500"
    purchases = post(http, server, body(request_type="LIST.COUNT.STORED", **org_filter)).json()
    assert 0 < int(purchases["Result"]["ResultData"]["TOTAL-COUNT"]) < 500


def test_head_data_adds_metadata_and_fields(http, server):
    a = post(http, server, body(rows=3, request_type="LIST.HEAD_DATA.STORED")).json()["Result"]["ResultData"]
    assert a["FIELDS"] == [{"name": name, "type": kind} for name, kind in COLUMNS]
    assert a["METADATA"]["MORERECORDPRESENT"] == "+"
    assert len(a["DATARECORD"]) == 3
    b = post(http, server, body(rows=3, request_type="LIST.HEAD_DATA.STORED"), path=GRIDDATA).json()
    assert len(b["Result"]["ResultData"]["GRID"]["FIELDS"]) == len(COLUMNS)


def test_all_organizations_with_star(http, server):
    rows = shape_a_rows(post(http, server, body(), org="*"))
    assert len(rows) == 700
    assert {row["pfs_a_org"] for row in rows} == {"RIO", "HOU"}


def test_every_call_is_a_fresh_query(http, server, sim):
    sim.set_row_cap(100)
    first = shape_a_rows(post(http, server, body()))
    sim.insert_row("RIO", {"pfs_id": "PFA-0000000"})
    second = shape_a_rows(post(http, server, body(cursor=101)))
    assert second[0]["pfs_id"] == first[-1]["pfs_id"]  # the insert moved the window by one


def test_row_offset_is_ignored(http, server):
    first = shape_a_rows(post(http, server, body(rows=10)))
    again = shape_a_rows(post(http, server, {**body(rows=10), "ROW_OFFSET": 10}))
    assert again == first


def grid_answer(result_data: dict[str, Any]) -> dict[str, Any]:
    return {
        "ErrorAlert": None,
        "ConfirmationAlert": None,
        "Result": {"ResultData": result_data, "InfoAlert": None, "WarningAlert": None, "SessionID": None},
    }


@pytest.mark.parametrize(("cursor", "rows"), [(2, 333), (1, 500), (501, 10)])
def test_a_page_is_byte_for_byte_the_json_of_its_answer(http, server, sim, cursor, rows):
    # The rows are written in chunks spliced into the envelope: no seam may show.
    expected = sim.rows("RIO")[cursor - 1 : cursor - 1 + rows]
    last, more = cursor - 1 + len(expected), cursor - 1 + len(expected) < 500
    shape_a = {
        "DATARECORD": [
            {"DATAFIELD": [{"FIELDNAME": alias, "FIELDVALUE": row[alias], "DATATYPE": kind} for alias, kind in COLUMNS]}
            for row in expected
        ],
        "CURRENTCURSORPOSITION": str(last),
        "NEXTCURSORPOSITION": str(last + 1) if more else None,
        "RECORDS": str(len(expected)),
    }
    assert post(http, server, body(rows=rows, cursor=cursor)).content == orjson.dumps(grid_answer(shape_a))

    answer = post(http, server, body(rows=rows, cursor=cursor), path=GRIDDATA)
    metadata = {
        "CURRENTCURSORPOSITION": str(last),
        "MORERECORDPRESENT": "+" if more else "-",
        "CLIENTROWS": str(len(expected)),
        "RECORDS": str(len(expected)),
        "SERVERTIMESTAMP": answer.json()["Result"]["ResultData"]["GRID"]["METADATA"]["SERVERTIMESTAMP"],
    }
    cells = [{"CELL": [{"ALIAS_NAME": alias, "VALUE": row[alias]} for alias in ALIASES]} for row in expected]
    shape_b = {"GRID": {"GRIDID": "100541", "GRIDNAME": "CUPFAG", "METADATA": metadata, "DATA": {"ROW": cells}}}
    assert answer.content == orjson.dumps(grid_answer(shape_b))


# A quote, backslashes, control characters (two with short escapes), non-ASCII and a line separator.
NEEDS_ESCAPING = 'say "hi" \\ C:\\tmp\ttab\x01\x1f line\nbreak é 漢字 \u2028 😀'


def test_values_json_must_escape_are_served_exactly_in_both_shapes(http, server, sim):
    post(http, server, body())  # a query cached before the rows change
    control = server.url + "/_sim/"
    row = {"pfs_id": "PFA-0000250a", "pfs_f_model": NEEDS_ESCAPING}
    assert http.post(control + "rows", json={"org": "RIO", "row": row}, timeout=5).status_code == 201
    assert http.patch(control + "rows/RIO/PFA-0000003", json={"pfs_f_area": NEEDS_ESCAPING}, timeout=5).ok
    saved = {"recordid": sim.get_row("RIO", "PFA-0000400")["pfs_recordid"], "pfs_f_catdesc": NEEDS_ESCAPING}
    patched = http.patch(record_url(server, "PFA-0000400%23RIO"), json={"PFA": saved}, headers=headers(), timeout=5)
    assert patched.status_code == 200
    assert sim.get_row("RIO", "PFA-0000400")["pfs_f_catdesc"] == NEEDS_ESCAPING

    expected = sim.rows("RIO")
    assert shape_a_rows(post(http, server, body())) == expected
    assert shape_b_rows(post(http, server, body(), path=GRIDDATA)) == expected
    everyone = shape_a_rows(post(http, server, body(), org="*"))
    assert [row for row in everyone if row["pfs_a_org"] == "RIO"] == expected


def test_generated_rows_of_an_organization_whose_code_json_must_escape(http, server, sim):
    sim.add_organization('O"\\RG', 30)
    expected = sim.rows('O"\\RG')
    assert shape_a_rows(post(http, server, body(), org='O"\\RG')) == expected
    assert shape_b_rows(post(http, server, body(), path=GRIDDATA, org='O"\\RG')) == expected


def test_poison_rows_are_served_as_the_bytes_that_break_strict_parsers(http, server, sim):
    twin = PemsSimulator(orgs={"RIO": 500}, seed=1, reference_time=REFERENCE_TIME)
    decimal_id, number_id, surrogate_id, utf8_id = sim.corrupt_rows("RIO", 4, kinds=POISON_KINDS)
    model = twin.get_row("RIO", surrogate_id)["pfs_f_model"]
    maker = twin.get_row("RIO", utf8_id)["pfs_f_manufacturer"]
    # Read back as a lenient client would decode them.
    assert sim.get_row("RIO", surrogate_id)["pfs_f_model"] == "\ufffd" + model
    assert sim.get_row("RIO", utf8_id)["pfs_f_manufacturer"] == "\ufffd\ufffd" + maker

    served_a = post(http, server, body()).content
    served_b = post(http, server, body(), path=GRIDDATA).content
    assert b'"FIELDNAME":"pfs_f_model","FIELDVALUE":"\\ud800' + model.encode() + b'"' in served_a
    assert b'"FIELDNAME":"pfs_f_manufacturer","FIELDVALUE":"\xff\xfe' + maker.encode() + b'"' in served_a
    assert b'"ALIAS_NAME":"pfs_f_model","VALUE":"\\ud800' + model.encode() + b'"' in served_b
    assert b'"ALIAS_NAME":"pfs_f_manufacturer","VALUE":"\xff\xfe' + maker.encode() + b'"' in served_b
    for pfa_id in (surrogate_id, utf8_id):
        alone = body(ADDON_FILTER={"ALIAS_NAME": "pfs_id", "OPERATOR": "=", "VALUE": pfa_id})
        served = post(http, server, alone).content
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(served)
        with pytest.raises((msgspec.DecodeError, UnicodeDecodeError)):
            msgspec.json.decode(served)
    record = http.get(record_url(server, f"{utf8_id}%23RIO"), headers=headers(), timeout=5)
    assert b'"pfs_f_manufacturer":"\xff\xfe' + maker.encode() + b'"' in record.content

    huge = body(ADDON_FILTER={"ALIAS_NAME": "pfs_id", "OPERATOR": "IN", "VALUE": f"{decimal_id},{number_id}"})
    decimal_row, number_row = shape_a_rows(post(http, server, huge))
    amount = "pfs_f_purchase" if decimal_row["pfs_f_source"] == "Purchase" else "pfs_f_rental"
    assert decimal_row[amount] == "123456789012345678901234567.12345"
    assert number_row["pfs_recordid"] == "9" * 5000

    sim.touch_rows("RIO", 1.0)  # saving a poisoned row keeps its poison
    assert post(http, server, body()).content.count(b"\xff\xfe" + maker.encode()) == 1


def test_poison_kinds_are_opt_in(http, server, sim):
    assert set(POISON_KINDS).isdisjoint(CORRUPTION_KINDS)
    sim.corrupt_rows("RIO", 40)
    assert len(orjson.loads(post(http, server, body()).content)["Result"]["ResultData"]["DATARECORD"]) == 500
    with pytest.raises(ValueError):
        sim.corrupt_rows("RIO", 1, kinds=["nonsense"])


# --- filters and sort ------------------------------------------------------------------------------

OPERATOR_CASES = [
    ("pfs_f_category", "=", "crane", lambda v: v.lower() == "crane"),
    ("pfs_f_category", "!=", "CRANE", lambda v: v != "" and v != "CRANE"),
    ("pfs_f_rental", "<", "1,000", lambda v: v != "" and as_number(v) < 1000),
    ("pfs_f_rental", ">", "9000", lambda v: v != "" and as_number(v) > 9000),
    ("pfs_p_startdate", "<=", "03/01/2025", lambda v: as_date(v) <= dt.datetime(2025, 3, 1)),
    ("pfs_lastmodified", ">=", "06/01/2026 12:00", lambda v: as_date(v) >= dt.datetime(2026, 6, 1, 12)),
    ("pfs_f_model", "BEGINS", "ltm", lambda v: v.lower().startswith("ltm")),
    ("pfs_f_catdesc", "ENDS", "TOWER", lambda v: v.lower().endswith("tower")),
    ("pfs_f_manufacturer", "CONTAINS", "cop", lambda v: "cop" in v.lower()),
    ("pfs_f_manufacturer", "NOTCONTAINS", "cat", lambda v: "cat" not in v.lower()),
    ("pfs_f_category", "IN", "GEN,EXC, PUMP", lambda v: v in ("GEN", "EXC", "PUMP")),
    ("pfs_a_startdate", "IS EMPTY", "", lambda v: v == ""),
    ("pfs_equipment_tag", "NOT EMPTY", "", lambda v: v != ""),
    ("pfs_recordid", ">", "15", lambda v: int(v) > 15),
]


@pytest.mark.parametrize(
    ("alias", "operator", "value", "matches"), OPERATOR_CASES, ids=[case[1] for case in OPERATOR_CASES]
)
def test_filter_operator(http, server, sim, alias, operator, value, matches):
    expected = [row["pfs_id"] for row in sim.rows("RIO") if matches(row[alias])]
    assert 0 < len(expected) < 500  # the case really filters
    got = filtered(http, server, [{"SEQNUM": 1, "ALIAS_NAME": alias, "OPERATOR": operator, "VALUE": value}])
    assert got == expected


def test_single_addon_filter(http, server, sim):
    payload = body(ADDON_FILTER={"ALIAS_NAME": "pfs_f_source", "OPERATOR": "=", "VALUE": "Rental"})
    got = [row["pfs_id"] for row in shape_a_rows(post(http, server, payload))]
    assert got == [row["pfs_id"] for row in sim.rows("RIO") if row["pfs_f_source"] == "Rental"]


def test_and_binds_tighter_than_or_unless_parenthesised(http, server, sim):
    rows = sim.rows("RIO")
    a = {"ALIAS_NAME": "pfs_f_source", "OPERATOR": "=", "VALUE": "Purchase"}
    b = {"ALIAS_NAME": "pfs_f_dor", "OPERATOR": "=", "VALUE": "BEO"}
    c = {"ALIAS_NAME": "pfs_f_discontinued", "OPERATOR": "=", "VALUE": "-1"}
    # Sent out of SEQNUM order on purpose: the server must apply SEQNUM order.
    plain = [{**c, "SEQNUM": 3}, {**a, "SEQNUM": 1, "JOINER": "AND"}, {**b, "SEQNUM": 2, "JOINER": "OR"}]
    grouped = [
        {**a, "SEQNUM": 1, "JOINER": "AND"},
        {**b, "SEQNUM": 2, "JOINER": "OR", "LPAREN": "true"},
        {**c, "SEQNUM": 3, "RPAREN": True},
    ]
    expect_plain = [
        r["pfs_id"]
        for r in rows
        if (r["pfs_f_source"] == "Purchase" and r["pfs_f_dor"] == "BEO") or r["pfs_f_discontinued"] == "-1"
    ]
    expect_grouped = [
        r["pfs_id"]
        for r in rows
        if r["pfs_f_source"] == "Purchase" and (r["pfs_f_dor"] == "BEO" or r["pfs_f_discontinued"] == "-1")
    ]
    assert expect_plain != expect_grouped
    assert filtered(http, server, plain) == expect_plain
    assert filtered(http, server, grouped) == expect_grouped


@pytest.mark.parametrize("operator", ["EQUALS", "GREATER_THAN"])
def test_spelled_out_operator_is_rejected(http, server, operator):
    payload = body(ADDON_FILTER={"ALIAS_NAME": "pfs_a_org", "OPERATOR": operator, "VALUE": "RIO"})
    response = post(http, server, payload)
    assert response.status_code == 400
    assert operator in error_of(response)["Message"]


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (body(ADDON_FILTER={"ALIAS_NAME": "pfs_nope", "OPERATOR": "=", "VALUE": "1"}), "pfs_nope"),
        (body(ADDON_SORT={"ALIAS_NAME": "pfs_bogus", "TYPE": "ASC"}), "pfs_bogus"),
        (body(request_type="LIST.EVERYTHING"), "LIST.EVERYTHING"),
        ({**body(), "GRID": {"GRID_NAME": "OTHERGRID", "CURSOR_POSITION": 1}}, "OTHERGRID"),
        ({**body(), "GRID": {"GRID_ID": "999", "CURSOR_POSITION": 1}}, "999"),
        (
            body(
                MULTIADDON_FILTERS={
                    "MADDON_FILTER": [
                        {"SEQNUM": 1, "ALIAS_NAME": "pfs_id", "OPERATOR": "=", "VALUE": "x", "LPAREN": True}
                    ]
                }
            ),
            "PAREN",
        ),
    ],
    ids=["filter-alias", "sort-alias", "request-type", "grid-name", "grid-id", "parens"],
)
def test_bad_requests_are_400_naming_the_problem(http, server, payload, named):
    response = post(http, server, payload)
    assert response.status_code == 400
    assert named in error_of(response)["Message"]


def test_sort_desc_is_typed(http, server, sim):
    payload = body(
        ADDON_SORT={"ALIAS_NAME": "pfs_f_purchase", "TYPE": "DESC"},
        ADDON_FILTER={"ALIAS_NAME": "pfs_f_source", "OPERATOR": "=", "VALUE": "Purchase"},
    )
    prices = [as_number(row["pfs_f_purchase"]) for row in shape_a_rows(post(http, server, payload))]
    assert len(prices) > 10 and prices == sorted(prices, reverse=True)
    payload = body(ADDON_SORT={"ALIAS_NAME": "pfs_p_startdate", "TYPE": "ASC"})
    dates = [as_date(row["pfs_p_startdate"]) for row in shape_a_rows(post(http, server, payload))]
    assert dates == sorted(dates)
    payload = body(ADDON_SORT={"ALIAS_NAME": "pfs_id", "TYPE": "DESC"}, rows=3)
    assert [row["pfs_id"] for row in shape_a_rows(post(http, server, payload))] == [
        "PFA-0000500",
        "PFA-0000499",
        "PFA-0000498",
    ]


def test_text_orders_by_code_point_in_sorts_and_range_filters(http, server, sim):
    for pfa_id, model in (("Zulu", "b"), ("alpha", "B"), ("PFA-0000100a", "a"), ("PFA-0000100b", "")):
        sim.insert_row("RIO", {"pfs_id": pfa_id, "pfs_f_model": model})

    def ids(
        filters: list[dict[str, Any]], alias: str = "pfs_id", direction: str = "ASC", org: str = "RIO"
    ) -> list[str]:
        payload = body(
            MULTIADDON_FILTERS={"MADDON_FILTER": filters}, ADDON_SORT={"ALIAS_NAME": alias, "TYPE": direction}
        )
        return [row["pfs_id"] for row in shape_a_rows(post(http, server, payload, org=org))]

    def where(operator: str, value: str, alias: str = "pfs_id") -> dict[str, str]:
        return {"ALIAS_NAME": alias, "OPERATOR": operator, "VALUE": value}

    ascending = ids([])
    assert ascending[-3:] == ["PFA-0000500", "Zulu", "alpha"]  # "Z" < "a"
    assert ids([], direction="DESC") == ascending[::-1]
    assert ids([], org="*")[-3:] == ["PFA-0000500", "Zulu", "alpha"]  # HOU's keys end at PFA-0000200
    assert ids([where(">", "Zulu")]) == ["alpha"]
    assert ids([where(">=", "PFA-0000500")]) == ["PFA-0000500", "Zulu", "alpha"]
    assert ids([where("<=", "PFA-0000001")]) == ["PFA-0000001"]
    mine = where("IN", "Zulu,alpha,PFA-0000100a,PFA-0000100b")
    assert ids([mine], alias="pfs_f_model") == ["PFA-0000100b", "alpha", "PFA-0000100a", "Zulu"]  # "", B, a, b
    assert ids([mine, where("<", "a", alias="pfs_f_model")]) == ["alpha"]  # empty is NULL: never less
    # Matching stays case-insensitive.
    assert ids([where("=", "ZULU")]) == ["Zulu"]
    assert ids([where("IN", "zulu,ALPHA")]) == ["Zulu", "alpha"]
    assert "Zulu" not in ids([where("!=", "zulu")])


# --- keyset paging ---------------------------------------------------------------------------------

ASCENDING = {"ALIAS_NAME": "pfs_id", "TYPE": "ASC"}


def keyset_read(
    http,
    server,
    org: str,
    page_size: int,
    after_page: Callable[[int], None] | None = None,
    max_rows: int | None = None,
) -> list[dict[str, str]]:
    """Read an organization the way the sync client does: cursor 1, pfs_id ASC, pfs_id > the last key."""
    rows: list[dict[str, str]] = []
    while max_rows is None or len(rows) < max_rows:
        filters = [{"SEQNUM": 1, "ALIAS_NAME": "pfs_a_org", "OPERATOR": "=", "VALUE": org, "JOINER": "AND"}]
        if rows:
            filters.append({"SEQNUM": 2, "ALIAS_NAME": "pfs_id", "OPERATOR": ">", "VALUE": rows[-1]["pfs_id"]})
        payload = body(rows=page_size, ADDON_SORT=ASCENDING, MULTIADDON_FILTERS={"MADDON_FILTER": filters})
        data = orjson.loads(post(http, server, payload, org=org).content)["Result"]["ResultData"]
        rows += [{f["FIELDNAME"]: f["FIELDVALUE"] for f in record["DATAFIELD"]} for record in data["DATARECORD"]]
        if data["NEXTCURSORPOSITION"] is None:
            return rows
        if after_page:
            after_page(len(rows))
    return rows


def or_never(filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same filters OR-ed with a group no row matches: the same answer, from a full scan."""
    never = [
        {"ALIAS_NAME": "pfs_id", "OPERATOR": "IS EMPTY", "JOINER": "AND", "LPAREN": True},
        {"ALIAS_NAME": "pfs_id", "OPERATOR": "NOT EMPTY", "RPAREN": True},
    ]
    chained = [*filters[:-1], {**filters[-1], "JOINER": "OR"}, *never]
    return [{**entry, "SEQNUM": n + 1} for n, entry in enumerate(chained)]


def test_keyset_read_meets_every_row_once_whatever_the_case_of_its_keys(http, server, sim):
    for pfa_id in ("pfa-0000100", "PFA-0000100a", "Zulu", "alpha", "PFA-0000250B", "PFA-0000250é"):
        sim.insert_row("RIO", {"pfs_id": pfa_id})
    read = [row["pfs_id"] for row in keyset_read(http, server, "RIO", page_size=37)]
    assert read == [row["pfs_id"] for row in sim.rows("RIO")]
    assert read == sorted(read) and len(read) == 506


def test_keyset_pages_see_changes_made_between_them(http, server, sim):
    def change(rows_read: int) -> None:
        if rows_read == 100:
            sim.delete_row("RIO", "PFA-0000300")
            sim.insert_row("RIO", {"pfs_id": "PFA-0000250a"})
            sim.insert_row("RIO", {"pfs_id": "PFA-0000050a"})  # behind the read: not met
            sim.update_row("RIO", "PFA-0000400", {"pfs_f_model": "CHANGED"})

    rows = keyset_read(http, server, "RIO", page_size=100, after_page=change)
    ids = [row["pfs_id"] for row in rows]
    assert ids == sorted({f"PFA-{n:07d}" for n in range(1, 501)} - {"PFA-0000300"} | {"PFA-0000250a"})
    assert rows[ids.index("PFA-0000400")]["pfs_f_model"] == "CHANGED"


def test_keyset_pages_answer_exactly_as_a_full_scan_would(http, server, sim):
    rng = random.Random(20261101)
    for pfa_id in ("pfa-0000100", "PFA-0000100a", "PFA-0000100A", "Zulu", "zz", "PFA-0000250é", "PFA-0000300 "):
        sim.insert_row("RIO", {"pfs_id": pfa_id, "pfs_f_source": "Rental"})
    sim.corrupt_rows("RIO", 3, kinds=["missing_id"])  # rows without an id, which no bound admits
    keys = sorted({row["pfs_id"] for org in ("RIO", "HOU") for row in sim.rows(org)} - {""})

    def bound() -> str:
        key = rng.choice(keys)
        # Keys themselves, values between keys, and values before the first and after the last.
        return rng.choice([key, key, key + "0", key[:-1], key + " ", key.lower(), "!", "A", "PFA-", "\uffff"])

    def entry(alias: str, operator: str, value: str) -> dict[str, Any]:
        return {"ALIAS_NAME": alias, "OPERATOR": operator, "VALUE": value}

    others = [
        lambda: entry("pfs_a_org", "=", rng.choice(["RIO", "HOU"])),
        lambda: entry("pfs_f_source", "=", "rental"),
        lambda: entry("pfs_lastmodified", ">=", "06/01/2026 00:00"),
        lambda: entry("pfs_f_category", "IN", "GEN,CRANE,EXC"),
        lambda: entry("pfs_id", "<", bound()),
        lambda: entry("pfs_id", "NOT EMPTY", ""),
    ]
    answered_rows = 0
    for case in range(300):
        filters = [entry("pfs_id", rng.choice([">", ">="]), bound()) for _ in range(rng.choice([1, 1, 2]))]
        filters += [make() for make in rng.sample(others, rng.choice([0, 1, 1, 2, 3]))]
        rng.shuffle(filters)
        filters = [{**item, "SEQNUM": n + 1, "JOINER": "AND"} for n, item in enumerate(filters)]
        if rng.random() < 0.2:
            filters[-1]["JOINER"] = "OR"  # links to nothing
        if len(filters) > 1 and rng.random() < 0.3:
            # Not a flat AND chain any more: an OR, perhaps inside a group.
            first = rng.randrange(len(filters) - 1)
            filters[first]["JOINER"] = rng.choice(["OR", "AND"])
            if rng.random() < 0.5:
                filters[first]["LPAREN"], filters[first + 1]["RPAREN"] = "true", True
        sim.set_row_cap(rng.choice([40, 10000]))
        page = {
            "rows": rng.choice([1, 7, 100, 10000]),
            "cursor": rng.choice([1, 1, 1, 2, 30, 400, 2000]),
            "request_type": rng.choice(["LIST.DATA_ONLY.STORED", "LIST.DATA_ONLY.STORED", "LIST.COUNT.STORED"]),
            "ADDON_SORT": ASCENDING,
        }
        org = rng.choice(["RIO", "RIO", "HOU", "*"])
        keyset = post(http, server, body(MULTIADDON_FILTERS={"MADDON_FILTER": filters}, **page), org=org)
        scan = post(http, server, body(MULTIADDON_FILTERS={"MADDON_FILTER": or_never(filters)}, **page), org=org)
        assert keyset.status_code == scan.status_code == 200
        assert keyset.content == scan.content, (case, org, filters, page)
        result = keyset.json()["Result"]["ResultData"]
        answered_rows += int(result.get("TOTAL-COUNT") or len(result["DATARECORD"]))
        if case % 25 == 24:
            # Data changes between pages; the cached result of the other filters must follow.
            inserted = f"{rng.choice(keys)}x{case}"
            sim.insert_row("RIO", {"pfs_id": inserted, "pfs_f_source": "Rental"})
            sim.update_row("HOU", f"PFA-{rng.randint(1, 200):07d}", {"pfs_f_source": "Rental"})
            sim.delete_row("RIO", f"PFA-{case:07d}")
            keys = sorted({*keys, inserted})
    assert answered_rows > 10_000  # the cases really select rows


def test_a_keyset_page_costs_a_fraction_of_a_scan(http, server, sim):
    sim.add_organization("BIG", 100_000)

    def scan_seconds(bound: str) -> float:
        org = {"ALIAS_NAME": "pfs_a_org", "OPERATOR": "=", "VALUE": "BIG"}
        after = {"ALIAS_NAME": "pfs_id", "OPERATOR": ">", "VALUE": bound}
        filters = {"MADDON_FILTER": or_never([org, after])}
        started = time.perf_counter()
        assert post(http, server, body(rows=100, MULTIADDON_FILTERS=filters), org="BIG").status_code == 200
        return time.perf_counter() - started

    scan = min(scan_seconds(f"PFA-000000{n}") for n in range(3))  # different bounds: none cached
    page_ends = [time.perf_counter()]
    rows = keyset_read(
        http, server, "BIG", 100, after_page=lambda _: page_ends.append(time.perf_counter()), max_rows=5000
    )
    page_seconds = sorted(end - start for start, end in zip(page_ends[1:], page_ends[2:]))
    assert len(rows) == 5000 and len(page_seconds) == 49  # pages 2 to 50: the first one scans
    # Scanning again for every page would make a read of N pages cost N scans.
    assert page_seconds[len(page_seconds) // 2] < scan / 4, (page_seconds, scan)


# --- incremental reads ------------------------------------------------------------------------------


def test_incremental_filters_answer_exactly_as_a_full_scan_would(http, server, sim):
    rng = random.Random(20261203)
    # Stamps no bound admits, and readable ones in other forms than the grid's.
    odd_stamps = ["", "13/45/2026 10:00", "not a date", "10/31/2026 24:00", "10/31/2026", "1/2/2026 3:04"]
    for n, stamp in enumerate([*odd_stamps, "10/31/2026 23:59:30"], start=1):
        sim.update_row("RIO", f"PFA-{n * 7:07d}", {"pfs_lastmodified": stamp})
    sim.corrupt_rows("RIO", 2, kinds=["missing_id"])
    for value in ("13/45/2026 10:00", "soon"):
        since = [{"SEQNUM": 1, "ALIAS_NAME": "pfs_lastmodified", "OPERATOR": ">=", "VALUE": value}]
        answers = [post(http, server, body(MULTIADDON_FILTERS={"MADDON_FILTER": f})) for f in (since, or_never(since))]
        assert answers[0].status_code == answers[1].status_code == 400
        assert answers[0].content == answers[1].content

    def stamps() -> list[str]:
        saved = {row["pfs_lastmodified"] for org in ("RIO", "HOU") for row in sim.rows(org)} - set(odd_stamps)
        return sorted((stamp for stamp in saved if len(stamp) == 16), key=as_date)

    def entry(alias: str, operator: str, value: str) -> dict[str, Any]:
        return {"ALIAS_NAME": alias, "OPERATOR": operator, "VALUE": value}

    known = stamps()

    def bound() -> str:
        newest = known[-len(known) // 10 :]  # bounds that select few rows, as an incremental read's do
        stamp = rng.choice([rng.choice(known), *[rng.choice(newest)] * 3, sim.now()])
        return rng.choice([stamp, stamp, stamp[:10], "01/01/2000 00:00", "12/31/2099 23:59", "10/31/2026 23:59"])

    others = [
        lambda: entry("pfs_lastmodified", rng.choice([">=", ">"]), bound()),
        lambda: entry("pfs_lastmodified", rng.choice(["<=", "<"]), bound()),
        lambda: entry("pfs_lastmodified", rng.choice(["IS EMPTY", "NOT EMPTY"]), ""),
        lambda: entry("pfs_id", ">", f"PFA-{rng.randint(0, 520):07d}"),
        lambda: entry("pfs_f_source", "=", "rental"),
        lambda: entry("pfs_f_category", "IN", "GEN,CRANE,EXC"),
    ]
    sorts = [{"ALIAS_NAME": "pfs_id", "TYPE": "ASC"}] * 4 + [
        {"ALIAS_NAME": "pfs_id", "TYPE": "DESC"},
        {"ALIAS_NAME": "pfs_lastmodified", "TYPE": rng.choice(["ASC", "DESC"])},
        {"ALIAS_NAME": "pfs_f_model", "TYPE": "ASC"},
    ]
    answered_rows = 0
    for case in range(300):
        org = rng.choice(["RIO", "RIO", "HOU", "*"])
        filters = [entry("pfs_lastmodified", rng.choice([">=", ">"]), bound())]
        if rng.random() < 0.7:
            # The organization's own code, in any case, or another one's.
            named = rng.choice(["RIO", "HOU"]) if org == "*" else org
            filters.append(entry("pfs_a_org", "=", rng.choice([named, named, named.lower(), "HOU", "NOPE"])))
        filters += [make() for make in rng.sample(others, rng.choice([0, 0, 1, 2]))]
        rng.shuffle(filters)
        filters = [{**item, "SEQNUM": n + 1, "JOINER": "AND"} for n, item in enumerate(filters)]
        if rng.random() < 0.2:
            filters[-1]["JOINER"] = "OR"  # links to nothing
        if len(filters) > 1 and rng.random() < 0.2:
            # Not a flat AND chain any more: an OR, perhaps inside a group.
            first = rng.randrange(len(filters) - 1)
            filters[first]["JOINER"] = rng.choice(["OR", "AND"])
            if rng.random() < 0.5:
                filters[first]["LPAREN"], filters[first + 1]["RPAREN"] = True, "true"
        sim.set_row_cap(rng.choice([40, 10000]))
        page = {
            "rows": rng.choice([7, 100, 10000]),
            "cursor": rng.choice([1, 1, 1, 2, 30]),
            "request_type": rng.choice(["LIST.DATA_ONLY.STORED", "LIST.DATA_ONLY.STORED", "LIST.COUNT.STORED"]),
        }
        sort = rng.choice([*sorts, None])
        if sort is not None:
            page["ADDON_SORT"] = sort
        incremental = post(http, server, body(MULTIADDON_FILTERS={"MADDON_FILTER": filters}, **page), org=org)
        scan = post(http, server, body(MULTIADDON_FILTERS={"MADDON_FILTER": or_never(filters)}, **page), org=org)
        assert incremental.status_code == scan.status_code == 200, incremental.text
        assert incremental.content == scan.content, (case, org, filters, page)
        result = incremental.json()["Result"]["ResultData"]
        answered_rows += int(result.get("TOTAL-COUNT") or len(result["DATARECORD"] or []))
        if case % 10 == 9:
            # Saves, inserts, deletions and moves between calls: the next answers must follow them.
            pfa_id = f"PFA-{rng.randint(1, 500):07d}"
            if sim.get_row("RIO", pfa_id) is not None:
                stamp = rng.choice([sim.now(), rng.choice(known), rng.choice(odd_stamps)])
                sim.update_row("RIO", pfa_id, {"pfs_lastmodified": stamp})
            sim.update_row("HOU", f"PFA-{rng.randint(1, 200):07d}", {"pfs_f_model": f"saved {case}"})
            sim.insert_row("RIO", {"pfs_id": f"PFA-{rng.randint(1, 500):07d}x{case}"})
            gone = f"PFA-{rng.randint(201, 500):07d}"
            if sim.get_row("RIO", gone) is None or sim.get_row("HOU", gone) is not None:
                pass
            elif case % 20 == 9:
                sim.delete_row("RIO", gone)
            else:
                sim.move_row("RIO", gone, "HOU")
            sim.touch_rows(rng.choice(["RIO", "HOU"]), 0.02, seed=case)
        if case in (100, 200):
            for _ in range(3):  # more saves than the organization has rows
                sim.touch_rows("RIO", 1.0, seed=case)
        known = stamps()
    assert answered_rows > 10_000  # the cases really select rows


def test_an_incremental_read_costs_a_fraction_of_a_scan(http, server, sim):
    sim.add_organization("BIG", 100_000)

    def seconds(filters: list[dict[str, Any]]) -> float:
        started = time.perf_counter()
        assert post(http, server, body(MULTIADDON_FILTERS={"MADDON_FILTER": filters}), org="BIG").status_code == 200
        return time.perf_counter() - started

    def read(minute: int) -> list[dict[str, Any]]:
        # The filters of an incremental read: the organization, and saves since a recent minute.
        return [
            {"SEQNUM": 1, "ALIAS_NAME": "pfs_a_org", "OPERATOR": "=", "VALUE": "BIG", "JOINER": "AND"},
            {"SEQNUM": 2, "ALIAS_NAME": "pfs_lastmodified", "OPERATOR": ">=", "VALUE": f"10/31/2026 23:{minute:02d}"},
        ]

    # A different bound each time: no answer is cached.
    scan = min(seconds(or_never(read(minute))) for minute in range(3))
    incremental = min(seconds(read(minute)) for minute in range(10, 13))
    # Scanning every row for a read that selects a few would cost it as much as a full read.
    assert incremental < scan / 4, (incremental, scan)


# --- headers, auth and sessions --------------------------------------------------------------------


def test_basic_auth_and_api_key_both_work(http, server):
    assert post(http, server, body(rows=1)).status_code == 200
    hdrs = {"TENANT": DEFAULT_TENANT, "Organization": "RIO", "x-api-key": DEFAULT_API_KEY}
    response = post(http, server, body(rows=1), hdrs=hdrs)
    assert response.status_code == 200
    assert response.headers["Date"] and int(response.headers["Content-Length"]) == len(response.content)


@pytest.mark.parametrize("status", [401, 400, 500])
def test_bad_credentials(http, server, sim, status):
    if status != 401:
        sim.set_auth_failure_status(status)
    response = post(http, server, body(), Authorization=basic(password="wrong"))
    assert response.status_code == status
    assert "authentication" in error_of(response)["Message"].lower()
    no_key = {"tenant": DEFAULT_TENANT, "organization": "RIO", "X-API-KEY": "nope"}
    assert post(http, server, body(), hdrs=no_key).status_code == status


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"tenant": "OTHER"}, "OTHER"),
        ({"tenant": ""}, "tenant"),
        ({"organization": "XYZ"}, "XYZ"),
        ({"organization": ""}, "organization"),
    ],
)
def test_tenant_and_organization_are_checked(http, server, changes, named):
    response = post(http, server, body(), hdrs={**headers(), **changes})
    assert response.status_code == 400
    assert named in error_of(response)["Message"]


def test_keepsession_then_sessionid_then_expiry(http, server, sim):
    response = post(http, server, body(rows=1), keepsession="true")
    session_id = response.json()["Result"]["SessionID"]
    assert session_id
    without_credentials = {"tenant": DEFAULT_TENANT, "organization": "RIO", "sessionid": session_id}
    assert post(http, server, body(rows=1), hdrs=without_credentials).status_code == 200
    assert post(http, server, body(rows=1), hdrs={**without_credentials, "sessionid": "forged"}).status_code == 400
    sim.expire_sessions()
    expired = post(http, server, body(rows=1), hdrs=without_credentials)
    assert expired.status_code == 400
    assert error_of(expired)["Name"] == NO_SESSION_EXCEPTION


def test_request_log_masks_secrets(http, server, sim):
    post(http, server, body(rows=1))
    post(
        http, server, body(rows=1), hdrs={"tenant": DEFAULT_TENANT, "organization": "RIO", "X-API-KEY": DEFAULT_API_KEY}
    )
    first, second = sim.requests[-2:]
    assert first["headers"]["authorization"] == "***" and second["headers"]["x-api-key"] == "***"
    assert first["json"]["REQUEST_TYPE"] == "LIST.DATA_ONLY.STORED" and first["status"] == 200
    assert sim.request_count("/grids") == 2


def test_unknown_path_is_404(http, server):
    assert post(http, server, body(), path="/axis/restservices/nothing").status_code == 404
    assert http.get(server.url + GRIDS, headers=headers(), timeout=5).status_code == 404


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
    time.sleep(0.2)
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


# --- records ---------------------------------------------------------------------------------------


def record_url(server, key: str) -> str:
    return f"{server.url}/axis/restservices/pfa/{key}"


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


def test_touch_saves_a_deterministic_fraction_like_pems(sim):
    twin = PemsSimulator(orgs={"RIO": 500}, seed=1, reference_time=REFERENCE_TIME)
    before = {row["pfs_id"]: row for row in sim.rows("RIO")}
    touched = sim.touch_rows("RIO", 0.02, seed=7)
    assert touched == twin.touch_rows("RIO", 0.02, seed=7)
    assert len(touched) == 10
    now = sim.now()
    for pfa_id in touched:
        old, new = before[pfa_id], sim.get_row("RIO", pfa_id)
        assert int(new["pfs_recordid"]) == int(old["pfs_recordid"]) + 1
        assert new["pfs_lastmodified"][:10] == now[:10]
        unchanged = set(ALIASES) - {"pfs_recordid", "pfs_lastmodified"}
        assert {alias: new[alias] for alias in unchanged} == {alias: old[alias] for alias in unchanged}
    assert len(sim.rows("RIO")) == 500
    assert sim.touch_rows("RIO", 0.02, seed=8) != touched


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


def test_cached_query_sees_changes(http, server, sim):
    first = shape_a_rows(post(http, server, body(rows=1)))[0]
    sim.update_row("RIO", first["pfs_id"], {"pfs_f_model": "CHANGED"})
    assert shape_a_rows(post(http, server, body(rows=1)))[0]["pfs_f_model"] == "CHANGED"


# --- command ---------------------------------------------------------------------------------------


def test_parse_orgs():
    assert parse_orgs("RIO=50000, HOU=20000") == {"RIO": 50000, "HOU": 20000}


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


def test_a_row_with_a_hidden_key_is_served_blank_where_its_key_sorts_and_filters(http, server, sim):
    post(http, server, body())  # a query cached before the row changes
    control = server.url + "/_sim/corrupt"
    damage = {"org": "RIO", "pfs_ids": ["PFA-0000003", "PFA-0000005"], "kinds": ["hidden_id", "bad_flag"]}
    assert http.post(control, json=damage, timeout=5).json() == {"pfs_ids": ["PFA-0000003", "PFA-0000005"]}
    for path, rows_of in ((GRIDS, shape_a_rows), (GRIDDATA, shape_b_rows)):
        rows = rows_of(post(http, server, body(rows=4), path=path))
        assert [row["pfs_id"] for row in rows] == ["PFA-0000001", "PFA-0000002", "", "PFA-0000004"]
        assert rows[2] == {**sim.get_row("RIO", "PFA-0000003"), "pfs_id": ""}
        after = {"ADDON_SORT": {"ALIAS_NAME": "pfs_id", "TYPE": "ASC"}}
        for bound, first in (("PFA-0000002", ""), ("PFA-0000003", "PFA-0000004")):
            bounded = {"ADDON_FILTER": {"ALIAS_NAME": "pfs_id", "OPERATOR": ">", "VALUE": bound}, **after}
            assert rows_of(post(http, server, body(rows=1, **bounded), path=path))[0]["pfs_id"] == first
    assert sim.get_row("RIO", "PFA-0000005")["pfs_f_actualized"] == "X"
    count = post(http, server, body(request_type="LIST.COUNT.STORED")).json()["Result"]["ResultData"]
    assert count["TOTAL-COUNT"] == "500"
    sim.delete_row("RIO", "PFA-0000003")
    assert [row["pfs_id"] for row in shape_a_rows(post(http, server, body(rows=3)))][2] == "PFA-0000004"
