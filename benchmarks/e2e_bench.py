"""Benchmark 2: end to end, Zoho simulator over HTTP → PostgreSQL, the project against dlt.

``N`` students of the 40-field ``BTEC_Students``-like module (:mod:`benchmarks.wide`) are served by
the Zoho simulator in a child process (:mod:`benchmarks.zoho_server`), and loaded into a fresh
PostgreSQL database (dropped afterwards) three ways:

* **first load**: an empty warehouse, every record read (⌈N/200⌉ pages);
* **no change**: the same again, nothing changed in Zoho;
* **1 % changed**: 1 % of the students edited in Zoho (one field or two each) since the last run.

The project runs :func:`sync_pipelines.zoho.sync.sync_module` (fetch, canonicalise and validate,
diff, apply with the per-record log, in one transaction). The peer is dlt, fed the same pages
from the same simulator through the project's :class:`~sync_pipelines.zoho.client.ZohoClient`
(so both make the same HTTP calls), as a ``merge`` resource keyed on ``id`` into the
``postgres`` destination, with ``dlt.sources.incremental("Modified_Time")`` sending
``If-Modified-Since`` on re-runs, which is how a dlt user would write it. Each scenario runs
both sides alternately (the order flipped every round), median of the repeats.

The time of a run is split into phases by timing the functions ``sync_module`` calls; the
simulator reports the time it spent answering, so the HTTP wait is known too.
"""

import contextlib
import shutil
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from benchmarks import wide
from benchmarks.common import median
from benchmarks.zoho_server import STUDENTS_API, ZohoServer
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.zoho import sync as sync_mod
from sync_pipelines.zoho.modules import PROGRAMMES

TENANT = "bench_school"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


# --- PostgreSQL databases -----------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(server_url: str = POSTGRES_URL) -> Iterator[str]:
    """A new, empty database on the local server, dropped on exit (as the tests' fixture does)."""
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"sp_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def postgres_available(server_url: str = POSTGRES_URL) -> bool:
    try:
        engine = sa.create_engine(server_url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return True
    except Exception:
        return False


# --- phases of a project run ----------------------------------------------------------------------


@contextlib.contextmanager
def phase_timer(warehouse: Warehouse) -> Iterator[dict[str, float]]:
    """Time the steps ``sync_module`` takes, by wrapping the functions it calls (then restoring)."""
    spent: dict[str, float] = Counter()

    def wrap(fn: Callable, phase: str) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[phase] += time.perf_counter() - t0

        return timed

    module_names = {
        "_fetch": "fetch (HTTP)",
        "frame_from_records": "canonicalise",
        "canonicalise": "canonicalise",
        "diff": "diff",
        "field_changes": "diff",
    }
    store_names = {
        "cursor": "read state",
        "load_pending": "read state",
        "load_state": "read state",
        "known_ids": "read state",
        "load_rows": "read state",
        "apply": "write (one transaction)",
    }
    saved = {name: getattr(sync_mod, name) for name in module_names}
    for name, phase in module_names.items():
        setattr(sync_mod, name, wrap(saved[name], phase))
    for name, phase in store_names.items():
        setattr(warehouse, name, wrap(getattr(warehouse, name), phase))
    try:
        yield spent
    finally:
        for name, fn in saved.items():
            setattr(sync_mod, name, fn)
        for name in store_names:
            delattr(warehouse, name)


# --- the two sides --------------------------------------------------------------------------------


class ProjectSide:
    """The project's sync of the wide students module into one warehouse."""

    name = "project"

    def __init__(self, server: ZohoServer, url: str) -> None:
        self.server = server
        self.spec = wide.register()
        self.warehouse = Warehouse(url)
        # The students' Program lookup must find its programmes: load them first (12 records).
        sync_mod.sync_module(
            tenant_id=TENANT,
            spec=PROGRAMMES,
            client=server.client(),
            warehouse=self.warehouse,
            now=server.now(),
        )

    def run(self) -> dict[str, Any]:
        client = self.server.client()
        self.server.reset()
        with phase_timer(self.warehouse) as phases:
            t0 = time.perf_counter()
            report = sync_mod.sync_module(
                tenant_id=TENANT,
                spec=self.spec,
                client=client,
                warehouse=self.warehouse,
                now=self.server.now(),
            )
            wall = time.perf_counter() - t0
        log = self.server.log()
        client.close()
        counts = report.counts
        phases = dict(phases)
        phases["other"] = max(0.0, wall - sum(phases.values()))
        return {
            "wall_s": wall,
            "phases_s": {k: round(v, 3) for k, v in phases.items()},
            "server_s": round(log["server_s"], 3),
            "sync_work_s": round(wall - phases.get("fetch (HTTP)", 0.0), 3),
            "fetched": report.fetched,
            "counts": {k: v for k, v in counts.items() if v},
            "changed_fields": len(report.result.changes),
            "calls": _calls_by_endpoint(log["requests"]),
            "client_calls": client.stats.calls,
            "credits": client.stats.credits,
            "rows": self.warehouse.count(TENANT, self.spec),
            # Stored rows the diff was given: all of them on a first load, only the read ones after.
            "state_rows_read": report.extra["state_rows_read"],
        }

    def close(self) -> None:
        self.warehouse.dispose()


class DltSide:
    """dlt loading the same module from the same simulator: merge on ``id``, postgres."""

    name = "dlt"

    def __init__(self, server: ZohoServer, url: str) -> None:
        import dlt

        self.server = server
        self.spec = wide.register()
        self.dir = tempfile.mkdtemp(prefix="sp_bench_dlt_")
        # dlt insists on a password; the local server trusts loopback and ignores it.
        dlt_url = sa.make_url(url).set(drivername="postgresql")
        if not dlt_url.password:
            dlt_url = dlt_url.set(password="unused")
        psycopg2_url = dlt_url.render_as_string(hide_password=False)
        self.pipeline = dlt.pipeline(
            pipeline_name=f"zoho_{uuid.uuid4().hex[:8]}",
            pipelines_dir=self.dir,
            destination=dlt.destinations.postgres(psycopg2_url),
            dataset_name="zoho",
            progress=None,
        )
        self._engine = sa.create_engine(url)

    def _resource(self, client: Any) -> Any:
        import dlt

        fields = self.spec.api_fields

        @dlt.resource(name="btec_students", write_disposition="merge", primary_key="id")
        def students(
            modified: Any = dlt.sources.incremental("Modified_Time"),  # noqa: B008 (dlt's idiom)
        ) -> Iterator[list[dict]]:
            since = modified.last_value
            if isinstance(since, str):
                since = datetime.fromisoformat(since)
            page: list[dict] = []
            for record in client.iter_records(STUDENTS_API, fields, modified_since=since):
                page.append(record)
                if len(page) == 200:
                    yield page
                    page = []
            if page:
                yield page

        return students

    def run(self) -> dict[str, Any]:
        client = self.server.client()
        self.server.reset()
        t0 = time.perf_counter()
        info = self.pipeline.run(self._resource(client))
        wall = time.perf_counter() - t0
        log = self.server.log()
        client.close()
        loaded = 0
        with contextlib.suppress(Exception):
            trace = self.pipeline.last_trace
            loaded = sum(trace.last_normalize_info.row_counts.get(t, 0) for t in ("btec_students",))
        with self._engine.connect() as conn:
            rows = conn.execute(sa.text("select count(*) from zoho.btec_students")).scalar_one()
        return {
            "wall_s": wall,
            "server_s": round(log["server_s"], 3),
            "fetched": loaded,
            "calls": _calls_by_endpoint(log["requests"]),
            "client_calls": client.stats.calls,
            "credits": client.stats.credits,
            "rows": int(rows),
            "loads": len(info.loads_ids),
        }

    def close(self) -> None:
        self._engine.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)


def profile_local_first_load(n: int) -> str:
    """cProfile of a first load's own work on ``n`` records, without HTTP: canonicalise and
    validate, diff, apply into a fresh PostgreSQL database (the records made here, in API shape)."""
    from benchmarks.common import profile_top
    from sync_pipelines.diff import diff
    from sync_pipelines.warehouse import Cursor, RunInfo
    from sync_pipelines.zoho.canonical import canonicalise, frame_from_records

    spec = wide.register()
    programmes = [p["id"] for p in wide.programmes()]
    records = wide.students(n, programmes)
    for rec in records:
        rec["Program"] = {"name": "Programme", "id": rec["Program"]["id"]}
    with fresh_database() as url:
        store = Warehouse(url)

        def first_load() -> None:
            incoming = canonicalise(spec, frame_from_records(spec, records))
            state = store.load_state(TENANT, spec)
            result = diff(
                incoming, state, fingerprint_columns=spec.fingerprint_columns, natural_key=spec.natural_key
            )
            store.apply(spec, result, RunInfo(tenant_id=TENANT, module=spec.name, mode="full"), Cursor())

        try:
            return profile_top(first_load, limit=15)
        finally:
            store.dispose()


def _calls_by_endpoint(requests: list[tuple]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for method, path, _status, _credits in requests:
        if path.startswith("/oauth/"):
            out["token"] += 1
        elif path.endswith("/deleted"):
            out["deleted"] += 1
        elif method == "GET":
            out["read"] += 1
        else:
            out[f"{method} {path}"] += 1
    return dict(out)


# --- the scenarios --------------------------------------------------------------------------------


#: Repeats of the no-change and 1 % re-runs (at least): each takes well under a second.
STEADY_REPEATS = 7


def run(n: int, repeats: int, *, with_dlt: bool = True, profile: bool = False) -> dict[str, Any]:
    """First load, no change, 1 % changed: each side ``repeats`` times, alternating."""
    if not postgres_available():
        return {"skipped": "no PostgreSQL server at 127.0.0.1:5432"}
    sides = [ProjectSide] + ([DltSide] if with_dlt else [])
    out: dict[str, Any] = {"records": n, "fields": len(wide.WIDE_STUDENTS.fields), "repeats": repeats}
    runs: dict[str, dict[str, list[dict]]] = {"first_load": {}, "no_change": {}, "one_percent": {}}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(ZohoServer(n))
        live: dict[str, Any] = {}
        # First load: a fresh database for every run; the last one of each side is kept.
        for r in range(repeats):
            order = sides if r % 2 == 0 else sides[::-1]
            for side_cls in order:
                old = live.pop(side_cls.name, None)
                if old is not None:
                    old[0].close()
                    old[1].close()
                db = contextlib.ExitStack()
                url = db.enter_context(fresh_database())
                side = side_cls(server, url)
                runs["first_load"].setdefault(side.name, []).append(side.run())
                live[side.name] = (side, db)
                print(
                    f"  e2e first load {side.name}: {runs['first_load'][side.name][-1]['wall_s']:.2f} s",
                    flush=True,
                )
        for side, db in live.values():
            stack.callback(db.close)
            stack.callback(side.close)
        # No change: the same again. The re-runs take tens of milliseconds, where one pause of a
        # shared machine weighs: more of them (cheap) make their median steady.
        steady = max(repeats, STEADY_REPEATS)
        for r in range(steady):
            order = list(live) if r % 2 == 0 else list(live)[::-1]
            for name in order:
                runs["no_change"].setdefault(name, []).append(live[name][0].run())
        if profile:
            from benchmarks.common import profile_top

            out["profile_no_change"] = profile_top(live["project"][0].run, limit=15)
        # 1 % changed: an edit one second apart each, then an hour later both sides read it.
        for r in range(steady):
            server.advance(1)
            server.update(0.01)
            server.advance(1)
            order = list(live) if r % 2 == 0 else list(live)[::-1]
            for name in order:
                runs["one_percent"].setdefault(name, []).append(live[name][0].run())
        out["runs"] = runs
    out["median_wall_s"] = {
        scenario: {name: round(median([x["wall_s"] for x in xs]), 3) for name, xs in by_side.items()}
        for scenario, by_side in runs.items()
    }
    out["median_sync_work_s"] = {
        scenario: round(median([x["sync_work_s"] for x in by_side["project"]]), 3)
        for scenario, by_side in runs.items()
    }
    out["median_server_s"] = {
        scenario: {name: round(median([x["server_s"] for x in xs]), 3) for name, xs in by_side.items()}
        for scenario, by_side in runs.items()
    }
    if with_dlt:
        out["speedup_vs_dlt"] = {
            scenario: round(v["dlt"] / v["project"], 2) for scenario, v in out["median_wall_s"].items()
        }
        # The same, leaving out what both wait for alike: the simulator answering.
        out["speedup_vs_dlt_own_work"] = {
            scenario: round(
                (v["dlt"] - out["median_server_s"][scenario]["dlt"])
                / max(1e-9, v["project"] - out["median_server_s"][scenario]["project"]),
                2,
            )
            for scenario, v in out["median_wall_s"].items()
        }
    if profile:
        out["profile_first_load"] = {
            "records": min(n, 20_000),
            "text": profile_local_first_load(min(n, 20_000)),
        }
    return out
