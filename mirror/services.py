"""Domain functions of the mirror's organizations and their PEMS connections: registering and changing
organizations, their read and write connections (and rotating their secrets), the PEMS client of a
connection, and checking a connection against PEMS. Purging what PEMS deleted is `mirror.purge`."""

import logging
import time
from dataclasses import dataclass, replace

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction

from mirror.fields import organization_code_normalize
from mirror.models import ApiConfiguration, Organization
from mirror.pems import DEFAULT_PAGE_SIZE, PemsClient, organization_filter
from mirror.secrets import SecretDecryptionError, rotate_secret

logger = logging.getLogger(__name__)


def _apply_and_save(instance, fields: dict) -> None:
    for name, value in fields.items():
        setattr(instance, name, value)
    instance.full_clean()
    instance.save()


@transaction.atomic
def organization_create(*, code: str, name: str, is_active: bool = True, sync_enabled: bool = True) -> Organization:
    """Create an organization (its PEMS connection is added separately); validates like the admin."""
    organization = Organization()
    _apply_and_save(organization, {"code": code, "name": name, "is_active": is_active, "sync_enabled": sync_enabled})
    return organization


@transaction.atomic
def organization_update(*, organization: Organization, **fields) -> Organization:
    """Change an organization's `code`, `name`, `is_active` or `sync_enabled`; validates first."""
    _apply_and_save(organization, fields)
    return organization


@transaction.atomic
def read_connection_put(*, organization: Organization, secret: str = "", **fields) -> ApiConfiguration:
    """Create or change the organization's PEMS read connection; a blank `secret` keeps the stored one,
    unless the change moves where it is sent (see ApiConfiguration.clean)."""
    configuration = ApiConfiguration.objects.select_for_update().filter(
        organization=organization, usage=ApiConfiguration.Usage.READ
    ).first() or ApiConfiguration(organization=organization, usage=ApiConfiguration.Usage.READ)
    if secret:
        try:
            configuration.set_secret(secret)
        except ValidationError as error:
            raise ValidationError({"secret": error.messages}) from None
    _apply_and_save(configuration, fields)
    return configuration


@transaction.atomic
def organization_register(
    *,
    code: str,
    name: str,
    base_url: str,
    tenant: str,
    username: str,
    secret: str,
    time_zone: str,
    auth_type: str = ApiConfiguration.AuthType.BASIC,
    endpoint: str = ApiConfiguration.Endpoint.GRIDS,
    page_size: int = DEFAULT_PAGE_SIZE,
    pems_organization_code: str = "",
) -> tuple[Organization, bool]:
    """Create or update an organization and its read connection; returns (organization, created).

    `time_zone` (the tenant's IANA zone) has no default: PEMS times carry no offset, and a wrong zone
    shifts every incremental read's window by hours.
    """
    organization = Organization.objects.filter(code=organization_code_normalize(code)).first()
    created = organization is None
    if created:
        organization = organization_create(code=code, name=name)
    else:
        organization_update(organization=organization, name=name)
    read_connection_put(
        organization=organization,
        secret=secret,
        base_url=base_url,
        tenant=tenant,
        username=username,
        auth_type=auth_type,
        endpoint=endpoint,
        time_zone=time_zone,
        page_size=page_size,
        pems_organization_code=pems_organization_code,
    )
    return organization, created


@dataclass(frozen=True)
class SecretRotation:
    """What `connection_secrets_rotate` did: secrets re-encrypted, already current, and the
    connections whose secret no configured key decrypts (left as they are)."""

    rotated: int
    current: int
    undecryptable: list[str]


def connection_secrets_rotate() -> SecretRotation:
    """Encrypt every stored PEMS secret with the first PFASYNC_ENCRYPTION_KEY entry (run it after
    putting a new key first); secrets it already encrypts are left alone, so it is safe to repeat.

    Each secret is replaced only if it is still the one read (a compare-and-set), so a secret
    changed meanwhile is never overwritten with the old one.
    """
    rotated = current = 0
    undecryptable = []
    for configuration in ApiConfiguration.objects.exclude(secret="").select_related("organization").order_by("pk"):
        try:
            token = rotate_secret(configuration.secret, owner=configuration.describe())
        except SecretDecryptionError:
            undecryptable.append(configuration.describe())
            continue
        if token is None:
            current += 1
        elif ApiConfiguration.objects.filter(pk=configuration.pk, secret=configuration.secret).update(secret=token):
            rotated += 1
    if rotated:
        logger.info("Re-encrypted %d PEMS secrets with the first PFASYNC_ENCRYPTION_KEY entry", rotated)
    return SecretRotation(rotated=rotated, current=current, undecryptable=undecryptable)


def read_configuration_for(organization: Organization) -> ApiConfiguration:
    """The organization's own read connection, else the global default one."""
    configuration = (
        ApiConfiguration.objects.filter(organization=organization, usage="read").first()
        or ApiConfiguration.objects.filter(organization__isnull=True, usage="read").first()
    )
    if configuration is None:
        raise ImproperlyConfigured(
            f"Organization {organization.code} has no PEMS read connection and there is no default one: "
            f"add one with `manage.py add_organization {organization.code} ...` or in the admin."
        )
    return configuration


def write_configuration_for(organization: Organization) -> ApiConfiguration:
    """The connection writes go through: the organization's own write connection, else its own read
    connection, else the global default write connection, else the global default read one."""
    own = {configuration.usage: configuration for configuration in organization.api_configurations.all()}
    return (
        own.get("write")
        or own.get("read")
        or ApiConfiguration.objects.filter(organization__isnull=True, usage="write").first()
        or read_configuration_for(organization)
    )


def pems_client_for(organization: Organization, *, usage: str = "read") -> PemsClient:
    """A client for reading (or, `usage="write"`, writing) the organization's PFA records."""
    configuration = write_configuration_for(organization) if usage == "write" else read_configuration_for(organization)
    return PemsClient(configuration.pems_settings(organization))


@dataclass(frozen=True)
class ConnectionCheck:
    """What one count request through a connection told us."""

    organization_code: str
    record_count: int
    latency_ms: int


def pems_connection_check(*, configuration: ApiConfiguration) -> ConnectionCheck:
    """Ask PEMS for one count through `configuration`; raises PemsError or ImproperlyConfigured.

    A global default connection names no organization (each one reads its own): it is checked with
    the first active organization that reads through it, having no connection of its own.
    """
    organization = configuration.organization
    if organization is None:
        organization = (
            Organization.objects.filter(is_active=True)
            .exclude(api_configurations__usage=configuration.usage)
            .order_by("code")
            .first()
        )
        if organization is None:
            raise ImproperlyConfigured(
                "No active organization uses this default connection yet (every one has its own): "
                "there is no PEMS organization to test it with."
            )
    # One attempt: an admin waiting on the page wants the first answer, not five retries.
    client_settings = replace(configuration.pems_settings(organization), max_attempts=1)
    started = time.monotonic()
    with PemsClient(client_settings) as client:
        record_count = client.count([organization_filter(client_settings.organization)])
    return ConnectionCheck(
        organization_code=client_settings.organization,
        record_count=record_count,
        latency_ms=round((time.monotonic() - started) * 1000),
    )
