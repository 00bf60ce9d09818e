"""Test factories for the sync app: runs, and users who may start them."""

from datetime import timedelta

import factory
from django.contrib.auth.models import Permission, User
from django.utils import timezone

from mirror.tests.factories import OrganizationFactory
from synclog.models import PfaSyncLog, SyncStatus


class PfaSyncLogFactory(factory.django.DjangoModelFactory):
    """A read run as the engine leaves it: a scheduled, completed full read unless told otherwise.
    `ago` dates it back; an ended run has `completed_at` and `duration_ms` (1.5 s)."""

    class Meta:
        model = PfaSyncLog

    class Params:
        ago = timedelta(0)
        ended = factory.LazyAttribute(lambda run: run.status in SyncStatus.terminal())

    organization = factory.SubFactory(OrganizationFactory)
    trigger = PfaSyncLog.Trigger.SCHEDULE
    status = SyncStatus.COMPLETED
    created_at = factory.LazyAttribute(lambda run: timezone.now() - run.ago)
    started_at = factory.LazyAttribute(lambda run: run.created_at)
    duration_ms = factory.LazyAttribute(lambda run: 1500 if run.ended else None)
    completed_at = factory.LazyAttribute(
        lambda run: run.started_at + timedelta(milliseconds=run.duration_ms) if run.ended else None
    )


def user_with(username: str, *permissions: str, organizations=(), **flags) -> User:
    """A user (password `pw-<username>`) holding these `app_label.codename` permissions, a member of
    `organizations`; `flags` such as is_staff=True go to the user."""
    user = User.objects.create_user(username, password=f"pw-{username}", **flags)
    user.organizations.set(organizations)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return User.objects.get(pk=user.pk)  # a fresh permission cache
