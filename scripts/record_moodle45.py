"""Record a real Moodle 4.5's answers to every web-service function the pipeline calls.

The answers become the fixtures the simulator is checked against in CI
(``sync_pipelines_tests/fixtures/moodle45/<wsfunction>.json``, read by
``sync_pipelines_tests/moodle/test_simulator_contract.py``): CI never needs the real site.

Usage (from the project root, the site of ``/work/shared/moodle45/README.md``)::

    .venv/bin/python scripts/record_moodle45.py --url http://127.0.0.1:8499 \\
        --token "$(cat .local/moodle45/moodle_token.txt)" --course-with-grades 2

``--url``/``--token`` default to the environment's ``MOODLE_URL``/``MOODLE_TOKEN``. The token is the
pipeline's (user ``zohosync_ws``, role ``zohosync_pipeline``, service ``zohosync``), not an admin's:
the answers are what the pipeline sees. Every run creates its own objects, named with a fresh run tag
(``zsrec<hex>``): a category, two courses, three users, their enrolments, through the pipeline's own
functions and parameters. Nothing is deleted afterwards (the service has no delete functions).

Each fixture file is a list of cases, in the order they were called::

    {"case": "...", "seq": 12, "params": {...}, "answer": <Moodle's JSON, as sent>,
     "token": "invalid",            # only when the call was made with a wrong token
     "refs": ["course1", "course2"],  # create calls: names of the created objects, in answer order
     "setup": {...},                # objects the site had before the run (the course with grades)
     "whole_site": true,            # the answer describes the whole site (the service's functions),
                                    # which a replay of this run alone cannot reproduce
     "left_out": 230}               # a list of the whole site's objects (every category, every
                                    # course) kept to the site's defaults (id 1) and this run's own
                                    # objects: how many others were left out

``seq`` orders the cases of all files: the contract test replays them in that order. In ``params``,
``"{{name}}"`` stands for the id of an object created earlier in the run (named by a create case's
``refs``, or ``grades_course`` / ``grades_user<n>`` of the setup); the recorder sent the real id.
Answers are kept exactly as Moodle sent them (ids, times and URLs of the recording site included);
the token is scrubbed should it ever appear in one.

Preparing the site, once
------------------------
1. The token's service must hold every function recorded: the plugin's pipeline functions and
   ``core_course_get_contents`` (a function the service lacks is recorded as its ``accessexception``,
   and the simulator then answers the same). As admin, for example::

    $s = $DB->get_record('external_services', ['shortname' => 'zohosync'], '*', MUST_EXIST);
    $DB->insert_record('external_services_functions',
        (object)['externalserviceid' => $s->id, 'functionname' => 'core_course_get_contents']);

   The role must be the pipeline's own (the plugin's set-up script). With only the 22 capabilities
   of the plugin README's first version the answers are not the pipeline's; seen here:
   ``moodle/course:view`` missing: ``requireloginerror`` in the course with grades;
   ``mod/assign:view``: its grade items left out (no error); ``moodle/course:viewparticipants`` (or
   ``moodle/course:enrolreview``): ``nopermissions`` listing enrolled users;
   ``moodle/course:enrolreview``: ``nopermissions`` for the ``onlyactive`` option the pipeline sends;
   ``moodle/user:viewalldetails`` with ``moodle/site:viewuseridentity``: lookups by ``idnumber`` answer
   ``[]``; ``moodle/site:viewfullnames``: no ``firstname``/``lastname`` in any user.
2. Grades need a graded activity, which no web service of the pipeline can make. As admin, save
   this as ``prepare_grades.php`` and run ``php prepare_grades.php .local/moodle45/moodle``; it prints
   the id to pass as ``--course-with-grades`` (it is idempotent: a second run prints the same id)::

    <?php
    define('CLI_SCRIPT', true);
    require($argv[1] . '/config.php');
    require_once($CFG->dirroot . '/lib/phpunit/classes/util.php');
    require_once($CFG->dirroot . '/mod/assign/locallib.php');
    \\core\\session\\manager::set_user(get_admin());
    $course = $DB->get_record('course', ['shortname' => 'ZS-CONTRACT-GRADES']);
    if (!$course) {
        $gen = phpunit_util::get_data_generator();
        $course = $gen->create_course(['fullname' => 'Contract grades', 'shortname' => 'ZS-CONTRACT-GRADES',
            'idnumber' => 'ZS-CONTRACT-GRADES', 'category' => 1, 'startdate' => 1767225600,
            'enddate' => 1798761600]);
        $student = $gen->create_user(['username' => 'zs_contract_student', 'firstname' => 'Grace',
            'lastname' => 'Graded', 'email' => 'zs_contract_student@example.invalid',
            'idnumber' => 'ZS-CONTRACT-STUDENT']);
        $teacher = $gen->create_user(['username' => 'zs_contract_teacher', 'firstname' => 'Terry',
            'lastname' => 'Marker', 'email' => 'zs_contract_teacher@example.invalid',
            'idnumber' => 'ZS-CONTRACT-TEACHER']);
        $gen->enrol_user($student->id, $course->id, 'student');
        $gen->enrol_user($teacher->id, $course->id, 'editingteacher');
        $graded = $gen->create_module('assign', ['course' => $course->id, 'name' => 'Graded assignment',
            'grade' => 100]);
        $gen->create_module('assign', ['course' => $course->id, 'name' => 'Ungraded assignment',
            'grade' => 20]);
        $cm = get_coursemodule_from_instance('assign', $graded->id);
        $assign = new assign(context_module::instance($cm->id), $cm, $course);
        $grade = $assign->get_user_grade($student->id, true);
        $grade->grade = 87.5;
        $assign->update_grade($grade);
    }
    echo $course->id, "\\n";

The recorder reads that course back through the pipeline's functions (course, enrolled users, grade
items, contents) and writes what it found as the ``setup`` of the first case that uses it, so the
test can build the same course in the simulator (a role without ``moodle/site:viewfullnames``
sees no ``firstname``/``lastname``: ``fullname`` is then split at its first space).
"""

import argparse
import json
import os
import sys
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import requests

from sync_pipelines.moodle.client import REST_PATH, php_form
from sync_pipelines.sandbox.recorded import resolve

FIXTURES = Path(__file__).resolve().parent.parent / "sync_pipelines_tests" / "fixtures" / "moodle45"
#: An id no object of the site has.
ABSENT_ID = 987654321


class Recorder:
    """Calls the site, keeps every case, writes one file per function."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/") + REST_PATH
        self.token = token
        self.session = requests.Session()
        self.refs: dict[str, int] = {}
        self.cases: dict[str, list[dict]] = defaultdict(list)
        self.seq = 0

    def call(
        self,
        function: str,
        case: str,
        params: dict | None = None,
        *,
        token: str | None = None,
        refs: list[str] | None = None,
        setup: dict | None = None,
        whole_site: bool = False,
        keep: list[str | int] | None = None,
    ) -> Any:
        """Send ``function`` with ``params`` (refs resolved), record the answer, return it.

        ``keep``: the answer lists objects of the whole site (a top-level list, or ``courses``);
        record only those with these ids (ref names or ids), and how many were left out.
        """
        params = params or {}
        query = {
            "wstoken": self.token if token is None else token,
            "wsfunction": function,
            "moodlewsrestformat": "json",
        }
        response = self.session.post(
            self.url, params=query, data=php_form(resolve(params, self.refs)), timeout=60
        )
        response.raise_for_status()
        answer = json.loads(response.text.replace(self.token, "<token>"))
        self.seq += 1
        entry: dict[str, Any] = {"case": case, "seq": self.seq, "params": params, "answer": answer}
        if keep is not None:
            wanted = {self.refs[k] if isinstance(k, str) else k for k in keep}
            rows = answer["courses"] if isinstance(answer, dict) else answer
            kept = [row for row in rows if row["id"] in wanted]
            if isinstance(answer, dict):
                answer["courses"] = kept
            else:
                entry["answer"] = kept
            entry["left_out"] = len(rows) - len(kept)
        if token is not None:
            entry["token"] = "invalid"
        if refs is not None:
            if not isinstance(answer, list) or len(answer) != len(refs):
                raise SystemExit(f"{function} {case!r}: expected {len(refs)} created objects, got {answer!r}")
            for name, row in zip(refs, answer, strict=True):
                self.refs[name] = row["id"]
            entry["refs"] = refs
        if setup is not None:
            entry["setup"] = setup
        if whole_site:
            entry["whole_site"] = True
        self.cases[function].append(entry)
        print(f"{self.seq:3d} {function} {case}: {_summary(answer)}")
        return answer

    def write(self, out: Path = FIXTURES) -> None:
        out.mkdir(parents=True, exist_ok=True)
        for function, cases in sorted(self.cases.items()):
            path = out / f"{function}.json"
            path.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n")
            print(f"wrote {path} ({len(cases)} cases)")


def _summary(answer: Any) -> str:
    if isinstance(answer, dict) and "exception" in answer:
        return f"{answer.get('exception')} {answer.get('errorcode')}"
    if isinstance(answer, list):
        return f"list of {len(answer)}"
    if isinstance(answer, dict):
        return "{" + ", ".join(answer) + "}"
    return json.dumps(answer)


def grades_setup(rec: Recorder, course_id: int) -> dict:
    """Read the admin-prepared course back (unrecorded calls) and describe it for the replay."""

    def raw(function: str, params: dict, *, optional: bool = False) -> Any:
        query = {"wstoken": rec.token, "wsfunction": function, "moodlewsrestformat": "json"}
        answer = rec.session.post(rec.url, params=query, data=php_form(params), timeout=60).json()
        if isinstance(answer, dict) and "exception" in answer:
            if optional:
                return None
            raise SystemExit(f"{function} on the course with grades: {answer}")
        return answer

    course = raw("core_course_get_courses_by_field", {"field": "id", "value": course_id})["courses"][0]
    users = raw("core_enrol_get_enrolled_users", {"courseid": course_id})
    grades = raw("gradereport_user_get_grade_items", {"courseid": course_id, "userid": 0})["usergrades"]
    contents = raw("core_course_get_contents", {"courseid": course_id}, optional=True) or [{}]
    rec.refs["grades_course"] = course_id
    described = []
    for n, user in enumerate(sorted(users, key=lambda u: u["id"]), start=1):
        name = f"grades_user{n}"
        rec.refs[name] = user["id"]
        first, _, last = user["fullname"].partition(" ")
        first, last = user.get("firstname", first), user.get("lastname", last)
        described.append(
            {
                "ref": name,
                "username": user["username"],
                "firstname": first,
                "lastname": last,
                "email": user["email"],
                "idnumber": user.get("idnumber", ""),
                "roleids": [r["roleid"] for r in user["roles"]],
            }
        )
    by_id = {rec.refs[d["ref"]]: d["ref"] for d in described}
    items: dict[int, dict] = {}
    for usergrade in grades:
        for item in usergrade["gradeitems"]:
            if item["itemtype"] != "mod":
                continue
            entry = items.setdefault(
                item["id"],
                {
                    "itemname": item["itemname"],
                    "itemmodule": item["itemmodule"],
                    "grademax": item["grademax"],
                    "grades": {},
                },
            )
            if item["graderaw"] is not None:
                entry["grades"][by_id[usergrade["userid"]]] = item["graderaw"]
    return {
        "course": {
            "fullname": course["fullname"],
            "shortname": course["shortname"],
            "idnumber": course["idnumber"],
            "categoryid": course["categoryid"],
            "startdate": course["startdate"],
            "enddate": course["enddate"],
            "newsitems": course["newsitems"],
            "numsections": len(contents) - 1,
        },
        "users": described,
        "items": [items[k] for k in sorted(items)],
    }


def record(rec: Recorder, grades_course: int) -> None:
    tag = "zsrec" + uuid.uuid4().hex[:6]
    print(f"run tag {tag}")
    setup = grades_setup(rec, grades_course)

    # --- the admin-prepared course with grades -------------------------------------------------
    rec.call(
        "core_course_get_courses_by_field",
        "the course with grades, by id",
        {"field": "id", "value": "{{grades_course}}"},
        setup=setup,
    )
    rec.call(
        "core_enrol_get_enrolled_users",
        "the course with grades: a student and a teacher (the client's options)",
        {
            "courseid": "{{grades_course}}",
            "options": [
                {"name": "onlyactive", "value": False},
                {"name": "limitfrom", "value": 0},
                {"name": "limitnumber", "value": 200},
            ],
        },
    )
    rec.call(
        "gradereport_user_get_grade_items",
        "every user of the course with grades (userid 0): one graded, one ungraded assignment",
        {"courseid": "{{grades_course}}", "userid": 0},
    )
    rec.call(
        "gradereport_user_get_grade_items",
        "one user of the course with grades",
        {"courseid": "{{grades_course}}", "userid": "{{grades_user1}}"},
    )
    rec.call(
        "core_course_get_contents",
        "the course with grades: sections with assign modules",
        {"courseid": "{{grades_course}}"},
    )

    # --- protocol ------------------------------------------------------------------------------
    rec.call("core_webservice_get_site_info", "the pipeline's token", {}, whole_site=True)
    rec.call("core_webservice_get_site_info", "an invalid token", {}, token="invalid-token-" + "0" * 18)
    rec.call(
        "core_grades_update_grades",
        "a function that exists but is not in the token's service",
        {
            "source": "contract",
            "courseid": "{{grades_course}}",
            "component": "mod_assign",
            "activityid": 1,
            "itemnumber": 0,
        },
    )

    # --- categories ----------------------------------------------------------------------------
    programme = {"name": f"Programme {tag}", "parent": 0, "idnumber": f"{tag}-prog"}
    rec.call(
        "core_course_create_categories",
        "a top-level category",
        {"categories": [programme]},
        refs=["category"],
    )
    rec.call(
        "core_course_create_categories",
        "a taken idnumber",
        {"categories": [{"name": f"Other {tag}", "parent": 0, "idnumber": f"{tag}-prog"}]},
    )
    rec.call(
        "core_course_create_categories",
        "an unknown parent",
        {"categories": [{"name": f"Orphan {tag}", "parent": ABSENT_ID, "idnumber": f"{tag}-orphan"}]},
    )
    rec.call(
        "core_course_get_categories",
        "every category (no criteria, as the pipeline asks)",
        {"criteria": []},
        keep=[1, "category"],
    )
    rec.call(
        "core_course_get_categories",
        "by idnumber",
        {"criteria": [{"key": "idnumber", "value": f"{tag}-prog"}]},
    )
    rec.call("core_course_get_categories", "by id", {"criteria": [{"key": "id", "value": "{{category}}"}]})
    rec.call(
        "core_course_get_categories",
        "an absent idnumber",
        {"criteria": [{"key": "idnumber", "value": f"{tag}-absent"}]},
    )

    # --- courses -------------------------------------------------------------------------------
    course1 = {
        "fullname": f"Class one {tag}",
        "shortname": f"{tag}-c1",
        "idnumber": f"{tag}-c1",
        "categoryid": "{{category}}",
        "startdate": 1788220800,
        "enddate": 1819756800,
        "visible": 1,
    }
    course2 = {
        "fullname": f"Class two {tag}",
        "shortname": f"{tag}-c2",
        "idnumber": f"{tag}-c2",
        "categoryid": "{{category}}",
        "startdate": 1788220800,
        "enddate": 0,
        "visible": 0,
    }
    rec.call(
        "core_course_create_courses",
        "two courses, as the pipeline sends them",
        {"courses": [course1, course2]},
        refs=["course1", "course2"],
    )
    rec.call(
        "core_course_create_courses",
        "a taken shortname",
        {"courses": [{**course1, "idnumber": f"{tag}-c3"}]},
    )
    rec.call(
        "core_course_create_courses",
        "a taken idnumber",
        {"courses": [{**course1, "shortname": f"{tag}-c3"}]},
    )
    rec.call(
        "core_course_create_courses",
        "an unknown category",
        {
            "courses": [
                {**course1, "shortname": f"{tag}-c4", "idnumber": f"{tag}-c4", "categoryid": ABSENT_ID}
            ]
        },
    )
    rec.call(
        "core_course_create_courses",
        "an end date before the start date",
        {
            "courses": [
                {**course1, "shortname": f"{tag}-c5", "idnumber": f"{tag}-c5", "enddate": 1788220000},
            ]
        },
    )
    rec.call("core_course_get_courses_by_field", "by idnumber", {"field": "idnumber", "value": f"{tag}-c1"})
    rec.call("core_course_get_courses_by_field", "by shortname", {"field": "shortname", "value": f"{tag}-c2"})
    rec.call(
        "core_course_get_courses_by_field", "by category", {"field": "category", "value": "{{category}}"}
    )
    rec.call(
        "core_course_get_courses_by_field",
        "by ids, one of them absent",
        {"field": "ids", "value": "{{course1}},{{course2}}," + str(ABSENT_ID)},
    )
    rec.call(
        "core_course_get_courses_by_field",
        "an absent idnumber",
        {"field": "idnumber", "value": f"{tag}-absent"},
    )
    rec.call(
        "core_course_get_courses_by_field",
        "every course (no field, as the pipeline asks): the site course too",
        {"field": "", "value": ""},
        keep=[1, "grades_course", "course1", "course2"],
    )
    rec.call(
        "core_course_update_courses",
        "a rename, new dates, hidden",
        {
            "courses": [
                {
                    "id": "{{course1}}",
                    "fullname": f"Class one renamed {tag}",
                    "shortname": f"{tag}-c1",
                    "idnumber": f"{tag}-c1",
                    "categoryid": "{{category}}",
                    "startdate": 1788307200,
                    "enddate": 1819843200,
                    "visible": 1,
                }
            ]
        },
    )
    rec.call(
        "core_course_update_courses",
        "a shortname taken by the other course, and an absent course",
        {
            "courses": [
                {"id": "{{course2}}", "shortname": f"{tag}-c1"},
                {"id": ABSENT_ID, "fullname": "Nobody"},
            ]
        },
    )
    rec.call(
        "core_course_get_courses_by_field", "by id after the update", {"field": "id", "value": "{{course1}}"}
    )

    # --- users ---------------------------------------------------------------------------------
    def user(n: str, first: str, last: str) -> dict:
        return {
            "username": f"{tag}.{n}",
            "firstname": first,
            "lastname": last,
            "email": f"{n}.{tag}@contract.example",
            "idnumber": f"{tag}-{n}",
            "auth": "manual",
            "createpassword": 1,
        }

    s1, s2, t1 = user("s1", "Amal", "Haddad"), user("s2", "Bilal", "Nasser"), user("t1", "Carla", "Teach")
    rec.call(
        "core_user_create_users",
        "two students and a teacher, as the pipeline sends them",
        {"users": [s1, s2, t1]},
        refs=["student1", "student2", "teacher1"],
    )
    rec.call(
        "core_user_create_users",
        "a taken username",
        {"users": [{**s1, "email": f"s9.{tag}@contract.example", "idnumber": f"{tag}-s9"}]},
    )
    rec.call(
        "core_user_create_users",
        "a taken email",
        {"users": [{**s1, "username": f"{tag}.s9", "idnumber": f"{tag}-s9"}]},
    )
    rec.call(
        "core_user_create_users",
        "an upper-case username",
        {"users": [{**s1, "username": f"{tag}.S9", "email": f"s9.{tag}@contract.example"}]},
    )
    rec.call(
        "core_user_create_users",
        "a password the policy refuses",
        {
            "users": [
                {
                    "username": f"{tag}.s8",
                    "firstname": "Weak",
                    "lastname": "Password",
                    "email": f"s8.{tag}@contract.example",
                    "auth": "manual",
                    "password": "weak",
                }
            ]
        },
    )
    rec.call(
        "core_user_get_users_by_field",
        "by idnumber, two found and one absent",
        {"field": "idnumber", "values": [f"{tag}-s1", f"{tag}-s2", f"{tag}-absent"]},
    )
    rec.call(
        "core_user_get_users_by_field",
        "by email",
        {"field": "email", "values": [f"t1.{tag}@contract.example"]},
    )
    rec.call("core_user_get_users_by_field", "by username", {"field": "username", "values": [f"{tag}.s2"]})
    rec.call("core_user_get_users_by_field", "by id", {"field": "id", "values": ["{{student1}}"]})
    rec.call(
        "core_user_get_users_by_field",
        "absent idnumbers",
        {"field": "idnumber", "values": [f"{tag}-absent1", f"{tag}-absent2"]},
    )
    rec.call(
        "core_user_get_users_by_field",
        "an absent email",
        {"field": "email", "values": [f"absent.{tag}@contract.example"]},
    )
    rec.call(
        "core_user_get_users_by_field",
        "an unsupported field",
        {"field": "lastname", "values": ["Haddad"]},
    )
    rec.call(
        "core_user_get_users",
        "email with a % wildcard",
        {"criteria": [{"key": "email", "value": f"%.{tag}@contract.example"}]},
    )
    rec.call(
        "core_user_get_users",
        "a wildcard matching nobody",
        {"criteria": [{"key": "email", "value": f"%.{tag}@absent.example"}]},
    )
    rec.call(
        "core_user_get_users",
        "an unsupported key is a warning",
        {
            "criteria": [
                {"key": "email", "value": f"s1.{tag}@contract.example"},
                {"key": "city", "value": "x"},
            ]
        },
    )
    rec.call(
        "core_user_update_users",
        "suspend one, rename another",
        {
            "users": [
                {
                    "id": "{{student2}}",
                    "username": f"{tag}.s2",
                    "firstname": "Bilal",
                    "lastname": "Nasser",
                    "email": f"s2.{tag}@contract.example",
                    "idnumber": f"{tag}-s2",
                    "suspended": 1,
                },
                {"id": "{{teacher1}}", "firstname": "Carla", "lastname": "Teacher"},
            ]
        },
    )
    rec.call(
        "core_user_update_users",
        "an absent user and a taken email",
        {
            "users": [
                {"id": ABSENT_ID, "firstname": "Nobody"},
                {"id": "{{student1}}", "email": f"t1.{tag}@contract.example"},
            ]
        },
    )
    rec.call(
        "core_user_get_users_by_field",
        "a suspended user",
        {"field": "idnumber", "values": [f"{tag}-s2"]},
    )

    # --- enrolments ----------------------------------------------------------------------------
    rec.call(
        "enrol_manual_enrol_users",
        "two students and a teacher",
        {
            "enrolments": [
                {"roleid": 5, "userid": "{{student1}}", "courseid": "{{course1}}"},
                {"roleid": 5, "userid": "{{student2}}", "courseid": "{{course1}}", "suspend": 1},
                {"roleid": 3, "userid": "{{teacher1}}", "courseid": "{{course1}}"},
            ]
        },
    )
    rec.call(
        "enrol_manual_enrol_users",
        "enrolled again: no error",
        {"enrolments": [{"roleid": 5, "userid": "{{student1}}", "courseid": "{{course1}}"}]},
    )
    rec.call(
        "enrol_manual_enrol_users",
        "an unknown user",
        {"enrolments": [{"roleid": 5, "userid": ABSENT_ID, "courseid": "{{course2}}"}]},
    )
    rec.call(
        "enrol_manual_enrol_users",
        "an unknown course",
        {"enrolments": [{"roleid": 5, "userid": "{{student1}}", "courseid": ABSENT_ID}]},
    )
    rec.call(
        "enrol_manual_enrol_users",
        "a role that cannot be assigned in a course",
        {"enrolments": [{"roleid": 8, "userid": "{{student1}}", "courseid": "{{course2}}"}]},
    )
    paging = [{"name": "onlyactive", "value": False}, {"name": "limitfrom", "value": 0}]
    rec.call(
        "core_enrol_get_enrolled_users",
        "a course with two students (one suspended) and a teacher",
        {"courseid": "{{course1}}", "options": [*paging, {"name": "limitnumber", "value": 200}]},
    )
    rec.call(
        "core_enrol_get_enrolled_users",
        "only active enrolments",
        {
            "courseid": "{{course1}}",
            "options": [
                {"name": "onlyactive", "value": True},
                {"name": "limitfrom", "value": 0},
                {"name": "limitnumber", "value": 200},
            ],
        },
    )
    rec.call(
        "core_enrol_get_enrolled_users",
        "a second page of one",
        {
            "courseid": "{{course1}}",
            "options": [
                {"name": "onlyactive", "value": False},
                {"name": "limitfrom", "value": 1},
                {"name": "limitnumber", "value": 1},
            ],
        },
    )
    rec.call(
        "core_enrol_get_enrolled_users",
        "a course nobody is enrolled in",
        {"courseid": "{{course2}}", "options": [*paging, {"name": "limitnumber", "value": 200}]},
    )
    rec.call(
        "core_enrol_get_enrolled_users",
        "an unknown course",
        {"courseid": ABSENT_ID, "options": [*paging, {"name": "limitnumber", "value": 200}]},
    )
    rec.call(
        "gradereport_user_get_grade_items",
        "a course without graded activities",
        {"courseid": "{{course1}}", "userid": 0},
    )
    rec.call("gradereport_user_get_grade_items", "an unknown course", {"courseid": ABSENT_ID, "userid": 0})
    rec.call("core_course_get_contents", "a course made over web services", {"courseid": "{{course1}}"})
    rec.call("core_course_get_contents", "an unknown course", {"courseid": ABSENT_ID})
    rec.call(
        "enrol_manual_unenrol_users",
        "a student",
        {"enrolments": [{"userid": "{{student2}}", "courseid": "{{course1}}"}]},
    )
    rec.call(
        "enrol_manual_unenrol_users",
        "a user who is not enrolled",
        {"enrolments": [{"userid": "{{student2}}", "courseid": "{{course2}}"}]},
    )
    rec.call(
        "enrol_manual_unenrol_users",
        "an unknown user",
        {"enrolments": [{"userid": ABSENT_ID, "courseid": "{{course1}}"}]},
    )
    rec.call(
        "enrol_manual_unenrol_users",
        "an unknown course",
        {"enrolments": [{"userid": "{{student1}}", "courseid": ABSENT_ID}]},
    )
    rec.call(
        "core_enrol_get_enrolled_users",
        "after the unenrolment",
        {"courseid": "{{course1}}", "options": [*paging, {"name": "limitnumber", "value": 200}]},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("MOODLE_URL"), help="the site's root (MOODLE_URL)")
    parser.add_argument(
        "--token", default=os.environ.get("MOODLE_TOKEN"), help="the pipeline's token (MOODLE_TOKEN)"
    )
    parser.add_argument("--out", type=Path, default=FIXTURES, help=f"where to write (default {FIXTURES})")
    parser.add_argument(
        "--course-with-grades",
        type=int,
        required=True,
        help="id of the course the PHP snippet of this script's docstring prepared",
    )
    args = parser.parse_args(argv)
    if not args.url or not args.token:
        parser.error("--url and --token (or MOODLE_URL and MOODLE_TOKEN) are required")
    rec = Recorder(args.url, args.token)
    record(rec, args.course_with_grades)
    rec.write(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
