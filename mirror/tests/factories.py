"""Test factories for the mirror app."""

import factory

from mirror.models import ApiConfiguration, Organization
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
