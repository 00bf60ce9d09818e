"""The simulator's grid and count answers, spoken to with raw HTTP (`mirror.simulator.grid`)."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import Any

import msgspec
import orjson
import pytest

from mirror.simulator import ALIASES, COLUMNS, CORRUPTION_KINDS, POISON_KINDS, PemsSimulator
from mirror.tests.simulator_requests import (
    GRIDDATA,
    GRIDS,
    REFERENCE_TIME,
    as_date,
    body,
    headers,
    post,
    record_url,
    shape_a_rows,
    shape_b_rows,
)

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


def test_cached_query_sees_changes(http, server, sim):
    first = shape_a_rows(post(http, server, body(rows=1)))[0]
    sim.update_row("RIO", first["pfs_id"], {"pfs_f_model": "CHANGED"})
    assert shape_a_rows(post(http, server, body(rows=1)))[0]["pfs_f_model"] == "CHANGED"


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
