"""Properties of reading PEMS rows, for any row content: no exception escapes, every row the mirror
cannot store is set aside with a reason, and every other row is stored exactly.

Rows are generated from typed values written as the grid writes them (so the typed values are the
oracle), then damaged: any text in any column (NUL characters and lone surrogates included), columns
missing, unknown or named twice, keys blank or out of order of the grid's types. The examples per
property come from the hypothesis profile named by HYPOTHESIS_PROFILE: `rows` (the default, for the
normal test run) or `long` (see docs/development.md).
"""

import json
import os
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mirror.models import PfaMirror
from mirror.pems import PemsClient, PemsSettings
from mirror.records import REPEATED_COLUMNS, PfaRecord, is_text, parse_pfa_rows
from mirror.store import RECORD_FIELDS, pfa_records_upsert
from mirror.tests.factories import OrganizationFactory
from mirror.tests.pems_stub import StubServer, a_answer, a_row, b_answer, b_row, with_extra_key

settings.register_profile("rows", max_examples=60, deadline=None, database=None, print_blob=True)
settings.register_profile("long", max_examples=2_000, deadline=None, database=None, print_blob=True)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "rows"))

ZONE = ZoneInfo("America/Chicago")
ORG = "RIO"
DECIMALS = ("pfs_f_rental", "pfs_f_purchase")
DATES = ("pfs_p_startdate", "pfs_p_enddate", "pfs_f_startdate", "pfs_f_enddate", "pfs_a_startdate", "pfs_a_enddate")
FLAGS = ("pfs_f_actualized", "pfs_f_discontinued", "pfs_f_fundstrans")
TEXTS = (
    "pfs_f_area",
    "pfs_f_category",
    "pfs_f_catdesc",
    "pfs_f_class",
    "pfs_f_source",
    "pfs_f_dor",
    "pfs_f_manufacturer",
    "pfs_f_model",
    "pfs_p_projcode",
    "pfs_equipment_tag",
)
ALIASES = ("pfs_id", "pfs_a_org", "pfs_recordid", "pfs_lastmodified", *DECIMALS, *DATES, *FLAGS, *TEXTS)
# The typed field of each alias (see PfaRecord).
FIELDS = {
    "pfs_recordid": "pems_record_id",
    "pfs_lastmodified": "pems_last_modified",
    "pfs_f_rental": "monthly_rate",
    "pfs_f_purchase": "purchase_price",
    "pfs_p_startdate": "plan_start_date",
    "pfs_p_enddate": "plan_end_date",
    "pfs_f_startdate": "forecast_start_date",
    "pfs_f_enddate": "forecast_end_date",
    "pfs_a_startdate": "actual_start_date",
    "pfs_a_enddate": "actual_end_date",
    "pfs_f_actualized": "is_actualized",
    "pfs_f_discontinued": "is_discontinued",
    "pfs_f_fundstrans": "is_funds_transferred",
    "pfs_f_area": "area_silo",
    "pfs_f_category": "category",
    "pfs_f_catdesc": "category_description",
    "pfs_f_class": "pfa_class",
    "pfs_f_source": "source",
    "pfs_f_dor": "dor",
    "pfs_f_manufacturer": "manufacturer",
    "pfs_f_model": "model",
    "pfs_p_projcode": "project_code",
    "pfs_equipment_tag": "equipment_tag",
}

# --- strategies: typed values and the grid text they are written as -------------------------------

# Any character: lone surrogates (which damaged bytes decode to) and NUL included.
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
clean_text = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12)


def _grid_date(value: date) -> str:
    return f"{value.month:02}/{value.day:02}/{value.year:04}"


def _grid_decimal(value: Decimal, thousands: bool) -> str:
    return f"{value:,f}" if thousands else f"{value:f}"


# (grid text, the typed value it means or None when it is empty); the second of each pair is a
# value out of the column's range or format, typed as the marker OUT_OF_RANGE.
OUT_OF_RANGE = object()
_in_range_decimal = st.decimals(min_value=-(10**14) + 1, max_value=10**14 - 1, places=4, allow_nan=False)
decimal_cells = st.one_of(
    st.builds(lambda d, sep: (_grid_decimal(d, sep), d), _in_range_decimal, st.booleans()),
    st.builds(lambda d: (f"{d:f}", OUT_OF_RANGE), st.decimals(min_value=10**14, allow_nan=False, allow_infinity=False)),
    st.builds(lambda n: (f"1.{n:05d}1", OUT_OF_RANGE), st.integers(0, 99999)),  # five places or more
    st.just(("", None)),
)
whole_cells = st.one_of(
    st.builds(lambda n: (str(n), n), st.integers(0, 2**63 - 1)),
    st.builds(lambda n: (f"{n:,}", n), st.integers(0, 2**63 - 1)),
    st.builds(lambda n: (str(n), OUT_OF_RANGE), st.integers(2**63, 10**40)),
    st.just(("", None)),
)
date_cells = st.one_of(st.builds(lambda d: (_grid_date(d), d), st.dates()), st.just(("", None)))


def _stamp_cell(moment: datetime) -> tuple[str, object]:
    text = f"{_grid_date(moment)} {moment.hour:02}:{moment.minute:02}"
    try:
        return text, moment.replace(second=0, microsecond=0, tzinfo=ZONE, fold=0).astimezone(UTC)
    except OverflowError:  # years 1 and 9999 at their edges
        return text, OUT_OF_RANGE


edge_moments = st.one_of(
    st.datetimes(max_value=datetime(1, 1, 2)),
    st.datetimes(min_value=datetime(9999, 12, 31)),
)
stamp_cells = st.one_of(
    st.builds(_stamp_cell, st.datetimes()), st.builds(_stamp_cell, edge_moments), st.just(("", None))
)
flag_cells = st.sampled_from([("-1", True), ("0", False), ("Y", True), ("N", False), ("", False)])
text_cells = st.builds(lambda text: (text, text), clean_text)
key_cells = st.builds(
    lambda text: (text, text),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs", "Z", "Cc")), min_size=1, max_size=64),
)
CELLS = {
    "pfs_id": key_cells,
    "pfs_a_org": st.just((ORG, ORG)),
    "pfs_recordid": whole_cells,
    "pfs_lastmodified": stamp_cells,
    **dict.fromkeys(DECIMALS, decimal_cells),
    **dict.fromkeys(DATES, date_cells),
    **dict.fromkeys(FLAGS, flag_cells),
    **dict.fromkeys(TEXTS, text_cells),
}
typed_rows = st.fixed_dictionaries(CELLS)
# What damages a row: any name (a known alias or not) given any value, or a known column left out.
column_names = st.one_of(st.sampled_from(ALIASES), any_text)
damages = st.lists(
    st.one_of(st.tuples(column_names, any_text), st.tuples(st.sampled_from(ALIASES), st.none())), max_size=3
)


@st.composite
def damaged_rows(draw) -> tuple[dict[str, str], dict[str, object] | None]:
    """A raw row, and the typed values it means when it was left undamaged (else None)."""
    cells = draw(typed_rows)
    row = {alias: text for alias, (text, _) in cells.items()}
    changes = draw(st.one_of(st.just([]), damages))
    for name, value in changes:
        if value is None:
            row.pop(name, None)
        else:
            row[name] = value
    typed = {alias: value for alias, (_, value) in cells.items()}
    if changes or OUT_OF_RANGE in typed.values():
        return row, None
    return row, typed


pages = st.lists(damaged_rows(), max_size=8)


def _check_parsed(rows: list[dict[str, str]], parsed) -> None:
    """Every row is a record or set aside, in page order; a set-aside row has a reason and can be kept."""
    assert len(parsed.records) + len(parsed.rejected) == len(rows)
    for error, raw in parsed.rejected:
        assert isinstance(error.reason, str) and error.reason
        kept = orjson.dumps(raw)  # no lone surrogate: a JSON document
        assert b"\\u0000" not in kept  # PostgreSQL's JSON takes no NUL
    for record in parsed.records:
        raw = orjson.loads(record.data)
        assert record.pfa_id == raw["pfs_id"].strip() and 0 < len(record.pfa_id) <= 64
        assert record.content_hash and is_text(record.data.decode())


def _expect_typed(record: PfaRecord | PfaMirror, typed: dict[str, object]) -> None:
    for alias, field in FIELDS.items():
        assert getattr(record, field) == typed[alias], alias
    assert record.pfa_id == typed["pfs_id"].strip()


# --- the parser -----------------------------------------------------------------------------------


@settings(PROFILE)
@given(pages)
def test_the_parser_sets_aside_what_it_cannot_store_and_types_the_rest_exactly(page):
    rows = [row for row, _ in page]
    parsed = parse_pfa_rows(rows, time_zone=ZONE, organization_code=ORG)
    _check_parsed(rows, parsed)
    records = iter(parsed.records)
    rejected_reasons = [error.reason for error, _ in parsed.rejected]
    kept = 0
    for row, typed in page:
        if typed is None or not typed["pfs_id"].strip():
            continue
        # An undamaged row is stored, with the very values it was written from.
        record = next(record for record in records if orjson.loads(record.data) == row)
        _expect_typed(record, typed)
        kept += 1
    assert kept <= len(parsed.records) and len(rejected_reasons) == len(parsed.rejected)


@settings(PROFILE)
@given(typed_rows, st.sampled_from(["pfs_recordid", "pfs_lastmodified", *DECIMALS]))
def test_a_value_out_of_its_columns_range_sets_the_row_aside_naming_the_column(cells, alias):
    row = {name: text for name, (text, _) in cells.items()}
    out_of_range = {
        "pfs_recordid": str(2**63),
        "pfs_lastmodified": "12/31/9999 23:59",
        "pfs_f_rental": "100,000,000,000,000.00",
        "pfs_f_purchase": "0.00001",
    }
    row[alias] = out_of_range[alias]
    parsed = parse_pfa_rows([row], time_zone=ZONE, organization_code=ORG)
    [(error, raw)] = parsed.rejected
    assert raw == row and not parsed.records
    first_bad = next(name for name in ALIASES[2:] if name == alias or cells[name][1] is OUT_OF_RANGE)
    assert error.reason.startswith(f"{first_bad}: ")


# --- both readers of a page -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub():
    with StubServer([]) as server:
        yield server


@st.composite
def wire_pages(draw) -> list[list[tuple[str, str]]]:
    """The cells of a page's rows in key order, with rows PEMS serves without their key among them;
    some rows name a column twice."""
    rows = []
    for row, _ in draw(pages):
        # As JSON reads them: two lone surrogates in a row may be one character written as a pair.
        cells = [(name, value) for name, value in json.loads(json.dumps(list(row.items())))]
        if cells and draw(st.booleans()):
            name, _ = draw(st.sampled_from(cells))
            cells.insert(draw(st.integers(0, len(cells))), (name, draw(any_text)))
        rows.append(cells)
    keyed: dict[str, list[tuple[str, str]]] = {}
    hidden = []
    for cells in rows:
        key = dict(cells).get("pfs_id") or ""
        if key and is_text(key):
            keyed.setdefault(key, cells)
        else:
            hidden.append(cells)
    ordered = [keyed[key] for key in sorted(keyed)]
    for cells in hidden:
        ordered.insert(draw(st.integers(0, len(ordered))), cells)
    return ordered


def _first_page(stub, answer: bytes) -> list[dict[str, str]]:
    stub.answers[:] = [(200, answer)]
    settings_ = PemsSettings(base_url=stub.url, tenant="T", organization=ORG, username="u", secret="pw-secret")
    with PemsClient(settings_, sleep=lambda seconds: None) as client:
        return next(client.iter_pages()).rows


@settings(PROFILE, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wire_pages(), st.sampled_from(["A", "B"]))
def test_the_fast_and_the_general_reader_give_the_same_rows(stub, cells, shape):
    if shape == "A":
        answer = a_answer([a_row(*row) for row in cells], next_cursor=None)
    else:
        answer = b_answer([b_row(*row) for row in cells], more="-")
    # JSON writes a lone surrogate as an escape, which the general reader decodes as damaged text.
    plain = orjson.dumps(answer) if all(is_text(name + value) for row in cells for name, value in row) else None
    general = json.dumps(with_extra_key(answer)).encode()  # a key the contract does not show: the general reader
    rows = _first_page(stub, general)
    if plain is not None:
        assert _first_page(stub, plain) == rows
    assert len(rows) == len(cells)
    for row, wire in zip(rows, cells, strict=True):
        # A column named twice: its last value, and the mark that sets the row aside.
        assert {name: value for name, value in row.items() if name != REPEATED_COLUMNS} == dict(wire)
        assert (REPEATED_COLUMNS in row) == (len({name for name, _ in wire}) < len(wire))
    parsed = parse_pfa_rows(rows, time_zone=ZONE, organization_code=ORG)
    _check_parsed(rows, parsed)
    assert all(REPEATED_COLUMNS not in orjson.loads(record.data) for record in parsed.records)


# --- the round trip through PostgreSQL ------------------------------------------------------------


class _RolledBack(Exception):
    pass


@pytest.mark.django_db
@settings(PROFILE, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pages, st.booleans())
def test_rows_the_parser_keeps_are_stored_exactly_and_rows_it_sets_aside_can_be_kept(page, first_load):
    organization = OrganizationFactory.build(code=ORG)
    rows = [row for row, _ in page]
    parsed = parse_pfa_rows(rows, time_zone=ZONE, organization_code=ORG)
    try:
        with transaction.atomic():
            organization.save()
            synced_at = datetime.now(UTC) - timedelta(days=1)
            pfa_records_upsert(
                organization_id=organization.pk, records=parsed.records, synced_at=synced_at, expect_new=first_load
            )
            stored = {record.pfa_id: record for record in PfaMirror.objects.filter(organization=organization)}
            last = {record.pfa_id: record for record in parsed.records}  # a key twice: the last one wins
            assert stored.keys() == last.keys()
            for pfa_id, record in last.items():
                for field in RECORD_FIELDS:
                    value = getattr(stored[pfa_id], field.attname)
                    expected = orjson.loads(record.data) if field.name == "data" else getattr(record, field.name)
                    assert value == expected, field.name
            for row, typed in page:
                # An undamaged row stored last under its key holds the values it was written from.
                if typed is not None and stored[typed["pfs_id"].strip()].data == row:
                    _expect_typed(stored[typed["pfs_id"].strip()], typed)
            with connection.cursor() as cursor:
                for error, raw in parsed.rejected:  # what a run keeps of a row set aside
                    cursor.execute(
                        "SELECT %s::jsonb, %s::text, %s::text",
                        [orjson.dumps(raw).decode(), error.reason, error.pfa_id or ""],
                    )
            raise _RolledBack
    except _RolledBack:
        pass
