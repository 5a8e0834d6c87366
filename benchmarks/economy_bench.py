"""Benchmark 3: API economy, the calls and credits each scenario costs against the least possible.

The whole graph (``full_sync``: the nine Zoho modules, Moodle provisioning, grades and Moodle ids
written back) runs for the demo school (``generate_school(2026, scale)``) against both
simulators, in process, three times: the first sync, a re-run with nothing changed, and a re-run
after 1 % of the students were edited in Zoho. The simulators' request logs give what was made.

The least possible, per scenario:

* **Zoho reads**: per module, ⌈records that changed since the last run / 200⌉ pages, and at least
  one call to learn that nothing did (a 304). ``/deleted`` calls, token requests and the reads
  the Moodle step makes of single records are counted as made, beyond that minimum.
* **Zoho writes**: per module and endpoint, ⌈records written / 100⌉ calls; credits ⌈records / 10⌉.
* **Moodle**: per web-service function, ⌈form fields sent / field budget⌉ requests, where the
  budget is what one request may carry under the site's ``max_input_vars`` (1000) less the
  client's headroom (50): a lower bound on batches, whatever the packing. Functions that take one
  course a call (``gradereport_user_get_grade_items``, ``core_enrol_get_enrolled_users``) need one
  call per distinct course.

**Moodle read by change, at 400 courses** (``out["moodle_by_change"]``, :func:`by_change`). A school
generated with 400 classes (``courses``; 20 in the quick mode), an assignment in every course and
every learner graded in it, synced once; then, with the Moodle steps as they run now (*after*: by
change) and as every run used to read Moodle (*before*: ``full_read`` in every Moodle step's config,
which is what the nightly reconciliation still does): a run with nothing changed, and a run after
1 % of the students were edited in Zoho and 1 % of the assignment grades were changed in Moodle.
Its minimum for the 1 % run: the writes' ⌈form fields / budget⌉, and one gradebook read per course
holding a changed grade (Moodle gives a grade's item and feedback only course by course).

Runs here follow each other within seconds, where the schedule spaces them 15 minutes apart; the
sync re-reads on purpose whatever changed in the 5 minutes before a run started (its watermark
overlap), so the Zoho simulator's clock is set 10 minutes behind the wall clock to give the runs
the spacing they have in production. The first re-run after the first sync re-reads the records
the write-back stamped (their ``Modified_Time`` moved); a second re-run shows the steady state.
"""

import contextlib
import copy
import math
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from sync_pipelines.definitions import build_definitions
from sync_pipelines.moodle.resource import MoodleResource
from sync_pipelines.sandbox import MoodleSimulator, ZohoSimulator, generate_school
from sync_pipelines.sandbox.zoho_sim import ORG_TZ
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.client import MAX_PER_PAGE, MAX_UPSERT_BATCH, RECORDS_PER_UPSERT_CREDIT
from sync_pipelines.zoho.modules import MODULES
from sync_pipelines.zoho.resource import ZohoCRMResource

TENANT = "bench_school"
MOODLE_TOKEN = "bench-moodle-token"
CREDS = {
    "BENCH_ZOHO_ID": "bench-client",
    "BENCH_ZOHO_SECRET": "bench-secret",
    "BENCH_ZOHO_REFRESH": "bench-refresh",
}
MAX_INPUT_VARS, HEADROOM = 1000, 50
#: Dagster's console log at WARNING: the run's DEBUG events would flood the benchmark's output.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
#: Moodle functions that take a single course per call.
PER_COURSE = frozenset({"gradereport_user_get_grade_items", "core_enrol_get_enrolled_users"})


def _job(tmp: Path, zoho: ZohoSimulator, moodle: MoodleSimulator) -> dg.JobDefinition:
    tenants = tmp / "tenants.yaml"
    tenant = {
        "id": TENANT,
        "zoho": {
            "accounts_url": zoho.accounts_url,
            "client_id_env": "BENCH_ZOHO_ID",
            "client_secret_env": "BENCH_ZOHO_SECRET",
            "refresh_token_env": "BENCH_ZOHO_REFRESH",
        },
        "moodle": {"base_url": moodle.base_url, "token_env": "BENCH_MOODLE_TOKEN"},
    }
    tenants.write_text(yaml.safe_dump({"tenants": [tenant]}))
    resources = {
        "zoho": ZohoCRMResource(tenants_file=str(tenants)),
        "moodle": MoodleResource(tenants_file=str(tenants), max_input_vars=MAX_INPUT_VARS),
        "warehouse": WarehouseResource(url=f"sqlite:///{tmp / 'warehouse.db'}"),
    }
    return build_definitions(resources).resolve_job_def("full_sync")


@contextlib.contextmanager
def _world(
    school: dict[str, list[dict]], prefix: str
) -> Iterator[tuple[ZohoSimulator, MoodleSimulator, dg.DagsterInstance, dg.JobDefinition]]:
    """Both simulators serving ``school``, an ephemeral Dagster instance with the tenant's
    partition, and the whole graph's job; the bench credentials in the environment meanwhile."""
    saved_env = {k: os.environ.get(k) for k in [*CREDS, "BENCH_MOODLE_TOKEN"]}
    os.environ.update(CREDS)
    os.environ["BENCH_MOODLE_TOKEN"] = MOODLE_TOKEN
    try:
        with (
            tempfile.TemporaryDirectory(prefix=prefix) as tmpdir,
            ZohoSimulator(
                data=copy.deepcopy(school),
                clients={CREDS["BENCH_ZOHO_ID"]: (CREDS["BENCH_ZOHO_SECRET"], CREDS["BENCH_ZOHO_REFRESH"])},
                refresh_limit_per_minute=None,
                clock=lambda: datetime.now(ORG_TZ) - timedelta(minutes=10),
            ) as zoho,
            MoodleSimulator(tokens={MOODLE_TOKEN: None}) as moodle,
            dg.instance_for_test() as instance,
        ):
            job = _job(Path(tmpdir), zoho, moodle)
            instance.add_dynamic_partitions(tenant_partitions.name, [TENANT])
            yield zoho, moodle, instance, job
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _zoho_made(zoho: ZohoSimulator) -> dict[str, Any]:
    calls: Counter[str] = Counter()
    credits = 0
    reads_by_module: Counter[str] = Counter()
    written: dict[tuple[str, str], list[int]] = defaultdict(list)
    for r in zoho.requests:
        credits += r.credits
        if r.path.startswith("/oauth/"):
            calls["token"] += 1
            continue
        parts = r.path.split("/")  # '', 'crm', 'v8', module, [action]
        module = parts[3] if len(parts) > 3 else ""
        action = parts[4] if len(parts) > 4 else ""
        if r.method == "GET" and action == "deleted":
            calls["deleted"] += 1
        elif r.method == "GET" and not action:
            calls["read pages"] += 1
            reads_by_module[module] += 1
        elif r.method == "GET":
            calls["read one record"] += 1
        else:
            kind = (
                "upsert" if action == "upsert" else f"{r.method} (update)" if r.method == "PUT" else r.method
            )
            calls[kind] += 1
            n = len(r.body.get("data", [])) if isinstance(r.body, dict) else 0
            written[(module, kind)].append(n)
    return {
        "calls": dict(calls),
        "total_calls": sum(calls.values()),
        "credits": credits,
        "reads_by_module": dict(reads_by_module),
        "written": {f"{m} {k}": sum(v) for (m, k), v in written.items()},
        "write_calls": {f"{m} {k}": len(v) for (m, k), v in written.items()},
    }


def _zoho_minimum(changed: dict[str, int], made: dict[str, Any]) -> dict[str, Any]:
    reads = sum(max(1, math.ceil(n / MAX_PER_PAGE)) for n in changed.values())
    writes = sum(math.ceil(n / MAX_UPSERT_BATCH) for n in made["written"].values())
    write_credits = sum(math.ceil(n / RECORDS_PER_UPSERT_CREDIT) for n in made["written"].values())
    return {"read pages": reads, "writes": writes, "calls": reads + writes, "credits": reads + write_credits}


def _moodle_made(moodle: MoodleSimulator) -> dict[str, Any]:
    calls: Counter[str] = Counter()
    fields: Counter[str] = Counter()
    courses: dict[str, set] = defaultdict(set)
    for r in moodle.requests:
        name = r.function or "?"
        calls[name] += 1
        fields[name] += r.field_count
        if name in PER_COURSE and isinstance(r.params, dict):
            courses[name].add(str(r.params.get("courseid")))
    budget = MAX_INPUT_VARS - HEADROOM
    minimum = {
        name: len(courses[name]) if name in PER_COURSE else max(1, math.ceil(fields[name] / budget))
        for name in calls
    }
    return {
        "calls": dict(calls),
        "total_calls": sum(calls.values()),
        "fields": dict(fields),
        "minimum": minimum,
        "total_minimum": sum(minimum.values()),
    }


#: Writes: what the minimum of a by-change run counts (reads beyond the gradebooks are overhead).
_WRITES = ("_create_", "_update_", "_enrol_users", "_unenrol_", "_save_")
#: The Moodle steps' names (ops), for the "before" run config.
_MOODLE_STEPS = (
    "moodle__users",
    "moodle__categories",
    "moodle__courses",
    "moodle__enrolments",
    "moodle__grades",
)


def _by_change_made(moodle: MoodleSimulator, changed_courses: int) -> dict[str, Any]:
    calls: Counter[str] = Counter()
    fields: Counter[str] = Counter()
    for r in moodle.requests:
        calls[r.function or "?"] += 1
        fields[r.function or "?"] += r.field_count
    budget = MAX_INPUT_VARS - HEADROOM
    writes = sum(max(1, math.ceil(fields[f] / budget)) for f in calls if any(w in f for w in _WRITES))
    minimum = writes + changed_courses
    return {"calls": dict(calls), "total_calls": sum(calls.values()), "minimum": minimum}


def by_change(courses: int = 400, changed_fraction: float = 0.01) -> dict[str, Any]:
    """Moodle calls of a no-change and a 1 % run at ``courses`` courses, before and after (module
    docstring)."""
    school = generate_school(2026, scale=courses / 120)
    out: dict[str, Any] = {"courses": len(school["BTEC_Classes"]), "after": {}, "before": {}}
    with _world(school, "sp_bench_bychange_") as (zoho, moodle, instance, job):
        full = {"ops": {s: {"config": {"full_read": True}} for s in _MOODLE_STEPS}}

        def execute(config: dict | None = None) -> bool:
            moodle.reset_log()
            result = job.execute_in_process(
                run_config={**QUIET, **(config or {})},
                instance=instance,
                partition_key=TENANT,
                raise_on_error=False,
            )
            return result.success

        execute()  # the first sync
        items: dict[int, int] = {}
        graded: list[tuple[int, int]] = []
        for course in sorted({c["id"] for c in moodle.courses() if c.get("idnumber")}):
            items[course] = moodle.add_grade_item(course, "Unit assignment", grademax=100.0)
            for n, e in enumerate(e for e in moodle.enrolments(course) if e["roleid"] == 5):
                moodle.set_grade(course, e["userid"], items[course], float(40 + (7 * n) % 60))
                graded.append((course, e["userid"]))
        execute(full)  # every grade read once
        out["graded"] = len(graded)
        step = max(1, round(1 / changed_fraction))
        for label, config in (("after", None), ("before", full)):
            execute(config)  # steady state
            ok = execute(config)
            out[label]["nothing changed"] = {"success": ok, **_by_change_made(moodle, 0)}
            students = [r for r in zoho.records("BTEC_Students") if r.get("Student_Moodle_ID")]
            for k, r in enumerate(students[::step]):
                zoho.update("BTEC_Students", r["id"], Last_Name=f"{label}-{k}")
            regraded = graded[len(label) % step :: step]
            for k, (course, user) in enumerate(regraded):
                moodle.set_grade(course, user, items[course], float(35 + k % 60))
            ok = execute(config)
            out[label]["1 % edited"] = {
                "success": ok,
                "students_edited": len(students[::step]),
                "grades_changed": len(regraded),
                **_by_change_made(moodle, len({c for c, _ in regraded})),
            }
    return out


def run(scale: float = 1.0, changed_fraction: float = 0.01, courses: int | None = None) -> dict[str, Any]:
    """The three scenarios on the demo school at ``scale``, then :func:`by_change` at ``courses``
    courses (400 at scale 1, proportionally fewer, at least 20, below)."""
    out = _scenarios(scale, changed_fraction)
    out["moodle_by_change"] = by_change(courses or max(20, round(400 * scale)), changed_fraction)
    return out


def _scenarios(scale: float, changed_fraction: float) -> dict[str, Any]:
    """The three scenarios of the module docstring on the demo school at ``scale``."""
    school = generate_school(2026, scale=scale)
    sizes = {m.api_name: len(school.get(m.api_name, [])) for m in MODULES}
    out: dict[str, Any] = {"scale": scale, "records": sizes, "scenarios": {}}
    with _world(school, "sp_bench_econ_") as (zoho, moodle, instance, job):

        def scenario(name: str, changed: dict[str, int]) -> None:
            zoho.reset_log()
            moodle.reset_log()
            result = job.execute_in_process(
                run_config=QUIET, instance=instance, partition_key=TENANT, raise_on_error=False
            )
            made = _zoho_made(zoho)
            out["scenarios"][name] = {
                "success": result.success,
                "zoho": made,
                "zoho_minimum": _zoho_minimum(changed, made),
                "moodle": _moodle_made(moodle),
            }

        scenario("first sync", dict(sizes))
        scenario("nothing changed (right after the first sync)", dict.fromkeys(sizes, 0))
        scenario("nothing changed (steady state)", dict.fromkeys(sizes, 0))
        students = [r for r in zoho.records("BTEC_Students") if r.get("Student_Moodle_ID")]
        step = max(1, round(1 / changed_fraction))
        edited = [r["id"] for r in students[::step]]
        for k, rid in enumerate(edited):
            zoho.update("BTEC_Students", rid, Last_Name=f"Edited-{k}")
        scenario("1 % of students edited", {**dict.fromkeys(sizes, 0), "BTEC_Students": len(edited)})
        out["edited_students"] = len(edited)
    return out
