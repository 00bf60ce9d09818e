"""A PEMS (HxGN EAM) simulator serving the contract in docs/pems-api.md.

It holds generated PFA rows in memory, answers the grid, count and record endpoints over HTTP
exactly like a tenant would (both response shapes, cursor paging with a row cap, typed filters,
sessions, the error variants), and lets tests and demos change data and inject faults, in-process
or through the ``/_sim/`` control endpoints. It deliberately knows nothing about Django.

A module per concern, each depending only on those before it:

- ``data``: the grid's columns and the generator of rows;
- ``filters``: the filter and sort language of a grid request;
- ``store``: the tenant's rows and the changes made to them;
- ``sessions``: credentials and sessions;
- ``faults``: the knobs tests turn (row cap, shape, latency, injected faults) and the request log;
- ``grid``: the grid and count answers (the query engine);
- ``records``: the single-record GET and PATCH with the save rules;
- ``state``: PemsSimulator, composed of the five above;
- ``http``: SimulatorServer, the REST and control endpoints.

The names below are the simulator's surface: import them from ``mirror.simulator``.
"""

from mirror.simulator.data import (
    ALIASES,
    AREAS,
    CATEGORIES,
    COLUMN_TYPES,
    COLUMNS,
    COST_CODES,
    GRID_ID,
    GRID_NAME,
    ID,
    INDEX,
    LASTMOD,
    ORG,
    READ_ONLY_ALIASES,
    RECORDID,
    RECORDID_STRINGS,
    RawJsonValue,
    format_datetime,
    format_decimal,
    generate_rows,
    parse_orgs,
)
from mirror.simulator.faults import AUTH_FAILURE_STATUSES, FAULT_KINDS, FAULT_TARGETS, SHAPES
from mirror.simulator.filters import (
    OPERATORS,
    BadRequest,
    compile_filters,
    date_key,
    folded_text_key,
    normalize_filters,
    normalize_sort,
    number_key,
    split_keyset_bounds,
    text_key,
    typed_key,
)
from mirror.simulator.grid import REQUEST_TYPES
from mirror.simulator.http import API_PREFIX, SimulatorServer
from mirror.simulator.sessions import NO_SESSION_EXCEPTION
from mirror.simulator.state import (
    DEFAULT_API_KEY,
    DEFAULT_PASSWORD,
    DEFAULT_TENANT,
    DEFAULT_TIME_ZONE,
    DEFAULT_USERNAME,
    PemsSimulator,
)
from mirror.simulator.store import CORRUPTION_KINDS, HUGE_DECIMAL, HUGE_NUMBER, POISON_KINDS

__all__ = [
    "ALIASES",
    "API_PREFIX",
    "AREAS",
    "AUTH_FAILURE_STATUSES",
    "CATEGORIES",
    "COLUMNS",
    "COLUMN_TYPES",
    "CORRUPTION_KINDS",
    "COST_CODES",
    "DEFAULT_API_KEY",
    "DEFAULT_PASSWORD",
    "DEFAULT_TENANT",
    "DEFAULT_TIME_ZONE",
    "DEFAULT_USERNAME",
    "FAULT_KINDS",
    "FAULT_TARGETS",
    "GRID_ID",
    "GRID_NAME",
    "HUGE_DECIMAL",
    "HUGE_NUMBER",
    "ID",
    "INDEX",
    "LASTMOD",
    "NO_SESSION_EXCEPTION",
    "OPERATORS",
    "ORG",
    "POISON_KINDS",
    "READ_ONLY_ALIASES",
    "RECORDID",
    "RECORDID_STRINGS",
    "REQUEST_TYPES",
    "SHAPES",
    "BadRequest",
    "PemsSimulator",
    "RawJsonValue",
    "SimulatorServer",
    "compile_filters",
    "date_key",
    "folded_text_key",
    "format_datetime",
    "format_decimal",
    "generate_rows",
    "normalize_filters",
    "normalize_sort",
    "number_key",
    "parse_orgs",
    "split_keyset_bounds",
    "text_key",
    "typed_key",
]
