"""The production web server (gunicorn with gunicorn.conf.py, decision 11): a TERM lets in-flight requests
finish and then stops answering; a HUP replaces the workers while the server keeps answering.

gunicorn runs pfasync behind one extra path (gated_wsgi.py) that holds a request in flight until the test
opens its gate, so "in flight" is a fact the test controls, not a guess about timing."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _until(condition, what: str, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)
    return result


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.status, response.read().decode()


def _answers(url: str) -> bool:
    try:
        return _get(url)[0] == 200
    except OSError:
        return False


class Server:
    def __init__(self, tmp_path: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.gates = tmp_path / "gates"
        self.gates.mkdir()
        self.log = tmp_path / "gunicorn.log"
        env = {
            **os.environ,
            "WEB_BIND": f"127.0.0.1:{self.port}",
            "WEB_WORKERS": "2",
            "WEB_GRACEFUL_TIMEOUT": "30",
            "GATE_DIR": str(self.gates),
        }
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--config",
                    "gunicorn.conf.py",
                    "pfasync.tests.gated_wsgi:application",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _until(lambda: _answers(f"{self.url}/healthz") or self.process.poll() is not None, "gunicorn to answer")
        assert self.process.poll() is None, self.log.read_text()

    def logged(self, text: str) -> int:
        return self.log.read_text().count(text)

    def booted_pids(self) -> list[int]:
        return [int(line.rsplit(" ", 1)[1]) for line in self.log.read_text().splitlines() if "Booting worker" in line]

    def hold(self, pool: ThreadPoolExecutor, name: str):
        """A request that stays in flight until `release(name)`; returns once a worker is inside it."""
        future = pool.submit(_get, f"{self.url}/_gate/{name}")
        started = self.gates / f"{name}.started"
        _until(lambda: started.exists() and started.read_text(), f"request {name} to reach a worker")
        return future, int(started.read_text())

    def release(self, name: str) -> None:
        (self.gates / f"{name}.open").touch()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def server(tmp_path):
    server = Server(tmp_path)
    yield server
    for gate in server.gates.glob("*.started"):
        server.release(gate.stem)
    server.stop()


def test_term_lets_in_flight_requests_finish_then_stops(server):
    with ThreadPoolExecutor(2) as pool:
        in_flight, worker = server.hold(pool, "slow")
        server.process.send_signal(signal.SIGTERM)
        _until(lambda: server.logged("Handling signal: term"), "gunicorn to take the TERM")
        assert server.process.poll() is None, "gunicorn stopped with a request in flight"

        server.release("slow")
        # Had the worker been killed, the request would have failed (connection reset), not answered.
        assert in_flight.result(timeout=60) == (200, f"served by {worker}")

    assert server.process.wait(timeout=60) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()


def test_hup_replaces_the_workers_while_the_server_keeps_answering(server):
    old_workers = set(_until(lambda: len(server.booted_pids()) == 2 and server.booted_pids(), "two workers"))
    with ThreadPoolExecutor(3) as pool:
        in_flight, old_worker = server.hold(pool, "slow")
        assert old_worker in old_workers

        server.process.send_signal(signal.SIGHUP)
        new_workers = set(_until(lambda: len(server.booted_pids()) >= 4 and server.booted_pids()[2:], "new workers"))
        assert not new_workers & old_workers
        # The old idle worker goes; the busy one stays until its request is done.
        (idle,) = old_workers - {old_worker}
        _until(lambda: server.logged(f"Worker exiting (pid: {idle})"), "the old idle worker to exit")

        # While the old worker still serves its request, new requests are answered, by the new workers.
        server.release("fresh")
        status, body = _get(f"{server.url}/_gate/fresh")
        assert status == 200 and int(body.rsplit(" ", 1)[1]) in new_workers
        assert _get(f"{server.url}/healthz")[0] == 200

        server.release("slow")
        assert in_flight.result(timeout=60) == (200, f"served by {old_worker}")

    assert server.process.poll() is None
    assert _get(f"{server.url}/healthz")[0] == 200
