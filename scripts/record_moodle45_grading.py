"""Record a real Moodle 4.5's answers about advanced grading (a BTEC rubric on an assignment).

The answers become the fixtures the Moodle simulator's grading functions are checked against in CI
(``sync_pipelines_tests/fixtures/moodle45/grading/<wsfunction>.json``, read by
``sync_pipelines_tests/moodle/test_grading_contract.py``); CI never needs the real site.

Usage (from the project root, on the machine of ``/work/shared/moodle45/README.md``)::

    .venv/bin/python scripts/record_moodle45_grading.py [--url http://127.0.0.1:8499] \\
        [--moodle .local/moodle45/moodle]

The site is prepared as admin by ``fixtures/moodle45/grading/make_site.php`` (PHP CLI): a web
service of the recording's own (``zohosync_grading_rec_<tag>``, the admin's token; the pipeline's
``zohosync`` service and role are not touched), a course with five learners, two assignments. The
recorder then makes the grading definitions, the grades and the reads over the web services, writes
the fixtures, and runs ``make_site.php cleanup``, which deletes the service, its token, the course
and the learners.

Fixture files: one per function, a list of cases in the order they were called::

    {"case": "...", "seq": 12, "params": {...}, "answer": <Moodle's JSON, as sent>,
     "refs": {"def_unit1": "areas[0].definitions[0].id", ...},  # ids this answer introduces
     "mark": "second_round"}                                    # a time mark taken before the call

``seq`` orders the cases of all files. In ``params``, ``"{{name}}"`` stands for an id (or a time
mark) known earlier: the objects of ``site.json`` (``course``, ``user_<x>``, ``cm_<unit>``,
``assign_<unit>``, ``ctx_<unit>``, ``item_<unit>``), the ``refs`` of an earlier case (a path into
its answer), or a ``mark``: the recorder waited more than a second, read the clock into the mark,
and waited again, so that writes before it have ``timemodified < mark`` and writes after it
``>= mark``. ``site.json`` describes what ``make_site.php`` made, with the recording site's ids,
so that a replay can build the same site and map the recorded ids to its own. Answers are kept
exactly as Moodle sent them; the token is scrubbed.
"""

import argparse
import json
import re
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sync_pipelines.moodle.client import REST_PATH, php_form
from sync_pipelines.sandbox.recorded import resolve

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "sync_pipelines_tests" / "fixtures" / "moodle45" / "grading"
MAKE_SITE = FIXTURES / "make_site.php"
#: An id no object of the site has.
ABSENT_ID = 987654321
#: The BTEC levels of every criterion: (score, definition).
LEVELS = ((0, "Not achieved"), (1, "Achieved"))


def at_path(answer: Any, path: str) -> Any:
    """``areas[0].definitions[0].id`` -> that value of ``answer``."""
    value = answer
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        value = value[int(part[1:-1])] if part.startswith("[") else value[part]
    return value


class Recorder:
    def __init__(self, url: str, token: str, refs: dict[str, Any]) -> None:
        self.url = url.rstrip("/") + REST_PATH
        self.token = token
        self.refs = dict(refs)
        self.cases: dict[str, list[dict]] = defaultdict(list)
        self.seq = 0
        self.pending_mark: str | None = None

    def mark(self, name: str) -> None:
        """A time mark: every write so far is older than it, every later one at least as new."""
        time.sleep(1.2)
        self.refs[name] = int(time.time())
        time.sleep(1.2)
        self.pending_mark = name

    def call(self, function: str, case: str, params: dict, refs: dict[str, str] | None = None) -> Any:
        query = {"wstoken": self.token, "wsfunction": function, "moodlewsrestformat": "json"}
        response = requests.post(
            self.url, params=query, data=php_form(resolve(params, self.refs)), timeout=120
        )
        response.raise_for_status()
        answer = json.loads(response.text.replace(self.token, "<token>"))
        self.seq += 1
        entry: dict[str, Any] = {"case": case, "seq": self.seq, "params": params, "answer": answer}
        if refs:
            entry["refs"] = refs
            for name, path in refs.items():
                self.refs[name] = at_path(answer, path)
        if self.pending_mark:
            entry["mark"] = self.pending_mark
            self.pending_mark = None
        self.cases[function].append(entry)
        print(f"{self.seq:3d} {function}: {case}: {json.dumps(answer)[:150]}")
        return answer

    def write(self, out: Path = FIXTURES) -> None:
        out.mkdir(parents=True, exist_ok=True)
        for function, cases in self.cases.items():
            (out / f"{function}.json").write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")


# --- what is recorded -----------------------------------------------------------------------------


def criteria_new(count: int, prefix: str = "P", levels: tuple = LEVELS) -> list[dict]:
    """``count`` criteria without ids (Moodle creates them)."""
    return [
        {
            "sortorder": n,
            "description": f"{prefix}{n} criterion",
            "descriptionformat": 1,
            "levels": [{"score": s, "definition": d, "definitionformat": 1} for s, d in levels],
        }
        for n in range(1, count + 1)
    ]


def criteria_with_ids(unit: str, count: int, suffix: str) -> list[dict]:
    """The definition's criteria again, with their ids and their levels' ids, descriptions edited."""
    return [
        {
            "id": f"{{{{crit_{unit}_{n}}}}}",
            "sortorder": n,
            "description": f"P{n} criterion{suffix}",
            "descriptionformat": 1,
            "levels": [
                {"id": f"{{{{lvl_{unit}_{n}_{s}}}}}", "score": s, "definition": d, "definitionformat": 1}
                for s, d in LEVELS
            ],
        }
        for n in range(1, count + 1)
    ]


def definition_refs(unit: str, count: int, area: int = 0) -> dict[str, str]:
    base = f"areas[{area}].definitions[0]"
    refs = {f"def_{unit}": f"{base}.id"}
    for n in range(1, count + 1):
        refs[f"crit_{unit}_{n}"] = f"{base}.rubric.rubric_criteria[{n - 1}].id"
        for i, (score, _) in enumerate(LEVELS):
            refs[f"lvl_{unit}_{n}_{score}"] = f"{base}.rubric.rubric_criteria[{n - 1}].levels[{i}].id"
    return refs


def area(unit: str, name: str, criteria: list[dict], description: str = "", **extra: Any) -> dict:
    definition = {
        "method": "rubric",
        "name": name,
        "description": description,
        "descriptionformat": 1,
        "status": 20,
        # Required by the function's description, though Moodle sets timecreated, timemodified and
        # usermodified itself; usercreated is stored as sent.
        "timecreated": 0,
        "usercreated": 0,
        "timemodified": 0,
        "usermodified": 0,
        "rubric": {"rubric_criteria": criteria},
    } | extra
    return {
        "cmid": f"{{{{cm_{unit}}}}}",
        "contextid": f"{{{{ctx_{unit}}}}}",
        "component": "mod_assign",
        "areaname": "submissions",
        "activemethod": "rubric",
        "definitions": [definition],
    }


def fillings(unit: str, count: int, achieved: int, *, only: int | None = None, remarks: bool = True) -> dict:
    """The rubric filling: the first ``achieved`` criteria Achieved, the others Not achieved; only the
    first ``only`` criteria sent when given (an incomplete filling)."""
    criteria = []
    for n in range(1, (only or count) + 1):
        score = 1 if n <= achieved else 0
        filling = {
            "criterionid": f"{{{{crit_{unit}_{n}}}}}",
            "levelid": f"{{{{lvl_{unit}_{n}_{score}}}}}",
            "remark": f"P{n} {'achieved' if score else 'not yet achieved'}" if remarks else "",
            "remarkformat": 1,
        }
        criteria.append({"criterionid": f"{{{{crit_{unit}_{n}}}}}", "fillings": [filling]})
    return {"rubric": {"criteria": criteria}}


def grade(
    unit: str,
    user: str,
    *,
    attempt: int = -1,
    addattempt: int = 0,
    grade: float = 0,
    advanced: dict | None = None,
    comment: str | None = "",
) -> dict:
    params: dict[str, Any] = {
        "assignmentid": f"{{{{assign_{unit}}}}}",
        "userid": f"{{{{{user}}}}}",
        "grade": grade,
        "attemptnumber": attempt,
        "addattempt": addattempt,
        "workflowstate": "",
        "applytoall": 0,
    }
    if comment is not None:
        params["plugindata"] = {"assignfeedbackcomments_editor": {"text": comment, "format": 1}}
    if advanced is not None:
        params["advancedgradingdata"] = advanced
    return params


def record(rec: Recorder) -> None:
    defs = "core_grading_get_definitions"
    save_defs = "core_grading_save_definitions"
    instances = "core_grading_get_gradingform_instances"
    save = "mod_assign_save_grade"
    grades = "mod_assign_get_grades"
    report = "gradereport_user_get_grade_items"

    def area_of(unit: str, activeonly: int = 1) -> dict:
        return {"cmids": [f"{{{{cm_{unit}}}}}"], "areaname": "submissions", "activeonly": activeonly}

    # The assignment, before any definition.
    rec.call(
        defs,
        "an assignment without a grading method yet: activemethod null, no definitions",
        area_of("unit1", 0),
    )
    rec.call(defs, "activeonly=1 before any method is set: an error", area_of("unit1", 1))
    rec.call(defs, "a course module that does not exist", {"cmids": [ABSENT_ID], "areaname": "submissions"})
    rec.call(
        "mod_assign_get_assignments",
        "a course the admin is not enrolled in, without includenotenrolledcourses: no courses, a warning",
        {"courseids": ["{{course}}"]},
    )
    rec.call(
        "mod_assign_get_assignments",
        "the course, includenotenrolledcourses=1: both assignments",
        {"courseids": ["{{course}}"], "includenotenrolledcourses": 1},
    )
    rec.call(
        "mod_assign_get_assignments",
        "a course that does not exist, includenotenrolledcourses=1: a warning",
        {"courseids": [ABSENT_ID], "includenotenrolledcourses": 1},
    )

    # Unit 1: the rubric, 5 criteria x (Not achieved 0, Achieved 1).
    unit1 = area("unit1", "BTEC Unit 1", criteria_new(5), "Pass criteria P1-P5")
    without_time = json.loads(json.dumps(unit1))
    del without_time["definitions"][0]["timecreated"]
    rec.call(save_defs, "a definition without timecreated: invalidparameter", {"areas": [without_time]})
    rec.call(save_defs, "creating a rubric: 5 criteria x 2 levels, without ids", {"areas": [unit1]})
    rec.call(
        defs, "the rubric just created (activeonly=1)", area_of("unit1"), refs=definition_refs("unit1", 5)
    )
    rec.call(
        defs,
        "two assignments, one with a rubric, one without a method (activeonly=0)",
        {"cmids": ["{{cm_unit1}}", "{{cm_unit2}}"], "areaname": "submissions", "activeonly": 0},
    )

    # First round of grades.
    rec.call(
        save,
        "4 of 5 criteria achieved, with a feedback comment",
        grade(
            "unit1", "user_achiever", advanced=fillings("unit1", 5, 4), comment="Four of five criteria met."
        ),
    )
    rec.call(
        save,
        "an incomplete filling: 2 criteria of 5 sent, both achieved",
        grade(
            "unit1", "user_partial", advanced=fillings("unit1", 5, 2, only=2), comment="P3 to P5 still to do."
        ),
    )
    rec.call(
        save,
        "a plain grade (73) on a rubric assignment, no advancedgradingdata",
        grade("unit1", "user_plain", grade=73, comment="A plain grade."),
    )
    rec.call(
        save,
        "attempt 1: 2 of 5 achieved, addattempt=1 reopens the assignment for a resubmission",
        grade(
            "unit1",
            "user_resubmit",
            addattempt=1,
            advanced=fillings("unit1", 5, 2),
            comment="Resubmit for P3-P5.",
        ),
    )
    rec.call(
        grades,
        "after the first round: the reopened learner has no grade for its new latest attempt, so is absent",
        {"assignmentids": ["{{assign_unit1}}"], "since": 0},
    )
    rec.call(
        report,
        "the learner with 4 of 5: the gradebook holds the share of rubric points",
        {"courseid": "{{course}}", "userid": "{{user_achiever}}"},
    )
    rec.call(
        report,
        "the learner graded plainly on the rubric: no grade, the feedback kept",
        {"courseid": "{{course}}", "userid": "{{user_plain}}"},
    )
    rec.call(
        report,
        "the reopened learner: the first attempt's grade stays until the second is graded",
        {"courseid": "{{course}}", "userid": "{{user_resubmit}}"},
    )

    # Second round, after a time mark.
    rec.mark("second_round")
    rec.call(
        save,
        "attempt 2 (attemptnumber 1) of the resubmission: 5 of 5 achieved",
        grade(
            "unit1", "user_resubmit", attempt=1, advanced=fillings("unit1", 5, 5), comment="All criteria met."
        ),
    )
    rec.call(
        save,
        "no plugindata for a learner who has a feedback comment: a database error, the filling already saved",
        grade("unit1", "user_partial", advanced=fillings("unit1", 5, 5), comment=None),
    )
    rec.call(
        grades,
        "every learner's latest attempt (since 0)",
        {"assignmentids": ["{{assign_unit1}}"], "since": 0},
    )
    rec.call(
        grades,
        "since the second round: only grades modified at or after it",
        {"assignmentids": ["{{assign_unit1}}"], "since": "{{second_round}}"},
    )
    rec.call(
        save,
        "an assignment that does not exist",
        grade("unit1", "user_plain", comment="x") | {"assignmentid": ABSENT_ID},
    )
    rec.call(
        grades, "an assignment that does not exist: a warning", {"assignmentids": [ABSENT_ID], "since": 0}
    )
    rec.call(
        instances,
        "every active filling (since 0): both attempts of the resubmission, the failed save's filling",
        {"definitionid": "{{def_unit1}}", "since": 0},
    )
    rec.call(
        instances,
        "since the second round",
        {"definitionid": "{{def_unit1}}", "since": "{{second_round}}"},
    )
    rec.call(instances, "a definition that does not exist", {"definitionid": ABSENT_ID, "since": 0})
    rec.call(
        report,
        "the resubmission after attempt 2 was graded",
        {"courseid": "{{course}}", "userid": "{{user_resubmit}}"},
    )

    # Unit 2: re-saving a definition with and without ids.
    rec.call(
        save_defs,
        "unit 2: a rubric of 3 criteria",
        {"areas": [area("unit2", "BTEC Unit 2", criteria_new(3))]},
    )
    rec.call(defs, "unit 2's rubric", area_of("unit2"), refs=definition_refs("unit2", 3))
    rec.call(
        save,
        "unit 2: 3 of 3 achieved, no remarks",
        grade("unit2", "user_redefined", advanced=fillings("unit2", 3, 3, remarks=False), comment="Met."),
    )
    rec.call(instances, "unit 2's filling", {"definitionid": "{{def_unit2}}", "since": 0})
    rec.call(
        save_defs,
        "unit 2 updated WITH the criterion and level ids (descriptions and name edited)",
        {"areas": [area("unit2", "BTEC Unit 2 (v2)", criteria_with_ids("unit2", 3, " (edited)"))]},
    )
    rec.call(
        defs, "after the update with ids: the same ids", area_of("unit2"), refs=definition_refs("unit2v2", 3)
    )
    rec.call(
        instances,
        "after the update with ids: the filling intact",
        {"definitionid": "{{def_unit2}}", "since": 0},
    )
    rec.call(
        save_defs,
        "unit 2 updated WITHOUT ids: the criteria are deleted and re-created",
        {"areas": [area("unit2", "BTEC Unit 2 (v3)", criteria_new(3, prefix="Q"))]},
    )
    rec.call(
        defs,
        "after the update without ids: new criterion and level ids",
        area_of("unit2"),
        refs=definition_refs("unit2v3", 3),
    )
    rec.call(
        instances,
        "after the update without ids: the filling still points at the deleted criteria and levels",
        {"definitionid": "{{def_unit2}}", "since": 0},
    )
    rec.call(
        report,
        "after the update without ids: the gradebook keeps the grade",
        {"courseid": "{{course}}", "userid": "{{user_redefined}}"},
    )
    rec.call(
        save,
        "a regrade with the stale (deleted) criterion ids: accepted, the grade becomes -1",
        grade("unit2", "user_redefined", advanced=fillings("unit2", 3, 3, remarks=False), comment="Met."),
    )
    rec.call(grades, "unit 2 after the stale regrade", {"assignmentids": ["{{assign_unit2}}"], "since": 0})
    rec.call(
        save,
        "a regrade with the new ids: 2 of 3",
        grade("unit2", "user_redefined", advanced=fillings("unit2v3", 3, 2, remarks=False), comment="Met."),
    )
    rec.call(
        grades, "unit 2 after the regrade with new ids", {"assignmentids": ["{{assign_unit2}}"], "since": 0}
    )
    rec.call(
        instances, "unit 2 after the regrade with new ids", {"definitionid": "{{def_unit2}}", "since": 0}
    )
    rec.call(
        report,
        "unit 2 after the regrade with new ids",
        {"courseid": "{{course}}", "userid": "{{user_redefined}}"},
    )
    three_two_two = criteria_new(
        1, prefix="R", levels=((0, "Not achieved"), (1, "Merit"), (2, "Distinction"))
    )
    three_two_two += criteria_new(2, prefix="S")
    rec.call(
        save_defs,
        "without ids, a criterion of 3 levels then two of 2: their temporary ids collide",
        {"areas": [area("unit2", "BTEC Unit 2 (v4)", three_two_two)]},
    )
    rec.call(
        defs,
        "after the collision: one criterion silently lost",
        area_of("unit2"),
        refs=definition_refs("unit2v4", 2),
    )
    rec.call(
        save,
        "a feedback-only save (no advancedgradingdata) for a learner graded by the rubric",
        grade("unit2", "user_redefined", grade=50, comment="Feedback only."),
    )
    rec.call(grades, "after the feedback-only save: the grade is -1", {"assignmentids": ["{{assign_unit2}}"]})
    rec.call(
        instances, "after the feedback-only save: the filling is kept", {"definitionid": "{{def_unit2}}"}
    )
    rec.call(
        report,
        "after the feedback-only save: no grade in the gradebook, the new feedback",
        {"courseid": "{{course}}", "userid": "{{user_redefined}}"},
    )
    rec.call(
        save,
        "a user that does not exist",
        grade("unit2", "user_redefined", comment="x") | {"userid": ABSENT_ID},
    )
    rec.call(
        grades,
        "unit 2 after the save for a user that does not exist",
        {"assignmentids": ["{{assign_unit2}}"]},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default="http://127.0.0.1:8499")
    parser.add_argument("--moodle", default=str(ROOT / ".local" / "moodle45" / "moodle"))
    parser.add_argument("--php", default="php")
    args = parser.parse_args(argv)
    tag = "g" + uuid.uuid4().hex[:8]
    made = subprocess.run(
        [args.php, str(MAKE_SITE), args.moodle, "setup", tag], check=True, capture_output=True, text=True
    )
    site = json.loads(made.stdout)
    token = site.pop("token")
    try:
        refs: dict[str, Any] = {"course": site["course"]["id"]}
        for user in site["users"]:
            refs[user["ref"]] = user["id"]
        for unit in site["assignments"]:
            u = unit["ref"]
            refs |= {f"cm_{u}": unit["cmid"], f"assign_{u}": unit["id"], f"ctx_{u}": unit["contextid"]}
            refs[f"item_{u}"] = unit["gradeitemid"]
        rec = Recorder(args.url, token, refs)
        site_info = requests.post(
            rec.url,
            params={
                "wstoken": token,
                "wsfunction": "core_webservice_get_site_info",
                "moodlewsrestformat": "json",
            },
            timeout=60,
        ).json()
        site["release"] = site_info["release"]
        site["version"] = site_info["version"]
        site["recorded_at"] = int(time.time())
        record(rec)
        rec.write()
        (FIXTURES / "site.json").write_text(json.dumps(site, indent=1) + "\n")
    finally:
        subprocess.run([args.php, str(MAKE_SITE), args.moodle, "cleanup", tag], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
