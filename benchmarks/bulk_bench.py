"""Benchmark: a full read of a big module by pages against Bulk Read, on the Zoho simulator.

``N`` students (the 40-field records of :mod:`benchmarks.wide`, read with the project's 26-field
``students`` module) are served by the Zoho simulator over loopback HTTP. Each size is read in full
two ways through :class:`~sync_pipelines.zoho.client.ZohoClient`, the records only counted (not
kept) so that both sides pay for fetching and parsing alone:

* **pages**: :func:`sync_pipelines.zoho.bulk.paged_full`, 200 records a call (``page`` then
  ``page_token``). Zoho's ``page_token`` reaches 100,000 records (``PAGINATION_LIMIT_EXCEEDED``
  past that, which the simulator answers as Zoho does): above that size the paged read fails, and
  the figures say how far it got;
* **bulk**: :func:`sync_pipelines.zoho.bulk.read_full` above its threshold: one count, then a job
  per 200,000 records (create, polls, download of the ZIP, CSV parsed into the JSON shape).

Calls and credits are the client's own counters (the simulator charges the same). Wall time is
this machine's: the simulator finishes a job on its second poll and the client polls without
waiting, so **the time Zoho itself takes to run a job is not in the figures** (Zoho documents none;
a real job takes from seconds to minutes), nor are network latency and bandwidth. The simulator
runs in this process, on a thread, so its time to build pages and ZIPs is included on both sides.
"""

import gc
import time
from collections.abc import Sequence
from typing import Any

from benchmarks import wide
from benchmarks.common import fmt_s, machine, median
from sync_pipelines.sandbox.zoho_sim import ZohoSimulator
from sync_pipelines.zoho.bulk import paged_full, read_full
from sync_pipelines.zoho.client import ZohoClient, ZohoError
from sync_pipelines.zoho.modules import STUDENTS

CLIENT = ("bench-client", "bench-secret", "bench-refresh")


def _client(sim: ZohoSimulator, threshold: int | None) -> ZohoClient:
    return ZohoClient(
        tenant_id="bench_school",
        accounts_url=sim.accounts_url,
        client_id=CLIENT[0],
        client_secret=CLIENT[1],
        refresh_token=CLIENT[2],
        sleep=lambda _s: None,
        bulk_read_threshold=threshold,
        bulk_poll_seconds=0.0,
        timeout=(5.0, 600.0),
    )


def _read(sim: ZohoSimulator, method: str) -> dict[str, Any]:
    client = _client(sim, threshold=0 if method == "bulk" else None)
    records = paged_full(client, STUDENTS) if method == "pages" else read_full(client, STUDENTS)
    read, error = 0, None
    t0 = time.perf_counter()
    try:
        for _ in records:
            read += 1
    except ZohoError as exc:
        error = f"{exc.code} after {read:,} records"
    seconds = time.perf_counter() - t0
    stats = client.stats
    return {
        "records": read,
        "calls": stats.calls - stats.by_endpoint.get("token", 0),
        "credits": stats.credits,
        "seconds": seconds,
        "by_endpoint": {k: v for k, v in sorted(stats.by_endpoint.items()) if k != "token"},
        "error": error,
    }


def run(sizes: Sequence[int] = (100_000, 1_000_000), repeats: int = 1) -> dict:
    """Read ``sizes`` students in full by pages and by Bulk Read, ``repeats`` times each.

    Returns:
        ``{"machine", "sizes": [{"n", "pages": {...}, "bulk": {...}}]}``, each side with the
        records read, calls (token requests aside), credits, the median wall time, every time, the
        calls per endpoint, and the error that stopped it (``None`` when it read everything).
    """
    out: dict[str, Any] = {"machine": machine(), "repeats": repeats, "sizes": []}
    for n in sizes:
        progs = wide.programmes()
        sim = ZohoSimulator(
            data={
                "Products": progs,
                STUDENTS.api_name: wide.students(n, [p["id"] for p in progs], seed=2026),
            },
            clients={CLIENT[0]: (CLIENT[1], CLIENT[2])},
            refresh_limit_per_minute=None,
            max_concurrency=None,
            token_ttl=30 * 86_400,
        )
        gc.collect()
        gc.freeze()  # the simulator's records out of the collector's way, as the e2e bench does
        sim.start()
        try:
            row: dict[str, Any] = {"n": n}
            for method in ("pages", "bulk"):
                runs = [_read(sim, method) for _ in range(max(1, repeats))]
                best = dict(runs[0])
                best["times"] = [r["seconds"] for r in runs]
                best["seconds"] = median(best["times"])
                row[method] = best
            out["sizes"].append(row)
        finally:
            sim.stop()
            del sim
            gc.unfreeze()
            gc.collect()
    return out


def render(results: dict) -> str:
    """The figures as a markdown section."""
    lines = [
        "## Full read of a big module: pages against Bulk Read",
        "",
        "A full read of `N` students (`BTEC_Students`, 26 fields asked) from the Zoho simulator over "
        "loopback HTTP, records counted, not kept. Calls leave token requests out. Zoho's own time to "
        "run a Bulk Read job is **not** included (the simulator completes a job on its second poll and "
        "the client polls without waiting); a paged read cannot pass 100,000 records "
        "(`page_token`'s limit).",
        "",
        "| records | read | records read | calls | credits | wall time | note |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for row in results["sizes"]:
        for method in ("pages", "bulk"):
            r = row[method]
            note = r["error"] or ", ".join(f"{k} {v}" for k, v in r["by_endpoint"].items())
            lines.append(
                f"| {row['n']:,} | {method} | {r['records']:,} | {r['calls']:,} | {r['credits']:,} "
                f"| {fmt_s(r['seconds'])} | {note} |"
            )
    m = results.get("machine", {})
    lines += ["", f"Measured {m.get('date', '')} on {m.get('cores', '?')} cores, {m.get('cpu', '')}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    chosen = tuple(int(a) for a in sys.argv[1:]) or (100_000, 1_000_000)
    print(render(run(chosen)))
