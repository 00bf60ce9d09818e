"""The PEMS client: grid pages in, rows (alias -> string) out; the count, and the single-record
GET/PATCH used to write changes back. Paging by key is here; sending, sessions and retries are in
`mirror.pems.transport`."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from mirror.pems.answers import (
    GridPage,
    _decoded_next_cursor,
    _grid_rows,
    _hidden_key_ranges,
    _last_key,
    _parse_count,
    _pfa_result,
    _read_already,
    _result_data,
    _server_date,
    _visible_keys,
)
from mirror.pems.errors import PemsProtocolError
from mirror.pems.fast import DecodedPage, PageDecoder
from mirror.pems.filters import GridFilter
from mirror.pems.transport import PemsTransport

logger = logging.getLogger("mirror.pems")


class PemsClient(PemsTransport):
    """A connection to one PEMS tenant; reuses one HTTP session and one PEMS session."""

    # grid reads

    def count(self, filters: Sequence[GridFilter] = ()) -> int:
        """Number of rows matching `filters`, from LIST.COUNT.STORED."""
        payload, _ = self._send("POST", self.settings.endpoint, self._grid_body("LIST.COUNT.STORED", filters))
        result_data = _result_data(payload)
        grid = result_data.get("GRID") if isinstance(result_data.get("GRID"), dict) else {}
        metadata = grid.get("METADATA") if isinstance(grid.get("METADATA"), dict) else {}
        for where in (result_data, grid, metadata):
            total = where.get("TOTAL-COUNT")
            if total is not None and total != "":
                parsed = _parse_count(total)
                if parsed is None:
                    raise PemsProtocolError(f"TOTAL-COUNT {total!r} is not a whole number")
                return parsed
        raise PemsProtocolError("the count answer carries no TOTAL-COUNT")

    def iter_pages(self, filters: Sequence[GridFilter] = ()) -> Iterator[GridPage]:
        """Yield the grid in `pfs_id` order, page by page, to its end.

        Each call asks for the rows after the last key already read (`pfs_id > last`), never for
        an offset: PEMS re-runs the query on every call, so a row deleted or moved on a page
        already read would shift every later offset and a row would be skipped. A page whose keys
        are not each greater than the one before is a PEMS error, and so is an empty page while
        PEMS says more rows follow (retried first, like a failed call). The first page is always
        yielded, even when empty, so the caller learns the server's clock.

        Rows without a visible key after the last key (see `_visible_keys`) come again at the start
        of the next page and are dropped there, so each row is yielded once. Only when a whole page
        holds nothing but such rows read already does the next call ask for a position, just past
        them, among the rows after that key.
        """
        last_key: str | None = None
        # Rows without a visible key read after `last_key`, while the pages start at the first row
        # after it (cursor 1); past them, `cursor` - 1 is how many there are.
        unseen_rows: list[dict[str, str]] = []
        cursor = 1
        number = 0
        decoder = PageDecoder()
        while True:
            bound = [GridFilter("pfs_id", ">", last_key)] if last_key is not None else []
            body = self._grid_body("LIST.DATA_ONLY.STORED", [*filters, *bound], sort=("pfs_id", "ASC"), cursor=cursor)
            number += 1
            rows, more, server_date = self._grid_page(body, decoder, number)
            keys = _visible_keys(rows)
            if unseen_rows and (repeated := _read_already(rows, keys, unseen_rows)):
                rows, keys = rows[repeated:], keys[repeated:]
            page = GridPage(
                number,
                rows,
                after=last_key,
                last_key=_last_key(keys, last_key, number),
                more=more,
                server_date=server_date,
            )
            hidden_before = bool(unseen_rows) or cursor > 1
            if hidden_before or not all(keys):
                page.hidden_key_ranges = _hidden_key_ranges(
                    keys, last_key, hidden_before=hidden_before, at_end=not more
                )
                if page.last_key != last_key:  # the next page starts after this one's last visible key
                    visible = max(index for index, key in enumerate(keys) if key)
                    unseen_rows, cursor = rows[visible + 1 :], 1
                elif cursor > 1:
                    cursor += len(rows)
                elif rows:
                    unseen_rows = unseen_rows + rows
                else:  # the page held only rows read already: the next starts past them
                    unseen_rows, cursor = [], 1 + len(unseen_rows)
            del rows
            if page.rows or number == 1 or page.hidden_key_ranges:
                yield page
            if not page.more:
                return
            last_key = page.last_key

    def _grid_page(
        self, body: dict[str, Any], decoder: PageDecoder, number: int
    ) -> tuple[list[dict[str, str]], bool, datetime | None]:
        """One grid page: its rows, whether PEMS says more follow, and the server's clock.

        Asking again for an empty page is part of the same call: one deadline covers it all.
        """
        started = self._clock()
        deadline = started + self.settings.call_deadline
        attempts = 0
        while True:
            attempts += 1
            answer, response = self._send("POST", self.settings.endpoint, body, typed=decoder.decode, deadline=deadline)
            if isinstance(answer, DecodedPage):
                rows, next_cursor = answer.rows, _decoded_next_cursor(answer)
            else:
                rows, next_cursor = _grid_rows(_result_data(answer))
            # Only `rows` lives on while the caller works on the page: the body and its parsed
            # form are released first.
            del answer
            more = next_cursor is not None
            if rows or not more:
                return rows, more, _server_date(response)
            failure = f"page {number} is empty although PEMS says more rows follow"
            delay, give_up = self._next_wait(attempts, None, started, deadline)
            if give_up:
                raise PemsProtocolError(f"{failure}; {give_up}")
            logger.warning("PEMS %s; asking again in %.2f s", failure, delay)
            self._sleep(delay)

    # single records

    def get_record(self, pfa_id: str, *, organization: str | None = None) -> dict[str, str]:
        """The current values of one PFA record, `recordid` included."""
        payload, _ = self._send("GET", self._record_path(pfa_id, organization))
        return _pfa_result(payload)

    def patch_record(
        self, pfa_id: str, recordid: str, changes: dict[str, str], *, organization: str | None = None
    ) -> dict[str, str]:
        """Save `changes` on a record read at `recordid`; returns the new `recordid` and `pfs_lastmodified`."""
        if "recordid" in changes:
            raise ValueError("pass the recordid as its own argument, not in changes")
        body = {"PFA": {"recordid": str(recordid), **changes}}
        # Retrying a PATCH after a lost answer is safe: if the first one landed, the recordid is
        # stale and PEMS answers with a conflict instead of applying the change twice.
        payload, _ = self._send("PATCH", self._record_path(pfa_id, organization), body)
        return _pfa_result(payload)

    # plumbing

    def _record_path(self, pfa_id: str, organization: str | None) -> str:
        org = organization or self.settings.organization
        if org == "*":
            raise ValueError("a record key needs a real organization code, not '*'")
        return f"pfa/{quote(pfa_id, safe='')}%23{quote(org, safe='')}"

    def _grid_body(
        self,
        request_type: str,
        filters: Sequence[GridFilter],
        *,
        sort: tuple[str, str] | None = None,
        cursor: int = 1,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "GRID": {
                "GRID_NAME": self.settings.grid_name,
                "GRID_ID": self.settings.grid_id,
                "NUMBER_OF_ROWS_FIRST_RETURNED": self.settings.page_size,
                # The first rows but past rows without a visible key (see `iter_pages`): a read
                # pages by key (`pfs_id >` the last one read).
                "CURSOR_POSITION": cursor,
            },
            "GRID_TYPE": {"TYPE": "LIST"},
            "REQUEST_TYPE": request_type,
        }
        if sort is not None:
            body["ADDON_SORT"] = {"ALIAS_NAME": sort[0], "TYPE": sort[1]}
        if filters:
            entries = [
                {
                    "SEQNUM": seqnum,
                    "ALIAS_NAME": grid_filter.alias,
                    "OPERATOR": grid_filter.operator,
                    "VALUE": grid_filter.value,
                    "JOINER": "AND",
                }
                for seqnum, grid_filter in enumerate(filters, start=1)
            ]
            body["MULTIADDON_FILTERS"] = {"MADDON_FILTER": entries}
        return body
