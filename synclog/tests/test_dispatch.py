"""A command's runs, inline one organization after another (`synclog.dispatch`): one batch, a
failure never stops the next, and an organization without a run says why."""

import logging
import threading

import pytest

from mirror.simulator import DEFAULT_PASSWORD
from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory
from synclog.dispatch import sync_organizations
from synclog.models import PfaSyncLog, SyncStatus
from synclog.runs import SyncNothingToWrite, SyncNotStarted
from synclog.tests.factories import fast_client

pytestmark = pytest.mark.django_db


def test_failing_organization_does_not_stop_the_next(rio, pems_server, caplog):
    hou = ApiConfigurationFactory(
        organization=OrganizationFactory(code="HOU"), base_url=pems_server.url, password="wrong-password"
    ).organization
    caplog.set_level(logging.INFO)
    outcomes = sync_organizations(
        organizations=[hou, rio], trigger=PfaSyncLog.Trigger.COMMAND, client_factory=fast_client
    )
    assert [(o.organization.code, o.succeeded) for o in outcomes] == [("HOU", False), ("RIO", True)]
    failed = outcomes[0].sync_log
    assert failed.status == SyncStatus.FAILED and failed.error_details["error_type"] == "PemsAuthError"
    assert outcomes[0].sync_log.batch_id == outcomes[1].sync_log.batch_id
    assert "wrong-password" not in caplog.text + failed.error_message
    assert DEFAULT_PASSWORD not in caplog.text


def test_a_write_with_nothing_waiting_succeeds_without_a_run(rio):
    (outcome,) = sync_organizations(
        organizations=[rio], trigger=PfaSyncLog.Trigger.COMMAND, direction=PfaSyncLog.Direction.WRITE
    )
    assert (outcome.succeeded, outcome.sync_log) == (True, None)
    assert isinstance(outcome.refusal, SyncNothingToWrite) and "Nothing to write" in outcome.error_message
    assert not PfaSyncLog.objects.exists()


def test_organizations_not_reached_before_a_stop_are_not_started_nor_succeeded(rio):
    stop = threading.Event()
    stop.set()
    (outcome,) = sync_organizations(organizations=[rio], trigger=PfaSyncLog.Trigger.COMMAND, stop=stop)
    assert (outcome.succeeded, outcome.sync_log) == (False, None)
    assert isinstance(outcome.refusal, SyncNotStarted) and "stop requested" in outcome.error_message
    assert not PfaSyncLog.objects.exists()
