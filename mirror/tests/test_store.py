"""The mirror upsert: exact counts, content-hash skips, versions, and values stored as typed."""

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction

from mirror.models import PfaMirror
from mirror.records import content_hash, parse_pfa_row
from mirror.store import (
    pfa_content_hashes,
    pfa_key_range_hashes,
    pfa_live_count,
    pfa_record_replace,
    pfa_records_mark_deleted,
    pfa_records_upsert,
)
from mirror.tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db
CHICAGO = ZoneInfo("America/Chicago")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 2, tzinfo=UTC)


def raw_row(pfa_id: str, **overrides) -> dict[str, str]:
    row = {
        "pfs_id": pfa_id,
        "pfs_a_org": "RIO",
        "pfs_recordid": "3",
        "pfs_lastmodified": "03/08/2026 02:30",
        "pfs_f_area": "SILO-2",
        "pfs_f_category": "CRANE",
        "pfs_f_catdesc": "Cranes",
        "pfs_f_class": "CR-50",
        "pfs_f_source": "Rental",
        "pfs_f_dor": "PROJECT",
        "pfs_f_rental": "12,500.50",
        "pfs_f_purchase": "",
        "pfs_f_manufacturer": "Liebherr",
        "pfs_f_model": "LTM 1050",
        "pfs_p_projcode": "P-100",
        "pfs_equipment_tag": "EQ-1",
        "pfs_p_startdate": "01/15/2026",
        "pfs_p_enddate": "06/30/2026",
        "pfs_f_startdate": "02/01/2026",
        "pfs_f_enddate": "07/31/2026",
        "pfs_a_startdate": "",
        "pfs_a_enddate": "",
        "pfs_f_actualized": "-1",
        "pfs_f_discontinued": "0",
        "pfs_f_fundstrans": "N",
        "pfs_udf_costcode": "CC-9",
    }
    row.update(overrides)
    return row


def record(pfa_id: str, **overrides):
    return parse_pfa_row(raw_row(pfa_id, **overrides), time_zone=CHICAGO, organization_code="RIO")


def upsert(organization, records, synced_at=T0, batch_size=1000, expect_new=False):
    return pfa_records_upsert(
        organization_id=organization.pk,
        records=records,
        synced_at=synced_at,
        batch_size=batch_size,
        expect_new=expect_new,
    )


# `expect_new` (a first load) takes another way into the mirror on PostgreSQL: COPY straight into
# the table, falling back to the merge for a batch with a key already stored.
either_way = pytest.mark.parametrize("expect_new", [False, True], ids=["merge", "expect_new"])


@either_way
def test_first_load_inserts_every_row_with_typed_columns(expect_new):
    organization = OrganizationFactory(code="RIO")
    counts = upsert(organization, [record(f"PFA-{i:03d}") for i in range(5)], expect_new=expect_new)
    assert (counts.inserted, counts.updated, counts.unchanged) == (5, 0, 0)
    stored = PfaMirror.objects.get(organization=organization, pfa_id="PFA-003")
    assert stored.monthly_rate == Decimal("12500.5")
    assert stored.purchase_price is None
    assert stored.pfa_class == "CR-50"
    assert stored.forecast_start_date.isoformat() == "2026-02-01"
    assert stored.actual_start_date is None
    assert (stored.is_actualized, stored.is_discontinued, stored.is_funds_transferred) == (True, False, False)
    # 02:30 on the night clocks spring forward in Chicago does not exist; it resolves to 08:30 UTC.
    assert stored.pems_last_modified == datetime(2026, 3, 8, 8, 30, tzinfo=UTC)
    assert stored.data["pfs_udf_costcode"] == "CC-9"
    assert stored.content_hash == content_hash(raw_row("PFA-003"))
    assert stored.version == 1 and stored.first_synced_at == stored.last_synced_at == T0


@either_way
def test_data_holds_the_exact_json_the_content_hash_digests(expect_new):
    organization = OrganizationFactory(code="RIO")
    stored = record("PFA-1", pfs_f_model='Grove \u00e9 "GMK"')
    upsert(organization, [stored], expect_new=expect_new)
    with connection.cursor() as cursor:
        cursor.execute("SELECT CAST(data AS text), content_hash FROM pfa_mirror WHERE pfa_id = %s", ["PFA-1"])
        [(text, digest)] = cursor.fetchall()
    assert text == stored.data.decode()  # not re-serialized by the database
    assert digest == content_hash(raw_row("PFA-1", pfs_f_model='Grove \u00e9 "GMK"'))
    assert PfaMirror.objects.get(pfa_id="PFA-1").data["pfs_f_model"] == 'Grove \u00e9 "GMK"'


def test_data_is_stored_as_json_text_and_still_written_by_the_orm():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'pfa_mirror' AND column_name = 'data'"
        )
        assert cursor.fetchone() == ("json",)
    organization = OrganizationFactory(code="RIO")
    row = PfaMirror.objects.create(organization=organization, pfa_id="PFA-9", data={"pfs_id": "PFA-9", "n": [1, 2]})
    row.refresh_from_db()
    assert row.data == {"pfs_id": "PFA-9", "n": [1, 2]}
    with connection.cursor() as cursor:  # what ops write: ->> on json, a cast for jsonb's operators
        cursor.execute("SELECT data->>'pfs_id', data::jsonb @> '{\"n\": [2]}' FROM pfa_mirror")
        assert cursor.fetchall() == [("PFA-9", True)]


def test_unchanged_row_is_not_rewritten():
    organization = OrganizationFactory(code="RIO")
    upsert(organization, [record("PFA-1"), record("PFA-2")])
    counts = upsert(organization, [record("PFA-1"), record("PFA-2")], synced_at=T1)
    assert (counts.inserted, counts.updated, counts.unchanged) == (0, 0, 2)
    assert set(PfaMirror.objects.values_list("version", "last_synced_at")) == {(1, T0)}


def test_changed_row_is_updated_and_its_version_grows():
    organization = OrganizationFactory(code="RIO")
    upsert(organization, [record("PFA-1"), record("PFA-2")])
    counts = upsert(organization, [record("PFA-1", pfs_f_rental="9,000.00"), record("PFA-2"), record("PFA-3")], T1)
    assert (counts.inserted, counts.updated, counts.unchanged) == (1, 1, 1)
    changed = PfaMirror.objects.get(pfa_id="PFA-1")
    assert (changed.version, changed.monthly_rate, changed.first_synced_at, changed.last_synced_at) == (
        2,
        Decimal("9000"),
        T0,
        T1,
    )
    assert PfaMirror.objects.get(pfa_id="PFA-2").version == 1


@either_way
def test_counts_are_exact_across_batches_and_duplicate_keys(expect_new):
    organization = OrganizationFactory(code="RIO")
    upsert(organization, [record(f"PFA-{i:03d}") for i in range(0, 40, 2)])  # even keys exist
    batch = [record(f"PFA-{i:03d}", pfs_f_model="changed" if i % 4 == 0 else "LTM 1050") for i in range(40)]
    batch.append(batch[1]._replace())  # the same key twice in one call: stored once
    counts = upsert(organization, batch, T1, batch_size=7, expect_new=expect_new)
    assert (counts.inserted, counts.updated, counts.unchanged) == (20, 10, 11)
    assert counts.inserted + counts.updated + counts.unchanged == len(batch)
    assert PfaMirror.objects.filter(organization=organization).count() == 40
    assert PfaMirror.objects.filter(organization=organization, version=2).count() == 10


def test_rows_expected_new_are_stored_exactly_as_the_merge_stores_them():
    merged, copied = OrganizationFactory(code="RIO"), OrganizationFactory(code="HOU")
    records = [
        record("PFA-1"),
        record("PFA-2", pfs_f_purchase="1,234,567.8912", pfs_lastmodified="", pfs_f_model='quote " and \\ é'),
        record("PFA-3", pfs_recordid="", pfs_a_startdate="12/31/2025", pfs_udf_extra=""),
    ]
    upsert(merged, records)
    upsert(copied, records, expect_new=True)
    columns = [field.attname for field in PfaMirror._meta.concrete_fields if field.name not in {"id", "organization"}]

    def stored(organization):
        return list(PfaMirror.objects.filter(organization=organization).order_by("pfa_id").values_list(*columns))

    assert stored(copied) == stored(merged)
    assert len(stored(copied)) == 3


def test_a_batch_expected_new_that_meets_a_stored_key_is_merged_and_the_next_is_copied(caplog):
    organization = OrganizationFactory(code="RIO")
    upsert(organization, [record("PFA-003")])
    records = [record(f"PFA-{i:03d}", pfs_f_model="new") for i in range(10)]
    with caplog.at_level("INFO", logger="mirror.store"):
        counts = upsert(organization, records, T1, batch_size=5, expect_new=True)
    assert (counts.inserted, counts.updated, counts.unchanged) == (9, 1, 0)
    # Only the first batch (PFA-000..004) held a stored key; the second went in by COPY.
    assert [message for message in caplog.messages if "merging them" in message] == [
        "Some of 5 rows expected to be new are in the mirror already: merging them"
    ]
    assert PfaMirror.objects.get(pfa_id="PFA-003").version == 2
    assert set(PfaMirror.objects.values_list("model", flat=True)) == {"new"}
    assert PfaMirror.objects.count() == 10


def test_same_key_in_two_organizations_is_two_rows():
    rio, hou = OrganizationFactory(code="RIO"), OrganizationFactory(code="HOU")
    upsert(rio, [record("PFA-1")])
    counts = upsert(hou, [record("PFA-1")])
    assert counts.inserted == 1
    assert PfaMirror.objects.filter(pfa_id="PFA-1").count() == 2


def test_stored_hashes_are_those_of_the_keys_asked_for():
    organization, other = OrganizationFactory(code="RIO"), OrganizationFactory(code="HOU")
    upsert(organization, [record(f"PFA-{i:03d}", pfs_f_model=f"M{i}") for i in range(10)])
    upsert(other, [record("PFA-004", pfs_a_org="RIO")])
    expected = {f"PFA-{i:03d}": content_hash(raw_row(f"PFA-{i:03d}", pfs_f_model=f"M{i}")) for i in (2, 4, 7)}

    # Keys inside the range that were not asked for, other organizations' rows, unknown and empty
    # keys: none of them is answered.
    asked = ["PFA-002", "PFA-004", "PFA-007", "PFA-999", ""]
    assert pfa_content_hashes(organization_id=organization.pk, pfa_ids=asked) == expected
    assert pfa_content_hashes(organization_id=organization.pk, pfa_ids=["", "PFA-999"]) == {}


def test_a_key_range_holds_the_live_keys_between_its_bounds_in_code_point_order():
    organization, other = OrganizationFactory(code="RIO"), OrganizationFactory(code="HOU")
    # Code-point order, as PEMS sorts keys: "PFA-B" < "PFA-_" < "PFA-a" (a linguistic collation
    # would put "PFA-a" before "PFA-B").
    keys = ["PFA-1", "PFA-2", "PFA-B", "PFA-_", "PFA-a", "PFA-b"]
    upsert(organization, [record(key) for key in keys])
    upsert(other, [record("PFA-B", pfs_a_org="RIO")])
    PfaMirror.objects.filter(organization=organization, pfa_id="PFA-_").update(deleted_at=T1)

    def between(after, through):
        return sorted(pfa_key_range_hashes(organization_id=organization.pk, after=after, through=through))

    assert between("PFA-2", "PFA-a") == ["PFA-B", "PFA-a"]  # after < key <= through; the deleted one is left out
    assert between(None, "PFA-2") == ["PFA-1", "PFA-2"]
    assert between("PFA-a", None) == ["PFA-b"]
    assert between(None, None) == ["PFA-1", "PFA-2", "PFA-B", "PFA-a", "PFA-b"]
    assert pfa_key_range_hashes(organization_id=organization.pk, after="PFA-1", through="PFA-2") == {
        "PFA-2": content_hash(raw_row("PFA-2"))
    }
    assert pfa_live_count(organization_id=organization.pk) == 5
    assert pfa_live_count(organization_id=organization.pk, after="PFA-B") == 2


def test_marked_deleted_records_are_revived_as_updates_when_pems_sends_them_again():
    organization = OrganizationFactory(code="RIO")
    upsert(organization, [record("PFA-1"), record("PFA-2")])
    assert pfa_records_mark_deleted(organization_id=organization.pk, pfa_ids=["PFA-1", "PFA-9"], deleted_at=T1) == 1
    assert pfa_content_hashes(organization_id=organization.pk, pfa_ids=["PFA-1", "PFA-2"]).keys() == {"PFA-2"}
    counts = upsert(organization, [record("PFA-1"), record("PFA-2")], synced_at=T1)
    assert (counts.inserted, counts.updated, counts.unchanged) == (0, 1, 1)
    revived = PfaMirror.objects.get(pfa_id="PFA-1")
    assert (revived.deleted_at, revived.version, revived.last_synced_at) == (None, 2, T1)


# The recordid guard, the same on both ways in: the page merge (`pfa_records_upsert`) and the
# write-back's replacement of one row (`pfa_record_replace`).
def store_by_merge(organization, stored):
    return upsert(organization, [stored], synced_at=T1).updated == 1


def store_by_replace(organization, stored):
    return pfa_record_replace(organization_id=organization.pk, record=stored, synced_at=T1)


either_path = pytest.mark.parametrize("store", [store_by_merge, store_by_replace], ids=["merge", "replace"])


@either_path
def test_an_older_recordid_saved_no_later_does_not_replace_a_live_row(store):
    organization = OrganizationFactory(code="RIO")
    upsert(organization, [record("PFA-1", pfs_recordid="7", pfs_lastmodified="03/08/2026 09:00")])
    older = record("PFA-1", pfs_recordid="6", pfs_lastmodified="03/08/2026 09:00", pfs_f_rental="1.00")
    assert not store(organization, older)
    kept = PfaMirror.objects.get(pfa_id="PFA-1")
    assert (kept.pems_record_id, kept.monthly_rate, kept.version) == (7, Decimal("12500.50"), 1)


@either_path
def test_a_record_created_again_in_pems_with_a_lower_recordid_and_a_later_save_is_let_in(store):
    organization = OrganizationFactory(code="RIO")
    upsert(organization, [record("PFA-1", pfs_recordid="7", pfs_lastmodified="03/08/2026 09:00")])
    created_again = record("PFA-1", pfs_recordid="1", pfs_lastmodified="03/09/2026 08:00", pfs_f_rental="1.00")
    assert store(organization, created_again)
    taken = PfaMirror.objects.get(pfa_id="PFA-1")
    assert (taken.pems_record_id, taken.monthly_rate, taken.version) == (1, Decimal("1.00"), 2)


@either_path
def test_a_newer_recordid_replaces_the_row_and_a_deleted_row_takes_any_recordid(store):
    organization = OrganizationFactory(code="RIO")
    upsert(organization, [record("PFA-1", pfs_recordid="7"), record("PFA-2", pfs_recordid="7")])
    assert store(organization, record("PFA-1", pfs_recordid="8", pfs_f_rental="2.00"))
    pfa_records_mark_deleted(organization_id=organization.pk, pfa_ids=["PFA-2"], deleted_at=T1)
    assert store(organization, record("PFA-2", pfs_recordid="3", pfs_f_rental="3.00"))
    assert dict(PfaMirror.objects.values_list("pfa_id", "pems_record_id")) == {"PFA-1": 8, "PFA-2": 3}
    assert not PfaMirror.objects.filter(deleted_at__isnull=False).exists()


# The mirror's organization is checked by triggers, once per statement, not by a per-row foreign key
# (migration 0005).


@either_way
def test_rows_naming_an_organization_that_does_not_exist_are_refused(expect_new):
    organization = OrganizationFactory(code="RIO")
    upsert(organization, [record("PFA-1")])
    missing = OrganizationFactory.build(code="GONE")  # never saved
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="names an organization that does not exist"):
        with transaction.atomic():
            upsert(missing, [record("PFA-1"), record("PFA-2")], expect_new=expect_new)
    with pytest.raises(IntegrityError, match="names an organization that does not exist"):
        with transaction.atomic():
            PfaMirror.objects.filter(organization=organization).update(organization_id=missing.pk)
    assert list(PfaMirror.objects.values_list("organization_id", "pfa_id")) == [(organization.pk, "PFA-1")]


def test_deleting_an_organization_deletes_its_rows_and_no_others():
    rio, hou = OrganizationFactory(code="RIO"), OrganizationFactory(code="HOU")
    upsert(rio, [record("PFA-1"), record("PFA-2")])
    upsert(hou, [record("PFA-1")])
    rio.delete()
    assert list(PfaMirror.objects.values_list("organization__code", "pfa_id")) == [("HOU", "PFA-1")]


def test_deleting_an_organization_in_sql_deletes_its_rows():
    rio, hou = OrganizationFactory(code="RIO"), OrganizationFactory(code="HOU")
    upsert(rio, [record("PFA-1"), record("PFA-2")])
    upsert(hou, [record("PFA-1")])
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM organizations WHERE code = 'RIO'")
    assert list(PfaMirror.objects.values_list("organization_id", flat=True)) == [hou.pk]


@pytest.mark.django_db(transaction=True)
@either_way
def test_an_organization_cannot_be_deleted_while_rows_for_it_are_being_written(expect_new):
    """The check locks the organization like a foreign key does: a delete waits for the writing
    transaction, then deletes what it committed too."""
    organization = OrganizationFactory(code="RIO")
    other = psycopg.connect(**connection.get_connection_params(), autocommit=True)
    delete = "DELETE FROM organizations WHERE id = %s"
    try:
        other.execute("SET lock_timeout = '200ms'")
        with transaction.atomic():
            upsert(organization, [record("PFA-1"), record("PFA-2")], expect_new=expect_new)
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute(delete, [organization.pk])
        assert PfaMirror.objects.count() == 2
        other.execute(delete, [organization.pk])
    finally:
        other.close()
    assert PfaMirror.objects.count() == 0
