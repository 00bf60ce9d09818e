"""What waits in django-q2's task broker: the runs whose task no worker has taken yet.

A module of its own, importing no other module of the sync app, so that the run log's lifecycle
(`synclog.models.stale_runs_expire`) can ask it without an import circle through the worker.
"""

import logging

logger = logging.getLogger(__name__)


def runs_waiting_in_broker() -> set[str] | None:
    """The ids of the runs whose task waits in the task broker now (taken by no worker yet), or None
    when the broker cannot be asked (down, or a kind we cannot look into)."""
    from django_q.brokers import get_broker
    from django_q.brokers.orm import ORM
    from django_q.signing import SignedPackage

    broker = get_broker()
    try:
        if isinstance(broker, ORM):
            # The ORM broker keeps a task until a worker acknowledges it: one a worker holds is here too.
            packages = list(broker.get_connection().filter(key=broker.list_key).values_list("payload", flat=True))
        elif type(broker).__module__ == "django_q.brokers.redis_broker":
            packages = broker.connection.lrange(broker.list_key, 0, -1)
        else:
            return None
    except Exception:  # the broker is down: a run whose task may still be there is not lost
        logger.warning("Could not look into the task broker for queued runs", exc_info=True)
        return None
    waiting = set()
    for package in packages:
        try:
            task = SignedPackage.loads(package)
        except Exception:  # not ours to judge (another secret key, another version)
            continue
        if task.get("func") == "synclog.tasks.sync_execute" and task.get("args"):
            waiting.add(str(task["args"][0]))
    return waiting
