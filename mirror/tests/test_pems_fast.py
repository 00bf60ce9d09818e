"""The fast path for grid data pages: plain pages decoded to rows, anything else left to the
general decode, and columns a read has not met yet still read."""

import orjson
import pytest
import requests

from mirror.pems.fast import PageDecoder
from mirror.records import REPEATED_COLUMNS
from mirror.simulator import DEFAULT_PASSWORD, DEFAULT_TENANT, DEFAULT_USERNAME, PemsSimulator, SimulatorServer
from mirror.tests.pems_stub import ODD_VALUES, a_answer, a_row, b_answer, b_row, with_extra_key


@pytest.fixture
def sim():
    return PemsSimulator(orgs={"RIO": 500}, seed=1, row_cap=10_000)


@pytest.fixture
def server(sim):
    with SimulatorServer(sim, host="127.0.0.1", port=0) as running:
        yield running


def fetch_page_body(server, cursor: int) -> bytes:
    """A raw grid page of 200 rows from the simulator, as the client receives it."""
    body = {
        "GRID": {
            "GRID_NAME": "CUPFAG",
            "GRID_ID": "100541",
            "NUMBER_OF_ROWS_FIRST_RETURNED": 200,
            "CURSOR_POSITION": cursor,
        },
        "REQUEST_TYPE": "LIST.DATA_ONLY.STORED",
        "ADDON_SORT": {"ALIAS_NAME": "pfs_id", "TYPE": "ASC"},
        "ADDON_FILTER": {"ALIAS_NAME": "pfs_a_org", "OPERATOR": "=", "VALUE": "RIO"},
    }
    response = requests.post(
        f"{server.url}/axis/restservices/grids",
        json=body,
        headers={"tenant": DEFAULT_TENANT, "organization": "RIO"},
        auth=(DEFAULT_USERNAME, DEFAULT_PASSWORD),
        timeout=5,
    )
    assert response.status_code == 200
    return response.content


@pytest.mark.parametrize("shape", ["A", "B"])
def test_a_simulator_page_is_decoded_to_its_rows(sim, server, shape):
    sim.set_shape(shape)
    first_id = sim.rows("RIO")[0]["pfs_id"]
    sim.update_row("RIO", first_id, {"pfs_f_model": ODD_VALUES, "pfs_f_manufacturer": "Ünïcödé"})
    decoder = PageDecoder()
    first, last = (decoder.decode(fetch_page_body(server, cursor)) for cursor in (1, 401))
    assert first.rows == sim.rows("RIO")[:200] and last.rows == sim.rows("RIO")[400:]
    assert first.rows[0]["pfs_f_model"] == ODD_VALUES
    assert all(type(value) is str for row in first.rows for value in (*row, *row.values()))
    assert first.shape == last.shape == shape
    if shape == "A":
        assert (first.next_position, last.next_position) == ("201", None)
    else:
        assert (first.more_records, first.current_position, last.more_records) == ("+", "200", "-")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (a_answer([a_row(("pfs_id", "A"), ("é", ODD_VALUES))], next_cursor="1,001"),
         ([{"pfs_id": "A", "é": ODD_VALUES}], "A", "1,001", None, None)),
        (a_answer([a_row(("pfs_id", "A"), ("pfs_id", "B"))], next_cursor=5),
         ([{"pfs_id": "B", REPEATED_COLUMNS: "'pfs_id': 'A', 'B'"}], "A", 5, None, None)),
        (a_answer(None, next_cursor=None), ([], "A", None, None, None)),
        (a_answer([], next_cursor=""), ([], "A", "", None, None)),
        (b_answer([b_row(("pfs_id", "A"))], current=4, more="-"), ([{"pfs_id": "A"}], "B", None, "-", 4)),
        (b_answer([b_row(("pfs_id", "A"))], more=None), ([{"pfs_id": "A"}], "B", None, None, "4")),
    ],
)  # fmt: skip
def test_a_plain_page_is_decoded_with_its_cursor_fields_as_sent(answer, expected):
    page = PageDecoder().decode(orjson.dumps(answer))
    assert (page.rows, page.shape, page.next_position, page.more_records, page.current_position) == expected


@pytest.mark.parametrize(
    "answer",
    [
        a_answer([a_row(("pfs_id", "A"), ("pfs_recordid", 7))]),
        a_answer([a_row(("pfs_id", "A"), ("pfs_f_rental", None))]),
        b_answer([{"CELL": [{"ALIAS_NAME": "pfs_id"}]}]),
        a_answer({"DATAFIELD": {"FIELDNAME": "pfs_id", "FIELDVALUE": "A"}}),
        a_answer("", next_cursor=None),
        a_answer([a_row(("pfs_id", "A"))], next_cursor=5.0),
        b_answer([b_row(("pfs_id", "A"))], current=2**63),
        with_extra_key(b_answer([b_row(("pfs_id", "A"))]), "Result", "ResultData", "GRID", "METADATA"),
        {**a_answer([a_row(("pfs_id", "A"))]), "ErrorAlert": [{"Name": "W", "Message": "m"}]},
        {"Result": {"ResultData": {"NEXTCURSORPOSITION": "2"}}},
    ],
)
def test_an_answer_the_structs_do_not_describe_exactly_is_left_to_the_general_decode(answer):
    assert PageDecoder().decode(orjson.dumps(answer)) is None


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps(a_answer([a_row(("pfs_id", "A"))]))[:-2],
        orjson.dumps(a_answer([a_row(("pfs_id", "A\xff"))])).replace(b"A\xc3\xbf", b"A\xff"),
    ],
)
def test_a_body_that_is_not_json_is_left_to_the_general_decode(body):
    assert PageDecoder().decode(body) is None


@pytest.mark.parametrize("shape", ["A", "B"])
def test_a_column_the_read_has_not_met_is_still_read(shape):
    def page(*cells) -> bytes:
        return orjson.dumps(a_answer([a_row(*cells)]) if shape == "A" else b_answer([b_row(*cells)]))

    decoder = PageDecoder()
    pages = [
        page(("pfs_id", "A"), ("pfs_f_model", "M1")),
        page(("pfs_id", "B"), ("pfs_f_model", "M2")),
        page(("pfs_id", "C"), ("pfs_udf_new", "N")),
        page(("pfs_udf_new", "N2"), ("pfs_id", "D")),
    ]
    assert [decoder.decode(body).rows for body in pages] == [
        [{"pfs_id": "A", "pfs_f_model": "M1"}],
        [{"pfs_id": "B", "pfs_f_model": "M2"}],
        [{"pfs_id": "C", "pfs_udf_new": "N"}],
        [{"pfs_udf_new": "N2", "pfs_id": "D"}],
    ]


def test_a_data_type_the_read_has_not_met_is_still_read():
    decoder = PageDecoder()
    decoder.decode(orjson.dumps(a_answer([a_row(("pfs_id", "A"))])))
    answer = a_answer([a_row(("pfs_id", "B"))])
    answer["Result"]["ResultData"]["DATARECORD"][0]["DATAFIELD"][0]["DATATYPE"] = "MIXVARCHAR"
    assert decoder.decode(orjson.dumps(answer)).rows == [{"pfs_id": "B"}]


def test_a_read_with_more_column_names_than_it_learns_reads_on():
    # More column names than any real grid has (thousands): the read stops learning them and every
    # page, with a name met before or a new one, is still read whole.
    decoder = PageDecoder()
    wide = [(f"col{n}", str(n)) for n in range(2_500)]
    for cells in [wide[:1_200], wide[1_200:], [("col_new", "x")], wide[:3], [("col_new", "y"), ("col7", "7")]]:
        page = decoder.decode(orjson.dumps(a_answer([a_row(("pfs_id", "A"), *cells)])))
        assert page.rows == [{"pfs_id": "A", **dict(cells)}]
