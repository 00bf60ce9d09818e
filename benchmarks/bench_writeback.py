"""Write-back to PEMS: committed modifications written to the simulator with PEMS's latency added
(run by bench_sync.py, after the delta layer, in a process of its own).

Untimed setup: organizations of their own (WB1 ... WB4, four times the modifications per
organization in rows, at least 1,000), added to the simulator through its control API and read
once by a full sync, so that their mirror exists as a real one would.

Then, for 1, 2 and 4 organizations written at once (`levels`): each organization gets the same
number of committed modifications (bench_delta.py's `modifications_create`: two fields each, based
on the mirror's row and `recordid`), its write run is claimed as `manage.py push_pems` claims one,
and the runs go, one thread per organization, each through its own client, with `latency` seconds
added to every PEMS call by the simulator. Timed: from the start of the runs to the end of the last.

Each run's client has its `patch_record` and `get_record` timed, which is the time the run waited
on PEMS; against the run's wall time it shows whose time the write takes. The rate PEMS's latency
alone would allow is one PATCH per latency per organization.

Checked after each level: every run completed with every modification written, none rebased or
in conflict; every modification's new `recordid` is its base plus one (PEMS saved it once); PEMS
saved as many records as were written (the simulator's data version) and the client sent as many
PATCHes; no PATCH of one record on one `recordid` twice in the simulator's request log (its last
1,000 requests; when that holds the whole level, exactly one per modification); and a sample of
records in the simulator holds the values written, as the mirror does.
"""

from __future__ import annotations

import json
import random
import resource
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

ORGANIZATIONS = ("WB1", "WB2", "WB3", "WB4")
MIN_ROWS = 1_000
# Records per organization and level read back from the simulator to compare with what was written.
SAMPLE = 50
# The simulator keeps its last 1,000 API requests.
REQUEST_LOG_SIZE = 1_000


def _control(base_url: str, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
    """A call to the simulator's control API (`/_sim/...`)."""
    request = urllib.request.Request(
        f"{base_url}/_sim/{path}",
        data=None if payload is None else json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def organizations_prepare(*, base_url: str, codes: list[str], rows: int, register: Callable[[str], Any]) -> dict:
    """Add `codes` to the simulator with `rows` rows each (unless it has them already), register
    them, and read each once."""
    from mirror.pems import PemsError
    from mirror.services import pems_client_for
    from synclog.engine import sync_run
    from synclog.runs import sync_claim

    existing = _control(base_url, "GET", "state")["orgs"]
    syncs = {}
    for code in codes:
        if code not in existing:
            existing = _control(base_url, "POST", "orgs", {"org": code, "count": rows})["orgs"]
        organization = register(code)
        started = time.perf_counter()
        log = sync_claim(organization=organization, trigger="command")
        try:
            with pems_client_for(organization) as client:
                sync_run(sync_log=log, client=client)
        except PemsError:
            pass  # recorded in the run, checked below
        if log.status != "completed" or log.records_processed != existing[code]:
            raise RuntimeError(f"reading {code} before the write-back: {log.status}, {log.error_message}")
        syncs[code] = round(time.perf_counter() - started, 2)
    return {"rows": {code: existing[code] for code in codes}, "sync_seconds": syncs}


def _timed(client, calls: dict[str, float]):
    """`client` with its record calls counted and timed into `calls` (one client per thread)."""

    def timer(name: str, send: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return send(*args, **kwargs)
            finally:
                calls[name] += 1
                calls["seconds"] += time.perf_counter() - started

        return timed

    for name in ("patch_record", "get_record"):
        setattr(client, name, timer(name, getattr(client, name)))
    return client


def _write(sync_log, start: threading.Barrier, outcome: dict[str, Any]) -> None:
    """One organization's write run, in a thread of its own, once every run's thread is ready."""
    from django.db import connection

    from mirror.services import pems_client_for
    from synclog.writeback import write_run

    calls = outcome["calls"] = {"patch_record": 0, "get_record": 0, "seconds": 0.0}
    try:
        with _timed(pems_client_for(sync_log.organization, usage="write"), calls) as client:
            start.wait()
            started = time.perf_counter()
            try:
                write_run(sync_log=sync_log, client=client)
            finally:
                outcome["seconds"] = time.perf_counter() - started
    except Exception as error:  # the run records its own failure; the level's checks report it
        outcome["error"] = f"{type(error).__name__}: {error}"
        start.abort()
    finally:
        connection.close()  # this thread's own


def level_run(*, base_url: str, organizations: list, per_org: int, latency: float, seed: int) -> dict[str, Any]:
    """Write `per_org` new committed modifications of each of `organizations` at once, one thread
    each; the timings and what the checks found (`failures`)."""
    from bench_delta import modifications_create

    from mirror.models import PfaModification
    from synclog.runs import sync_claim

    prepared = time.perf_counter()
    before = set(PfaModification.objects.values_list("pk", flat=True).filter(organization__in=organizations))
    for n, organization in enumerate(organizations):
        modifications_create(organization, committed=per_org, drafts=0, seed=seed + n)
    modifications = list(
        PfaModification.objects.filter(organization__in=organizations)
        .exclude(pk__in=before)
        .select_related("organization")
    )
    logs = [
        sync_claim(organization=organization, trigger="command", direction="write") for organization in organizations
    ]
    setup_seconds = time.perf_counter() - prepared

    data_version = _control(base_url, "GET", "state")["data_version"]
    outcomes: list[dict[str, Any]] = [{} for _ in logs]
    start = threading.Barrier(len(logs) + 1)
    threads = [
        threading.Thread(target=_write, args=(log, start, outcome), name=f"write-{log.organization.code}")
        for log, outcome in zip(logs, outcomes, strict=True)
    ]
    for thread in threads:
        thread.start()
    cpu_before = _cpu_seconds()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass  # a run did not start: its outcome says why
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    cpu_seconds = _cpu_seconds() - cpu_before
    pems_saves = _control(base_url, "GET", "state")["data_version"] - data_version

    runs = []
    for log, outcome in zip(logs, outcomes, strict=True):
        log.refresh_from_db()
        calls = outcome.get("calls", {"patch_record": 0, "get_record": 0, "seconds": 0.0})
        own_seconds = outcome.get("seconds", 0.0)
        runs.append(
            {
                "organization": log.organization.code,
                "status": log.status,
                "error": outcome.get("error") or log.error_message,
                "seconds": round(own_seconds, 2),
                "total": log.records_total,
                "written": log.records_written,
                "rebased": log.records_rebased,
                "conflicts": log.records_conflicts,
                "errored": log.records_errored,
                "patch_requests": calls["patch_record"],
                "get_requests": calls["get_record"],
                "pems_seconds": round(calls["seconds"], 2),
                "pems_share": round(calls["seconds"] / own_seconds, 3) if own_seconds else None,
            }
        )
    written = sum(run["written"] for run in runs)
    pems_calls = [run["patch_requests"] + run["get_requests"] for run in runs]
    # What PEMS's latency alone allows: each run's calls one after another, the runs side by side.
    latency_bound_seconds = max(pems_calls) * latency
    run_seconds = sum(outcome.get("seconds", 0.0) for outcome in outcomes)
    pems_seconds = sum(outcome.get("calls", {}).get("seconds", 0.0) for outcome in outcomes)
    level = {
        "organizations": len(organizations),
        "modifications": len(modifications),
        "setup_seconds": round(setup_seconds, 2),
        "seconds": round(seconds, 2),
        "modifications_per_second": round(written / seconds, 1) if seconds else 0,
        "latency_bound_per_second": round(written / latency_bound_seconds, 1) if latency_bound_seconds else None,
        # Of the runs' wall time: the share in PEMS calls, and the share that is the added latency.
        "pems_share": round(pems_seconds / run_seconds, 3) if run_seconds else None,
        "latency_share": round(sum(pems_calls) * latency / run_seconds, 3) if run_seconds else None,
        # A run's own time per modification: its wall time outside PEMS calls.
        "outside_pems_ms_per_modification": round(1000 * (run_seconds - pems_seconds) / written, 1)
        if written
        else None,
        "process_cpu_seconds": round(cpu_seconds, 1),
        "cpu_ms_per_modification": round(1000 * cpu_seconds / written, 2) if written else None,
        "pems_saves": pems_saves,
        "runs": runs,
    }
    level["checks"], level["failures"] = level_check(
        base_url=base_url, runs=runs, modifications=modifications, pems_saves=pems_saves, seed=seed
    )
    return level


def level_check(*, base_url: str, runs: list[dict], modifications: list, pems_saves: int, seed: int):
    """What a level's checks found, and the failures among them."""
    from django.db.models import Count, F

    from mirror import delta
    from mirror.models import PfaMirror, PfaModification
    from mirror.records import parse_pfa_row
    from mirror.services import pems_client_for

    failures = []
    for run in runs:
        if run["status"] != "completed" or run["written"] != run["total"] or run["error"]:
            failures.append(
                f"{run['organization']}: {run['status']}, {run['written']:,} of {run['total']:,} written: {run['error']}"
            )
        elif run["rebased"] or run["conflicts"] or run["errored"]:
            failures.append(
                f"{run['organization']}: {run['rebased']} rebased, {run['conflicts']} conflicts, "
                f"{run['errored']} failed, though nobody else changed its records"
            )
    pks = [modification.pk for modification in modifications]
    states = dict(
        PfaModification.objects.filter(pk__in=pks).values_list("state").annotate(count=Count("id")).order_by()
    )
    if states != {PfaModification.State.WRITTEN: len(pks)}:
        failures.append(f"modifications by state: {states}, expected all {len(pks):,} written")
    # PEMS adds one to a record's recordid on each save: one more than the base is exactly one save.
    saved_once = PfaModification.objects.filter(pk__in=pks, written_record_id=F("base_record_id") + 1).count()
    if saved_once != len(pks):
        failures.append(f"{len(pks) - saved_once:,} modifications' new recordid is not their base's plus one")
    patches = sum(run["patch_requests"] for run in runs)
    written = sum(run["written"] for run in runs)
    if not pems_saves == patches == written:
        failures.append(f"PEMS saved {pems_saves:,} records, the client sent {patches:,} PATCHes, {written:,} written")

    # PATCHes as the simulator received them: never one record twice on one recordid.
    sent = {
        (modification.organization.code, modification.pfa_id, str(modification.base_record_id))
        for modification in modifications
    }
    logged: dict[tuple[str, str, str], int] = {}
    for entry in _control(base_url, "GET", "requests")["requests"]:
        if entry["method"] == "PATCH" and entry.get("json"):
            pfa_id, _, org = unquote(entry["path"].rsplit("/", 1)[1]).rpartition("#")
            key = (org, pfa_id, str(entry["json"]["PFA"].get("recordid")))
            if key in sent:
                logged[key] = logged.get(key, 0) + 1
    twice = sum(1 for count in logged.values() if count > 1)
    # Every request of the level fits in the log: then each modification's PATCH is in it.
    whole_level = sum(run["patch_requests"] + run["get_requests"] for run in runs) <= REQUEST_LOG_SIZE
    if twice or (whole_level and len(logged) != len(sent)):
        failures.append(
            f"simulator's request log: {twice} records PATCHed twice on one recordid; "
            f"{len(logged):,} of {len(sent):,} modifications' PATCHes logged"
        )

    # A sample read back from the simulator: the values written, and the mirror agrees.
    rng = random.Random(seed)
    by_org: dict[Any, list] = {}
    for modification in modifications:
        by_org.setdefault(modification.organization, []).append(modification)
    sampled = mismatched = 0
    for organization, written_here in by_org.items():
        with pems_client_for(organization, usage="write") as client:
            zone = client.settings.zone
        for modification in rng.sample(written_here, min(SAMPLE, len(written_here))):
            modification.refresh_from_db()
            row = _control(base_url, "GET", f"rows/{organization.code}/{modification.pfa_id}")["row"]
            record = parse_pfa_row(row, time_zone=zone, organization_code=organization.code)
            mirror = PfaMirror.objects.get(organization=organization, pfa_id=modification.pfa_id)
            sampled += 1
            for name, value in modification.changes.items():
                mine = delta.value_from_json(name, value)
                if getattr(record, name) != mine or getattr(mirror, name) != mine:
                    mismatched += 1
                    failures.append(
                        f"{organization.code} {modification.pfa_id} {name}: wrote {mine!r}, PEMS holds "
                        f"{getattr(record, name)!r}, the mirror {getattr(mirror, name)!r}"
                    )
            if not record.pems_record_id == mirror.pems_record_id == modification.written_record_id:
                mismatched += 1
                failures.append(
                    f"{organization.code} {modification.pfa_id}: recordid {record.pems_record_id} in PEMS, "
                    f"{mirror.pems_record_id} in the mirror, {modification.written_record_id} written"
                )
    checks = {
        "states": states,
        "saved_once": saved_once,
        "pems_saves": pems_saves,
        "patch_requests": patches,
        "log_patches_seen": len(logged),
        "log_patched_twice": twice,
        "log_holds_whole_level": whole_level,
        "sampled": sampled,
        "sample_mismatches": mismatched,
    }
    return checks, failures[:20]


def writeback_measure(
    *, base_url: str, per_org: int, levels: list[int], latency: float, register: Callable[[str], Any]
) -> dict[str, Any]:
    """Prepare the organizations, then write each level with `latency` added to every PEMS call
    (set through the simulator's control API, reset to 0 at the end)."""
    codes = list(ORGANIZATIONS[: max(levels)])
    rows = max(MIN_ROWS, 4 * per_org)
    report: dict[str, Any] = {
        "latency_ms": round(latency * 1000, 1),
        "modifications_per_organization": per_org,
        "setup": organizations_prepare(base_url=base_url, codes=codes, rows=rows, register=register),
        "levels": [],
        "failures": [],
    }
    from mirror.models import Organization

    organizations = [Organization.objects.get(code=code) for code in codes]
    _control(base_url, "POST", "config", {"latency": latency})
    try:
        for count in levels:
            level = level_run(
                base_url=base_url, organizations=organizations[:count], per_org=per_org, latency=latency, seed=count
            )
            report["levels"].append(level)
            report["failures"] += [f"{count} organizations: {failure}" for failure in level.pop("failures")]
    finally:
        _control(base_url, "POST", "config", {"latency": 0})
    single = report["levels"][0]["modifications_per_second"] if report["levels"] else 0
    for level in report["levels"]:
        level["scaling"] = round(level["modifications_per_second"] / single, 2) if single else None
    return report


def writeback_summary(report: dict[str, Any]) -> str:
    """The summary's line: per number of organizations written at once, the rate, what PEMS's
    latency alone would allow, the share of wall time in PEMS calls and a run's own time."""
    levels = report["levels"]

    def each(key: str, fmt: str) -> str:
        return "/".join("-" if level[key] is None else format(level[key], fmt) for level in levels)

    scaling = ", ".join(f"{level['scaling']:.2f}x" for level in levels[1:] if level["scaling"] is not None)
    verdict = "all written once, sample matches PEMS" if not report["failures"] else "CHECKS FAILED"
    return (
        f"write-back ({report['latency_ms']:g} ms per PEMS call, {report['modifications_per_organization']:,} "
        f"modifications per organization) with {each('organizations', 'd')} organizations at once: "
        f"{each('modifications_per_second', ',.1f')} modifications/s"
        + (f" ({scaling} one organization's rate)" if scaling else "")
        + f"; PEMS's latency alone allows {each('latency_bound_per_second', ',.0f')}/s; "
        f"wall time in PEMS calls {each('pems_share', '.0%')}; outside them "
        f"{each('outside_pems_ms_per_modification', '.1f')} ms per modification "
        f"(CPU {each('cpu_ms_per_modification', '.1f')} ms); {verdict}"
    )
