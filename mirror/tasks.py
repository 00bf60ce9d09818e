"""django-q2 entry points of the mirror app: a few lines each."""

from mirror.materialized import views_refresh


def refresh_views() -> str:
    """Refresh the materialized views (coalesced: see mirror.materialized)."""
    outcome = views_refresh()
    return f"{outcome.refreshes} refreshes, last {outcome.duration_ms} ms"
