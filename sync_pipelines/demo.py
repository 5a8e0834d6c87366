"""``make demo``: a full sync of the demo school against the local Zoho and Moodle simulators.

Starts both simulators on the ports ``tenants.yaml`` names, runs the main job (``full_sync``) for
the demo school on the Dagster instance in ``DAGSTER_HOME`` (Zoho → warehouse → Moodle → grades
and Moodle ids back to Zoho), then changes a few records, as a school day would (edits in Zoho,
marking in Moodle), and runs it again. Prints a report of each run, and ends with the day's change
report (``reports/daily_changes``) and the path of its CSV file.
This is a command-line program: its output is for the person who ran it.
"""

import argparse
import json
import logging
import os
import sys
import time
from urllib.parse import urlsplit

import dagster as dg
import pandas as pd

from sync_pipelines.definitions import defs
from sync_pipelines.moodle.client import MoodleClient
from sync_pipelines.moodle.criteria import assessable_courses
from sync_pipelines.report import REPORT_KEY
from sync_pipelines.sandbox import (
    DEMO_MOODLE_TOKEN,
    DEMO_SEED,
    MoodleSimulator,
    ZohoSimulator,
    demo_credentials,
    generate_school,
)
from sync_pipelines.settings import default_warehouse_url, local_dir, warehouse_url
from sync_pipelines.tenants import Tenant, read_tenants, sync_partitions
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.zoho.assets import zoho_ops_config
from sync_pipelines.zoho.modules import MODULES

TENANT = "demo_school"
COUNT_COLUMNS = ["NEW", "UNCHANGED", "UPDATED", "REFRESHED", "INVALID", "DELETED"]


def _report(store: Warehouse, run_id: str) -> pd.DataFrame:
    runs = store.runs(TENANT)
    runs = runs[runs["dagster_run_id"] == run_id].set_index("module").reindex([m.name for m in MODULES])
    counts = pd.DataFrame([json.loads(c) for c in runs["counts"]], index=runs.index)
    table = counts.reindex(columns=COUNT_COLUMNS).fillna(0).astype(int)
    table.insert(0, "mode", runs["mode"])
    table["api_calls"] = runs["api_calls"].astype(int)
    table["credits"] = runs["api_credits"].astype(int)
    table.loc["total"] = ["", *table[[*COUNT_COLUMNS, "api_calls", "credits"]].sum().tolist()]
    table.index.name = "module"
    return table


def _run(instance: dg.DagsterInstance, job_name: str = "full_sync") -> str:
    job = defs.resolve_job_def(job_name)
    run_config = {
        "loggers": {"console": {"config": {"log_level": "WARNING"}}},  # the report below says it all
        # The demo's school day lasts a moment, not the hour after which a scheduled run asks Zoho
        # for deletions again: ask on every run, so the deleted enrolment shows in run 2.
        **zoho_ops_config(deleted_check_minutes=0),
    }
    result = job.execute_in_process(
        instance=instance, partition_key=TENANT, run_config=run_config, raise_on_error=False
    )
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                print(f"  step {event.step_key} failed: {event.step_failure_data.error.message.strip()}")
        raise SystemExit("the sync run failed (see above)")
    return result.run_id


def _change_report(instance: dg.DagsterInstance) -> str:
    """Today's change report of the demo school (``reports/daily_changes``): its CSV file."""
    op = "__".join(REPORT_KEY.path)
    result = defs.resolve_job_def("daily_report").execute_in_process(
        instance=instance,
        partition_key=TENANT,
        run_config={
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
            "ops": {op: {"config": {"day": "today"}}},
        },
        raise_on_error=False,
    )
    mats = result.get_asset_materialization_events() if result.success else []
    if not mats:
        return "the change report was not made (see the run's log)"
    meta = mats[0].materialization.metadata
    counts = ", ".join(f"{k} {meta[k].value}" for k in ("new", "updated", "deleted", "invalid"))
    return f"{counts} today, per module in {meta['csv'].value}"


def _moodle_report(store: Warehouse, run_id: str) -> pd.DataFrame:
    pushes = store.moodle.push_results(TENANT)
    pushes = pushes[pushes["dagster_run_id"] == run_id]
    if pushes.empty:
        return pd.DataFrame({"writes": ["none: nothing changed"]})
    table = pushes.groupby(["target", "entity", "action", "outcome"]).size().rename("records").reset_index()
    return table.set_index(["target", "entity"])


def _mark_work(moodle: MoodleSimulator, store: Warehouse) -> str:
    """A teacher marks an assignment in the first few synced courses."""
    courses = store.moodle.id_map(TENANT, "course")["moodle_id"].astype(int).tolist()[:3]
    marked = 0
    for course_id in courses:
        item = moodle.add_grade_item(course_id, "Assignment 1", grademax=100.0)
        students = [e["userid"] for e in moodle.enrolments(course_id) if e["roleid"] == 5]
        for n, user_id in enumerate(students):
            moodle.set_grade(course_id, user_id, item, float((37 + 11 * n) % 101))
            marked += 1
    return f"marked {marked} submissions in {len(courses)} Moodle courses"


def _set_assessment(moodle: MoodleSimulator, store: Warehouse) -> str:
    """A teacher adds the unit's assessment to a course: the next run gives it the unit's rubric."""
    found = assessable_courses(store, TENANT, min_learners=3)
    if found.empty:
        return "no class of a unit with P, M and D criteria to assess"
    course, unit = int(found["course_id"].iloc[0]), found["unit_zoho_id"].iloc[0]
    moodle.add_assignment(course, "BTEC Assignment 1")
    return f"added 'BTEC Assignment 1' to Moodle course {course} (unit {unit})"


def _mark_by_criteria(moodle: MoodleSimulator, store: Warehouse) -> str:
    """The teacher marks three learners with the rubric: everything met, all P and M, one P missed."""
    rubrics = store.moodle.rubrics(TENANT)
    rubrics = rubrics[rubrics["definition_id"].notna()]
    if rubrics.empty:
        return "no rubric to mark with"
    r = rubrics.iloc[0]
    client = MoodleClient(tenant_id=TENANT, base_url=moodle.base_url, token=DEMO_MOODLE_TOKEN)
    [area] = client.grading_definitions([int(r["cmid"])])
    rubric = next(d for d in area["definitions"] if d["method"] == "rubric")["rubric"]["rubric_criteria"]
    learners = [e["userid"] for e in moodle.enrolments(int(r["course_id"])) if e["roleid"] == 5][:3]
    for learner, missed in zip(learners, (set(), {"D"}, {"P1"}), strict=False):
        filling = {}
        for c in rubric:
            code = c["description"].split(":")[0]
            met = not (code in missed or code[0] in missed)
            filling[int(c["id"])] = int(
                next(lv["id"] for lv in c["levels"] if lv["score"] == (1 if met else 0))
            )
        client.save_assign_grade(
            int(r["assignment_id"]), learner, rubric=filling, comment="Marked against the unit's criteria."
        )
    return f"marked {len(learners)} learners of course {int(r['course_id'])} against the unit's {len(rubric)} criteria"


def _print_criteria(store: Warehouse, sim: ZohoSimulator) -> None:
    grades = store.moodle.grades(TENANT)
    grades = grades[grades["grading"] == "criteria"]
    if grades.empty:
        return
    records = {r.get("Moodle_Grade_Composite_Key"): r for r in sim.records("BTEC_Grades")}
    print(
        "\nCriteria grades in Zoho's BTEC_Grades (from the learners' rubric fillings, never the percentage):"
    )
    for g in grades.itertuples():
        record = records.get(g.composite_key) or {}
        rows = record.get("Learning_Outcomes_Assessm") or []
        met = " ".join(f"{r.get('Criterion_Code')}{'+' if r.get('Achieved') else '-'}" for r in rows)
        print(
            f"  {g.composite_key:<10} gradebook {g.percentage:5.1f} %  →  Grade {record.get('Grade')!s:<3}"
            f"{record.get('Grade_Status')!s:<18}  {met}"
        )


def _school_day(sim: ZohoSimulator) -> list[str]:
    """Edits a school makes between two syncs; returns what was done, for the printout."""
    students = sorted(sim.records("BTEC_Students"), key=lambda r: r["id"])
    enrolments = sorted(sim.records("BTEC_Enrollments"), key=lambda r: r["id"])
    classes = sorted(sim.records("BTEC_Classes"), key=lambda r: r["id"])
    renamed = students[3]
    sim.update("BTEC_Students", renamed["id"], Last_Name=f"{renamed['Last_Name']}-Haddad", City="Gaziantep")
    sim.update("BTEC_Classes", classes[0]["id"], End_Date="2027-03-31")
    sim.delete("BTEC_Enrollments", enrolments[10]["id"])
    new_id = sim.insert(
        "BTEC_Students",
        {
            "First_Name": "Layla",
            "Last_Name": "Mansour",
            "Frist_Name_Native": "ليلى",
            "Last_Name_Native": "منصور",
            "Academic_Email": "layla.mansour@school.example",
            "Status": "Active",
        },
    )
    sim.insert(
        "BTEC_Enrollments",
        {
            "Enrolled_Students": {"id": new_id, "name": "Layla Mansour"},
            "Classes": {"id": classes[1]["id"], "name": classes[1].get("Class_Name")},
            "Enrollment_Type": "Normal",
        },
    )
    return [
        f"renamed student {renamed['id']} and changed their city",
        f"moved the end date of class {classes[0]['id']}",
        f"deleted enrolment {enrolments[10]['id']}",
        f"added student {new_id} (Layla Mansour) and enrolled her in class {classes[1]['id']}",
    ]


def fresh_demo_warehouse() -> tuple[Warehouse, str]:
    """The warehouse, holding nothing of the demo school: the simulators start from it every time.

    The embedded SQLite file is the demo's own and is recreated. A warehouse named by
    ``WAREHOUSE_URL`` may hold other schools (or an earlier demo): only the demo tenant's rows are
    deleted there, so Moodle ids kept from an earlier run never point at courses that are gone.
    """
    url = warehouse_url()
    if url == default_warehouse_url():
        (local_dir() / "warehouse.db").unlink(missing_ok=True)
        return Warehouse(url), "a new embedded SQLite file"
    store = Warehouse(url)
    deleted = store.forget_tenant(TENANT)
    if not deleted:
        return store, f"it held no rows of tenant '{TENANT}'; no other tenant's rows are touched"
    return store, (
        f"reset the {sum(deleted.values())} rows of tenant '{TENANT}' an earlier demo left "
        f"(in {len(deleted)} tables); no other tenant's rows are touched"
    )


def _print_table(title: str, table: pd.DataFrame) -> None:
    print(f"\n{title}")
    print(table.to_string())


def _print_examples(store: Warehouse, run_id: str) -> None:
    runs = store.runs(TENANT)
    ids = runs.loc[runs["dagster_run_id"] == run_id, "sync_run_id"].tolist()
    results = store.results(TENANT)
    results = results[results["sync_run_id"].isin(ids)]
    for status in ("UPDATED", "INVALID", "DELETED"):
        rows = results[results["status"] == status]
        if rows.empty:
            continue
        print(f"\n  {status} ({len(rows)}), first few:")
        for r in rows.head(4).itertuples():
            detail = r.changes if status == "UPDATED" else (r.reason if isinstance(r.reason, str) else "")
            print(f"    {r.module:<13} {r.zoho_id}  {detail}")


def _mirror_report(store: Warehouse, sim: ZohoSimulator) -> pd.DataFrame:
    """Per module: the records Zoho holds, the warehouse's live rows, and how many carry findings."""
    rows = []
    for m in MODULES:
        held = store.accounted_for(TENANT, m)
        in_zoho = len(sim.records(m.api_name))
        rows.append(
            {
                "module": m.name,
                "zoho": in_zoho,
                "warehouse": held["live"],
                "with_findings": held["invalid"],
                "same": "yes" if in_zoho == held["live"] else "NO",
            }
        )
    return pd.DataFrame(rows).set_index("module")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()

    tenant: Tenant = read_tenants().get(TENANT)  # its own error if its entry is broken
    if tenant.moodle is None:
        raise SystemExit("the demo tenant in tenants.yaml needs its moodle section")
    creds = demo_credentials()
    # The demo school's credentials are the simulators' own, not secrets: export them for it.
    names = (tenant.zoho.client_id_env, tenant.zoho.client_secret_env, tenant.zoho.refresh_token_env)
    for env_name, value in zip(names, creds, strict=True):
        os.environ.setdefault(env_name, value)
    os.environ.setdefault(tenant.moodle.token_env, DEMO_MOODLE_TOKEN)

    store, reset = fresh_demo_warehouse()

    sim = ZohoSimulator(data=generate_school(args.seed), clients={creds[0]: (creds[1], creds[2])})
    moodle = MoodleSimulator(tokens={DEMO_MOODLE_TOKEN: None})
    for name, server, url in (
        ("Zoho", sim, tenant.zoho.accounts_url),
        ("Moodle", moodle, tenant.moodle.base_url),
    ):
        port = urlsplit(url).port or 80
        try:
            server.start(port=port)
        except OSError as exc:
            raise SystemExit(
                f"cannot start the {name} simulator on port {port}: {exc} (is `make dev` running?)"
            ) from exc
    print(
        f"Zoho simulator for '{tenant.name}' at {sim.base_url} (seed {args.seed}); Moodle at {moodle.base_url}"
    )
    print(f"warehouse: {store!r}: {reset}")

    try:
        with dg.DagsterInstance.get() as instance:
            sync_partitions(instance, {TENANT: tenant})
            first = _run(instance)
            _print_table("Run 1: first full sync of the demo school, Zoho → warehouse", _report(store, first))
            _print_examples(store, first)
            _print_table("Run 1: writes to Moodle and back to Zoho", _moodle_report(store, first))

            done = [*_school_day(sim), _mark_work(moodle, store), _set_assessment(moodle, store)]
            print("\nA school day: " + "; ".join(done) + ".")
            second = _run(instance)
            _print_table("Run 2: incremental sync, Zoho → warehouse", _report(store, second))
            _print_examples(store, second)
            _print_table("Run 2: writes to Moodle and back to Zoho", _moodle_report(store, second))
            print("\nMarking by criteria: " + _mark_by_criteria(moodle, store) + ".")
            marked = _run(instance)
            _print_table("Run 2b: the criteria marked in Moodle, back to Zoho", _moodle_report(store, marked))
            _print_criteria(store, sim)
            # The write-back of run 2 made records in Zoho (BTEC_Grades) after run 2 read it: the
            # next scheduled read brings them, as it would 15 minutes later.
            third = _run(instance, "zoho_full_sync")
            _print_table("Run 3: the next scheduled read of Zoho", _report(store, third))
            report = _change_report(instance)
    finally:
        sim.stop()
        moodle.stop()

    grades = store.moodle.grades(TENANT)
    written = grades.loc[grades["zoho_grade_id"].notna(), "btec_grade"].value_counts().to_dict()
    print(
        f"\nMoodle now has {len(moodle.users())} users, {len(moodle.courses())} courses and "
        f"{len(moodle.enrolments())} enrolments; BTEC grades written to Zoho from Moodle: {written}"
    )
    _print_table(
        "The mirror: live records per module, the warehouse against Zoho", _mirror_report(store, sim)
    )
    print(
        f"API calls: Zoho {len(sim.requests)}, Moodle {len(moodle.requests)}; "
        f"wall time {time.perf_counter() - started:.1f} s"
    )
    print("Why did a record not sync? SELECT * FROM sync_results WHERE zoho_id = '…' ORDER BY id;")
    print("What was written to Moodle or Zoho? SELECT * FROM moodle_push_results WHERE key = '…';")
    print(f"Today's change report (reports/daily_changes): {report}")
    print("Browse the lineage and run history: make dev  (then open http://127.0.0.1:3000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
