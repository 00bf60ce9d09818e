"""A record field's value between its typed, JSON, form and grid forms."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from mirror.codec import datetime_to_json, grid_text, json_from_form, value_from_json, value_to_json


@pytest.mark.parametrize(
    ("name", "typed", "json"),
    [
        ("monthly_rate", Decimal("5200.5"), "5200.5000"),
        ("forecast_start_date", date(2026, 3, 1), "2026-03-01"),
        ("is_discontinued", True, True),
        ("manufacturer", "Liebherr", "Liebherr"),
        ("monthly_rate", None, None),
        ("pems_record_id", 7, 7),
    ],
)
def test_a_typed_value_goes_to_json_and_back(name, typed, json):
    assert value_to_json(name, typed) == json
    assert value_from_json(name, json) == typed


def test_a_date_time_is_written_as_the_api_writes_it(settings):
    settings.TIME_ZONE = "UTC"
    moment = datetime(2026, 3, 8, 14, 30, tzinfo=UTC)
    assert value_to_json("pems_last_modified", moment) == datetime_to_json(moment) == "2026-03-08T14:30:00Z"
    assert value_from_json("pems_last_modified", "2026-03-08T14:30:00Z") == moment
    assert datetime_to_json(None) is None


def test_a_form_text_becomes_the_json_value_of_its_field():
    assert json_from_form("is_actualized", " True ") is True
    assert json_from_form("is_actualized", "no") is False
    assert json_from_form("monthly_rate", " 12.50 ") == "12.50"
    assert json_from_form("manufacturer", "   ") is None


def test_a_typed_value_in_the_grid_text_pems_reads():
    assert grid_text(Decimal("5200.5000")) == "5,200.50"
    assert grid_text(Decimal("1.12345")) == "1.12345"
    assert grid_text(date(2026, 3, 1)) == "03/01/2026"
    assert (grid_text(True), grid_text(False), grid_text(None)) == ("-1", "0", "")
