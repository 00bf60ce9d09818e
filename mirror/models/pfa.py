"""The mirrored PFA records: their columns (declared once, with their PEMS aliases), the mirror, the
delta layer's overlay and merged view, and the materialized views' refresh state."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from mirror.fields import JSONTextField
from mirror.models.organization import Organization


class PfaMirrorQuerySet(models.QuerySet):
    def live(self) -> "PfaMirrorQuerySet":
        """Records PEMS still holds (not marked deleted by a full read)."""
        return self.filter(deleted_at__isnull=True)


def pems_column(alias: str, field: models.Field, *, editable: bool = False) -> models.Field:
    """`field`, the typed form of the PEMS grid column `alias`; `editable`: a planner may edit it
    and the write-back sends it to PEMS. The model's fields so marked are the one declaration of
    the PFA columns: the parser, the API, the delta layer and the view SQL read them from here."""
    field.pems_alias = alias
    field.pems_editable = editable
    return field


class PfaRecordColumns(models.Model):
    """The columns of a PFA record as the mirror holds it; `pfa_mirror` and the delta layer's
    overlay (`pfa_overlay`) share them, so the merged view reads both alike."""

    id = models.BigAutoField(primary_key=True)
    pfa_id = pems_column("pfs_id", models.CharField(max_length=64))
    pems_record_id = pems_column("pfs_recordid", models.BigIntegerField(null=True, blank=True))
    pems_last_modified = pems_column("pfs_lastmodified", models.DateTimeField(null=True, blank=True))
    area_silo = pems_column("pfs_f_area", models.TextField(blank=True))
    category = pems_column("pfs_f_category", models.TextField(blank=True), editable=True)
    category_description = pems_column("pfs_f_catdesc", models.TextField(blank=True))
    pfa_class = pems_column("pfs_f_class", models.TextField(blank=True, db_column="class"), editable=True)
    source = pems_column("pfs_f_source", models.TextField(blank=True), editable=True)
    dor = pems_column("pfs_f_dor", models.TextField(blank=True), editable=True)
    monthly_rate = pems_column(
        "pfs_f_rental", models.DecimalField(max_digits=18, decimal_places=4, null=True, blank=True), editable=True
    )
    purchase_price = pems_column(
        "pfs_f_purchase", models.DecimalField(max_digits=18, decimal_places=4, null=True, blank=True), editable=True
    )
    manufacturer = pems_column("pfs_f_manufacturer", models.TextField(blank=True), editable=True)
    model = pems_column("pfs_f_model", models.TextField(blank=True), editable=True)
    project_code = pems_column("pfs_p_projcode", models.TextField(blank=True), editable=True)
    equipment_tag = pems_column("pfs_equipment_tag", models.TextField(blank=True), editable=True)
    plan_start_date = pems_column("pfs_p_startdate", models.DateField(null=True, blank=True), editable=True)
    plan_end_date = pems_column("pfs_p_enddate", models.DateField(null=True, blank=True), editable=True)
    forecast_start_date = pems_column("pfs_f_startdate", models.DateField(null=True, blank=True), editable=True)
    forecast_end_date = pems_column("pfs_f_enddate", models.DateField(null=True, blank=True), editable=True)
    actual_start_date = pems_column("pfs_a_startdate", models.DateField(null=True, blank=True), editable=True)
    actual_end_date = pems_column("pfs_a_enddate", models.DateField(null=True, blank=True), editable=True)
    is_actualized = pems_column("pfs_f_actualized", models.BooleanField(default=False), editable=True)
    is_discontinued = pems_column("pfs_f_discontinued", models.BooleanField(default=False), editable=True)
    is_funds_transferred = pems_column("pfs_f_fundstrans", models.BooleanField(default=False), editable=True)
    data = JSONTextField(help_text="The whole PEMS row, unknown tenant columns included.")
    content_hash = models.CharField(max_length=32)
    version = models.PositiveIntegerField(default=1, help_text="Grows by one each time the content changes.")
    first_synced_at = models.DateTimeField(default=timezone.now)
    last_synced_at = models.DateTimeField(
        default=timezone.now, help_text="When a sync last wrote this row (unchanged rows are not rewritten)."
    )
    deleted_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When a complete full read found the record gone from PEMS; purged after the retention days.",
    )

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.pfa_id} ({self.organization_id})"

    @classmethod
    def pfa_columns(cls) -> tuple[models.Field, ...]:
        """The PEMS grid columns of a record, in model order: the fields marked by `pems_column`."""
        return tuple(field for field in cls._meta.concrete_fields if hasattr(field, "pems_alias"))


class PfaMirror(PfaRecordColumns):
    """One PFA record as PEMS last sent it: typed columns for queries, the whole row in `data`."""

    # No index of its own: the unique (organization, pfa_id) index serves every lookup by organization,
    # and one index less is one write less per row synced. No foreign key constraint either: on
    # PostgreSQL it checks every row inserted, a fifth of the database's work in a first load.
    # Triggers (migration 0005) keep the same promise at one check per statement: a row must name
    # an existing organization, and deleting an organization deletes its rows.
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="pfa_records", db_index=False, db_constraint=False
    )

    objects = PfaMirrorQuerySet.as_manager()

    class Meta:
        db_table = "pfa_mirror"
        verbose_name = "PFA record"
        constraints = [
            models.UniqueConstraint(fields=["organization", "pfa_id"], name="pfa_mirror_org_pfa_id"),
        ]
        indexes = [
            # The front end's list: organization + category + forecast window, newest first.
            # pfa_id last: the list's tie-break, so a page is read in order from the index and stops.
            models.Index(
                fields=["organization", "category", "-forecast_start_date", "pfa_id"], name="pfa_mirror_org_cat_fcst"
            ),
            models.Index(fields=["organization", "source"], name="pfa_mirror_org_source"),
            models.Index(fields=["organization", "dor"], name="pfa_mirror_org_dor"),
            models.Index(fields=["organization", "pems_last_modified"], name="pfa_mirror_org_lastmod"),
            # Few rows are deleted at a time: the purge and the deleted-records views read this small index.
            models.Index(
                fields=["organization", "deleted_at"],
                name="pfa_mirror_org_deleted",
                condition=Q(deleted_at__isnull=False),
            ),
        ]


# The PEMS grid columns of a record, in model order.
PFA_COLUMNS = PfaMirror.pfa_columns()
# The grid alias of each of them, by field name.
PFA_ALIASES = {field.name: field.pems_alias for field in PFA_COLUMNS}
# The typed business fields a planner may edit; keys and PEMS bookkeeping are not among them.
EDITABLE_FIELDS = tuple(field.name for field in PFA_COLUMNS if field.pems_editable)


class PfaOverlay(PfaRecordColumns):
    """A record with open modifications, merged: the mirror's row with the committed changes applied
    in commit order (`viewer` empty), or with one user's draft on top of those (`viewer` that user).

    Kept by `mirror.delta.overlay_refresh` whenever a modification or the mirror row changes; the
    view `pfa_merged_live` reads it in place of the mirror row.
    """

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+", db_index=False)
    mirror_id = models.BigIntegerField(help_text="The pfa_mirror row this merges onto.")
    viewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    changes = models.JSONField(
        default=dict,
        help_text='Each field that differs from PEMS: {"pems", "value", "state", "by"} of the edit that set it.',
    )

    class Meta:
        db_table = "pfa_overlay"
        constraints = [
            models.UniqueConstraint(fields=["organization", "pfa_id", "viewer"], name="pfa_overlay_org_pfa_viewer"),
            models.UniqueConstraint(
                fields=["organization", "pfa_id"], condition=Q(viewer__isnull=True), name="pfa_overlay_one_shared"
            ),
        ]
        indexes = [
            models.Index(
                fields=["organization", "category", "-forecast_start_date", "pfa_id"], name="pfa_overlay_org_cat_fcst"
            ),
            models.Index(fields=["viewer", "organization"], name="pfa_overlay_viewer_org"),
        ]


class PfaMergedLive(PfaRecordColumns):
    """The database view `pfa_merged_live`: every live mirror record with the committed, unwritten
    modifications applied (read-only; created by migration, not by Django)."""

    organization = models.ForeignKey(Organization, on_delete=models.DO_NOTHING, related_name="+", db_index=False)

    class Meta:
        managed = False
        db_table = "pfa_merged_live"


class ViewRefresh(models.Model):
    """The materialized views' refresh state (one row): requests are counted, refreshes coalesce."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    requested = models.PositiveBigIntegerField(default=0, help_text="Refresh requests made so far.")
    refreshed = models.PositiveBigIntegerField(default=0, help_text="The requests the last refresh covered.")
    running_since = models.DateTimeField(null=True, blank=True)
    last_refreshed_at = models.DateTimeField(null=True, blank=True)
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        db_table = "pfa_view_refresh"
        verbose_name = "materialized view refresh"

    def __str__(self) -> str:
        return f"views refreshed {self.last_refreshed_at or 'never'}"
