"""The simulator's filter and sort language (`mirror.simulator.filters`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mirror.tests.simulator_requests import as_date, as_number, body, error_of, filtered, post, shape_a_rows

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
