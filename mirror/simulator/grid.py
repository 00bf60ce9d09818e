"""The simulated tenant's grid answers: a grid or count request filtered, sorted and paged with a row
cap, each query cached per data version, keyset pages and incremental reads served without a scan
of every row."""

from __future__ import annotations

import bisect
import datetime as dt
from operator import itemgetter
from typing import Any

from mirror.simulator.data import COLUMNS, GRID_ID, GRID_NAME, ID
from mirror.simulator.filters import (
    BadRequest,
    compile_filters,
    normalize_filters,
    normalize_sort,
    sort_rows,
    split_keyset_bounds,
    split_modified_since,
    without_own_organization,
)

REQUEST_TYPES = frozenset({"LIST.DATA_ONLY.STORED", "LIST.HEAD_DATA.STORED", "LIST.COUNT.STORED"})


def _to_int(value: Any, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise BadRequest(f"Invalid {name} {value!r}")
    try:
        number = int(value) if isinstance(value, (int, float)) else int(str(value).strip().replace(",", ""))
    except ValueError:
        raise BadRequest(f"Invalid {name} {value!r}") from None
    if number < 1:
        raise BadRequest(f"Invalid {name} {value!r}: must be 1 or more")
    return number


class PageRows:
    """A page's rows (values already JSON-escaped) where they stand in a grid answer: the HTTP
    layer writes them as the JSON rows of the answer's shape, ``DATARECORD`` (A) or ``ROW`` (B)."""

    __slots__ = ("rows", "shape")

    def __init__(self, rows: list[tuple[str, ...]], shape: str) -> None:
        self.rows = rows
        self.shape = shape


class GridAnswers:
    """The grid and count requests of a `PemsSimulator`."""

    def query(
        self, organization: str, filters: tuple[tuple[Any, ...], ...], sort: tuple[str, bool]
    ) -> tuple[list[tuple[str, ...]], dict[tuple[str, ...], tuple[str, ...]]]:
        """Filtered and sorted rows for one query, cached per data version, and the JSON-escaped
        values of those among them that need it.

        A flat AND chain with a lower bound on ``pfs_lastmodified`` (an incremental read) starts
        from the organization's rows at or after that stamp, found by bisection, instead of
        scanning every row: the same rows in the same order as the scan would keep.
        """
        filters = without_own_organization(filters, organization)
        cache_key = (organization, filters, sort)
        with self._lock:
            if organization != "*" and organization not in self._orgs:
                raise BadRequest(
                    f"Organization {organization} is not valid for this user.",
                    name="com.dstm.mp.businessprocess.InvalidOrganizationException",
                )
            cached = self._cache.get(cache_key)
            if cached is not None and cached[0] == self._version:
                self._cache.move_to_end(cache_key)
                return cached[1], cached[2]
            version = self._version
            if organization == "*":
                orgs = [self._orgs[org] for org in sorted(self._orgs)]
            else:
                orgs = [self._orgs[organization]]
            modified_since = split_modified_since(filters)
            if modified_since is None:
                parts = [data.ordered() for data in orgs]
            else:
                filters, bound, inclusive = modified_since
                parts = [data.modified_since(bound, inclusive=inclusive) for data in orgs]
            snapshot = parts[0] if len(parts) == 1 else [row for part in parts for row in part]
            # Taken with the snapshot: a row saved since is a new tuple, not one of these.
            escaped = {row: values for data in orgs for row, values in data.escaped_rows().items()}
        # Rows are immutable tuples, so filtering the snapshot outside the lock is safe
        # and keeps other requests (and control calls) moving during a 1M-row scan.
        predicate = compile_filters(filters)
        rows = snapshot if predicate is None else [row for row in snapshot if predicate(row)]
        alias, descending = sort
        if organization == "*" or alias != "pfs_id" or descending:
            rows = sort_rows(rows, alias, descending)
        with self._lock:
            if self._version == version:
                self._cache[cache_key] = (version, rows, escaped)
                while len(self._cache) > 16:
                    self._cache.popitem(last=False)
        return rows, escaped

    def _select(
        self, organization: str, filters: tuple[tuple[Any, ...], ...], sort: tuple[str, bool]
    ) -> tuple[list[tuple[str, ...]], int, dict[tuple[str, ...], tuple[str, ...]]]:
        """A query's answer as ``rows[start:]``, with the JSON-escaped values as in ``query()``.

        A keyset page (sorted ``pfs_id ASC``, a flat AND chain with ``pfs_id >``/``>=`` bounds)
        bisects into the cached result of its other filters instead of scanning again, so every
        page of a keyset read shares one scan. The answer is the one ``query()`` would give:
        the result is sorted by the very key the bounds compare, and an empty pfs_id, which no
        bound admits, sorts lowest.
        """
        keyset = split_keyset_bounds(filters) if sort == ("pfs_id", False) else None
        if keyset is None:
            rows, escaped = self.query(organization, filters, sort)
            return rows, 0, escaped
        others, bounds = keyset
        rows, escaped = self.query(organization, others, sort)
        start, row_id = 0, itemgetter(ID)
        for operator, value in bounds:
            find = bisect.bisect_right if operator == ">" else bisect.bisect_left
            start = max(start, find(rows, value, key=row_id))
        return rows, start, escaped

    def grid(
        self, body: Any, organization: str, default_shape: str, *, empty_page: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """Answer a grid request body; returns (ResultData, is_count).

        ``empty_page`` (the ``empty`` fault) answers a data request with no rows that still
        claims more: the cursor does not advance.
        """
        if not isinstance(body, dict):
            raise BadRequest("Request body must be a JSON object")
        grid = body.get("GRID")
        if not isinstance(grid, dict):
            raise BadRequest("GRID is required")
        name = grid.get("GRID_NAME")
        grid_id = grid.get("GRID_ID")
        if name is None and grid_id is None:
            raise BadRequest("GRID_NAME or GRID_ID is required")
        if name is not None and str(name).strip().upper() != GRID_NAME:
            raise BadRequest(f"Grid {name} does not exist.", name="com.dstm.mp.businessprocess.InvalidGridException")
        if grid_id is not None and str(grid_id).strip() != GRID_ID:
            raise BadRequest(
                f"Grid id {grid_id} does not exist.", name="com.dstm.mp.businessprocess.InvalidGridException"
            )
        request_type = str(body.get("REQUEST_TYPE", "")).strip().upper()
        if request_type not in REQUEST_TYPES:
            raise BadRequest(f"Invalid REQUEST_TYPE {body.get('REQUEST_TYPE')!r}")
        wanted = _to_int(grid.get("NUMBER_OF_ROWS_FIRST_RETURNED"), "NUMBER_OF_ROWS_FIRST_RETURNED", self.row_cap)
        cursor = _to_int(grid.get("CURSOR_POSITION"), "CURSOR_POSITION", 1)
        filters = normalize_filters(body)
        compile_filters(filters)  # validate before touching data, even on a cache hit
        sort = normalize_sort(body)
        rows, start, escaped = self._select(organization, filters, sort)
        total = len(rows) - start
        shape = self.shape or default_shape
        if request_type == "LIST.COUNT.STORED":
            if shape == "A":
                return {"TOTAL-COUNT": str(total)}, True
            return {"GRID": {"GRIDID": GRID_ID, "GRIDNAME": GRID_NAME, "TOTAL-COUNT": str(total)}}, True
        first = start + cursor - 1
        page = rows[first : first + min(wanted, self.row_cap)]
        if escaped:
            # The page is served as it is but for these (usually no) rows.
            page = [escaped.get(row, row) for row in page]
        last = cursor - 1 + len(page)
        more = last < total
        if empty_page:
            page, last, more = [], cursor - 1, True
        metadata = {
            "CURRENTCURSORPOSITION": str(last),
            "MORERECORDPRESENT": "+" if more else "-",
            "CLIENTROWS": str(len(page)),
            "RECORDS": f"{len(page):,}",
            "SERVERTIMESTAMP": dt.datetime.now(self.time_zone).strftime("%m/%d/%Y %H:%M:%S"),
        }
        head = request_type == "LIST.HEAD_DATA.STORED"
        fields = [{"name": alias, "type": column_type} for alias, column_type in COLUMNS]
        if shape == "A":
            data: dict[str, Any] = {
                "DATARECORD": PageRows(page, "A"),
                "CURRENTCURSORPOSITION": str(last),
                "NEXTCURSORPOSITION": str(last + 1) if more else None,
                "RECORDS": f"{len(page):,}",
            }
            if head:
                data["METADATA"] = {"GRIDID": GRID_ID, "GRIDNAME": GRID_NAME, **metadata}
                data["FIELDS"] = fields
            return data, False
        grid_data: dict[str, Any] = {
            "GRIDID": GRID_ID,
            "GRIDNAME": GRID_NAME,
            "METADATA": metadata,
            "DATA": {"ROW": PageRows(page, "B")},
        }
        if head:
            grid_data["FIELDS"] = fields
        return {"GRID": grid_data}, False
