"""The PEMS client: grid pages in, rows (alias -> string) out, one error type per failure kind.

Speaks the contract in docs/pems-api.md: both grid endpoints (`grids`, `griddata`), both response
shapes (`DATARECORD` and `GRID`), cursor paging, session reuse, retries with backoff, and the
single-record GET/PATCH used to write changes back. Rows come out as alias -> string dicts;
`mirror.records` types them. A module per job: `errors`, `filters`, `transport` (sending and
retries), `answers` (reading what PEMS answered), `fast` (the measured fast path for a plain grid
data page) and `client` (the requests a sync makes). Callers import from `mirror.pems`.
"""

from collections.abc import Callable

# The call observer, when one is registered (the ops app registers one in its `AppConfig.ready` to
# count calls for /metrics; this app names no observer), is called with each PEMS call's outcome
# ("ok", "retried", "4xx", "5xx" or "timeout") and its seconds (see `mirror.pems.transport`); whatever
# it does, the call goes on as before.
call_observer: Callable[[str, float], None] | None = None


def call_observer_register(observer: Callable[[str, float], None] | None) -> None:
    """Make `observer` the one that receives each PEMS call's outcome and seconds (None: none)."""
    global call_observer
    call_observer = observer


from mirror.pems.answers import GridPage  # noqa: E402 (the hook above exists before the modules load)
from mirror.pems.client import PemsClient  # noqa: E402
from mirror.pems.errors import (  # noqa: E402
    PemsAuthError,
    PemsError,
    PemsNotFound,
    PemsProtocolError,
    PemsRecordConflict,
    PemsRequestError,
    PemsUnavailable,
)
from mirror.pems.filters import GridFilter, modified_since_filter, organization_filter  # noqa: E402
from mirror.pems.transport import (  # noqa: E402
    DEFAULT_CALL_DEADLINE,
    DEFAULT_PAGE_SIZE,
    PemsSettings,
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
    "call_observer",
    "call_observer_register",
    "modified_since_filter",
    "organization_filter",
]
