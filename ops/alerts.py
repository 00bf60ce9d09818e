"""Alerts: an organization whose data is stale, whose reads keep failing, whose last write to PEMS
failed (`synclog.selectors.last_write_runs`), or whose edits wait in conflict for a planner; and its recovery.

Checked on every tick of the worker, after the reads are queued. An organization enters the
`stale` state when it is stale as the dashboard shows it (`synclog.selectors.organization_is_stale`:
its newest completed read, or before its first one its registration, is older than
SYNC_STALE_AFTER seconds, default three SYNC_INTERVALs), and the `failing` state
after SYNC_ALERT_AFTER_FAILURES (3) failed reads in a row; it leaves them with a completed read.
One alert goes out as it enters a state and one as it leaves it, by e-mail to SYNC_ALERT_EMAILS
(Django's mail settings) and/or as a JSON POST to SYNC_ALERT_WEBHOOK. The state is kept in the
database (`ops_alert_state`) and changed by compare-and-set, so a state that holds is never
announced twice, whichever worker ticks.

Delivery never raises: a failed e-mail or webhook is logged (the webhook is retried first).
"""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone

from mirror.models import Organization
from mirror.secrets import secret_register
from mirror.selectors import EditCounts, edit_counts_by_organization
from ops.models import AlertState
from synclog.models import SyncStatus
from synclog.selectors import last_write_runs, organization_is_stale, organizations_sync_state, sync_stale_after

logger = logging.getLogger(__name__)

WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT = (3.05, 5.0)  # connect, read (seconds)
WEBHOOK_BACKOFF_SECONDS = 0.5  # doubled after each failed attempt
_RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Alert:
    """One change of an organization's alert state, as it is announced."""

    organization: str
    kind: str
    firing: bool
    at: datetime
    last_completed_at: datetime | None
    consecutive_failures: int
    stale_after: timedelta
    conflicts: int = 0
    last_write_error: str = ""

    @property
    def summary(self) -> str:
        if self.kind == AlertState.Kind.CONFLICTS:
            if not self.firing:
                return f"{self.organization}: no edit in conflict with PEMS any more"
            return f"{self.organization}: {self.conflicts} edits in conflict with PEMS wait for a planner"
        if self.kind == AlertState.Kind.WRITES_FAILING:
            if not self.firing:
                return f"{self.organization}: writes to PEMS complete again"
            return f"{self.organization}: the last write to PEMS failed: {self.last_write_error}"
        if self.kind == AlertState.Kind.STALE:
            if not self.firing:
                return f"{self.organization}: data fresh again (read completed {_when(self.last_completed_at)})"
            since = f"since {_when(self.last_completed_at)}" if self.last_completed_at else "ever"
            return f"{self.organization}: data stale, no completed read {since} (limit {_duration(self.stale_after)})"
        if not self.firing:
            return f"{self.organization}: reads complete again (read completed {_when(self.last_completed_at)})"
        return f"{self.organization}: {self.consecutive_failures} reads failed in a row"

    def payload(self) -> dict:
        return {
            "source": "pfasync",
            "alert": self.kind,
            "state": "firing" if self.firing else "resolved",
            "organization": self.organization,
            "summary": self.summary,
            "at": self.at.isoformat(),
            "lastCompletedReadAt": self.last_completed_at.isoformat() if self.last_completed_at else None,
            "consecutiveFailures": self.consecutive_failures,
            "staleAfterSeconds": int(self.stale_after.total_seconds()),
            "conflicts": self.conflicts,
            "lastWriteError": self.last_write_error,
        }


def alerts_check(*, organizations: list[Organization], now: datetime | None = None) -> list[Alert]:
    """Announce every organization of `organizations` that entered or left an alert state; returns
    the alerts sent. Organizations not listed (no longer scheduled) leave their states silently."""
    now = now or timezone.now()
    limit = sync_stale_after(now=now)
    AlertState.objects.exclude(organization__in=organizations).filter(active=True).update(active=False, changed_at=now)
    alerts = []
    edits = edit_counts_by_organization()
    last_writes = last_write_runs()
    for organization in organizations_sync_state(Organization.objects.filter(pk__in=[o.pk for o in organizations])):
        last_write = last_writes.get(organization.pk)
        conflicts = edits.get(organization.pk, EditCounts()).conflicts
        states = {
            AlertState.Kind.STALE: organization_is_stale(organization, now=now, stale_after=limit),
            AlertState.Kind.FAILING: organization.consecutive_failures >= settings.SYNC_ALERT_AFTER_FAILURES,
            AlertState.Kind.WRITES_FAILING: last_write is not None and last_write.status == SyncStatus.FAILED,
            AlertState.Kind.CONFLICTS: conflicts > 0,
        }
        for kind, active in states.items():
            if _state_change(organization, kind, active=active, now=now):
                alerts.append(
                    Alert(
                        organization=organization.code,
                        kind=kind,
                        firing=active,
                        at=now,
                        last_completed_at=organization.last_sync_at,
                        consecutive_failures=organization.consecutive_failures,
                        stale_after=limit,
                        conflicts=conflicts,
                        last_write_error=last_write.error_message if last_write else "",
                    )
                )
    for alert in alerts:
        alert_deliver(alert)
    return alerts


def _state_change(organization: Organization, kind: str, *, active: bool, now: datetime) -> bool:
    """Move the organization's `kind` state to `active`; True for the one caller that moved it."""
    state, _created = AlertState.objects.get_or_create(organization=organization, kind=kind)
    if state.active == active:
        return False
    return bool(AlertState.objects.filter(pk=state.pk, active=not active).update(active=active, changed_at=now))


def alert_deliver(alert: Alert) -> None:
    """Send `alert` to every configured channel and log it; never raises."""
    log = logger.warning if alert.firing else logger.info
    log("Alert %s: %s", "firing" if alert.firing else "resolved", alert.summary)
    if settings.SYNC_ALERT_EMAILS:
        try:
            send_mail(
                subject=f"[pfasync] {alert.summary}",
                message=_email_body(alert),
                from_email=None,
                recipient_list=settings.SYNC_ALERT_EMAILS,
            )
        except Exception as error:
            logger.error("Alert e-mail for %s not sent: %s", alert.organization, type(error).__name__)
    if settings.SYNC_ALERT_WEBHOOK:
        try:
            _webhook_post(settings.SYNC_ALERT_WEBHOOK, alert.payload())
        except Exception as error:
            logger.error("Alert webhook for %s not delivered: %s", alert.organization, error)


def _webhook_post(url: str, payload: dict) -> None:
    """POST `payload` as JSON, retrying network failures and 408/429/5xx answers with backoff.

    The URL often carries a token (chat webhooks), so it is registered with the secret scrubber and
    never named in a message.
    """
    secret_register(url)
    failure = ""
    for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
        try:
            response = requests.post(url, json=payload, timeout=WEBHOOK_TIMEOUT)
        except requests.RequestException as error:
            failure = f"no answer ({type(error).__name__})"
        else:
            if response.ok:
                return
            failure = f"HTTP {response.status_code}"
            if response.status_code not in _RETRYABLE_STATUSES:
                break
        if attempt < WEBHOOK_ATTEMPTS:
            time.sleep(WEBHOOK_BACKOFF_SECONDS * 2 ** (attempt - 1))
    raise AlertNotDelivered(f"the webhook answered {failure} (attempt {attempt} of {WEBHOOK_ATTEMPTS})")


class AlertNotDelivered(Exception):
    """The webhook did not take the alert."""


def _email_body(alert: Alert) -> str:
    lines = [
        alert.summary,
        "",
        f"Organization: {alert.organization}",
        f"Alert: {alert.kind} ({'firing' if alert.firing else 'resolved'}) at {alert.at.isoformat()}",
        f"Last completed read: {_when(alert.last_completed_at)}",
        f"Reads failed in a row: {alert.consecutive_failures} (alert at {settings.SYNC_ALERT_AFTER_FAILURES})",
        f"Stale after: {_duration(alert.stale_after)}",
        "",
        "The ops dashboard (/ops/dashboard/) shows every organization's runs and their errors.",
    ]
    return "\n".join(lines)


def _when(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "never"


def _duration(length: timedelta) -> str:
    minutes = int(length.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
