"""Tenant isolation: two schools synced side by side into one warehouse never cross over.

The two schools' Zoho orgs hold the *same record ids* (one school is a copy of the other with its
own e-mails, names and class short names, and a few enrolments fewer), and the second school's
Moodle has accounts made by hand, so its Moodle ids are not the first's. Their syncs run at the
same time, through the project's ``full_sync`` job, from one tenants file, into one warehouse
(SQLite and PostgreSQL). Each school must end exactly where it ends when synced alone: every
warehouse row, the pipeline's maps, its Moodle, its Zoho (write-backs included). Webhook deliveries
land in their own tenant's drop folder and run only their own tenant's sync. A school whose
credentials are wrong fails its own run with a clear error and stops nobody else's.
"""

import contextlib
import copy
import dataclasses
import json
import multiprocessing
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests

from sync_pipelines.moodle.entities import ENTITIES
from sync_pipelines.sensors import evaluate, instance_lookup
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.webhooks.app import create_app
from sync_pipelines.webhooks.signing import sign
from sync_pipelines.zoho.modules import MODULES, module
from sync_pipelines_tests.event_world import running
from sync_pipelines_tests.reliability.test_faults import (
    EVERYTHING,
    RunOutcome,
    School,
    Snapshot,
    StepError,
    compare,
    dangling_writebacks,
    definitions,
    duplicates,
    fast_moodle_retries,
    mark_work,
    run_sync,
    school_data,
    school_day,
    snapshot,
    start_school,
    write_results,
    write_tenants_file,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCALE = 0.1
A, B, C = "school_a", "school_b", "school_c"
#: Each school's academic e-mail domain.
DOMAINS = {A: "school.example", B: "school-b.example", C: "school-c.example"}
#: Accounts made by hand in each school's Moodle before any sync: its Moodle ids start elsewhere.
HAND_MADE = {A: 0, B: 25, C: 40}


def variant(data: dict[str, list[dict]], tenant_id: str) -> dict[str, list[dict]]:
    """Another school with the same Zoho record ids: its own e-mails, names and short names.

    The last five enrolments are left out, so the two schools do not even hold the same records.
    """
    out = copy.deepcopy(data)
    tag = tenant_id[-1].upper()
    for records in out.values():
        for record in records:
            for name in ("Academic_Email", "Email"):
                if isinstance(record.get(name), str):
                    record[name] = record[name].replace("@school.example", f"@{DOMAINS[tenant_id]}")
    for record in out["BTEC_Students"]:
        if isinstance(record.get("Last_Name"), str):
            record["Last_Name"] = f"{record['Last_Name']} {tag}"
    for record in out["BTEC_Teachers"]:
        if isinstance(record.get("Name"), str):
            record["Name"] = f"{record['Name']} {tag}"
    for record in out["BTEC_Classes"]:
        if isinstance(record.get("Class_Short_Name"), str):
            record["Class_Short_Name"] = f"{tag}-{record['Class_Short_Name']}"
    out["BTEC_Enrollments"] = out["BTEC_Enrollments"][:-5]
    return out


def data_of(tenant_id: str) -> dict[str, list[dict]]:
    """The Zoho records of one of the test's schools: the demo school, or a variant of it."""
    base = school_data(SCALE)
    return copy.deepcopy(base) if tenant_id == A else variant(base, tenant_id)


@dataclass
class Shared:
    """Schools synced from one tenants file into one warehouse, on one Dagster instance."""

    schools: dict[str, School]
    store: Warehouse
    job: dg.JobDefinition
    instance: dg.DagsterInstance
    tenants_file: Path
    url: str

    def run_side_by_side(self, tenant_ids: Sequence[str]) -> dict[str, RunOutcome]:
        """One run per tenant, all at the same time, each in a process of its own (as Dagster's run
        launcher starts them: ``execute_in_process`` is not safe in threads of one process)."""
        results = _WORKERS.Queue()
        procs = {}
        for tenant_id in tenant_ids:
            cfg = {"tenants_file": str(self.tenants_file), "warehouse_url": self.url, "tenant": tenant_id}
            # Forked from a server process that imported Dagster and the definitions once
            # (multiprocessing's forkserver); the environment (the secrets the test set) goes along.
            procs[tenant_id] = _WORKERS.Process(
                target=_run_in_a_process, args=(cfg, dict(os.environ), results)
            )
            procs[tenant_id].start()
        got: dict[str, dict] = {}
        for _ in procs:
            tenant_id, result = results.get(timeout=600)
            got[tenant_id] = result
        for tenant_id, proc in procs.items():
            proc.join(timeout=60)
            assert proc.exitcode == 0, f"the run of {tenant_id} crashed: {got.get(tenant_id)}"
        outcomes = {}
        for tenant_id, result in got.items():
            assert "crashed" not in result, f"the run of {tenant_id} crashed:\n{result['crashed']}"
            outcomes[tenant_id] = RunOutcome(
                attempts=result["attempts"],
                success=result["success"],
                errors=[[StepError(**e) for e in attempt] for attempt in result["errors"]],
                run_ids=result["run_ids"],
            )
        return outcomes


def _run_in_a_process(cfg: dict, env: dict[str, str], results: Any) -> None:
    """One sync run of one tenant in a process of its own: the test's resources, its own ephemeral
    instance; ``(tenant, outcome)`` put on ``results``."""
    os.environ.clear()
    os.environ.update(env)
    try:
        fast_moodle_retries(pytest.MonkeyPatch())
        job = definitions(Path(cfg["tenants_file"]), cfg["warehouse_url"]).resolve_job_def("full_sync")
        with dg.DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions(tenant_partitions.name, [cfg["tenant"]])
            outcome = run_sync(job, instance, cfg["tenant"])
        errors = [[dataclasses.asdict(e) for e in attempt] for attempt in outcome.errors]
        result = {
            "attempts": outcome.attempts,
            "success": outcome.success,
            "errors": errors,
            "run_ids": outcome.run_ids,
        }
    except BaseException:
        result = {"crashed": traceback.format_exc()[-3000:]}
    results.put((cfg["tenant"], result))


_WORKERS = multiprocessing.get_context("forkserver")
_WORKERS.set_forkserver_preload(["sync_pipelines_tests.reliability.test_isolation"])


@contextlib.contextmanager
def shared_world(
    tenant_ids: Sequence[str], warehouse_url: str, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Shared]:
    """Start the schools ``tenant_ids``, one tenants file naming them all, one warehouse."""
    schools: dict[str, School] = {}
    store = Warehouse(warehouse_url)
    try:
        for t in tenant_ids:
            schools[t] = start_school(
                t, data_of(t), monkeypatch, hand_made_moodle_users=HAND_MADE[t], env_prefix=t.upper()
            )
        tenants = write_tenants_file(folder / "tenants.yaml", list(schools.values()))
        job = definitions(tenants, warehouse_url).resolve_job_def("full_sync")
        # In-memory run and event storage: nothing here reads the instance from another process.
        with dg.DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions(tenant_partitions.name, list(tenant_ids))
            yield Shared(schools, store, job, instance, tenants, warehouse_url)
    finally:
        store.dispose()
        for school in schools.values():
            school.stop()


# --- the single-tenant references ------------------------------------------------------------------


@dataclass
class Alone:
    """Where one school is when synced alone: after its first sync, and after the next one.

    Attributes:
        first: everything after the first sync.
        second: everything after the school day (edits and marking) and the next sync, if asked.
    """

    first: Snapshot
    second: Snapshot | None


def sync_alone(
    tenant_id: str, folder: Path, monkeypatch: pytest.MonkeyPatch, *, school_day_too: bool
) -> Alone:
    """Sync one school alone (its own tenants file and SQLite warehouse): run, [school day, run]."""
    with shared_world([tenant_id], f"sqlite:///{folder / 'alone.db'}", folder, monkeypatch) as world:
        school = world.schools[tenant_id]
        first = run_sync(world.job, world.instance, tenant_id)
        assert first.success, first.errors
        result = Alone(snapshot(school, world.store), None)
        if school_day_too:
            school_day(school.zoho, email_domain=DOMAINS[tenant_id])
            assert mark_work(school) > 0
            second = run_sync(world.job, world.instance, tenant_id)
            assert second.success, second.errors
            result.second = snapshot(school, world.store)
        return result


@pytest.fixture(scope="module")
def module_env() -> Iterator[pytest.MonkeyPatch]:
    """The module's environment: the schools' secrets, fast Moodle retries."""
    patch = pytest.MonkeyPatch()
    fast_moodle_retries(patch)
    yield patch
    patch.undo()


@pytest.fixture(scope="module")
def alone(module_env: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Alone]:
    """Each school synced alone, once for the module: ``alone(tenant_id, school_day_too=...)``."""
    cache: dict[tuple[str, bool], Alone] = {}

    def get(tenant_id: str, *, school_day_too: bool = True) -> Alone:
        if (tenant_id, True) in cache:
            return cache[(tenant_id, True)]
        if (tenant_id, school_day_too) not in cache:
            folder = tmp_path_factory.mktemp(f"alone-{tenant_id}")
            cache[(tenant_id, school_day_too)] = sync_alone(
                tenant_id, folder, module_env, school_day_too=school_day_too
            )
        return cache[(tenant_id, school_day_too)]

    return get


# --- cross-over checks ----------------------------------------------------------------------------------


def crossovers(world: Shared) -> list[str]:
    """Anything of one school found in another's Moodle, Zoho or warehouse rows, or a refused call."""
    found = []
    for tenant_id, school in world.schools.items():
        foreign = tuple(f"@{d}" for t, d in DOMAINS.items() if t != tenant_id and t in world.schools)
        for user in school.moodle.users():
            if str(user.get("email") or "").lower().endswith(foreign):
                found.append(
                    f"{tenant_id} Moodle user {user['id']} has another school's e-mail {user['email']}"
                )
        for record in school.zoho.records("BTEC_Students"):
            if str(record.get("Academic_Email") or "").lower().endswith(foreign):
                found.append(f"{tenant_id} Zoho student {record['id']} has another school's e-mail")
        students = world.store.read_table(tenant_id, module("students"), include_deleted=True)
        for row in students.itertuples():
            if str(row.academic_email or "").lower().endswith(foreign):
                found.append(f"{tenant_id} warehouse student {row.zoho_id} holds {row.academic_email}")
        found += [f"{tenant_id} Zoho write-back: {bad}" for bad in dangling_writebacks(school)]
        refused = [r for r in school.zoho.requests if r.status == 401]
        refused_moodle = [
            r for r in school.moodle.requests if r.errorcode in ("invalidtoken", "accessexception")
        ]
        if refused or refused_moodle:
            found.append(f"{tenant_id}: {len(refused)} Zoho and {len(refused_moodle)} Moodle calls refused")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def receiver(tenants_file: Path, drop: Path) -> Iterator[str]:
    """The webhook receiver served on loopback; yields its base URL."""
    with running(create_app(tenants_file=tenants_file, drop_root=drop)) as base:
        yield base


def grading_event(course: int, student: int, item: int) -> bytes:
    """A Moodle ``user_graded`` event as the plugin posts it."""
    event = {
        "eventname": "\\core\\event\\user_graded",
        "component": "core",
        "action": "graded",
        "target": "user",
        "objecttable": "grade_grades",
        "objectid": "9001",
        "crud": "u",
        "edulevel": 0,
        "contextid": 55,
        "contextlevel": 50,
        "contextinstanceid": str(course),
        "userid": "2",
        "courseid": str(course),
        "relateduserid": str(student),
        "anonymous": 0,
        "other": {"itemid": str(item), "overridden": False, "finalgrade": "60.00000"},
        "timecreated": int(time.time()),
        "grade_item": {
            "id": item,
            "itemtype": "mod",
            "itemmodule": "assign",
            "grademax": "80.00000",
            "is_course_total": False,
        },
    }
    return json.dumps(event).encode()


def drop_files(drop: Path) -> list[str]:
    """Every event file under the drop root, relative to it."""
    return sorted(str(p.relative_to(drop)) for p in drop.rglob("*.json"))


def requests_seen(schools: dict[str, School]) -> dict[str, int]:
    """API requests each school's simulators have answered since their logs were reset."""
    return {t: len(s.zoho.requests) + len(s.moodle.requests) for t, s in schools.items()}


def reset_logs(schools: dict[str, School]) -> None:
    """Forget every simulator's request log."""
    for school in schools.values():
        school.zoho.reset_log()
        school.moodle.reset_log()


def check_drop_files_and_event_runs(world: Shared, drop: Path) -> dict[str, Any]:
    """Deliveries for each school land in its own folder and run only its own sync.

    ``school_a`` renames a student in Zoho and Zoho calls the webhook; a teacher of ``school_b``
    grades in Moodle and the plugin posts the event. The same student id exists in both schools.
    Each delivery is also tried against the other school's URL with the sender's own secret.
    """
    a, b = world.schools[A], world.schools[B]
    student = sorted(a.zoho.records("BTEC_Students"), key=lambda r: int(r["id"]))[5]["id"]
    assert b.zoho.record("BTEC_Students", student) is not None  # the same id in both schools
    b_before = world.store.load_rows(B, module("students"), [student]).to_dict("records")
    a.zoho.update("BTEC_Students", student, Last_Name="Webhook-Renamed")

    course = min(c["id"] for c in b.moodle.courses() if c.get("idnumber"))
    pupil = min(e["userid"] for e in b.moodle.enrolments(course) if e["roleid"] == 5)
    item = b.moodle.add_grade_item(course, "Assignment 2", grademax=80.0)
    b.moodle.set_grade(course, pupil, item, 60.0)  # 75 % → Distinction
    b.grade_items[item] = (
        next(c["idnumber"] for c in b.moodle.courses() if c["id"] == course),
        "Assignment 2",
    )

    zoho_body = json.dumps(
        {"module": "BTEC_Students", "event_type": "updated", "record_id": student, "timestamp": "1"}
    ).encode()
    moodle_body = grading_event(course, pupil, item)
    now = int(time.time())
    with receiver(world.tenants_file, drop) as base, requests.Session() as http:
        zoho_headers = {"Authorization": f"Bearer {a.webhook_secret}", "content-type": "application/json"}
        # a's secret on b's URL, b's signature on a's URL: refused, nothing written
        crossed = [
            http.post(f"{base}/v1/webhooks/zoho/{B}", data=zoho_body, headers=zoho_headers).status_code,
            http.post(
                f"{base}/v1/webhooks/moodle/{A}",
                data=moodle_body,
                headers={**sign(b.webhook_secret, moodle_body, now), "content-type": "application/json"},
            ).status_code,
        ]
        assert crossed == [401, 401]
        assert drop_files(drop) == []
        accepted = [
            http.post(f"{base}/v1/webhooks/zoho/{A}", data=zoho_body, headers=zoho_headers),
            http.post(
                f"{base}/v1/webhooks/moodle/{B}",
                data=moodle_body,
                headers={**sign(b.webhook_secret, moodle_body, now), "content-type": "application/json"},
            ),
        ]
        assert [r.status_code for r in accepted] == [202, 202], [r.text for r in accepted]
    files = drop_files(drop)
    assert len(files) == 2
    assert [f for f in files if f.startswith(f"{A}/zoho/")] and [
        f for f in files if f.startswith(f"{B}/moodle/")
    ]

    ran: dict[str, dict[str, int]] = {}
    for source, tenant_id in (("zoho", A), ("moodle", B)):
        t = evaluate(source, drop, None, set(world.schools), instance_lookup(world.instance))
        run_requests, tenants_with_files = t.requests, t.tenants
        assert tenants_with_files == [tenant_id]
        assert [r.partition_key for r in run_requests] == [tenant_id]
        reset_logs(world.schools)
        (request,) = run_requests
        result = world.job.execute_in_process(
            instance=world.instance,
            partition_key=request.partition_key,
            run_config=request.run_config,
            asset_selection=request.asset_selection,
            tags=request.tags,
            raise_on_error=False,
        )
        assert result.success
        ran[f"{source}_event_for_{tenant_id}"] = requests_seen(world.schools)
        others = {t: n for t, n in requests_seen(world.schools).items() if t != tenant_id}
        assert others == dict.fromkeys(others, 0), (
            f"the {tenant_id} event run called another school: {others}"
        )

    a_row = world.store.load_rows(A, module("students"), [student]).iloc[0]
    assert a_row["last_name"] == "Webhook-Renamed"
    assert world.store.load_rows(B, module("students"), [student]).to_dict("records") == b_before
    a_user = next(u for u in a.moodle.users() if u.get("idnumber") == student)
    b_user = next(u for u in b.moodle.users() if u.get("idnumber") == student)
    assert (a_user["lastname"], b_user["lastname"]) == ("Webhook-Renamed", b_before[0]["last_name"])
    key = f"{pupil}_{item}"
    assert [
        r["Grade"] for r in b.zoho.records("BTEC_Grades") if r.get("Moodle_Grade_Composite_Key") == key
    ] == ["D"]
    assert not [r for r in a.zoho.records("BTEC_Grades") if r.get("Moodle_Grade_Composite_Key") == key]
    return {
        "drop_files": len(files),
        "crossed_deliveries_refused": len(crossed),
        "requests_per_event_run": ran,
    }


# --- the tests -------------------------------------------------------------------------------------------


def test_two_schools_with_the_same_zoho_ids_synced_side_by_side_never_cross_over(
    alone: Callable[..., Alone],
    module_env: pytest.MonkeyPatch,
    warehouse_url: str,
    tmp_path: Path,
):
    references = {t: alone(t) for t in (A, B)}
    started = time.perf_counter()
    with shared_world([A, B], warehouse_url, tmp_path, module_env) as world:
        first = world.run_side_by_side([A, B])
        assert all(o.success for o in first.values()), {t: o.errors for t, o in first.items()}
        for tenant_id, school in world.schools.items():
            got = snapshot(school, world.store, parts=EVERYTHING)
            diff = compare(references[tenant_id].first, got)
            assert diff.identical, f"{tenant_id}: " + diff.describe(references[tenant_id].first, got)
        for tenant_id, school in world.schools.items():
            school_day(school.zoho, email_domain=DOMAINS[tenant_id])
            mark_work(school)
        second = world.run_side_by_side([A, B])
        assert all(o.success for o in second.values()), {t: o.errors for t, o in second.items()}
        compared = 0
        for tenant_id, school in world.schools.items():
            reference = references[tenant_id].second
            assert reference is not None
            got = snapshot(school, world.store, parts=EVERYTHING)
            diff = compare(reference, got)
            assert diff.identical, f"{tenant_id}: " + diff.describe(reference, got)
            compared += diff.compared
        assert crossovers(world) == []
        dups = {
            t: {k: v for k, v in duplicates(s, world.store).items() if v} for t, s in world.schools.items()
        }
        assert dups == {A: {}, B: {}}
        rows = {t: sum(world.store.count(t, spec) for spec in MODULES) for t in world.schools}
        module_env.setenv("SYNC_DROP_DIR", str(tmp_path / "drop"))  # where the runs read the events
        events = check_drop_files_and_event_runs(world, tmp_path / "drop")
        assert crossovers(world) == []
    backend = warehouse_url.split(":", 1)[0].split("+", 1)[0]
    write_results(
        "isolation",
        {
            f"side_by_side_{backend}": {
                "tenants": 2,
                "overlapping_zoho_ids": True,
                "runs_side_by_side": 4,
                "warehouse_rows": rows,
                "records_compared": compared,
                "crossovers": 0,
                "lost": 0,
                "duplicates": 0,
                **events,
                "wall_seconds": round(time.perf_counter() - started, 1),
            }
        },
    )


def _errors_of(outcome: RunOutcome) -> list[StepError]:
    return [e for errors in outcome.errors for e in errors]


def test_one_schools_wrong_credentials_fail_its_own_run_clearly_and_stop_no_one_else(
    alone: Callable[..., Alone],
    module_env: pytest.MonkeyPatch,
    monkeypatch: pytest.MonkeyPatch,
    warehouse_url: str,
    tmp_path: Path,
):
    """``school_b`` has a wrong Zoho client secret, ``school_c`` a wrong Moodle token; all three
    schools (the same Zoho ids in each) run at the same time. Then the secrets are put right."""
    references = {t: alone(t, school_day_too=False) for t in (A, B, C)}
    started = time.perf_counter()
    with shared_world([A, B, C], warehouse_url, tmp_path, module_env) as world:
        b, c = world.schools[B], world.schools[C]
        monkeypatch.setenv(f"{b.env_prefix}_ZOHO_SECRET", "not-the-secret-value")
        monkeypatch.setenv(f"{c.env_prefix}_MOODLE", "not-the-moodle-token")
        outcomes = world.run_side_by_side([A, B, C])

        assert outcomes[A].success, outcomes[A].errors
        got = snapshot(world.schools[A], world.store)
        diff = compare(references[A].first, got)
        assert diff.identical, diff.describe(references[A].first, got)

        assert not outcomes[B].success and not outcomes[C].success
        b_errors, c_errors = _errors_of(outcomes[B]), _errors_of(outcomes[C])
        # b: every Zoho module that waits for no other fails (the rest, and Moodle, never start)
        assert {e.step for e in b_errors} == {f"zoho__{spec.name}" for spec in MODULES if not spec.upstream}
        # c: the Moodle entities that wait for no other Moodle entity fail (the rest never start)
        assert {e.step for e in c_errors} == {
            spec.asset.replace("/", "__") for spec in ENTITIES if not spec.after
        }
        for error in b_errors:
            assert error.cls_name == "Failure"
            assert f"tenant {B!r}" in error.message and "invalid_client" in error.message, error.message
        for error in c_errors:
            assert error.cls_name == "Failure"
            assert f"tenant {C!r}" in error.message and "invalidtoken" in error.message, error.message
        secrets = {"not-the-secret-value", "not-the-moodle-token", b.client_secret, c.moodle_token}
        secrets |= {s.client_secret for s in world.schools.values()}
        assert not [e for e in b_errors + c_errors if any(s in e.message for s in secrets)]

        # Nothing of the failed runs reached anywhere: no rows for b, no Moodle write, no Zoho write.
        assert sum(world.store.count(B, spec) for spec in MODULES) == 0
        assert [u for u in b.moodle.users() if u.get("idnumber")] == []
        assert [u for u in c.moodle.users() if u.get("idnumber")] == []
        for school in (b, c):
            writes = [r for r in school.zoho.requests if r.method in ("POST", "PUT") and "/crm/" in r.path]
            assert writes == []
        assert sum(world.store.count(C, spec) for spec in MODULES) > 0  # c's Zoho half ran

        # The secrets put right, the next runs of b and c converge to where they are synced alone
        # (and, from here on, no call of any school is refused).
        reset_logs(world.schools)
        monkeypatch.setenv(f"{b.env_prefix}_ZOHO_SECRET", b.client_secret)
        monkeypatch.setenv(f"{c.env_prefix}_MOODLE", c.moodle_token)
        again = world.run_side_by_side([B, C])
        assert all(o.success for o in again.values()), {t: o.errors for t, o in again.items()}
        for tenant_id in (B, C):
            got = snapshot(world.schools[tenant_id], world.store)
            diff = compare(references[tenant_id].first, got)
            assert diff.identical, f"{tenant_id}: " + diff.describe(references[tenant_id].first, got)
        got = snapshot(world.schools[A], world.store)
        assert compare(references[A].first, got).identical  # a untouched by b's and c's runs
        assert crossovers(world) == []
    backend = warehouse_url.split(":", 1)[0].split("+", 1)[0]
    write_results(
        "isolation",
        {
            f"bad_credentials_{backend}": {
                "tenants": 3,
                "runs_failed_cleanly": 2,
                "runs_succeeded_beside_them": 1,
                "failed_steps_with_clear_errors": len(b_errors) + len(c_errors),
                "secrets_in_errors": 0,
                "writes_by_failed_runs": 0,
                "lost": 0,
                "duplicates": 0,
                "wall_seconds": round(time.perf_counter() - started, 1),
            }
        },
    )
