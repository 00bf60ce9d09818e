"""Domain functions of the mirror: registering organizations and building their PEMS clients."""

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from mirror.models import ApiConfiguration, Organization
from mirror.pems import PemsClient


@transaction.atomic
def organization_register(
    *,
    code: str,
    name: str,
    base_url: str,
    tenant: str,
    username: str,
    secret: str,
    auth_type: str = ApiConfiguration.AuthType.BASIC,
    endpoint: str = ApiConfiguration.Endpoint.GRIDS,
    time_zone: str = "UTC",
    page_size: int = 10_000,
    pems_organization_code: str = "",
) -> tuple[Organization, bool]:
    """Create or update an organization and its read connection; returns (organization, created)."""
    organization, created = Organization.objects.update_or_create(code=code.upper(), defaults={"name": name})
    configuration = ApiConfiguration.objects.filter(organization=organization, usage="read").first()
    configuration = configuration or ApiConfiguration(organization=organization, usage="read")
    configuration.base_url = base_url
    configuration.tenant = tenant
    configuration.username = username
    configuration.auth_type = auth_type
    configuration.endpoint = endpoint
    configuration.time_zone = time_zone
    configuration.page_size = page_size
    configuration.pems_organization_code = pems_organization_code
    configuration.set_secret(secret)
    configuration.full_clean()
    configuration.save()
    return organization, created


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
