"""The README's first command, from a clean clone: `make demo-once` brings up the service on the embedded
PostgreSQL server, syncs, stops everything it started, and leaves a .env with which `manage.py` commands
work in a fresh shell that has nothing exported."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import psutil
import pytest

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
@pytest.mark.skipif(not shutil.which("make") or not shutil.which("git"), reason="needs make and git")
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
            [str(clone / ".venv/bin/python"), "-m", "pfasync.embedded_db", "stop"], cwd=clone, timeout=120, check=False
        )
    assert _processes_of(clone) == []
