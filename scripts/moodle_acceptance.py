"""Acceptance run of the Moodle side on a real Moodle site (``make moodle-acceptance``).

Runs the main job (``full_sync``) for an acceptance school — Zoho is the project's simulator of the
demo school, Moodle is the site given — and checks, on that site, what the real-Moodle issue asks:

1. the preflight passes (every function in the service, users visible by idnumber and e-mail,
   every grade item of the ``--grade-course`` courses visible to the pipeline's role);
2. the first full sync makes no permission error (``moodle_push_results``);
3. each course's start and end dates equal the class's in Zoho (Unix seconds, not 1970);
4. an account made by hand with a student's e-mail is linked (its idnumber becomes the Zoho id);
5. an enrolment removed by hand is restored at the next run, and the drift report says so;
6. a course and an account made by hand that Zoho does not know are reported, and not deleted;
7. a run after that writes nothing;
8. with ``--moodle-dir`` (the script then runs on the Moodle server): a unit assessment added to a
   class's course gets the unit's rubric at the next run, a learner graded through
   ``mod_assign_save_grade`` against it reaches the Zoho simulator's ``BTEC_Grades`` with the grade
   the criteria imply (never the gradebook's percentage) and one criteria row per criterion.

Needs the pipeline's token (``MOODLE_TOKEN``, made by the plugin's ``cli/setup_pipeline.php``)
and, for the changes "by hand", an administrator's token (``MOODLE_ADMIN_TOKEN``) for the same
functions. Prints one line per check with its figures; exits 1 if any check fails. It writes
to the site (accounts, courses, enrolments of the acceptance school): use a test site.

Usage: python scripts/moodle_acceptance.py --url http://127.0.0.1:8499 [--grade-course 3]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import dagster as dg
import yaml

from sync_pipelines.btec import unit_criteria
from sync_pipelines.definitions import build_definitions
from sync_pipelines.moodle.client import MoodleClient
from sync_pipelines.moodle.criteria import assessable_courses
from sync_pipelines.moodle.entities import epoch_seconds
from sync_pipelines.moodle.preflight import preflight
from sync_pipelines.moodle.resource import MoodleResource
from sync_pipelines.sandbox import ZohoSimulator, demo_credentials, generate_school
from sync_pipelines.tenants import read_tenants, sync_partitions
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.assets import zoho_ops_config
from sync_pipelines.zoho.modules import module
from sync_pipelines.zoho.resource import ZohoCRMResource

TENANT = "acceptance_school"
PERMISSION_ERRORS = {
    "nopermissions",
    "requireloginerror",
    "wsusercannotassign",
    "accessexception",
    "required_capability_exception",
}


def _check(results: list[tuple[str, bool, str]], name: str, ok: bool, figures: str) -> None:
    results.append((name, ok, figures))
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {figures}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("MOODLE_URL", "http://127.0.0.1:8499"))
    parser.add_argument("--scale", type=float, default=0.25, help="share of the demo school to sync")
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument(
        "--grade-course", type=int, action="append", default=[], help="a course with graded activities"
    )
    parser.add_argument(
        "--moodle-dir", help="the Moodle code on this machine: adds a unit assessment (criteria check)"
    )
    args = parser.parse_args(argv)
    token, admin_token = os.environ.get("MOODLE_TOKEN"), os.environ.get("MOODLE_ADMIN_TOKEN")
    if not token or not admin_token:
        raise SystemExit("set MOODLE_TOKEN (the pipeline's) and MOODLE_ADMIN_TOKEN (an administrator's)")
    started = time.perf_counter()
    results: list[tuple[str, bool, str]] = []
    work = Path(tempfile.mkdtemp(prefix="moodle-acceptance-"))
    creds = demo_credentials()
    sim = ZohoSimulator(
        data=generate_school(args.seed, scale=args.scale), clients={creds[0]: (creds[1], creds[2])}
    )
    sim.start()
    env = {
        "ACC_ZOHO_ID": creds[0],
        "ACC_ZOHO_SECRET": creds[1],
        "ACC_ZOHO_REFRESH": creds[2],
        "ACC_MOODLE": token,
    }
    os.environ.update(env)
    tenants_file = work / "tenants.yaml"
    tenants_file.write_text(
        yaml.safe_dump(
            {
                "tenants": [
                    {
                        "id": TENANT,
                        "name": "Acceptance school (Zoho simulator, real Moodle)",
                        "zoho": {
                            "accounts_url": sim.accounts_url,
                            "api_domain": sim.base_url,
                            "client_id_env": "ACC_ZOHO_ID",
                            "client_secret_env": "ACC_ZOHO_SECRET",
                            "refresh_token_env": "ACC_ZOHO_REFRESH",
                        },
                        "moodle": {"base_url": args.url, "token_env": "ACC_MOODLE"},
                    }
                ]
            }
        )
    )
    url = f"sqlite:///{work / 'warehouse.db'}"
    store = Warehouse(url)
    defs = build_definitions(
        {
            "zoho": ZohoCRMResource(tenants_file=str(tenants_file)),
            "moodle": MoodleResource(tenants_file=str(tenants_file)),
            "warehouse": WarehouseResource(url=url),
        }
    )
    pipeline = MoodleClient(tenant_id=TENANT, base_url=args.url, token=token)
    admin = MoodleClient(tenant_id=TENANT, base_url=args.url, token=admin_token)
    run_tag = uuid.uuid4().hex[:6]

    def run(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
        job = defs.resolve_job_def("full_sync")
        result = job.execute_in_process(
            instance=instance,
            partition_key=TENANT,
            run_config={
                "loggers": {"console": {"config": {"log_level": "ERROR"}}},
                **zoho_ops_config(deleted_check_minutes=0),
            },
            raise_on_error=False,
        )
        for event in result.all_events:
            if event.is_step_failure:
                print(
                    f"  step {event.step_key} failed: {event.step_failure_data.error.message.strip()[:400]}"
                )
        return result

    try:
        # Made by hand before the first sync: an account with a student's e-mail and no idnumber, an
        # account with a school e-mail Zoho does not know, and a course without a class.
        students = [
            r for r in sim.records("BTEC_Students") if r.get("Status") == "Active" and r.get("Academic_Email")
        ]
        student = students[0]
        email = student["Academic_Email"].strip().lower()
        domain = email.split("@")[1]
        found = admin.get_users_by_field("email", [email])
        if found:
            hand_user = int(found[0]["id"])
        else:
            [made] = admin.create_users(
                [
                    {
                        "username": f"hand.{run_tag}",
                        "firstname": "Made",
                        "lastname": "ByHand",
                        "email": email,
                        "createpassword": 1,
                    }
                ]
            )
            hand_user = int(made.value["id"])
        [stranger] = admin.create_users(
            [
                {
                    "username": f"stranger.{run_tag}",
                    "firstname": "Un",
                    "lastname": "Known",
                    "email": f"stranger.{run_tag}@{domain}",
                    "createpassword": 1,
                }
            ]
        )
        [staff] = admin.create_courses(
            [{"fullname": f"Staff room {run_tag}", "shortname": f"STAFF-{run_tag}", "categoryid": 1}]
        )

        with dg.DagsterInstance.ephemeral() as instance:
            sync_partitions(instance, {TENANT: read_tenants(tenants_file).get(TENANT)})
            t0 = time.perf_counter()
            first = run(instance)
            first_s = time.perf_counter() - t0
            pushes = store.moodle.push_results(TENANT)
            errors = pushes[pushes["outcome"] == "error"]
            perm = errors[errors["errorcode"].isin(PERMISSION_ERRORS)]
            writes = pushes[pushes["target"] == "moodle"].groupby(["entity", "action", "outcome"]).size()
            _check(
                results,
                "first full sync succeeds",
                first.success,
                f"{first_s:.1f} s; Moodle writes {writes.to_dict()}",
            )
            _check(
                results,
                "no permission error",
                perm.empty,
                f"{len(perm)} permission errors, {len(errors)} errors in all"
                + (
                    f": {errors[['entity', 'errorcode', 'message']].head(3).to_dict('records')}"
                    if len(errors)
                    else ""
                ),
            )

            users = store.moodle.id_map(TENANT, "user")
            courses = store.moodle.id_map(TENANT, "course")
            findings = preflight(
                pipeline,
                known_users=[(int(m), z) for z, m in users["moodle_id"].head(5).items()],
                course_ids=[*args.grade_course, *[int(m) for m in courses["moodle_id"].head(2)]],
            )
            bad = [f for f in findings if not f.ok]
            _check(
                results,
                "preflight: every function, users and grade items visible",
                not bad,
                f"{len(findings)} checks, {len(bad)} failed"
                + "".join(f"\n      {f.check}: {f.message}" for f in findings),
            )

            classes = store.read_table(TENANT, module("classes")).set_index("zoho_id")
            moodle_courses = {
                str(c.get("idnumber")): c for c in pipeline.get_courses_by_field() if c.get("idnumber")
            }
            mapped = classes.index.intersection(list(moodle_courses))
            start = epoch_seconds(classes.loc[mapped, "start_date"])
            end = epoch_seconds(classes.loc[mapped, "end_date"])
            end = end.where(end >= start, 0)  # an end before the start is sent as no end date
            wrong = [
                z
                for z in mapped
                if (moodle_courses[z]["startdate"], moodle_courses[z]["enddate"])
                != (int(start[z]), int(end[z]))
            ]
            _check(
                results,
                "course dates equal Zoho's",
                len(mapped) > 0 and not wrong,
                f"{len(mapped)} courses compared, {len(wrong)} differ; e.g. {mapped[0] if len(mapped) else '-'}: start {int(start.iloc[0]) if len(mapped) else '-'}",
            )

            linked = admin.get_users_by_field("id", [hand_user])
            _check(
                results,
                "an account made by hand is linked",
                bool(linked) and linked[0].get("idnumber") == student["id"],
                f"Moodle user {hand_user} idnumber {linked[0].get('idnumber') if linked else None!r}, Zoho id {student['id']}",
            )

            held = store.moodle.enrolments(TENANT)
            held = held[held.index.str.startswith("enrolment:")]
            key = held.index[0]
            user, course = int(held.at[key, "moodle_user_id"]), int(held.at[key, "moodle_course_id"])
            [gone] = admin.unenrol([{"userid": user, "courseid": course}])
            before = len(store.moodle.push_results(TENANT))
            t0 = time.perf_counter()
            second = run(instance)
            second_s = time.perf_counter() - t0
            enrolled = {int(u["id"]) for u in pipeline.get_enrolled_users(course, only_active=True)}
            drift = store.moodle.drift(TENANT)
            row = drift[(drift["entity"] == "enrolment") & (drift["key"] == key)]
            _check(
                results,
                "an enrolment removed by hand is restored at the next run and reported",
                gone.ok
                and second.success
                and user in enrolled
                and len(row) == 1
                and bool(row["healed"].iloc[0]),
                f"{key}: user {user} in course {course}: {'enrolled again' if user in enrolled else 'still missing'}; drift {row[['kind', 'action', 'healed']].to_dict('records')}; run {second_s:.1f} s",
            )

            only = drift[drift["side"] == "moodle"]
            reported_user = str(stranger.value["id"]) in set(only["moodle_id"])
            reported_course = str(staff.value["id"]) in set(only["moodle_id"])
            still = bool(admin.get_users_by_field("id", [int(stranger.value["id"])])) and any(
                c["id"] == staff.value["id"] for c in admin.get_courses_by_field("id", staff.value["id"])
            )
            _check(
                results,
                "Moodle-only objects are reported, none deleted",
                reported_user and reported_course and still,
                f"{len(only)} Moodle-only reported ({only.groupby('entity').size().to_dict()}); the hand-made account and course still exist: {still}",
            )

            after = store.moodle.push_results(TENANT).iloc[before:]
            before = len(store.moodle.push_results(TENANT))
            third = run(instance)
            again = store.moodle.push_results(TENANT).iloc[before:]
            again = again[(again["target"] == "moodle") & (again["outcome"] != "skipped")]
            _check(
                results,
                "a run after that writes nothing to Moodle",
                third.success and again.empty,
                f"{len(again)} Moodle writes in run 3 (run 2 made {len(after[(after['target'] == 'moodle') & (after['outcome'] != 'skipped')])})",
            )
            if args.moodle_dir:
                _criteria(results, args.moodle_dir, store, sim, admin, run, instance, run_tag)
    finally:
        sim.stop()
    failed = [name for name, ok, _ in results if not ok]
    print(
        f"\n{len(results) - len(failed)}/{len(results)} checks passed in {time.perf_counter() - started:.0f} s; Moodle calls of the pipeline's client in this script: {pipeline.stats.calls}"
    )
    return 1 if failed else 0


def _criteria(results, moodle_dir, store, sim, admin, run, instance, run_tag) -> None:
    """Check 8 (module docstring)."""
    found = assessable_courses(store, TENANT)
    if found.empty:
        _check(
            results,
            "criteria: a class of a unit with P, M and D criteria",
            False,
            "none in the acceptance school",
        )
        return
    course, unit = int(found["course_id"].iloc[0]), found["unit_zoho_id"].iloc[0]
    made = json.loads(
        subprocess.run(
            [
                "php",
                str(Path(__file__).with_name("moodle_add_assignment.php")),
                moodle_dir,
                str(course),
                f"BTEC Acceptance {run_tag}",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    t0 = time.perf_counter()
    fourth = run(instance)
    rubrics = store.moodle.rubrics(TENANT).set_index("cmid")
    [area] = admin.grading_definitions([made["cmid"]])
    rubric = next((d for d in area["definitions"] if d["method"] == "rubric"), None)
    criteria = unit_criteria(store.read_table(TENANT, module("units")))
    codes = list(criteria[criteria["unit_id"] == unit]["code"])
    got = [
        c["description"].split(":")[0] for c in (rubric or {}).get("rubric", {}).get("rubric_criteria", [])
    ]
    _check(
        results,
        "criteria: the unit's rubric is made on its assessment",
        fourth.success and got == codes and made["cmid"] in rubrics.index,
        f"assignment cmid {made['cmid']} in course {course}: rubric {' '.join(got)} (Zoho: {' '.join(codes)}); {time.perf_counter() - t0:.1f} s",
    )
    if rubric is None:
        return
    learner = int(
        next(
            u["id"]
            for u in admin.get_enrolled_users(course)
            if any(r.get("roleid") == 5 for r in u.get("roles") or [])
        )
    )
    missed = next(c for c in codes if c.startswith("D"))  # every P and M met, one D missed: M
    filling = {
        int(c["id"]): int(
            next(
                lv["id"]
                for lv in c["levels"]
                if lv["score"] == (0 if c["description"].startswith(missed + ":") else 1)
            )
        )
        for c in rubric["rubric"]["rubric_criteria"]
    }
    admin.save_assign_grade(
        made["assignmentid"], learner, rubric=filling, comment="Acceptance: marked against the criteria."
    )
    fifth = run(instance)
    grades = store.moodle.grades(TENANT)
    row = grades[(grades["grading"] == "criteria") & (grades["moodle_user_id"] == learner)]
    key = row["composite_key"].iloc[0] if len(row) else None
    record = next((r for r in sim.records("BTEC_Grades") if r.get("Moodle_Grade_Composite_Key") == key), {})
    rows = record.get("Learning_Outcomes_Assessm") or []
    shown = " ".join(f"{r.get('Criterion_Code')}{'+' if r.get('Achieved') else '-'}" for r in rows)
    pct = float(row["percentage"].iloc[0]) if len(row) else float("nan")
    _check(
        results,
        "criteria: a learner graded with mod_assign_save_grade reaches BTEC_Grades with the grade the criteria imply",
        fifth.success and record.get("Grade") == "M" and len(rows) == len(codes),
        f"user {learner}: gradebook {pct:.1f} %, Zoho Grade {record.get('Grade')!r}, status {record.get('Grade_Status')!r}, criteria {shown}",
    )


if __name__ == "__main__":
    sys.exit(main())
