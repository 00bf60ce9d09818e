"""PEMS's save rules (docs/pems-api.md, "Save rules"), in one place, by grid alias.

PEMS applies them to every save: decimals kept with 2 places (rounded half up), text trimmed (empty
means none) and limited in length, no negative rate or price, no end date before its start. The
delta layer checks an edit against them before it is kept (`mirror.delta`), the write-back compares
values in the form PEMS keeps them (`synclog.writeback`), and the simulator applies them to its
PATCHes (`mirror.simulator.records`). Plain Python: the simulator runs without Django.
"""

from collections.abc import Mapping
from datetime import date
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

# PEMS keeps every DECIMAL column with this many places.
DECIMAL_PLACES = 2
_QUANTUM = Decimal(1).scaleb(-DECIMAL_PLACES)
# Wide enough for any value a grid holds: rounding never fails for want of digits.
_WIDE = Context(prec=100)
# Code columns are shorter than the other text columns.
CODE_ALIASES = frozenset({"pfs_f_category", "pfs_f_class", "pfs_f_source", "pfs_f_dor", "pfs_f_area", "pfs_p_projcode"})
CODE_LENGTH = 30
TEXT_LENGTH = 80
NON_NEGATIVE_ALIASES = frozenset({"pfs_f_rental", "pfs_f_purchase"})
# (start, end, what the pair is called): an end before its start is refused.
DATE_PAIRS = (
    ("pfs_p_startdate", "pfs_p_enddate", "plan"),
    ("pfs_f_startdate", "pfs_f_enddate", "forecast"),
    ("pfs_a_startdate", "pfs_a_enddate", "actual"),
)


def decimal_kept(value: Decimal) -> Decimal:
    """The decimal as PEMS keeps it: 2 places, rounded half up (5200.125 -> 5200.13)."""
    return value.quantize(_QUANTUM, rounding=ROUND_HALF_UP, context=_WIDE)


def text_kept(value: str | None) -> str:
    """The text as PEMS keeps it: trimmed; "" (the grid's and the mirror's form of none) if empty."""
    return (value or "").strip()


def text_limit(alias: str) -> int:
    """The longest text PEMS keeps in a text column."""
    return CODE_LENGTH if alias in CODE_ALIASES else TEXT_LENGTH


def value_kept(value: Any) -> Any:
    """A typed value (Decimal, text, date, flag or None) in the form PEMS keeps it; values compare
    equal when PEMS would hold the same."""
    if isinstance(value, Decimal):
        return decimal_kept(value)
    if isinstance(value, str):
        return text_kept(value)
    return value


def places_problem(value: Decimal) -> str | None:
    """Why a decimal has more places than PEMS keeps (pfasync refuses what PEMS would round)."""
    if value != decimal_kept(value):
        return f"Has more than {DECIMAL_PLACES} decimal places: PEMS keeps {DECIMAL_PLACES} (it would save {decimal_kept(value)})."
    return None


def save_problems(changed: Mapping[str, Any], saved: Mapping[str, Any]) -> dict[str, str]:
    """Why PEMS refuses a save, per alias: `changed` holds the aliases the save sets, `saved` the
    whole record as it would be saved (both typed and kept: Decimal, trimmed text, date or None).
    Empty if PEMS takes it."""
    problems: dict[str, str] = {}
    for alias, value in changed.items():
        if isinstance(value, str) and len(value) > (limit := text_limit(alias)):
            problems[alias] = f"Longer than {limit} characters ({len(value)}): PEMS refuses it, it does not cut it."
        elif isinstance(value, Decimal) and alias in NON_NEGATIVE_ALIASES and value < 0:
            problems[alias] = "May not be negative."
    for start, end, pair in DATE_PAIRS:
        if start not in changed and end not in changed:
            continue
        first, last = saved.get(start), saved.get(end)
        if isinstance(first, date) and isinstance(last, date) and last < first:
            named = end if end in changed else start
            problems.setdefault(
                named, f"The {pair} end date ({last.isoformat()}) would be before its start date ({first.isoformat()})."
            )
    return problems
