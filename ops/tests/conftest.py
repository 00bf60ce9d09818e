"""Fixtures of the ops tests."""

import pytest

from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory


@pytest.fixture
def rio(pems_server):
    """RIO, read from the simulator (250 records)."""
    return ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"), base_url=pems_server.url).organization
