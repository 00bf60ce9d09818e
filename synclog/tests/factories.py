"""Test factories for the sync app."""

from dataclasses import replace
from datetime import timedelta

import factory
from django.utils import timezone

from mirror.pems import PemsClient
from mirror.tests.factories import OrganizationFactory
from synclog.models import PfaSyncLog, SyncStatus


class PfaSyncLogFactory(factory.django.DjangoModelFactory):
    """A read run as the engine leaves it: a scheduled, completed full read unless told otherwise.
    `ago` dates it back; a queued run has not started; an ended run has `completed_at` and
    `duration_ms` (1.5 s)."""

    class Meta:
        model = PfaSyncLog

    class Params:
        ago = timedelta(0)
        ended = factory.LazyAttribute(lambda run: run.status in SyncStatus.terminal())

    organization = factory.SubFactory(OrganizationFactory)
    trigger = PfaSyncLog.Trigger.SCHEDULE
    status = SyncStatus.COMPLETED
    created_at = factory.LazyAttribute(lambda run: timezone.now() - run.ago)
    started_at = factory.LazyAttribute(lambda run: None if run.status == SyncStatus.QUEUED else run.created_at)
    duration_ms = factory.LazyAttribute(lambda run: 1500 if run.ended else None)
    completed_at = factory.LazyAttribute(
        lambda run: run.started_at + timedelta(milliseconds=run.duration_ms) if run.ended else None
    )


def fast_client(organization, **overrides) -> PemsClient:
    """The organization's configured client, with retries that do not wait."""
    configuration = organization.api_configurations.get(usage="read")
    settings = replace(configuration.pems_settings(organization), backoff_base=0.001, backoff_max=0.001, **overrides)
    return PemsClient(settings, sleep=lambda seconds: None)
