"""End-to-end sync benchmark: PEMS simulator over HTTP -> pfasync -> PostgreSQL.

For each record count it starts a simulator process, then a fresh sync process that runs a first
load and a no-change re-sync, and reports rows/s and the sync process's peak memory (the simulator
is a separate process and is not counted).

    .venv/bin/python benchmarks/bench_sync.py --records 50000 200000

Needs PostgreSQL; BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/pfasync_bench)
names a database that is dropped and re-created for every record count.
"""

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/pfasync_bench"
RESULTS = ROOT / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def recreate_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def run_child(records: int, port: int) -> dict:
    """In a fresh process: migrate, register the organization, sync twice, measure."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pfasync.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from mirror.models import Organization
    from mirror.services import organization_register
    from synclog.engine import sync_organizations

    call_command("migrate", verbosity=0)
    organization_register(
        code="BENCH",
        name="Benchmark",
        base_url=f"http://127.0.0.1:{port}",
        tenant="PEMS_DEMO",
        username="pfasync",
        secret="pfasync-demo",
        time_zone="America/Chicago",
    )
    organization = Organization.objects.get(code="BENCH")
    result = {"records": records}
    for label in ("first_load", "resync_unchanged"):
        started = time.perf_counter()
        [outcome] = sync_organizations(organizations=[organization], trigger="command")
        elapsed = time.perf_counter() - started
        log = outcome.sync_log
        assert log.status == "completed", log.error_message
        assert log.records_processed == records, (log.records_processed, records)
        result[label] = {
            "seconds": round(elapsed, 2),
            "rows_per_second": round(records / elapsed),
            "inserted": log.records_inserted,
            "updated": log.records_updated,
            "unchanged": log.records_unchanged,
        }
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return result


def measure(records: int, database_url: str) -> dict:
    recreate_database(database_url)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "bench"),
        "PFASYNC_ENCRYPTION_KEY": os.environ.get(
            "PFASYNC_ENCRYPTION_KEY", "8m9BF-yBlDUoFTQEgHhWlyx8aQSeg2GqkJHpWZ-B0Ig="
        ),
        "LOG_LEVEL": "WARNING",
    }
    simulator = subprocess.Popen(
        [sys.executable, "manage.py", "pems_simulator", "--port", str(port), "--orgs", f"BENCH={records}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/state", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--port", str(port), "--records", str(records)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            raise SystemExit(f"sync of {records} records failed:\n{child.stderr}")
        return json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        simulator.terminate()
        simulator.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=RESULTS / "bench_sync.json")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.records[0], args.port)))
        return
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    results = [measure(records, database_url) for records in args.records]
    print(
        f"{'records':>10} {'first load rows/s':>18} {'re-sync rows/s':>15} {'re-sync speed-up':>17} {'peak RSS MB':>12}"
    )
    for r in results:
        first, again = r["first_load"], r["resync_unchanged"]
        print(
            f"{r['records']:>10,} {first['rows_per_second']:>18,} {again['rows_per_second']:>15,} "
            f"{again['rows_per_second'] / first['rows_per_second']:>16.2f}x {r['peak_rss_mb']:>12}"
        )
    if len(results) > 1:
        print(
            f"peak memory ratio {results[-1]['records']:,} vs {results[0]['records']:,} records: "
            f"{results[-1]['peak_rss_mb'] / results[0]['peak_rss_mb']:.2f}x"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.output.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
