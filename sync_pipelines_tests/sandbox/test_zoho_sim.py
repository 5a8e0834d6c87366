"""The Zoho CRM simulator over real HTTP: auth, reads, pagination, writes, limits and failures."""

import copy
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import pytest
import requests

from sync_pipelines.sandbox import ORG_TZ, ZohoSimulator, format_time, generate_school
from sync_pipelines.sandbox.zoho_sim import DEFAULT_SCOPES, ORG_USERS, org_modules
from sync_pipelines.zoho.modules import MODULES, metadata_for

CLIENT = ("test-client", "test-secret", "test-refresh")
OWNERS = ("Owner", "Created_By", "Modified_By")
#: Keys every field of ``GET /settings/fields`` carries (v7 sample; v8 spec's required keys).
FIELD_KEYS = {
    "id",
    "api_name",
    "field_label",
    "display_label",
    "data_type",
    "json_type",
    "length",
    "decimal_place",
    "system_mandatory",
    "read_only",
    "field_read_only",
    "custom_field",
    "visible",
    "pick_list_values",
    "lookup",
    "formula",
    "subform",
    "associated_module",
    "auto_number",
    "currency",
    "unique",
    "multiselectlookup",
    "operation_type",
}
START = datetime(2026, 11, 1, 10, 0, tzinfo=ORG_TZ)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, **delta: float) -> None:
        with self._lock:
            self.now += timedelta(**delta)


SimFactory = Callable[..., ZohoSimulator]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_sim(clock: FakeClock) -> Iterator[SimFactory]:
    """Start simulators on free ports (the test clock and client by default); stop them after."""
    started: list[ZohoSimulator] = []

    def make(**options: Any) -> ZohoSimulator:
        options.setdefault("clock", clock)
        options.setdefault("clients", {CLIENT[0]: (CLIENT[1], CLIENT[2])})
        sim = ZohoSimulator(**options)
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@cache
def _small_school() -> dict[str, list[dict]]:
    return generate_school(11, scale=0.2)


@pytest.fixture(scope="module")
def school_sim() -> Iterator[ZohoSimulator]:
    """The demo school at a fifth of its size, read-only for the tests that use it."""
    with ZohoSimulator(
        data=copy.deepcopy(_small_school()),
        clients={CLIENT[0]: (CLIENT[1], CLIENT[2])},
        max_concurrency=None,
        refresh_limit_per_minute=None,
    ) as sim:
        yield sim


@pytest.fixture(scope="module")
def big_sim() -> Iterator[ZohoSimulator]:
    """2,500 enrolments: more than ``page`` can reach."""
    rows = [{"Name": f"ENR-{i:05d}", "Enrollment_Type": "Normal"} for i in range(1, 2501)]
    with ZohoSimulator(
        data={"BTEC_Enrollments": rows},
        clients={CLIENT[0]: (CLIENT[1], CLIENT[2])},
        max_concurrency=None,
        refresh_limit_per_minute=None,
    ) as sim:
        yield sim


def refresh(sim: ZohoSimulator, client: tuple[str, str, str] = CLIENT) -> requests.Response:
    return requests.post(
        f"{sim.accounts_url}/oauth/v2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": client[0],
            "client_secret": client[1],
            "refresh_token": client[2],
        },
        timeout=5,
    )


def session(sim: ZohoSimulator) -> requests.Session:
    s = requests.Session()
    s.headers["Authorization"] = f"Zoho-oauthtoken {refresh(sim).json()['access_token']}"
    return s


def api(sim: ZohoSimulator, path: str) -> str:
    return f"{sim.api_domain}/crm/v8/{path}"


def error_of(response: requests.Response) -> tuple[int, str, dict]:
    body = response.json()
    assert set(body) == {"code", "message", "status", "details"} and body["status"] == "error", body
    return response.status_code, body["code"], body["details"]


# --- the token endpoint and authentication -----------------------------------------------------------


def test_refresh_answers_a_token_for_the_api_domain(make_sim: SimFactory):
    sim = make_sim(token_ttl=1800)
    r = refresh(sim)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"access_token", "scope", "expires_in", "api_domain", "token_type"}
    assert (body["expires_in"], body["api_domain"], body["token_type"]) == (1800, sim.base_url, "Bearer")
    assert body["scope"] == " ".join(DEFAULT_SCOPES)  # the scopes granted, space-separated
    ok = requests.get(
        api(sim, "BTEC_Students"),
        params={"fields": "Name"},
        headers={"Authorization": f"Zoho-oauthtoken {body['access_token']}"},
        timeout=5,
    )
    assert ok.status_code == 204  # an empty org


@pytest.mark.parametrize(
    ("client", "error"),
    [
        (("nobody", CLIENT[1], CLIENT[2]), "invalid_client"),
        ((CLIENT[0], "wrong-secret", CLIENT[2]), "invalid_client"),
        ((CLIENT[0], CLIENT[1], "revoked-refresh"), "invalid_code"),
    ],
)
def test_wrong_credentials_are_refused_with_http_200_like_zoho(
    make_sim: SimFactory, client: tuple[str, str, str], error: str
):
    r = refresh(make_sim(), client)
    assert (r.status_code, r.json()) == (200, {"error": error})


def test_refreshes_are_throttled_per_minute(make_sim: SimFactory, clock: FakeClock):
    sim = make_sim(refresh_limit_per_minute=5)
    assert [refresh(sim).status_code for _ in range(5)] == [200] * 5
    throttled = refresh(sim)
    assert throttled.status_code == 400
    assert throttled.json()["error"] == "Access Denied"
    assert throttled.json()["error_description"].startswith("You have made too many requests continuously")
    clock.advance(seconds=61)
    assert "access_token" in refresh(sim).json()


def test_tokens_expire_after_their_ttl_and_on_demand(make_sim: SimFactory, clock: FakeClock):
    sim = make_sim(token_ttl=3600)
    s = session(sim)
    url, params = api(sim, "BTEC_Teachers"), {"fields": "Name"}
    assert s.get(url, params=params, timeout=5).status_code == 204
    clock.advance(seconds=3600)
    expired = s.get(url, params=params, timeout=5)
    assert (expired.status_code, expired.json()) == (
        401,
        {"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"},
    )
    s = session(sim)
    assert s.get(url, params=params, timeout=5).status_code == 204
    sim.expire_tokens()
    assert error_of(s.get(url, params=params, timeout=5))[:2] == (401, "INVALID_TOKEN")


@pytest.mark.parametrize("header", [None, "Bearer {token}", "Zoho-oauthtoken not-a-token"])
def test_calls_without_a_valid_token_are_401(make_sim: SimFactory, header: str | None):
    sim = make_sim()
    token = refresh(sim).json()["access_token"]
    headers = {"Authorization": header.format(token=token)} if header else {}
    r = requests.get(api(sim, "BTEC_Teachers"), params={"fields": "Name"}, headers=headers, timeout=5)
    assert r.status_code == 401
    assert error_of(r)[1] in ("INVALID_TOKEN", "AUTHENTICATION_FAILURE")


# --- reading records ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", MODULES, ids=lambda m: m.name)
def test_every_module_answers_the_requested_fields_and_id(school_sim: ZohoSimulator, spec):
    s = session(school_sim)
    fields = list(spec.api_fields)
    r = s.get(api(school_sim, spec.api_name), params={"fields": ",".join(fields), "per_page": 50}, timeout=5)
    assert r.status_code == 200
    body = r.json()
    total = len(_small_school()[spec.api_name])
    assert body["info"]["count"] == len(body["data"]) == min(50, total)
    assert body["info"]["more_records"] is (total > 50)
    assert (body["info"]["sort_by"], body["info"]["sort_order"]) == ("id", "desc")
    ids = [rec["id"] for rec in body["data"]]
    assert ids == sorted(ids, reverse=True)
    meta = metadata_for(spec.api_name)
    # Subforms and multi-select lookups are rendered only when one record is fetched.
    listed = {f for f in fields if meta[f]["data_type"] not in ("subform", "multiselectlookup")}
    for rec in body["data"]:
        assert set(rec) == {*listed, "id"}
        assert ("Modified_Time" in rec) is spec.has_modified_time
        for f in spec.fields:
            if f.kind == "lookup" and rec[f.api_name] is not None:
                assert set(rec[f.api_name]) == {"name", "id"}


def test_fields_are_required_and_capped_at_50(school_sim: ZohoSimulator):
    s = session(school_sim)
    url = api(school_sim, "BTEC_Students")
    assert error_of(s.get(url, timeout=5)) == (400, "REQUIRED_PARAM_MISSING", {"param_name": "fields"})
    names = list(metadata_for("BTEC_Students"))
    assert s.get(url, params={"fields": ",".join(names[:50])}, timeout=5).status_code == 200
    assert error_of(s.get(url, params={"fields": ",".join(names[:51])}, timeout=5)) == (
        400,
        "LIMIT_EXCEEDED",
        {"limit": 50, "param_name": "fields"},
    )


def test_unknown_modules_and_paths(school_sim: ZohoSimulator):
    s = session(school_sim)
    assert error_of(s.get(api(school_sim, "Leads"), params={"fields": "Name"}, timeout=5))[:2] == (
        400,
        "INVALID_MODULE",
    )
    assert error_of(s.get(api(school_sim, "BTEC_Students/search/now"), timeout=5))[:2] == (
        404,
        "INVALID_URL_PATTERN",
    )
    assert error_of(requests.get(f"{school_sim.base_url}/nowhere", timeout=5))[:2] == (
        404,
        "INVALID_URL_PATTERN",
    )


@pytest.mark.parametrize("version", ["v2", "v5", "v8"])
def test_older_api_versions_behave_the_same(school_sim: ZohoSimulator, version: str):
    s = session(school_sim)
    url = f"{school_sim.api_domain}/crm/{version}/BTEC_Teachers"
    assert s.get(url, params={"fields": "Name", "per_page": 3}, timeout=5).json()["info"]["count"] == 3


def test_page_reaches_2000_records_then_needs_page_token(big_sim: ZohoSimulator):
    s = session(big_sim)
    url, params = api(big_sim, "BTEC_Enrollments"), {"fields": "Name", "per_page": 200}
    seen: list[str] = []
    for page in range(1, 11):
        body = s.get(url, params={**params, "page": page}, timeout=5).json()
        assert (body["info"]["page"], body["info"]["count"], body["info"]["more_records"]) == (
            page,
            200,
            True,
        )
        seen += [r["id"] for r in body["data"]]
    assert len(set(seen)) == 2000
    assert body["info"]["next_page_token"] and body["info"]["page_token_expiry"]
    past = s.get(url, params={**params, "page": 11}, timeout=5)
    assert (past.status_code, past.json()) == (
        400,
        {
            "code": "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
            "details": {"limit": 2000},
            "message": "You can only get the first 2000 records without using page_token param",
            "status": "error",
        },
    )
    assert error_of(s.get(url, params={"fields": "Name", "per_page": 100, "page": 21}, timeout=5))[1] == (
        "DISCRETE_PAGINATION_LIMIT_EXCEEDED"
    )

    token, rest = body["info"]["next_page_token"], []
    while token:
        body = s.get(url, params={**params, "page_token": token}, timeout=5).json()
        rest += [r["id"] for r in body["data"]]
        token = body["info"]["next_page_token"]
        assert bool(token) is body["info"]["more_records"]
    assert len(rest) == 500 and not set(rest) & set(seen)
    assert body["info"]["page"] == 13
    everything = seen + rest
    assert everything == sorted(everything, reverse=True)  # id desc, the default
    assert sorted(everything) == [r["id"] for r in big_sim.records("BTEC_Enrollments")]


def test_page_tokens_alone_walk_everything_in_either_order(big_sim: ZohoSimulator):
    s = session(big_sim)
    url = api(big_sim, "BTEC_Enrollments")
    ids, token, pages = [], None, 0
    while True:
        query = {"fields": "Name", "sort_order": "asc", **({"page_token": token} if token else {})}
        body = s.get(url, params=query, timeout=5).json()
        ids += [r["id"] for r in body["data"]]
        pages += 1
        if pages > 1:
            assert body["info"]["previous_page_token"]
        token = body["info"]["next_page_token"]
        if not token:
            break
    assert ids == [r["id"] for r in big_sim.records("BTEC_Enrollments")]


def test_page_tokens_are_bound_to_their_query_and_expire(make_sim: SimFactory, clock: FakeClock):
    sim = make_sim(data={"BTEC_Teachers": [{"Name": f"T{i}"} for i in range(5)]}, page_token_ttl=600)
    s = session(sim)
    url = api(sim, "BTEC_Teachers")
    token = s.get(url, params={"fields": "Name", "per_page": 2}, timeout=5).json()["info"]["next_page_token"]
    both = s.get(url, params={"fields": "Name", "per_page": 2, "page": 2, "page_token": token}, timeout=5)
    assert error_of(both)[:2] == (400, "AMBIGUITY_DURING_PROCESSING")
    altered = s.get(url, params={"fields": "Name,Email", "per_page": 2, "page_token": token}, timeout=5)
    assert error_of(altered) == (400, "TOKEN_BOUND_DATA_MISMATCH", {"param_name": "page_token"})
    assert (
        s.get(url, params={"fields": "Name", "per_page": 2, "page_token": token}, timeout=5).status_code
        == 200
    )
    clock.advance(seconds=601)
    expired = s.get(url, params={"fields": "Name", "per_page": 2, "page_token": token}, timeout=5)
    assert error_of(expired) == (
        400,
        "EXPIRED_VALUE",
        {"api_name": "page_token", "json_path": "$.query.page_token"},
    )


def _grades_at(sim: ZohoSimulator, *minutes: int) -> list[str]:
    return [
        sim.insert(
            "BTEC_Grades", {"Name": f"G{m}", "Modified_Time": format_time(START + timedelta(minutes=m))}
        )
        for m in minutes
    ]


def test_if_modified_since_is_inclusive_and_304_when_nothing_changed(make_sim: SimFactory):
    sim = make_sim()
    s = session(sim)
    old, edge, new = _grades_at(sim, 0, 10, 20)
    url, params = (
        api(sim, "BTEC_Grades"),
        {"fields": "Name,Modified_Time", "sort_by": "Modified_Time", "sort_order": "asc"},
    )
    edge_time = START + timedelta(minutes=10)
    for header in (format_time(edge_time), edge_time.astimezone(ORG_TZ.utc).isoformat()):
        r = s.get(url, params=params, headers={"If-Modified-Since": header}, timeout=5)
        assert [rec["id"] for rec in r.json()["data"]] == [edge, new]
    later = format_time(START + timedelta(minutes=21))
    unchanged = s.get(url, params=params, headers={"If-Modified-Since": later}, timeout=5)
    assert (unchanged.status_code, unchanged.content) == (304, b"")
    assert sim.requests[-1].headers == {"If-Modified-Since": later}
    sim.update("BTEC_Grades", old, Grade="M", Modified_Time=format_time(START + timedelta(minutes=30)))
    r = s.get(url, params=params, headers={"If-Modified-Since": later}, timeout=5)
    assert [rec["id"] for rec in r.json()["data"]] == [old]


def test_no_records_is_204_with_an_empty_body(make_sim: SimFactory):
    sim = make_sim()
    r = session(sim).get(api(sim, "BTEC_Payments"), params={"fields": "Name"}, timeout=5)
    assert (r.status_code, r.content) == (204, b"")


@pytest.mark.parametrize("spec", [m for m in MODULES if not m.has_modified_time], ids=lambda m: m.name)
def test_modules_without_modified_time_cannot_be_read_incrementally(make_sim: SimFactory, spec):
    sim = make_sim()
    ids = [sim.insert(spec.api_name, {"Modified_Time": format_time(START)}) for _ in range(3)]
    assert all("Modified_Time" not in r for r in sim.records(spec.api_name))
    s = session(sim)
    url = api(sim, spec.api_name)
    bad_sort = s.get(url, params={"fields": "id", "sort_by": "Modified_Time"}, timeout=5)
    assert error_of(bad_sort)[:2] == (400, "INVALID_DATA")
    assert "Modified_Time" not in error_of(bad_sort)[2]["supported_values"]
    future = format_time(START + timedelta(days=365))
    r = s.get(url, params={"fields": "Modified_Time"}, headers={"If-Modified-Since": future}, timeout=5)
    assert r.status_code == 200  # If-Modified-Since is not applied: everything comes back
    assert sorted(rec["id"] for rec in r.json()["data"]) == ids
    assert all(set(rec) == {"id"} for rec in r.json()["data"])


def test_one_record_by_id(school_sim: ZohoSimulator):
    s = session(school_sim)
    student = _small_school()["BTEC_Students"][3]
    (whole,) = s.get(api(school_sim, f"BTEC_Students/{student['id']}"), timeout=5).json()["data"]
    # Every field of the module (null when empty), with what the record holds.
    assert set(whole) == {*metadata_for("BTEC_Students"), "id"}
    assert {k: whole[k] for k in student} == student
    assert whole["Owner"] == whole["Created_By"] == whole["Modified_By"]
    assert whole["Owner"]["id"] in {u["id"] for u in school_sim.users if u["status"] == "active"}
    assert {k: v for k, v in whole.items() if k not in (*student, *OWNERS)} == dict.fromkeys(
        set(whole) - set(student) - set(OWNERS)
    )
    some = s.get(api(school_sim, f"BTEC_Students/{student['id']}"), params={"fields": "Last_Name"}, timeout=5)
    assert some.json() == {"data": [{"Last_Name": student["Last_Name"], "id": student["id"]}]}
    missing = s.get(api(school_sim, "BTEC_Students/5843017000000999999"), timeout=5)
    assert (missing.status_code, missing.content) == (204, b"")


def test_deleted_records_are_listed_by_type_and_time(make_sim: SimFactory, clock: FakeClock):
    sim = make_sim()
    s = session(sim)
    url = api(sim, "BTEC_Students/deleted")
    assert s.get(url, params={"type": "all"}, timeout=5).status_code == 204
    first, second, kept = (sim.insert("BTEC_Students", {"Name": f"STU-{i}"}) for i in range(3))
    sim.delete("BTEC_Students", first)
    clock.advance(minutes=5)
    sim.delete("BTEC_Students", second, permanent=True)
    body = s.get(url, params={"type": "all"}, timeout=5).json()
    assert [d["id"] for d in body["data"]] == [second, first]  # most recent first
    assert body["info"] == {"per_page": 200, "count": 2, "page": 1, "more_records": False}
    recycled = s.get(url, params={"type": "recycle"}, timeout=5).json()["data"]
    assert [(d["id"], d["type"], d["display_name"]) for d in recycled] == [(first, "recycle", "STU-0")]
    assert recycled[0]["deleted_time"] == format_time(START) and recycled[0]["deleted_by"]["name"]
    permanent = s.get(url, params={"type": "permanent"}, timeout=5).json()["data"]
    assert [(d["id"], d["deleted_by"], d["display_name"]) for d in permanent] == [(second, None, None)]
    since = {"If-Modified-Since": format_time(START + timedelta(minutes=5))}
    assert [d["id"] for d in s.get(url, headers=since, timeout=5).json()["data"]] == [second]
    assert sim.record("BTEC_Students", first) is None and sim.record("BTEC_Students", kept)


# --- writing records ------------------------------------------------------------------------------------


def _upsert(
    s: requests.Session, sim: ZohoSimulator, module: str, rows: list[Any], **extra: Any
) -> requests.Response:
    return s.post(api(sim, f"{module}/upsert"), json={"data": rows, "trigger": [], **extra}, timeout=5)


def test_upsert_inserts_then_updates_on_the_duplicate_check_field(make_sim: SimFactory, clock: FakeClock):
    sim = make_sim()
    s = session(sim)
    student = {"First_Name": "Ahmed", "Last_Name": "Haddad", "Academic_Email": "ahmed.haddad1@school.example"}
    inserted = _upsert(s, sim, "BTEC_Students", [student], duplicate_check_fields=["Academic_Email"])
    assert inserted.status_code == 200
    (result,) = inserted.json()["data"]
    assert {k: result[k] for k in ("code", "action", "status", "message", "duplicate_field")} == {
        "code": "SUCCESS",
        "action": "insert",
        "status": "success",
        "message": "record added",
        "duplicate_field": None,
    }
    new_id = result["details"]["id"]
    assert len(new_id) == 19 and result["details"]["Modified_Time"] == format_time(START)
    assert sim.record("BTEC_Students", new_id)["Name"]  # the autonumber is assigned

    clock.advance(minutes=7)
    change = {"Academic_Email": "AHMED.HADDAD1@school.example", "City": "Gaziantep", "Status": "Active"}
    (updated,) = _upsert(s, sim, "BTEC_Students", [change], duplicate_check_fields=["Academic_Email"]).json()[
        "data"
    ]
    assert (updated["action"], updated["duplicate_field"], updated["details"]["id"]) == (
        "update",
        "Academic_Email",
        new_id,
    )
    stored = sim.record("BTEC_Students", new_id)
    assert (stored["City"], stored["Last_Name"]) == ("Gaziantep", "Haddad")
    assert stored["Modified_Time"] == format_time(START + timedelta(minutes=7))
    by_id = _upsert(s, sim, "BTEC_Students", [{"id": new_id, "City": "Amman"}]).json()["data"][0]
    assert (by_id["action"], sim.record("BTEC_Students", new_id)["City"]) == ("update", "Amman")


@pytest.mark.parametrize(
    ("grades", "status"),
    [(["P", "M"], 200), (["P", "A"], 207), (["A", "Distinction"], 400)],
)
def test_upsert_status_follows_the_per_record_results(make_sim: SimFactory, grades: list[str], status: int):
    sim = make_sim()
    student = sim.insert("BTEC_Students", {"Academic_Email": "s@school.example"})
    klass = sim.insert("BTEC_Classes", {"Class_Name": "Programming", "Class_Short_Name": "IT-U1"})
    rows = [{"Student": {"id": student}, "Class": klass, "Grade": g} for g in grades]
    r = _upsert(session(sim), sim, "BTEC_Grades", rows)
    assert r.status_code == status
    for i, (grade, result) in enumerate(zip(grades, r.json()["data"], strict=True)):
        if grade in ("P", "M"):
            assert result["code"] == "SUCCESS"
            stored = sim.record("BTEC_Grades", result["details"]["id"])
            assert stored["Student"] == {"name": sim.record("BTEC_Students", student)["Name"], "id": student}
            assert stored["Class"] == {"name": sim.record("BTEC_Classes", klass)["Name"], "id": klass}
        else:
            assert result == {
                "code": "INVALID_DATA",
                "details": {
                    "api_name": "Grade",
                    "json_path": f"$.data[{i}].Grade",
                    "expected_data_type": "picklist",
                },
                "message": "invalid data",
                "status": "error",
            }


@pytest.mark.parametrize(
    ("row", "code", "api_name"),
    [
        ({"Name": "ENR-1", "Classes": None}, "MANDATORY_NOT_FOUND", "Classes"),
        ({"Enrollment_Type": "Auditing"}, "INVALID_DATA", "Enrollment_Type"),
        ({"Start_Date": "2026-02-30"}, "INVALID_DATA", "Start_Date"),
        ({"Synced_to_Moodle": "yes"}, "INVALID_DATA", "Synced_to_Moodle"),
        ({"No_Such_Field": 1}, "INVALID_DATA", "No_Such_Field"),
        ({"Enrolled_Students": {"id": "5843017000000999999"}}, "INVALID_DATA", "Enrolled_Students"),
    ],
)
def test_upsert_validates_each_record_against_the_metadata(
    make_sim: SimFactory, row: dict, code: str, api_name: str
):
    sim = make_sim()
    student = sim.insert("BTEC_Students", {"Academic_Email": "s@school.example"})
    klass = sim.insert("BTEC_Classes", {"Class_Short_Name": "IT-U1"})
    full = {"Enrolled_Students": student, "Classes": {"id": klass}, **row}
    r = _upsert(session(sim), sim, "BTEC_Enrollments", [full])
    assert r.status_code == 400
    (result,) = r.json()["data"]
    assert (result["code"], result["status"], result["details"]["api_name"]) == (code, "error", api_name)
    assert result["details"]["json_path"].startswith(f"$.data[0].{api_name}")
    assert sim.records("BTEC_Enrollments") == []


def test_upsert_refuses_to_guess_between_duplicates(make_sim: SimFactory):
    sim = make_sim()
    for name in ("Omar Nasser", "Omar Nasser (2)"):
        sim.insert(
            "BTEC_Teachers",
            {"Name": name, "Email": "omar@mail.example", "Academic_Email": f"{len(name)}@s.ex"},
        )
    r = _upsert(
        session(sim),
        sim,
        "BTEC_Teachers",
        [{"Name": "Omar", "Email": "omar@mail.example"}],
        duplicate_check_fields=["Email"],
    )
    (result,) = r.json()["data"]
    assert (r.status_code, result["code"], result["details"]["api_name"]) == (400, "DUPLICATE_DATA", "Email")
    assert len(sim.records("BTEC_Teachers")) == 2


def test_upsert_takes_at_most_100_records_and_charges_per_10(make_sim: SimFactory):
    sim = make_sim()
    s = session(sim)
    too_many = _upsert(s, sim, "BTEC_Teachers", [{"Name": f"T{i}"} for i in range(101)])
    assert error_of(too_many)[:2] == (400, "LIMIT_EXCEEDED")
    ok = _upsert(s, sim, "BTEC_Teachers", [{"Name": f"T{i}"} for i in range(25)])
    assert ok.status_code == 200
    assert [r.credits for r in sim.requests if r.path.endswith("/upsert")] == [0, 3]
    ids = [r["details"]["id"] for r in ok.json()["data"]]
    assert ids == sorted(ids) and all(len(i) == 19 for i in ids)


def test_insert_update_and_delete_endpoints(make_sim: SimFactory):
    sim = make_sim()
    s = session(sim)
    created = s.post(api(sim, "BTEC_Teachers"), json={"data": [{"Name": "Rana Saleh"}]}, timeout=5)
    assert created.status_code == 201
    teacher = created.json()["data"][0]["details"]["id"]
    updated = s.put(
        api(sim, "BTEC_Teachers"), json={"data": [{"id": teacher, "Phone_Number": "+90 555"}]}, timeout=5
    )
    assert updated.status_code == 200 and sim.record("BTEC_Teachers", teacher)["Phone_Number"] == "+90 555"
    deleted = s.delete(api(sim, "BTEC_Teachers"), params={"ids": f"{teacher},5843017000000999999"}, timeout=5)
    assert deleted.status_code == 207
    assert [d["id"] for d in sim.deleted("BTEC_Teachers")] == [teacher]


@pytest.mark.parametrize("spec", MODULES, ids=lambda m: m.name)
def test_settings_fields_serves_the_orgs_metadata(school_sim: ZohoSimulator, spec):
    """The same fields as zoho_fields.json, in its order, each with Zoho's full set of keys."""
    s = session(school_sim)
    r = s.get(api(school_sim, "settings/fields"), params={"module": spec.api_name}, timeout=5)
    fields = r.json()["fields"]
    kept = list(metadata_for(spec.api_name).values())
    assert [(f["api_name"], f["data_type"]) for f in fields] == [
        (f["api_name"], f["data_type"]) for f in kept
    ]
    for served, source in zip(fields, kept, strict=True):
        assert set(served) >= FIELD_KEYS, served["api_name"]
        assert served["system_mandatory"] is bool(source.get("required"))
        assert [o["actual_value"] for o in served["pick_list_values"]] == source.get("pick_list_values", [])
        if source.get("lookup_module"):
            assert served["lookup"]["module"]["api_name"] == source["lookup_module"]
        else:
            assert served["lookup"] == {}


def test_coql_serves_a_small_select(school_sim: ZohoSimulator):
    s = session(school_sim)
    url = api(school_sim, "coql")
    student = _small_school()["BTEC_Students"][5]
    query = f"select id, Last_Name, Program from BTEC_Students where Academic_Email = '{student['Academic_Email']}' limit 10"
    body = s.post(url, json={"select_query": query}, timeout=5).json()
    assert body == {
        "data": [
            {
                "id": student["id"],
                "Last_Name": student["Last_Name"],
                "Program": {"id": student["Program"]["id"]},
            }
        ],
        "info": {"count": 1, "more_records": False},
    }
    enrolments = _small_school()["BTEC_Enrollments"]
    page = s.post(
        url, json={"select_query": "select Name from BTEC_Enrollments limit 100 offset 100"}, timeout=5
    )
    assert [r["id"] for r in page.json()["data"]] == [r["id"] for r in enrolments[100:200]]
    assert page.json()["info"]["more_records"] is (len(enrolments) > 200)
    none = s.post(
        url, json={"select_query": "select Name from BTEC_Teachers where Name = 'nobody'"}, timeout=5
    )
    assert none.status_code == 204
    for bad in ("delete from BTEC_Teachers", "select Name from BTEC_Teachers where Name like 'A%' or 1"):
        assert error_of(s.post(url, json={"select_query": bad}, timeout=5))[:2] == (400, "SYNTAX_ERROR")


# --- limits and failures -----------------------------------------------------------------------------------


def test_credits_run_out_with_429_and_no_retry_after(make_sim: SimFactory, clock: FakeClock):
    sim = make_sim(daily_credit_limit=10, data={"BTEC_Teachers": [{"Name": "T"}]})
    s = session(sim)
    url, params = api(sim, "BTEC_Teachers"), {"fields": "Name"}
    remaining = []
    for _ in range(10):
        r = s.get(url, params=params, timeout=5)
        assert r.status_code == 200
        remaining.append(r.headers.get("X-API-CREDITS-REMAINING"))
    assert remaining == [None] * 4 + ["5", "4", "3", "2", "1", "0"]
    out = s.get(url, params=params, timeout=5)
    assert error_of(out)[:2] == (429, "TOO_MANY_REQUESTS")
    assert "Retry-After" not in out.headers
    assert sim.credits_used() == 10
    clock.advance(hours=24)  # the window rolls on (and the token has expired meanwhile)
    assert session(sim).get(url, params=params, timeout=5).status_code == 200


def test_too_many_concurrent_calls_are_429(make_sim: SimFactory):
    sim = make_sim(max_concurrency=2, response_delay=0.3)
    s = session(sim)
    barrier = threading.Barrier(5)

    def call(_: int) -> int:
        barrier.wait()
        return requests.get(
            api(sim, "BTEC_Teachers"), params={"fields": "Name"}, headers=dict(s.headers), timeout=5
        ).status_code

    with ThreadPoolExecutor(5) as pool:
        statuses = sorted(pool.map(call, range(5)))
    assert statuses.count(204) == 2 and statuses.count(429) == 3


def test_fail_next_injects_errors_on_matching_calls(make_sim: SimFactory):
    sim = make_sim()
    s = session(sim)
    teachers, students = api(sim, "BTEC_Teachers"), api(sim, "BTEC_Students")
    params = {"fields": "Name"}
    sim.fail_next(2, status=503, code="SERVICE_UNAVAILABLE", path_contains="BTEC_Teachers")
    assert s.get(students, params=params, timeout=5).status_code == 204
    assert error_of(s.get(teachers, params=params, timeout=5))[:2] == (503, "SERVICE_UNAVAILABLE")
    assert error_of(s.get(teachers, params=params, timeout=5))[:2] == (503, "SERVICE_UNAVAILABLE")
    assert s.get(teachers, params=params, timeout=5).status_code == 204
    sim.fail_next(5)
    assert error_of(s.get(students, params=params, timeout=5))[:2] == (500, "INTERNAL_ERROR")
    sim.fail_next(0)
    assert s.get(students, params=params, timeout=5).status_code == 204
    sim.fail_next(1, status=500, path_contains="/oauth/")
    assert refresh(sim).status_code == 500
    assert refresh(sim).status_code == 200
    assert [r.credits for r in sim.requests if r.path.startswith("/crm/")] == [1, 0, 0, 1, 0, 1]


def test_the_state_api_assigns_ids_times_and_autonumbers(make_sim: SimFactory, clock: FakeClock):
    sim = make_sim(data={"BTEC_Students": [{"Name": "STU-00041", "id": "5843017000000100041"}]})
    new = sim.insert("BTEC_Students", {"First_Name": "Sara"})
    assert int(new) > 5843017000000100041 and len(new) == 19
    rec = sim.record("BTEC_Students", new)
    assert (rec["Name"], rec["Created_Time"], rec["Modified_Time"]) == (
        "STU-00042",
        format_time(START),
        format_time(START),
    )
    clock.advance(hours=1)
    sim.update("BTEC_Students", new, City="Bursa")
    assert sim.record("BTEC_Students", new)["Modified_Time"] == "2026-11-01T11:00:00+03:00"
    with pytest.raises(KeyError):
        sim.update("BTEC_Students", "1", City="Bursa")
    with pytest.raises(KeyError):
        sim.insert("Leads", {})
    other = ZohoSimulator(id_prefix="7000001000000")
    assert other.insert("BTEC_Teachers", {"Name": "T"}).startswith("7000001000000")


# --- list reads stay right while the simulator remembers their sort ------------------------------------

GRADES = "BTEC_Grades"
LISTED = "Name,Moodle_Grade_ID,Modified_Time"


def _grades(n: int) -> list[dict]:
    """``n`` grades modified a minute apart, the newest a minute before ``START`` (the clock)."""
    return [
        {"Moodle_Grade_ID": f"MG-{i:05d}", "Modified_Time": format_time(START - timedelta(minutes=n - i))}
        for i in range(n)
    ]


def _walk(
    s: requests.Session,
    sim: ZohoSimulator,
    sort_by: str,
    sort_order: str,
    *,
    per_page: int = 200,
    since: str | None = None,
    between_pages: Callable[[int], None] | None = None,
) -> tuple[list[tuple[str, str, str, str]], int]:
    """Every ``(id, Name, Moodle_Grade_ID, Modified_Time)`` of a page_token walk, and its status.

    ``between_pages(n)`` runs after the n-th page (1-based), before the next is asked for.
    """
    params = {"fields": LISTED, "per_page": per_page, "sort_by": sort_by, "sort_order": sort_order}
    headers = {"If-Modified-Since": since} if since else {}
    rows: list[tuple[str, str, str, str]] = []
    token, pages = None, 0
    while True:
        query = {**params, **({"page_token": token} if token else {})}
        r = s.get(api(sim, GRADES), params=query, headers=headers, timeout=10)
        if r.status_code != 200:
            assert not rows, "a walk ended without more_records being false"
            return rows, r.status_code
        info = r.json()["info"]
        assert info["count"] == len(r.json()["data"]) <= per_page
        rows += [(g["id"], g["Name"], g["Moodle_Grade_ID"], g["Modified_Time"]) for g in r.json()["data"]]
        pages += 1
        if between_pages is not None:
            between_pages(pages)
        token = info["next_page_token"]
        assert bool(token) is info["more_records"]
        if not token:
            return rows, 200


def _expected(
    sim: ZohoSimulator, sort_by: str, sort_order: str, since: datetime | None = None
) -> list[tuple[str, str, str, str]]:
    """The order Zoho answers, worked out from the simulator's state rather than its list reads."""
    live = [
        g for g in sim.records(GRADES) if since is None or datetime.fromisoformat(g["Modified_Time"]) >= since
    ]

    def key(g: dict) -> tuple:
        return (int(g["id"]),) if sort_by == "id" else (datetime.fromisoformat(g[sort_by]), int(g["id"]))

    live.sort(key=key, reverse=sort_order == "desc")
    return [(g["id"], g["Name"], g.get("Moodle_Grade_ID"), g["Modified_Time"]) for g in live]


READS = [("id", "desc"), ("id", "asc"), ("Modified_Time", "asc"), ("Modified_Time", "desc")]


def _oldest(sim: ZohoSimulator) -> str:
    return min(sim.records(GRADES), key=lambda g: g["Modified_Time"])["id"]


def _api_write(s: requests.Session, sim: ZohoSimulator, method: str, path: str, row: dict) -> dict:
    r = s.request(
        method, api(sim, path), json={"data": [row], "duplicate_check_fields": ["Moodle_Grade_ID"]}, timeout=5
    )
    assert r.status_code in (200, 201), r.text
    return r.json()["data"][0]


def _insert(s: requests.Session, sim: ZohoSimulator) -> str:
    return sim.insert(
        GRADES, {"Moodle_Grade_ID": "MG-new", "Modified_Time": format_time(START - timedelta(days=1))}
    )


def _update(s: requests.Session, sim: ZohoSimulator) -> str:
    sim.update(GRADES, changed := _oldest(sim), Moodle_Grade_ID="MG-changed")
    return changed


def _delete(s: requests.Session, sim: ZohoSimulator) -> str:
    sim.delete(GRADES, gone := _oldest(sim))
    return gone


def _api_insert(s: requests.Session, sim: ZohoSimulator) -> str:
    return _api_write(s, sim, "POST", GRADES, {"Moodle_Grade_ID": "MG-new"})["details"]["id"]


def _api_update(s: requests.Session, sim: ZohoSimulator) -> str:
    row = {"id": _oldest(sim), "Moodle_Grade_ID": "MG-changed"}
    return _api_write(s, sim, "PUT", GRADES, row)["details"]["id"]


def _api_upsert_insert(s: requests.Session, sim: ZohoSimulator) -> str:
    result = _api_write(s, sim, "POST", f"{GRADES}/upsert", {"Moodle_Grade_ID": "MG-new"})
    assert result["action"] == "insert"
    return result["details"]["id"]


def _api_upsert_update(s: requests.Session, sim: ZohoSimulator) -> str:
    result = _api_write(s, sim, "POST", f"{GRADES}/upsert", {"Moodle_Grade_ID": "MG-00000", "Grade": "M"})
    assert (result["action"], result["details"]["id"]) == ("update", _grade_id(sim, "MG-00000"))
    return result["details"]["id"]


def _api_delete(s: requests.Session, sim: ZohoSimulator) -> str:
    gone = _oldest(sim)
    assert s.delete(api(sim, GRADES), params={"ids": gone}, timeout=5).status_code == 200
    return gone


def _grade_id(sim: ZohoSimulator, moodle_id: str) -> str:
    return next(g["id"] for g in sim.records(GRADES) if g.get("Moodle_Grade_ID") == moodle_id)


# Every way BTEC_Grades can change, each answering the record changed and what became of it.
CHANGES: dict[str, tuple[Callable[[requests.Session, ZohoSimulator], str], str]] = {
    "insert": (_insert, "added"),
    "update": (_update, "changed"),
    "delete": (_delete, "gone"),
    "api_insert": (_api_insert, "added"),
    "api_update": (_api_update, "changed"),
    "api_upsert_insert": (_api_upsert_insert, "added"),
    "api_upsert_update": (_api_upsert_update, "changed"),
    "api_delete": (_api_delete, "gone"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_list_reads_see_every_kind_of_change(make_sim: SimFactory, clock: FakeClock, change: str):
    sim = make_sim(data={GRADES: _grades(30)})
    s = session(sim)
    for sort_by, sort_order in READS:  # page 1 of each order, read before the change
        first_page = s.get(
            api(sim, GRADES),
            params={"fields": LISTED, "per_page": 10, "sort_by": sort_by, "sort_order": sort_order},
            timeout=5,
        ).json()
        expected = _expected(sim, sort_by, sort_order)
        assert [(g["id"], g["Modified_Time"]) for g in first_page["data"]] == [
            (r[0], r[3]) for r in expected[:10]
        ]
    before = {g["id"] for g in sim.records(GRADES)}
    clock.advance(minutes=1)

    make_change, outcome = CHANGES[change]
    changed = make_change(s, sim)

    after = {g["id"] for g in sim.records(GRADES)}
    assert after == {"added": before | {changed}, "changed": before, "gone": before - {changed}}[outcome]
    assert len(after) == {"added": 31, "changed": 30, "gone": 29}[outcome]
    for sort_by, sort_order in READS:
        expected = _expected(sim, sort_by, sort_order)
        assert _walk(s, sim, sort_by, sort_order)[0] == expected, (sort_by, sort_order)
        first_page = s.get(
            api(sim, GRADES),
            params={"fields": LISTED, "per_page": 10, "sort_by": sort_by, "sort_order": sort_order},
            timeout=5,
        ).json()
        assert [g["id"] for g in first_page["data"]] == [row[0] for row in expected[:10]]
        assert first_page["info"]["more_records"] is True
        last_page = s.get(
            api(sim, GRADES),
            params={
                "fields": LISTED,
                "per_page": 10,
                "page": 4,
                "sort_by": sort_by,
                "sort_order": sort_order,
            },
            timeout=5,
        )
        if outcome == "added":  # 31 records: the fourth page of 10 holds the last one
            assert [g["id"] for g in last_page.json()["data"]] == [expected[30][0]]
            assert last_page.json()["info"]["more_records"] is False
        else:
            assert (last_page.status_code, last_page.content) == (204, b"")
    by_time = [row[0] for row in _walk(s, sim, "Modified_Time", "asc")[0]]
    by_id = [row[0] for row in _walk(s, sim, "id", "asc")[0]]
    if outcome == "gone":
        assert changed not in by_time and changed not in by_id
    elif outcome == "changed":  # modified now: the newest, where it was the oldest (or first written)
        assert by_time[-1] == changed and by_time[0] != changed
        assert sim.record(GRADES, changed)["Modified_Time"] == format_time(START + timedelta(minutes=1))
    else:  # the newest id; sim.insert kept the Modified_Time it was given (the oldest of all)
        assert by_id[-1] == changed
        assert by_time[0 if change == "insert" else -1] == changed
        assert sim.record(GRADES, changed)["Name"]  # the autonumber was filled in


def test_a_page_token_walk_past_2000_records_stays_consistent(make_sim: SimFactory, clock: FakeClock):
    sim = make_sim(data={GRADES: _grades(2_300)}, max_concurrency=None)
    s = session(sim)
    for sort_by, sort_order in READS:
        rows, _ = _walk(s, sim, sort_by, sort_order)
        assert len(rows) == len({r[0] for r in rows}) == 2_300
        assert rows == _expected(sim, sort_by, sort_order)

    # Change records in the middle of a walk (oldest first): the walk goes on from its cursor.
    ordered = [r[0] for r in _expected(sim, "Modified_Time", "asc")]
    served_then_updated, never_served, deleted_by_api = ordered[10], ordered[2_000], ordered[2_100]
    added: list[str] = []

    def change(page: int) -> None:
        if page != 5:
            return
        clock.advance(minutes=1)
        sim.update(GRADES, served_then_updated, Moodle_Grade_ID="MG-again")
        sim.delete(GRADES, never_served)
        s.delete(api(sim, GRADES), params={"ids": deleted_by_api}, timeout=5).raise_for_status()
        added.append(_api_write(s, sim, "POST", GRADES, {"Moodle_Grade_ID": "MG-late"})["details"]["id"])

    rows, _ = _walk(s, sim, "Modified_Time", "asc", between_pages=change)
    ids = [r[0] for r in rows]
    assert len(ids) == 2_300 - 2 + 1 + 1  # two deleted before their turn, one added, one served twice
    assert never_served not in ids and deleted_by_api not in ids
    assert ids.count(served_then_updated) == 2
    assert rows[-2:] == [
        row for row in _expected(sim, "Modified_Time", "asc") if row[0] in (served_then_updated, added[0])
    ]
    assert ids[:1_000] == ordered[:1_000]
    assert ids[1_000:-2] == [i for i in ordered[1_000:] if i not in (never_served, deleted_by_api)]
    # and a walk after the changes answers the new state, in both directions
    for sort_by, sort_order in [("id", "desc"), ("Modified_Time", "desc")]:
        assert _walk(s, sim, sort_by, sort_order)[0] == _expected(sim, sort_by, sort_order)


def test_a_walk_sorts_the_module_once_not_once_a_page(make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch):
    from sync_pipelines.sandbox import zoho_sim

    sim = make_sim(data={GRADES: _grades(1_000)}, max_concurrency=None)
    s = session(sim)
    keyed: list[str] = []
    sort_key = zoho_sim._sort_key
    monkeypatch.setattr(
        zoho_sim, "_sort_key", lambda rec, sort_by: (keyed.append(rec["id"]), sort_key(rec, sort_by))[1]
    )
    for _ in range(2):
        assert len(_walk(s, sim, "Modified_Time", "asc")[0]) == 1_000  # 5 pages
    assert len(keyed) == 1_000
    sim.update(GRADES, _oldest(sim))
    assert len(_walk(s, sim, "Modified_Time", "asc")[0]) == 1_000
    assert len(keyed) == 2_000  # a change: sorted again, once


def test_if_modified_since_reads_follow_updates_and_deletes(make_sim: SimFactory, clock: FakeClock):
    sim = make_sim(data={GRADES: _grades(50)})
    s = session(sim)
    edge = START - timedelta(minutes=20)
    since = format_time(edge)
    later = format_time(START + timedelta(minutes=5))
    for sort_by, sort_order in READS:
        rows, _ = _walk(s, sim, sort_by, sort_order, per_page=7, since=since)
        assert rows == _expected(sim, sort_by, sort_order, edge) and len(rows) == 20
    assert _walk(s, sim, "Modified_Time", "asc", since=later) == ([], 304)

    clock.advance(minutes=10)  # START + 10 minutes
    old = _oldest(sim)  # modified before ``edge``: not in the since read until now
    sim.update(GRADES, old, Grade="P")
    rows, _ = _walk(s, sim, "Modified_Time", "asc", per_page=7, since=since)
    assert len(rows) == 21 and rows[-1][0] == old
    for sort_by, sort_order in READS:
        assert _walk(s, sim, sort_by, sort_order, per_page=7, since=since)[0] == _expected(
            sim, sort_by, sort_order, edge
        )
    assert [r[0] for r in _walk(s, sim, "Modified_Time", "asc", since=later)[0]] == [old]

    # moved back into the past: out of the since read again, until the API updates it
    in_window = _expected(sim, "Modified_Time", "asc", edge)[0][0]
    sim.update(GRADES, in_window, Modified_Time=format_time(edge - timedelta(days=1)))
    rows, _ = _walk(s, sim, "Modified_Time", "asc", per_page=7, since=since)
    assert len(rows) == 20 and in_window not in [r[0] for r in rows]
    _api_write(s, sim, "PUT", GRADES, {"id": in_window, "Grade": "M"})  # stamped now: back in, newest
    assert [r[0] for r in _walk(s, sim, "Modified_Time", "asc", since=later)[0]] == [old, in_window]

    s.delete(api(sim, GRADES), params={"ids": f"{old},{in_window}"}, timeout=5).raise_for_status()
    assert _walk(s, sim, "Modified_Time", "asc", since=later) == ([], 304)
    rows, _ = _walk(s, sim, "Modified_Time", "desc", per_page=7, since=since)
    assert len(rows) == 19 and rows == _expected(sim, "Modified_Time", "desc", edge)


# --- what Zoho documents beyond the basics: versions, ids, metadata, org, owners, subforms ---------------

ALL_VERSIONS = ["v2", "v2.1", "v3", "v4", "v5", "v6", "v7", "v8"]


def _versioned(sim: ZohoSimulator, version: str, path: str) -> str:
    return f"{sim.api_domain}/crm/{version}/{path}"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_fields_are_optional_in_v2_and_v2_1_only(school_sim: ZohoSimulator, version: str):
    s = session(school_sim)
    url = _versioned(school_sim, version, "BTEC_Registrations")
    r = s.get(url, params={"per_page": 5}, timeout=5)
    if version in ("v2", "v2.1"):
        assert r.status_code == 200
        meta = metadata_for("BTEC_Registrations")
        for rec in r.json()["data"]:
            # The whole record (every field, null when empty), but no subform in a list read.
            assert set(rec) == {*meta, "id"} - {"Payment_Schedule"}
            held = school_sim.record("BTEC_Registrations", rec["id"])
            assert {k: rec[k] for k in rec} == {k: held.get(k) for k in rec}
    else:
        assert error_of(r) == (400, "REQUIRED_PARAM_MISSING", {"param_name": "fields"})
    # Asking for fields works the same in every version.
    named = s.get(url, params={"fields": "Name", "per_page": 2}, timeout=5).json()["data"]
    assert [set(rec) for rec in named] == [{"Name", "id"}] * 2


@pytest.mark.parametrize("version", ["v2", "v8"])
def test_ids_read_only_the_records_that_exist(school_sim: ZohoSimulator, version: str):
    s = session(school_sim)
    url = _versioned(school_sim, version, "BTEC_Teachers")
    teachers = [t["id"] for t in _small_school()["BTEC_Teachers"]]
    ghost = "5843017000000999999"
    asked = [teachers[2], ghost, teachers[0], teachers[2]]
    r = s.get(url, params={"ids": ",".join(asked), "fields": "Name"}, timeout=5)
    assert r.status_code == 200
    assert [rec["id"] for rec in r.json()["data"]] == sorted({teachers[0], teachers[2]}, reverse=True)
    assert all(set(rec) == {"Name", "id"} for rec in r.json()["data"])
    # A read of given ids may leave fields out, from v3 on too (only "all records" needs them).
    whole = s.get(url, params={"ids": teachers[1]}, timeout=5).json()["data"]
    assert [rec["id"] for rec in whole] == [teachers[1]] and "Academic_Email" in whole[0]
    none = s.get(url, params={"ids": f"{ghost},5843017000000999998", "fields": "Name"}, timeout=5)
    assert (none.status_code, none.content) == (204, b"")


@pytest.mark.parametrize(("count", "ok"), [(100, True), (101, False)])
def test_ids_take_at_most_100(school_sim: ZohoSimulator, count: int, ok: bool):
    s = session(school_sim)
    ids = [f"58430170000009{n:05d}" for n in range(count)]
    r = s.get(api(school_sim, "BTEC_Teachers"), params={"ids": ",".join(ids), "fields": "Name"}, timeout=5)
    if ok:
        assert r.status_code == 204  # none of them exists
    else:
        assert error_of(r) == (400, "LIMIT_EXCEEDED", {"limit": 100, "param_name": "ids"})


def test_settings_modules_lists_every_module_of_the_org(school_sim: ZohoSimulator):
    s = session(school_sim)
    r = s.get(api(school_sim, "settings/modules"), timeout=5)
    assert r.status_code == 200
    modules = r.json()["modules"]
    assert [m["api_name"] for m in modules] == list(org_modules())
    for m in modules:
        assert set(m) >= {
            "api_name",
            "module_name",
            "singular_label",
            "plural_label",
            "id",
            "api_supported",
            "generated_type",
            "creatable",
            "editable",
            "deletable",
            "viewable",
            "profiles",
        }
        assert m["api_supported"] is True
        assert m["generated_type"] == ("default" if m["api_name"] == "Products" else "custom")
    assert len({m["id"] for m in modules}) == len(modules)


@pytest.mark.parametrize("module", org_modules())
def test_settings_modules_answers_one_module(school_sim: ZohoSimulator, module: str):
    s = session(school_sim)
    listed = {
        m["api_name"]: m for m in s.get(api(school_sim, "settings/modules"), timeout=5).json()["modules"]
    }
    r = s.get(api(school_sim, f"settings/modules/{module}"), timeout=5)
    assert r.status_code == 200
    assert r.json() == {"modules": [listed[module]]}


@pytest.mark.parametrize("version", ["v2", "v8"])
def test_an_unknown_module_is_invalid_module(school_sim: ZohoSimulator, version: str):
    s = session(school_sim)
    r = s.get(_versioned(school_sim, version, "settings/modules/Leads"), timeout=5)
    assert error_of(r) == (400, "INVALID_MODULE", {"resource_path_index": 2})
    fields = s.get(_versioned(school_sim, version, "settings/fields"), params={"module": "Leads"}, timeout=5)
    assert error_of(fields)[:2] == (400, "INVALID_MODULE")


def _field(sim: ZohoSimulator, module: str, api_name: str) -> dict:
    s = session(sim)
    fields = s.get(api(sim, "settings/fields"), params={"module": module}, timeout=5).json()["fields"]
    return next(f for f in fields if f["api_name"] == api_name)


@pytest.mark.parametrize(
    ("module", "api_name", "expected"),
    [
        ("BTEC_Students", "Last_Name", {"data_type": "text", "json_type": "string", "length": 255}),
        ("BTEC_Students", "Email", {"json_type": "string", "length": 100, "custom_field": False}),
        ("BTEC_Students", "Program", {"json_type": "jsonobject", "read_only": False}),
        ("BTEC_Students", "Owner", {"data_type": "ownerlookup", "json_type": "jsonobject", "lookup": {}}),
        (
            "BTEC_Students",
            "Total_Amount",
            {"data_type": "formula", "read_only": True, "json_type": "double", "decimal_place": 2},
        ),
        ("BTEC_Students", "Name", {"data_type": "autonumber", "read_only": True, "json_type": "string"}),
        ("BTEC_Registrations", "Payment_Schedule", {"data_type": "subform", "json_type": "jsonarray"}),
        (
            "BTEC_Payments",
            "Payment_Amount",
            {"json_type": "double", "currency": {"rounding_option": "normal", "precision": 2}},
        ),
        ("BTEC_Enrollments", "Classes", {"system_mandatory": True}),
        ("BTEC_Enrollments", "Start_Date", {"system_mandatory": False, "json_type": "string"}),
        ("BTEC_Classes", "English_Teaching", {"json_type": "boolean", "pick_list_values": []}),
        ("BTEC_Grades", "Attempt_Number", {"json_type": "integer", "formula": {}, "subform": None}),
        ("Products", "Product_Name", {"system_mandatory": True, "custom_field": False}),
    ],
)
def test_settings_fields_answers_zoho_s_keys_per_field(
    school_sim: ZohoSimulator, module: str, api_name: str, expected: dict
):
    field = _field(school_sim, module, api_name)
    assert {k: field[k] for k in expected} == expected
    assert field["display_label"] == field["field_label"] == api_name.replace("_", " ")
    assert field["id"].startswith(school_sim.id_prefix) and len(field["id"]) == 19


def test_settings_fields_detail_objects(school_sim: ZohoSimulator):
    grade = _field(school_sim, "BTEC_Grades", "Grade")
    assert [o["actual_value"] for o in grade["pick_list_values"]] == list(
        metadata_for("BTEC_Grades")["Grade"]["pick_list_values"]
    )
    for n, option in enumerate(grade["pick_list_values"], start=1):
        assert option["display_value"] == option["actual_value"]
        assert option["sequence_number"] == n and len(option["id"]) == 19
    modules = {
        m["api_name"]: m["id"]
        for m in session(school_sim).get(api(school_sim, "settings/modules"), timeout=5).json()["modules"]
    }
    klass = _field(school_sim, "BTEC_Grades", "Class")
    assert klass["lookup"]["module"] == {"api_name": "BTEC_Classes", "id": modules["BTEC_Classes"]}
    total = _field(school_sim, "BTEC_Students", "Total_Amount")
    assert total["formula"]["return_type"] == "double" and total["operation_type"]["api_update"] is False
    schedule = _field(school_sim, "BTEC_Registrations", "Payment_Schedule")
    assert schedule["subform"]["module"] == "Payment_Schedule"
    assert schedule["associated_module"] == schedule["subform"]
    number = _field(school_sim, "BTEC_Students", "Name")
    assert number["auto_number"] == {
        "prefix": "STU-",
        "suffix": "",
        "start_number": 1,
        "starting_number_length": 5,
    }


def test_org_is_a_small_fixed_enterprise_org(school_sim: ZohoSimulator):
    r = session(school_sim).get(api(school_sim, "org"), timeout=5)
    assert r.status_code == 200
    (org,) = r.json()["org"]
    assert org == school_sim.org
    assert org["license_details"]["paid_type"] == "enterprise"  # subforms need Enterprise or more
    assert org["primary_email"] == ORG_USERS[0][1] and org["time_zone"] == "Europe/Istanbul"


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        (None, ["Sandbox Admin", "Rana Haddad", "Emre Kaya"]),
        ("AllUsers", ["Sandbox Admin", "Rana Haddad", "Emre Kaya"]),
        ("ActiveUsers", ["Sandbox Admin", "Rana Haddad"]),
        ("DeactiveUsers", ["Emre Kaya"]),
        ("AdminUsers", ["Sandbox Admin"]),
        ("ActiveConfirmedAdmins", ["Sandbox Admin"]),
        ("CurrentUser", ["Sandbox Admin"]),
        ("DeletedUsers", []),
    ],
)
def test_users_by_type(school_sim: ZohoSimulator, kind: str | None, names: list[str]):
    params = {"type": kind} if kind else {}
    r = session(school_sim).get(api(school_sim, "users"), params=params, timeout=5)
    if not names:
        assert (r.status_code, r.content) == (204, b"")
        return
    assert r.status_code == 200
    assert [u["full_name"] for u in r.json()["users"]] == names
    assert r.json()["info"] == {"per_page": 200, "count": len(names), "page": 1, "more_records": False}
    for user in r.json()["users"]:
        assert {"id", "email", "first_name", "last_name", "role", "profile", "status", "confirm"} <= set(user)


def test_users_reject_an_unknown_type_and_answer_one_user(school_sim: ZohoSimulator):
    s = session(school_sim)
    assert error_of(s.get(api(school_sim, "users"), params={"type": "Everyone"}, timeout=5))[:2] == (
        400,
        "INVALID_DATA",
    )
    admin = school_sim.users[0]
    assert s.get(api(school_sim, f"users/{admin['id']}"), timeout=5).json() == {"users": [admin]}


def test_records_carry_owner_creator_and_modifier(make_sim: SimFactory, clock: FakeClock):
    sim = make_sim()
    s = session(sim)
    active = {u["id"]: u for u in sim.users if u["status"] == "active"}
    given = sim.insert("BTEC_Teachers", {"Name": "T", "Owner": {"id": sim.users[1]["id"]}})
    rec = sim.record("BTEC_Teachers", given)
    user = sim.users[1]
    assert (
        rec["Owner"]
        == rec["Created_By"]
        == rec["Modified_By"]
        == {
            "name": user["full_name"],
            "id": user["id"],
            "email": user["email"],
        }
    )
    assert rec["Created_Time"] == format_time(START)
    drawn = [sim.insert("BTEC_Teachers", {"Name": f"T{i}"}) for i in range(4)]
    owners = {sim.record("BTEC_Teachers", i)["Owner"]["id"] for i in drawn}
    assert owners == set(active)  # drawn among the active users, by id
    # Modules without the creator fields get only an owner.
    enrolment = sim.record("BTEC_Enrollments", sim.insert("BTEC_Enrollments", {}))
    assert "Owner" in enrolment and "Created_By" not in enrolment and "Created_Time" not in enrolment
    # Through the API: the API user (the admin) creates, owns unless told otherwise, and modifies.
    clock.advance(minutes=3)
    created = _upsert(s, sim, "BTEC_Teachers", [{"Name": "By API"}]).json()["data"][0]
    admin = sim.users[0]
    assert (
        created["details"]["Created_By"]
        == created["details"]["Modified_By"]
        == {
            "name": admin["full_name"],
            "id": admin["id"],
        }
    )
    assert sim.record("BTEC_Teachers", created["details"]["id"])["Owner"]["id"] == admin["id"]
    changed = s.put(
        api(sim, "BTEC_Teachers"), json={"data": [{"id": given, "Phone_Number": "+90 555"}]}, timeout=5
    )
    assert changed.status_code == 200
    after = sim.record("BTEC_Teachers", given)
    assert (after["Modified_By"]["id"], after["Created_By"]["id"]) == (admin["id"], user["id"])


@pytest.mark.parametrize(
    ("owner", "ok"),
    [("registrar", True), ("admin-bare-id", True), ("inactive", False), ("stranger", False)],
)
def test_owner_must_be_an_active_user(make_sim: SimFactory, owner: str, ok: bool):
    sim = make_sim()
    users = {u["full_name"]: u for u in sim.users}
    value = {
        "registrar": {"id": users["Rana Haddad"]["id"]},
        "admin-bare-id": users["Sandbox Admin"]["id"],
        "inactive": {"id": users["Emre Kaya"]["id"]},
        "stranger": {"id": "5843017000000000999"},
    }[owner]
    r = _upsert(session(sim), sim, "BTEC_Teachers", [{"Name": "T", "Owner": value}])
    (result,) = r.json()["data"]
    if ok:
        assert result["code"] == "SUCCESS"
        assert sim.record("BTEC_Teachers", result["details"]["id"])["Owner"]["email"].endswith(
            "@school.example"
        )
    else:
        assert (r.status_code, result["code"], result["details"]["json_path"]) == (
            400,
            "INVALID_DATA",
            "$.data[0].Owner.id",
        )


@pytest.mark.parametrize(
    ("module", "row", "matched_on"),
    [
        ("BTEC_Teachers", {"Name": "Rana Saleh", "Phone_Number": "+90 555"}, "Name"),
        ("BTEC", {"Name": "Unit 1: Programming", "Unit_Number": "1"}, "Name"),
        ("Products", {"Product_Name": "BA (Hons) Business", "MoodleID": "77"}, "Product_Name"),
        ("BTEC_Students", {"First_Name": "Sara", "City": "Bursa"}, None),  # Name is an autonumber
    ],
)
def test_upsert_without_duplicate_check_fields_matches_the_system_field(
    make_sim: SimFactory, module: str, row: dict, matched_on: str | None
):
    sim = make_sim()
    existing = sim.insert(
        module, {k: v for k, v in row.items() if k in ("Name", "Product_Name", "First_Name")}
    )
    (result,) = _upsert(session(sim), sim, module, [row]).json()["data"]
    assert result["code"] == "SUCCESS"
    if matched_on:
        assert (result["action"], result["duplicate_field"], result["details"]["id"]) == (
            "update",
            matched_on,
            existing,
        )
        assert len(sim.records(module)) == 1
    else:
        assert (result["action"], result["duplicate_field"]) == ("insert", None)
        assert len(sim.records(module)) == 2


def test_duplicate_check_fields_replace_the_system_field(make_sim: SimFactory):
    sim = make_sim()
    sim.insert("BTEC_Teachers", {"Name": "Rana Saleh", "Academic_Email": "rana@school.example"})
    row = {"Name": "Rana Saleh", "Academic_Email": "someone.else@school.example"}
    (result,) = _upsert(
        session(sim), sim, "BTEC_Teachers", [row], duplicate_check_fields=["Academic_Email"]
    ).json()["data"]
    assert result["action"] == "insert"  # Name is not checked when the caller names the fields


def test_several_errors_in_one_record_are_multiple_or_multi_errors(make_sim: SimFactory):
    sim = make_sim()
    row = {"Grade": "A", "Attempt_Date": "yesterday", "Attempt_Number": "two"}
    r = _upsert(session(sim), sim, "BTEC_Grades", [{"Grade": "P"}, row])
    assert r.status_code == 207
    ok, bad = r.json()["data"]
    assert ok["code"] == "SUCCESS"
    assert (bad["code"], bad["status"], bad["message"]) == (
        "MULTIPLE_OR_MULTI_ERRORS",
        "error",
        "multiple errors",
    )
    assert [
        (e["code"], e["details"]["api_name"], e["details"]["json_path"]) for e in bad["details"]["errors"]
    ] == [
        ("INVALID_DATA", "Grade", "$.data[1].Grade"),
        ("INVALID_DATA", "Attempt_Date", "$.data[1].Attempt_Date"),
        ("INVALID_DATA", "Attempt_Number", "$.data[1].Attempt_Number"),
    ]
    assert len(sim.records("BTEC_Grades")) == 1  # nothing of the bad record was written
    # One problem is answered as itself, as before.
    (single,) = _upsert(session(sim), sim, "BTEC_Grades", [{"Grade": "A"}]).json()["data"]
    assert single["code"] == "INVALID_DATA"


def test_duplicates_in_several_fields_are_multiple_or_multi_errors(make_sim: SimFactory):
    sim = make_sim()
    for i in range(2):
        sim.insert(
            "BTEC_Teachers",
            {"Name": "Omar Nasser", "Email": "omar@mail.example", "Academic_Email": f"o{i}@s.ex"},
        )
    row = {"Name": "Omar Nasser", "Email": "omar@mail.example"}
    r = _upsert(session(sim), sim, "BTEC_Teachers", [row], duplicate_check_fields=["Name", "Email"])
    (result,) = r.json()["data"]
    assert (r.status_code, result["code"], result["message"]) == (
        400,
        "MULTIPLE_OR_MULTI_ERRORS",
        "Duplicate data in multiple fields",
    )
    assert [(e["code"], e["details"]["api_name"]) for e in result["details"]["errors"]] == [
        ("DUPLICATE_DATA", "Name"),
        ("DUPLICATE_DATA", "Email"),
    ]


@pytest.mark.parametrize("page", [10, 11, 12])
def test_deleted_records_page_past_2000_with_page_only(make_sim: SimFactory, clock: FakeClock, page: int):
    sim = make_sim(max_concurrency=None)
    ids = [sim.insert("BTEC_Payments", {"Name": f"PAY-{i}"}) for i in range(2_300)]
    for record_id in ids:
        sim.delete("BTEC_Payments", record_id)
        clock.advance(seconds=1)
    r = session(sim).get(
        api(sim, "BTEC_Payments/deleted"), params={"page": page, "per_page": 200}, timeout=10
    )
    assert r.status_code == 200  # no discrete-paging cap documented for /deleted
    newest_first = list(reversed(ids))
    assert [d["id"] for d in r.json()["data"]] == newest_first[(page - 1) * 200 : page * 200]
    assert r.json()["info"] == {
        "per_page": 200,
        "count": len(r.json()["data"]),
        "page": page,
        "more_records": page < 12,
    }  # and no page tokens
    assert error_of(session(sim).get(api(sim, "BTEC_Payments/deleted"), params={"type": "gone"}, timeout=5))[
        :2
    ] == (
        400,
        "PATTERN_NOT_MATCHED",
    )


def _registration(sim: ZohoSimulator) -> tuple[str, list[dict]]:
    rid = sim.insert(
        "BTEC_Registrations",
        {
            "Payment_Schedule": [
                {"Installment_No": 1, "Installment_Amount": 250.0},
                {"Installment_No": 2, "Installment_Amount": 700.0},
            ]
        },
    )
    return rid, sim.record("BTEC_Registrations", rid)["Payment_Schedule"]


def test_subform_rows_have_ids_and_are_rendered_only_for_one_record(make_sim: SimFactory):
    sim = make_sim()
    rid, rows = _registration(sim)
    assert [r["Installment_No"] for r in rows] == [1, 2]
    assert len({r["id"] for r in rows}) == 2 and all(int(r["id"]) > int(rid) for r in rows)
    assert all(
        r["Parent_Id"] == {"name": sim.record("BTEC_Registrations", rid)["Name"], "id": rid} for r in rows
    )
    s = session(sim)
    one = s.get(
        api(sim, f"BTEC_Registrations/{rid}"), params={"fields": "Payment_Schedule"}, timeout=5
    ).json()
    assert one["data"][0]["Payment_Schedule"] == rows
    listed = s.get(
        api(sim, "BTEC_Registrations"), params={"fields": "Name,Payment_Schedule"}, timeout=5
    ).json()
    assert [set(r) for r in listed["data"]] == [{"Name", "id"}]
    by_ids = s.get(
        api(sim, "BTEC_Registrations"), params={"ids": rid, "fields": "Payment_Schedule"}, timeout=5
    )
    assert set(by_ids.json()["data"][0]) == {"id"}


@pytest.mark.parametrize("mode", ["update", "upsert"])
def test_a_subform_sent_replaces_the_rows(make_sim: SimFactory, mode: str):
    sim = make_sim()
    rid, (first, second) = _registration(sim)
    sent = [
        {"id": first["id"], "Installment_Amount": 300.0},
        {"Installment_No": 3, "Installment_Amount": 900.0},
    ]
    s = session(sim)
    row = {"id": rid, "Payment_Schedule": sent}
    r = (
        s.put(api(sim, "BTEC_Registrations"), json={"data": [row]}, timeout=5)
        if mode == "update"
        else _upsert(s, sim, "BTEC_Registrations", [row])
    )
    assert r.status_code == 200, r.text
    kept, new = sim.record("BTEC_Registrations", rid)["Payment_Schedule"]
    assert (kept["id"], kept["Installment_No"], kept["Installment_Amount"]) == (first["id"], 1, 300.0)
    assert new["id"] not in (first["id"], second["id"]) and new["Installment_No"] == 3
    assert second["id"] not in {r["id"] for r in sim.record("BTEC_Registrations", rid)["Payment_Schedule"]}


def test_subform_rows_are_deleted_with_delete_or_an_empty_list(make_sim: SimFactory):
    sim = make_sim()
    s = session(sim)
    rid, (first, second) = _registration(sim)
    row = {"id": rid, "Payment_Schedule": [{"id": first["id"], "_delete": None}, {"id": second["id"]}]}
    assert s.put(api(sim, "BTEC_Registrations"), json={"data": [row]}, timeout=5).status_code == 200
    assert [r["id"] for r in sim.record("BTEC_Registrations", rid)["Payment_Schedule"]] == [second["id"]]
    untouched = s.put(
        api(sim, "BTEC_Registrations"), json={"data": [{"id": rid, "Intake": "2026 T2"}]}, timeout=5
    )
    assert untouched.status_code == 200
    assert [r["id"] for r in sim.record("BTEC_Registrations", rid)["Payment_Schedule"]] == [second["id"]]
    cleared = s.put(
        api(sim, "BTEC_Registrations"), json={"data": [{"id": rid, "Payment_Schedule": []}]}, timeout=5
    )
    assert cleared.status_code == 200 and sim.record("BTEC_Registrations", rid)["Payment_Schedule"] == []


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ([{"id": "5843017000000999999", "Installment_No": 9}], "$.data[0].Payment_Schedule[0].id"),
        ({"Installment_No": 9}, "$.data[0].Payment_Schedule"),
        ([{"Installment_No": 1}] * 101, "$.data[0].Payment_Schedule"),
    ],
    ids=["unknown-row-id", "not-a-list", "over-100-rows"],
)
def test_bad_subform_writes_are_refused(make_sim: SimFactory, value: Any, path: str):
    sim = make_sim()
    rid, rows = _registration(sim)
    r = session(sim).put(
        api(sim, "BTEC_Registrations"), json={"data": [{"id": rid, "Payment_Schedule": value}]}, timeout=5
    )
    (result,) = r.json()["data"]
    assert (r.status_code, result["status"], result["details"]["json_path"]) == (400, "error", path)
    assert result["code"] in ("INVALID_DATA", "LIMIT_EXCEEDED")
    assert sim.record("BTEC_Registrations", rid)["Payment_Schedule"] == rows


def test_new_records_rows_all_get_new_ids(make_sim: SimFactory):
    sim = make_sim()
    _, rows = _registration(sim)
    sent = [{**rows[0]}, {"Installment_No": 5}]  # the first row still carries another record's id
    (result,) = _upsert(session(sim), sim, "BTEC_Registrations", [{"Payment_Schedule": sent}]).json()["data"]
    assert result["action"] == "insert"
    new_rows = sim.record("BTEC_Registrations", result["details"]["id"])["Payment_Schedule"]
    assert len(new_rows) == 2 and not {r["id"] for r in new_rows} & {r["id"] for r in rows}


def test_a_grades_criteria_rows_upserted_without_ids_replace_the_rows(make_sim: SimFactory):
    """What criteria grading writes: BTEC_Grades upserted on its composite key with one subform row
    per criterion and no row ids (sync_pipelines.btec.filling_rows)."""
    sim = make_sim()
    s = session(sim)
    key = {"Moodle_Grade_Composite_Key": "moodle-7/item-3/user-42"}

    def upsert(rows: list[dict], grade: str) -> dict:
        record = {**key, "Grade": grade, "Learning_Outcomes_Assessm": rows}
        r = _upsert(s, sim, "BTEC_Grades", [record], duplicate_check_fields=["Moodle_Grade_Composite_Key"])
        assert r.status_code == 200, r.text
        (result,) = r.json()["data"]
        return result

    first = upsert(
        [
            {"Criterion_Code": "P1", "Criterion": "Explain", "Achieved": True, "Feedback": None},
            {"Criterion_Code": "P2", "Criterion": "Describe", "Achieved": False, "Feedback": "Redo the plan"},
        ],
        "R",
    )
    rid = first["details"]["id"]
    one = s.get(
        api(sim, f"BTEC_Grades/{rid}"), params={"fields": "Grade,Learning_Outcomes_Assessm"}, timeout=5
    )
    stored = one.json()["data"][0]["Learning_Outcomes_Assessm"]
    assert [(r["Criterion_Code"], r["Achieved"]) for r in stored] == [("P1", True), ("P2", False)]
    assert len({r["id"] for r in stored}) == 2 and all(r["Parent_Id"]["id"] == rid for r in stored)

    second = upsert(
        [
            {"Criterion_Code": "P1", "Criterion": "Explain", "Achieved": True, "Feedback": None},
            {"Criterion_Code": "P2", "Criterion": "Describe", "Achieved": True, "Feedback": None},
        ],
        "P",
    )
    assert (second["action"], second["details"]["id"]) == ("update", rid)
    rows = sim.record("BTEC_Grades", rid)["Learning_Outcomes_Assessm"]
    assert [(r["Criterion_Code"], r["Achieved"]) for r in rows] == [("P1", True), ("P2", True)]
    assert not {r["id"] for r in rows} & {r["id"] for r in stored}  # replaced, not appended
    assert sim.record("BTEC_Grades", rid)["Grade"] == "P"


def test_a_formula_is_read_only_and_changes_without_modified_time(make_sim: SimFactory, clock: FakeClock):
    sim = make_sim()
    s = session(sim)
    sid = sim.insert("BTEC_Students", {"First_Name": "Sara", "Total_Amount": 100.0})
    clock.advance(minutes=5)
    written = s.put(api(sim, "BTEC_Students"), json={"data": [{"id": sid, "Total_Amount": 5.0}]}, timeout=5)
    assert written.status_code == 200
    assert sim.record("BTEC_Students", sid)["Total_Amount"] == 100.0  # Zoho ignores the write
    stamp = sim.record("BTEC_Students", sid)["Modified_Time"]
    clock.advance(minutes=5)
    sim.set_formula("BTEC_Students", sid, "Total_Amount", 1234.5)
    rec = sim.record("BTEC_Students", sid)
    assert (rec["Total_Amount"], rec["Modified_Time"]) == (1234.5, stamp)
    since = {"If-Modified-Since": format_time(START + timedelta(minutes=6))}
    unchanged = s.get(api(sim, "BTEC_Students"), params={"fields": "Total_Amount"}, headers=since, timeout=5)
    assert unchanged.status_code == 304  # an incremental read cannot see the new value
    full = s.get(api(sim, "BTEC_Students"), params={"fields": "Total_Amount"}, timeout=5).json()["data"]
    assert full == [{"Total_Amount": 1234.5, "id": sid}]
    with pytest.raises(ValueError):
        sim.set_formula("BTEC_Students", sid, "City", "x")
    with pytest.raises(KeyError):
        sim.set_formula("BTEC_Students", "1", "Total_Amount", 1.0)


def test_the_demo_school_has_subform_rows_and_formula_values(school_sim: ZohoSimulator):
    s = session(school_sim)
    reg = _small_school()["BTEC_Registrations"][0]
    one = s.get(api(school_sim, f"BTEC_Registrations/{reg['id']}"), timeout=5).json()["data"][0]
    assert [r["id"] for r in one["Payment_Schedule"]] == [r["id"] for r in reg["Payment_Schedule"]]
    assert reg["Payment_Schedule"] and all(r["Parent_Id"]["id"] == reg["id"] for r in one["Payment_Schedule"])
    totals = [st["Total_Amount"] for st in _small_school()["BTEC_Students"]]
    assert any(isinstance(t, float) and t > 0 for t in totals)
