"""The Moodle simulator against answers recorded from a real Moodle 4.5 (no real site needed).

``sync_pipelines_tests/fixtures/moodle45/<wsfunction>.json`` holds what a real Moodle 4.5+ (Build:
20241205) answered to the pipeline's token for every web-service function the pipeline calls,
success and error answers alike (recorded by ``scripts/record_moodle45.py``; its docstring describes
the format). Here the simulator is put through the same run: the recorded cases of every file are
replayed in recording order (``seq``) over HTTP, the objects the recording created are created the
same way through the simulator's own web service (the admin-prepared course with grades is built
from the case's ``setup``), and ``{{name}}`` references in the parameters become the simulator's ids.

Each answer must have the recorded *shape*: the same keys at every level (for lists, the same
element shapes), the same JSON types (int, float, string, bool, null: PHP's ``json_encode`` sends a
whole float such as ``100.0`` as ``100``), and the same values for what the pipeline reads (see
:data:`VALUE_KEYS`) and for errors (exception class, error code, message up to numbers and paths).
"""

import fnmatch
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from sync_pipelines.moodle.client import php_form
from sync_pipelines.sandbox.moodle_sim import FUNCTIONS, REST_PATH, SITE_COURSE_ID, MoodleSimulator
from sync_pipelines.sandbox.recorded import resolve as _resolve

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "moodle45"
TOKEN = "contract-token-0123456789abcdef"
#: The recording's clock (2026-12-07), so that enrolment and grade times fall the same way.
NOW = datetime(2026, 12, 7, 14, 0, tzinfo=UTC)

#: Keys whose values must equal the recorded ones (the pipeline reads them), wherever they appear.
VALUE_KEYS = frozenset(
    {
        "idnumber",
        "shortname",
        "username",
        "email",
        "suspended",
        "roles",
        "format",
        "visible",
        "itemtype",
        "itemmodule",
        "graderaw",
        "grademax",
        "startdate",
        "enddate",
        "exception",
        "errorcode",
        "warningcode",
        "modname",
        "section",
    }
)

#: The one allow-list: ``(function glob, path glob) -> why``. A path is ``$`` then ``.key`` and ``[]``
#: per level. A listed key may be absent from either side and its value is not compared; everything
#: else must match.
SIM_MAY_DIFFER: dict[tuple[str, str], str] = {
    ("core_webservice_get_site_info", "$.username"): "the token's own account: the pipeline's is "
    "zohosync_ws, the simulator's tokens act as the site administrator (its docstring); the pipeline "
    "reads userid's type, which is compared.",
}

_PATHS = re.compile(r"(?:/[\w.+-]+)+/(?=(?:lib|course|user|enrol|grade|webservice)/)")
_NUMBERS = re.compile(r"\d+")
_CASE_KEYS = frozenset({"case", "seq", "params", "answer"})


def _cases() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(FIXTURES.glob("*.json")):
        cases = json.loads(path.read_text())
        # Only the recorder's files: lists of cases (another helper keeps other files here too).
        if not isinstance(cases, list) or not all(
            isinstance(c, dict) and c.keys() >= _CASE_KEYS for c in cases
        ):
            continue
        out += [(path.stem, case) for case in cases]
    out.sort(key=lambda fc: fc[1]["seq"])
    return out


CASES = _cases()


def _ws(sim: MoodleSimulator, function: str, params: dict, token: str = TOKEN) -> Any:
    query = {"wstoken": token, "wsfunction": function, "moodlewsrestformat": "json"}
    response = requests.post(sim.base_url + REST_PATH, params=query, data=php_form(params), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _apply_setup(sim: MoodleSimulator, setup: dict, refs: dict[str, int]) -> None:
    """Build the admin-prepared course with grades: course, users, enrolments over the web service;
    graded activities and grades through the simulator's API (no web service of the pipeline makes them)."""
    (course,) = _ws(sim, "core_course_create_courses", {"courses": [setup["course"]]})
    refs["grades_course"] = course["id"]
    users = [
        {k: u[k] for k in ("username", "firstname", "lastname", "email", "idnumber")}
        | {"auth": "manual", "createpassword": 1}
        for u in setup["users"]
    ]
    for described, created in zip(
        setup["users"], _ws(sim, "core_user_create_users", {"users": users}), strict=True
    ):
        refs[described["ref"]] = created["id"]
    enrolments = [
        {"roleid": role, "userid": refs[u["ref"]], "courseid": course["id"]}
        for u in setup["users"]
        for role in u["roleids"]
    ]
    assert _ws(sim, "enrol_manual_enrol_users", {"enrolments": enrolments}) is None
    for item in setup["items"]:
        item_id = sim.add_grade_item(
            course["id"], item["itemname"], grademax=item["grademax"], itemmodule=item["itemmodule"]
        )
        for ref, grade in item["grades"].items():
            sim.set_grade(course["id"], refs[ref], item_id, grade)


@pytest.fixture(scope="module")
def replay() -> Iterator[dict[int, Any]]:
    """Every recorded case replayed against one simulator, in recording order: seq -> its answer."""
    (site_info,) = [c for f, c in CASES if f == "core_webservice_get_site_info" and "token" not in c]
    service = frozenset(f["name"] for f in site_info["answer"]["functions"]) & frozenset(FUNCTIONS)
    sim = MoodleSimulator(
        tokens={TOKEN: service}, clock=lambda: NOW, site_name=site_info["answer"]["sitename"]
    )
    # The site course's shortname is the recording site's own setting (made at install), as its name is.
    site_course = next(
        c
        for _, case in CASES
        if isinstance(case["answer"], dict)
        for c in case["answer"].get("courses", [])
        if c["format"] == "site"
    )
    sim._state.courses[SITE_COURSE_ID]["shortname"] = site_course["shortname"]
    sim.start()
    refs: dict[str, int] = {}
    answers: dict[int, Any] = {}
    try:
        for function, case in CASES:
            if "setup" in case:
                _apply_setup(sim, case["setup"], refs)
            token = "invalid-token-" + "0" * 18 if case.get("token") == "invalid" else TOKEN
            try:
                params = _resolve(case["params"], refs)
            except KeyError as missing:  # an earlier create failed in the simulator: its case says why
                answers[case["seq"]] = {"replay": f"the simulator never created {missing}"}
                continue
            answer = _ws(sim, function, params, token)
            answers[case["seq"]] = answer
            if "refs" in case and isinstance(answer, list) and len(answer) == len(case["refs"]):
                for name, row in zip(case["refs"], answer, strict=True):
                    refs[name] = row["id"]
        yield answers
    finally:
        sim.stop()


# --- shapes ---------------------------------------------------------------------------------------


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


def _allowed(function: str, path: str) -> bool:
    path = re.sub(r"\[\d+\]", "[]", path)  # list positions do not matter to the allow-list
    return any(fnmatch.fnmatchcase(function, f) and fnmatch.fnmatchcase(path, p) for f, p in SIM_MAY_DIFFER)


def _shape(function: str, value: Any, path: str = "$") -> Any:
    """A hashable description of ``value``'s keys and types (allow-listed keys left out)."""
    if isinstance(value, dict):
        return tuple(
            sorted(
                (k, _shape(function, v, f"{path}.{k}"))
                for k, v in value.items()
                if not _allowed(function, f"{path}.{k}")
            )
        )
    if isinstance(value, list):
        return ("list", frozenset(_shape(function, v, f"{path}[]") for v in value))
    return _kind(value)


def _message(text: str) -> str:
    return _NUMBERS.sub("#", _PATHS.sub("<dirroot>/", text))


def _differences(
    function: str, recorded: Any, got: Any, path: str = "$", *, whole_site: bool = False
) -> list[str]:
    """What differs between the recorded answer and the simulator's, as readable lines."""
    if _kind(recorded) != _kind(got):
        return [
            f"{path}: Moodle sent {_kind(recorded)} {json.dumps(recorded)[:120]}, the simulator {_kind(got)} {json.dumps(got)[:120]}"
        ]
    out: list[str] = []
    if isinstance(recorded, dict):
        for key in recorded.keys() - got.keys():
            if not _allowed(function, f"{path}.{key}"):
                out.append(
                    f"{path}.{key}: missing from the simulator's answer (Moodle: {json.dumps(recorded[key])[:120]})"
                )
        for key in got.keys() - recorded.keys():
            if not _allowed(function, f"{path}.{key}"):
                out.append(f"{path}.{key}: not in Moodle's answer (simulator: {json.dumps(got[key])[:120]})")
        for key in recorded.keys() & got.keys():
            sub = f"{path}.{key}"
            inner = _differences(function, recorded[key], got[key], sub, whole_site=whole_site)
            out += inner
            if key in VALUE_KEYS and not inner and recorded[key] != got[key] and not _allowed(function, sub):
                out.append(
                    f"{sub}: Moodle sent {json.dumps(recorded[key])}, the simulator {json.dumps(got[key])}"
                )
        if "exception" in recorded and _message(str(recorded.get("message"))) != _message(
            str(got.get("message"))
        ):
            out.append(
                f"{path}.message: Moodle sent {recorded.get('message')!r}, the simulator {got.get('message')!r}"
            )
    elif isinstance(recorded, list):
        if len(recorded) == len(got) and not whole_site:
            for i, (r, g) in enumerate(zip(recorded, got, strict=True)):
                out += _differences(function, r, g, f"{path}[{i}]")
        elif not whole_site:
            out.append(f"{path}: Moodle sent {len(recorded)} elements, the simulator {len(got)}")
        else:  # the whole site's objects: the same element shapes, not the same elements
            want = {_shape(function, r, f"{path}[]") for r in recorded}
            have = {_shape(function, g, f"{path}[]") for g in got}
            if want != have:
                out.append(
                    f"{path}: element shapes differ: only Moodle's {sorted(map(str, want - have))}, only the simulator's {sorted(map(str, have - want))}"
                )
    return out


def _case_id(fc: tuple[str, dict]) -> str:
    function, case = fc
    return f"{case['seq']:02d}-{function}-{case['case']}"


def test_fixtures_cover_every_function_the_pipeline_calls() -> None:
    functions = {f for f, _ in CASES}
    pipeline = {
        "core_webservice_get_site_info", "core_user_get_users_by_field", "core_user_get_users",
        "core_user_create_users", "core_user_update_users", "core_course_get_categories",
        "core_course_create_categories", "core_course_get_courses_by_field", "core_course_create_courses",
        "core_course_update_courses", "core_course_get_contents", "enrol_manual_enrol_users",
        "enrol_manual_unenrol_users", "core_enrol_get_enrolled_users", "gradereport_user_get_grade_items",
    }  # fmt: skip
    assert pipeline <= functions
    errors = {c["answer"].get("errorcode") for _, c in CASES if isinstance(c["answer"], dict)}
    assert {"invalidtoken", "accessexception", "shortnametaken", "invalidparameter"} <= errors
    assert all("wstoken" not in json.dumps(c) for _, c in CASES)


@pytest.mark.parametrize("function_case", CASES, ids=_case_id)
def test_simulator_answers_like_moodle(function_case: tuple[str, dict], replay: dict[int, Any]) -> None:
    function, case = function_case
    got = replay[case["seq"]]
    differences = _differences(function, case["answer"], got, whole_site=bool(case.get("whole_site")))
    assert not differences, "\n".join([f"{function} ({case['case']}):", *differences])
