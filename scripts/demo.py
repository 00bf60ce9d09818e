"""The quick-start demo: one command to a running service (`make demo`; `make demo-once` exits instead).

It migrates the database (the embedded PostgreSQL server when DATABASE_URL is unset), starts the PEMS
simulator, the web server (gunicorn, as in production) and the background worker (qcluster, with its
schedule on), creates a demo administrator, syncs the demo organizations with live progress, prints what
to open, and keeps everything running until Ctrl-C (or SIGTERM), which stops every process it started,
the embedded PostgreSQL server too if this run started it (any later `manage.py` command starts it again).

For a test that needs the running service (a database, ports and credentials of its own):
    python scripts/demo.py --pgdata /tmp/x/pgdata --web-port 0 --pems-port 0 --orgs RIO=500,HOU=200 \
        --ready-file /tmp/x/demo.json
writes the JSON file (URLs, administrator, process ids) once the service answers; SIGTERM stops it all,
the embedded server of that folder included.
`--cors-origin http://127.0.0.1:5173` lets a browser page served from that origin call /api/ (CORS).
"""

import argparse
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pfasync.embedded_db import (  # noqa: E402
    dotenv_value,
    embedded_db_folder,
    embedded_db_running,
    embedded_db_stop,
)

PYTHON = sys.executable
ADMIN_USERNAME = "demo-admin"
# The demo tenant's time zone: the simulator writes its times in it, and the connection must name it.
TIME_ZONE = "America/Chicago"
ORGANIZATION_NAMES = {"RIO": "Rio Grande", "HOU": "Houston Terminal"}
ADMIN_SCRIPT = """
import os
from django.contrib.auth import get_user_model
user, _ = get_user_model().objects.get_or_create(username=os.environ["DEMO_ADMIN_USERNAME"])
user.email, user.is_staff, user.is_superuser = "demo-admin@localhost", True, True
user.set_password(os.environ["DEMO_ADMIN_PASSWORD"])
user.save()
"""


class Stop(Exception):
    """SIGTERM or SIGINT: leave the wait and stop what was started."""


def _stop_signal(signum, frame):
    raise Stop(signal.Signals(signum).name)


def _die_with_parent() -> None:
    """In a child: Linux sends it SIGTERM when the demo dies, even by SIGKILL, so nothing is left behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


class Demo:
    def __init__(self, options: argparse.Namespace):
        self.options = options
        self.logs = Path(options.logs).resolve()
        self.processes: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "PEMS_DEMO_PASSWORD": os.environ.get("PEMS_DEMO_PASSWORD") or "pfasync-demo"}
        # The simulator speaks plain http; the worker runs its schedule. Both are this run's, not .env's.
        self.env.update({"PEMS_ALLOW_HTTP": "true", "ENABLE_SYNC_WORKER": "true"})
        if options.cors_origin:
            # A browser front end served elsewhere (a dev server, a test's page) may call /api/ (CORS).
            self.env["CORS_ALLOWED_ORIGINS"] = ",".join(options.cors_origin)
        if options.pgdata:
            # A cluster of this run's own, whatever the environment names (a test's isolated service).
            self.env.update({"DATABASE_URL": "", "PFASYNC_PGDATA": str(Path(options.pgdata).resolve())})
        # As settings.py decides: a DATABASE_URL in the environment or in .env wins over the embedded server.
        self.embedded = not (self.env["DATABASE_URL"] if "DATABASE_URL" in self.env else dotenv_value("DATABASE_URL"))
        if self.embedded:
            self.env["PFASYNC_EMBEDDED_POSTGRES"] = "true"
        self.pgdata = Path(options.pgdata).resolve() if options.pgdata else embedded_db_folder()
        self.started_database = self.embedded and not embedded_db_running(pgdata=self.pgdata)

    def manage(self, *args: str, quiet: bool = False, env: dict | None = None) -> None:
        """A manage.py command in the foreground (Ctrl-C reaches it too); its failure ends the demo."""
        output = subprocess.DEVNULL if quiet else None
        subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=env or self.env, stdout=output, check=True)

    def start(self, name: str, command: list[str], env: dict | None = None) -> subprocess.Popen:
        """A background process with its output in .demo/<name>.log, in a session of its own, so that
        Ctrl-C reaches the demo only and the demo stops each process in order."""
        self.logs.mkdir(exist_ok=True)
        with open(self.logs / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env or self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.processes[name] = process
        return process

    def wait_for(self, name: str, url: str, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while not _answers(url):
            if self.processes[name].poll() is not None:
                raise SystemExit(f"The {name} process stopped at start-up; see {self.logs / f'{name}.log'}.")
            if time.monotonic() > deadline:
                raise SystemExit(f"The {name} process did not answer {url} in {seconds:.0f} s.")
            time.sleep(0.2)

    def run(self) -> int:
        options = self.options
        web_port = options.web_port or _free_port()
        pems_port = options.pems_port or _free_port()
        pems_url = f"http://127.0.0.1:{pems_port}"
        web_url = f"http://127.0.0.1:{web_port}"
        database = f"embedded PostgreSQL ({self.pgdata})" if self.embedded else "DATABASE_URL"
        orgs = dict(part.split("=", 1) for part in options.orgs.split(","))
        if options.ready_file:
            # A file left by an earlier run must not announce this one.
            Path(options.ready_file).unlink(missing_ok=True)

        print(f"==> Migrating the database: {database}", flush=True)
        self.manage("migrate", "--noinput", quiet=True)

        print(f"==> Starting the PEMS simulator on {pems_url}", flush=True)
        self.start(
            "simulator",
            [PYTHON, "manage.py", "pems_simulator", "--port", str(pems_port), "--orgs", options.orgs, "--seed", "1"]
            + ["--password-env", "PEMS_DEMO_PASSWORD", "--time-zone", TIME_ZONE],
        )
        self.wait_for("simulator", f"{pems_url}/_sim/state")
        for code in orgs:
            self.manage(
                "add_organization",
                code,
                "--name",
                ORGANIZATION_NAMES.get(code, code),
                "--pems-url",
                pems_url,
                "--tenant",
                "PEMS_DEMO",
                "--username",
                "pfasync",
                "--password-env",
                "PEMS_DEMO_PASSWORD",
                "--timezone",
                TIME_ZONE,
            )

        print(f"==> Starting the web server (gunicorn) on {web_url} and the worker (qcluster)", flush=True)
        web_env = {**self.env, "WEB_BIND": f"127.0.0.1:{web_port}", "WEB_WORKERS": self.env.get("WEB_WORKERS", "2")}
        self.start("web", [PYTHON, "-m", "gunicorn", "--config", "gunicorn.conf.py"], env=web_env)
        self.start("worker", [PYTHON, "manage.py", "qcluster"])
        self.wait_for("web", f"{web_url}/readyz")

        password = options.admin_password or secrets.token_urlsafe(12)
        admin_env = {**self.env, "DEMO_ADMIN_USERNAME": ADMIN_USERNAME, "DEMO_ADMIN_PASSWORD": password}
        self.manage("shell", "--command", ADMIN_SCRIPT, env=admin_env, quiet=True)
        print(f"==> Demo administrator: {ADMIN_USERNAME} / {password}", flush=True)

        print(f"==> Syncing {', '.join(orgs)} from the simulator (full read)", flush=True)
        self.manage("sync_pems", *[arg for code in orgs for arg in ("--org", code)], "--full")

        for name, process in self.processes.items():
            if process.poll() is not None:
                raise SystemExit(f"The {name} process stopped; see {self.logs / f'{name}.log'}.")
        urls = {
            "web_url": web_url,
            "dashboard": f"{web_url}/ops/dashboard/",
            "api_docs": f"{web_url}/api/docs/",
            "admin": f"{web_url}/admin/",
            "pems_url": pems_url,
            "admin_username": ADMIN_USERNAME,
            "admin_password": password,
            "pids": {name: process.pid for name, process in self.processes.items()},
        }
        origins = ", ".join(options.cors_origin or [])
        cors = f"Browser front ends on {origins} may call /api/ (CORS).\n" if origins else ""
        print(
            f"""
pfasync is running on {database}:
  Dashboard   {urls["dashboard"]}
  API docs    {urls["api_docs"]}
  Admin       {urls["admin"]}
Sign in as {ADMIN_USERNAME} / {password} (the admin sign-in opens the dashboard and API docs too).
{cors}The worker syncs {", ".join(orgs)} on the schedule (SYNC_INTERVAL in .env). Logs: {self.logs}/web.log, worker.log, simulator.log.
Afterwards every manage.py command works in a fresh terminal (.env has the settings).""",
            flush=True,
        )
        if dotenv_value("PEMS_ALLOW_HTTP").lower() not in ("true", "1", "yes", "on"):
            print(
                "Note: PEMS_ALLOW_HTTP is not true in .env (an older .env keeps its value): a later manage.py "
                "sync_pems refuses the simulator's http:// URL until it is.",
                flush=True,
            )
        if options.ready_file:
            ready = Path(options.ready_file)
            ready.with_suffix(".tmp").write_text(json.dumps(urls, indent=2))
            ready.with_suffix(".tmp").replace(ready)
        if options.once:
            return 0
        print("Press Ctrl-C to stop.", flush=True)
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    print(f"The {name} process stopped ({process.returncode}); see {self.logs / f'{name}.log'}.")
                    return 1
            time.sleep(1)

    def stop(self) -> None:
        """TERM each process (the worker first: its syncs stop at their next page), then wait; KILL stragglers."""
        for name in ("worker", "web", "simulator"):
            if name in self.processes and self.processes[name].poll() is None:
                self.processes[name].terminate()
        deadline = time.monotonic() + 40
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        stopped = ", ".join(self.processes)
        if self.started_database and embedded_db_stop(pgdata=self.pgdata):
            stopped += ", embedded PostgreSQL (the next manage.py command starts it again)"
        if stopped:
            print(f"Stopped: {stopped}.", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", action="store_true", help="stop everything and exit after the first sync")
    parser.add_argument("--web-port", type=int, default=int(os.environ.get("DEMO_WEB_PORT") or 8000), help="0: free")
    parser.add_argument("--pems-port", type=int, default=int(os.environ.get("DEMO_PORT") or 8900), help="0: free")
    parser.add_argument("--orgs", default="RIO=50000,HOU=20000", help="simulated organizations, CODE=ROWS,...")
    parser.add_argument("--admin-password", default=os.environ.get("DEMO_ADMIN_PASSWORD", ""))
    parser.add_argument("--ready-file", help="write the URLs and the administrator as JSON here once ready")
    parser.add_argument("--logs", default=str(ROOT / ".demo"), help="folder of the processes' logs (.demo)")
    parser.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="let a browser front end on ORIGIN (e.g. http://localhost:5173) call /api/: CORS_ALLOWED_ORIGINS "
        "for this run (repeat for more; without it, the environment's or .env's value)",
    )
    parser.add_argument(
        "--pgdata", help="run on an embedded PostgreSQL cluster in this folder, whatever DATABASE_URL says"
    )
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop_signal)
    signal.signal(signal.SIGINT, _stop_signal)
    demo = Demo(options)
    try:
        return demo.run()
    except Stop:
        print("\nStopping...", flush=True)
        return 0
    except subprocess.CalledProcessError as error:
        print(f"Failed: {' '.join(error.cmd[1:])} (exit {error.returncode}).", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the stop short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.stop()


if __name__ == "__main__":
    sys.exit(main())
