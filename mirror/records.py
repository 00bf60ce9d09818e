"""PFA rows typed for the mirror: `parse_pfa_row` turns one raw grid row (alias -> string) into a
`PfaRecord` whose fields are the columns of `mirror.models.PfaMirror`, or a PfaRowError naming
the bad column."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from zoneinfo import ZoneInfo

import orjson


class PfaRowError(ValueError):
    """One grid row cannot be stored; `reason` names the column and the bad value."""

    def __init__(self, pfa_id: str | None, reason: str) -> None:
        super().__init__(pfa_id, reason)
        self.pfa_id = pfa_id
        self.reason = reason

    def __str__(self) -> str:
        who = f"PFA {self.pfa_id!r}" if self.pfa_id else "PFA row without an id"
        return f"{who} cannot be stored: {self.reason}"


@dataclass(frozen=True, slots=True)
class PfaRecord:
    """One PFA row, typed for the `pfa_mirror` table; `data` keeps the whole raw row."""

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
    data: dict[str, str]
    content_hash: str


PFA_ID_MAX_LENGTH = 64
_DECIMAL_PLACES = 4
_DECIMAL_WHOLE_DIGITS = 18 - _DECIMAL_PLACES
_DECIMAL_QUANTUM = Decimal(1).scaleb(-_DECIMAL_PLACES)
_BIGINT_MAX = 2**63 - 1
_FLAGS = {"-1": True, "Y": True, "0": False, "N": False, "": False}


def content_hash(raw: dict[str, str]) -> str:
    """A stable 32-hex digest of a raw row, independent of key order."""
    return hashlib.blake2b(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def parse_pfa_row(raw: dict[str, str], *, time_zone: ZoneInfo, organization_code: str | None = None) -> PfaRecord:
    """Type one raw grid row; raises PfaRowError naming the first bad column."""
    pfa_id = (raw.get("pfs_id") or "").strip()
    if not pfa_id:
        raise PfaRowError(None, f"pfs_id: {raw.get('pfs_id')!r} is missing or empty")
    if len(pfa_id) > PFA_ID_MAX_LENGTH:
        raise PfaRowError(pfa_id, f"pfs_id: {pfa_id!r} is longer than {PFA_ID_MAX_LENGTH} characters")
    if organization_code is not None:
        org = (raw.get("pfs_a_org") or "").strip()
        if org != organization_code:
            raise PfaRowError(pfa_id, f"pfs_a_org: {org!r} is not the organization {organization_code!r}")
    get = raw.get
    try:
        return PfaRecord(
            pfa_id=pfa_id,
            pems_record_id=_parse_int(get("pfs_recordid"), "pfs_recordid"),
            pems_last_modified=_parse_datetime(get("pfs_lastmodified"), "pfs_lastmodified", time_zone),
            area_silo=get("pfs_f_area") or "",
            category=get("pfs_f_category") or "",
            category_description=get("pfs_f_catdesc") or "",
            pfa_class=get("pfs_f_class") or "",
            source=get("pfs_f_source") or "",
            dor=get("pfs_f_dor") or "",
            monthly_rate=_parse_decimal(get("pfs_f_rental"), "pfs_f_rental"),
            purchase_price=_parse_decimal(get("pfs_f_purchase"), "pfs_f_purchase"),
            manufacturer=get("pfs_f_manufacturer") or "",
            model=get("pfs_f_model") or "",
            project_code=get("pfs_p_projcode") or "",
            equipment_tag=get("pfs_equipment_tag") or "",
            plan_start_date=_parse_date(get("pfs_p_startdate"), "pfs_p_startdate"),
            plan_end_date=_parse_date(get("pfs_p_enddate"), "pfs_p_enddate"),
            forecast_start_date=_parse_date(get("pfs_f_startdate"), "pfs_f_startdate"),
            forecast_end_date=_parse_date(get("pfs_f_enddate"), "pfs_f_enddate"),
            actual_start_date=_parse_date(get("pfs_a_startdate"), "pfs_a_startdate"),
            actual_end_date=_parse_date(get("pfs_a_enddate"), "pfs_a_enddate"),
            is_actualized=_parse_flag(get("pfs_f_actualized"), "pfs_f_actualized"),
            is_discontinued=_parse_flag(get("pfs_f_discontinued"), "pfs_f_discontinued"),
            is_funds_transferred=_parse_flag(get("pfs_f_fundstrans"), "pfs_f_fundstrans"),
            data=raw,
            content_hash=content_hash(raw),
        )
    except _BadValue as exc:
        raise PfaRowError(pfa_id, str(exc)) from None


class _BadValue(Exception):
    """A column value that does not parse; the row parser adds the PFA id."""


def _parse_int(value: str | None, column: str) -> int | None:
    if not value or not (text := value.strip()):
        return None
    digits = text.replace(",", "")
    if not (digits.isascii() and digits.isdigit()) or int(digits) > _BIGINT_MAX:
        raise _BadValue(f"{column}: {value!r} is not a whole number")
    return int(digits)


def _parse_decimal(value: str | None, column: str) -> Decimal | None:
    if not value or not (text := value.strip()):
        return None
    number = text.replace(",", "")
    # Decimal() also takes "1e5", "NaN" and "1_000"; PEMS sends none of those, so they are errors.
    unsigned = number[1:] if number[:1] in "+-" else number
    if not (unsigned.isascii() and unsigned.replace(".", "", 1).isdigit()):
        raise _BadValue(f"{column}: {value!r} is not a decimal number")
    try:
        parsed = Decimal(number)
    except InvalidOperation:
        raise _BadValue(f"{column}: {value!r} is not a decimal number") from None
    if parsed.as_tuple().exponent < -_DECIMAL_PLACES:
        rounded = parsed.quantize(_DECIMAL_QUANTUM)
        if rounded != parsed:
            raise _BadValue(f"{column}: {value!r} has more than {_DECIMAL_PLACES} decimal places")
        parsed = rounded
    if abs(parsed) >= Decimal(10) ** _DECIMAL_WHOLE_DIGITS:
        raise _BadValue(f"{column}: {value!r} has more than {_DECIMAL_WHOLE_DIGITS} digits before the point")
    return parsed


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


# Grids repeat a few thousand distinct dates over a million rows, so caching by text is far
# cheaper than parsing each cell; splitting by hand is itself several times faster than strptime.
@lru_cache(maxsize=100_000)
def _date_from_text(text: str) -> date | None:
    parts = _split_date(text)
    if parts is None:
        return None
    try:
        return date(*parts)
    except ValueError:
        return None


@lru_cache(maxsize=100_000)
def _utc_from_text(text: str, time_zone: ZoneInfo) -> datetime | None:
    date_text, _, time_text = text.partition(" ")
    parts = _split_date(date_text)
    hour, _, minute = time_text.strip().partition(":")
    if parts is None or not (hour.isdigit() and minute.isdigit() and len(minute) == 2 and len(hour) <= 2):
        return None
    try:
        # fold=0 makes skipped and repeated wall times (DST) resolve to the earlier offset, every time.
        local = datetime(*parts, int(hour), int(minute), tzinfo=time_zone, fold=0)
    except ValueError:
        return None
    return local.astimezone(UTC)


def _parse_date(value: str | None, column: str) -> date | None:
    if not value or not (text := value.strip()):
        return None
    parsed = _date_from_text(text)
    if parsed is None:
        raise _BadValue(f"{column}: {value!r} is not a MM/DD/YYYY date")
    return parsed


def _parse_datetime(value: str | None, column: str, time_zone: ZoneInfo) -> datetime | None:
    if not value or not (text := value.strip()):
        return None
    parsed = _utc_from_text(text, time_zone)
    if parsed is None:
        raise _BadValue(f"{column}: {value!r} is not a MM/DD/YYYY HH:mm date and time")
    return parsed


def _parse_flag(value: str | None, column: str) -> bool:
    flag = _FLAGS.get((value or "").strip())
    if flag is None:
        raise _BadValue(f"{column}: {value!r} is not a check box value (-1/0 or Y/N)")
    return flag
