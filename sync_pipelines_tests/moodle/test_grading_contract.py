"""Advanced grading (a BTEC rubric on an assignment): the simulator against a real Moodle 4.5, and the
client's methods against the traps the real site showed.

``sync_pipelines_tests/fixtures/moodle45/grading/<wsfunction>.json`` holds what a real Moodle 4.5+
(Build: 20241205) answered (recorded by ``scripts/record_moodle45_grading.py`` on the site that
``make_site.php`` prepared; the README there says how). The contract test builds the same site in the
simulator (the course, learners and enrolments over the web service, the assignments with
:meth:`MoodleSimulator.add_assignment`), replays every case in recording order, and compares each
answer with the recorded one:

* the same keys at every level and the same JSON types (int, float, string, bool, null, list,
  object), lists element by element;
* ids through a mapping: each recorded id of a kind (course, user, cm, context, assignment,
  definition, criterion, level, assign grade, instance, filling, grade item, grade category) stands
  for one simulator id, learnt where it first appears and checked everywhere after; so a filling's
  ``levelid`` must be the simulator's id of the same level, an instance's ``itemid`` that of the
  same attempt's grade;
* times (``time*``, ``gradedategraded``, ``gradedatesubmitted``) by type only;
* every other value exactly: criteria order, level scores, grades, attempt numbers, statuses,
  remarks, feedback, warnings, errors... except what :data:`SIM_MAY_DIFFER` lists, with its reason.
"""

import fnmatch
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from sync_pipelines.moodle.client import (
    MoodleAuthError,
    MoodleClient,
    MoodleRecordError,
    php_form,
    rubric_newid_collisions,
)
from sync_pipelines.sandbox.moodle_sim import ADMIN_USER_ID, REST_PATH, ROLE_STUDENT, MoodleSimulator
from sync_pipelines.sandbox.recorded import resolve as _resolve

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "moodle45" / "grading"
SITE: dict = json.loads((FIXTURES / "site.json").read_text())
TOKEN = "grading-contract-token"
TENANT = "school_a"
#: An id no object has; the recorder sent it literally (recorded cases keep it).
ABSENT_ID = 987654321
START = datetime(2026, 12, 7, 15, 0, tzinfo=UTC)

#: Keys compared by type only: times of the recording site's clock.
TIME_KEYS = frozenset({"timecreated", "timemodified", "gradedategraded", "gradedatesubmitted"})

#: ``(function glob, path glob) -> why`` the simulator's value may differ (types are still compared).
SIM_MAY_DIFFER: dict[tuple[str, str], str] = {
    ("gradereport_user_get_grade_items", "$.usergrades[].gradeitems[].feedbackformat"): (
        "the simulator's gradebook answers 0 for an item without feedback where Moodle answers 2 "
        "(FORMAT_PLAIN); the pipeline reads the feedback text, never its format. Items with an "
        "assignment's feedback comment answer its format (1) in both."
    ),
}


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: int) -> int:
        self.now += timedelta(seconds=seconds)
        return int(self.now.timestamp())


# --- the recording --------------------------------------------------------------------------------


def _cases() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(FIXTURES.glob("*.json")):
        if path.name == "site.json":
            continue
        out += [(path.stem, case) for case in json.loads(path.read_text())]
    return sorted(out, key=lambda fc: fc[1]["seq"])


CASES = _cases()
_PART = re.compile(r"[^.\[\]]+|\[\d+\]")


def _at(answer: Any, path: str) -> Any:
    value = answer
    for part in _PART.findall(path):
        value = value[int(part[1:-1])] if part.startswith("[") else value[part]
    return value


def _ws(sim: MoodleSimulator, function: str, params: dict) -> Any:
    query = {"wstoken": TOKEN, "wsfunction": function, "moodlewsrestformat": "json"}
    response = requests.post(sim.base_url + REST_PATH, params=query, data=php_form(params), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _build_site(sim: MoodleSimulator) -> dict[str, Any]:
    """What make_site.php made, through the simulator's web service and add_assignment(); the refs."""
    course = SITE["course"]
    fields = {
        "fullname": course["fullname"],
        "shortname": course["shortname"],
        "idnumber": course["idnumber"],
    }
    (made,) = _ws(
        sim, "core_course_create_courses", {"courses": [fields | {"categoryid": course["categoryid"]}]}
    )
    refs: dict[str, Any] = {"course": made["id"]}
    users = [
        {k: u[k] for k in ("username", "firstname", "lastname", "email", "idnumber")}
        | {"password": "Passw0rd!x"}
        for u in SITE["users"]
    ]
    for described, created in zip(
        SITE["users"], _ws(sim, "core_user_create_users", {"users": users}), strict=True
    ):
        refs[described["ref"]] = created["id"]
    enrolments = [
        {"roleid": role, "userid": refs[u["ref"]], "courseid": made["id"]}
        for u in SITE["users"]
        for role in u["roleids"]
    ]
    assert _ws(sim, "enrol_manual_enrol_users", {"enrolments": enrolments}) is None
    settings = ("attemptreopenmethod", "maxattempts", "submissiondrafts", "sendstudentnotifications")
    for unit in SITE["assignments"]:
        ids = sim.add_assignment(
            made["id"],
            unit["name"],
            grade=unit["grade"],
            intro=unit["intro"],
            introformat=unit["introformat"],
            onlinetext=bool(unit["assignsubmission_onlinetext_enabled"]),
            feedback_comments=bool(unit["assignfeedback_comments_enabled"]),
            **{k: unit[k] for k in settings},
        )
        u = unit["ref"]
        refs |= {f"cm_{u}": ids["cmid"], f"assign_{u}": ids["assignmentid"], f"ctx_{u}": ids["contextid"]}
        refs[f"item_{u}"] = ids["gradeitemid"]
    return refs


def _recorded_refs() -> dict[str, Any]:
    refs: dict[str, Any] = {"course": SITE["course"]["id"]}
    refs |= {u["ref"]: u["id"] for u in SITE["users"]}
    for unit in SITE["assignments"]:
        u = unit["ref"]
        refs |= {f"cm_{u}": unit["cmid"], f"assign_{u}": unit["id"], f"ctx_{u}": unit["contextid"]}
        refs[f"item_{u}"] = unit["gradeitemid"]
    return refs


# --- ids: one recorded id <-> one simulator id, per kind --------------------------------------------

#: ``(function glob, path glob) -> kind``, or a function of the value's parent object -> kind.
_IdKind = str | Callable[[dict], str | None]
ID_KINDS: dict[tuple[str, str], _IdKind] = {
    ("core_grading_get_definitions", "$.areas[].cmid"): "cm",
    ("core_grading_get_definitions", "$.areas[].contextid"): "context",
    ("core_grading_get_definitions", "$.areas[].definitions[].id"): "definition",
    ("core_grading_get_definitions", "$.areas[].definitions[].copiedfromid"): "definition",
    ("core_grading_get_definitions", "$.areas[].definitions[].user*"): "user",
    ("core_grading_get_definitions", "$.areas[].definitions[].rubric.rubric_criteria[].id"): "criterion",
    ("core_grading_get_definitions", "$.areas[].definitions[].rubric.rubric_criteria[].levels[].id"): "level",
    ("core_grading_get_definitions", "$.warnings[].itemid"): "cm",
    ("core_grading_get_gradingform_instances", "$.instances[].id"): "instance",
    ("core_grading_get_gradingform_instances", "$.instances[].raterid"): "user",
    ("core_grading_get_gradingform_instances", "$.instances[].itemid"): "assign_grade",
    ("core_grading_get_gradingform_instances", "$.instances[].rubric.criteria[].id"): "filling",
    ("core_grading_get_gradingform_instances", "$.instances[].rubric.criteria[].criterionid"): "criterion",
    ("core_grading_get_gradingform_instances", "$.instances[].rubric.criteria[].levelid"): "level",
    ("mod_assign_get_assignments", "$.courses[].id"): "course",
    ("mod_assign_get_assignments", "$.courses[].assignments[].id"): "assign",
    ("mod_assign_get_assignments", "$.courses[].assignments[].cmid"): "cm",
    ("mod_assign_get_assignments", "$.courses[].assignments[].course"): "course",
    ("mod_assign_get_assignments", "$.warnings[].itemid"): lambda w: (
        "course" if w.get("item") == "course" else "cm"
    ),
    ("mod_assign_get_grades", "$.assignments[].assignmentid"): "assign",
    ("mod_assign_get_grades", "$.assignments[].grades[].id"): "assign_grade",
    ("mod_assign_get_grades", "$.assignments[].grades[].userid"): "user",
    ("mod_assign_get_grades", "$.assignments[].grades[].grader"): "user",
    ("mod_assign_get_grades", "$.warnings[].itemid"): "assign",
    ("gradereport_user_get_grade_items", "$.usergrades[].courseid"): "course",
    ("gradereport_user_get_grade_items", "$.usergrades[].userid"): "user",
    ("gradereport_user_get_grade_items", "$.usergrades[].gradeitems[].id"): "grade_item",
    ("gradereport_user_get_grade_items", "$.usergrades[].gradeitems[].cmid"): "cm",
    ("gradereport_user_get_grade_items", "$.usergrades[].gradeitems[].categoryid"): "grade_category",
    ("gradereport_user_get_grade_items", "$.usergrades[].gradeitems[].iteminstance"): (
        lambda item: "assign" if item.get("itemtype") == "mod" else "grade_category"
    ),
}


@dataclass
class IdMap:
    """Recorded id -> simulator id, per kind, and back (each side's ids stand for one object)."""

    forward: dict[tuple[str, Any], Any] = field(default_factory=dict)
    backward: dict[tuple[str, Any], Any] = field(default_factory=dict)

    def seed(self, kind: str, recorded: Any, got: Any) -> None:
        self.forward[(kind, recorded)] = got
        self.backward[(kind, got)] = recorded

    def check(self, kind: str, recorded: Any, got: Any, path: str) -> str | None:
        if recorded is None or got is None:
            return None if recorded is got else f"{path}: Moodle sent {recorded!r}, the simulator {got!r}"
        if (kind, recorded) in self.forward:
            want = self.forward[(kind, recorded)]
            if want != got:
                return f"{path}: Moodle's {kind} {recorded} is the simulator's {want}, but it answered {got}"
            return None
        if (kind, got) in self.backward:
            other = self.backward[(kind, got)]
            return f"{path}: the simulator's {kind} {got} stands for Moodle's {other}, but Moodle sent {recorded}"
        self.seed(kind, recorded, got)
        return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "list" if isinstance(value, list) else "object"


def _matches(table: dict[tuple[str, str], Any], function: str, path: str) -> Any:
    """The value of the first ``(function glob, path glob)`` matching; in a path glob only ``*`` is
    special (within one key), brackets are literal."""
    for (fglob, pglob), value in table.items():
        pattern = re.escape(pglob).replace(r"\*", r"[^.\[\]]*")
        if fnmatch.fnmatchcase(function, fglob) and re.fullmatch(pattern, path):
            return value
    return None


def _differences(
    function: str, recorded: Any, got: Any, ids: IdMap, path: str = "$", parent: Any = None
) -> list[str]:
    """What differs between Moodle's answer and the simulator's, as readable lines."""
    generic = re.sub(r"\[\d+\]", "[]", path)
    if _kind(recorded) != _kind(got):
        return [
            f"{path}: Moodle sent {_kind(recorded)} {json.dumps(recorded)[:150]}, the simulator {_kind(got)} {json.dumps(got)[:150]}"
        ]
    if isinstance(recorded, dict):
        out = [f"{path}.{k}: missing from the simulator's answer" for k in recorded.keys() - got.keys()]
        out += [f"{path}.{k}: not in Moodle's answer" for k in got.keys() - recorded.keys()]
        for key in recorded.keys() & got.keys():
            out += _differences(function, recorded[key], got[key], ids, f"{path}.{key}", recorded)
        return out
    if isinstance(recorded, list):
        if len(recorded) != len(got):
            return [
                f"{path}: Moodle sent {len(recorded)} elements, the simulator {len(got)}: {json.dumps(got)[:300]}"
            ]
        out = []
        for i, (r, g) in enumerate(zip(recorded, got, strict=True)):
            out += _differences(function, r, g, ids, f"{path}[{i}]", recorded)
        return out
    kind = _matches(ID_KINDS, function, generic)
    if callable(kind):
        kind = kind(parent if isinstance(parent, dict) else {})
    if kind:
        problem = ids.check(kind, recorded, got, path)
        return [problem] if problem else []
    key = generic.rsplit(".", 1)[-1]
    if key in TIME_KEYS or _matches(SIM_MAY_DIFFER, function, generic) is not None:
        return []
    if recorded != got:
        return [f"{path}: Moodle sent {json.dumps(recorded)}, the simulator {json.dumps(got)}"]
    return []


@pytest.fixture(scope="module")
def replay() -> Iterator[dict[int, list[str]]]:
    """Every recorded case replayed against one simulator, in recording order: seq -> differences."""
    clock = Clock()
    sim = MoodleSimulator(tokens={TOKEN: None}, clock=clock)
    sim.start()
    try:
        refs = _build_site(sim)
        recorded_refs = _recorded_refs()
        ids = IdMap()
        for name, value in recorded_refs.items():
            kind = {
                "course": "course",
                "cm": "cm",
                "assign": "assign",
                "ctx": "context",
                "item": "grade_item",
            }.get(name.split("_")[0], "user")
            ids.seed(kind, value, refs[name])
        for kind in ("user", "cm", "course", "assign", "definition"):
            ids.seed(kind, ABSENT_ID, ABSENT_ID)
        for special in (ADMIN_USER_ID, 0, -1):  # the admin (the token's user), "nobody", "hidden"
            ids.seed("user", special, special)
        differences: dict[int, list[str]] = {}
        for function, case in CASES:
            if "mark" in case:
                clock.advance(5)
                refs[case["mark"]] = int(clock.now.timestamp())
                clock.advance(5)
            got = _ws(sim, function, _resolve(case["params"], refs))
            for name, path in (case.get("refs") or {}).items():
                try:
                    refs[name] = _at(got, path)
                except (KeyError, IndexError, TypeError):
                    refs[name] = None
            differences[case["seq"]] = _differences(function, case["answer"], got, ids)
        yield differences
    finally:
        sim.stop()


def _case_id(fc: tuple[str, dict]) -> str:
    function, case = fc
    return f"{case['seq']:02d}-{function}-{case['case'][:60]}"


def test_the_recording_covers_the_functions_and_the_traps() -> None:
    functions = {f for f, _ in CASES}
    assert functions == {
        "core_grading_get_definitions",
        "core_grading_save_definitions",
        "core_grading_get_gradingform_instances",
        "mod_assign_get_assignments",
        "mod_assign_get_grades",
        "mod_assign_save_grade",
        "gradereport_user_get_grade_items",
    }
    errors = {c["answer"].get("errorcode") for _, c in CASES if isinstance(c["answer"], dict)}
    assert {"invalidparameter", "invalid_method_name", "dmlwriteexception", "invalidrecord"} <= errors
    grades = {
        g["grade"]
        for f, c in CASES
        if f == "mod_assign_get_grades"
        for a in c["answer"]["assignments"]
        for g in a["grades"]
    }
    assert {"80.00000", "40.00000", "-1.00000", "100.00000", "66.66667"} <= grades
    attempts = {
        g["attemptnumber"]
        for f, c in CASES
        if f == "mod_assign_get_grades"
        for a in c["answer"]["assignments"]
        for g in a["grades"]
    }
    assert attempts == {0, 1}
    text = json.dumps([c for _, c in CASES]) + (FIXTURES / "site.json").read_text()
    assert "wstoken" not in text and "token" not in SITE
    assert not re.search(r"\b[0-9a-f]{32}\b", text)  # no Moodle token (32 hex digits) anywhere


@pytest.mark.parametrize("function_case", CASES, ids=_case_id)
def test_simulator_answers_like_moodle(function_case: tuple[str, dict], replay: dict[int, list[str]]) -> None:
    function, case = function_case
    differences = replay[case["seq"]]
    assert not differences, "\n".join([f"{function} ({case['case']}):", *differences])


# --- the traps, through the client ------------------------------------------------------------------

LEVELS = [{"score": 0, "definition": "Not achieved"}, {"score": 1, "definition": "Achieved"}]


def _criteria(count: int, prefix: str = "P") -> list[dict]:
    return [{"sortorder": n, "description": f"{prefix}{n}", "levels": LEVELS} for n in range(1, count + 1)]


@dataclass
class Site:
    sim: MoodleSimulator
    client: MoodleClient
    clock: Clock
    course: int
    learners: list[int]
    cmid: int
    assignment: int
    contextid: int
    gradeitem: int

    def save_rubric(self, criteria: list[dict], name: str = "BTEC Unit 1") -> dict:
        self.client.save_grading_definition(
            cmid=self.cmid, contextid=self.contextid, name=name, criteria=criteria, usercreated=ADMIN_USER_ID
        )
        (area,) = self.client.grading_definitions([self.cmid])
        (definition,) = area["definitions"]
        return definition

    def fill(self, definition: dict, achieved: int, *, only: int | None = None) -> dict[int, int]:
        """criterion id -> level id: the first ``achieved`` criteria Achieved, the rest Not achieved."""
        criteria = definition["rubric"]["rubric_criteria"][: only or None]
        return {c["id"]: c["levels"][1 if n < achieved else 0]["id"] for n, c in enumerate(criteria)}

    def grades(self, since: int = 0) -> dict[int, dict]:
        """user id -> the grade row of assign_grades."""
        return {
            g["userid"]: g for a in self.client.assign_grades([self.assignment], since) for g in a["grades"]
        }

    def gradebook(self, user_id: int) -> dict:
        (usergrade,) = self.client.get_grade_items(self.course, user_id)
        return next(i for i in usergrade["gradeitems"] if i["id"] == self.gradeitem)


@pytest.fixture
def site() -> Iterator[Site]:
    clock = Clock()
    sim = MoodleSimulator(tokens={TOKEN: None}, clock=clock)
    sim.start()
    client = MoodleClient(tenant_id=TENANT, base_url=sim.base_url, token=TOKEN, sleep=lambda _s: None)
    try:
        (course,) = client.create_courses([{"fullname": "BTEC IT", "shortname": "BTEC-IT", "categoryid": 1}])
        users = client.create_users(
            [
                {
                    "username": f"l{n}",
                    "firstname": "L",
                    "lastname": str(n),
                    "email": f"l{n}@x.invalid",
                    "password": "Passw0rd!x",
                }
                for n in range(4)
            ]
        )
        learners = [u.value["id"] for u in users]
        client.enrol(
            [{"roleid": ROLE_STUDENT, "userid": u, "courseid": course.value["id"]} for u in learners]
        )
        ids = sim.add_assignment(course.value["id"], "Unit 1", grade=100)
        yield Site(
            sim,
            client,
            clock,
            course.value["id"],
            learners,
            ids["cmid"],
            ids["assignmentid"],
            ids["contextid"],
            ids["gradeitemid"],
        )
    finally:
        client.close()
        sim.stop()


def test_a_rubric_grades_the_share_of_points_into_the_gradebook(site: Site) -> None:
    (listed,) = site.client.assignments([site.course])
    assert (listed["id"], listed["cmid"], listed["grade"]) == (site.assignment, site.cmid, 100)
    (area,) = site.client.grading_definitions([site.cmid])
    assert (area["contextid"], area["activemethod"], area["definitions"]) == (site.contextid, None, [])
    definition = site.save_rubric(_criteria(5))
    criteria = definition["rubric"]["rubric_criteria"]
    assert [c["description"] for c in criteria] == ["P1", "P2", "P3", "P4", "P5"]
    assert all([lv["score"] for lv in c["levels"]] == [0, 1] for c in criteria)
    assert (definition["status"], definition["usercreated"]) == (20, ADMIN_USER_ID)

    site.client.save_assign_grade(
        site.assignment, site.learners[0], rubric=site.fill(definition, 4), comment="Good"
    )
    row = site.grades()[site.learners[0]]
    assert (row["grade"], row["attemptnumber"], row["grader"]) == ("80.00000", 0, ADMIN_USER_ID)
    item = site.gradebook(site.learners[0])
    assert (item["itemmodule"], item["graderaw"], item["grademax"], item["feedback"]) == (
        "assign",
        80,
        100,
        "Good",
    )
    (instance,) = site.client.gradingform_instances(definition["id"])
    assert instance["itemid"] == row["id"]
    assert [f["levelid"] for f in instance["rubric"]["criteria"]] == list(site.fill(definition, 4).values())


def test_an_incomplete_filling_is_accepted_and_scores_what_was_sent(site: Site) -> None:
    definition = site.save_rubric(_criteria(5))
    site.client.save_assign_grade(site.assignment, site.learners[0], rubric=site.fill(definition, 2, only=2))
    assert site.grades()[site.learners[0]]["grade"] == "40.00000"
    (instance,) = site.client.gradingform_instances(definition["id"])
    assert len(instance["rubric"]["criteria"]) == 2


def test_a_plain_grade_on_a_rubric_assignment_is_stored_as_minus_one(site: Site) -> None:
    definition = site.save_rubric(_criteria(5))
    site.client.save_assign_grade(site.assignment, site.learners[0], grade=73, comment="plain")
    assert site.grades()[site.learners[0]]["grade"] == "-1.00000"
    item = site.gradebook(site.learners[0])
    assert (item["graderaw"], item["feedback"]) == (None, "plain")
    # A feedback-only save on a learner graded by the rubric drops the grade and keeps the filling.
    site.client.save_assign_grade(site.assignment, site.learners[1], rubric=site.fill(definition, 5))
    assert site.grades()[site.learners[1]]["grade"] == "100.00000"
    site.client.save_assign_grade(site.assignment, site.learners[1], comment="feedback only")
    assert site.grades()[site.learners[1]]["grade"] == "-1.00000"
    assert site.gradebook(site.learners[1])["graderaw"] is None
    kept = [i for i in site.client.gradingform_instances(definition["id"]) if i["rubric"]["criteria"]]
    assert len(kept) == 1 and len(kept[0]["rubric"]["criteria"]) == 5


def test_an_update_with_ids_keeps_them_and_without_ids_orphans_the_fillings(site: Site) -> None:
    definition = site.save_rubric(_criteria(3))
    old = definition["rubric"]["rubric_criteria"]
    site.client.save_assign_grade(site.assignment, site.learners[0], rubric=site.fill(definition, 3))
    with_ids = [
        {
            "id": c["id"],
            "sortorder": c["sortorder"],
            "description": c["description"] + "!",
            "levels": c["levels"],
        }
        for c in old
    ]
    updated = site.save_rubric(with_ids, name="v2")
    assert [c["id"] for c in updated["rubric"]["rubric_criteria"]] == [c["id"] for c in old]
    assert [lv["id"] for c in updated["rubric"]["rubric_criteria"] for lv in c["levels"]] == [
        lv["id"] for c in old for lv in c["levels"]
    ]
    assert site.grades()[site.learners[0]]["grade"] == "100.00000"

    recreated = site.save_rubric(_criteria(3, prefix="Q"), name="v3")
    new = recreated["rubric"]["rubric_criteria"]
    assert recreated["id"] == definition["id"]
    assert not {c["id"] for c in new} & {c["id"] for c in old}
    (instance,) = site.client.gradingform_instances(definition["id"])
    orphaned = {f["criterionid"] for f in instance["rubric"]["criteria"]}
    assert orphaned == {c["id"] for c in old}  # the fillings name criteria that no longer exist
    assert site.gradebook(site.learners[0])["graderaw"] == 100  # and the gradebook keeps the grade
    # A regrade with the stale ids is taken as an empty form: the grade is lost, silently.
    site.client.save_assign_grade(site.assignment, site.learners[0], rubric=site.fill(definition, 3))
    assert site.grades()[site.learners[0]]["grade"] == "-1.00000"
    site.client.save_assign_grade(site.assignment, site.learners[0], rubric=site.fill(recreated, 2))
    assert site.grades()[site.learners[0]]["grade"] == "66.66667"
    assert site.gradebook(site.learners[0])["graderaw"] == 66.66667


def test_criteria_whose_temporary_ids_collide_are_refused_by_the_client(site: Site) -> None:
    three = {
        "sortorder": 1,
        "description": "R1",
        "levels": [*LEVELS, {"score": 2, "definition": "Distinction"}],
    }
    criteria = [three, *_criteria(2, prefix="S")]
    assert rubric_newid_collisions(criteria) == [0]
    assert rubric_newid_collisions(_criteria(5)) == []
    with pytest.raises(ValueError, match="positions 0"):
        site.client.save_grading_definition(
            cmid=site.cmid, contextid=site.contextid, name="x", criteria=criteria, usercreated=ADMIN_USER_ID
        )
    # What Moodle does with them (the simulator, as recorded): the first criterion is lost.
    now = int(site.clock.now.timestamp())
    definition = {
        "method": "rubric",
        "name": "x",
        "status": 20,
        "timecreated": now,
        "usercreated": 2,
        "timemodified": now,
        "usermodified": 2,
        "rubric": {"rubric_criteria": criteria},
    }
    area = {
        "cmid": site.cmid,
        "contextid": site.contextid,
        "component": "mod_assign",
        "areaname": "submissions",
        "activemethod": "rubric",
        "definitions": [definition],
    }
    assert site.client.call("core_grading_save_definitions", {"areas": [area]}) is None
    (saved,) = site.client.grading_definitions([site.cmid])[0]["definitions"]
    assert [c["description"] for c in saved["rubric"]["rubric_criteria"]] == ["S1", "S2"]


def test_a_definition_without_its_time_fields_is_invalidparameter(site: Site) -> None:
    definition = {
        "method": "rubric",
        "name": "x",
        "status": 20,
        "usercreated": 2,
        "timemodified": 0,
        "usermodified": 2,
        "rubric": {"rubric_criteria": _criteria(1)},
    }
    area = {
        "cmid": site.cmid,
        "contextid": site.contextid,
        "component": "mod_assign",
        "areaname": "submissions",
        "activemethod": "rubric",
        "definitions": [definition],
    }
    with pytest.raises(MoodleRecordError) as caught:
        site.client.call("core_grading_save_definitions", {"areas": [area]})
    assert caught.value.errorcode == "invalidparameter"
    assert site.client.grading_definitions([site.cmid])[0]["definitions"] == []


def test_active_only_before_any_method_is_an_error(site: Site) -> None:
    with pytest.raises(MoodleRecordError) as caught:
        site.client.grading_definitions([site.cmid], active_only=True)
    assert caught.value.errorcode == "invalid_method_name"


def test_since_filters_grades_and_fillings_by_timemodified(site: Site) -> None:
    definition = site.save_rubric(_criteria(5))
    site.client.save_assign_grade(site.assignment, site.learners[0], rubric=site.fill(definition, 1))
    since = site.clock.advance(60)
    site.client.save_assign_grade(site.assignment, site.learners[1], rubric=site.fill(definition, 3))
    assert set(site.grades(since)) == {site.learners[1]}
    assert set(site.grades(0)) == {site.learners[0], site.learners[1]}
    assert [i["itemid"] for i in site.client.gradingform_instances(definition["id"], since)] == [
        site.grades()[site.learners[1]]["id"]
    ]
    assert site.grades(since + 1) == {}  # timemodified >= since: the second save was at since


def test_a_resubmission_is_a_new_attempt_graded_separately(site: Site) -> None:
    definition = site.save_rubric(_criteria(5))
    learner = site.learners[2]
    site.client.save_assign_grade(site.assignment, learner, rubric=site.fill(definition, 2), addattempt=True)
    first = site.client.gradingform_instances(definition["id"])
    assert learner not in site.grades()  # the new latest attempt has no grade yet
    assert site.gradebook(learner)["graderaw"] == 40  # the gradebook keeps the first attempt's
    site.client.save_assign_grade(site.assignment, learner, rubric=site.fill(definition, 5), attemptnumber=1)
    row = site.grades()[learner]
    assert (row["attemptnumber"], row["grade"]) == (1, "100.00000")
    assert site.gradebook(learner)["graderaw"] == 100
    instances = site.client.gradingform_instances(definition["id"])
    assert (
        len(instances) == 2
        and instances[0]["itemid"] == first[0]["itemid"] != row["id"] == instances[1]["itemid"]
    )


def test_no_comment_editor_for_a_learner_with_a_comment_fails_after_saving_the_filling(site: Site) -> None:
    definition = site.save_rubric(_criteria(5))
    learner = site.learners[0]
    site.client.save_assign_grade(site.assignment, learner, rubric=site.fill(definition, 2), comment="to do")
    criteria = [
        {"criterionid": c, "fillings": [{"criterionid": c, "levelid": lv}]}
        for c, lv in site.fill(definition, 5).items()
    ]
    params = {
        "assignmentid": site.assignment,
        "userid": learner,
        "grade": 0,
        "attemptnumber": -1,
        "addattempt": 0,
        "workflowstate": "",
        "applytoall": 0,
        "advancedgradingdata": {"rubric": {"criteria": criteria}},
    }
    with pytest.raises(MoodleRecordError) as caught:
        site.client.call("mod_assign_save_grade", params)
    assert caught.value.errorcode == "dmlwriteexception"
    assert site.grades()[learner]["grade"] == "40.00000"  # not updated...
    (instance,) = site.client.gradingform_instances(definition["id"])
    assert len(instance["rubric"]["criteria"]) == 5  # ...but the filling was saved
    # The client always sends the comment editor: the same save goes through.
    site.client.save_assign_grade(site.assignment, learner, rubric=site.fill(definition, 5), comment="done")
    assert site.grades()[learner]["grade"] == "100.00000"


def test_assignments_need_includenotenrolledcourses_for_an_account_enrolled_nowhere(site: Site) -> None:
    answer = site.client.call("mod_assign_get_assignments", {"courseids": [site.course]})
    assert answer["courses"] == [] and answer["warnings"][0]["warningcode"] == "2"
    assert [a["id"] for a in site.client.assignments([site.course])] == [site.assignment]


def test_missing_capabilities_fail_or_leave_things_out_silently(site: Site) -> None:
    definition = site.save_rubric(_criteria(2))
    site.client.save_assign_grade(site.assignment, site.learners[0], rubric=site.fill(definition, 1))
    site.sim.set_missing_capabilities({"moodle/grade:managegradingforms"})
    with pytest.raises(MoodleAuthError) as caught:
        site.save_rubric(_criteria(2))
    assert caught.value.errorcode == "nopermissions"
    with pytest.raises(MoodleAuthError):
        site.client.gradingform_instances(definition["id"])
    site.sim.set_missing_capabilities({"mod/assign:view"})
    assert site.client.grading_definitions([site.cmid]) == []  # no error
    with pytest.raises(MoodleAuthError) as caught:
        site.client.save_assign_grade(site.assignment, site.learners[0], rubric=site.fill(definition, 2))
    assert caught.value.errorcode == "requireloginerror"
    site.sim.set_missing_capabilities({"mod/assign:grade", "mod/assign:viewgrades"})
    assert site.client.assign_grades([site.assignment]) == []  # no error
    with pytest.raises(MoodleAuthError) as caught:
        site.client.save_assign_grade(site.assignment, site.learners[0], rubric=site.fill(definition, 2))
    assert caught.value.errorcode == "nopermissions"


def test_fillings_marked_for_regrade_are_left_out_until_the_learner_is_regraded(site: Site) -> None:
    definition = site.save_rubric(_criteria(3))
    for learner in site.learners[:2]:
        site.client.save_assign_grade(site.assignment, learner, rubric=site.fill(definition, 3))
    assert site.sim.mark_for_regrade(definition["id"]) == 2  # a teacher's regrading save in the editor
    assert site.client.gradingform_instances(definition["id"]) == []
    site.client.save_assign_grade(site.assignment, site.learners[0], rubric=site.fill(definition, 1))
    (instance,) = site.client.gradingform_instances(definition["id"])
    assert instance["itemid"] == site.grades()[site.learners[0]]["id"]
    assert site.grades()[site.learners[1]]["grade"] == "100.00000"  # the grade itself stays
