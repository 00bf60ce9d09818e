"""Tests for typing PFA grid rows into mirror records."""

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import orjson
import pytest

from mirror.models import PfaMirror
from mirror.records import PfaRecord, PfaRowError, content_hash, parse_pfa_row, parse_pfa_rows

UTC_ZONE = ZoneInfo("UTC")
CHICAGO = ZoneInfo("America/Chicago")


def full_row(**overrides: str) -> dict[str, str]:
    row = {
        "pfs_id": "PFA-000123",
        "pfs_a_org": "RIO",
        "pfs_recordid": "1,204",
        "pfs_lastmodified": "07/04/2025 09:15",
        "pfs_f_area": "SILO-3",
        "pfs_f_category": "CRANE",
        "pfs_f_catdesc": "Cranes and lifts",
        "pfs_f_class": "C40",
        "pfs_f_source": "Rental",
        "pfs_f_dor": "PROJECT",
        "pfs_f_rental": "5,500.00",
        "pfs_f_purchase": "1,234,567.8912",
        "pfs_f_manufacturer": "Liebherr",
        "pfs_f_model": "LTM 1100",
        "pfs_p_projcode": "P-77",
        "pfs_equipment_tag": "EQ-9",
        "pfs_p_startdate": "01/15/2025",
        "pfs_p_enddate": "12/31/2025",
        "pfs_f_startdate": "2/1/2025",
        "pfs_f_enddate": "11/30/2025",
        "pfs_a_startdate": "02/03/2025",
        "pfs_a_enddate": "",
        "pfs_f_actualized": "-1",
        "pfs_f_discontinued": "0",
        "pfs_f_fundstrans": "Y",
        "udf_tenant_extra": "kept as is",
    }
    row.update(overrides)
    return row


def test_parse_row_types_every_known_column_and_keeps_unknown_ones():
    raw = full_row()
    record = parse_pfa_row(raw, time_zone=CHICAGO, organization_code="RIO")

    assert record.pfa_id == "PFA-000123"
    assert record.pems_record_id == 1204
    # July in Chicago is CDT (UTC-5).
    assert record.pems_last_modified == datetime(2025, 7, 4, 14, 15, tzinfo=UTC)
    assert record.area_silo == "SILO-3"
    assert record.category == "CRANE"
    assert record.category_description == "Cranes and lifts"
    assert record.pfa_class == "C40"
    assert record.source == "Rental"
    assert record.dor == "PROJECT"
    assert record.monthly_rate == Decimal("5500.00")
    assert record.purchase_price == Decimal("1234567.8912")
    assert record.manufacturer == "Liebherr"
    assert record.model == "LTM 1100"
    assert record.project_code == "P-77"
    assert record.equipment_tag == "EQ-9"
    assert record.plan_start_date == date(2025, 1, 15)
    assert record.plan_end_date == date(2025, 12, 31)
    assert record.forecast_start_date == date(2025, 2, 1)
    assert record.forecast_end_date == date(2025, 11, 30)
    assert record.actual_start_date == date(2025, 2, 3)
    assert record.actual_end_date is None
    assert record.is_actualized is True
    assert record.is_discontinued is False
    assert record.is_funds_transferred is True
    assert orjson.loads(record.data) == raw
    assert orjson.loads(record.data)["udf_tenant_extra"] == "kept as is"
    assert record.content_hash == content_hash(raw)


def test_parsed_record_fields_match_the_mirror_model_columns():
    expected = [
        "pfa_id", "pems_record_id", "pems_last_modified", "area_silo", "category", "category_description",
        "pfa_class", "source", "dor", "monthly_rate", "purchase_price", "manufacturer", "model",
        "project_code", "equipment_tag", "plan_start_date", "plan_end_date", "forecast_start_date",
        "forecast_end_date", "actual_start_date", "actual_end_date", "is_actualized", "is_discontinued",
        "is_funds_transferred", "data", "content_hash",
    ]  # fmt: skip
    assert list(PfaRecord._fields) == expected
    assert expected == [f.name for f in PfaMirror._meta.concrete_fields if f.name in expected]
    record = parse_pfa_row(full_row(), time_zone=UTC_ZONE)
    assert not hasattr(record, "__dict__")  # a tuple: a page of these stays small
    with pytest.raises(AttributeError):
        record.pfa_id = "other"


def test_parse_row_with_only_an_id_gives_empty_strings_and_nulls():
    record = parse_pfa_row({"pfs_id": "  PFA-1  "}, time_zone=UTC_ZONE)

    assert record.pfa_id == "PFA-1"
    assert record.pems_record_id is None
    assert record.pems_last_modified is None
    assert record.monthly_rate is None and record.purchase_price is None
    assert record.plan_start_date is None and record.actual_end_date is None
    assert record.category == "" and record.equipment_tag == "" and record.model == ""
    assert (record.is_actualized, record.is_discontinued, record.is_funds_transferred) == (
        False,
        False,
        False,
    )


def test_empty_strings_in_typed_columns_are_null():
    raw = full_row(pfs_recordid="", pfs_lastmodified="", pfs_f_rental="", pfs_p_startdate="", pfs_f_actualized="")
    record = parse_pfa_row(raw, time_zone=UTC_ZONE)
    assert record.pems_record_id is None
    assert record.pems_last_modified is None
    assert record.monthly_rate is None
    assert record.plan_start_date is None
    assert record.is_actualized is False


@pytest.mark.parametrize(("value", "expected"), [("-1", True), ("Y", True), ("0", False), ("N", False), ("", False)])
def test_check_box_values(value, expected):
    record = parse_pfa_row(full_row(pfs_f_discontinued=value), time_zone=UTC_ZONE)
    assert record.is_discontinued is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.5", Decimal("0.5")),
        ("-1,000.25", Decimal("-1000.25")),
        ("12,345,678,901,234.5678", Decimal("12345678901234.5678")),
        ("7.500000", Decimal("7.5000")),  # trailing zeros beyond 4 places still fit
    ],
)
def test_decimals_with_thousands_separators(value, expected):
    assert parse_pfa_row(full_row(pfs_f_rental=value), time_zone=UTC_ZONE).monthly_rate == expected


@pytest.mark.parametrize(
    ("value", "expected_utc"),
    [
        # CST (UTC-6) in winter, CDT (UTC-5) in summer.
        ("01/15/2025 08:00", datetime(2025, 1, 15, 14, 0, tzinfo=UTC)),
        ("07/15/2025 08:00", datetime(2025, 7, 15, 13, 0, tzinfo=UTC)),
        # 02:30 does not exist on 03/09/2025; fold=0 reads it with the offset before the jump (CST).
        ("03/09/2025 02:30", datetime(2025, 3, 9, 8, 30, tzinfo=UTC)),
        # 01:30 happens twice on 11/02/2025; fold=0 picks the first (CDT).
        ("11/02/2025 01:30", datetime(2025, 11, 2, 6, 30, tzinfo=UTC)),
    ],
)
def test_datetime_in_tenant_zone_is_converted_to_utc(value, expected_utc):
    parsed = parse_pfa_row(full_row(pfs_lastmodified=value), time_zone=CHICAGO).pems_last_modified
    assert parsed == expected_utc
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("pfs_f_startdate", "13/45/2024", "pfs_f_startdate: '13/45/2024' is not a MM/DD/YYYY date"),
        ("pfs_p_enddate", "2024-01-05", "pfs_p_enddate: '2024-01-05' is not a MM/DD/YYYY date"),
        ("pfs_a_startdate", "02/30/2024", "pfs_a_startdate: '02/30/2024' is not a MM/DD/YYYY date"),
        ("pfs_lastmodified", "11/20/2025", "pfs_lastmodified: '11/20/2025' is not a MM/DD/YYYY HH:mm"),
        (
            "pfs_lastmodified",
            "11/20/2025 24:10",
            "pfs_lastmodified: '11/20/2025 24:10' is not a MM/DD/YYYY HH:mm",
        ),
        ("pfs_f_rental", "abc", "pfs_f_rental: 'abc' is not a decimal number"),
        ("pfs_f_rental", "1e5", "pfs_f_rental: '1e5' is not a decimal number"),
        ("pfs_f_purchase", "NaN", "pfs_f_purchase: 'NaN' is not a decimal number"),
        ("pfs_f_purchase", "1.23456", "pfs_f_purchase: '1.23456' has more than 4 decimal places"),
        (
            "pfs_f_rental",
            "123,456,789,012,345",
            "pfs_f_rental: '123,456,789,012,345' has more than 14 digits",
        ),
        ("pfs_recordid", "12a", "pfs_recordid: '12a' is not a whole number"),
        ("pfs_recordid", "-3", "pfs_recordid: '-3' is not a whole number"),
        ("pfs_f_actualized", "1", "pfs_f_actualized: '1' is not a check box value"),
        ("pfs_f_fundstrans", "yes", "pfs_f_fundstrans: 'yes' is not a check box value"),
    ],
)
def test_malformed_value_raises_with_column_and_value(column, value, reason):
    with pytest.raises(PfaRowError) as caught:
        parse_pfa_row(full_row(**{column: value}), time_zone=UTC_ZONE)
    assert caught.value.pfa_id == "PFA-000123"
    assert caught.value.reason.startswith(reason)
    assert isinstance(caught.value, ValueError)
    assert "PFA-000123" in str(caught.value) and reason in str(caught.value)


@pytest.mark.parametrize("raw", [{"pfs_f_category": "X"}, {"pfs_id": ""}, {"pfs_id": "   "}])
def test_row_without_id_raises_with_no_pfa_id(raw):
    with pytest.raises(PfaRowError) as caught:
        parse_pfa_row(raw, time_zone=UTC_ZONE)
    assert caught.value.pfa_id is None
    assert caught.value.reason.startswith("pfs_id:")


def test_overlong_id_is_rejected():
    with pytest.raises(PfaRowError, match="longer than 64"):
        parse_pfa_row({"pfs_id": "X" * 65}, time_zone=UTC_ZONE)
    assert parse_pfa_row({"pfs_id": "X" * 64}, time_zone=UTC_ZONE).pfa_id == "X" * 64


def test_row_of_another_organization_is_rejected_when_an_organization_is_given():
    with pytest.raises(PfaRowError) as caught:
        parse_pfa_row(full_row(pfs_a_org="HOU"), time_zone=UTC_ZONE, organization_code="RIO")
    assert caught.value.reason == "pfs_a_org: 'HOU' is not the organization 'RIO'"
    # Without an expected organization any organization is accepted.
    assert orjson.loads(parse_pfa_row(full_row(pfs_a_org="HOU"), time_zone=UTC_ZONE).data)["pfs_a_org"] == "HOU"


def test_content_hash_is_stable_under_key_order_and_changes_with_values():
    raw = full_row()
    reordered = dict(reversed(list(raw.items())))
    assert list(reordered) != list(raw)
    assert content_hash(raw) == content_hash(reordered)
    assert re.fullmatch(r"[0-9a-f]{32}", content_hash(raw))
    assert content_hash(raw) != content_hash(full_row(pfs_f_model="LTM 1101"))
    assert content_hash(raw) != content_hash({**raw, "udf_new_column": ""})


# --- a page at once -----------------------------------------------------------------------------


def test_a_page_sets_aside_only_its_bad_rows_and_keeps_the_order_of_the_rest():
    rows = [
        full_row(pfs_id=f"PFA-{n}", pfs_f_model=f"M{n}", pfs_f_rental=f"{n},000.50", pfs_p_startdate=f"01/{n:02}/2025")
        for n in range(1, 9)
    ]
    rows[1]["pfs_f_startdate"] = "2025-02-01"
    rows[4]["pfs_id"] = ""
    rows[6]["pfs_a_org"] = "HOU"
    parsed = parse_pfa_rows(rows, time_zone=CHICAGO, organization_code="RIO")

    assert [record.pfa_id for record in parsed.records] == ["PFA-1", "PFA-3", "PFA-4", "PFA-6", "PFA-8"]
    # Column by column, each record still gets its own row's values.
    for record in parsed.records:
        n = int(record.pfa_id.removeprefix("PFA-"))
        assert record == parse_pfa_row(rows[n - 1], time_zone=CHICAGO)
        assert record.model == f"M{n}" and record.monthly_rate == Decimal(f"{n}000.50")
        assert record.plan_start_date == date(2025, 1, n) and orjson.loads(record.data) == rows[n - 1]
    assert [(error.pfa_id, error.reason, raw) for error, raw in parsed.rejected] == [
        ("PFA-2", "pfs_f_startdate: '2025-02-01' is not a MM/DD/YYYY date", rows[1]),
        (None, "pfs_id: '' is missing or empty", rows[4]),
        ("PFA-7", "pfs_a_org: 'HOU' is not the organization 'RIO'", rows[6]),
    ]


def test_a_long_page_keeps_page_order_around_its_bad_rows():
    rows = [full_row(pfs_id=f"PFA-{n:04}", pfs_f_rental=f"{n}.25") for n in range(1_201)]
    for n in (3, 499, 500, 1_200):
        rows[n]["pfs_p_enddate"] = "13/45/2025"
    parsed = parse_pfa_rows(rows, time_zone=CHICAGO, organization_code="RIO")

    kept = [n for n in range(1_201) if n not in (3, 499, 500, 1_200)]
    assert [record.pfa_id for record in parsed.records] == [f"PFA-{n:04}" for n in kept]
    assert [record.monthly_rate for record in parsed.records] == [Decimal(f"{n}.25") for n in kept]
    assert [orjson.loads(record.data) for record in parsed.records] == [rows[n] for n in kept]
    assert [(error.pfa_id, raw) for error, raw in parsed.rejected] == [
        (f"PFA-{n:04}", rows[n]) for n in (3, 499, 500, 1_200)
    ]


def test_a_row_holding_a_nul_character_is_set_aside_and_kept_without_it():
    # PostgreSQL cannot store NUL in text or jsonb: one such row must not fail its whole page.
    rows = [full_row(pfs_id=f"PFA-{n}") for n in range(1, 5)]
    rows[0]["pfs_f_model"] = "LTM\x001050"
    rows[1]["pfs_udf_note"] = "\\u0000 typed as text"  # backslash-u0000 is six characters, not a NUL
    rows[2]["pfs_udf\x00"] = "x"
    rows[3]["pfs_id"] = "PFA-\x004"
    parsed = parse_pfa_rows(rows, time_zone=CHICAGO, organization_code="RIO")

    assert [record.pfa_id for record in parsed.records] == ["PFA-2"]
    assert [(error.pfa_id, error.reason) for error, _ in parsed.rejected] == [
        ("PFA-1", "pfs_f_model: 'LTM\\x001050' holds a NUL character, which the database cannot store"),
        ("PFA-3", "'pfs_udf\\x00' (a column name) holds a NUL character, which the database cannot store"),
        ("PFA-\u24004", "pfs_id: 'PFA-\\x004' holds a NUL character, which the database cannot store"),
    ]
    kept = [raw for _, raw in parsed.rejected]
    assert kept[0]["pfs_f_model"] == "LTM\u24001050" and kept[1]["pfs_udf\u2400"] == "x"
    assert not any("\x00" in alias + value for raw in kept for alias, value in raw.items())


def test_a_row_with_several_bad_columns_is_named_by_its_first_one():
    raw = full_row(pfs_f_fundstrans="maybe", pfs_p_enddate="31/12/2025", pfs_f_purchase="1.23456")
    parsed = parse_pfa_rows([full_row(pfs_id="OK"), raw], time_zone=UTC_ZONE)
    assert [record.pfa_id for record in parsed.records] == ["OK"]
    [(error, _)] = parsed.rejected
    assert error.reason == "pfs_f_purchase: '1.23456' has more than 4 decimal places"


def test_cached_converters_answer_per_time_zone_and_per_value():
    raw = full_row(pfs_lastmodified="01/15/2025 08:00")
    assert parse_pfa_row(raw, time_zone=CHICAGO).pems_last_modified == datetime(2025, 1, 15, 14, 0, tzinfo=UTC)
    assert parse_pfa_row(raw, time_zone=UTC_ZONE).pems_last_modified == datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
    # A value seen bad once is bad every time, and a good one after it is still good.
    for _ in range(2):
        assert len(parse_pfa_rows([full_row(pfs_f_rental="1e5")], time_zone=UTC_ZONE).rejected) == 1
        assert parse_pfa_row(full_row(pfs_f_rental="1,00"), time_zone=UTC_ZONE).monthly_rate == Decimal(100)


def test_an_empty_page_gives_nothing():
    parsed = parse_pfa_rows([], time_zone=UTC_ZONE, organization_code="RIO")
    assert parsed.records == [] and parsed.rejected == []


def test_values_too_large_for_their_columns_set_their_row_aside_and_the_page_goes_on():
    rows = [full_row(pfs_id=f"PFA-{n}") for n in range(1, 6)]
    rows[0]["pfs_f_rental"] = "123456789012345678901234567.12345"  # more digits than Decimal's 28
    rows[1]["pfs_f_purchase"] = "9" * 5_000
    rows[2]["pfs_recordid"] = "9" * 5_000  # more digits than int() reads
    rows[3]["pfs_recordid"] = "9,223,372,036,854,775,808"  # one past the largest bigint
    parsed = parse_pfa_rows(rows, time_zone=CHICAGO, organization_code="RIO")

    assert [record.pfa_id for record in parsed.records] == ["PFA-5"]
    reasons = [error.reason for error, _ in parsed.rejected]
    assert reasons[0] == "pfs_f_rental: '123456789012345678901234567.12345' has more than 14 digits before the point"
    assert reasons[1].startswith("pfs_f_purchase: '9999") and reasons[1].endswith(
        "has more than 14 digits before the point"
    )
    assert reasons[2].endswith("is larger than 9,223,372,036,854,775,807, the largest number the mirror stores")
    assert reasons[3] == (
        "pfs_recordid: '9,223,372,036,854,775,808' is larger than 9,223,372,036,854,775,807, "
        "the largest number the mirror stores"
    )
    assert (
        parse_pfa_row(full_row(pfs_recordid="9,223,372,036,854,775,807"), time_zone=CHICAGO).pems_record_id == 2**63 - 1
    )


def test_a_row_holding_text_that_is_not_unicode_is_set_aside_and_kept_readable():
    # What a PEMS answer with bytes that are not UTF-8, or a lone surrogate escape, decodes to.
    rows = [full_row(pfs_id=f"PFA-{n}") for n in range(1, 5)]
    rows[0]["pfs_f_model"] = "LTM\udcff\udcfe"
    rows[2]["pfs_udf\ud800"] = "x"
    rows[3]["pfs_id"] = "PFA-\ud8004"
    assert content_hash(rows[0]) != content_hash(full_row(pfs_id="PFA-1"))  # hashing a damaged row does not fail
    parsed = parse_pfa_rows(rows, time_zone=CHICAGO, organization_code="RIO")

    assert [record.pfa_id for record in parsed.records] == ["PFA-2"]
    assert [(error.pfa_id, error.reason) for error, _ in parsed.rejected] == [
        ("PFA-1", "'pfs_f_model' holds text that is not valid Unicode (damaged bytes in the answer)"),
        ("PFA-3", "'pfs_udf\\ud800' holds text that is not valid Unicode (damaged bytes in the answer)"),
        ("PFA-\\ud8004", "'pfs_id' holds text that is not valid Unicode (damaged bytes in the answer)"),
    ]
    kept = [raw for _, raw in parsed.rejected]
    assert kept[0]["pfs_f_model"] == "LTM\\udcff\\udcfe" and kept[1]["pfs_udf\\ud800"] == "x"
    orjson.dumps(kept)  # what is kept aside is JSON the database can store
