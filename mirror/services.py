"""Domain functions of the mirror: registering organizations, building their PEMS clients, reading
the mirror (live records only) and purging the records PEMS deleted."""

import logging
import time
import uuid
from dataclasses import dataclass, replace
from datetime import date, timedelta
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from mirror.models import ApiConfiguration, Organization, PfaMirror
from mirror.pems import DEFAULT_PAGE_SIZE, PemsClient, organization_filter
from mirror.secrets import SecretDecryptionError, rotate_secret
from mirror.store import psycopg_cursor

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
    _apply_and_save(
        organization, {"code": code.strip().upper(), "name": name, "is_active": is_active, "sync_enabled": sync_enabled}
    )
    return organization


@transaction.atomic
def organization_update(*, organization: Organization, **fields) -> Organization:
    """Change an organization's `code`, `name`, `is_active` or `sync_enabled`; validates first."""
    if "code" in fields:
        fields["code"] = fields["code"].strip().upper()
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
    organization = Organization.objects.filter(code=code.strip().upper()).first()
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


def pems_client_for(organization: Organization) -> PemsClient:
    return PemsClient(read_configuration_for(organization).pems_settings(organization))


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


# What a list row shows. The raw PEMS row (`data`) and the sync bookkeeping are left out: decoding
# them is most of the cost of a list, and they are only needed to show one record.
PFA_LIST_COLUMNS = (
    "id",
    "pfa_id",
    "pems_record_id",
    "pems_last_modified",
    "area_silo",
    "category",
    "category_description",
    "pfa_class",
    "source",
    "dor",
    "monthly_rate",
    "purchase_price",
    "manufacturer",
    "model",
    "project_code",
    "equipment_tag",
    "plan_start_date",
    "plan_end_date",
    "forecast_start_date",
    "forecast_end_date",
    "actual_start_date",
    "actual_end_date",
    "is_actualized",
    "is_discontinued",
    "is_funds_transferred",
    "version",
)


def pfa_records_list_query(
    *, organization: Organization, category: str = "", forecast_from=None, forecast_to=None, limit: int = 100
) -> QuerySet:
    """The front end's list query: `PFA_LIST_COLUMNS` of the live records (not deleted in PEMS), newest
    forecasts first, optionally one category and a forecast window."""
    records = PfaMirror.objects.live().filter(organization=organization)
    if category:
        records = records.filter(category=category)
    if forecast_from:
        records = records.filter(forecast_start_date__gte=forecast_from)
    if forecast_to:
        records = records.filter(forecast_start_date__lte=forecast_to)
    return records.order_by("-forecast_start_date").values_list(*PFA_LIST_COLUMNS)[:limit]


def pfa_records_list(
    *, organization: Organization, category: str = "", forecast_from=None, forecast_to=None, limit: int = 100
) -> list[dict]:
    """The front end's list (see `pfa_records_list_query` for the filters), as dicts.

    On PostgreSQL the query is run with binary results: psycopg then decodes every column in C,
    where the text results Django asks for cost milliseconds per 100 rows (timestamps are parsed
    in Python), several times the query itself. Its SQL is compiled once per combination of
    filters (`_list_statement`): building and compiling the queryset took longer than running it.
    """
    filters = {"category": category, "forecast_from": forecast_from, "forecast_to": forecast_to}
    if connection.vendor == "postgresql":
        sql, parameters = _list_statement(bool(category), bool(forecast_from), bool(forecast_to), limit)
        values = {"organization": organization.pk, **filters}
        with psycopg_cursor() as cursor:
            cursor.execute(sql, [values[name] for name in parameters], binary=True)
            rows = cursor.fetchall()
    else:
        rows = pfa_records_list_query(organization=organization, limit=limit, **filters)
    return [dict(zip(PFA_LIST_COLUMNS, row, strict=True)) for row in rows]


# Stand-ins that tell the compiled list query's parameters apart.
_STAND_INS = {
    "organization": uuid.UUID(int=1),
    "category": "<category>",
    "forecast_from": date(1, 1, 2),
    "forecast_to": date(9999, 12, 30),
}


@lru_cache(maxsize=64)
def _list_statement(category: bool, forecast_from: bool, forecast_to: bool, limit: int) -> tuple[str, tuple[str, ...]]:
    """The list query's SQL for one combination of filters, and which filter each parameter is."""
    query = pfa_records_list_query(
        organization=Organization(pk=_STAND_INS["organization"]),
        category=_STAND_INS["category"] if category else "",
        forecast_from=_STAND_INS["forecast_from"] if forecast_from else None,
        forecast_to=_STAND_INS["forecast_to"] if forecast_to else None,
        limit=limit,
    ).query
    sql, parameters = query.sql_with_params()
    names = {value: name for name, value in _STAND_INS.items()}
    return sql, tuple(names[parameter] for parameter in parameters)


# Rows deleted per statement by `pfa_deleted_purge`: each batch is its own short transaction, so a
# large purge neither holds locks on a big table for long nor leaves a huge transaction to undo.
PURGE_BATCH_SIZE = 10_000


def pfa_deleted_purge(*, organization: Organization | None = None, retention_days: int | None = None) -> int:
    """Delete for good the records marked deleted in PEMS more than `retention_days` days ago
    (default `SYNC_DELETED_RETENTION_DAYS`), of `organization` or of all; returns how many.

    Runs in batches of `PURGE_BATCH_SIZE`, one DELETE statement each, committed on its own (unless the
    caller holds a transaction). A record a sync found again meanwhile (no longer marked deleted) is kept.
    """
    if retention_days is None:
        retention_days = settings.SYNC_DELETED_RETENTION_DAYS
    if retention_days < 0:
        raise ValueError(f"retention_days is {retention_days}: it cannot be negative.")
    cutoff = timezone.now() - timedelta(days=retention_days)
    expired = PfaMirror.objects.filter(deleted_at__lt=cutoff)
    if organization is not None:
        expired = expired.filter(organization=organization)
    purged = 0
    while batch := list(expired.order_by().values_list("pk", flat=True)[:PURGE_BATCH_SIZE]):
        # Filtered again: a sync may have found a record again since the batch was chosen.
        _, deleted = expired.filter(pk__in=batch).delete()
        purged += deleted.get(PfaMirror._meta.label, 0)
    if purged:
        logger.info(
            "Purged %d records deleted in PEMS more than %d days ago (%s)",
            purged,
            retention_days,
            organization.code if organization is not None else "all organizations",
        )
    return purged
