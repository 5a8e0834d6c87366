"""End to end without Dagster: Zoho simulator over HTTP → client → diff → warehouse."""

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache

import pandas as pd
import pytest

from sync_pipelines.sandbox import ZohoSimulator, generate_school
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.schema import MODULE_TABLES, sync_pending
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
        assert counts["NEW"] + counts["INVALID"] == in_zoho, spec.name
        assert warehouse.count(TENANT, spec) == in_zoho, spec.name  # the dirty ones too
        assert counts["UPDATED"] == counts["DELETED"] == 0
    assert sum(r.counts["INVALID"] for r in reports.values()) > 0
    invalid = warehouse.results(TENANT).query("status == 'INVALID'")
    assert invalid["reason"].str.contains("invalid email").any()
    assert set(invalid["change"]) == {"NEW"}
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


def test_when_zoho_answers_not_modified_the_stored_state_is_not_read(
    sim: ZohoSimulator, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
):
    _sync_all(sim, warehouse)
    before = {spec.name: warehouse.read_table(TENANT, spec) for spec in MODULES}
    reads: list[tuple[str, bool]] = []
    load_state = Warehouse.load_state

    def recorded(self: Warehouse, tenant_id: str, spec, **kwargs) -> pd.DataFrame:
        frame = load_state(self, tenant_id, spec, **kwargs)
        reads.append((spec.name, len(frame)))
        return frame

    monkeypatch.setattr(Warehouse, "load_state", recorded)
    sim.reset_log()
    reports = _sync_all(sim, warehouse)

    for spec in MODULES:
        # 304 (If-Modified-Since), or for a module without Modified_Time a newest-first page that
        # holds no id it has not seen: nothing fetched, so nothing stored is read or compared.
        if spec.has_modified_time:
            assert [r.status for r in _calls(sim, spec.api_name)] == [304], spec.name
        assert len(before[spec.name]) and [n for m, n in reads if m == spec.name] == [0], spec.name
        assert reports[spec.name].result.records.empty and sum(reports[spec.name].counts.values()) == 0
    for spec in MODULES:
        pd.testing.assert_frame_equal(warehouse.read_table(TENANT, spec), before[spec.name])
    # The next edit is compared with the stored row of that one record (and of any record holding
    # its natural key, the academic e-mail: none other here), not with the whole state.
    student = next(r for r in sim.records("BTEC_Students") if r.get("Last_Name"))
    sim.update("BTEC_Students", student["id"], Last_Name="Al-Khatib")
    reads.clear()
    report = sync_module(tenant_id=TENANT, spec=module("students"), client=_client(sim), warehouse=warehouse)
    assert report.counts["UPDATED"] == 1
    assert reads == [("students", 1)] and report.extra["state_rows_read"] == 1


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


def _held_back_by_an_earlier_version(sim: ZohoSimulator, warehouse: Warehouse) -> str:
    """A synced school, then one enrolment as an earlier version left it: not stored, waiting
    in ``sync_pending`` (its canonical payload) for its student. Returns its id."""
    _sync_all(sim, warehouse)
    spec = module("enrolments")
    row = warehouse.read_table(TENANT, spec).iloc[0]
    enrolment_id = row["zoho_id"]
    payload = {"zoho_id": enrolment_id, **{c: row[c] for c in spec.columns}}
    payload = {
        k: (None if pd.isna(v) else str(v)[:10] if k.endswith("_date") else v) for k, v in payload.items()
    }
    table = MODULE_TABLES[spec.name]
    now = datetime.now(UTC)
    with warehouse.engine.begin() as conn:
        conn.execute(table.delete().where(table.c.tenant_id == TENANT, table.c.zoho_id == enrolment_id))
        conn.execute(
            sync_pending.insert().values(
                tenant_id=TENANT,
                module=spec.name,
                zoho_id=enrolment_id,
                reason="student_not_synced_yet",
                payload=json.dumps(payload, default=lambda v: v.item()),
                first_skipped_at=now,
                last_seen_at=now,
            )
        )
    return enrolment_id


def test_a_record_an_earlier_version_held_back_is_stored_by_the_next_sync(
    sim: ZohoSimulator, warehouse: Warehouse
):
    enrolment_id = _held_back_by_an_earlier_version(sim, warehouse)
    assert enrolment_id not in set(warehouse.known_ids(TENANT, module("enrolments")))
    report = sync_module(
        tenant_id=TENANT, spec=module("enrolments"), client=_client(sim), warehouse=warehouse
    )
    assert report.result.records.set_index("zoho_id").loc[enrolment_id, "change"] == "NEW"
    assert enrolment_id in set(warehouse.known_ids(TENANT, module("enrolments")))
    assert warehouse.load_pending(TENANT, module("enrolments")).empty


@pytest.mark.parametrize("how", ["deleted", "full_read"])
def test_a_held_back_record_deleted_in_zoho_is_forgotten_not_resurrected(
    sim: ZohoSimulator, warehouse: Warehouse, how: str
):
    enrolment_id = _held_back_by_an_earlier_version(sim, warehouse)
    sim.delete("BTEC_Enrollments", enrolment_id, permanent=how == "full_read")
    kwargs = {"deleted_check_minutes": 0} if how == "deleted" else {"full_refresh": True}
    sync_module(
        tenant_id=TENANT, spec=module("enrolments"), client=_client(sim), warehouse=warehouse, **kwargs
    )
    assert warehouse.load_pending(TENANT, module("enrolments")).empty
    assert enrolment_id not in set(warehouse.known_ids(TENANT, module("enrolments")))
    later = _sync_all(sim, warehouse)
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
    counts = reports["enrolments"].counts
    assert counts["NEW"] + counts["INVALID"] == warehouse.count(TENANT, spec) > 0
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
