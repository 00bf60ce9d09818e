"""A run's lifecycle before it reads or writes (`synclog.runs`): claiming one run per organization
and direction, claiming organizations one at a time, queueing them for a worker, cancelling."""

import threading

import pytest

from mirror.tests.factories import ApiConfigurationFactory, OrganizationFactory
from synclog.models import PfaSyncLog, RunEnded, SyncStatus
from synclog.runs import (
    SyncAlreadyRunning,
    SyncNotConfigured,
    SyncNothingToWrite,
    SyncNotQueued,
    SyncNotStarted,
    runs_claim_each,
    sync_cancel,
    sync_claim,
    sync_start,
)

pytestmark = pytest.mark.django_db

READ, WRITE = PfaSyncLog.Direction.READ, PfaSyncLog.Direction.WRITE


def configured(code: str):
    return ApiConfigurationFactory(organization=OrganizationFactory(code=code)).organization


@pytest.fixture
def rio():
    return configured("RIO")


@pytest.fixture
def hou():
    return configured("HOU")


def test_a_claim_queues_a_run_and_a_second_of_that_direction_is_refused_naming_the_first(rio):
    first = sync_claim(organization=rio, trigger="command")
    assert (first.status, first.direction, first.api_configuration) == (
        SyncStatus.QUEUED,
        READ,
        rio.api_configurations.get(),
    )
    with pytest.raises(SyncAlreadyRunning, match=f"run {first.id}") as refused:
        sync_claim(organization=rio, trigger="api")
    assert refused.value.active_log == first
    # A write of the organization may run beside its read.
    assert sync_claim(organization=rio, trigger="api", direction=WRITE).status == SyncStatus.QUEUED


def test_a_run_that_ended_frees_the_organization(rio):
    first = sync_claim(organization=rio, trigger="command")
    sync_cancel(sync_log=first)
    assert first.status == SyncStatus.CANCELLED
    assert sync_claim(organization=rio, trigger="command").status == SyncStatus.QUEUED
    with pytest.raises(RunEnded):
        sync_cancel(sync_log=first)


def test_an_organization_without_a_connection_is_not_claimed(db):
    bare = OrganizationFactory(code="BOG")
    with pytest.raises(SyncNotConfigured, match="BOG"):
        sync_claim(organization=bare, trigger="command")
    assert not PfaSyncLog.objects.exists()


def test_organizations_are_claimed_one_at_a_time_as_the_caller_asks(rio, hou):
    claims = runs_claim_each(organizations=[rio, hou], trigger="command")
    first = next(claims)
    assert list(PfaSyncLog.objects.values_list("organization__code", flat=True)) == ["RIO"]
    first.cancel()
    second = next(claims)
    assert (first.organization, second.organization) == (rio, hou)


def test_claiming_each_says_why_an_organization_got_no_run(rio, hou):
    sync_claim(organization=hou, trigger="command")
    outcomes = list(runs_claim_each(organizations=[rio, hou], trigger="command"))
    assert isinstance(outcomes[0], PfaSyncLog) and isinstance(outcomes[1], SyncAlreadyRunning)
    stop = threading.Event()
    stop.set()
    (stopped,) = runs_claim_each(organizations=[hou], trigger="command", stop=stop)
    assert isinstance(stopped, SyncNotStarted)
    (nothing,) = runs_claim_each(organizations=[hou], trigger="command", direction=WRITE)
    assert isinstance(nothing, SyncNothingToWrite)
    assert not PfaSyncLog.objects.filter(direction=WRITE).exists()


def test_a_started_batch_lists_what_it_queued_and_what_it_refused(rio, hou, db):
    sync_claim(organization=hou, trigger="command")
    batch = sync_start(organizations=[rio, hou, OrganizationFactory(code="BOG")], trigger="api")
    assert [run.organization.code for run in batch.queued] == ["RIO"]
    assert batch.queued[0].batch_id == batch.batch_id and batch.queued[0].status == SyncStatus.QUEUED
    assert [(type(refusal), refusal.organization.code) for refusal in batch.refused] == [
        (SyncAlreadyRunning, "HOU"),
        (SyncNotConfigured, "BOG"),
    ]


def test_a_run_the_broker_will_not_take_is_failed_at_once_and_frees_the_organization(
    rio, broker_down, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        batch = sync_start(organizations=[rio], trigger="api")
    assert batch.queued == []
    (refusal,) = batch.refused
    assert isinstance(refusal, SyncNotQueued) and "broker" in str(refusal)
    run = PfaSyncLog.objects.get(organization=rio)
    assert run.status == SyncStatus.FAILED and run.error_message.startswith("Could not be queued")
    assert sync_claim(organization=rio, trigger="api").status == SyncStatus.QUEUED
