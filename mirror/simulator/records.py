"""The simulated tenant's single-record answers: GET of one record, and PATCH with PEMS's save rules
and its optimistic lock on `recordid`."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote

from mirror.save_rules import decimal_kept, save_problems
from mirror.simulator.data import COLUMN_TYPES, INDEX, READ_ONLY_ALIASES
from mirror.simulator.filters import BadRequest, date_key, number_key


class RecordAnswers:
    """The single-record requests of a `PemsSimulator`."""

    def _record_key(self, key: str) -> tuple[str, str]:
        pfa_id, sep, org = unquote(key).rpartition("#")
        if not sep or not pfa_id or not org:
            raise BadRequest(
                f"Record {unquote(key)} not found.", name="com.dstm.mp.businessprocess.NotFoundException", status=404
            )
        return pfa_id, org

    def get_record(self, key: str) -> dict[str, Any]:
        """Answer ``GET pfa/{id}%23{org}``: the record with every alias plus recordid."""
        pfa_id, org = self._record_key(key)
        row = self.get_row(org, pfa_id)
        if row is None:
            raise BadRequest(
                f"Record {pfa_id}#{org} not found.", name="com.dstm.mp.businessprocess.NotFoundException", status=404
            )
        return {"PFA": {**row, "recordid": row["pfs_recordid"]}}

    def patch_record(self, key: str, body: Any) -> dict[str, Any]:
        """Answer ``PATCH pfa/{id}%23{org}``: optimistic-concurrency save of the sent aliases."""
        pfa_id, org = self._record_key(key)
        if not isinstance(body, dict) or not isinstance(body.get("PFA"), dict):
            raise BadRequest('Request body must be {"PFA": {...}}')
        fields = dict(body["PFA"])
        recordid = fields.pop("recordid", None)
        changes: dict[str, str] = {}
        for alias, value in fields.items():
            name = alias.lower()
            if name not in INDEX:
                raise BadRequest(f"Unknown alias {alias!r} for PFA")
            if name in READ_ONLY_ALIASES:
                raise BadRequest(f"Field {alias} cannot be updated")
            changes[name] = _validate_value(name, value)
        with self._lock:
            row = self.get_row(org, pfa_id)
            if row is None:
                raise BadRequest(
                    f"Record {pfa_id}#{org} not found.",
                    name="com.dstm.mp.businessprocess.NotFoundException",
                    status=404,
                )
            if recordid is None or str(recordid).strip() != row["pfs_recordid"]:
                raise BadRequest(
                    "The record has been modified by another user. Please refresh and try again.",
                    name="com.dstm.mp.businessprocess.RecordModifiedException",
                )
            # PEMS's save rules, on the record as it would be saved: a refused save changes nothing.
            saved_row = {**row, **changes}
            problems = save_problems(
                {alias: _typed(alias, text) for alias, text in changes.items()},
                {alias: _typed(alias, text) for alias, text in saved_row.items() if alias in COLUMN_TYPES},
            )
            if problems:
                raise BadRequest("; ".join(f"{alias}: {problem}" for alias, problem in sorted(problems.items())))
            saved = self.update_row(org, pfa_id, changes)
        return {"PFA": {**saved, "recordid": saved["pfs_recordid"]}}


def _typed(alias: str, text: str) -> Any:
    """A valid grid value typed for the save rules: Decimal, date, text, or None if empty."""
    column_type = COLUMN_TYPES[alias]
    if column_type == "VARCHAR":
        return text
    if not text.strip():
        return None
    if column_type == "DECIMAL":
        return Decimal(text.replace(",", ""))
    if column_type == "DATE":
        try:
            return dt.datetime.strptime(text.strip(), "%m/%d/%Y").date()
        except ValueError:
            return None  # a damaged stored row: not this save's concern
    return text


def _validate_value(alias: str, value: Any) -> str:
    """Check a PATCH value against its column type; decimals come back in grid format, kept as
    PEMS keeps them (2 places, rounded half up), text trimmed."""
    text = "" if value is None else str(value).strip()
    column_type = COLUMN_TYPES[alias]
    if not text:
        return ""
    if column_type == "DATE" and (date_key(text) is None or len(text.split()) != 1):
        raise BadRequest(f"Invalid date {text!r} for {alias}: expected MM/DD/YYYY")
    if column_type in ("DECIMAL", "NUMBER"):
        number = number_key(text)
        if number is None:
            raise BadRequest(f"Invalid number {text!r} for {alias}")
        if column_type == "NUMBER":
            return text
        try:
            return f"{decimal_kept(Decimal(text.replace(',', ''))):,.2f}"
        except InvalidOperation:
            raise BadRequest(f"Invalid number {text!r} for {alias}") from None
    if column_type == "CHKBOOLEAN" and text not in ("-1", "0", "Y", "N"):
        raise BadRequest(f"Invalid check box value {text!r} for {alias}")
    return text
