"""The delta layer: modifications, the overlay of merged records, the view `pfa_merged_live` and the
materialized views `pfa_kpi_summary` and `pfa_timeline_bounds`."""

import django.db.models.deletion
import django.utils.timezone
import mirror.fields
from django.conf import settings
from django.db import migrations, models

from mirror import views_sql


# The view as this migration created it (the live text, derived from the model, is
# `mirror.views_sql.MERGED_LIVE`).
_COLUMNS = (
    'pfa_id, pems_record_id, pems_last_modified, area_silo, category, category_description, "class", source, '
    "dor, monthly_rate, purchase_price, manufacturer, model, project_code, equipment_tag, plan_start_date, "
    "plan_end_date, forecast_start_date, forecast_end_date, actual_start_date, actual_end_date, is_actualized, "
    "is_discontinued, is_funds_transferred, data, content_hash, version, first_synced_at, last_synced_at, "
    "deleted_at, organization_id"
)
MERGED_LIVE = f"""
CREATE VIEW pfa_merged_live AS
SELECT m.id, {", ".join("m." + c for c in _COLUMNS.split(", "))}
  FROM pfa_mirror m
 WHERE m.deleted_at IS NULL
   AND NOT EXISTS (SELECT 1 FROM pfa_overlay o
                    WHERE o.organization_id = m.organization_id AND o.pfa_id = m.pfa_id AND o.viewer_id IS NULL)
UNION ALL
SELECT o.mirror_id, {", ".join("o." + c for c in _COLUMNS.split(", "))}
  FROM pfa_overlay o
 WHERE o.viewer_id IS NULL AND o.deleted_at IS NULL
"""


def create_views(apps, schema_editor):
    # Keys compare and sort in code-point order, as pfa_mirror's (migration 0007).
    for table in ("pfa_overlay", "pfa_modification"):
        schema_editor.execute(f'ALTER TABLE {table} ALTER COLUMN pfa_id TYPE varchar(64) COLLATE "C"')
    schema_editor.execute(MERGED_LIVE)
    schema_editor.execute(views_sql.CREATE_MATERIALIZED_VIEWS)


def drop_views(apps, schema_editor):
    for view in views_sql.MATERIALIZED_VIEWS:
        schema_editor.execute(f"DROP MATERIALIZED VIEW IF EXISTS {view}")
    schema_editor.execute("DROP VIEW IF EXISTS pfa_merged_live")


class Migration(migrations.Migration):
    dependencies = [
        ("mirror", "0008_organization_code_validated"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="PfaMergedLive",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("pfa_id", models.CharField(max_length=64)),
                ("pems_record_id", models.BigIntegerField(blank=True, null=True)),
                ("pems_last_modified", models.DateTimeField(blank=True, null=True)),
                ("area_silo", models.TextField(blank=True)),
                ("category", models.TextField(blank=True)),
                ("category_description", models.TextField(blank=True)),
                ("pfa_class", models.TextField(blank=True, db_column="class")),
                ("source", models.TextField(blank=True)),
                ("dor", models.TextField(blank=True)),
                ("monthly_rate", models.DecimalField(blank=True, decimal_places=4, max_digits=18, null=True)),
                ("purchase_price", models.DecimalField(blank=True, decimal_places=4, max_digits=18, null=True)),
                ("manufacturer", models.TextField(blank=True)),
                ("model", models.TextField(blank=True)),
                ("project_code", models.TextField(blank=True)),
                ("equipment_tag", models.TextField(blank=True)),
                ("plan_start_date", models.DateField(blank=True, null=True)),
                ("plan_end_date", models.DateField(blank=True, null=True)),
                ("forecast_start_date", models.DateField(blank=True, null=True)),
                ("forecast_end_date", models.DateField(blank=True, null=True)),
                ("actual_start_date", models.DateField(blank=True, null=True)),
                ("actual_end_date", models.DateField(blank=True, null=True)),
                ("is_actualized", models.BooleanField(default=False)),
                ("is_discontinued", models.BooleanField(default=False)),
                ("is_funds_transferred", models.BooleanField(default=False)),
                ("data", mirror.fields.JSONTextField(help_text="The whole PEMS row, unknown tenant columns included.")),
                ("content_hash", models.CharField(max_length=32)),
                (
                    "version",
                    models.PositiveIntegerField(default=1, help_text="Grows by one each time the content changes."),
                ),
                ("first_synced_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "last_synced_at",
                    models.DateTimeField(
                        default=django.utils.timezone.now,
                        help_text="When a sync last wrote this row (unchanged rows are not rewritten).",
                    ),
                ),
                (
                    "deleted_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="When a complete full read found the record gone from PEMS; purged after the retention days.",
                        null=True,
                    ),
                ),
            ],
            options={
                "db_table": "pfa_merged_live",
                "managed": False,
            },
        ),
        migrations.CreateModel(
            name="ViewRefresh",
            fields=[
                ("id", models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False)),
                ("requested", models.PositiveBigIntegerField(default=0, help_text="Refresh requests made so far.")),
                (
                    "refreshed",
                    models.PositiveBigIntegerField(default=0, help_text="The requests the last refresh covered."),
                ),
                ("running_since", models.DateTimeField(blank=True, null=True)),
                ("last_refreshed_at", models.DateTimeField(blank=True, null=True)),
                ("last_duration_ms", models.PositiveIntegerField(blank=True, null=True)),
                ("last_error", models.TextField(blank=True)),
            ],
            options={
                "verbose_name": "materialized view refresh",
                "db_table": "pfa_view_refresh",
            },
        ),
        migrations.CreateModel(
            name="PfaModification",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("pfa_id", models.CharField(max_length=64)),
                ("changes", models.JSONField(default=dict)),
                ("base_version", models.PositiveIntegerField(help_text="The mirror row's version when editing began.")),
                (
                    "base_record_id",
                    models.BigIntegerField(blank=True, help_text="PEMS's recordid when editing began.", null=True),
                ),
                ("base_values", models.JSONField(default=dict)),
                ("change_reason", models.TextField(blank=True)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("draft", "Draft"),
                            ("committed", "Committed"),
                            ("writing", "Writing"),
                            ("written", "Written"),
                            ("conflict", "Conflict"),
                            ("failed", "Failed"),
                            ("discarded", "Discarded"),
                        ],
                        default="draft",
                        max_length=16,
                    ),
                ),
                ("error_message", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("committed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "finished_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="When it was written, discarded, or ended in conflict or failure.",
                        null=True,
                    ),
                ),
                (
                    "author",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="pfa_modifications",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "organization",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="pfa_modifications",
                        to="mirror.organization",
                    ),
                ),
            ],
            options={
                "verbose_name": "PFA modification",
                "db_table": "pfa_modification",
                "permissions": [("edit_pfa_records", "Can edit PFA records")],
                "indexes": [
                    models.Index(
                        condition=models.Q(("state__in", ["draft", "committed", "writing"])),
                        fields=["organization", "pfa_id", "committed_at"],
                        name="pfa_modification_open",
                    ),
                    models.Index(fields=["organization", "state"], name="pfa_modification_org_state"),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("state", "draft")),
                        fields=("organization", "pfa_id", "author"),
                        name="pfa_modification_one_draft_per_author",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="PfaOverlay",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("pfa_id", models.CharField(max_length=64)),
                ("pems_record_id", models.BigIntegerField(blank=True, null=True)),
                ("pems_last_modified", models.DateTimeField(blank=True, null=True)),
                ("area_silo", models.TextField(blank=True)),
                ("category", models.TextField(blank=True)),
                ("category_description", models.TextField(blank=True)),
                ("pfa_class", models.TextField(blank=True, db_column="class")),
                ("source", models.TextField(blank=True)),
                ("dor", models.TextField(blank=True)),
                ("monthly_rate", models.DecimalField(blank=True, decimal_places=4, max_digits=18, null=True)),
                ("purchase_price", models.DecimalField(blank=True, decimal_places=4, max_digits=18, null=True)),
                ("manufacturer", models.TextField(blank=True)),
                ("model", models.TextField(blank=True)),
                ("project_code", models.TextField(blank=True)),
                ("equipment_tag", models.TextField(blank=True)),
                ("plan_start_date", models.DateField(blank=True, null=True)),
                ("plan_end_date", models.DateField(blank=True, null=True)),
                ("forecast_start_date", models.DateField(blank=True, null=True)),
                ("forecast_end_date", models.DateField(blank=True, null=True)),
                ("actual_start_date", models.DateField(blank=True, null=True)),
                ("actual_end_date", models.DateField(blank=True, null=True)),
                ("is_actualized", models.BooleanField(default=False)),
                ("is_discontinued", models.BooleanField(default=False)),
                ("is_funds_transferred", models.BooleanField(default=False)),
                ("data", mirror.fields.JSONTextField(help_text="The whole PEMS row, unknown tenant columns included.")),
                ("content_hash", models.CharField(max_length=32)),
                (
                    "version",
                    models.PositiveIntegerField(default=1, help_text="Grows by one each time the content changes."),
                ),
                ("first_synced_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "last_synced_at",
                    models.DateTimeField(
                        default=django.utils.timezone.now,
                        help_text="When a sync last wrote this row (unchanged rows are not rewritten).",
                    ),
                ),
                (
                    "deleted_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="When a complete full read found the record gone from PEMS; purged after the retention days.",
                        null=True,
                    ),
                ),
                ("mirror_id", models.BigIntegerField(help_text="The pfa_mirror row this merges onto.")),
                ("changed_fields", models.JSONField(default=list)),
                (
                    "organization",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="mirror.organization",
                    ),
                ),
                (
                    "viewer",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "db_table": "pfa_overlay",
                "indexes": [
                    models.Index(
                        fields=["organization", "category", "-forecast_start_date"], name="pfa_overlay_org_cat_fcst"
                    ),
                    models.Index(fields=["viewer", "organization"], name="pfa_overlay_viewer_org"),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("organization", "pfa_id", "viewer"), name="pfa_overlay_org_pfa_viewer"
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("viewer__isnull", True)),
                        fields=("organization", "pfa_id"),
                        name="pfa_overlay_one_shared",
                    ),
                ],
            },
        ),
        migrations.RunPython(create_views, drop_views),
    ]
