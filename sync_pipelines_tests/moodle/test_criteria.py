"""BTEC criteria end to end on the simulators: a unit's criteria become a rubric on its class's
assessment, a learner's filling comes back to Zoho's BTEC_Grades with the grade it implies."""

import json

import pandas as pd
import pytest

from sync_pipelines.btec import unit_criteria
from sync_pipelines.moodle.criteria import assessable_courses, reconcile_rubrics
from sync_pipelines.moodle.entities import ENTITIES
from sync_pipelines.moodle.grades import collect_grades
from sync_pipelines.moodle.reconcile import reconcile
from sync_pipelines.tenants import GradingConfig
from sync_pipelines.writeback import write_back_grades
from sync_pipelines.zoho.modules import module
from sync_pipelines_tests.moodle.conftest import TENANT, World

SERVICE_USER = 2


@pytest.fixture
def school(world: World) -> dict:
    """The world provisioned, with a BTEC assessment in the course of a class whose unit has P, M and
    D criteria, and a student enrolled there."""
    m = world.moodle()
    for spec in ENTITIES:
        reconcile(spec, m, world.store, TENANT)
    found = assessable_courses(world.store, TENANT)
    # The demo school has classes of units with P, M and D criteria and learners: none is a failure.
    assert not found.empty, "no class of a unit with P, M and D criteria and a learner"
    course, klass, unit = (
        int(found["course_id"].iloc[0]),
        found["class_zoho_id"].iloc[0],
        found["unit_zoho_id"].iloc[0],
    )
    held = world.store.moodle.enrolments(TENANT)
    learners = held[(held["moodle_course_id"] == course) & (held["role_id"] == 5)]
    criteria = unit_criteria(world.store.read_table(TENANT, module("units")))
    made = world.moodle_sim.add_assignment(course, "BTEC assignment 1")
    other = world.moodle_sim.add_assignment(course, "Practice quiz write-up")
    return {
        "unit": unit,
        "class": klass,
        "course": course,
        "assignment": made,
        "other": other,
        "learner": int(learners["moodle_user_id"].iloc[0]),
        "codes": list(criteria[criteria["unit_id"] == unit]["code"]),
    }


def _rubric(world: World, cmid: int) -> dict:
    [area] = world.moodle().grading_definitions([cmid])
    [rubric] = [d for d in area["definitions"] if d["method"] == "rubric"]
    return {c["description"].split(":")[0]: c for c in rubric["rubric"]["rubric_criteria"]}


def _grade(world: World, school: dict, met: set[str]) -> None:
    rubric = _rubric(world, school["assignment"]["cmid"])
    filling = {
        int(c["id"]): {
            "levelid": int(next(lv["id"] for lv in c["levels"] if lv["score"] == (1 if code in met else 0))),
            "remark": "" if code in met else f"{code}: not yet shown",
        }
        for code, c in rubric.items()
    }
    world.moodle().save_assign_grade(
        school["assignment"]["assignmentid"], school["learner"], rubric=filling, comment="<p>Well argued.</p>"
    )


def _through(world: World, grading: GradingConfig | None = None, *, full: bool = False) -> pd.DataFrame:
    m = world.moodle()
    reconcile_rubrics(m, world.store, TENANT, grading or GradingConfig(), service_user_id=SERVICE_USER)
    return collect_grades(m, world.store, TENANT, grading=grading or GradingConfig(), full=full)


def test_the_units_criteria_become_the_rubric_of_its_assessment_once(world: World, school: dict):
    report = reconcile_rubrics(
        world.moodle(), world.store, TENANT, GradingConfig(), service_user_id=SERVICE_USER
    )
    rubrics = report.rubrics.set_index("cmid")
    assert list(rubrics.index) == [school["assignment"]["cmid"]]  # the practice write-up is no assessment
    assert rubrics.at[school["assignment"]["cmid"], "status"] == "create"
    rubric = _rubric(world, school["assignment"]["cmid"])
    assert list(rubric) == school["codes"]
    assert all(
        [lv["definition"] for lv in c["levels"]] == ["Not achieved", "Achieved"] for c in rubric.values()
    )
    ids = {code: (c["id"], [lv["id"] for lv in c["levels"]]) for code, c in rubric.items()}

    again = reconcile_rubrics(
        world.moodle(), world.store, TENANT, GradingConfig(), service_user_id=SERVICE_USER
    )
    assert again.pushes == [] and set(again.rubrics["status"]) == {"unchanged"}

    # a description edited in Zoho is applied, with Moodle's ids kept
    world.zoho_sim.update(
        "BTEC", school["unit"], P1_description="Explain the purpose of the unit's key ideas"
    )
    world.sync_zoho()
    edited = reconcile_rubrics(
        world.moodle(), world.store, TENANT, GradingConfig(), service_user_id=SERVICE_USER
    )
    assert [p.action for p in edited.pushes] == ["update"]
    after = _rubric(world, school["assignment"]["cmid"])
    assert after["P1"]["description"] == "P1: Explain the purpose of the unit's key ideas"
    assert {code: (c["id"], [lv["id"] for lv in c["levels"]]) for code, c in after.items()} == ids


@pytest.mark.parametrize(
    ("missed", "letter"),
    [("P1", "R"), ("M1", "P"), ("D1", "M"), (None, "D")],
    ids=["all-P-but-one", "all-P-M-but-one", "all-P-M-D-but-one", "everything"],
)
def test_a_learners_criteria_reach_zoho_with_the_grade_they_imply(world: World, school: dict, missed, letter):
    _through(world)
    met = set(school["codes"]) - {missed}
    _grade(world, school, met)
    grades = _through(world)
    row = grades[(grades["grading"] == "criteria") & (grades["moodle_user_id"] == school["learner"])].iloc[0]
    assert row["letter"] == letter
    assert json.loads(row["criteria"]) == {c: c in met for c in sorted(school["codes"])}
    assert row["percentage"] != 0  # the gradebook's share of points is kept, never used for the grade

    report = write_back_grades(world.zoho(), world.store, TENANT)
    assert all(p.ok for p in report.pushes)
    [record] = [
        r
        for r in world.zoho_sim.records("BTEC_Grades")
        if r.get("Moodle_Grade_Composite_Key") == row["composite_key"]
    ]
    assert record["Grade"] == letter
    assert record["Grade_Status"] == "Marking completed"
    assert record["Attempt_Number"] == 1
    assert record["Feedback"] == "Well argued."
    rows = record["Learning_Outcomes_Assessm"]
    assert [r["Criterion_Code"] for r in rows] == school["codes"]
    assert {r["Criterion_Code"]: r["Achieved"] for r in rows} == {c: c in met for c in school["codes"]}
    assert {r["Criterion_Code"]: r["Feedback"] for r in rows if r["Feedback"]} == {
        c: f"{c}: not yet shown" for c in school["codes"] if c not in met
    }


def test_a_status_staff_moved_forward_stays_and_a_criterion_added_after_grading_is_drift(
    world: World, school: dict
):
    _through(world)
    _grade(world, school, set(school["codes"]) - {"D1"})
    _through(world)
    write_back_grades(world.zoho(), world.store, TENANT)
    key = f"{school['learner']}_"
    [record] = [
        r
        for r in world.zoho_sim.records("BTEC_Grades")
        if str(r.get("Moodle_Grade_Composite_Key", "")).startswith(key)
    ]
    world.zoho_sim.update("BTEC_Grades", record["id"], Grade_Status="Released")
    world.sync_zoho()

    _grade(world, school, set(school["codes"]))  # regraded: every criterion met
    _through(world)
    write_back_grades(world.zoho(), world.store, TENANT)
    record = world.zoho_sim.record("BTEC_Grades", record["id"])
    assert record["Grade"] == "D" and record["Grade_Status"] == "Released"

    # a criterion added in Zoho after learners were graded is not pushed over their fillings
    free = next(f"M{n}" for n in range(1, 10) if f"M{n}" not in school["codes"])
    world.zoho_sim.update("BTEC", school["unit"], **{f"{free}_description": "A new merit criterion"})
    world.sync_zoho()
    before = _rubric(world, school["assignment"]["cmid"])
    report = reconcile_rubrics(
        world.moodle(), world.store, TENANT, GradingConfig(), service_user_id=SERVICE_USER
    )
    assert report.pushes == []
    assert _rubric(world, school["assignment"]["cmid"]) == before
    drift = world.store.moodle.drift(TENANT, "rubric")
    assert len(drift) == 1 and free in drift["detail"].iloc[0] and "rubric editor" in drift["detail"].iloc[0]


def test_an_incomplete_filling_is_reported_not_graded(world: World, school: dict):
    _through(world)
    rubric = _rubric(world, school["assignment"]["cmid"])
    first = next(iter(rubric.values()))
    world.moodle().save_assign_grade(
        school["assignment"]["assignmentid"],
        school["learner"],
        rubric={int(first["id"]): int(first["levels"][1]["id"])},
    )
    grades = _through(world)
    row = grades[(grades["grading"] == "criteria") & (grades["moodle_user_id"] == school["learner"])].iloc[0]
    assert row["letter"] is None and "incomplete" in row["reason"]
    report = write_back_grades(world.zoho(), world.store, TENANT)
    assert row["composite_key"] not in {p.key for p in report.pushes}
    assert "incomplete" in report.skipped.set_index("key").at[row["composite_key"], "reason"]


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ({"mod/assign:viewgrades", "mod/assign:grade"}, "mod/assign:viewgrades"),
        ({"mod/assign:view"}, "mod/assign:view"),
    ],
)
def test_the_preflight_names_what_criteria_grading_cannot_see_without(
    world: World, school: dict, missing, named
):
    from sync_pipelines.moodle.preflight import CHECK_GRADING, preflight

    _through(world)
    pair = [(school["assignment"]["cmid"], school["assignment"]["assignmentid"])]
    assert all(f.ok for f in preflight(world.moodle(), assessments=pair) if f.check == CHECK_GRADING)
    world.moodle_sim.set_missing_capabilities(missing)
    failed = [f for f in preflight(world.moodle(), assessments=pair) if f.check == CHECK_GRADING and not f.ok]
    # without mod/assign:view Moodle refuses the grades too: the first finding names the cause
    assert failed and failed[0].capability == named


def test_a_school_with_other_subform_names_gets_its_own_rows(world: World, school: dict, tmp_path):
    import yaml

    from sync_pipelines.tenants import read_tenants

    path = tmp_path / "tenants.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "tenants": [
                    {
                        "id": TENANT,
                        "zoho": {
                            "accounts_url": "http://127.0.0.1:1",
                            "client_id_env": "X_ID",
                            "client_secret_env": "X_SECRET",
                            "refresh_token_env": "X_REFRESH",
                        },
                        "grading": {
                            "subform_fields": {
                                "code": "Code",
                                "title": "Title",
                                "achieved": "Met",
                                "feedback": "Notes",
                            },
                        },
                    }
                ]
            }
        )
    )
    tenant = read_tenants(path).get(TENANT)
    _through(world, tenant.grading)
    _grade(world, school, set(school["codes"]) - {"D1"})
    grades = _through(world, tenant.grading)
    write_back_grades(world.zoho(), world.store, TENANT, tenant=tenant)
    key = grades[(grades["grading"] == "criteria") & (grades["moodle_user_id"] == school["learner"])][
        "composite_key"
    ].iloc[0]
    [record] = [
        r for r in world.zoho_sim.records("BTEC_Grades") if r.get("Moodle_Grade_Composite_Key") == key
    ]
    assert record["Grade"] == "M"
    assert [r["Code"] for r in record["Learning_Outcomes_Assessm"]] == school["codes"]
    assert {r["Code"]: r["Met"] for r in record["Learning_Outcomes_Assessm"]}["D1"] is False


def test_a_resubmission_is_attempt_2_and_a_pass_still_missed_on_the_last_attempt_is_the_schools_value(
    world: World, school: dict
):
    grading = GradingConfig(attempts=type(GradingConfig().attempts)(last=2, missed_on_last="RR"))
    _through(world, grading)
    rubric = _rubric(world, school["assignment"]["cmid"])
    filling = {
        int(c["id"]): int(next(lv["id"] for lv in c["levels"] if lv["score"] == (0 if code == "P1" else 1)))
        for code, c in rubric.items()
    }
    a, learner = school["assignment"]["assignmentid"], school["learner"]
    world.moodle().save_assign_grade(a, learner, rubric=filling)  # P1 missed: R
    first = _through(world, grading)
    row = first[(first["grading"] == "criteria") & (first["moodle_user_id"] == learner)].iloc[0]
    assert (row["letter"], row["attempt"]) == ("R", 1)
    write_back_grades(world.zoho(), world.store, TENANT)

    # reopened for a resubmission: until it is marked, the learner's item waits (never graded by
    # the gradebook's percentage) and Zoho keeps the first attempt's R
    world.moodle().save_assign_grade(a, learner, rubric=filling, addattempt=True)
    # A reopen grades nothing: mod_assign_get_grades leaves the learner out until the new attempt
    # is marked, so the read by change has nothing to read and Zoho's R stands; the nightly full
    # read shows the item waiting.
    by_change = _through(world, grading)
    assert by_change[by_change["moodle_user_id"] == learner].empty
    waiting = _through(world, grading, full=True)
    row = waiting[waiting["composite_key"] == row["composite_key"]].iloc[0]
    assert row["letter"] is None and "latest attempt" in row["reason"]
    assert not [
        p
        for p in write_back_grades(world.zoho(), world.store, TENANT).pushes
        if p.key == row["composite_key"]
    ]

    world.moodle().save_assign_grade(a, learner, rubric=filling, attemptnumber=1)  # P1 still missed
    second = _through(world, grading)
    row = second[(second["grading"] == "criteria") & (second["moodle_user_id"] == learner)].iloc[0]
    assert (row["letter"], row["attempt"]) == ("RR", 2)


def test_a_description_with_an_ampersand_is_not_written_again_on_every_run(world: World, school: dict):
    world.zoho_sim.update("BTEC", school["unit"], P1_description="Design & develop a database")
    world.sync_zoho()
    first = reconcile_rubrics(
        world.moodle(), world.store, TENANT, GradingConfig(), service_user_id=SERVICE_USER
    )
    assert [p.action for p in first.pushes] == ["create"]
    assert (
        _rubric(world, school["assignment"]["cmid"])["P1"]["description"]
        == "P1: Design &amp; develop a database"
    )
    again = reconcile_rubrics(
        world.moodle(), world.store, TENANT, GradingConfig(), service_user_id=SERVICE_USER
    )
    assert again.pushes == []
