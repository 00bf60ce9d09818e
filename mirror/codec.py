"""A record field's value in its forms, one codec for all: typed (the model's), JSON (the API's, and
the stored edits' `changes` and `base_values`), a form's text (the admin's) and the grid's text
(what a PATCH sends PEMS).

JSON: dates `YYYY-MM-DD`, amounts decimal strings with the column's places, flags booleans, text
as is, date-times as the API writes them. The records API, the delta layer, the admin and the
write-back all go through here, so a value reads the same wherever it is shown or stored.
"""

from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from django.apps import apps
from django.db.models import Field
from rest_framework.fields import DateTimeField

# The API's own date-time form (ISO 8601 in the current zone, "Z" for UTC), as its serializers write it.
_DATETIME = DateTimeField()


@cache
def _field(name: str) -> Field:
    # From the app registry, not imported: mirror.records uses this module, and mirror.models
    # imports the PEMS client, which imports mirror.records.
    return apps.get_model("mirror", "PfaMirror")._meta.get_field(name)


def value_to_json(name: str, value: Any) -> Any:
    """A typed value of field `name` in its JSON form."""
    if isinstance(value, Decimal):
        return f"{value:.{_field(name).decimal_places}f}"
    return json_value(value, name=name)


def json_value(value: Any, *, name: str = "value") -> Any:
    """A value that is no record field's (a KPI's sum, a bound, a time) in its JSON form: amounts
    with the places they have; dates, date-times, flags and text as a field's are."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return datetime_to_json(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{name}: cannot express {value!r} in JSON")


def datetime_to_json(value: datetime | None) -> str | None:
    """A date-time (a record's or any other the API shows) in its JSON form."""
    return None if value is None else _DATETIME.to_representation(value)


def value_from_json(name: str, value: Any) -> Any:
    """The typed value of field `name` from its JSON form."""
    return _field(name).to_python(value)


def json_from_form(name: str, text: str) -> Any:
    """A form's text as the JSON value of field `name`: flags from true/false (and 1/yes/-1/y),
    other values trimmed, None if empty."""
    if _field(name).get_internal_type() == "BooleanField":
        return text.strip().lower() in ("true", "1", "yes", "-1", "y")
    return text.strip() or None


def grid_text(value: object) -> str:
    """A typed value in the grid's string format: MM/DD/YYYY, 5,200.50, -1/0, "" for none."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "-1" if value else "0"
    if isinstance(value, date):
        return f"{value.month:02}/{value.day:02}/{value.year}"
    if isinstance(value, Decimal):
        places = max(2, -min(0, value.normalize().as_tuple().exponent))
        return f"{value:,.{places}f}"
    return str(value)
