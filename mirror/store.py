"""Writing parsed PFA records into the mirror: one set-based upsert per batch, exact counts.

Rows whose content hash did not change are not rewritten (no new tuple, no `version` bump).
The statement's RETURNING clause tells inserted from updated without a second query: a freshly
inserted row has version 1, an updated one a version above 1, and a skipped one is not returned.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import orjson
import psycopg
from django.db import connection

from mirror.models import PfaMirror
from mirror.pems import PfaRecord

# Columns filled from a PfaRecord, in model order; everything else is bookkeeping.
_BOOKKEEPING = {"id", "organization", "version", "first_synced_at", "last_synced_at"}
RECORD_FIELDS = [f for f in PfaMirror._meta.concrete_fields if f.name not in _BOOKKEEPING]
# SQLite binds at most 32,766 parameters per statement.
_SQLITE_MAX_PARAMS = 32_000


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
    *, organization_id: UUID, records: Sequence[PfaRecord], synced_at: datetime, batch_size: int = 1000
) -> UpsertCounts:
    """Upsert `records` for one organization in batches; run it inside the caller's transaction.

    A key that appears twice in `records` is stored once (the last occurrence wins); the earlier
    occurrence counts as unchanged, so inserted + updated + unchanged == len(records).
    """
    unique = {record.pfa_id: record for record in records}
    counts = UpsertCounts(unchanged=len(records) - len(unique))
    rows = list(unique.values())
    if connection.vendor == "postgresql":
        upsert_batch = _upsert_batch_postgresql
    else:
        upsert_batch = _upsert_batch_sqlite
        batch_size = min(batch_size, _SQLITE_MAX_PARAMS // (len(RECORD_FIELDS) + 4))
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        versions = upsert_batch(organization_id, batch, synced_at)
        inserted = sum(1 for version in versions if version == 1)
        counts += UpsertCounts(
            inserted=inserted, updated=len(versions) - inserted, unchanged=len(batch) - len(versions)
        )
    return counts


def _quoted(column: str) -> str:
    return connection.ops.quote_name(column)


def _conflict_clause(distinct_operator: str) -> str:
    table = _quoted(PfaMirror._meta.db_table)
    assignments = ", ".join(f"{_quoted(f.column)} = EXCLUDED.{_quoted(f.column)}" for f in RECORD_FIELDS)
    return (
        f"ON CONFLICT (organization_id, pfa_id) DO UPDATE SET {assignments}, "
        f"version = {table}.version + 1, last_synced_at = EXCLUDED.last_synced_at "
        f"WHERE {table}.content_hash {distinct_operator} EXCLUDED.content_hash "
        "RETURNING version"
    )


def _insert_columns() -> str:
    names = ["organization_id", *(f.column for f in RECORD_FIELDS), "version", "first_synced_at", "last_synced_at"]
    return ", ".join(_quoted(name) for name in names)


def _column_values(batch: Sequence[PfaRecord], field) -> list:
    if field.name == "data":
        return [orjson.dumps(record.data).decode() for record in batch]
    return [getattr(record, field.name) for record in batch]


def _upsert_batch_postgresql(organization_id: UUID, batch: Sequence[PfaRecord], synced_at: datetime) -> list[int]:
    # One array parameter per column, unnested server-side: a single statement whatever the batch
    # size, with binary-dumped parameters and no per-row SQL text.
    # %b: psycopg dumps the arrays in binary, far cheaper than quoting every element as text.
    casts = [f"%b::{'text' if f.name == 'data' else f.db_type(connection)}[]" for f in RECORD_FIELDS]
    aliases = ", ".join(f"c{i}" for i in range(len(RECORD_FIELDS)))
    selected = ", ".join(f"c{i}::jsonb" if f.name == "data" else f"c{i}" for i, f in enumerate(RECORD_FIELDS))
    sql = (
        f"INSERT INTO {_quoted(PfaMirror._meta.db_table)} ({_insert_columns()}) "
        f"SELECT %s, {selected}, 1, %s, %s FROM unnest({', '.join(casts)}) AS s({aliases}) "
        + _conflict_clause("IS DISTINCT FROM")
    )
    params = [organization_id, synced_at, synced_at, *(_column_values(batch, f) for f in RECORD_FIELDS)]
    connection.ensure_connection()
    # Django's psycopg cursors bind client-side (every value quoted into the SQL text); a plain
    # psycopg cursor on the same connection and transaction sends the arrays as binary parameters.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        return [version for (version,) in cursor.fetchall()]


def _upsert_batch_sqlite(organization_id: UUID, batch: Sequence[PfaRecord], synced_at: datetime) -> list[int]:
    # SQLite has no arrays: a multi-row VALUES list, with values prepared by the model's own
    # fields so they are stored exactly as the ORM would store them.
    org_value = PfaMirror._meta.get_field("organization").get_db_prep_save(organization_id, connection)
    synced_value = PfaMirror._meta.get_field("last_synced_at").get_db_prep_save(synced_at, connection)
    placeholders = "(" + ", ".join(["%s"] * (len(RECORD_FIELDS) + 4)) + ")"
    params: list = []
    for record in batch:
        params.append(org_value)
        for field in RECORD_FIELDS:
            params.append(field.get_db_prep_save(getattr(record, field.name), connection))
        params.extend((1, synced_value, synced_value))
    sql = (
        f"INSERT INTO {_quoted(PfaMirror._meta.db_table)} ({_insert_columns()}) "
        f"VALUES {', '.join([placeholders] * len(batch))} " + _conflict_clause("IS NOT")
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [version for (version,) in cursor.fetchall()]
