"""The read watermark moves from the connection to the organization, mirror rows can be marked
deleted, a connection's time zone has no default, and `pfa_id` compares byte by byte.

A watermark is only kept where it is known whose grid it came from: an organization's own
connection. Organizations that read through the global default connection start over with a full
read (they shared one watermark, which was wrong for all but one of them).
"""

import mirror.models
from django.db import migrations, models


def watermarks_to_organizations(apps, schema_editor):
    ApiConfiguration = apps.get_model("mirror", "ApiConfiguration")
    Organization = apps.get_model("mirror", "Organization")
    own = ApiConfiguration.objects.filter(
        organization__isnull=False, usage="read", incremental_watermark__isnull=False
    ).select_related("organization")
    for configuration in own:
        organization = configuration.organization
        pems_code = configuration.pems_organization_code or organization.code
        Organization.objects.filter(pk=organization.pk).update(
            read_watermark=configuration.incremental_watermark,
            read_watermark_source=f"{configuration.base_url.rstrip('/')}|{configuration.tenant}|{pems_code}",
        )
    # The default connection never names a PEMS organization any more.
    ApiConfiguration.objects.filter(organization__isnull=True).update(pems_organization_code="")


def pfa_id_binary_order(apps, schema_editor):
    # Key ranges (which stored rows lie between two PEMS keys) must order keys as PEMS and Python
    # do, by code point; the database's default collation may not.
    schema_editor.execute('ALTER TABLE pfa_mirror ALTER COLUMN pfa_id TYPE varchar(64) COLLATE "C"')


def pfa_id_default_order(apps, schema_editor):
    schema_editor.execute('ALTER TABLE pfa_mirror ALTER COLUMN pfa_id TYPE varchar(64) COLLATE "default"')


class Migration(migrations.Migration):
    dependencies = [
        ("mirror", "0006_mirror_data_stored_as_json"),
    ]

    operations = [
        migrations.AddField(
            model_name="organization",
            name="read_watermark",
            field=models.DateTimeField(
                blank=True,
                editable=False,
                help_text="Incremental reads ask for rows saved since this moment, less the lookback.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="organization",
            name="read_watermark_source",
            field=models.CharField(
                blank=True,
                editable=False,
                help_text="The PEMS grid (base URL, tenant, PEMS organization) the watermark was taken from.",
                max_length=700,
            ),
        ),
        migrations.RunPython(watermarks_to_organizations, migrations.RunPython.noop),
        migrations.RemoveField(model_name="apiconfiguration", name="incremental_watermark"),
        migrations.AlterField(
            model_name="apiconfiguration",
            name="pems_organization_code",
            field=models.CharField(
                blank=True,
                help_text="Defaults to the organization's code. Not allowed on the global default connection.",
                max_length=32,
            ),
        ),
        migrations.AlterField(
            model_name="apiconfiguration",
            name="time_zone",
            field=models.CharField(
                help_text="IANA zone of the tenant, e.g. America/Chicago.",
                max_length=64,
                validators=[mirror.models.validate_time_zone],
            ),
        ),
        migrations.AddField(
            model_name="pfamirror",
            name="deleted_at",
            field=models.DateTimeField(
                blank=True,
                help_text="When a complete full read found the record gone from PEMS; purged after the retention days.",
                null=True,
            ),
        ),
        migrations.AddIndex(
            model_name="pfamirror",
            index=models.Index(
                condition=models.Q(("deleted_at__isnull", False)),
                fields=["organization", "deleted_at"],
                name="pfa_mirror_org_deleted",
            ),
        ),
        migrations.RunPython(pfa_id_binary_order, pfa_id_default_order),
    ]
