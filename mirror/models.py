"""What pfasync holds from PEMS: organizations, their PEMS connections and the mirrored PFA records."""

import re
import uuid
from collections.abc import Iterable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from mirror.fields import JSONTextField, OrganizationCodeField
from mirror.pems import DEFAULT_CALL_DEADLINE, DEFAULT_PAGE_SIZE, PemsSettings
from mirror.secrets import decrypt_secret, encrypt_secret, validate_secret


def validate_time_zone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not an IANA time zone name (e.g. America/Chicago).") from None


_ORGANIZATION_CODE = re.compile(r"[A-Za-z0-9_-]+")


def validate_organization_code(value: str) -> None:
    """An organization code goes into PEMS request headers, filters and record keys: letters, digits,
    '_' and '-' only."""
    if not _ORGANIZATION_CODE.fullmatch(value):
        raise ValidationError(
            f"{value!r} is not an organization code: use only letters, digits, '_' and '-' (e.g. RIO or RIO_2).",
            code="invalid_organization_code",
        )


# A connection's settings that decide where its secret is sent, and as whose: changing one requires
# the secret again (ApiConfiguration.clean).
SECRET_BOUND_FIELDS = {
    "base_url": "base URL",
    "tenant": "tenant",
    "username": "username",
    "auth_type": "authentication type",
}


def pems_base_url_error(base_url: str) -> str | None:
    """Why `base_url` may not be used, or None: the connection sends the PEMS credentials there, so
    plain http is refused unless PEMS_ALLOW_HTTP is set (the simulator speaks only http)."""
    if base_url.lower().startswith("http://") and not settings.PEMS_ALLOW_HTTP:
        return (
            "An http:// base URL would send the PEMS credentials unencrypted: use https://, or set "
            "PEMS_ALLOW_HTTP=true (e.g. for the PEMS simulator)."
        )
    return None


class Organization(models.Model):
    """A PEMS organization whose PFA records we mirror."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    code = OrganizationCodeField(
        max_length=32,
        unique=True,
        validators=[validate_organization_code],
        help_text="PEMS organization code, e.g. RIO: letters, digits, '_' and '-'; stored upper case.",
    )
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)
    sync_enabled = models.BooleanField(default=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        related_name="organizations",
        blank=True,
        help_text="Users who see and act on this organization (staff see every organization).",
    )
    read_watermark = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="Incremental reads ask for rows saved since this moment, less the lookback.",
    )
    read_watermark_source = models.CharField(
        max_length=700,
        blank=True,
        editable=False,
        help_text="The PEMS grid (base URL, tenant, PEMS organization) the watermark was taken from.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "organizations"
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code

    def watermark_for(self, source: str):
        """The read watermark, if it was taken from `source`; None: the next read must be full."""
        return self.read_watermark if self.read_watermark_source == source else None

    def move_watermark(self, watermark, *, source: str) -> None:
        """Keep `watermark` (taken from `source`) for the organization's next incremental read."""
        Organization.objects.filter(pk=self.pk).update(read_watermark=watermark, read_watermark_source=source)
        self.read_watermark, self.read_watermark_source = watermark, source


class ApiConfiguration(models.Model):
    """A PEMS connection: where and how to read (or write) an organization's PFA grid."""

    class Usage(models.TextChoices):
        READ = "read", "Read"
        WRITE = "write", "Write"

    class Endpoint(models.TextChoices):
        GRIDS = "grids", "grids (current)"
        GRIDDATA = "griddata", "griddata (older tenants)"

    class AuthType(models.TextChoices):
        BASIC = "basic", "Basic (username and password)"
        API_KEY = "api_key", "API key"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_configurations",
        help_text="Empty means the global default used by organizations without their own.",
    )
    usage = models.CharField(max_length=8, choices=Usage, default=Usage.READ)
    base_url = models.URLField(max_length=500, help_text="e.g. https://eam.example.com")
    endpoint = models.CharField(max_length=16, choices=Endpoint, default=Endpoint.GRIDS)
    tenant = models.CharField(max_length=100)
    pems_organization_code = models.CharField(
        max_length=32,
        blank=True,
        validators=[validate_organization_code],
        help_text="Defaults to the organization's code. Not allowed on the global default connection.",
    )
    auth_type = models.CharField(max_length=16, choices=AuthType, default=AuthType.BASIC)
    username = models.CharField(max_length=150, blank=True)
    # Fernet token, never the plain secret: use set_secret()/get_secret().
    secret = models.TextField(blank=True, editable=False)
    grid_name = models.CharField(max_length=64, default="CUPFAG")
    grid_id = models.CharField(max_length=32, default="100541")
    page_size = models.PositiveIntegerField(
        default=DEFAULT_PAGE_SIZE, validators=[MinValueValidator(1), MaxValueValidator(50_000)]
    )
    request_timeout = models.FloatField(
        default=60.0,
        validators=[MinValueValidator(1.0), MaxValueValidator(900.0)],
        help_text="Seconds to wait for one PEMS answer.",
    )
    # No default: a wrong zone shifts every incremental read's window by hours, so it is always asked for.
    time_zone = models.CharField(
        max_length=64, validators=[validate_time_zone], help_text="IANA zone of the tenant, e.g. America/Chicago."
    )
    first_sync_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_sync_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_sync_record_count = models.PositiveBigIntegerField(default=0, editable=False)
    total_sync_record_count = models.PositiveBigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "api_configurations"
        verbose_name = "PEMS connection"
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "usage"],
                name="api_configurations_one_per_org_usage",
            ),
            models.UniqueConstraint(
                fields=["usage"],
                condition=Q(organization__isnull=True),
                name="api_configurations_one_default_per_usage",
            ),
        ]

    def __str__(self) -> str:
        owner = self.organization.code if self.organization_id else "default"
        return f"{owner} {self.usage} connection ({self.tenant})"

    def clean(self) -> None:
        super().clean()
        errors = {}
        if self.organization_id is None and self.pems_organization_code:
            errors["pems_organization_code"] = (
                "The global default connection serves many organizations: each reads its own PEMS "
                "organization, so it cannot name one."
            )
        if self.base_url and (problem := pems_base_url_error(self.base_url)):
            errors["base_url"] = problem
        if not self.secret:
            errors["secret"] = "A PEMS connection needs its password or API key."
        elif changed := self._target_changed_without_secret():
            errors["secret"] = (
                f"Changing the {' and '.join(changed)} needs the password or API key again: the stored one "
                "is only ever sent where it was given for."
            )
        if errors:
            raise ValidationError(errors)

    def _target_changed_without_secret(self) -> list[str]:
        """The settings that decide where the secret goes (and as whose) which differ from the stored
        ones while the secret is still the stored one."""
        if self._state.adding:
            return []
        stored = ApiConfiguration.objects.filter(pk=self.pk).values(*SECRET_BOUND_FIELDS, "secret").first()
        if stored is None or stored["secret"] != self.secret:
            return []
        changed = [name for name in SECRET_BOUND_FIELDS if getattr(self, name) != stored[name]]
        if "base_url" in changed and self.base_url.rstrip("/") == stored["base_url"].rstrip("/"):
            changed.remove("base_url")
        return [SECRET_BOUND_FIELDS[name] for name in changed]

    def set_secret(self, plaintext: str) -> None:
        """Encrypt and keep `plaintext`; ValidationError (without the secret) if it has leading or
        trailing whitespace or a control character."""
        validate_secret(plaintext)
        self.secret = encrypt_secret(plaintext)

    def get_secret(self) -> str:
        return decrypt_secret(self.secret, owner=self.describe())

    def describe(self) -> str:
        """Names the connection in messages: organization, usage, tenant and id."""
        return f"PEMS connection '{self}' (id {self.pk})"

    def pems_settings(self, organization: Organization) -> PemsSettings:
        """Client settings for reading `organization` through this connection.

        Raises ImproperlyConfigured for a plain-http base URL stored before PEMS_ALLOW_HTTP existed
        (or while it was set): the credentials are never sent over it.
        """
        if problem := pems_base_url_error(self.base_url):
            raise ImproperlyConfigured(f"{self.describe()}: {problem}")
        return PemsSettings(
            base_url=self.base_url,
            endpoint=self.endpoint,
            tenant=self.tenant,
            # The default connection never names a PEMS organization: each organization reads its own.
            organization=(self.organization_id and self.pems_organization_code) or organization.code,
            auth_type=self.auth_type,
            username=self.username,
            secret=self.get_secret(),
            grid_name=self.grid_name,
            grid_id=self.grid_id,
            page_size=self.page_size,
            read_timeout=self.request_timeout,
            time_zone=self.time_zone,
            # A configured request timeout is always allowed one full wait.
            call_deadline=max(DEFAULT_CALL_DEADLINE, self.request_timeout),
        )

    def record_sync(self, *, finished_at, record_count: int) -> None:
        """Update the sync-tracking fields after a completed read."""
        changes = {
            "first_sync_at": models.functions.Coalesce(F("first_sync_at"), finished_at),
            "last_sync_at": finished_at,
            "last_sync_record_count": record_count,
            "total_sync_record_count": F("total_sync_record_count") + record_count,
        }
        ApiConfiguration.objects.filter(pk=self.pk).update(**changes)
        self.refresh_from_db(fields=list(changes))


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


# --- The delta layer: local edits beside the mirror -------------------------------------------------

# The PEMS grid columns of a record, in model order.
PFA_COLUMNS = PfaMirror.pfa_columns()
# The grid alias of each of them, by field name.
PFA_ALIASES = {field.name: field.pems_alias for field in PFA_COLUMNS}
# The typed business fields a planner may edit; keys and PEMS bookkeeping are not among them.
EDITABLE_FIELDS = tuple(field.name for field in PFA_COLUMNS if field.pems_editable)


class TransitionNotAllowed(ValueError):
    """`PfaModification.TRANSITIONS` has no such state change: a mistake in the code that asks for it."""


class ModificationStateChanged(Exception):
    """A modification was no longer in the state a transition expected: someone moved it first."""


class PfaModificationQuerySet(models.QuerySet):
    def transition(self, *, from_states: Iterable[str], to_state: str, **fields: Any) -> int:
        """Move this queryset's modifications that are in one of `from_states` to `to_state`, setting
        `fields` too, in one conditional UPDATE; returns how many moved (the others were in another
        state: moved meanwhile by someone else, or never in those states). TransitionNotAllowed if
        `PfaModification.TRANSITIONS` does not allow one of `from_states` to `to_state`.

        The only way a modification's state changes once it exists: `PfaModification.transition`
        moves one. `finished_at` follows the state unless given: now when it ends
        (`PfaModification.ENDED_STATES`), cleared otherwise.
        """
        from_states = PfaModification.check_transition(from_states, to_state)
        values = PfaModification.transition_fields(to_state, fields)
        return self.filter(state__in=from_states).update(state=to_state, **values)

    def shared(self) -> "PfaModificationQuerySet":
        """Committed modifications not yet written: what every reader of the merged view sees."""
        return self.filter(state__in=PfaModification.SHARED_STATES)

    def to_write(self) -> "PfaModificationQuerySet":
        """Committed modifications a write run takes: not those held because their record is marked
        deleted in PEMS (open again if a read finds it again; failed when it is purged)."""
        deleted = PfaMirror.objects.filter(
            organization_id=OuterRef("organization_id"), pfa_id=OuterRef("pfa_id"), deleted_at__isnull=False
        )
        return self.shared().filter(~Exists(deleted))

    def in_commit_order(self) -> "PfaModificationQuerySet":
        return self.order_by("committed_at", "id")


class PfaModification(models.Model):
    """One user's edit set on one PFA record, from a private draft to written in PEMS.

    `changes` maps model field names to new values in their JSON form (dates `YYYY-MM-DD`,
    amounts as decimal strings, flags as booleans); `base_values` holds the mirror's values of the
    same fields when editing began, which a three-way merge compares against.
    """

    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        COMMITTED = "committed", "Committed"
        WRITING = "writing", "Writing"
        WRITTEN = "written", "Written"
        CONFLICT = "conflict", "Conflict"
        FAILED = "failed", "Failed"
        DISCARDED = "discarded", "Discarded"

    # Applied to the merged view every reader sees, in commit order.
    SHARED_STATES = (State.COMMITTED, State.WRITING)
    # Still open: in the overlay (drafts for their author), on their way to PEMS.
    OPEN_STATES = (State.DRAFT, State.COMMITTED, State.WRITING)
    # Nothing moves a modification out of these: the row stays as history.
    TERMINAL_STATES = (State.WRITTEN, State.FAILED, State.DISCARDED)
    # Not ended: held while their record is marked deleted in PEMS, failed when it is purged. A
    # conflict is neither open (nothing of it is shown or written) nor terminal (a planner resolves it).
    UNFINISHED_STATES = (*OPEN_STATES, State.CONFLICT)
    # `finished_at` is set on entering these: terminal, or waiting for a person.
    ENDED_STATES = (*TERMINAL_STATES, State.CONFLICT)
    # Every allowed state change, and who makes it (mirror.delta but where said). Any other is refused.
    TRANSITIONS: dict[str, tuple[str, ...]] = {
        # Committed or discarded by its author (`drafts_commit`, `drafts_discard`, `draft_save` when
        # every field is set back); failed when its record is purged (`modifications_fail_purged`).
        State.DRAFT: (State.COMMITTED, State.DISCARDED, State.FAILED),
        # Taken by a write run (`modification_writing`); failed when its record is purged.
        State.COMMITTED: (State.WRITING, State.FAILED),
        # Taken again by a later run when a dead worker left it writing; back to committed when PEMS
        # cannot be reached (`modification_requeue`); the PATCH's outcome (`modification_written`,
        # `modification_conflicted`, `modification_failed`); failed when its record is purged.
        State.WRITING: (State.WRITING, State.COMMITTED, State.WRITTEN, State.CONFLICT, State.FAILED),
        # Resolved by a planner (`conflict_resolve`: committed again, or discarded); failed when its
        # record is purged.
        State.CONFLICT: (State.COMMITTED, State.DISCARDED, State.FAILED),
        State.WRITTEN: (),
        State.FAILED: (),
        State.DISCARDED: (),
    }

    id = models.BigAutoField(primary_key=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="pfa_modifications")
    pfa_id = models.CharField(max_length=64)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="pfa_modifications"
    )
    changes = models.JSONField(default=dict)
    base_version = models.PositiveIntegerField(help_text="The mirror row's version when editing began.")
    base_record_id = models.BigIntegerField(null=True, blank=True, help_text="PEMS's recordid when editing began.")
    base_values = models.JSONField(default=dict)
    change_reason = models.TextField(blank=True)
    state = models.CharField(max_length=16, choices=State, default=State.DRAFT)
    error_message = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    committed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was written, discarded, or ended in conflict or failure."
    )
    written_record_id = models.BigIntegerField(
        null=True, blank=True, help_text="PEMS's recordid after this modification was written."
    )
    conflict = models.JSONField(
        default=dict, blank=True, help_text="Per conflicting field: its base, mine and theirs (PEMS's)."
    )

    objects = PfaModificationQuerySet.as_manager()

    class Meta:
        db_table = "pfa_modification"
        verbose_name = "PFA modification"
        permissions = [("edit_pfa_records", "Can edit PFA records")]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "pfa_id", "author"],
                condition=Q(state="draft"),
                name="pfa_modification_one_draft_per_author",
            ),
        ]
        indexes = [
            models.Index(
                fields=["organization", "pfa_id", "committed_at"],
                condition=Q(state__in=["draft", "committed", "writing"]),
                name="pfa_modification_open",
            ),
            models.Index(fields=["organization", "state"], name="pfa_modification_org_state"),
        ]

    def __str__(self) -> str:
        return f"{self.pfa_id} by {self.author or 'a deleted user'} ({self.state})"

    @classmethod
    def check_transition(cls, from_states: Iterable[str], to_state: str) -> tuple[str, ...]:
        """`from_states` as a tuple; TransitionNotAllowed unless each may move to `to_state`."""
        from_states = tuple(from_states)
        refused = [state for state in from_states if to_state not in cls.TRANSITIONS.get(state, ())]
        if refused or not from_states:
            raise TransitionNotAllowed(
                f"A PFA modification cannot go from {', '.join(refused) or 'no state'} to {to_state}."
            )
        return from_states

    @classmethod
    def transition_fields(cls, to_state: str, fields: dict[str, Any]) -> dict[str, Any]:
        """The columns a transition to `to_state` writes besides the state: `fields`, `updated_at` and,
        unless given, `finished_at` (now when the modification ends, cleared otherwise)."""
        now = timezone.now()
        return {
            "updated_at": now,
            "finished_at": now if to_state in cls.ENDED_STATES else None,
            **fields,
        }

    def transition(
        self,
        *,
        from_states: Iterable[str],
        to_state: str,
        among: "PfaModificationQuerySet | None" = None,
        **fields: Any,
    ) -> None:
        """Move this modification from one of `from_states` to `to_state`, setting `fields` too
        (`PfaModificationQuerySet.transition`, on this row of `among` if given: e.g. `to_write()`).
        ModificationStateChanged if it was not in those states (or not among them), and then
        nothing changes, in the database or in memory."""
        from_states = tuple(from_states)
        values = self.transition_fields(to_state, fields)  # its timestamps, for memory as for the row
        rows = (PfaModification.objects.all() if among is None else among).filter(pk=self.pk)
        if not rows.transition(from_states=from_states, to_state=to_state, **values):
            raise ModificationStateChanged(
                f"Modification {self.pk} is not {' or '.join(from_states)} (any more): not moved to {to_state}."
            )
        self.state = to_state
        for name, value in values.items():
            setattr(self, name, value)


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
