"""The records list's cursor: where the next page starts (the last record's ordering value and
pfa_id), as an opaque URL-safe text the client passes back.

The cursor names the ordering it was made for (the API's name, `-forecastStartDate`); its value is
in the field's JSON form (`mirror.codec`), and is checked on the way back in as any input is.
"""

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError

from mirror.codec import value_to_json
from mirror.models import PfaMirror
from pfasync.api import text_problem


class CursorInvalid(ValueError):
    """A cursor that is not one this list made for this ordering."""


def cursor_encode(*, ordering: str, field: str, after: tuple[Any, str]) -> str:
    """The cursor continuing after `after` (value of `field`, pfa_id) in the list ordered by `ordering`."""
    text = json.dumps([ordering, value_to_json(field, after[0]), after[1]], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def cursor_decode(*, cursor: str, ordering: str, field: str) -> tuple[Any, str]:
    """The (value of `field`, pfa_id) a cursor continues after; CursorInvalid for a cursor not made
    for this ordering.

    A cursor comes from the client, so its values are checked as any input: each a string (as
    `cursor_encode` writes them) the ordering's column takes, within its length or digits, finite,
    with no NUL or lone surrogate; the pfa_id likewise."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        made_for, value, pfa_id = json.loads(text)
        if made_for != ordering:
            raise ValueError
        return _cursor_value(field, value), _cursor_value("pfa_id", pfa_id)
    except (ValueError, TypeError, KeyError, binascii.Error, ValidationError, RecursionError):
        raise CursorInvalid(cursor) from None


def _cursor_value(name: str, value: Any) -> Any:
    """A cursor's value for column `name`, typed and checked by the column's own rules; ValueError if bad."""
    field = PfaMirror._meta.get_field(name)
    if value is None and field.null:
        return None
    if not isinstance(value, str) or text_problem(value):
        raise ValueError
    typed = field.to_python(value)
    if isinstance(typed, datetime) and typed.tzinfo is None:
        raise ValueError  # the cursors we write carry their zone
    field.run_validators(typed)  # max_length, max_digits (a finite number), integer ranges
    return typed
