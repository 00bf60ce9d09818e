"""What runs a claimed run by its direction: a read (`synclog.engine`) or a write
(`synclog.writeback`); and a command's runs, run inline one organization after another.

This module sits above both directions so that neither imports the other; the worker's task and
the management commands come here, everything else about a run's life is in `synclog.runs`.
"""

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from mirror.models import Organization
from mirror.pems import PemsClient, PemsError
from mirror.services import pems_client_for
from synclog.engine import sync_run
from synclog.models import PfaSyncLog, SyncStatus
from synclog.runs import ProgressCallback, SyncNothingToWrite, SyncRefused, client_for_run, runs_claim_each
from synclog.writeback import write_run

logger = logging.getLogger(__name__)


def run_for(sync_log: PfaSyncLog) -> Callable[..., PfaSyncLog]:
    """What runs a claimed run: `sync_run` for a read, `write_run` for a write."""
    return write_run if sync_log.direction == PfaSyncLog.Direction.WRITE else sync_run


@dataclass
class SyncOutcome:
    """What happened to one organization in `sync_organizations`: its run, or why it has none."""

    organization: Organization
    sync_log: PfaSyncLog | None
    error_message: str = ""
    refusal: SyncRefused | None = None

    @property
    def succeeded(self) -> bool:
        """Its run completed, or a write found nothing to write (nothing is left undone)."""
        if isinstance(self.refusal, SyncNothingToWrite):
            return True
        return self.sync_log is not None and self.sync_log.status == SyncStatus.COMPLETED


def sync_organizations(
    *,
    organizations: list[Organization],
    trigger: str,
    triggered_by=None,
    sync_type: str = PfaSyncLog.SyncType.FULL,
    direction: str = PfaSyncLog.Direction.READ,
    allow_mass_delete: bool = False,
    stop: threading.Event | None = None,
    on_progress: ProgressCallback | None = None,
    client_factory: Callable[..., PemsClient] = pems_client_for,
    command: str = "",
) -> list[SyncOutcome]:
    """Run a read (or a write to PEMS) of each organization, one after another under one batch id,
    inline; one failure never stops the next. `command` names the management command running them."""
    outcomes = []
    claimed = runs_claim_each(
        organizations=organizations,
        stop=stop,
        trigger=trigger,
        sync_type=sync_type,
        direction=direction,
        triggered_by=triggered_by,
        batch_id=uuid.uuid4(),
        allow_mass_delete=allow_mass_delete,
        command=command,
    )
    for sync_log in claimed:
        if isinstance(sync_log, SyncRefused):
            outcomes.append(SyncOutcome(sync_log.organization, None, str(sync_log), refusal=sync_log))
            continue
        organization = sync_log.organization
        try:
            client = client_for_run(sync_log, client_factory)
        except ImproperlyConfigured:
            outcomes.append(SyncOutcome(organization, sync_log, sync_log.error_message))
            continue
        try:
            with client:
                run_for(sync_log)(sync_log=sync_log, client=client, stop=stop, on_progress=on_progress)
        except PemsError:
            pass  # the run is failed with the PEMS message; the next organization still runs
        except Exception:
            logger.exception("Sync %s of %s failed unexpectedly", sync_log.id, organization.code)
        outcomes.append(SyncOutcome(organization, sync_log, sync_log.error_message))
    return outcomes
