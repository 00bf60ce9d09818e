"""Model fields of our own (`mirror.fields`): organization codes normalized wherever they come in,
and a JSON column stored as the text written (the mirror's raw PEMS row)."""

import pytest
from django.db import connection

from mirror.fields import organization_code_normalize
from mirror.models import Organization, PfaMirror
from mirror.tests.factories import OrganizationFactory, PfaMirrorFactory

pytestmark = pytest.mark.django_db


def test_a_code_is_normalized_when_saved_cleaned_and_looked_up():
    assert organization_code_normalize("  rio\t") == "RIO"
    organization = Organization(code=" hou ", name="Houston")
    organization.full_clean()
    assert organization.code == "HOU"
    saved = Organization.objects.create(code=" bog ", name="Bogota")
    assert saved.code == "BOG"  # the instance says what the row holds
    assert Organization.objects.get(code="bog") == saved
    assert Organization.objects.filter(code__in=["hou ", " Bog"]).get() == saved


def test_a_json_text_column_keeps_the_row_as_written_and_reads_it_back_whole():
    # Written as text in the order PEMS sent it (as the store's COPY writes it): `jsonb` would sort
    # the keys, shortest first.
    text = '{"pfs_z_last": "1", "pfs_a": null, "b": [1, {"y": "\u00e9", "x": 2.5}], "pfs_notes": "line\\nbreak"}'
    record = PfaMirrorFactory(organization=OrganizationFactory(code="RIO"))
    with connection.cursor() as cursor:
        cursor.execute("UPDATE pfa_mirror SET data = %s::json WHERE id = %s", [text, record.pk])
        cursor.execute(
            "SELECT pg_typeof(data)::text, data::jsonb ->> 'pfs_z_last' FROM pfa_mirror WHERE id = %s", [record.pk]
        )
        assert cursor.fetchone() == ("json", "1")  # the jsonb operators are a cast away
    stored = PfaMirror.objects.get(pk=record.pk).data
    assert stored == {"pfs_z_last": "1", "pfs_a": None, "b": [1, {"y": "\u00e9", "x": 2.5}], "pfs_notes": "line\nbreak"}
    assert list(stored) == ["pfs_z_last", "pfs_a", "b", "pfs_notes"] and list(stored["b"][1]) == ["y", "x"]
    # A row saved through the model reads back equal.
    record.data = stored
    record.save()
    assert PfaMirror.objects.get(pk=record.pk).data == stored
