"""Runs for the tests, run as the worker runs them (inside `run_log_context`)."""

from mirror.pems import PemsError
from synclog.dispatch import run_for
from synclog.models import PfaSyncLog
from synclog.runs import sync_claim
from synclog.signals import run_log_context
from synclog.tests.factories import fast_client


def run_sync(
    organization,
    *,
    sync_type: str = PfaSyncLog.SyncType.FULL,
    direction: str = PfaSyncLog.Direction.READ,
    **client_overrides,
) -> PfaSyncLog:
    """One read run (or, `direction`, one write run); a PEMS failure fails the run and is not raised."""
    sync_log = sync_claim(
        organization=organization, trigger=PfaSyncLog.Trigger.COMMAND, sync_type=sync_type, direction=direction
    )
    with fast_client(organization, **client_overrides) as client, run_log_context(sync_log):
        try:
            run_for(sync_log)(sync_log=sync_log, client=client)
        except PemsError:
            pass
    sync_log.refresh_from_db()
    return sync_log


def failed_sync(organization) -> PfaSyncLog:
    """A read run that PEMS refuses (a wrong password): it ends `failed`."""
    return run_sync(organization, secret="not-the-password")
