"""`manage.py sync_smoke`: drive a running pfasync over its REST API, end to end.

Logs in, shows the worker, picks an organization, triggers a sync and follows it to its end.
Talks HTTP only (no database), so it checks a deployment exactly as a client sees it.
"""

import getpass
import os
import time

import requests
from django.core.management.base import BaseCommand, CommandError

from mirror.fields import organization_code_normalize

TERMINAL_STATUSES = {"completed", "failed", "cancelled"}


class Command(BaseCommand):
    help = (
        "Smoke-test a running pfasync over HTTP: log in, trigger a sync of one organization, follow it "
        "to its end. Password from PFASYNC_SMOKE_PASSWORD or a prompt. Exits 0 only if the sync completed."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://localhost:8000", help="base URL of the server")
        parser.add_argument("--username", required=True, help="API user (password: PFASYNC_SMOKE_PASSWORD or a prompt)")
        parser.add_argument(
            "--org", metavar="CODE", help="organization to sync (default: RIO if visible, else the first)"
        )
        parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the sync to end")
        parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between status polls")

    def handle(self, *args, **options):
        password = os.environ.get("PFASYNC_SMOKE_PASSWORD") or getpass.getpass(f"Password for {options['username']}: ")
        api = _ApiClient(options["url"])
        user = api.login(options["username"], password)
        self.stdout.write(f"Logged in to {api.base_url} as {user['username']}.")

        worker = api.call("get", "/api/sync/worker-status")["worker"]
        self.stdout.write(
            f"Worker: {'alive' if worker['alive'] else 'NOT ALIVE (no qcluster seen)'}, "
            f"schedules {'enabled' if worker['enabled'] else 'disabled'}, {worker['syncsRunning']} sync(s) running, "
            f"interval {worker['interval']!r}, next run {worker['nextRun'] or '-'}"
        )

        organizations = api.call("get", "/api/organizations")["organizations"]
        self.stdout.write("Organizations: " + (", ".join(o["code"] for o in organizations) or "(none)"))
        organization = _pick(organizations, options["org"])
        self.stdout.write(f"Triggering a full sync of {organization['code']} ...")

        status_code, body = api.request("post", "/api/sync/trigger", json={"organizationId": organization["code"]})
        if status_code == 409:
            raise CommandError(
                f"A sync of {organization['code']} is already active: run {body.get('logId')} "
                f"(batch {body.get('batchId')}). {body.get('message', '')}"
            )
        if status_code != 202:
            raise CommandError(f"Trigger failed: HTTP {status_code} {_describe(body)}")
        self.stdout.write(f"{body['message']}: run {body['logId']} (batch {body['batchId']})")
        if body.get("warning"):
            self.stdout.write(self.style.WARNING(body["warning"]))

        sync_log = self._follow(api, body["logId"], timeout=options["timeout"], interval=options["poll_interval"])
        self._report(sync_log)
        if sync_log["status"] != "completed":
            raise CommandError(
                f"Sync {sync_log['id']} of {sync_log['organizationCode']} ended {sync_log['status']}: "
                f"{sync_log['errorMessage'] or 'no error message'}"
            )
        self.stdout.write(self.style.SUCCESS(f"Sync of {sync_log['organizationCode']} completed."))

    def _follow(self, api: "_ApiClient", log_id: str, *, timeout: float, interval: float) -> dict:
        deadline = time.monotonic() + timeout
        last_line = ""
        while True:
            (sync_log,) = api.call("get", f"/api/sync/status/{log_id}")["logs"]
            line = (
                f"  {sync_log['status']}: {sync_log['recordsProcessed']}/{sync_log['recordsTotal'] or '?'} records "
                f"({sync_log['progressPercent']}%)"
            )
            if line != last_line:
                self.stdout.write(line)
                last_line = line
            if sync_log["status"] in TERMINAL_STATUSES:
                return sync_log
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"Sync {log_id} still {sync_log['status']} after {timeout:g} s "
                    "(is the worker running? `manage.py qcluster`)"
                )
            time.sleep(interval)

    def _report(self, sync_log: dict) -> None:
        rows = [
            ("Organization", f"{sync_log['organizationCode']} ({sync_log['organizationName']})"),
            ("Status", sync_log["status"]),
            ("Total", sync_log["recordsTotal"]),
            ("Processed", sync_log["recordsProcessed"]),
            ("Inserted", sync_log["recordsInserted"]),
            ("Updated", sync_log["recordsUpdated"]),
            ("Unchanged", sync_log["recordsUnchanged"]),
            ("Errors", sync_log["recordsErrored"]),
            ("Duration", f"{sync_log['durationMs']} ms" if sync_log["durationMs"] is not None else "-"),
            ("Triggered by", sync_log["triggeredBy"]),
        ]
        if sync_log["errorMessage"]:
            rows.append(("Error", sync_log["errorMessage"]))
        for label, value in rows:
            self.stdout.write(f"  {label + ':':<14}{value}")


def _pick(organizations: list[dict], code: str | None) -> dict:
    by_code = {o["code"]: o for o in organizations}
    if code:
        code = organization_code_normalize(code)
        if code not in by_code:
            raise CommandError(
                f"Organization {code} is not visible to this user (visible: {', '.join(by_code) or 'none'})."
            )
        return by_code[code]
    if not organizations:
        raise CommandError("This user sees no organization: add them as a member of one (or use a staff user).")
    return by_code.get("RIO") or organizations[0]


def _describe(body: dict) -> str:
    return f"{body.get('error', '')}: {body.get('message', body)}".strip(": ")


class _ApiClient:
    """A requests session with the bearer token, refreshed once when it expires."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.refresh_token = ""

    def login(self, username: str, password: str) -> dict:
        status_code, body = self.request("post", "/api/auth/login", json={"username": username, "password": password})
        if status_code != 200:
            raise CommandError(f"Login as {username} failed: HTTP {status_code} {_describe(body)}")
        self._use(body["access"])
        self.refresh_token = body["refresh"]
        return body["user"]

    def call(self, method: str, path: str, **kwargs) -> dict:
        """A request that must succeed; any error answer becomes a CommandError."""
        status_code, body = self.request(method, path, **kwargs)
        if status_code == 401 and self.refresh_token:
            refreshed_status, refreshed = self.request(
                "post", "/api/auth/refresh", json={"refresh": self.refresh_token}
            )
            if refreshed_status == 200:
                self._use(refreshed["access"])
                # Refresh tokens rotate: the one just used is spent.
                self.refresh_token = refreshed.get("refresh", self.refresh_token)
                status_code, body = self.request(method, path, **kwargs)
        if not 200 <= status_code < 300:
            raise CommandError(f"{method.upper()} {path} failed: HTTP {status_code} {_describe(body)}")
        return body

    def request(self, method: str, path: str, **kwargs) -> tuple[int, dict]:
        url = self.base_url + path
        try:
            response = self.session.request(method, url, timeout=30, **kwargs)
        except requests.RequestException as error:
            raise CommandError(f"Cannot reach {url}: {error}") from None
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text[:200]}
        return response.status_code, body

    def _use(self, access_token: str) -> None:
        self.session.headers["Authorization"] = f"Bearer {access_token}"
