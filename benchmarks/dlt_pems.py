"""The dlt side of the sync benchmark: the same PEMS grid, read over HTTP and merged by dlt.

Runs only under the benchmark's own venv (`.venv-dlt`, from `benchmarks/requirements-dlt.txt`);
neither the service nor `.venv` ever imports dlt. `bench_sync.py` starts it once per measured run
and reads one JSON line from its stdout:

    .venv-dlt/bin/python benchmarks/dlt_pems.py --base-url http://127.0.0.1:8900 --org BENCH \\
        --database-url postgresql://postgres@127.0.0.1:5432/pfasync_bench_dlt --pipelines-dir /tmp/dlt \\
        --page-size 5000

The resource reads the grid the way the contract says a client must (POST /grids, cursor paging,
never trusting a short page), with only the standard library and `requests` that dlt brings, so
the measured difference is dlt's extract/normalize/load against pfasync's parse/store.
"""

import argparse
import base64
import json
import os
import resource
import sys
import time
from collections.abc import Iterator

# Set before dlt is imported: dlt reads its configuration from the environment when it loads.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
os.environ.setdefault("RUNTIME__LOG_LEVEL", "WARNING")

import dlt  # noqa: E402
import orjson  # noqa: E402
import requests  # noqa: E402

GRID_BODY = {
    "GRID": {"GRID_NAME": "CUPFAG", "GRID_ID": "100541"},
    "GRID_TYPE": {"TYPE": "LIST"},
    "REQUEST_TYPE": "LIST.DATA_ONLY.STORED",
    "ADDON_SORT": {"ALIAS_NAME": "pfs_id", "TYPE": "ASC"},
}


def grid_pages(
    *, base_url: str, org: str, tenant: str, username: str, password: str, page_size: int
) -> Iterator[list[dict[str, str]]]:
    """Yield the organization's grid page by page, each row a dict alias -> value plus `organization`."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    headers = {
        "tenant": tenant,
        "organization": org,
        "Authorization": f"Basic {token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    org_filter = {"ADDON_FILTER": {"ALIAS_NAME": "pfs_a_org", "OPERATOR": "=", "VALUE": org}}
    cursor = 1
    with requests.Session() as session:
        while True:
            grid = {**GRID_BODY["GRID"], "NUMBER_OF_ROWS_FIRST_RETURNED": page_size, "CURSOR_POSITION": cursor}
            body = {**GRID_BODY, **org_filter, "GRID": grid}
            response = session.post(f"{base_url}/axis/restservices/grids", json=body, headers=headers, timeout=(5, 120))
            response.raise_for_status()
            # orjson (a dlt dependency) as pfasync uses it, so JSON decoding is not what differs.
            data = orjson.loads(response.content)["Result"]["ResultData"]
            records = data.get("DATARECORD") or []
            if not records:
                return
            yield [
                {**{cell["FIELDNAME"]: cell["FIELDVALUE"] for cell in record["DATAFIELD"]}, "organization": org}
                for record in records
            ]
            # The contract's stop rules: no next position, or one that does not advance.
            next_position = data.get("NEXTCURSORPOSITION")
            if not next_position or int(str(next_position).replace(",", "")) <= cursor:
                return
            cursor = int(str(next_position).replace(",", ""))


def with_password(database_url: str) -> str:
    """dlt insists on a password; trust authentication never asks for one, so any will do."""
    scheme, _, rest = database_url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" in userinfo:
        return database_url
    return f"{scheme}://{userinfo}:unused-under-trust-auth@{host}"


def run(args: argparse.Namespace) -> dict:
    pipeline = dlt.pipeline(
        pipeline_name="pems_bench",
        destination=dlt.destinations.postgres(credentials=with_password(args.database_url)),
        dataset_name="pems",
        pipelines_dir=args.pipelines_dir,
    )
    pfa = dlt.resource(
        grid_pages(
            base_url=args.base_url,
            org=args.org,
            tenant=args.tenant,
            username=args.username,
            password=args.password,
            page_size=args.page_size,
        ),
        name="pfa",
        write_disposition="merge",
        primary_key=("organization", "pfs_id"),
    )
    started = time.perf_counter()
    pipeline.run(pfa)
    elapsed = time.perf_counter() - started
    with pipeline.sql_client() as client:
        [(stored,)] = client.execute_sql("SELECT count(*) FROM pfa WHERE organization = %s", args.org)
    return {
        "seconds": round(elapsed, 2),
        "rows_stored": stored,
        "dlt_version": dlt.__version__,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--org", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--pipelines-dir", required=True)
    parser.add_argument("--tenant", default="PEMS_DEMO")
    parser.add_argument("--username", default="pfasync")
    parser.add_argument("--password", default="pfasync-demo")
    parser.add_argument("--page-size", type=int, required=True, help="rows per grid page (bench_sync.PAGE_SIZE)")
    args = parser.parse_args()
    print(json.dumps(run(args)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
