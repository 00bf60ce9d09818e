"""Reading PEMS's answers (`mirror.pems.answers`): both shapes, counts with separators, cells of any
type, odd and damaged text, and answers the contract does not describe."""

import orjson
import pytest

from mirror.pems import PemsProtocolError
from mirror.pems.fast import PageDecoder
from mirror.records import REPEATED_COLUMNS
from mirror.tests.pems_stub import (
    ODD_VALUES,
    PLAIN_A,
    StubServer,
    a_answer,
    a_row,
    b_answer,
    b_row,
    stub_client,
    with_extra_key,
)


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
