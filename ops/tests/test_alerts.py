"""Alerts: once as an organization enters a state, once as it recovers, never again while it holds,
by e-mail (Django's locmem backend) and by webhook (a receiver on 127.0.0.1)."""

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.utils import timezone

from mirror.models import Organization
from ops.alerts import alerts_check
from ops.models import AlertState
from ops.tests.runs import failed_sync, run_sync
from synclog import worker

pytestmark = pytest.mark.django_db


class Receiver:
    """A webhook receiver on 127.0.0.1: answers each POST with the next status of `statuses`
    (then 200) and keeps the JSON bodies it took."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.statuses = list(statuses)
        self.bodies: list[dict] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.bodies.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T000/secret-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    with Receiver() as receiver:
        settings.SYNC_ALERT_WEBHOOK = receiver.url
        settings.SYNC_ALERT_EMAILS = ["ops@example.com", "oncall@example.com"]
        settings.SYNC_ALERT_AFTER_FAILURES = 3
        settings.SYNC_STALE_AFTER = 3600
        settings.SYNC_ORGS = []
        yield receiver


def tick() -> list:
    return alerts_check(organizations=worker.scheduled_organizations())


def test_an_alert_goes_out_once_on_the_third_failure_and_once_on_recovery(rio, receiver):
    run_sync(rio)
    for _ in range(2):
        failed_sync(rio)
        assert tick() == []
    failed_sync(rio)
    tick()
    assert [(body["alert"], body["state"], body["organization"]) for body in receiver.bodies] == [
        ("failing", "firing", "RIO")
    ]
    firing = receiver.bodies[0]
    assert firing["consecutiveFailures"] == 3 and firing["lastCompletedReadAt"] is not None
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ops@example.com", "oncall@example.com"]
    assert "RIO" in mail.outbox[0].subject and "3 reads failed in a row" in mail.outbox[0].subject

    failed_sync(rio)  # a fourth failure: the state holds, nothing is sent
    tick()
    tick()
    assert (len(receiver.bodies), len(mail.outbox)) == (1, 1)

    run_sync(rio)
    tick()
    assert [(body["alert"], body["state"]) for body in receiver.bodies] == [
        ("failing", "firing"),
        ("failing", "resolved"),
    ]
    assert len(mail.outbox) == 2 and "reads complete again" in mail.outbox[1].subject
    tick()
    assert len(receiver.bodies) == 2 and len(mail.outbox) == 2


def test_stale_data_is_announced_once_and_its_recovery_once(rio, receiver):
    run_sync(rio)
    later = timezone.now() + timedelta(hours=2)
    alerts = alerts_check(organizations=[rio], now=later)
    assert [(alert.kind, alert.firing) for alert in alerts] == [("stale", True)]
    assert alerts_check(organizations=[rio], now=later + timedelta(minutes=15)) == []
    assert receiver.bodies[0]["summary"].startswith("RIO: data stale, no completed read since")
    run_sync(rio)
    alerts = alerts_check(organizations=[rio], now=timezone.now())
    assert [(alert.kind, alert.firing) for alert in alerts] == [("stale", False)]
    assert [body["state"] for body in receiver.bodies] == ["firing", "resolved"]
    assert len(mail.outbox) == 2


def test_a_new_organization_is_not_stale_before_it_could_have_been_read(rio, receiver):
    assert alerts_check(organizations=[rio]) == []  # registered just now, no read yet
    Organization.objects.filter(pk=rio.pk).update(created_at=timezone.now() - timedelta(hours=2))
    assert [alert.kind for alert in tick()] == ["stale"]


def test_the_stale_limit_is_three_intervals_unless_set(rio, receiver, settings):
    settings.SYNC_STALE_AFTER = None
    settings.SYNC_INTERVAL = "*/10 * * * *"
    run_sync(rio)
    assert alerts_check(organizations=[rio], now=timezone.now() + timedelta(minutes=29)) == []
    assert [alert.kind for alert in alerts_check(organizations=[rio], now=timezone.now() + timedelta(minutes=31))] == [
        "stale"
    ]


def test_the_webhook_is_retried_and_a_dead_one_never_fails_the_tick(rio, settings, caplog):
    settings.SYNC_ALERT_EMAILS = []
    settings.SYNC_STALE_AFTER = 3600
    with Receiver(statuses=(503,)) as flaky:
        settings.SYNC_ALERT_WEBHOOK = flaky.url
        alerts_check(organizations=[rio], now=timezone.now() + timedelta(hours=2))
        assert (flaky.attempts, len(flaky.bodies)) == (2, 1)
    with Receiver(statuses=(500, 500, 500)) as dead:
        settings.SYNC_ALERT_WEBHOOK = dead.url
        run_sync(rio)
        alerts = alerts_check(organizations=[rio])  # the recovery
        assert [alert.firing for alert in alerts] == [False]
        assert (dead.attempts, dead.bodies) == (3, [])
    assert "Alert webhook for RIO not delivered: the webhook answered HTTP 500" in caplog.text
    assert "secret-token" not in caplog.text
    # Delivered or not, the state moved: the recovery is not announced again.
    assert AlertState.objects.get(organization=rio, kind="stale").active is False


def test_the_tick_checks_the_alerts_after_queueing_and_never_fails_because_of_them(rio, receiver, settings, caplog):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 1, 2  # no mail server there
    for _ in range(3):
        failed_sync(rio)
    settings.ENABLE_SYNC_WORKER = True
    summary = worker.sync_tick()
    assert summary.startswith("queued 1")  # the read was queued before the alerts
    assert [(body["alert"], body["state"]) for body in receiver.bodies] == [("failing", "firing")]
    assert mail.outbox == []
    assert "Alert e-mail for RIO not sent: ConnectionRefusedError" in caplog.text


def test_edits_in_conflict_and_failed_writes_are_announced_and_their_end_too(rio, receiver):
    from django.contrib.auth.models import User

    from mirror.models import PfaModification
    from synclog.models import PfaSyncLog
    from synclog.tests.factories import PfaSyncLogFactory

    run_sync(rio)
    ann = User.objects.create_user("ann")
    conflict = PfaModification.objects.create(
        organization=rio, pfa_id="P1", author=ann, state="conflict", base_version=1
    )
    PfaSyncLogFactory(organization=rio, direction="write", status="failed", error_message="PEMS is unavailable")
    alerts = alerts_check(organizations=[rio])
    assert sorted((alert.kind, alert.firing) for alert in alerts) == [("conflicts", True), ("writes_failing", True)]
    summaries = sorted(body["summary"] for body in receiver.bodies)
    assert summaries == [
        "RIO: 1 edits in conflict with PEMS wait for a planner",
        "RIO: the last write to PEMS failed: PEMS is unavailable",
    ]
    assert alerts_check(organizations=[rio]) == []  # announced once
    conflict.state = "discarded"
    conflict.save()
    PfaSyncLogFactory(organization=rio, direction="write", status="completed")
    alerts = alerts_check(organizations=[rio])
    assert sorted((alert.kind, alert.firing) for alert in alerts) == [("conflicts", False), ("writes_failing", False)]
    assert PfaSyncLog.objects.filter(direction="write").count() == 2


def test_the_operations_guide_names_every_alert_and_its_payload():
    from pathlib import Path

    from django.conf import settings

    from ops.alerts import Alert
    from ops.models import AlertState

    guide = (Path(settings.BASE_DIR) / "docs" / "operations.md").read_text()
    alerts = guide[guide.index("### Alerts") :]
    alerts = alerts[: alerts.index("\n### ", 1)]
    assert all(f"**{kind}**" in alerts for kind in AlertState.Kind.values), AlertState.Kind.values
    assert "watch reads only" not in guide
    now = datetime.now(UTC)
    payload = Alert("RIO", AlertState.Kind.CONFLICTS, True, now, None, 0, timedelta(minutes=45), conflicts=2).payload()
    assert all(f'"{key}"' in alerts for key in payload), sorted(payload)
