"""The worker's signs of life (`ops.heartbeat`): when a worker was last seen, and when it last ticked."""

from datetime import timedelta

import pytest
from django.utils import timezone

from ops.heartbeat import on_worker_spawn, worker_heartbeat, worker_seen_record

pytestmark = pytest.mark.django_db


def test_no_worker_was_ever_seen_until_one_says_so():
    assert worker_heartbeat() is None
    on_worker_spawn(sender=None, proc_name="Worker-1")  # a cluster's worker process started
    heartbeat = worker_heartbeat()
    assert heartbeat.seen_at is not None and heartbeat.last_tick_at is None


def test_a_tick_is_seen_and_a_later_sign_of_life_keeps_the_tick():
    ticked = timezone.now() - timedelta(minutes=5)
    worker_seen_record(tick=True, now=ticked)
    assert (worker_heartbeat().seen_at, worker_heartbeat().last_tick_at) == (ticked, ticked)
    seen = ticked + timedelta(minutes=1)
    worker_seen_record(now=seen)
    assert (worker_heartbeat().seen_at, worker_heartbeat().last_tick_at) == (seen, ticked)
