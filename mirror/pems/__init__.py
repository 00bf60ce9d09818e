"""The PEMS client: grid pages in, rows (alias -> string) out, one error type per failure kind.

Speaks the contract in docs/pems-api.md: both grid endpoints (`grids`, `griddata`), both response
shapes (`DATARECORD` and `GRID`), cursor paging, session reuse, retries with backoff, and the
single-record GET/PATCH used to write changes back. Rows come out as alias -> string dicts;
`mirror.records` types them. A module per job: `errors`, `filters`, `transport` (sending and
retries), `answers` (reading what PEMS answered), `fast` (the measured fast path for a plain grid
data page) and `client` (the requests a sync makes). Callers import from `mirror.pems`.
"""

from mirror.pems.answers import GridPage
from mirror.pems.client import PemsClient
from mirror.pems.errors import (
    PemsAuthError,
    PemsError,
    PemsNotFound,
    PemsProtocolError,
    PemsRecordConflict,
    PemsRequestError,
    PemsUnavailable,
)
from mirror.pems.filters import GridFilter, modified_since_filter, organization_filter
from mirror.pems.transport import (
    DEFAULT_CALL_DEADLINE,
    DEFAULT_PAGE_SIZE,
    PemsSettings,
    call_observer_register,
)

__all__ = [
    "DEFAULT_CALL_DEADLINE",
    "DEFAULT_PAGE_SIZE",
    "GridFilter",
    "GridPage",
    "PemsAuthError",
    "PemsClient",
    "PemsError",
    "PemsNotFound",
    "PemsProtocolError",
    "PemsRecordConflict",
    "PemsRequestError",
    "PemsSettings",
    "PemsUnavailable",
    "call_observer_register",
    "modified_since_filter",
    "organization_filter",
]
