"""The Moodle web-services simulator over real HTTP: protocol, PHP quirks, users, courses, enrolments, grades."""

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from sync_pipelines.sandbox.moodle_sim import (
    DEFAULT_TOKEN,
    RELEASE,
    REST_PATH,
    ROLE_EDITINGTEACHER,
    ROLE_STUDENT,
    VERSION,
    MoodleSimulator,
)

NOW = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
SimFactory = Callable[..., MoodleSimulator]
Fields = list[tuple[str, str]]


@pytest.fixture
def make_sim() -> Iterator[SimFactory]:
    """Start simulators on free ports (fixed clock by default); stop them after the test."""
    started: list[MoodleSimulator] = []

    def make(**options: Any) -> MoodleSimulator:
        options.setdefault("clock", lambda: NOW)
        sim = MoodleSimulator(**options)
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: SimFactory) -> MoodleSimulator:
    """A default site (one token allowing every function)."""
    return make_sim()


def php_fields(value: Any, prefix: str = "") -> Fields:
    """Encode nested lists/dicts as PHP array form fields (``a[0][b]=v``), as a client does."""
    if isinstance(value, dict | list):
        items = enumerate(value) if isinstance(value, list) else value.items()
        out: Fields = []
        for key, item in items:
            out += php_fields(item, f"{prefix}[{key}]" if prefix else str(key))
        return out
    if value is None:
        return []
    return [(prefix, str(int(value)) if isinstance(value, bool) else str(value))]


def post(
    sim: MoodleSimulator,
    function: str,
    params: dict | None = None,
    *,
    token: str = DEFAULT_TOKEN,
    fmt: str | None = "json",
    fields: Fields | None = None,
) -> requests.Response:
    """POST a call: wstoken, wsfunction and moodlewsrestformat in the query, parameters in the body."""
    query = {"wstoken": token, "wsfunction": function}
    if fmt is not None:
        query["moodlewsrestformat"] = fmt
    data = fields if fields is not None else php_fields(params or {})
    return requests.post(sim.base_url + REST_PATH, params=query, data=data, timeout=5)


def call(sim: MoodleSimulator, function: str, params: dict | None = None, **options: Any) -> Any:
    """The decoded JSON answer of a call (always HTTP 200 for Moodle's own answers)."""
    response = post(sim, function, params, **options)
    assert response.status_code == 200, response.text
    return response.json()


def error_of(answer: Any) -> tuple[str, str | None, str]:
    """``(exception, errorcode, message)`` of a Moodle error body (asserting it is one); a PHP
    ``Error`` (``TypeError``...) has no errorcode: ``None``."""
    assert isinstance(answer, dict) and {"exception", "message"} <= set(answer), answer
    return answer["exception"], answer.get("errorcode"), answer["message"]


def new_user(n: int, **extra: Any) -> dict:
    """A valid ``core_user_create_users`` record for student ``n`` (``extra`` overrides fields)."""
    return {
        "username": f"student{n}",
        "firstname": f"First{n}",
        "lastname": f"Last{n}",
        "email": f"student{n}@school.example",
        "createpassword": 1,
        "idnumber": f"Z{n}",
        **extra,
    }


def create_users(sim: MoodleSimulator, *users: dict) -> list[int]:
    """Create users through the API; returns their ids."""
    answer = call(sim, "core_user_create_users", {"users": list(users)})
    assert isinstance(answer, list), answer
    return [u["id"] for u in answer]


def create_course(sim: MoodleSimulator, shortname: str, **extra: Any) -> int:
    """Create a course in 'Miscellaneous' through the API; returns its id."""
    course = {"fullname": f"Course {shortname}", "shortname": shortname, "categoryid": 1, **extra}
    answer = call(sim, "core_course_create_courses", {"courses": [course]})
    assert isinstance(answer, list), answer
    return answer[0]["id"]


def enrol(sim: MoodleSimulator, *enrolments: dict) -> Any:
    """Call ``enrol_manual_enrol_users``; returns the decoded answer (``None`` on success)."""
    return call(sim, "enrol_manual_enrol_users", {"enrolments": list(enrolments)})


# --- protocol -------------------------------------------------------------------------------------


def test_site_info_reports_the_release_and_the_functions_of_the_token(make_sim: SimFactory) -> None:
    allowed = frozenset({"core_webservice_get_site_info", "core_user_get_users_by_field"})
    sim = make_sim(tokens={"narrow": allowed, "wide": None}, site_name="Test School")
    info = call(sim, "core_webservice_get_site_info", token="narrow")
    assert (info["sitename"], info["release"], info["version"]) == ("Test School", RELEASE, VERSION)
    assert (info["userid"], info["username"], info["siteurl"]) == (2, "admin", sim.base_url)
    assert info["functions"] == [{"name": n, "version": VERSION} for n in sorted(allowed)]
    wide = call(sim, "core_webservice_get_site_info", token="wide")
    assert {"enrol_manual_enrol_users", "gradereport_user_get_grade_items"} <= {
        f["name"] for f in wide["functions"]
    }


@pytest.mark.parametrize(
    ("token", "function", "expected"),
    [
        (
            "nope",
            "core_webservice_get_site_info",
            ("core\\exception\\moodle_exception", "invalidtoken", "Invalid token - token not found"),
        ),
        (
            "",
            "core_webservice_get_site_info",
            ("core\\exception\\moodle_exception", "invalidtoken", "Invalid token - token not found"),
        ),
        (
            "narrow",
            "core_user_create_users",
            ("webservice_access_exception", "accessexception", "Access control exception"),
        ),
        (
            "narrow",
            "core_user_delete_everything",
            (
                "dml_missing_record_exception",
                "invalidrecord",
                "Can't find data record in database table external_functions.",
            ),
        ),
    ],
    ids=["unknown-token", "empty-token", "function-not-in-service", "unknown-function"],
)
def test_token_and_access_errors_come_back_with_http_200(
    make_sim: SimFactory, token: str, function: str, expected: tuple[str, str, str]
) -> None:
    sim = make_sim(tokens={"narrow": frozenset({"core_webservice_get_site_info"})})
    response = post(sim, function, token=token)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert error_of(response.json()) == expected
    assert "debuginfo" not in response.json()
    assert sim.requests[-1].errorcode == expected[1]


@pytest.mark.parametrize("debug", [False, True])
def test_debuginfo_only_in_debug_mode(make_sim: SimFactory, debug: bool) -> None:
    sim = make_sim(debug=debug)
    answer = call(sim, "core_user_create_users", {"users": [{"username": "x"}]})
    assert error_of(answer) == (
        "core\\exception\\invalid_parameter_exception",
        "invalidparameter",
        "Invalid parameter value detected",
    )
    if debug:
        assert answer["debuginfo"] == (
            "users => Invalid parameter value detected: Missing required key in single structure: firstname"
        )
    else:
        assert "debuginfo" not in answer


def test_without_moodlewsrestformat_the_answer_is_xml(sim: MoodleSimulator) -> None:
    ok = post(sim, "core_user_get_users_by_field", {"field": "username", "values": ["admin"]}, fmt=None)
    assert ok.status_code == 200 and ok.headers["Content-Type"].startswith("application/xml")
    assert ok.text.startswith('<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>\n<MULTIPLE>\n<SINGLE>\n')
    assert '<KEY name="username"><VALUE>admin</VALUE>' in ok.text
    bad = post(sim, "core_webservice_get_site_info", token="nope", fmt=None)
    assert bad.status_code == 200
    assert (
        '<EXCEPTION class="core\\exception\\moodle_exception">' in bad.text
        and "<ERRORCODE>invalidtoken</ERRORCODE>" in bad.text
    )
    with pytest.raises(ValueError):
        bad.json()


@pytest.mark.parametrize("where", ["query", "body", "mixed"])
def test_ws_parameters_may_come_in_the_query_or_the_body(sim: MoodleSimulator, where: str) -> None:
    control = {
        "wstoken": DEFAULT_TOKEN,
        "wsfunction": "core_webservice_get_site_info",
        "moodlewsrestformat": "json",
    }
    query = control if where == "query" else {"wstoken": DEFAULT_TOKEN} if where == "mixed" else {}
    body = {k: v for k, v in control.items() if k not in query}
    response = requests.post(sim.base_url + REST_PATH, params=query, data=body, timeout=5)
    assert response.json()["release"] == RELEASE
    get = requests.get(sim.base_url + REST_PATH, params=control, timeout=5)
    assert get.json()["release"] == RELEASE


def test_php_array_fields_are_decoded_into_nested_structures(sim: MoodleSimulator) -> None:
    fields = [
        ("users[0][username]", "amal"),
        ("users[0][firstname]", "Amal"),
        ("users[0][lastname]", "Haddad"),
        ("users[0][email]", "amal@school.example"),
        ("users[0][createpassword]", "1"),
        ("users[0][customfields][0][type]", "zohoid"),
        ("users[0][customfields][0][value]", "5843017000000100001"),
        ("users[0][customfields][1][type]", "programme"),
        ("users[0][customfields][1][value]", "BTEC L3"),
    ]
    (user_id,) = [u["id"] for u in call(sim, "core_user_create_users", fields=fields)]
    assert sim.user(user_id)["customfields"] == {"zohoid": "5843017000000100001", "programme": "BTEC L3"}
    assert sim.requests[-1].params["users"][0]["customfields"][1] == {"type": "programme", "value": "BTEC L3"}
    found = call(
        sim,
        "core_user_get_users_by_field",
        fields=[("field", "username"), ("values[]", "admin"), ("values[]", "amal")],
    )
    assert [u["username"] for u in found] == ["admin", "amal"]
    assert found[1]["customfields"][0] == {
        "type": "text",
        "value": "5843017000000100001",
        "displayvalue": "5843017000000100001",
        "name": "zohoid",
        "shortname": "zohoid",
    }


def test_unexpected_keys_are_refused(make_sim: SimFactory) -> None:
    sim = make_sim(debug=True)
    answer = call(sim, "core_user_create_users", {"users": [new_user(1, suspended=1)]})
    assert answer["debuginfo"] == (
        "users => Invalid parameter value detected: Unexpected keys (suspended) detected in parameter array."
    )
    extra = call(sim, "core_webservice_get_site_info", {"foo": "1"})
    assert extra["debuginfo"] == "Unexpected keys (foo) detected in parameter array."
    assert sim.users()[-1]["username"] == "admin"


# --- max_input_vars --------------------------------------------------------------------------------


def create_users_from(sim: MoodleSimulator, fields: Fields) -> list[int]:
    """Create users from raw form fields; returns their ids."""
    answer = call(sim, "core_user_create_users", fields=fields)
    assert isinstance(answer, list), answer
    return [u["id"] for u in answer]


def _student_fields(n: int, order: tuple[str, ...]) -> Fields:
    """The form fields of ``new_user(n)`` as ``users[n][...]``, in the given field order."""
    user = new_user(n)
    return [(f"users[{n}][{k}]", str(user[k])) for k in order]


_REQUIRED_LAST = ("username", "firstname", "lastname", "createpassword", "idnumber", "email")
_OPTIONAL_LAST = ("username", "firstname", "lastname", "createpassword", "email", "idnumber")


@pytest.mark.parametrize(
    ("extra", "truncated"), [(0, False), (1, False), (2, True)], ids=["at-limit", "one-over", "two-over"]
)
def test_php_keeps_max_input_vars_plus_one_body_fields(
    make_sim: SimFactory, extra: int, truncated: bool
) -> None:
    sim = make_sim(max_input_vars=12)
    fields = _student_fields(0, _OPTIONAL_LAST) + _student_fields(1, _OPTIONAL_LAST)  # 12 fields
    fields += [("users[2][username]", "student2"), ("users[2][firstname]", "F")][:extra]
    answer = call(sim, "core_user_create_users", fields=fields)
    log = sim.requests[-1]
    assert (log.field_count, log.truncated) == (12 + extra, truncated)
    if extra == 0:
        assert [u["username"] for u in answer] == ["student0", "student1"]
    else:  # the 13th field reaches Moodle (PHP's off-by-one), the 14th does not: users[2] lacks lastname
        assert answer["errorcode"] == "invalidparameter"
        assert log.params["users"][2] == {"username": "student2"}
        assert len(sim.users()) == 2


def test_a_two_field_overflow_silently_drops_the_tail(make_sim: SimFactory) -> None:
    sim = make_sim(max_input_vars=10, debug=True)
    # 12 fields: the last one (email, required) is dropped: a validation error, nothing created.
    answer = call(
        sim,
        "core_user_create_users",
        fields=_student_fields(0, _REQUIRED_LAST) + _student_fields(1, _REQUIRED_LAST),
    )
    assert answer["debuginfo"] == (
        "users => Invalid parameter value detected: Missing required key in single structure: email"
    )
    assert len(sim.users()) == 2 and sim.requests[-1].truncated
    # The same users with the optional idnumber last: no error, the second user is created without it.
    ids = create_users_from(sim, _student_fields(0, _OPTIONAL_LAST) + _student_fields(1, _OPTIONAL_LAST))
    assert [sim.user(i)["idnumber"] for i in ids] == ["Z0", ""]
    # A look-up whose matching values are past the limit answers [] with no error.
    fields = (
        [("field", "username")] + [("values[]", f"nobody{i}") for i in range(10)] + [("values[]", "student1")]
    )
    assert call(sim, "core_user_get_users_by_field", fields=fields) == []
    assert sim.requests[-1].truncated and "student1" not in sim.requests[-1].params["values"]


def test_the_query_keeps_exactly_max_input_vars_fields(make_sim: SimFactory) -> None:
    sim = make_sim(max_input_vars=3)
    url = sim.base_url + REST_PATH
    query = {
        "wstoken": DEFAULT_TOKEN,
        "wsfunction": "core_webservice_get_site_info",
        "moodlewsrestformat": "json",
    }
    assert requests.get(url, params=query, timeout=5).json()["release"] == RELEASE
    dropped = requests.get(url, params={**query, "extra": "x"}, timeout=5)  # 'extra' is dropped, no error
    assert dropped.json()["release"] == RELEASE and sim.requests[-1].truncated


# --- users ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "debuginfo", "next_id"),
    [
        (
            new_user(9, username="Amal"),
            "users => Invalid parameter value detected: username => Invalid parameter value detected: "
            'Invalid external api parameter: the value is "Amal", the server was expecting "username" type',
            3,
        ),
        (new_user(9, username="admin"), "Username already exists: admin", 4),
        (
            new_user(9, email="STUDENT1@school.example"),
            "Email address already exists: STUDENT1@school.example",
            4,
        ),
        (new_user(9, email="not-an-email"), "Email address is invalid: not-an-email", 4),
        (
            new_user(9, createpassword=None),
            "Invalid password: you must provide a password, or set createpassword.",
            4,
        ),
        (
            new_user(9, username="student1", email="other@school.example"),
            "Username already exists: student1",
            4,
        ),
        (new_user(9, firstname=" "), "The field firstname cannot be blank", 4),
    ],
    ids=[
        "uppercase",
        "existing-username",
        "email-other-case",
        "bad-email",
        "no-password",
        "same-batch",
        "blank",
    ],
)
def test_one_bad_user_in_three_creates_none(
    make_sim: SimFactory, bad: dict, debuginfo: str, next_id: int
) -> None:
    sim = make_sim(debug=True)
    answer = call(sim, "core_user_create_users", {"users": [new_user(1), bad, new_user(3)]})
    assert error_of(answer) == (
        "core\\exception\\invalid_parameter_exception",
        "invalidparameter",
        "Invalid parameter value detected",
    )
    assert answer["debuginfo"] == debuginfo
    assert [u["username"] for u in sim.users()] == ["guest", "admin"]
    # Parameter validation fails before any insert; a later failure rolls back an insert whose id
    # (a database sequence value) stays used.
    assert create_users(sim, new_user(1), new_user(3)) == [next_id, next_id + 1]


def test_created_users_get_moodle_defaults(sim: MoodleSimulator) -> None:
    (user_id,) = create_users(sim, new_user(1))
    user = sim.user(user_id)
    assert user_id == 3
    assert (user["auth"], user["idnumber"], user["suspended"], user["lang"], user["password"]) == (
        "manual", "Z1", 0, "en", "",
    )  # fmt: skip


def test_password_policy_failure_puts_html_in_the_errorcode(make_sim: SimFactory) -> None:
    sim = make_sim()
    answer = call(
        sim, "core_user_create_users", {"users": [new_user(1, createpassword=None, password="short")]}
    )
    exception, errorcode, message = error_of(answer)
    assert exception == "core\\exception\\moodle_exception" and errorcode.startswith(
        "<div>Passwords must be at least 8"
    )
    assert message == "error/" + errorcode
    assert create_users(sim, new_user(1, createpassword=None, password="Str0ng-enough"))
    relaxed = make_sim(password_policy=False)
    assert create_users(relaxed, new_user(1, createpassword=None, password="short"))


def test_update_users_reports_warnings_and_applies_the_rest(sim: MoodleSimulator) -> None:
    first, second = create_users(sim, new_user(1), new_user(2))
    answer = call(
        sim,
        "core_user_update_users",
        {
            "users": [
                {"id": 999, "firstname": "Ghost"},
                {"id": first, "suspended": 1, "lastname": "Changed"},
                {"id": second, "email": "STUDENT1@school.example"},
            ]
        },
    )
    assert answer == {
        "warnings": [
            {"item": "user", "itemid": 999, "warningcode": "invaliduserid", "message": "Invalid user ID"},
            {
                "item": "user",
                "itemid": second,
                "warningcode": "useremailduplicate",
                "message": "Duplicate address",
            },
        ]
    }
    assert (sim.user(first)["suspended"], sim.user(first)["lastname"]) == (1, "Changed")
    assert sim.user(second)["email"] == "student2@school.example"
    found = call(sim, "core_user_get_users_by_field", {"field": "id", "values": [first]})
    assert found[0]["suspended"] is True


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [("id", "3", [3]), ("idnumber", "Z1", [3]), ("username", "student1", [3]), ("email", "student1@school.example", [3]),
     ("idnumber", "", []), ("username", "nobody", [])],
)  # fmt: skip
def test_get_users_by_field(sim: MoodleSimulator, field: str, value: str, expected: list[int]) -> None:
    create_users(sim, new_user(1))
    found = call(sim, "core_user_get_users_by_field", {"field": field, "values": [value]})
    assert [u["id"] for u in found] == expected


def test_get_users_by_field_answers_moodle_shapes_and_errors(sim: MoodleSimulator) -> None:
    create_users(sim, new_user(1), new_user(2, idnumber=""))
    users = call(
        sim, "core_user_get_users_by_field", {"field": "username", "values": ["student1", "student2"]}
    )
    assert list(users[0])[:6] == ["id", "username", "firstname", "lastname", "fullname", "email"]
    assert (users[0]["fullname"], users[0]["idnumber"], users[0]["auth"], users[0]["suspended"]) == (
        "First1 Last1", "Z1", "manual", False,
    )  # fmt: skip
    assert "idnumber" not in users[1] and "city" not in users[1]
    upper = call(sim, "core_user_get_users_by_field", {"field": "username", "values": ["Student1"]})
    assert error_of(upper)[1] == "invalidparameter"
    bad = call(sim, "core_user_get_users_by_field", {"field": "city", "values": ["x"]})
    assert error_of(bad) == (
        "core\\exception\\coding_exception",
        "codingerror",
        "Coding error detected, it must be fixed by a programmer: invalid field parameter",
    )


# --- courses and categories -------------------------------------------------------------------------


def test_courses_by_field_include_the_site_course_when_the_field_is_empty(sim: MoodleSimulator) -> None:
    course_id = create_course(sim, "MATH-101", idnumber="ZC1")
    assert course_id == 2
    every = call(sim, "core_course_get_courses_by_field")
    assert [(c["id"], c["format"], c["categoryid"]) for c in every["courses"]] == [
        (1, "site", 0),
        (2, "topics", 1),
    ]
    assert every["warnings"] == []
    by_idnumber = call(sim, "core_course_get_courses_by_field", {"field": "idnumber", "value": "ZC1"})[
        "courses"
    ]
    assert [(c["id"], c["shortname"], c["categoryname"]) for c in by_idnumber] == [
        (2, "MATH-101", "Miscellaneous")
    ]
    ids = call(sim, "core_course_get_courses_by_field", {"field": "ids", "value": "2"})
    assert [c["id"] for c in ids["courses"]] == [2] and ids["warnings"] == []
    # An absent id is a PHP Error in Moodle 4.5, not a warning (fixtures/moodle45).
    absent = call(sim, "core_course_get_courses_by_field", {"field": "ids", "value": "2,77"})
    assert error_of(absent)[:2] == ("Error", None)
    assert [c["id"] for c in sim.courses()] == [2]


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (
            {"shortname": "MATH-101"},
            ("shortnametaken", "Short name is already used for another course (MATH-101)"),
        ),
        ({"idnumber": "ZC1"}, ("courseidnumbertaken", "ID number is already used for another course (ZC1)")),
        (
            {"categoryid": 42},
            (
                "errorcatcontextnotvalid",
                "You cannot execute functions in the category context (category id:42). "
                "The context error message was: Invalid parameter value detected",
            ),
        ),
    ],
    ids=["shortname", "idnumber", "category"],
)
def test_course_batches_are_all_or_nothing(
    sim: MoodleSimulator, bad: dict, expected: tuple[str, str]
) -> None:
    create_course(sim, "MATH-101", idnumber="ZC1")
    courses = [
        {"fullname": "Good", "shortname": "GOOD-1", "categoryid": 1},
        {"fullname": "Bad", "shortname": "BAD-1", "categoryid": 1, **bad},
    ]
    answer = call(sim, "core_course_create_courses", {"courses": courses})
    assert error_of(answer) == ("core\\exception\\moodle_exception", *expected)
    assert [c["shortname"] for c in sim.courses()] == ["MATH-101"]


def test_update_courses_warns_per_course(sim: MoodleSimulator) -> None:
    first = create_course(sim, "MATH-101")
    second = create_course(sim, "PHYS-101")
    answer = call(
        sim,
        "core_course_update_courses",
        {
            "courses": [
                {"id": first, "fullname": "Maths"},
                {"id": second, "shortname": "MATH-101"},
                {"id": 99},
            ]
        },
    )
    assert [(w["itemid"], w["warningcode"]) for w in answer["warnings"]] == [
        (second, "shortnametaken"),
        (99, "invalidrecord"),
    ]
    assert sim.courses()[0]["fullname"] == "Maths"


def test_categories_create_and_search(sim: MoodleSimulator) -> None:
    created = call(sim, "core_course_create_categories", {"categories": [{"name": "BTEC", "idnumber": "P1"}]})
    assert created == [{"id": 2, "name": "BTEC"}]
    child = call(sim, "core_course_create_categories", {"categories": [{"name": "Year 1", "parent": 2}]})[0][
        "id"
    ]
    by_idnumber = call(sim, "core_course_get_categories", {"criteria": [{"key": "idnumber", "value": "P1"}]})
    assert [(c["id"], c["path"], c["depth"]) for c in by_idnumber] == [(2, "/2", 1), (child, "/2/3", 2)]
    alone = call(
        sim,
        "core_course_get_categories",
        {"criteria": [{"key": "id", "value": "2"}], "addsubcategories": 0},
    )
    assert [c["id"] for c in alone] == [2]
    assert [c["name"] for c in call(sim, "core_course_get_categories")] == ["Miscellaneous", "BTEC", "Year 1"]
    duplicate = call(
        sim,
        "core_course_create_categories",
        {"categories": [{"name": "Other"}, {"name": "Dup", "idnumber": "P1"}]},
    )
    assert error_of(duplicate)[1:] == (
        "categoryidnumbertaken",
        "ID number is already used for another category",
    )
    assert len(sim.categories()) == 3


# --- enrolments -----------------------------------------------------------------------------------


def test_enrolling_again_is_a_no_op_that_may_add_a_role_or_suspend(sim: MoodleSimulator) -> None:
    (user_id,) = create_users(sim, new_user(1))
    course_id = create_course(sim, "MATH-101")
    student = {"roleid": ROLE_STUDENT, "userid": user_id, "courseid": course_id}
    assert enrol(sim, student) is None
    assert enrol(sim, student) is None
    assert [(e["userid"], e["roles"], e["status"]) for e in sim.enrolments(course_id)] == [(user_id, [5], 0)]
    enrol(sim, {**student, "suspend": 1})
    assert sim.enrolments()[0]["status"] == 1
    enrol(sim, {**student, "roleid": ROLE_EDITINGTEACHER})  # no 'suspend': the enrolment is active again
    assert [(e["roleid"], e["roles"], e["status"]) for e in sim.enrolments()] == [(5, [5, 3], 0)]


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({"userid": 999}, ("TypeError", None)),  # no errorcode (fixtures/moodle45)
        ({"courseid": 999}, ("core\\exception\\invalid_parameter_exception", "invalidparameter")),
        ({"roleid": 7}, ("core\\exception\\moodle_exception", "wsusercannotassign")),
    ],
    ids=["unknown-user", "unknown-course", "role"],
)
def test_a_bad_enrolment_fails_the_whole_call(
    sim: MoodleSimulator, bad: dict, expected: tuple[str, str]
) -> None:
    (user_id,) = create_users(sim, new_user(1))
    course_id = create_course(sim, "MATH-101")
    good = {"roleid": ROLE_STUDENT, "userid": user_id, "courseid": course_id}
    answer = enrol(sim, good, {**good, **bad})
    assert error_of(answer)[:2] == expected
    assert sim.enrolments() == []


def test_unenrol_removes_the_enrolment_and_its_roles(sim: MoodleSimulator) -> None:
    first, second = create_users(sim, new_user(1), new_user(2))
    course_id = create_course(sim, "MATH-101")
    enrol(sim, *({"roleid": ROLE_STUDENT, "userid": u, "courseid": course_id} for u in (first, second)))
    answer = call(
        sim, "enrol_manual_unenrol_users", {"enrolments": [{"userid": first, "courseid": course_id}]}
    )
    assert answer is None
    assert [e["userid"] for e in sim.enrolments()] == [second]
    gone = call(sim, "enrol_manual_unenrol_users", {"enrolments": [{"userid": second, "courseid": 999}]})
    assert error_of(gone)[1] == "invalidrecord" and len(sim.enrolments()) == 1


def test_enrolled_users_carry_their_roles_and_honour_options(sim: MoodleSimulator) -> None:
    ids = create_users(sim, new_user(1), new_user(2), new_user(3))
    course_id = create_course(sim, "MATH-101")
    enrol(
        sim,
        {"roleid": ROLE_STUDENT, "userid": ids[0], "courseid": course_id},
        {"roleid": ROLE_STUDENT, "userid": ids[1], "courseid": course_id, "suspend": 1},
        {"roleid": ROLE_EDITINGTEACHER, "userid": ids[2], "courseid": course_id},
    )
    users = call(sim, "core_enrol_get_enrolled_users", {"courseid": course_id})
    assert [u["id"] for u in users] == ids
    assert users[2]["roles"] == [{"roleid": 3, "name": "", "shortname": "editingteacher", "sortorder": 0}]
    assert "auth" not in users[0] and users[0]["enrolledcourses"][0]["shortname"] == "MATH-101"
    options = [{"name": "onlyactive", "value": "1"}, {"name": "limitfrom", "value": "1"}]
    assert [
        u["id"]
        for u in call(sim, "core_enrol_get_enrolled_users", {"courseid": course_id, "options": options})
    ] == [ids[2]]
    narrow = call(
        sim,
        "core_enrol_get_enrolled_users",
        {
            "courseid": course_id,
            "options": [
                {"name": "userfields", "value": "id,idnumber"},
                {"name": "limitnumber", "value": "1"},
            ],
        },
    )
    assert narrow == [{"id": ids[0], "fullname": "First1 Last1", "idnumber": "Z1"}]
    missing = call(sim, "core_enrol_get_enrolled_users", {"courseid": 999})
    assert error_of(missing)[2] == "Can't find data record in database table course."


# --- grades -----------------------------------------------------------------------------------------


def test_grade_items_with_grademax_and_a_course_total(sim: MoodleSimulator) -> None:
    first, second, teacher = create_users(sim, new_user(2), new_user(1), new_user(3))
    course_id = create_course(sim, "MATH-101", idnumber="ZC1")
    enrol(
        sim,
        *({"roleid": ROLE_STUDENT, "userid": u, "courseid": course_id} for u in (first, second)),
        {"roleid": ROLE_EDITINGTEACHER, "userid": teacher, "courseid": course_id},
    )
    essay = sim.add_grade_item(course_id, "Essay", grademax=50)
    exam = sim.add_grade_item(course_id, "Exam", grademax=100)
    sim.set_grade(course_id, first, essay, 40)
    sim.set_grade(course_id, first, exam, 87.5)
    sim.set_grade(course_id, second, essay, 25)
    report = call(sim, "gradereport_user_get_grade_items", {"courseid": course_id, "userid": 0})
    assert report["warnings"] == []
    # Students only (the teacher is not in gradebookroles), sorted by last name: Last1 before Last2.
    assert [g["userid"] for g in report["usergrades"]] == [second, first]
    mine = report["usergrades"][1]
    assert (mine["courseid"], mine["courseidnumber"], mine["userfullname"], mine["useridnumber"]) == (
        course_id, "ZC1", "First2 Last2", "Z2",
    )  # fmt: skip
    items = {g["itemname"]: g for g in mine["gradeitems"]}
    assert list(items) == ["Essay", "Exam", None]
    assert (items["Exam"]["graderaw"], items["Exam"]["gradeformatted"], items["Exam"]["percentageformatted"]) == (
        87.5, "87.50", "87.50 %",
    )  # fmt: skip
    assert (items["Essay"]["itemtype"], items["Essay"]["itemmodule"], items["Essay"]["grademax"]) == (
        "mod",
        "assign",
        50.0,
    )
    assert isinstance(items["Essay"]["cmid"], int) and isinstance(items["Essay"]["iteminstance"], int)
    total = items[None]
    assert (total["itemtype"], total["graderaw"], total["grademax"], total["percentageformatted"]) == (
        "course", 127.5, 150.0, "85.00 %",
    )  # fmt: skip
    assert "cmid" not in total
    # Natural aggregation excludes empty grades: 25 of the essay's 50 only.
    other = {g["itemname"]: g for g in report["usergrades"][0]["gradeitems"]}
    assert (other["Exam"]["graderaw"], other["Exam"]["gradeformatted"], other["Exam"]["percentageformatted"]) == (
        None, "-", "-",
    )  # fmt: skip
    assert (other[None]["graderaw"], other[None]["grademax"], other[None]["percentageformatted"]) == (
        25.0,
        50.0,
        "50.00 %",
    )
    sim.set_grade(course_id, second, essay, None)
    alone = call(sim, "gradereport_user_get_grade_items", {"courseid": course_id, "userid": second})
    assert [(g["graderaw"], g["grademax"]) for g in alone["usergrades"][0]["gradeitems"]] == [
        (None, 50.0), (None, 100.0), (None, 150.0),
    ]  # fmt: skip


def test_update_grades_through_the_web_service(sim: MoodleSimulator) -> None:
    (user_id,) = create_users(sim, new_user(1))
    course_id = create_course(sim, "MATH-101")
    item_id = sim.add_grade_item(course_id, "Essay")
    cmid = call(sim, "gradereport_user_get_grade_items", {"courseid": course_id, "userid": user_id})[
        "usergrades"
    ][0]["gradeitems"][0]["cmid"]
    params = {
        "source": "sync",
        "courseid": course_id,
        "component": "mod_assign",
        "activityid": cmid,
        "itemnumber": 0,
        "grades": [{"studentid": user_id, "grade": "64.5", "str_feedback": "Good"}],
    }
    assert call(sim, "core_grades_update_grades", params) == 0
    items = call(sim, "gradereport_user_get_grade_items", {"courseid": course_id, "userid": user_id})
    essay = items["usergrades"][0]["gradeitems"][0]
    assert (essay["id"], essay["graderaw"], essay["feedback"]) == (item_id, 64.5, "Good")


# --- injected failures and the log ---------------------------------------------------------------------


def test_fail_next_answers_http_errors_then_recovers(sim: MoodleSimulator) -> None:
    sim.fail_next(2, status=503, function="core_user_create_users")
    assert post(sim, "core_webservice_get_site_info").status_code == 200  # another function is not affected
    statuses = [post(sim, "core_user_create_users", {"users": [new_user(1)]}).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert [r.status for r in sim.requests[-3:]] == [503, 503, 200]
    sim.fail_next(5)
    sim.fail_next(0)
    assert post(sim, "core_webservice_get_site_info").status_code == 200


def test_fail_next_with_apply_loses_the_answer_of_an_applied_call(sim: MoodleSimulator) -> None:
    sim.fail_next(1, status=502, apply=True)
    assert post(sim, "core_user_create_users", {"users": [new_user(1)]}).status_code == 502
    retried = call(sim, "core_user_create_users", {"users": [new_user(1)]})
    assert error_of(retried)[1] == "invalidparameter"  # "Username already exists: student1"
    assert [u["username"] for u in sim.users()][-1] == "student1"


def test_fail_function_answers_an_exception_body(sim: MoodleSimulator) -> None:
    sim.fail_function(
        "core_course_create_courses",
        "nopermissions",
        "Sorry, but you do not currently have permissions",
        count=2,
    )
    for _ in range(2):
        answer = call(
            sim,
            "core_course_create_courses",
            {"courses": [{"fullname": "A", "shortname": "A", "categoryid": 1}]},
        )
        assert error_of(answer) == (
            "core\\exception\\moodle_exception",
            "nopermissions",
            "Sorry, but you do not currently have permissions",
        )
    assert sim.courses() == []
    assert create_course(sim, "A") == 2


def test_the_log_records_each_call(sim: MoodleSimulator) -> None:
    call(sim, "core_user_get_users_by_field", {"field": "username", "values": ["admin"]})
    post(sim, "core_webservice_get_site_info", token="nope")
    first, second = sim.requests
    assert (first.method, first.function, first.params, first.status, first.field_count, first.format) == (
        "POST", "core_user_get_users_by_field", {"field": "username", "values": ["admin"]}, 200, 2, "json",
    )  # fmt: skip
    assert (first.errorcode, first.truncated, first.time) == (None, False, NOW)
    assert second.errorcode == "invalidtoken"
    sim.reset_log()
    assert sim.requests == []


def test_add_user_makes_an_account_found_by_the_api(sim: MoodleSimulator) -> None:
    user_id = sim.add_user(username="handmade", firstname="Hand", lastname="Made", email="h@school.example",
                           idnumber="Z77", customfields={"zohoid": "Z77"})  # fmt: skip
    assert user_id == 3
    found = call(sim, "core_user_get_users_by_field", {"field": "email", "values": ["h@school.example"]})
    assert [(u["id"], u["idnumber"]) for u in found] == [(3, "Z77")]
    duplicate = call(sim, "core_user_create_users", {"users": [new_user(1, email="h@school.example")]})
    assert error_of(duplicate)[1] == "invalidparameter"
