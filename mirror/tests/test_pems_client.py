"""The PEMS client's requests (`mirror.pems.client`): a full read paged by key, rows served without
their key, the count, the filters sent, and the single-record GET and PATCH."""

import json
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from mirror.pems import (
    GridFilter,
    PemsNotFound,
    PemsProtocolError,
    PemsRecordConflict,
    PemsRequestError,
    organization_filter,
)
from mirror.records import parse_pfa_row
from mirror.simulator import DEFAULT_TENANT
from mirror.tests.pems_stub import (
    UTC_ZONE,
    StubServer,
    a_answer,
    a_row,
    grid_requests,
    key,
    logged_requests,
    read_all,
    shape_a,
    shape_b,
    stub_client,
)


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


@pytest.mark.parametrize("shape", ["A", "B"])
def test_simulator_pages_are_read_whole_in_either_shape(sim, make_client, shape):
    sim.set_shape(shape)
    sim.set_row_cap(150)
    rows, pages = read_all(make_client(page_size=1000))
    assert rows == sim.rows("RIO")
    assert [page.more for page in pages] == [True, True, True, False]
