"""The seeded fault plan, and how each simulator applies each kind of fault over real HTTP."""

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sync_pipelines.moodle.client import MoodleClient, MoodleUnavailable, php_form
from sync_pipelines.sandbox import MoodleSimulator, ZohoSimulator
from sync_pipelines.sandbox.faults import DEFAULT_KINDS, KINDS, FaultPlan
from sync_pipelines.sandbox.moodle_sim import DEFAULT_TOKEN, REST_PATH
from sync_pipelines.zoho.client import ZohoClient, ZohoError

CLIENT = ("fault-client", "fault-secret", "fault-refresh")
STUDENT = {"First_Name": "Amal", "Last_Name": "Haddad", "Academic_Email": "amal.haddad@school.example"}


def always(kind: str, **options: Any) -> FaultPlan:
    """A plan that injects ``kind`` into every request it applies to."""
    return FaultPlan(rate=1.0, seed=1, kinds=(kind,), **options)


# --- the plan alone --------------------------------------------------------------------------------


def test_the_default_kinds_are_every_kind_lost_answers_included():
    assert DEFAULT_KINDS == KINDS
    assert set(KINDS) == {"429", "500", "503", "drop", "slow", "expire_token", "lost_answer"}
    plan = FaultPlan(rate=0.1, seed=3)
    assert (plan.kinds, plan.slow_seconds, plan.total, plan.requests) == (KINDS, 0.2, 0, 0)


def test_the_same_seed_makes_the_same_decisions_and_another_seed_others():
    def decisions(seed: int) -> list[str | None]:
        plan = FaultPlan(rate=0.3, seed=seed)
        return [
            plan.decide("zoho" if i % 3 else "moodle", write=i % 5 == 0, target=str(i)) for i in range(400)
        ]

    assert decisions(7) == decisions(7)
    assert decisions(7) != decisions(8)


def test_the_share_of_requests_that_fail_is_the_rate():
    plan = FaultPlan(rate=0.1, seed=11, kinds=("500",))
    failed = sum(plan.decide("zoho", write=False) is not None for _ in range(20_000))
    assert 0.09 <= failed / 20_000 <= 0.11
    assert plan.injected == Counter({"500": failed}) and plan.requests == 20_000
    assert all(FaultPlan(rate=0.0, seed=1).decide("moodle", write=True) is None for _ in range(500))
    every = FaultPlan(rate=1.0, seed=1, kinds=("503",))
    assert {every.decide("moodle", write=False) for _ in range(50)} == {"503"}


def test_kinds_become_what_each_service_can_do():
    applicable = FaultPlan.applicable
    assert applicable("429", "zoho", write=False) == "429"
    assert applicable("429", "moodle", write=False) == "503"  # Moodle has no 429
    assert applicable("expire_token", "zoho", write=False) == "expire_token"
    assert applicable("expire_token", "zoho", write=False, token_endpoint=True) is None
    assert applicable("expire_token", "moodle", write=True) is None
    assert applicable("lost_answer", "zoho", write=True) == "lost_answer"
    assert applicable("lost_answer", "moodle", write=True) == "lost_answer"
    assert applicable("lost_answer", "zoho", write=False) is None  # only a write can be applied unheard
    assert applicable("lost_answer", "moodle", write=False) is None
    for kind in ("500", "503", "drop", "slow"):
        assert applicable(kind, "zoho", write=False) == applicable(kind, "moodle", write=True) == kind
    assert applicable(None, "zoho", write=True) is None


def test_kinds_that_do_not_apply_are_not_counted():
    plan = always("expire_token")
    assert plan.decide("moodle", write=False) is None
    assert plan.decide("zoho", write=False, target="GET /crm/v8/BTEC_Students") == "expire_token"
    assert plan.injected == Counter({"expire_token": 1}) and plan.requests == 2
    assert plan.by_service() == {"zoho": {"expire_token": 1}}
    assert plan.log[0].target == "GET /crm/v8/BTEC_Students"
    summary = plan.summary()
    assert summary["injected_total"] == 1 and summary["injected_by_service"] == {"zoho": {"expire_token": 1}}


@pytest.mark.parametrize(
    "options",
    [
        {"rate": -0.1},
        {"rate": 1.5},
        {"rate": 0.1, "kinds": ()},
        {"rate": 0.1, "kinds": ("500", "teapot")},
        {"rate": 0.1, "slow_seconds": -1.0},
    ],
)
def test_a_plan_refuses_settings_that_mean_nothing(options: dict[str, Any]):
    with pytest.raises(ValueError):
        FaultPlan(seed=1, **options)


def test_a_plan_only_knows_the_two_services():
    with pytest.raises(ValueError, match="service"):
        FaultPlan(rate=0.5, seed=1).decide("canvas", write=False)


# --- the Zoho simulator ----------------------------------------------------------------------------


@pytest.fixture
def zoho() -> Iterator[ZohoSimulator]:
    sim = ZohoSimulator(clients={CLIENT[0]: (CLIENT[1], CLIENT[2])}, refresh_limit_per_minute=None)
    sim.start()
    yield sim
    sim.stop()


def zoho_token(sim: ZohoSimulator) -> requests.Response:
    form = {"grant_type": "refresh_token", "client_id": CLIENT[0], "client_secret": CLIENT[1]}
    return requests.post(f"{sim.accounts_url}/oauth/v2/token", data={**form, "refresh_token": CLIENT[2]})


def zoho_headers(sim: ZohoSimulator) -> dict[str, str]:
    response = zoho_token(sim)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Zoho-oauthtoken {response.json()['access_token']}"}


def upsert_student(sim: ZohoSimulator, headers: dict[str, str]) -> requests.Response:
    body = {"data": [STUDENT], "duplicate_check_fields": ["Academic_Email"]}
    return requests.post(f"{sim.base_url}/crm/v8/BTEC_Students/upsert", json=body, headers=headers)


def test_without_a_plan_zoho_injects_nothing(zoho: ZohoSimulator):
    headers = zoho_headers(zoho)
    assert upsert_student(zoho, headers).status_code == 200
    assert zoho.faults is None and [r.fault for r in zoho.requests] == [None, None]


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [("429", 429, "TOO_MANY_REQUESTS"), ("500", 500, "INTERNAL_ERROR"), ("503", 503, "SERVICE_UNAVAILABLE")],
)
def test_a_zoho_error_fault_answers_zohos_error_body_and_applies_nothing(
    zoho: ZohoSimulator, kind: str, status: int, code: str
):
    headers = zoho_headers(zoho)
    plan = always(kind)
    zoho.set_faults(plan)
    response = upsert_student(zoho, headers)
    assert response.status_code == status
    assert response.json() | {"message": None} == {
        "code": code,
        "message": None,
        "status": "error",
        "details": {},
    }
    assert "Retry-After" not in response.headers  # Zoho sends none, with a 429 either
    assert zoho.records("BTEC_Students") == []  # failed before it had any effect
    assert plan.injected == Counter({kind: 1}) and zoho.requests[-1].fault == kind


def test_a_throttled_token_endpoint_answers_as_the_accounts_server_does(zoho: ZohoSimulator):
    zoho.set_faults(always("429"))
    response = zoho_token(zoho)
    assert response.status_code == 400 and response.json()["error"] == "Access Denied"
    zoho.set_faults(always("500"))
    assert zoho_token(zoho).status_code == 500


def test_a_dropped_zoho_connection_is_a_connection_error_and_applies_nothing(zoho: ZohoSimulator):
    headers = zoho_headers(zoho)
    zoho.set_faults(always("drop"))
    with pytest.raises(requests.ConnectionError):
        upsert_student(zoho, headers)
    with pytest.raises(requests.ConnectionError):
        zoho_token(zoho)
    assert zoho.records("BTEC_Students") == []
    assert [(r.status, r.fault) for r in zoho.requests[-2:]] == [(0, "drop"), (0, "drop")]


def test_a_lost_zoho_answer_applies_the_write_then_hangs_up(zoho: ZohoSimulator):
    headers = zoho_headers(zoho)
    plan = always("lost_answer")
    zoho.set_faults(plan)
    with pytest.raises(requests.ConnectionError):
        upsert_student(zoho, headers)
    (student,) = zoho.records("BTEC_Students")
    assert student["Academic_Email"] == STUDENT["Academic_Email"]  # the write happened
    with pytest.raises(requests.ConnectionError):
        requests.put(
            f"{zoho.base_url}/crm/v8/BTEC_Students",
            json={"data": [{"id": student["id"], "City": "Gaziantep"}]},
            headers=headers,
        )
    assert zoho.record("BTEC_Students", student["id"])["City"] == "Gaziantep"
    # a read is not a write: served normally, and not counted
    read = requests.get(
        f"{zoho.base_url}/crm/v8/BTEC_Students", params={"fields": "Last_Name"}, headers=headers
    )
    assert read.status_code == 200
    assert plan.injected == Counter({"lost_answer": 2})


def test_a_slow_zoho_answer_comes_late_and_whole(zoho: ZohoSimulator):
    headers = zoho_headers(zoho)
    zoho.set_faults(always("slow", slow_seconds=0.3))
    started = time.perf_counter()
    response = upsert_student(zoho, headers)
    assert time.perf_counter() - started >= 0.3
    assert response.status_code == 200 and len(zoho.records("BTEC_Students")) == 1


def test_an_expired_token_fault_revokes_every_token_and_the_call_answers_invalid_token(zoho: ZohoSimulator):
    headers = zoho_headers(zoho)
    plan = always("expire_token")
    zoho.set_faults(plan)
    response = upsert_student(zoho, headers)
    assert response.status_code == 401 and response.json()["code"] == "INVALID_TOKEN"
    assert zoho.records("BTEC_Students") == []
    assert zoho_token(zoho).status_code == 200  # the token endpoint takes no access token: served
    assert plan.injected == Counter({"expire_token": 1})
    zoho.set_faults(None)
    assert upsert_student(zoho, headers).status_code == 401  # revoked for good
    assert upsert_student(zoho, zoho_headers(zoho)).status_code == 200


def test_zoho_faults_touch_only_the_api_and_the_token_endpoint(zoho: ZohoSimulator):
    plan = always("500")
    zoho.set_faults(plan)
    assert requests.get(f"{zoho.base_url}/somewhere/else").status_code == 404
    assert plan.requests == 0


def zoho_client(sim: ZohoSimulator, max_retries: int) -> ZohoClient:
    """A client of the simulator that retries without sleeping."""
    return ZohoClient(
        tenant_id="school_a",
        accounts_url=sim.accounts_url,
        client_id=CLIENT[0],
        client_secret=CLIENT[1],
        refresh_token=CLIENT[2],
        max_retries=max_retries,
        sleep=lambda _s: None,
    )


def test_the_zoho_client_sees_a_dropped_connection_retries_it_and_gives_up_with_a_connection_error(
    zoho: ZohoSimulator,
):
    client = zoho_client(zoho, max_retries=2)
    client.upsert("BTEC_Students", [STUDENT])  # a token first
    zoho.set_faults(always("drop"))
    with pytest.raises(ZohoError) as caught:
        client.upsert("BTEC_Students", [STUDENT])
    assert caught.value.code == "CONNECTION_ERROR" and caught.value.status is None
    assert [r.fault for r in zoho.requests[-3:]] == ["drop"] * 3  # the first attempt and 2 retries


def test_the_zoho_client_rides_out_half_its_calls_failing(zoho: ZohoSimulator):
    plan = FaultPlan(rate=0.5, seed=4, kinds=("drop", "500", "429", "expire_token", "lost_answer"))
    zoho.set_faults(plan)
    client = zoho_client(zoho, max_retries=8)
    for _ in range(5):
        results = client.upsert("BTEC_Students", [STUDENT], duplicate_check_fields=["Academic_Email"])
        assert [r.ok for r in results] == [True]
    assert len(zoho.records("BTEC_Students")) == 1  # upserts repeated over lost answers: one record
    assert plan.total >= 3


# --- the Moodle simulator --------------------------------------------------------------------------


@pytest.fixture
def moodle() -> Iterator[MoodleSimulator]:
    sim = MoodleSimulator()
    sim.start()
    yield sim
    sim.stop()


def moodle_call(
    sim: MoodleSimulator, function: str, params: dict[str, Any] | None = None
) -> requests.Response:
    query = {"wstoken": DEFAULT_TOKEN, "wsfunction": function, "moodlewsrestformat": "json"}
    return requests.post(sim.base_url + REST_PATH, params=query, data=php_form(params or {}))


def create_user(sim: MoodleSimulator) -> requests.Response:
    user = {
        "username": "amal.haddad@school.example",
        "firstname": "Amal",
        "lastname": "Haddad",
        "email": "amal.haddad@school.example",
        "idnumber": "5843017000000100006",
        "auth": "manual",
        "createpassword": 1,
    }
    return moodle_call(sim, "core_user_create_users", {"users": [user]})


def our_users(sim: MoodleSimulator) -> list[dict]:
    return [u for u in sim.users() if u.get("idnumber")]


@pytest.mark.parametrize(("kind", "status"), [("500", 500), ("503", 503), ("429", 503)])
def test_a_moodle_error_fault_answers_the_web_servers_page_and_applies_nothing(
    moodle: MoodleSimulator, kind: str, status: int
):
    plan = always(kind)
    moodle.set_faults(plan)
    response = create_user(moodle)
    assert response.status_code == status and response.headers["Content-Type"].startswith("text/html")
    assert our_users(moodle) == []
    assert plan.injected == Counter({str(status): 1}) and moodle.requests[-1].fault == str(status)


def test_a_dropped_moodle_connection_is_a_connection_error_and_applies_nothing(moodle: MoodleSimulator):
    moodle.set_faults(always("drop"))
    with pytest.raises(requests.ConnectionError):
        create_user(moodle)
    assert our_users(moodle) == []
    assert (moodle.requests[-1].status, moodle.requests[-1].fault) == (0, "drop")


def test_a_lost_moodle_answer_applies_the_write_then_hangs_up(moodle: MoodleSimulator):
    plan = always("lost_answer")
    moodle.set_faults(plan)
    with pytest.raises(requests.ConnectionError):
        create_user(moodle)
    assert [u["username"] for u in our_users(moodle)] == ["amal.haddad@school.example"]
    # a read is served, and not counted
    assert moodle_call(moodle, "core_webservice_get_site_info").status_code == 200
    assert plan.injected == Counter({"lost_answer": 1})
    moodle.set_faults(None)
    again = create_user(moodle).json()  # the retry a client would make meets what the lost answer made
    assert again["errorcode"] == "invalidparameter"
    assert len(our_users(moodle)) == 1


def test_moodle_tokens_do_not_expire_and_slow_answers_come_late_and_whole(moodle: MoodleSimulator):
    plan = FaultPlan(rate=1.0, seed=2, kinds=("expire_token",))
    moodle.set_faults(plan)
    assert create_user(moodle).status_code == 200 and plan.total == 0
    moodle.set_faults(always("slow", slow_seconds=0.3))
    started = time.perf_counter()
    response = moodle_call(moodle, "core_webservice_get_site_info")
    assert time.perf_counter() - started >= 0.3 and response.json()["sitename"]


def test_moodle_faults_touch_only_the_rest_endpoint(moodle: MoodleSimulator):
    plan = always("500")
    moodle.set_faults(plan)
    assert requests.get(moodle.base_url + "/login/index.php").status_code == 404
    assert plan.requests == 0


def test_the_moodle_client_sees_a_dropped_connection_as_moodle_unavailable(moodle: MoodleSimulator):
    moodle.set_faults(always("drop"))
    client = MoodleClient(
        tenant_id="school_a",
        base_url=moodle.base_url,
        token=DEFAULT_TOKEN,
        max_retries=1,
        sleep=lambda _s: None,
    )
    with pytest.raises(MoodleUnavailable) as caught:
        client.site_info()
    assert caught.value.errorcode == "connection_error"
    assert [r.fault for r in moodle.requests] == ["drop", "drop"]


# --- one plan, two simulators ------------------------------------------------------------------------


def test_one_plan_shared_by_both_simulators_injects_the_same_faults_into_the_same_requests():
    def session() -> tuple[list[tuple[str, str | None]], dict[str, int]]:
        plan = FaultPlan(rate=0.4, seed=99, slow_seconds=0.0)
        with (
            ZohoSimulator(
                clients={CLIENT[0]: (CLIENT[1], CLIENT[2])}, refresh_limit_per_minute=None, faults=plan
            ) as zoho,
            MoodleSimulator(faults=plan) as moodle,
        ):
            for _ in range(15):
                for call in (
                    lambda: zoho_token(zoho),
                    lambda: moodle_call(moodle, "core_course_get_categories"),
                ):
                    with contextlib.suppress(requests.ConnectionError):
                        call()
            seen = [("zoho", r.fault) for r in zoho.requests] + [("moodle", r.fault) for r in moodle.requests]
        return seen, dict(plan.injected)

    first, injected = session()
    assert session() == (first, injected)
    assert sum(injected.values()) > 0
    assert Counter(kind for _, kind in first if kind) == Counter(injected)
