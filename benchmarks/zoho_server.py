"""The Zoho simulator in a process of its own, serving the benchmark's wide students over HTTP.

Hosting 100,000 records of 40 fields in the measuring process would make every garbage
collection of the sync (or of dlt) walk the simulator's millions of objects, a cost no real
deployment has; in a child process the two sides only share the loopback socket, as they would
share Zoho. The child freezes its records out of the collector's way once loaded
(``gc.freeze``), and answers a few commands over a pipe: change records, move its clock,
report the requests it answered and the time it spent answering them.

The simulator remembers a read's filtered and sorted records between its pages while the module
does not change (``ZohoSimulator._sorted_read``), so a page costs a slice, not a sort of the whole
module; a read after records changed sorts once again. The time the simulator spends is still
measured and reported beside every run.
"""

import contextlib
import gc
import multiprocessing as mp
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sync_pipelines.sandbox.zoho_sim import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_REFRESH_TOKEN,
    ORG_TZ,
    ZohoSimulator,
    format_time,
)
from sync_pipelines.zoho.client import ZohoClient

STUDENTS_API = "BTEC_Students"


def _child(conn: Any, n_students: int, seed: int) -> None:
    from benchmarks import wide

    offset = [timedelta(0)]
    progs = wide.programmes()
    records = wide.students(n_students, [p["id"] for p in progs], seed=seed)
    sim = ZohoSimulator(
        data={"Products": progs, STUDENTS_API: records},
        refresh_limit_per_minute=None,
        max_concurrency=None,
        token_ttl=30 * 86_400,
        clock=lambda: datetime.now(ORG_TZ) + offset[0],
    )
    del records
    gc.collect()
    gc.freeze()
    busy = [0.0]
    handle = sim._handle

    def timed_handle(*args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return handle(*args)
        finally:
            busy[0] += time.perf_counter() - t0

    sim._handle = timed_handle  # type: ignore[method-assign]
    sim.start()
    ids = sorted(r["id"] for r in sim.records(STUDENTS_API))
    conn.send({"url": sim.base_url, "students": len(ids)})
    rng = random.Random(seed + 1)
    while True:
        cmd, arg = conn.recv()
        if cmd == "stop":
            sim.stop()
            conn.send(None)
            return
        if cmd == "advance":  # move the simulator's clock (arg: hours)
            offset[0] += timedelta(hours=arg)
            conn.send(offset[0].total_seconds())
        elif cmd == "update":  # change a fraction of the students, one field or two each
            count = max(1, round(len(ids) * arg))
            chosen = rng.sample(ids, count)
            now = sim.now()
            for k, rid in enumerate(chosen):
                # Edited one a second, the last one now: as a day of office work would leave them
                # (and so the next read's inclusive watermark re-reads one record, not a batch).
                fields: dict[str, Any] = {
                    "City": f"Changed {rng.randrange(10**6)}",
                    "Modified_Time": format_time(now - timedelta(seconds=count - 1 - k)),
                }
                if k % 2:
                    fields["Intake"] = "Spring 2027"
                sim.update(STUDENTS_API, rid, **fields)
            conn.send(chosen)
        elif cmd == "reset":
            sim.reset_log()
            busy[0] = 0.0
            conn.send(None)
        elif cmd == "log":
            conn.send(
                {
                    "requests": [(r.method, r.path, r.status, r.credits) for r in sim.requests],
                    "server_s": busy[0],
                }
            )
        else:
            conn.send(ValueError(f"unknown command {cmd!r}"))


class ZohoServer:
    """A handle on the child process: start, command, stop (also as a context manager)."""

    def __init__(self, n_students: int, seed: int = 2026) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child, n_students, seed), daemon=True)
        self._proc.start()
        hello = self._recv(timeout=600)
        self.url: str = hello["url"]
        self.students: int = hello["students"]
        self.offset = timedelta(0)

    def _recv(self, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while not self._conn.poll(0.2):
            if not self._proc.is_alive():
                raise RuntimeError(f"the simulator process died (exit code {self._proc.exitcode})")
            if time.monotonic() > deadline:
                self._proc.terminate()
                raise TimeoutError("the simulator process did not answer")
        return self._conn.recv()

    def _ask(self, cmd: str, arg: Any = None) -> Any:
        self._conn.send((cmd, arg))
        out = self._recv(timeout=600)
        if isinstance(out, Exception):
            raise out
        return out

    def advance(self, hours: float) -> None:
        """Move the simulator's clock forward (and this side's idea of now with it)."""
        self.offset = timedelta(seconds=self._ask("advance", hours))

    def now(self) -> datetime:
        """Now on the simulator's clock, in UTC: what a sync run passes as ``now``."""
        return datetime.now(UTC) + self.offset

    def update(self, fraction: float) -> list[str]:
        return self._ask("update", fraction)

    def reset(self) -> None:
        self._ask("reset")

    def log(self) -> dict[str, Any]:
        return self._ask("log")

    def client(self, tenant: str = "bench") -> ZohoClient:
        return ZohoClient(
            tenant_id=tenant,
            accounts_url=self.url,
            client_id=DEFAULT_CLIENT_ID,
            client_secret=DEFAULT_CLIENT_SECRET,
            refresh_token=DEFAULT_REFRESH_TOKEN,
        )

    def stop(self) -> None:
        with contextlib.suppress(EOFError, OSError, RuntimeError, TimeoutError):
            self._ask("stop")
        self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)

    def __enter__(self) -> "ZohoServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
