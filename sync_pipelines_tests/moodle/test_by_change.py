"""Moodle read by change: a run in which nothing changed costs a few calls whatever the number of
courses, a grade given in Moodle still reaches Zoho by the next run, an event's course is read in
full, and the nightly reconciliation still reads everything (drift included).

Call counts are the Moodle simulator's request log (every HTTP request the pipeline made)."""

from collections import Counter

import pytest

from sync_pipelines import writeback
from sync_pipelines.moodle.entities import ENTITIES, entity
from sync_pipelines.moodle.grades import POSITION, SINCE_OVERLAP_SECONDS, read_grades
from sync_pipelines.moodle.reconcile import reconcile
from sync_pipelines.warehouse.moodle import ReadPosition
from sync_pipelines_tests.moodle.conftest import TENANT, World

#: A run in which nothing changed: at most this many Moodle calls, whatever the number of courses.
NO_CHANGE_BUDGET = 5
COURSES = 40


def _calls(world: World) -> Counter[str]:
    return Counter(r.function or "?" for r in world.moodle_sim.requests)


def _run(world: World, *, full: bool = False) -> Counter[str]:
    """The Moodle steps of one scheduled run (entities in table order, then the grade read); the
    Moodle calls they made."""
    world.moodle_sim.reset_log()
    m = world.moodle()
    for spec in ENTITIES:
        reconcile(spec, m, world.store, TENANT, full=full)
    read_grades(m, world.store, TENANT, full=full)
    return _calls(world)


@pytest.fixture
def graded(world: World) -> dict:
    """The world provisioned in full, with 40 synced courses, an assignment in each and every
    enrolled learner graded, read once in full (the first read of a school)."""
    world.provision()
    courses = world.store.moodle.id_map(TENANT, "course")["moodle_id"].astype(int).tolist()
    for n in range(COURSES - len(courses)):  # the demo school at this scale has fewer classes
        world.zoho_sim.insert(
            "BTEC_Classes", {"Class_Name": f"Extra class {n}", "Class_Short_Name": f"EXTRA-{n}"}
        )
    world.sync_zoho()
    world.provision()
    courses = world.store.moodle.id_map(TENANT, "course")["moodle_id"].astype(int).tolist()
    items, learners = {}, {}
    for course in courses:
        items[course] = world.moodle_sim.add_grade_item(course, "Unit assignment", grademax=100.0)
        learners[course] = [e["userid"] for e in world.moodle_sim.enrolments(course) if e["roleid"] == 5]
        for n, user in enumerate(learners[course]):
            world.moodle_sim.set_grade(course, user, items[course], float(40 + (7 * n) % 60))
    first = read_grades(world.moodle(), world.store, TENANT)
    assert first.mode == "full" and first.courses_read == len(courses)
    taught = [c for c in courses if learners[c]]
    assert len(taught) >= 2
    return {"courses": courses, "taught": taught, "items": items, "learners": learners}


def test_a_run_in_which_nothing_changed_makes_at_most_five_moodle_calls_for_40_courses(
    world: World, graded: dict
):
    assert len(graded["courses"]) >= COURSES
    made = _run(world)
    assert sum(made.values()) <= NO_CHANGE_BUDGET, made
    assert "gradereport_user_get_grade_items" not in made  # no gradebook read
    assert "core_enrol_get_enrolled_users" not in made  # no enrolment read
    assert made["mod_assign_get_grades"] == 1  # every assignment of the school in one call
    # and once more: the read position's overlap re-answers the last grades, which are not read again
    again = _run(world)
    assert sum(again.values()) <= NO_CHANGE_BUDGET, again


def test_one_grade_given_in_moodle_reaches_zoho_with_at_most_the_minimum_plus_five_calls(
    world: World, graded: dict
):
    course = graded["taught"][len(graded["taught"]) // 2]
    learner = graded["learners"][course][0]
    world.moodle_sim.set_grade(course, learner, graded["items"][course], 91.0)
    writeback.write_back_grades(world.zoho(), world.store, TENANT)  # what the first read found

    made = _run(world)
    # the minimum: the gradebook of that course (the grade's item and feedback come course by course)
    assert made["gradereport_user_get_grade_items"] == 1
    assert sum(made.values()) <= 1 + NO_CHANGE_BUDGET, made
    [read] = [r for r in world.moodle_sim.requests if r.function == "gradereport_user_get_grade_items"]
    assert int(read.params["courseid"]) == course

    report = writeback.write_back_grades(world.zoho(), world.store, TENANT)
    key = f"{learner}_{graded['items'][course]}"
    assert [p.key for p in report.pushes] == [key]
    assert world.zoho_sim.record("BTEC_Grades", report.pushes[0].remote_id)["Grade"] == "D"  # 91 %


def test_a_student_edited_in_zoho_costs_the_write_and_a_few_reads(world: World, graded: dict):
    users = world.store.moodle.id_map(TENANT, "user")
    student = users[users["zoho_module"] == "students"].index[0]
    world.zoho_sim.update("BTEC_Students", student, Last_Name="Renamed-By-Change")
    world.sync_zoho()
    made = _run(world)
    assert made["core_user_update_users"] == 1
    assert sum(made.values()) <= 1 + NO_CHANGE_BUDGET, made
    moodle_id = int(users.loc[student, "moodle_id"])
    assert world.moodle_sim.user(moodle_id)["lastname"] == "Renamed-By-Change"


def test_an_enrolment_added_in_zoho_reads_only_its_course(world: World, graded: dict):
    enrolments = world.zoho_sim.records("BTEC_Enrollments")
    held = world.store.moodle.enrolments(TENANT)
    courses = world.store.moodle.id_map(TENANT, "course")["moodle_id"].astype(int)
    students = world.store.moodle.id_map(TENANT, "user")
    students = students[students["zoho_module"] == "students"]
    target = next(c for c in courses.index if int(courses[c]) in graded["courses"])
    inside = set(held.loc[held["moodle_course_id"] == int(courses[target]), "moodle_user_id"].astype(int))
    newcomer = next(z for z, m in students["moodle_id"].items() if int(m) not in inside)
    assert enrolments  # the demo school has enrolments
    world.zoho_sim.insert("BTEC_Enrollments", {"Enrolled_Students": newcomer, "Classes": target})
    world.sync_zoho()
    made = _run(world)
    reads = [r for r in world.moodle_sim.requests if r.function == "core_enrol_get_enrolled_users"]
    assert {int(r.params["courseid"]) for r in reads} == {int(courses[target])}
    assert made["enrol_manual_enrol_users"] == 1
    uid = int(students.loc[newcomer, "moodle_id"])
    assert any(
        e["userid"] == uid and e["roleid"] == 5 for e in world.moodle_sim.enrolments(int(courses[target]))
    )


def test_an_event_naming_a_course_reads_that_course_in_full(world: World, graded: dict):
    course = graded["taught"][0]
    quiz = world.moodle_sim.add_grade_item(course, "Quiz 1", grademax=10.0, itemmodule="quiz")
    learner = graded["learners"][course][0]
    world.moodle_sim.set_grade(course, learner, quiz, 8.0)
    # a quiz is no assignment: the read by change cannot see it
    by_change = read_grades(world.moodle(), world.store, TENANT)
    assert by_change.mode == "by change" and by_change.grades.empty
    world.moodle_sim.reset_log()
    read = read_grades(world.moodle(), world.store, TENANT, course_ids=[course])
    assert read.mode == "courses"
    reads = [r for r in world.moodle_sim.requests if r.function == "gradereport_user_get_grade_items"]
    assert [(int(r.params["courseid"]), int(r.params["userid"])) for r in reads] == [(course, 0)]
    row = read.grades[read.grades["composite_key"] == f"{learner}_{quiz}"]
    assert row["btec_grade"].tolist() == ["Distinction"]  # 80 %
    assert len(read.grades) > len(graded["learners"][course])  # every learner's items, not only the quiz


def test_the_nightly_reconciliation_reads_every_gradebook_and_finds_drift(world: World, graded: dict):
    held = world.store.moodle.enrolments(TENANT)
    gone = held[held["role_id"] == 5].iloc[0]
    world.moodle_sim.fail_next(0)
    m = world.moodle()
    m.unenrol(
        [{"userid": int(gone["moodle_user_id"]), "courseid": int(gone["moodle_course_id"]), "roleid": 5}]
    )
    assert _run(world)["enrol_manual_enrol_users"] == 0  # by change: Moodle-only drift is not looked for

    made = _run(world, full=True)
    reads = [r for r in world.moodle_sim.requests if r.function == "gradereport_user_get_grade_items"]
    assert {int(r.params["courseid"]) for r in reads} == set(graded["courses"])
    assert {
        int(r.params["courseid"])
        for r in world.moodle_sim.requests
        if r.function == "core_enrol_get_enrolled_users"
    } >= set(graded["courses"])
    assert made["enrol_manual_enrol_users"] == 1  # the enrolment removed by hand is restored
    drift = world.store.moodle.drift(TENANT, "enrolment")
    assert (drift["kind"] == "missing").any()


def test_the_read_position_is_the_sites_clock_less_the_overlap_and_a_failed_read_keeps_it(
    world: World, graded: dict
):
    answered = world.moodle().assign_grades(
        [a["id"] for a in world.moodle().assignments(graded["courses"])], since=0
    )
    latest = max(int(g["timemodified"]) for a in answered for g in a["grades"])
    position = world.store.moodle.read_position(TENANT, POSITION)
    assert position.since == latest - SINCE_OVERLAP_SECONDS and position.last_full_at is not None

    course = graded["taught"][1]
    learner = graded["learners"][course][0]
    world.moodle_sim.set_grade(course, learner, graded["items"][course], 12.0)
    world.moodle_sim.fail_function("gradereport_user_get_grade_items", "invalidrecord", "gone", count=10)
    with pytest.raises(Exception):  # noqa: B017 (the client's error type is not what this test is about)
        read_grades(world.moodle(max_retries=0), world.store, TENANT)
    assert world.store.moodle.read_position(TENANT, POSITION) == position  # not moved
    world.moodle_sim.fail_function("gradereport_user_get_grade_items", "invalidrecord", "gone", count=0)
    again = read_grades(world.moodle(), world.store, TENANT)
    assert again.grades["composite_key"].tolist() == [f"{learner}_{graded['items'][course]}"]
    assert again.grades["btec_grade"].tolist() == ["Refer"]


def test_a_read_position_older_than_a_day_makes_the_next_run_read_in_full(world: World, graded: dict):
    position = world.store.moodle.read_position(TENANT, POSITION)
    assert position.last_full_at is not None
    stale = position.last_full_at.replace(year=position.last_full_at.year - 1)
    world.store.moodle.save_read_position(TENANT, POSITION, ReadPosition(position.since, stale))
    assert read_grades(world.moodle(), world.store, TENANT).mode == "full"
    assert read_grades(world.moodle(), world.store, TENANT).mode == "by change"


def test_reconcile_by_change_with_nothing_pending_reads_nothing(world: World):
    world.provision()
    world.moodle_sim.reset_log()
    for spec in ENTITIES:
        report = reconcile(spec, world.moodle(), world.store, TENANT, full=False)
        assert report.pushes == [] and report.plan.empty
    assert world.moodle_sim.requests == []
    users = reconcile(entity("users"), world.moodle(), world.store, TENANT, full=False)
    assert users.unchanged > 0 and len(users.skipped)  # the unusable records are still named
