"""The fast path for PEMS grid data pages: a plain page decoded straight into typed structs.

What it is worth (2026-12-04, 2 shared cores): 200,000-row first loads into PostgreSQL through
the engine, the client and the simulator over HTTP, each in a fresh process, in 7 back-to-back
pairs against the same code with one piece of this path turned off (median of the pair ratios,
their range, then the sync process's CPU):

- every page decoded the general way (orjson, then `mirror.pems`'s walk over the dicts): 1.62x
  as long (1.29x-1.98x; 16.9 s against 9.9 s), 1.83x the CPU, peak memory 193 MB against 140 MB;
- plain `str` column names instead of the learned `Literal`s: 1.16x (0.70x-1.79x), 1.20x the
  CPU, 161 MB;
- the cell and row structs tracked by the cyclic GC (without `gc=False`): 1.07x (0.88x-1.31x),
  1.20x the CPU.

A plain data page (either shape of docs/pems-api.md) decodes into the structs below instead of
orjson's dicts. They declare every key the contract shows and forbid any other: msgspec skips an
undeclared value without checking its UTF-8, number range or nesting depth, so skipping would
accept bodies orjson rejects as not JSON. Any answer the structs do not describe exactly (a null
or number value, a bare object for a list, an extra key, ...) is not decoded here
(`PageDecoder.decode` returns None) and `mirror.pems` reads it the general way, with its lenient
handling and its error messages.

A `PageDecoder` serves one read. It learns the column names (and shape A data types) the read
meets, and decodes the pages after that with those names as `Literal`s: every cell then gets the
one string object of its name and type, where the general decode makes two new strings per cell
and frees them again. A page with a name or type it has not met fails that decode and is decoded
with plain strings, which also teaches the decoder the new ones, so a column never goes missing.

A row that names a column twice comes out as the general path makes it
(`mirror.records.row_with_repeated_columns`), so that the parser sets it aside either way.

This module knows nothing of HTTP or of errors: what a cursor value means is `mirror.pems`'s call.
"""

from __future__ import annotations

from operator import attrgetter
from sys import intern
from typing import Annotated, Any, Generic, Literal, NamedTuple, TypeVar

import msgspec

from mirror.records import row_with_repeated_columns


class DecodedPage(NamedTuple):
    """A grid data page: its rows (alias -> value), the session id, and the cursor fields as PEMS
    sent them (shape A: `next_position`; shape B: `more_records` and `current_position`)."""

    rows: list[dict[str, str]]
    session_id: str | None
    shape: Literal["A", "B"]
    next_position: str | int | None = None
    more_records: str | None = None
    current_position: str | int | None = None


# Larger integers become floats in orjson, which the general path rejects as cursors.
_Cursor = str | Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)] | None


class _Wire(msgspec.Struct, forbid_unknown_fields=True):
    """Base of the grid page structs: keys as PEMS spells them, nothing undeclared."""


# A cell's column name and data type: `str`, or a Literal of the names a read has met so far.
_Name = TypeVar("_Name")
_DataType = TypeVar("_DataType")


# The cells and rows of both shapes have the same attribute names (`cells`, `name`, `value`), so
# that one loop makes rows of either. `gc=False` keeps the cyclic GC off a page's quarter million
# cells: without it a first load took 1.07x as long and 1.20x the CPU (see above).


class _DataField(_Wire, Generic[_Name, _DataType], gc=False):
    """One shape A cell."""

    name: _Name = msgspec.field(name="FIELDNAME")
    value: str = msgspec.field(name="FIELDVALUE")
    # Unused; declared so that it is checked like the rest of the body.
    datatype: _DataType = msgspec.field(default="", name="DATATYPE")


class _DataRecord(_Wire, Generic[_Name, _DataType], gc=False):
    """One shape A row."""

    cells: list[_DataField[_Name, _DataType]] = msgspec.field(name="DATAFIELD")


class _Cell(_Wire, Generic[_Name], gc=False):
    """One shape B cell."""

    name: _Name = msgspec.field(name="ALIAS_NAME")
    value: str = msgspec.field(name="VALUE")


class _Row(_Wire, Generic[_Name], gc=False):
    """One shape B row."""

    cells: list[_Cell[_Name]] = msgspec.field(name="CELL")


class _GridData(_Wire, Generic[_Name]):
    """Shape B's GRID.DATA."""

    ROW: list[_Row[_Name]] | None = None


class _GridMetadata(_Wire):
    """Shape B's GRID.METADATA."""

    CURRENTCURSORPOSITION: _Cursor = None
    MORERECORDPRESENT: str | None = None
    CLIENTROWS: str | None = None
    RECORDS: str | None = None
    SERVERTIMESTAMP: str | None = None


class _Grid(_Wire, Generic[_Name]):
    """Shape B's ResultData.GRID."""

    GRIDID: str | None = None
    GRIDNAME: str | None = None
    METADATA: _GridMetadata | None = None
    DATA: _GridData[_Name] | None = None


class _GridResultData(_Wire, Generic[_Name, _DataType]):
    """Result.ResultData of a data page, in either shape."""

    # UNSET tells a missing DATARECORD (then shape B) from a null one (shape A, no rows).
    DATARECORD: list[_DataRecord[_Name, _DataType]] | None | msgspec.UnsetType = msgspec.UNSET
    CURRENTCURSORPOSITION: _Cursor = None
    NEXTCURSORPOSITION: _Cursor = None
    RECORDS: str | None = None
    GRID: _Grid[_Name] | None = None

    def __post_init__(self) -> None:
        if self.DATARECORD is msgspec.UNSET and self.GRID is None:
            # Not a page in either shape: the general path words the error.
            raise ValueError("neither DATARECORD nor GRID")


class _GridResult(_Wire, Generic[_Name, _DataType]):
    """Result of a data page."""

    ResultData: _GridResultData[_Name, _DataType]
    InfoAlert: None = None
    WarningAlert: None = None
    SessionID: str | None = None


class _GridPageAnswer(_Wire, Generic[_Name, _DataType]):
    """A successful grid data page."""

    Result: _GridResult[_Name, _DataType]
    ErrorAlert: None = None
    ConfirmationAlert: None = None


_ANY_COLUMNS_DECODER = msgspec.json.Decoder(_GridPageAnswer[str, str])
_NO_METADATA = _GridMetadata()
# A read that meets more column names than this (no real grid has so many) stops learning them
# and decodes every page with plain strings.
MAX_KNOWN_COLUMNS = 2_000


class PageDecoder:
    """Decodes the grid data pages of one read, learning its column names as it goes."""

    def __init__(self) -> None:
        self._names: set[str] = set()
        self._datatypes: set[str] = set()
        self._known_columns_decoder: msgspec.json.Decoder | None = None

    def decode(self, content: bytes) -> DecodedPage | None:
        """The page `content` holds, or None when it is not a plain data page (the general JSON
        decode must read it)."""
        answer = None
        if self._known_columns_decoder is not None:
            answer = _decode(self._known_columns_decoder, content)
        if answer is None:
            answer = _decode(_ANY_COLUMNS_DECODER, content)
            if answer is None:
                return None
            if len(self._names) <= MAX_KNOWN_COLUMNS:
                self._learn(answer.Result.ResultData)
        return _page(answer)

    def _learn(self, result_data: _GridResultData) -> None:
        names: set[str] = set()
        datatypes: set[str] = set()
        if result_data.DATARECORD:
            for record in result_data.DATARECORD:
                names.update(cell.name for cell in record.cells)
                datatypes.update(cell.datatype for cell in record.cells)
        elif result_data.GRID and result_data.GRID.DATA and result_data.GRID.DATA.ROW:
            for row in result_data.GRID.DATA.ROW:
                names.update(cell.name for cell in row.cells)
        if names <= self._names and datatypes <= self._datatypes:
            return
        self._names |= names
        self._datatypes |= datatypes
        if len(self._names) > MAX_KNOWN_COLUMNS:
            self._known_columns_decoder = None
            return
        # Interned: each cell's name is then the very string `mirror.records` looks its columns up
        # by. Without it a first load took 1.16x as long (0.93x-1.35x) and 1.08x the CPU (9 pairs).
        name_type = Literal[tuple(sorted(map(intern, self._names)))]
        datatype_type = Literal[tuple(sorted(self._datatypes))] if self._datatypes else str
        self._known_columns_decoder = msgspec.json.Decoder(_GridPageAnswer[name_type, datatype_type])


def _decode(decoder: msgspec.json.Decoder, content: bytes) -> _GridPageAnswer | None:
    try:
        return decoder.decode(content)
    except (msgspec.DecodeError, UnicodeDecodeError):
        # DecodeError covers malformed JSON and ValidationError; a str value that is not UTF-8
        # raises UnicodeDecodeError.
        return None


def _page(answer: _GridPageAnswer) -> DecodedPage:
    session_id = answer.Result.SessionID
    result_data = answer.Result.ResultData
    if result_data.DATARECORD is not msgspec.UNSET:
        return DecodedPage(_rows(result_data.DATARECORD), session_id, "A", next_position=result_data.NEXTCURSORPOSITION)
    grid = result_data.GRID
    metadata = grid.METADATA or _NO_METADATA
    return DecodedPage(
        _rows(grid.DATA.ROW if grid.DATA else None),
        session_id,
        "B",
        more_records=metadata.MORERECORDPRESENT,
        current_position=metadata.CURRENTCURSORPOSITION,
    )


_cells = attrgetter("cells")


def _rows(entries: list[Any] | None) -> list[dict[str, str]]:
    rows = [{cell.name: cell.value for cell in entry.cells} for entry in entries or ()]
    if rows and list(map(len, rows)) != list(map(len, map(_cells, entries))):
        # Some row names a column twice: the general path's rows, so that the row is set aside.
        for index, entry in enumerate(entries):
            if len(rows[index]) < len(entry.cells):
                rows[index] = row_with_repeated_columns([(cell.name, cell.value) for cell in entry.cells])
    return rows
