"""The materialized views `pfa_kpi_summary` and `pfa_timeline_bounds`: refreshed on the worker,
one refresh at a time, only after something they read changed.

A change requests a refresh (`views_refresh_request`, counted in `pfa_view_refresh.requested`) and
enqueues the refresh task once its transaction commits. The task refreshes both views
`CONCURRENTLY` (readers never wait) and records which requests that covered; requests that came
during a refresh make it go once more, so any number of them cost at most one refresh after it.
"""

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from mirror import views_sql
from mirror.models import ViewRefresh

logger = logging.getLogger(__name__)

# A refresh claimed this long ago without finishing was lost (its worker died): another may start.
_STALE_REFRESH = timedelta(minutes=30)


def _state() -> ViewRefresh:
    state, _ = ViewRefresh.objects.get_or_create(pk=1)
    return state


def views_refresh_request() -> None:
    """Ask for a refresh of the materialized views; it runs on the worker once the caller's
    transaction commits (a failing broker is logged, and the next tick starts it)."""
    _state()
    ViewRefresh.objects.filter(pk=1).update(requested=F("requested") + 1)
    transaction.on_commit(views_refresh_enqueue)


def views_refresh_pending() -> bool:
    """Whether a refresh was asked for that no refresh covered yet (the tick starts one)."""
    return ViewRefresh.objects.filter(pk=1, requested__gt=F("refreshed")).exists()


def views_refresh_enqueue() -> None:
    from django_q.tasks import async_task

    try:
        async_task("mirror.tasks.refresh_views", task_name="refresh materialized views", group="pfasync-views")
    except Exception:  # the broker is down: the request stays counted and the next tick picks it up
        logger.warning("Could not queue the refresh of the materialized views; the next tick will", exc_info=True)


@dataclass
class RefreshOutcome:
    refreshes: int
    duration_ms: int | None


def views_refresh(*, now_anyway: bool = False) -> RefreshOutcome:
    """Refresh both views until no request is left uncovered, unless another refresh is running
    (that one then covers the requests): returns how many refreshes ran here and the last one's
    duration. `now_anyway` counts a request first (`manage.py refresh_views`)."""
    state = _state()
    if now_anyway:
        ViewRefresh.objects.filter(pk=state.pk).update(requested=F("requested") + 1)
    now = timezone.now()
    claimed = ViewRefresh.objects.filter(
        Q(running_since__isnull=True) | Q(running_since__lt=now - _STALE_REFRESH), pk=state.pk
    ).update(running_since=now)
    if not claimed:
        logger.info("The materialized views are being refreshed already; that refresh covers this request")
        return RefreshOutcome(0, None)
    refreshes, duration_ms = 0, None
    try:
        while True:
            covered = ViewRefresh.objects.values_list("requested", flat=True).get(pk=state.pk)
            started = time.monotonic()
            _refresh_materialized_views()
            duration_ms = round((time.monotonic() - started) * 1000)
            refreshes += 1
            ViewRefresh.objects.filter(pk=state.pk).update(
                refreshed=covered, last_refreshed_at=timezone.now(), last_duration_ms=duration_ms, last_error=""
            )
            logger.info("Refreshed the materialized views in %d ms", duration_ms)
            # Release the claim unless a request came in meanwhile: then refresh once more.
            released = ViewRefresh.objects.filter(pk=state.pk, requested__lte=covered).update(running_since=None)
            if released:
                return RefreshOutcome(refreshes, duration_ms)
    except Exception as error:
        ViewRefresh.objects.filter(pk=state.pk).update(
            running_since=None, last_error=f"{type(error).__name__}: {error}"
        )
        raise


def _refresh_materialized_views() -> None:
    with connection.cursor() as cursor:
        for view in views_sql.MATERIALIZED_VIEWS:
            cursor.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}")


def views_refresh_state() -> ViewRefresh:
    """When the views were last refreshed, how long it took, and whether one is due or running."""
    return _state()
