"""Test factories for the sync app."""

from datetime import timedelta

import factory
from django.utils import timezone

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
