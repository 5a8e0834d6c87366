"""End to end without Dagster: Zoho simulator over HTTP → client → diff → warehouse."""

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest

from sync_pipelines.sandbox import ZohoSimulator, generate_school
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.zoho.client import TokenCache, ZohoAuthError, ZohoClient, ZohoError
from sync_pipelines.zoho.modules import MODULES, module
from sync_pipelines.zoho.sync import ModuleSyncReport, sync_module

TENANT = "school_a"
CLIENT = ("test-client", "test-secret", "test-refresh")


@cache
def _school(scale: float) -> dict[str, list[dict]]:
    return generate_school(2026, scale=scale)


def _simulator(scale: float) -> Iterator[ZohoSimulator]:
    s = ZohoSimulator(
        data=copy.deepcopy(_school(scale)),
        clients={CLIENT[0]: (CLIENT[1], CLIENT[2])},
        refresh_limit_per_minute=None,
    )
    s.start()
    yield s
    s.stop()


@pytest.fixture
def sim() -> Iterator[ZohoSimulator]:
    """A third of the demo school: quick, and every kind of record is there."""
    yield from _simulator(0.3)


@pytest.fixture
def full_sim() -> Iterator[ZohoSimulator]:
    """The whole demo school: 3,000 enrolments, past what `page` alone can reach."""
    yield from _simulator(1.0)


def _client(sim: ZohoSimulator, secret: str = CLIENT[1]) -> ZohoClient:
    return ZohoClient(
        tenant_id=TENANT,
        accounts_url=sim.accounts_url,
        client_id=CLIENT[0],
        client_secret=secret,
        refresh_token=CLIENT[2],
        sleep=lambda _s: None,
    )


def _sync_all(sim: ZohoSimulator, store: Warehouse, **kwargs: object) -> dict[str, ModuleSyncReport]:
    client = _client(sim)
    return {
        spec.name: sync_module(tenant_id=TENANT, spec=spec, client=client, warehouse=store, **kwargs)
        for spec in MODULES
    }


def _calls(sim: ZohoSimulator, module_api_name: str) -> list:
    """Requests to one module (``/crm/v8/<module>[/...]``)."""
    return [r for r in sim.requests if r.path.split("/")[3:4] == [module_api_name]]


def test_first_sync_loads_every_module_and_reports_dirty_records(
    full_sim: ZohoSimulator, warehouse: Warehouse
):
    sim = full_sim
    reports = _sync_all(sim, warehouse)
    for spec in MODULES:
        counts = reports[spec.name].counts
        in_zoho = len(sim.records(spec.api_name))
        assert counts["NEW"] + counts["INVALID"] + counts["SKIPPED"] == in_zoho, spec.name
        assert warehouse.count(TENANT, spec) == counts["NEW"]
        assert counts["UPDATED"] == counts["DELETED"] == 0
    assert sum(r.counts["INVALID"] for r in reports.values()) > 0
    assert sum(r.counts["SKIPPED"] for r in reports.values()) > 0
    invalid = warehouse.results(TENANT).query("status == 'INVALID'")
    assert invalid["reason"].str.contains("invalid email").any()
    skipped = warehouse.results(TENANT, "enrolments").query("status == 'SKIPPED'")
    assert set(skipped["reason"]) <= {"student_not_synced_yet", "class_not_synced_yet"}
    # 3,000 enrolments: past the 2,000 reachable with `page`, so page_token must have been used
    assert any("page_token" in r.query for r in _calls(sim, "BTEC_Enrollments"))
    assert not any(r.status >= 400 for r in sim.requests)


def test_a_second_run_with_nothing_changed_is_cheap_and_changes_nothing(
    sim: ZohoSimulator, warehouse: Warehouse
):
    _sync_all(sim, warehouse)
    sim.reset_log()
    reports = _sync_all(sim, warehouse)
    for spec in MODULES:
        counts = reports[spec.name].counts
        assert counts["NEW"] == counts["UPDATED"] == counts["DELETED"] == 0, spec.name
        # One read; the /deleted check is not due yet (every 60 minutes by default).
        assert len(_calls(sim, spec.api_name)) == 1, spec.name
    assert len(sim.requests) == len(MODULES) + 1  # and one token for the new client
    assert sum(r.api_calls for r in reports.values()) == len(sim.requests)


def test_a_changed_name_is_updated_with_its_field_changes(sim: ZohoSimulator, warehouse: Warehouse):
    _sync_all(sim, warehouse)
    student = next(
        r for r in sim.records("BTEC_Students") if r.get("Last_Name") and "@" in str(r.get("Academic_Email"))
    )
    old = student["Last_Name"].strip()
    sim.update("BTEC_Students", student["id"], Last_Name="Al-Khatib")
    report = sync_module(tenant_id=TENANT, spec=module("students"), client=_client(sim), warehouse=warehouse)
    assert report.counts["UPDATED"] == 1
    changes = report.result.changes
    assert changes[["zoho_id", "field", "old", "new"]].to_dict("records") == [
        {"zoho_id": student["id"], "field": "last_name", "old": old, "new": "Al-Khatib"}
    ]
    row = warehouse.read_table(TENANT, module("students")).set_index("zoho_id").loc[student["id"]]
    assert row["last_name"] == "Al-Khatib"


@pytest.mark.parametrize("name", ["students", "enrolments"])  # with and without Modified_Time
def test_deletions_in_zoho_are_captured_when_the_deleted_check_is_due(
    sim: ZohoSimulator, warehouse: Warehouse, name: str
):
    spec = module(name)
    _sync_all(sim, warehouse)
    victim = warehouse.read_table(TENANT, spec)["zoho_id"].iloc[0]
    sim.delete(spec.api_name, victim)
    sim.reset_log()

    def run(at: datetime, **kwargs) -> ModuleSyncReport:
        return sync_module(
            tenant_id=TENANT, spec=spec, client=_client(sim), warehouse=warehouse, now=at, **kwargs
        )

    # Within the hour after the first (full) read: no /deleted call, the deletion waits.
    soon = run(datetime.now(UTC) + timedelta(minutes=30))
    assert soon.counts["DELETED"] == 0
    assert not [r for r in _calls(sim, spec.api_name) if r.path.endswith("/deleted")]
    # An hour on, the check is due: one /deleted call finds it.
    later = run(datetime.now(UTC) + timedelta(minutes=66))
    assert later.result.ids("DELETED").tolist() == [victim]
    assert victim not in set(warehouse.known_ids(TENANT, spec))
    assert len([r for r in _calls(sim, spec.api_name) if r.path.endswith("/deleted")]) == 1
    # The check moved on: right after it, no /deleted call again.
    sim.reset_log()
    run(datetime.now(UTC) + timedelta(minutes=70))
    assert not [r for r in _calls(sim, spec.api_name) if r.path.endswith("/deleted")]


def test_deleted_check_every_run_when_asked_and_never_on_a_full_read(
    sim: ZohoSimulator, warehouse: Warehouse
):
    spec = module("students")
    sim.reset_log()
    first = sync_module(tenant_id=TENANT, spec=spec, client=_client(sim), warehouse=warehouse)
    assert first.mode == "full"
    assert not [r for r in _calls(sim, spec.api_name) if r.path.endswith("/deleted")]
    victim = warehouse.read_table(TENANT, spec)["zoho_id"].iloc[3]
    sim.delete(spec.api_name, victim)
    report = sync_module(
        tenant_id=TENANT, spec=spec, client=_client(sim), warehouse=warehouse, deleted_check_minutes=0
    )
    assert report.result.ids("DELETED").tolist() == [victim]


def test_modules_without_modified_time_find_new_records_in_one_page(sim: ZohoSimulator, warehouse: Warehouse):
    _sync_all(sim, warehouse)
    student = warehouse.read_table(TENANT, module("students"))["zoho_id"].iloc[5]
    klass = warehouse.read_table(TENANT, module("classes"))["zoho_id"].iloc[5]
    new_id = sim.insert("BTEC_Enrollments", {"Enrolled_Students": {"id": student}, "Classes": {"id": klass}})
    sim.reset_log()
    report = sync_module(
        tenant_id=TENANT, spec=module("enrolments"), client=_client(sim), warehouse=warehouse
    )
    assert report.result.ids("NEW").tolist() == [new_id]
    assert report.mode == "incremental"
    assert len([r for r in _calls(sim, "BTEC_Enrollments") if "deleted" not in r.path]) == 1


def test_edits_without_modified_time_are_found_by_the_reconciliation(
    sim: ZohoSimulator, warehouse: Warehouse
):
    _sync_all(sim, warehouse)
    enrolment = warehouse.read_table(TENANT, module("enrolments"))["zoho_id"].iloc[0]
    sim.update("BTEC_Enrollments", enrolment, Enrollment_Type="Recording")
    spec = module("enrolments")
    quiet = sync_module(tenant_id=TENANT, spec=spec, client=_client(sim), warehouse=warehouse)
    assert quiet.counts["UPDATED"] == 0  # not visible to an incremental read: documented
    full = sync_module(
        tenant_id=TENANT, spec=spec, client=_client(sim), warehouse=warehouse, full_refresh=True
    )
    assert full.mode == "full"
    assert full.result.changes[["zoho_id", "field", "new"]].to_dict("records") == [
        {"zoho_id": enrolment, "field": "enrolment_type", "new": "Recording"}
    ]
    assert full.counts["DELETED"] == 0


def _enrolment_waiting_for_its_student(
    sim: ZohoSimulator, warehouse: Warehouse
) -> tuple[str, str, dict[str, ModuleSyncReport]]:
    """A synced school, then an enrolment of a new student whose e-mail is invalid, synced: the
    student is INVALID and the enrolment SKIPPED. Returns (student id, enrolment id, reports)."""
    _sync_all(sim, warehouse)
    klass = warehouse.read_table(TENANT, module("classes"))["zoho_id"].iloc[0]
    # the enrolment is created first and points at a student created later (as a webhook race would)
    student_id = sim.insert(
        "BTEC_Students", {"First_Name": "Nour", "Last_Name": "Aziz", "Academic_Email": "bad"}
    )
    enrolment_id = sim.insert(
        "BTEC_Enrollments", {"Enrolled_Students": {"id": student_id}, "Classes": {"id": klass}}
    )
    return student_id, enrolment_id, _sync_all(sim, warehouse)


def test_a_skipped_enrolment_is_applied_when_its_student_arrives(sim: ZohoSimulator, warehouse: Warehouse):
    student_id, enrolment_id, first = _enrolment_waiting_for_its_student(sim, warehouse)
    assert first["students"].result.records.set_index("zoho_id").loc[student_id, "sync_status"] == "INVALID"
    skipped = first["enrolments"].result.records.set_index("zoho_id").loc[enrolment_id]
    assert (skipped["sync_status"], skipped["sync_reason"]) == ("SKIPPED", "student_not_synced_yet")

    sim.update("BTEC_Students", student_id, Academic_Email="nour.aziz@school.example")
    second = _sync_all(sim, warehouse)  # the enrolment is not re-read from Zoho: it comes from pending
    assert second["students"].result.records.set_index("zoho_id").loc[student_id, "sync_status"] == "NEW"
    assert second["enrolments"].result.records.set_index("zoho_id").loc[enrolment_id, "sync_status"] == "NEW"
    assert enrolment_id in set(warehouse.known_ids(TENANT, module("enrolments")))


@pytest.mark.parametrize("how", ["deleted", "full_read"])
def test_a_skipped_record_deleted_in_zoho_is_forgotten_not_resurrected(
    sim: ZohoSimulator, warehouse: Warehouse, how: str
):
    student_id, enrolment_id, first = _enrolment_waiting_for_its_student(sim, warehouse)
    assert (
        first["enrolments"].result.records.set_index("zoho_id").loc[enrolment_id, "sync_status"] == "SKIPPED"
    )
    assert enrolment_id in set(warehouse.load_pending(TENANT, module("enrolments"))["zoho_id"])

    # The enrolment is deleted in Zoho while it waits for its student.
    sim.delete("BTEC_Enrollments", enrolment_id, permanent=how == "full_read")
    kwargs = {"deleted_check_minutes": 0} if how == "deleted" else {"full_refresh": True}
    sync_module(
        tenant_id=TENANT, spec=module("enrolments"), client=_client(sim), warehouse=warehouse, **kwargs
    )
    assert enrolment_id not in set(warehouse.load_pending(TENANT, module("enrolments"))["zoho_id"])

    # The student becomes valid and arrives: the deleted enrolment must not come back with it.
    sim.update("BTEC_Students", student_id, Academic_Email="nour.aziz@school.example")
    later = _sync_all(sim, warehouse)
    assert later["students"].result.records.set_index("zoho_id").loc[student_id, "sync_status"] == "NEW"
    assert enrolment_id not in set(later["enrolments"].result.records["zoho_id"])
    assert enrolment_id not in set(warehouse.known_ids(TENANT, module("enrolments")))


def test_zoho_failing_mid_run_leaves_the_module_as_it_was_and_the_next_run_converges(
    sim: ZohoSimulator, warehouse: Warehouse
):
    spec = module("enrolments")
    sim.fail_next(50, status=500, code="INTERNAL_ERROR", path_contains="BTEC_Enrollments")
    with pytest.raises(ZohoError, match="INTERNAL_ERROR"):
        _sync_all(sim, warehouse)
    assert warehouse.count(TENANT, spec) == 0
    failed = warehouse.runs(TENANT, "enrolments")
    assert failed["outcome"].tolist() == ["failed"] and TENANT in failed["error"].iloc[0]

    sim.fail_next(0)
    reports = _sync_all(sim, warehouse)
    assert reports["enrolments"].counts["NEW"] == warehouse.count(TENANT, spec) > 0
    assert reports["students"].counts["NEW"] == 0  # already synced before the failure


def test_an_expired_token_is_refreshed_once_and_the_run_goes_on(sim: ZohoSimulator, warehouse: Warehouse):
    client = _client(sim)
    sync_module(tenant_id=TENANT, spec=module("teachers"), client=client, warehouse=warehouse)
    sim.expire_tokens()
    report = sync_module(tenant_id=TENANT, spec=module("programmes"), client=client, warehouse=warehouse)
    assert report.counts["NEW"] > 0
    assert client.stats.token_refreshes == 2


def test_wrong_credentials_give_one_clear_error_naming_the_tenant_and_zohos_code(
    sim: ZohoSimulator, warehouse: Warehouse
):
    with pytest.raises(ZohoAuthError) as err:
        sync_module(
            tenant_id=TENANT,
            spec=module("students"),
            client=_client(sim, "wrong-secret"),
            warehouse=warehouse,
        )
    text = str(err.value)
    assert TENANT in text and "invalid_client" in text
    assert "wrong-secret" not in text and CLIENT[2] not in text


def test_clients_sharing_a_token_cache_refresh_the_token_once(warehouse: Warehouse):
    # the documented throttle: a sync of nine modules, one client each, must not trip it
    with ZohoSimulator(
        data=copy.deepcopy(_school(0.3)),
        clients={CLIENT[0]: (CLIENT[1], CLIENT[2])},
        refresh_limit_per_minute=5,
    ) as sim:
        cache = TokenCache()
        for spec in MODULES:
            client = ZohoClient(
                tenant_id=TENANT,
                accounts_url=sim.accounts_url,
                client_id=CLIENT[0],
                client_secret=CLIENT[1],
                refresh_token=CLIENT[2],
                token_cache=cache,
            )
            sync_module(tenant_id=TENANT, spec=spec, client=client, warehouse=warehouse)
        assert [r.path for r in sim.requests if "oauth" in r.path] == ["/oauth/v2/token"]


def test_an_event_run_reads_only_the_named_records_and_leaves_the_read_position(
    sim: ZohoSimulator, warehouse: Warehouse
):
    spec = module("students")
    _sync_all(sim, warehouse)
    before = warehouse.cursor(TENANT, spec)
    stored = warehouse.read_table(TENANT, spec)["zoho_id"]
    changed, gone = stored.iloc[0], stored.iloc[1]
    sim.update("BTEC_Students", changed, City="Mardin")
    sim.delete("BTEC_Students", gone)
    sim.reset_log()
    report = sync_module(
        tenant_id=TENANT, spec=spec, client=_client(sim), warehouse=warehouse, record_ids=[changed, gone]
    )
    assert report.mode == "event"
    statuses = report.result.records.set_index("zoho_id")["sync_status"].to_dict()
    assert statuses == {changed: "UPDATED", gone: "DELETED"}
    assert [r.path for r in sim.requests if "/crm/" in r.path] == [
        f"/crm/v8/BTEC_Students/{changed}",
        f"/crm/v8/BTEC_Students/{gone}",
    ]
    assert warehouse.cursor(TENANT, spec) == before


def test_pushed_records_are_applied_as_sent_without_reading_zoho(sim: ZohoSimulator, warehouse: Warehouse):
    spec = module("teachers")
    _sync_all(sim, warehouse)
    teacher = dict(sim.record("BTEC_Teachers", warehouse.read_table(TENANT, spec)["zoho_id"].iloc[0]))
    teacher["Phone_Number"] = "+90 555 000 0000"
    sim.reset_log()
    report = sync_module(
        tenant_id=TENANT, spec=spec, client=_client(sim), warehouse=warehouse, pushed_records=[teacher]
    )
    assert report.result.changes[["field", "new"]].to_dict("records") == [
        {"field": "phone_number", "new": "+90 555 000 0000"}
    ]
    assert not [r for r in sim.requests if "/crm/" in r.path]
