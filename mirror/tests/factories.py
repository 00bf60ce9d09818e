"""Test factories for the mirror app."""

from datetime import date
from decimal import Decimal

import factory
from django.contrib.auth.models import Permission, User

from mirror.models import ApiConfiguration, Organization, PfaMirror
from mirror.simulator import DEFAULT_PASSWORD, DEFAULT_TENANT, DEFAULT_USERNAME


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"ORG{n}")
    name = factory.LazyAttribute(lambda o: f"Organization {o.code}")


class ApiConfigurationFactory(factory.django.DjangoModelFactory):
    """A read connection to the simulator; pass base_url=server.url."""

    class Meta:
        model = ApiConfiguration
        skip_postgeneration_save = True

    organization = factory.SubFactory(OrganizationFactory)
    usage = "read"
    base_url = "http://127.0.0.1:1"
    tenant = DEFAULT_TENANT
    username = DEFAULT_USERNAME
    time_zone = "America/Chicago"

    @factory.post_generation
    def password(self, create, extracted, **kwargs):
        self.set_secret(extracted or DEFAULT_PASSWORD)
        if create:
            self.save()


class PfaMirrorFactory(factory.django.DjangoModelFactory):
    """A mirrored record holding little more than its key (its raw row names it; the hash is a
    placeholder): pass the columns a test needs, `deleted_at` for one PEMS deleted."""

    class Meta:
        model = PfaMirror

    organization = factory.SubFactory(OrganizationFactory)
    pfa_id = factory.Sequence(lambda n: f"PFA-{n:07d}")
    data = factory.LazyAttribute(lambda record: {"pfs_id": record.pfa_id})
    content_hash = "0" * 32


# What the API's staff endpoints need (the rules of mirror/permissions.py).
STAFF_PERMISSIONS = ("view_organization", "add_organization", "change_organization")
CONNECTION_PERMISSIONS = ("view_apiconfiguration", "add_apiconfiguration", "change_apiconfiguration")


def user_with(username: str, *permissions: str, organizations=(), **flags) -> User:
    """A user (password `pw-<username>`) holding these `app_label.codename` permissions, a member of
    `organizations`; `flags` such as is_staff=True go to the user."""
    user = User.objects.create_user(username, password=f"pw-{username}", **flags)
    user.organizations.set(organizations)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return User.objects.get(pk=user.pk)  # a fresh permission cache


def staff_user(username: str, *codenames: str) -> User:
    """A staff user holding these `mirror` permissions."""
    return user_with(username, *(f"mirror.{codename}" for codename in codenames), is_staff=True)


def mirror_record(organization, pfa_id: str, **fields) -> PfaMirror:
    """A stored PFA record: a crane rented at 1,000 a month, forecast Jan to Mar 2027, unless told otherwise."""
    values = {
        "category": "CRANES",
        "source": "Rental",
        "monthly_rate": Decimal("1000"),
        "forecast_start_date": date(2027, 1, 1),
        "forecast_end_date": date(2027, 3, 1),
        "pems_record_id": 7,
        "data": {"pfs_id": pfa_id},
        "content_hash": "0" * 32,
        **fields,
    }
    return PfaMirror.objects.create(organization=organization, pfa_id=pfa_id, **values)
