"""The embedded PostgreSQL server (decision 10): started on demand, shared, stopped on request, chosen by
settings only when asked for. These tests run real servers on folders of their own."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from pfasync.embedded_db import embedded_db_running, embedded_db_settings, embedded_db_start, embedded_db_stop

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def pgdata(tmp_path):
    folder = tmp_path / ".pgdata"
    yield folder
    embedded_db_stop(pgdata=folder)


def _postmaster_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_server_starts_on_demand_once_and_stops_on_request(pgdata):
    assert not embedded_db_running(pgdata=pgdata)
    # Processes that start together (a web server's workers, the worker) start it once between them.
    with ThreadPoolExecutor(3) as pool:
        started = list(pool.map(lambda _: embedded_db_start(pgdata=pgdata), range(3)))
    assert sorted(started) == [False, False, True]
    assert embedded_db_running(pgdata=pgdata)

    params = embedded_db_settings(pgdata=pgdata)
    with psycopg.connect(host=params["HOST"], user=params["USER"], dbname=params["NAME"]) as conn:
        assert conn.execute("SHOW server_version_num").fetchone()[0].startswith("18")
        # A socket in its folder and no TCP port: nothing outside this machine's users reaches it.
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""
        conn.execute("CREATE TABLE kept (value int)")
        conn.execute("INSERT INTO kept VALUES (42)")
        server_user = conn.execute("SELECT current_setting('data_directory')").fetchone()[0]
    assert server_user == str(pgdata.resolve())
    # PostgreSQL refuses root: under root the server runs as an unprivileged user of its own.
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    owner = Path(f"/proc/{pid}").stat().st_uid
    assert owner != 0 and owner == pgdata.stat().st_uid

    assert embedded_db_stop(pgdata=pgdata) is True
    assert not embedded_db_running(pgdata=pgdata) and not _postmaster_alive(pid)
    assert embedded_db_stop(pgdata=pgdata) is False

    # The data stays in the folder for the next start.
    assert embedded_db_start(pgdata=pgdata) is True
    with psycopg.connect(host=params["HOST"], user="postgres", dbname="pfasync") as conn:
        assert conn.execute("SELECT value FROM kept").fetchone() == (42,)


def _settings_engine(**environment: str) -> subprocess.CompletedProcess:
    # Explicitly empty values win over a developer's .env (it only fills in what is unset).
    clean = {"DJANGO_DEBUG": "", "DATABASE_URL": "", "PFASYNC_EMBEDDED_POSTGRES": ""}
    code = "from django.conf import settings; d = settings.DATABASES['default']; print(d['ENGINE'], d['HOST'])"
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env={**os.environ, **clean, "DJANGO_SETTINGS_MODULE": "pfasync.settings", **environment},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_database_url_settings_start_the_embedded_server_only_when_asked(pgdata):
    refused = _settings_engine(PFASYNC_PGDATA=str(pgdata))
    assert refused.returncode != 0
    assert "DATABASE_URL is not set" in refused.stderr and "PFASYNC_EMBEDDED_POSTGRES=true" in refused.stderr
    assert not pgdata.exists()

    for asked in ({"PFASYNC_EMBEDDED_POSTGRES": "true"}, {"DJANGO_DEBUG": "true"}):
        result = _settings_engine(PFASYNC_PGDATA=str(pgdata), **asked)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["django.db.backends.postgresql", str(pgdata.resolve())]
        assert embedded_db_running(pgdata=pgdata)

    # DATABASE_URL wins over the embedded server.
    result = _settings_engine(
        PFASYNC_PGDATA=str(pgdata), PFASYNC_EMBEDDED_POSTGRES="true", DATABASE_URL="postgres://u@db.example:5432/x"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.postgresql", "db.example"]
