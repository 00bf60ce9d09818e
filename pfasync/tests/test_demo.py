"""The README's first command, from a clean clone: `make demo-once` brings up the service on the embedded
PostgreSQL server, syncs, stops everything it started, and leaves a .env with which `manage.py` commands
work in a fresh shell that has nothing exported."""

import http.cookiejar
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from pfasync.embedded_db import embedded_db_running, embedded_db_stop

ROOT = Path(__file__).resolve().parent.parent.parent


def _processes_of(folder: Path) -> list[str]:
    """Processes started from `folder` (its virtualenv's Python, or PostgreSQL on its .pgdata)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(folder) in cmdline:
            found.append(cmdline)
    return found


def _fresh_shell(clone: Path, command: str) -> subprocess.CompletedProcess:
    """`command` in the clone as a new terminal would run it: no DATABASE_URL, no DJANGO_*, nothing exported."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    return subprocess.run(
        ["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
@pytest.mark.skipif(
    not shutil.which("make") or not shutil.which("git") or not (ROOT / ".git").exists(),
    reason="needs make, git and a git checkout to clone",
)
def test_make_demo_once_from_a_clean_clone_then_manage_py_works_in_a_fresh_shell(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    # `make` builds .venv itself; seeded with this environment's packages (a .pth) it downloads nothing.
    subprocess.run([sys.executable, "-m", "venv", str(clone / ".venv")], check=True, timeout=120)
    site_packages = Path(sysconfig.get_paths(vars={"base": str(clone / ".venv")})["purelib"])
    (site_packages / "seed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    try:
        demo = _fresh_shell(clone, 'make demo-once DEMO_ARGS="--web-port 0 --pems-port 0"')
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        output = demo.stdout
        assert "RIO  completed  50,000" in output and "HOU  completed  20,000" in output, output[-3000:]
        for line in ("Dashboard   http://127.0.0.1:", "API docs    http://127.0.0.1:", "Admin       http://127.0.0.1:"):
            assert line in output, output[-3000:]
        assert "Sign in as demo-admin / " in output
        assert "Stopped: simulator, web, worker, embedded PostgreSQL" in output
        # Nothing the demo started is left running.
        assert _processes_of(clone) == []
        # Nothing noisy on a clean first start: no warnings or errors in the service's logs.
        for log in ("web", "worker", "simulator"):
            text = (clone / ".demo" / f"{log}.log").read_text()
            assert " WARNING " not in text and " ERROR " not in text and "Traceback" not in text, (log, text)

        # A fresh terminal: the .env that `make demo` wrote is all the settings there are.
        created = _fresh_shell(
            clone, ".venv/bin/python manage.py createsuperuser --noinput --username second --email s@example.com"
        )
        assert created.returncode == 0, created.stderr
        assert "Superuser created successfully." in created.stdout
        checked = _fresh_shell(clone, ".venv/bin/python manage.py check")
        assert checked.returncode == 0, checked.stderr
        counted = _fresh_shell(
            clone,
            ".venv/bin/python manage.py shell --command "
            "'from django.contrib.auth.models import User; from mirror.models import Organization; "
            'print(sorted(User.objects.values_list("username", flat=True)), '
            'sorted(Organization.objects.values_list("code", flat=True)))\'',
        )
        assert counted.stdout.strip().splitlines()[-1] == "['demo-admin', 'second'] ['HOU', 'RIO']", counted
    finally:
        # The manage.py commands above started the embedded server again and left it running for the next.
        subprocess.run(
            [str(clone / ".venv/bin/python"), "-m", "pfasync.embedded_db", "stop", str(clone / ".pgdata")],
            cwd=clone,
            timeout=120,
            check=False,
        )
    assert _processes_of(clone) == []


def _sign_in(web_url: str, username: str, password: str) -> urllib.request.OpenerDirector:
    """A browser-like client signed in through the admin's login form."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = opener.open(f"{web_url}/admin/login/", timeout=30).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    data = urllib.parse.urlencode(
        {"csrfmiddlewaretoken": token, "username": username, "password": password, "next": "/admin/"}
    ).encode()
    opener.open(f"{web_url}/admin/login/", data=data, timeout=30).read()
    return opener


@pytest.mark.slow
def test_the_demo_service_for_a_test_runs_on_its_own_database_and_stops_on_sigterm(tmp_path):
    """The way a browser test starts the service: its own cluster, ports, logs and credentials."""
    ready, pgdata = tmp_path / "demo.json", tmp_path / "pgdata"
    command = [sys.executable, "scripts/demo.py", "--pgdata", str(pgdata), "--logs", str(tmp_path / "logs")]
    command += ["--web-port", "0", "--pems-port", "0", "--orgs", "RIO=300,HOU=100", "--ready-file", str(ready)]
    with open(tmp_path / "demo.out", "wb") as out:
        demo = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not ready.exists() and demo.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), (tmp_path / "demo.out").read_text()[-3000:]
        service = json.loads(ready.read_text())

        opener = _sign_in(service["web_url"], service["admin_username"], service["admin_password"])
        dashboard = opener.open(service["dashboard"], timeout=30)
        assert dashboard.url == service["dashboard"]  # not redirected to the login
        page = dashboard.read().decode()
        assert "RIO" in page and "HOU" in page
        assert opener.open(service["api_docs"], timeout=30).status == 200

        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=120) == 0
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        embedded_db_stop(pgdata=pgdata)
    assert "Stopped: simulator, web, worker, embedded PostgreSQL" in (tmp_path / "demo.out").read_text()
    assert not any(psutil.pid_exists(pid) for pid in service["pids"].values())
    assert not embedded_db_running(pgdata=pgdata)
