"""Zoho → warehouse → Moodle → Zoho, over HTTP against both simulators, on SQLite and PostgreSQL."""

import copy
from datetime import date

import pandas as pd
import pytest

from sync_pipelines import writeback
from sync_pipelines.moodle import entities
from sync_pipelines.moodle.client import MoodleError
from sync_pipelines.moodle.entities import entity
from sync_pipelines.moodle.grades import collect_grades
from sync_pipelines.moodle.reconcile import PushReport, reconcile
from sync_pipelines.zoho.modules import MODULES, module
from sync_pipelines_tests.moodle.conftest import TENANT, World


def _writes(report: PushReport) -> list[tuple[str, str]]:
    return [(p.action, p.key) for p in report.pushes]


def _usable(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows the Moodle step can use: the warehouse mirrors dirty records too (no academic
    e-mail, a short name another class holds), which get no Moodle object."""
    return rows[~rows["zoho_id"].isin(entities.unusable(rows, name).index)]


def test_a_record_the_moodle_step_cannot_use_is_skipped_with_the_field_and_value(world: World):
    students = world.store.read_table(TENANT, module("students"))
    blocked = entities.unusable(students, "students")
    assert len(blocked)  # the demo school has students without a usable academic e-mail
    report = world.provision()["users"]
    skipped = report.skipped.set_index("key")["reason"]
    for zoho_id, why in blocked.items():
        assert skipped[zoho_id] == f"no Moodle account: {why}"
        assert "Academic_Email" in why or "First_Name" in why or "Last_Name" in why or "already" in why
    assert not {u.get("idnumber") for u in world.moodle_sim.users()} & set(blocked.index)
    log = world.store.moodle.push_results(TENANT, "user").query("outcome == 'skipped'")
    assert set(log["key"]) >= set(blocked.index)


def test_provisioning_mirrors_zoho_in_moodle_and_a_rerun_writes_nothing(world: World):
    first = world.provision()
    students = _usable(world.store.read_table(TENANT, module("students")), "students")
    teachers = _usable(world.store.read_table(TENANT, module("teachers")), "teachers")
    active = students[~students["status"].isin(entities.SUSPENDED_STATUSES)]
    users = {u["idnumber"]: u for u in world.moodle_sim.users() if u.get("idnumber")}
    assert set(users) == set(active["zoho_id"]) | set(teachers["zoho_id"])
    for row in active.itertuples():
        assert users[row.zoho_id]["username"] == row.academic_email.lower()
        assert users[row.zoho_id]["firstname"] == row.first_name
    classes = _usable(world.store.read_table(TENANT, module("classes")), "classes")
    courses = {c["idnumber"]: c for c in world.moodle_sim.courses() if c.get("idnumber")}
    assert {z: c["shortname"] for z, c in courses.items()} == dict(
        zip(classes["zoho_id"], classes["class_short_name"], strict=True)
    )
    roles = {e["roleid"] for e in world.moodle_sim.enrolments()}
    assert roles == {entities.STUDENT_ROLE, entities.TEACHER_ROLE}
    assert all(p.ok for r in first.values() for p in r.pushes)

    world.moodle_sim.reset_log()
    again = world.provision()
    assert [w for r in again.values() for w in _writes(r)] == []
    writes = {
        "core_user_create_users",
        "core_user_update_users",
        "core_course_create_courses",
        "core_course_update_courses",
        "core_course_create_categories",
        "enrol_manual_enrol_users",
        "enrol_manual_unenrol_users",
    }
    assert not [r.function for r in world.moodle_sim.requests if r.function in writes]
    # What Moodle holds is read (to find drift), in a bounded number of calls: a few for the
    # accounts, categories and courses, one per course for its enrolments.
    courses = len(world.store.moodle.id_map(TENANT, "course"))
    assert len(world.moodle_sim.requests) <= 6 + courses


def test_a_changed_name_in_zoho_changes_exactly_that_moodle_user(world: World):
    world.provision()
    student = world.store.read_table(TENANT, module("students")).query("status == 'Active'").iloc[0]
    world.zoho_sim.update("BTEC_Students", student["zoho_id"], Last_Name="Al-Farsi")
    world.sync_zoho()
    world.moodle_sim.reset_log()
    report = world.provision()["users"]
    assert _writes(report) == [("update", student["zoho_id"])]
    updates = [r for r in world.moodle_sim.requests if r.function == "core_user_update_users"]
    assert len(updates) == 1
    user = next(u for u in world.moodle_sim.users() if u.get("idnumber") == student["zoho_id"])
    assert user["lastname"] == "Al-Farsi"


def test_existing_accounts_are_linked_by_email_and_a_lost_id_map_never_duplicates(world: World):
    student = world.store.read_table(TENANT, module("students")).query("status == 'Active'").iloc[0]
    by_hand = world.moodle_sim.add_user(
        username="made.by.hand", firstname="X", lastname="Y", email=student["academic_email"]
    )
    report = world.provision()["users"]
    assert ("link", student["zoho_id"]) in _writes(report)
    assert world.moodle_sim.user(by_hand)["idnumber"] == student["zoho_id"]
    before = len(world.moodle_sim.users())

    # as if the run had crashed after Moodle created the accounts, before the id map was saved
    with world.store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM moodle_id_map")
    report = world.provision()["users"]
    assert len(world.moodle_sim.users()) == before
    assert {a for a, _ in _writes(report)} == {"link"}


def test_one_user_moodle_rejects_is_marked_with_its_error_and_the_others_are_created(world: World):
    students = _usable(world.store.read_table(TENANT, module("students")), "students")
    students = students[~students["status"].isin(entities.SUSPENDED_STATUSES)]
    victim = students[students["status"] == "Active"].iloc[2]
    # someone else already holds the username this student would get
    world.moodle_sim.add_user(
        username=victim["academic_email"].lower(),
        firstname="A",
        lastname="B",
        email="someone.else@elsewhere.example",
        idnumber="not-from-zoho",
    )
    report = world.provision()["users"]
    failed = {p.key: p for p in report.pushes if not p.ok}
    assert set(failed) == {victim["zoho_id"]}
    assert failed[victim["zoho_id"]].errorcode == "invalidparameter"
    created = [p for p in report.pushes if p.ok and p.action == "create"]
    teachers = _usable(world.store.read_table(TENANT, module("teachers")), "teachers")
    assert len(created) == len(students) - 1 + len(teachers)
    log = world.store.moodle.push_results(TENANT, "user").query("outcome == 'error'")
    assert log["key"].tolist() == [victim["zoho_id"]] and log["errorcode"].iloc[0] == "invalidparameter"


def test_withdrawn_students_are_suspended_and_unenrolled_deleted_enrolments_unenrolled(world: World):
    world.provision()
    enrolments = world.store.read_table(TENANT, module("enrolments"))
    withdrawn = enrolments["student_id"].iloc[0]
    dropped = enrolments[enrolments["student_id"] != withdrawn].iloc[0]
    world.zoho_sim.update("BTEC_Students", withdrawn, Status="Withdraw")
    world.zoho_sim.delete("BTEC_Enrollments", dropped["zoho_id"])
    world.sync_zoho()
    reports = world.provision()
    assert ("update", withdrawn) in _writes(reports["users"])
    moodle_id = int(world.store.moodle.id_map(TENANT, "user").loc[withdrawn, "moodle_id"])
    assert world.moodle_sim.user(moodle_id)["suspended"] == 1
    assert not [e for e in world.moodle_sim.enrolments() if e["userid"] == moodle_id and e["roleid"] == 5]
    assert ("remove", f"enrolment:{dropped['zoho_id']}") in _writes(reports["enrolments"])


def test_grades_come_back_to_zoho_as_btec_letters_once(world: World):
    world.provision()
    course_id = int(world.store.moodle.id_map(TENANT, "course")["moodle_id"].iloc[0])
    students = [e["userid"] for e in world.moodle_sim.enrolments(course_id) if e["roleid"] == 5]
    assert len(students) >= 2
    item = world.moodle_sim.add_grade_item(course_id, "Unit 1 assignment", grademax=50.0)
    world.moodle_sim.set_grade(course_id, students[0], item, 36.0)  # 72 % → Distinction
    world.moodle_sim.set_grade(course_id, students[1], item, 19.5)  # 39 % → Refer

    grades = collect_grades(world.moodle(), world.store, TENANT)
    assert sorted(grades["btec_grade"]) == ["Distinction", "Refer"]  # the course total is not counted
    zoho = world.zoho()
    report = writeback.write_back_grades(zoho, world.store, TENANT)
    assert [p.ok for p in report.pushes] == [True, True]
    ours = {f"{students[0]}_{item}", f"{students[1]}_{item}"}
    written = {
        r["Moodle_Grade_Composite_Key"]: r
        for r in world.zoho_sim.records("BTEC_Grades")
        if r.get("Moodle_Grade_Composite_Key") in ours
    }
    assert {k: r["Grade"] for k, r in written.items()} == {
        f"{students[0]}_{item}": "D",
        f"{students[1]}_{item}": "R",
    }

    collect_grades(world.moodle(), world.store, TENANT)
    assert writeback.write_back_grades(zoho, world.store, TENANT).pushes == []
    world.moodle_sim.set_grade(course_id, students[1], item, 31.0)  # regraded: 62 % → Merit
    collect_grades(world.moodle(), world.store, TENANT)
    again = writeback.write_back_grades(zoho, world.store, TENANT)
    assert [p.key for p in again.pushes] == [f"{students[1]}_{item}"]
    assert world.zoho_sim.record("BTEC_Grades", again.pushes[0].remote_id)["Grade"] == "M"
    assert (
        len([r for r in world.zoho_sim.records("BTEC_Grades") if r.get("Moodle_Grade_Composite_Key") in ours])
        == 2
    )
    assert written[f"{students[0]}_{item}"]["Student"]["id"] in set(
        world.store.moodle.id_map(TENANT, "user").index
    )


def test_moodle_ids_are_written_back_to_zoho_once(world: World):
    world.provision()
    zoho = world.zoho()
    first = writeback.write_back_bookkeeping(zoho, world.store, TENANT)
    assert first.pushes and all(p.ok for p in first.pushes)
    ids = world.store.moodle.id_map(TENANT, "user")
    student = ids[ids["zoho_module"] == "students"].iloc[0]
    record = world.zoho_sim.record("BTEC_Students", student.name)
    assert record["Student_Moodle_ID"] == str(int(student["moodle_id"]))
    assert record["Synced_to_Moodle"] is True
    assert writeback.write_back_bookkeeping(zoho, world.store, TENANT).pushes == []
    world.sync_zoho()  # the mirror now holds the written values: still nothing to write
    assert writeback.write_back_bookkeeping(zoho, world.store, TENANT).pushes == []


def test_a_dry_run_reports_every_write_and_makes_none(world: World):
    zoho_before = {m.api_name: copy.deepcopy(world.zoho_sim.records(m.api_name)) for m in MODULES}
    reports = world.provision(dry_run=True)
    assert world.moodle_sim.users() == [u for u in world.moodle_sim.users() if not u.get("idnumber")]
    assert world.moodle_sim.courses() == [] or all(not c.get("idnumber") for c in world.moodle_sim.courses())
    planned = reports["users"].plan
    assert (planned["action"] == "create").sum() > 0
    assert world.store.moodle.id_map(TENANT, "user").empty
    bookkeeping = writeback.write_back_bookkeeping(world.zoho(), world.store, TENANT, dry_run=True)
    assert bookkeeping.pushes == []
    assert {m.api_name: world.zoho_sim.records(m.api_name) for m in MODULES} == zoho_before


def test_moodle_unreachable_fails_cleanly_and_nothing_is_written_back(world: World):
    world.moodle_sim.fail_next(1000, status=503)
    with pytest.raises(MoodleError):
        reconcile(entity("users"), world.moodle(max_retries=1), world.store, TENANT)
    assert world.store.moodle.id_map(TENANT, "user").empty
    report = writeback.write_back_bookkeeping(world.zoho(), world.store, TENANT)
    assert report.pushes == []
    world.moodle_sim.fail_next(0)
    assert reconcile(entity("users"), world.moodle(), world.store, TENANT).pushes  # the next run converges


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_course_dates_are_unix_seconds_whatever_unit_pandas_parsed_them_in(unit: str):
    """A course's start date of 1 September 2026 is 1788220800 in Moodle, never 1 (1970)."""
    dates = pd.Series(pd.to_datetime(["2026-09-01", None]).as_unit(unit))
    assert entities.epoch_seconds(dates).tolist() == [1788220800, 0]
    from_db = pd.Series([date(2026, 9, 1), None], dtype=object)  # as the warehouse reads a DATE back
    assert entities.epoch_seconds(from_db).tolist() == [1788220800, 0]
