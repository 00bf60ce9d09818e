"""Organizations and their PEMS connections."""

import re
import uuid
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q

from mirror.fields import OrganizationCodeField
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
