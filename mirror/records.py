"""PFA grid rows typed for the mirror.

`parse_pfa_rows` types a whole page of raw rows (alias -> string) column by column into
`PfaRecord`s, whose fields are the columns of `mirror.models.PfaMirror`, and sets aside each row
that cannot be stored with a PfaRowError naming its first bad column. A page is typed per column
because a grid repeats few distinct dates, amounts and flags: each column is one pass of cached
converters at C speed instead of a dozen Python calls per row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache, lru_cache
from itertools import repeat
from operator import itemgetter
from typing import NamedTuple
from zoneinfo import ZoneInfo

import orjson
from django.apps import apps
from django.db.models import BigIntegerField, Field

# The way back, typed values as the grid writes them (for PATCHes to PEMS), is the codec's.


class PfaRowError(ValueError):
    """One grid row cannot be stored; `reason` names the column and the bad value."""

    def __init__(self, pfa_id: str | None, reason: str) -> None:
        super().__init__(pfa_id, reason)
        self.pfa_id = pfa_id
        self.reason = reason

    def __str__(self) -> str:
        who = f"PFA {self.pfa_id!r}" if self.pfa_id else "PFA row without an id"
        return f"{who} cannot be stored: {self.reason}"


class PfaRecord(NamedTuple):
    """One PFA row, typed for the `pfa_mirror` table (same columns, same order: checked against
    `PfaMirror.pfa_columns` when the first page is typed); `data` keeps the whole raw row as JSON
    with its keys sorted, the text `content_hash` digests."""

    pfa_id: str
    pems_record_id: int | None
    pems_last_modified: datetime | None
    area_silo: str
    category: str
    category_description: str
    pfa_class: str
    source: str
    dor: str
    monthly_rate: Decimal | None
    purchase_price: Decimal | None
    manufacturer: str
    model: str
    project_code: str
    equipment_tag: str
    plan_start_date: date | None
    plan_end_date: date | None
    forecast_start_date: date | None
    forecast_end_date: date | None
    actual_start_date: date | None
    actual_end_date: date | None
    is_actualized: bool
    is_discontinued: bool
    is_funds_transferred: bool
    data: bytes
    content_hash: str


@dataclass
class ParsedRows:
    """A page of rows typed: the records to store and the rows set aside, with why."""

    records: list[PfaRecord] = field(default_factory=list)
    rejected: list[tuple[PfaRowError, dict[str, str]]] = field(default_factory=list)


_BIGINT_MAX = BigIntegerField.MAX_BIGINT
_FLAGS = {"-1": True, "Y": True, "0": False, "N": False, "": False}
_sorted_json = orjson.OPT_SORT_KEYS
_59_MINUTES = timedelta(minutes=59)
_MINUTES = {f"{minute:02}": timedelta(minutes=minute) for minute in range(60)}


def content_hash(raw: dict[str, str]) -> str:
    """A stable 32-hex digest of a raw row, independent of key order."""
    return _digest(_canonical_json(raw))


def _canonical_json(raw: dict[str, str]) -> bytes:
    """The row's JSON, keys sorted; text that is not valid Unicode (see `_undecodable_column`)
    is written with its bad code points escaped, so that such a row still has a JSON form."""
    try:
        return orjson.dumps(raw, option=_sorted_json)
    except TypeError:
        return orjson.dumps(_readable(raw), option=_sorted_json)


# A PEMS body whose text is damaged (bytes that are not UTF-8, a lone surrogate escape) decodes to
# strings holding lone surrogates, which no database column or JSON document can hold: the row is
# set aside, and kept aside with those code points written out as escapes (`\udcff`).
def _undecodable_column(row: dict[str, str]) -> str | None:
    """The first column of `row` whose name or value is not valid Unicode text."""
    return next((alias for alias, value in row.items() if not (is_text(alias) and is_text(value))), None)


def is_text(value: str) -> bool:
    """Whether `value` is valid Unicode text (holds no lone surrogate)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _readable(row: dict[str, str]) -> dict[str, str]:
    def readable(text: str) -> str:
        return text.encode("utf-8", "backslashreplace").decode() if not is_text(text) else text

    return {readable(alias): readable(value) for alias, value in row.items()}


def _digest(canonical_json: bytes) -> str:
    return hashlib.blake2b(canonical_json, digest_size=16).hexdigest()


# PostgreSQL stores no NUL character in text, and its JSON functions refuse one: a row holding
# one is set aside, and kept aside with each NUL shown as U+2400 (␀). JSON writes NUL as this
# escape; a value holding a backslash and "u0000" matches too, and is then looked at more closely.
_JSON_NUL = b"\\u0000"
_NUL_SHOWN = "\u2400"


def _nul_column(row: dict[str, str]) -> str | None:
    """The first column of `row` whose name or value holds a NUL character."""
    return next((alias for alias, value in row.items() if "\x00" in alias or "\x00" in value), None)


def _without_nul(row: dict[str, str]) -> dict[str, str]:
    return {alias.replace("\x00", _NUL_SHOWN): value.replace("\x00", _NUL_SHOWN) for alias, value in row.items()}


# A wire row that names a column twice has no one value for it: the readers of a PEMS answer
# (`mirror.pems`, `mirror.pems.fast`) keep the last value and add this key, naming the repeated
# columns and all their values, and the row is set aside. No JSON column name can be stored with a
# NUL in it, so a row never carries this key unless a reader put it there.
REPEATED_COLUMNS = "\x00repeated columns"


def row_with_repeated_columns(cells: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The row of `cells` (name, value), in which some name appears more than once."""
    row = dict(cells)
    repeated = {name: [value for other, value in cells if other == name] for name in row}
    row[REPEATED_COLUMNS] = "; ".join(
        f"{name!r}: {', '.join(map(repr, values))}" for name, values in repeated.items() if len(values) > 1
    )
    return row


def pfa_keys(rows: Sequence[dict[str, str]]) -> list[str]:
    """Each row's key (`pfs_id`) as the mirror stores it; "" for a row without one.

    The one rule for a row's key, used by the client's key order and paging bounds
    (`mirror.pems.answers`) as by the mirror: the wire value trimmed. PEMS trims text when it saves
    it (docs/pems-api.md, "Save rules"), so the keys it holds, sorts and filters by are trimmed; a
    key that is blank once trimmed is a key the client cannot see.
    """
    return [(row.get("pfs_id") or "").strip() for row in rows]


def parse_pfa_row(raw: dict[str, str], *, time_zone: ZoneInfo, organization_code: str | None = None) -> PfaRecord:
    """Type one raw grid row; raises PfaRowError naming the first bad column."""
    parsed = parse_pfa_rows([raw], time_zone=time_zone, organization_code=organization_code)
    if parsed.rejected:
        raise parsed.rejected[0][0]
    return parsed.records[0]


def parse_pfa_rows(
    rows: Sequence[dict[str, str]], *, time_zone: ZoneInfo, organization_code: str | None = None
) -> ParsedRows:
    """Type a page of raw grid rows. A row with a bad value is set aside with the reason of its
    first bad column (in `PfaRecord` order); the others become records, in page order.

    `organization_code`, when given, is the only `pfs_a_org` accepted.
    """
    reasons: dict[int, str] = {}  # row index -> why it is set aside; the first column to fail wins
    keys = pfa_keys(rows)
    key_max_length = _layout().key_max_length
    if not all(keys) or max(map(len, keys), default=0) > key_max_length:
        for index, key in enumerate(keys):
            if not key:
                reasons[index] = f"pfs_id: {rows[index].get('pfs_id')!r} is missing or empty"
            elif len(key) > key_max_length:
                reasons[index] = f"pfs_id: {key!r} is longer than {key_max_length} characters"
    if organization_code is not None:
        orgs = [(row.get("pfs_a_org") or "").strip() for row in rows]
        if orgs.count(organization_code) != len(orgs):
            for index, org in enumerate(orgs):
                if org != organization_code:
                    reasons.setdefault(index, f"pfs_a_org: {org!r} is not the organization {organization_code!r}")
    columns: list[Sequence] = [keys]
    for (alias, column), raw_values in zip(_column_converters(time_zone), _raw_columns(rows), strict=True):
        if column is None:  # text
            columns.append(raw_values)
            continue
        values, bad = column.convert(raw_values)
        for index, reason in bad.items():
            reasons.setdefault(index, f"{alias}: {raw_values[index]!r} {reason}")
        columns.append(values)
    try:
        canonical = [orjson.dumps(row, option=_sorted_json) for row in rows]
    except TypeError:  # text that is not valid Unicode, in some row
        canonical = list(map(_canonical_json, rows))
        for index, row in enumerate(rows):
            if (alias := _undecodable_column(row)) is not None:
                reasons.setdefault(
                    index, f"{alias!r} holds text that is not valid Unicode (damaged bytes in the answer)"
                )
    with_nul = {
        index: alias
        for index, text in enumerate(canonical)
        if _JSON_NUL in text and (alias := _nul_column(rows[index])) is not None
    }
    for index, alias in with_nul.items():
        if REPEATED_COLUMNS in rows[index]:  # this reason first: the row's other values may be wrong ones
            reasons[index] = (
                f"the answer names a column more than once in this row ({rows[index][REPEATED_COLUMNS]}), "
                "so it holds no one value for it"
            )
            continue
        where = f"{alias!r} (a column name)" if "\x00" in alias else f"{alias}: {rows[index][alias]!r}"
        reasons.setdefault(index, f"{where} holds a NUL character, which the database cannot store")
    columns.append(canonical)
    columns.append(list(map(_digest, canonical)))
    records = list(map(PfaRecord._make, zip(*columns, strict=True)))
    if not reasons:
        return ParsedRows(records)
    rejected = []
    for index in sorted(reasons):
        key, raw = keys[index] or None, rows[index]
        if index in with_nul:
            key, raw = key and key.replace("\x00", _NUL_SHOWN), _without_nul(raw)
        if _undecodable_column(raw) is not None:
            raw = _readable(raw)
            key = key and _readable({"": key})[""]
        rejected.append((PfaRowError(key, reasons[index]), raw))
    return ParsedRows([record for index, record in enumerate(records) if index not in reasons], rejected)


def _raw_columns(rows: Sequence[dict[str, str]]) -> list[Sequence[str]]:
    """The values of each typed column (`_Layout.aliases`) of `rows`; "" where a row lacks it."""
    layout = _layout()
    if not rows:
        return [()] * len(layout.aliases)
    try:
        # The common case, every column in every row, at C speed: one tuple per row, transposed.
        return list(zip(*map(layout.column_values, rows), strict=True))
    except KeyError:
        return [[row.get(alias, "") for row in rows] for alias in layout.aliases]


class _Unreadable(ValueError):
    """A converter cannot read a value; str() says what is wrong with it."""


_NOT_WHOLE = "is not a whole number"
_TOO_LARGE_WHOLE = f"is larger than {_BIGINT_MAX:,}, the largest number the mirror stores"
_NOT_DECIMAL = "is not a decimal number"
_NOT_DATE = "is not a MM/DD/YYYY date"
_NOT_DATETIME = "is not a MM/DD/YYYY HH:mm date and time"
_NOT_IN_UTC_RANGE = "is a date and time too close to year 1 or 9999 to be converted to UTC"
_NOT_FLAG = "is not a check box value (-1/0 or Y/N)"


def _whole_number(value: str | None) -> int | None:
    if not value or not (text := value.strip()):
        return None
    digits = text.replace(",", "")
    if not (digits.isascii() and digits.isdigit()):
        raise _Unreadable(_NOT_WHOLE)
    # Checked by length first: int() refuses to read more than 4,300 digits.
    if len(digits.lstrip("0")) > len(str(_BIGINT_MAX)) or int(digits) > _BIGINT_MAX:
        raise _Unreadable(_TOO_LARGE_WHOLE)
    return int(digits)


@cache  # one converter per size, shared by the columns of that size
def _decimal_of(max_digits: int, decimal_places: int) -> Callable[[str | None], Decimal | None]:
    """The converter of decimal values to a column of `max_digits` digits, `decimal_places` of them
    after the point (the model field's sizes)."""
    whole_digits = max_digits - decimal_places
    quantum = Decimal(1).scaleb(-decimal_places)
    limit = Decimal(10) ** whole_digits
    too_many_places = f"has more than {decimal_places} decimal places"
    too_many_digits = f"has more than {whole_digits} digits before the point"

    def decimal(value: str | None) -> Decimal | None:
        if not value or not (text := value.strip()):
            return None
        number = text.replace(",", "")
        # Decimal() also takes "1e5", "NaN" and "1_000"; PEMS sends none of those, so they are errors.
        unsigned = number[1:] if number[:1] in "+-" else number
        if not (unsigned.isascii() and unsigned.replace(".", "", 1).isdigit()):
            raise _Unreadable(_NOT_DECIMAL)
        try:
            parsed = Decimal(number)
        except InvalidOperation:
            raise _Unreadable(_NOT_DECIMAL) from None
        # The size first: quantizing a number of more than 28 digits raises InvalidOperation.
        if abs(parsed) >= limit:
            raise _Unreadable(too_many_digits)
        if parsed.as_tuple().exponent < -decimal_places:
            rounded = parsed.quantize(quantum)
            if rounded != parsed:
                raise _Unreadable(too_many_places)
            parsed = rounded
        return parsed

    return decimal


def _split_date(text: str) -> tuple[int, int, int] | None:
    parts = text.split("/")
    if len(parts) != 3:
        return None
    month, day, year = parts
    if not (len(year) == 4 and 1 <= len(month) <= 2 and 1 <= len(day) <= 2):
        return None
    if not (month.isdigit() and day.isdigit() and year.isdigit() and text.isascii()):
        return None
    return int(year), int(month), int(day)


def _date(value: str | None) -> date | None:
    if not value or not (text := value.strip()):
        return None
    parts = _split_date(text)
    if parts is None:
        raise _Unreadable(_NOT_DATE)
    try:
        return date(*parts)
    except ValueError:
        raise _Unreadable(_NOT_DATE) from None


def _wall_time_to_utc(text: str, time_zone: ZoneInfo) -> datetime:
    """`MM/DD/YYYY HH:mm` in `time_zone` as UTC; raises _Unreadable for any other text."""
    date_text, _, time_text = text.partition(" ")
    parts = _split_date(date_text)
    hour, _, minute = time_text.strip().partition(":")
    if parts is None or not (hour.isdigit() and minute.isdigit() and len(minute) == 2 and len(hour) <= 2):
        raise _Unreadable(_NOT_DATETIME)
    try:
        # fold=0: skipped and repeated wall times (DST) resolve to the earlier offset, every time.
        local = datetime(*parts, int(hour), int(minute), tzinfo=time_zone, fold=0)
    except ValueError:
        raise _Unreadable(_NOT_DATETIME) from None
    try:
        return local.astimezone(UTC)
    except OverflowError:  # the UTC reading falls outside years 1 to 9999
        raise _Unreadable(_NOT_IN_UTC_RANGE) from None


@cache  # one converter per time zone, so that the hours it has converted are kept for the next page
def _utc_datetime_in(time_zone: ZoneInfo) -> Callable[[str | None], datetime | None]:
    """The converter of `pfs_lastmodified` values (wall times in `time_zone`) to UTC.

    Nearly every value is a distinct minute, but few are a distinct hour: the start of each
    wall-clock hour is converted once and the minutes added, except in an hour whose UTC offset
    changes within it, where each minute is converted on its own. Without the kept hours a
    200,000-row first load took 1.06x as long (0.94x-1.25x) and 1.09x the CPU (18 pairs, 2026-12-04).
    """

    @lru_cache(maxsize=20_000)
    def hour_start(hour_text: str) -> datetime | None:
        start = _wall_time_to_utc(f"{hour_text}:00", time_zone)
        if _wall_time_to_utc(f"{hour_text}:59", time_zone) - start == _59_MINUTES:
            return start
        return None

    def utc_datetime(value: str | None) -> datetime | None:
        if not value or not (text := value.strip()):
            return None
        hour_text, _, minute = text.rpartition(":")
        minutes = _MINUTES.get(minute)
        if minutes is None:
            raise _Unreadable(_NOT_DATETIME)
        start = hour_start(hour_text)
        if start is None:
            return _wall_time_to_utc(text, time_zone)
        return start + minutes

    return utc_datetime


def _flag(value: str | None) -> bool:
    try:
        return _FLAGS[(value or "").strip()]
    except KeyError:
        raise _Unreadable(_NOT_FLAG) from None


_MISSING = object()


class _Column:
    """A typed column's converter, applied to a page's values at once.

    Grids repeat a few thousand distinct dates, amounts, counters and flags over a million rows,
    so by default a column keeps its answers by raw text (immutable values, up to `KEEP` of them)
    and converts a page by one dictionary lookup per value, at C speed: without the kept answers
    a 200,000-row first load took 1.07x as long and 1.20x the CPU (7 pairs, 2026-12-04). Answers
    for unreadable values are not kept: each one is a miss, converted, and noticed there.
    """

    KEEP = 20_000

    def __init__(self, converter: Callable[[str], object], *, keep_answers: bool = True) -> None:
        self._converter = converter
        self._answers: dict[str, object] | None = {} if keep_answers else None

    def convert(self, raw_values: Sequence[str]) -> tuple[list, dict[int, str]]:
        """The converted values (None where a value is unreadable), and why each unreadable one
        is, by position."""
        convert, answers = self._converter, self._answers
        if answers is None:
            try:
                return list(map(convert, raw_values)), {}
            except _Unreadable:
                return _convert_each(convert, raw_values, range(len(raw_values)), [None] * len(raw_values))
        values = list(map(answers.get, raw_values, repeat(_MISSING)))
        if _MISSING not in values:
            return values, {}
        if len(answers) > self.KEEP:
            answers.clear()
        missing = [index for index, value in enumerate(values) if value is _MISSING]
        values, bad = _convert_each(convert, raw_values, missing, values)
        answers.update((raw_values[index], values[index]) for index in missing if index not in bad)
        return values, bad


def _convert_each(
    convert: Callable[[str], object], raw_values: Sequence[str], positions: Sequence[int], values: list
) -> tuple[list, dict[int, str]]:
    """`values` with the values at `positions` converted one by one; None and the reason where unreadable."""
    bad = {}
    for index in positions:
        try:
            values[index] = convert(raw_values[index])
        except _Unreadable as error:
            values[index] = None
            bad[index] = str(error)
    return values, bad


class _Layout(NamedTuple):
    """The typed columns of a grid row, read from the model (`PfaMirror.pfa_columns`)."""

    key_max_length: int  # pfa_id's
    fields: tuple[Field, ...]  # every PFA column after pfa_id, in `PfaRecord` order
    aliases: tuple[str, ...]  # their grid aliases
    column_values: Callable[[dict[str, str]], tuple[str, ...]]


@cache
def _layout() -> _Layout:
    # Read from the app registry when the first page is typed, not imported: mirror.models imports
    # the PEMS client, which imports this module. Once per process: no row pays for it.
    pfa_columns = apps.get_model("mirror", "PfaMirror").pfa_columns()
    key, *fields = pfa_columns
    names = [field.name for field in pfa_columns]
    if [*names, "data", "content_hash"] != list(PfaRecord._fields):
        raise TypeError(f"PfaRecord's fields {PfaRecord._fields} are not the model's PFA columns {names}")
    aliases = tuple(field.pems_alias for field in fields)
    return _Layout(
        key_max_length=key.max_length,
        fields=tuple(fields),
        aliases=aliases,
        column_values=itemgetter(*aliases),
    )


@cache  # one set of columns per time zone, so that their kept answers last from page to page
def _column_converters(time_zone: ZoneInfo) -> tuple[tuple[str, _Column | None], ...]:
    """(alias, column) of every `PfaRecord` field between `pfa_id` and `data`, by the model
    field's type and sizes; None: text. Columns of one kind share their kept answers."""
    whole_number, day, flag = _Column(_whole_number), _Column(_date), _Column(_flag)
    # Nearly every value is a distinct minute: not worth keeping (`_utc_datetime_in` keeps hours).
    moment = _Column(_utc_datetime_in(time_zone), keep_answers=False)
    decimals: dict[tuple[int, int], _Column] = {}

    def column(field: Field) -> _Column | None:
        kind = field.get_internal_type()
        if kind == "DecimalField":
            sizes = (field.max_digits, field.decimal_places)
            return decimals.setdefault(sizes, _Column(_decimal_of(*sizes)))
        return {
            "BigIntegerField": whole_number,
            "DateTimeField": moment,
            "DateField": day,
            "BooleanField": flag,
            "TextField": None,
        }[kind]

    layout = _layout()
    return tuple(zip(layout.aliases, map(column, layout.fields), strict=True))
