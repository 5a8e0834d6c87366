from datetime import UTC, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from sync_pipelines.diff import DependencyCheck, DiffResult, diff, field_changes
from sync_pipelines.warehouse import Cursor, RunInfo, Warehouse
from sync_pipelines.zoho.canonical import canonicalise, frame_from_records
from sync_pipelines.zoho.modules import MODULES, module

CLASSES = module("classes")
T0 = datetime(2026, 11, 1, 7, 0, tzinfo=UTC)


def _classes(*overrides: dict) -> pd.DataFrame:
    base = {
        "Class_Name": "Networking",
        "Class_Short_Name": "NET",
        "Start_Date": "2026-09-01",
        "End_Date": "2027-01-15",
        "English_Teaching": True,
        "Term": "T1",
        "Modified_Time": "2026-11-01T10:00:00+03:00",
    }
    rows = [base | {"id": str(1000 + i), "Class_Short_Name": f"NET-{i}"} | o for i, o in enumerate(overrides)]
    return canonicalise(CLASSES, frame_from_records(CLASSES, rows))


def _sync(
    store: Warehouse, incoming: pd.DataFrame, tenant: str = "school_a", deleted: tuple = ()
) -> DiffResult:
    state = store.load_state(tenant, CLASSES)
    result = diff(
        incoming,
        state,
        fingerprint_columns=CLASSES.fingerprint_columns,
        deleted_ids=deleted,
        natural_key=CLASSES.natural_key,
    )
    updated = result.of("UPDATED")
    if len(updated):
        old = store.load_rows(tenant, CLASSES, updated["zoho_id"].tolist())
        result.changes = field_changes(updated.set_index("zoho_id"), old, CLASSES.fingerprint_columns)
    store.apply(
        CLASSES, result, RunInfo(tenant_id=tenant, module="classes"), Cursor(modified_since=T0, max_id="1002")
    )
    return result


def test_tables_exist_for_every_module(warehouse: Warehouse):
    names = set(sa.inspect(warehouse.engine).get_table_names())
    assert {m.table for m in MODULES} | {"sync_runs", "sync_results", "sync_cursors", "sync_pending"} <= names


def test_new_then_unchanged_then_updated_then_deleted_round_trip(warehouse: Warehouse):
    first = _sync(warehouse, _classes({}, {}, {"Class_Name": "Databases"}))
    assert first.counts()["NEW"] == 3
    table = warehouse.read_table("school_a", CLASSES)
    assert table["english_teaching"].tolist() == [True, True, True]
    assert str(table["start_date"].iloc[0])[:10] == "2026-09-01"

    # stored typed values read back as the same canonical strings: nothing looks changed
    again = _sync(warehouse, _classes({}, {}, {"Class_Name": "Databases"}))
    assert again.counts()["UNCHANGED"] == 3

    changed = _sync(
        warehouse,
        _classes({}, {"End_Date": "2027-02-01", "English_Teaching": False}, {"Class_Name": "Databases"}),
    )
    assert changed.counts()["UPDATED"] == 1
    assert changed.changes[["field", "old", "new"]].to_dict("records") == [
        {"field": "end_date", "old": "2027-01-15", "new": "2027-02-01"},
        {"field": "english_teaching", "old": "true", "new": "false"},
    ]

    gone = _sync(warehouse, _classes({}), deleted=("1002",))
    assert gone.counts()["DELETED"] == 1
    assert warehouse.count("school_a", CLASSES) == 2
    assert warehouse.read_table("school_a", CLASSES, include_deleted=True)["deleted_at"].notna().sum() == 1

    results = warehouse.results("school_a", "classes", "1001")
    assert results["status"].tolist() == ["NEW", "UNCHANGED", "UPDATED"]
    assert '"end_date": ["2027-01-15", "2027-02-01"]' in results["changes"].iloc[2]
    assert warehouse.cursor("school_a", CLASSES).modified_since == T0


def test_tenants_never_see_each_others_rows(warehouse: Warehouse):
    _sync(warehouse, _classes({}, {}), tenant="school_a")
    _sync(warehouse, _classes({"Class_Name": "Other school"}), tenant="school_b")  # same Zoho id 1000
    assert warehouse.count("school_a", CLASSES) == 2
    assert warehouse.read_table("school_b", CLASSES)["class_name"].tolist() == ["Other school"]
    assert warehouse.read_table("school_a", CLASSES)["class_name"].tolist() == ["Networking", "Networking"]
    assert list(warehouse.known_ids("school_b", CLASSES)) == ["1000"]


def test_a_failing_apply_leaves_nothing_behind(warehouse: Warehouse):
    _sync(warehouse, _classes({}))
    before = (
        warehouse.read_table("school_a", CLASSES),
        warehouse.cursor("school_a", CLASSES),
        len(warehouse.runs("school_a")),
    )
    result = diff(
        _classes({"Class_Name": "Renamed"}, {}),
        warehouse.load_state("school_a", CLASSES),
        fingerprint_columns=CLASSES.fingerprint_columns,
    )
    # a result row without an id fails the log insert, after the upsert already ran in the transaction
    broken = pd.concat(
        [result.records, pd.DataFrame([{"zoho_id": None, "sync_status": "INVALID", "sync_reason": "x"}])]
    )
    later = Cursor(modified_since=datetime(2030, 1, 1, tzinfo=UTC))
    with pytest.raises(sa.exc.IntegrityError):
        warehouse.apply(
            CLASSES, DiffResult(records=broken), RunInfo(tenant_id="school_a", module="classes"), later
        )
    assert warehouse.read_table("school_a", CLASSES).equals(before[0])
    assert warehouse.cursor("school_a", CLASSES) == before[1]
    assert len(warehouse.runs("school_a")) == before[2]


def test_skipped_records_wait_in_pending_and_leave_when_resolved(warehouse: Warehouse):
    incoming = _classes({"BTEC_Program": {"id": "777", "name": "L5"}})
    result = diff(
        incoming,
        warehouse.load_state("t", CLASSES),
        fingerprint_columns=CLASSES.fingerprint_columns,
        dependencies=[DependencyCheck("program_id", pd.Index([]), "programme_not_synced_yet")],
    )
    warehouse.apply(CLASSES, result, RunInfo(tenant_id="t", module="classes"), Cursor())
    pending = warehouse.load_pending("t", CLASSES)
    assert pending[["zoho_id", "program_id", "class_name"]].to_dict("records") == [
        {"zoho_id": "1000", "program_id": "777", "class_name": "Networking"}
    ]
    assert warehouse.count("t", CLASSES) == 0
    resolved = diff(
        pending.assign(invalid_reason=None),
        warehouse.load_state("t", CLASSES),
        fingerprint_columns=CLASSES.fingerprint_columns,
    )
    warehouse.apply(CLASSES, resolved, RunInfo(tenant_id="t", module="classes"), Cursor())
    assert warehouse.load_pending("t", CLASSES).empty
    assert warehouse.count("t", CLASSES) == 1
