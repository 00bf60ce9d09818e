"""Fixtures of the sync app's tests."""

import pytest

from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory


@pytest.fixture
def broker_down(monkeypatch):
    """The task broker refuses every task, as django-q2's `async_task` does when Redis is down;
    `monkeypatch.undo()` brings it back."""

    def refuse(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to the broker. Connection refused.")

    monkeypatch.setattr("django_q.tasks.async_task", refuse)


@pytest.fixture
def rio(pems_server):
    """RIO, read from the simulator."""
    return ApiConfigurationFactory(organization=OrganizationFactory(code="RIO"), base_url=pems_server.url).organization
