"""Writing parsed PFA records into the mirror: one set-based upsert per batch, exact counts.

Rows whose content hash did not change are not rewritten (no new tuple, no `version` bump).
The statement's RETURNING clause tells inserted from updated without a second query: a freshly
inserted row has version 1, an updated one a version above 1, and a skipped one is not returned.
On an organization's first load there is nothing to merge with: batches are COPYed straight in.
"""

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import orjson
import psycopg
from django.db import connection, transaction
from django.db.models import BooleanField, Case, F, Max, PositiveIntegerField, Q, When
from django.db.models.expressions import RawSQL

from mirror.models import PfaMirror
from mirror.records import PfaRecord

logger = logging.getLogger(__name__)

# Columns filled from a PfaRecord, in model order; everything else is bookkeeping.
_BOOKKEEPING = {"id", "organization", "version", "first_synced_at", "last_synced_at", "deleted_at"}
RECORD_FIELDS = [f for f in PfaMirror._meta.concrete_fields if f.name not in _BOOKKEEPING]


def psycopg_cursor() -> psycopg.Cursor:
    """A plain psycopg cursor on Django's PostgreSQL connection, in its transaction.

    Django's psycopg cursors bind parameters client-side; this one binds them server-side, can
    COPY and can ask for binary results, which psycopg decodes in C.
    """
    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


@dataclass
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def __iadd__(self, other: "UpsertCounts") -> "UpsertCounts":
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        return self


def pfa_records_upsert(
    *,
    organization_id: UUID,
    records: Sequence[PfaRecord],
    synced_at: datetime,
    batch_size: int = 10_000,
    on_staged: Callable[[], None] | None = None,
    expect_new: bool = False,
) -> UpsertCounts:
    """Upsert `records` for one organization in batches; run it inside the caller's transaction.

    A key that appears twice in `records` is stored once (the last occurrence wins); the earlier
    occurrence counts as unchanged, so inserted + updated + unchanged == len(records).
    `on_staged` is called once the first batch is on its way to the database and what is left of
    it is PostgreSQL's work, done without the Python interpreter: the caller can get on with
    other work in a thread of its own meanwhile.

    `expect_new` says the mirror is not expected to hold any of the keys yet (an organization's
    first load). A batch is then COPYed straight into the mirror, about 1.3x
    cheaper than the merge; if a key turns out to be stored after all, nothing of that batch is
    kept and it is merged as usual.
    """
    unique = {record.pfa_id: record for record in records}
    counts = UpsertCounts(unchanged=len(records) - len(unique))
    rows = list(unique.values())
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        staged = on_staged if start == 0 else None
        if expect_new:
            if _insert_new_batch_postgresql(organization_id, batch, synced_at, staged):
                counts += UpsertCounts(inserted=len(batch))
                continue
            logger.info("Some of %d rows expected to be new are in the mirror already: merging them", len(batch))
            staged = None  # called already
        versions = _upsert_batch_postgresql(organization_id, batch, synced_at, staged)
        inserted = sum(1 for version in versions if version == 1)
        counts += UpsertCounts(
            inserted=inserted, updated=len(versions) - inserted, unchanged=len(batch) - len(versions)
        )
    if not rows and on_staged:
        on_staged()
    return counts


def pfa_content_hashes(*, organization_id: UUID, pfa_ids: Sequence[str]) -> dict[str, str]:
    """The stored content hash of those of `pfa_ids` the organization's mirror holds live."""
    wanted = [key for key in set(pfa_ids) if key and "\x00" not in key]  # a NUL key is never stored
    records = PfaMirror.objects.live().filter(organization_id=organization_id, pfa_id__in=wanted)
    return dict(records.values_list("pfa_id", "content_hash"))


def pfa_key_range_hashes(*, organization_id: UUID, after: str | None, through: str | None) -> dict[str, str]:
    """Key -> content hash of the organization's live records with `after < pfa_id <= through`
    (None: no bound), in the code-point order PEMS sorts keys in (see migration 0007).

    A full read asks this for each page's range of keys: one index range read gives the hashes
    of the page's stored rows and the stored keys PEMS no longer holds.
    """
    conditions, params = ["organization_id = %s", "deleted_at IS NULL"], [organization_id]
    if after is not None:
        conditions.append("pfa_id > %s")
        params.append(_without_nul(after))
    if through is not None:
        conditions.append("pfa_id <= %s")
        params.append(_without_nul(through))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT pfa_id, content_hash FROM {_quoted(PfaMirror._meta.db_table)} WHERE {' AND '.join(conditions)}",
            params,
        )
        return dict(cursor.fetchall())


def pfa_live_count(*, organization_id: UUID, after: str | None = None) -> int:
    """How many live records the organization's mirror holds (with a key after `after`, if given)."""
    records = PfaMirror.objects.live().filter(organization_id=organization_id)
    if after is not None:
        records = records.filter(pfa_id__gt=_without_nul(after))
    return records.count()


def pfa_records_mark_deleted(*, organization_id: UUID, pfa_ids: Sequence[str], deleted_at: datetime) -> int:
    """Mark these live records deleted in PEMS; returns how many were marked."""
    marked = 0
    records = PfaMirror.objects.live().filter(organization_id=organization_id)
    for start in range(0, len(pfa_ids), 5000):
        marked += records.filter(pfa_id__in=pfa_ids[start : start + 5000]).update(deleted_at=deleted_at)
    return marked


def pfa_newest_modified(*, organization_id: UUID) -> datetime | None:
    """The latest `pems_last_modified` among the organization's live records."""
    return (
        PfaMirror.objects.live()
        .filter(organization_id=organization_id)
        .aggregate(Max("pems_last_modified"))["pems_last_modified__max"]
    )


def _without_nul(key: str) -> str:
    """A key bound the database can hold, for the keys it stores: PostgreSQL text holds no NUL, and
    no stored key holds one (the parser sets such rows aside), and for such keys `k > key` and
    `k <= key` hold exactly when they do against `key` cut at its first NUL (NUL sorts first)."""
    return key.partition("\x00")[0]


def _quoted(column: str) -> str:
    return connection.ops.quote_name(column)


# The one rule for whether a record read from PEMS may replace the stored row of its key, written
# once in SQL for both ways in (the page merge and `pfa_record_replace`): a live row never goes back
# to an older recordid saved no later, since a page read before a write-back and stored after it
# would undo the write until the next read. A record PEMS deleted and created again starts its
# recordid over, with a later save time: that one is let in (docs/operations.md, "A record deleted
# and created again in PEMS"), and so is any row marked deleted, whatever its recordid.
def _may_replace(stored: str, record_id: str, last_modified: str) -> str:
    """SQL true when a record whose recordid and save time are the expressions `record_id` and
    `last_modified` may replace the row `stored` (a table name or alias)."""
    return (
        f"({stored}.deleted_at IS NOT NULL OR {stored}.pems_record_id IS NULL OR {record_id} IS NULL "
        f"OR {record_id} >= {stored}.pems_record_id OR {last_modified} > {stored}.pems_last_modified)"
    )


def _conflict_clause() -> str:
    table = _quoted(PfaMirror._meta.db_table)
    assignments = ", ".join(f"{_quoted(f.column)} = EXCLUDED.{_quoted(f.column)}" for f in RECORD_FIELDS)
    # A row marked deleted that PEMS sends again is revived, as an update, even when unchanged.
    return (
        f"ON CONFLICT (organization_id, pfa_id) DO UPDATE SET {assignments}, "
        f"version = {table}.version + 1, last_synced_at = EXCLUDED.last_synced_at, deleted_at = NULL "
        f"WHERE ({table}.content_hash IS DISTINCT FROM EXCLUDED.content_hash OR {table}.deleted_at IS NOT NULL) "
        f"AND {_may_replace(table, 'EXCLUDED.pems_record_id', 'EXCLUDED.pems_last_modified')} "
        "RETURNING version"
    )


def _insert_columns() -> str:
    names = ["organization_id", *(f.column for f in RECORD_FIELDS), "version", "first_synced_at", "last_synced_at"]
    return ", ".join(_quoted(name) for name in names)


# PostgreSQL: each batch is COPYed (binary) into a session-local staging table, then merged by
# one INSERT ... SELECT. COPY is the cheapest way into PostgreSQL from Python (rows are encoded by
# psycopg's C dumpers), and the merge is the same statement the benchmark's physical limit runs.
# The staging table has the record's columns, in the record's order and of the mirror's types.
_STAGE_TABLE = "pfa_mirror_stage"
# The type each value is sent as in a binary COPY, by model field (psycopg's names).
_COPY_TYPES = {
    "CharField": "text",
    "TextField": "text",
    "BigIntegerField": "int8",
    "DateTimeField": "timestamptz",
    "DecimalField": "numeric",
    "DateField": "date",
    "BooleanField": "bool",
}
# `data` goes into a COPY as the record's JSON text, in bytes, which is what `json` receives in
# binary: the column holds exactly the text `content_hash` digests, encoded once.


def _copy_types(fields) -> list[str]:
    """The types a binary COPY names for `fields`' values."""
    return ["bytea" if f.name == "data" else _COPY_TYPES[f.get_internal_type()] for f in fields]


def _copy_records(
    cursor: psycopg.Cursor,
    statement: str,
    types: list[str],
    batch: Sequence[PfaRecord],
    head: tuple = (),
    tail: tuple = (),
) -> None:
    """COPY each record of `batch` as one row: `head`, the record's values, `tail`."""
    with cursor.copy(statement) as copy:
        copy.set_types(types)
        for record in batch:
            copy.write_row((*head, *record, *tail))


def _postgresql_statements() -> tuple[str, str, list[str], str]:
    stage_columns = ", ".join(_quoted(f.column) for f in RECORD_FIELDS)
    create = (
        f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE_TABLE} ("
        + ", ".join(f"{_quoted(f.column)} {f.db_type(connection)}" for f in RECORD_FIELDS)
        + f"); TRUNCATE {_STAGE_TABLE}"
    )
    copy = f"COPY {_STAGE_TABLE} ({stage_columns}) FROM STDIN (FORMAT BINARY)"
    merge = (
        f"INSERT INTO {_quoted(PfaMirror._meta.db_table)} ({_insert_columns()}) "
        f"SELECT %s, {stage_columns}, 1, %s, %s FROM {_STAGE_TABLE} " + _conflict_clause()
    )
    return create, copy, _copy_types(RECORD_FIELDS), merge


def _upsert_batch_postgresql(
    organization_id: UUID, batch: Sequence[PfaRecord], synced_at: datetime, on_staged: Callable[[], None] | None
) -> list[int]:
    create, copy_sql, copy_types, merge = _postgresql_statements()
    with psycopg_cursor() as cursor:
        cursor.execute(create)
        _copy_records(cursor, copy_sql, copy_types, batch)
        if on_staged:
            on_staged()
        cursor.execute(merge, [organization_id, synced_at, synced_at])
        return [version for (version,) in cursor.fetchall()]


def _insert_new_statement() -> tuple[str, list[str]]:
    # The columns and order of `_insert_columns()`.
    types = ["uuid", *_copy_types(RECORD_FIELDS), "int4", "timestamptz", "timestamptz"]
    return f"COPY {_quoted(PfaMirror._meta.db_table)} ({_insert_columns()}) FROM STDIN (FORMAT BINARY)", types


def _insert_new_batch_postgresql(
    organization_id: UUID, batch: Sequence[PfaRecord], synced_at: datetime, on_staged: Callable[[], None] | None
) -> bool:
    """COPY `batch` straight into the mirror as new rows (version 1); False, with nothing of it
    kept, if the mirror holds one of its keys already.

    PostgreSQL inserts the rows as they arrive, so the caller is told at once (`on_staged`) that
    the rest is the database's work. The savepoint costs far less than the merge it saves.
    """
    copy_sql, copy_types = _insert_new_statement()
    if on_staged:
        on_staged()
    try:
        with transaction.atomic(), psycopg_cursor() as cursor:
            _copy_records(cursor, copy_sql, copy_types, batch, head=(organization_id,), tail=(1, synced_at, synced_at))
    except psycopg.errors.UniqueViolation:
        return False
    return True


def pfa_record_replace(*, organization_id: UUID, record: PfaRecord, synced_at: datetime) -> bool:
    """Replace one record's row by `record` as PEMS holds it now (after a write); its version
    grows if the content changed. A row the rule of `_may_replace` keeps (a newer recordid saved no
    earlier) is left alone. Returns whether a row was replaced."""
    values = {field.attname: getattr(record, field.name) for field in RECORD_FIELDS if field.name != "pfa_id"}
    values["data"] = orjson.loads(record.data)
    may_replace = RawSQL(
        _may_replace(_quoted(PfaMirror._meta.db_table), "%s::bigint", "%s::timestamptz"),
        [record.pems_record_id, record.pems_record_id, record.pems_last_modified],
        output_field=BooleanField(),
    )
    stored = PfaMirror.objects.filter(may_replace, organization_id=organization_id, pfa_id=record.pfa_id)
    changed = ~Q(content_hash=record.content_hash)
    return bool(
        stored.update(
            **values,
            version=Case(
                When(changed, then=F("version") + 1), default=F("version"), output_field=PositiveIntegerField()
            ),
            last_synced_at=synced_at,
            deleted_at=None,
        )
    )
