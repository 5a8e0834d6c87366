import json
from datetime import UTC, date, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from sync_pipelines.diff import DiffResult, diff, field_changes
from sync_pipelines.warehouse import Cursor, RunInfo, Warehouse, schema, sql
from sync_pipelines.warehouse.schema import sync_pending
from sync_pipelines.zoho.canonical import canonicalise, frame_from_records
from sync_pipelines.zoho.modules import MODULES, FieldSpec, ModuleSpec, module

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


def test_forgetting_a_tenant_deletes_its_rows_in_every_table_and_nothing_of_another(warehouse: Warehouse):
    _sync(warehouse, _classes({}, {}), tenant="school_a")
    _sync(warehouse, _classes({"Class_Name": "Other school"}), tenant="school_b")

    deleted = warehouse.forget_tenant("school_a")

    # the module table, its run log, its per-record log and its read position
    assert deleted[CLASSES.table] == 2
    assert {"sync_runs", "sync_results", "sync_cursors"} <= set(deleted)
    assert warehouse.count("school_a", CLASSES) == 0
    assert warehouse.runs("school_a").empty and warehouse.results("school_a").empty
    assert warehouse.cursor("school_a", CLASSES).modified_since is None
    assert warehouse.read_table("school_b", CLASSES)["class_name"].tolist() == ["Other school"]
    assert len(warehouse.runs("school_b")) == 1
    assert warehouse.forget_tenant("school_a") == {}


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


def test_an_invalid_record_is_stored_with_its_findings_and_a_fix_clears_them(warehouse: Warehouse):
    result = _sync(warehouse, _classes({"Class_Name": None, "End_Date": "2026-01-01"}))
    assert result.counts()["INVALID"] == 1
    row = warehouse.read_table("school_a", CLASSES).iloc[0]
    assert json.loads(row["findings"]) == [
        {"rule": "required", "field": "Class_Name", "value": None},
        {"rule": "end_before_start", "field": "End_Date", "value": "2026-01-01"},
    ]
    logged = warehouse.results("school_a", "classes", "1000").iloc[-1]
    assert (logged["status"], logged["change"]) == ("INVALID", "NEW")
    assert logged["reason"] == "Class_Name: required; End_Date: before Start_Date '2026-01-01'"
    assert json.loads(logged["findings"])[0]["rule"] == "required"
    assert warehouse.accounted_for("school_a", CLASSES) == {"live": 1, "invalid": 1, "pending": 0}

    fixed = _sync(warehouse, _classes({}))
    assert fixed.counts()["UPDATED"] == 1
    assert warehouse.read_table("school_a", CLASSES)["findings"].isna().all()
    assert warehouse.accounted_for("school_a", CLASSES)["invalid"] == 0


# --- the bulk write path (COPY on PostgreSQL, executemany of tuples on SQLite) ---------------------

#: One field of every kind the warehouse stores, for the round-trip tests only: its table is
#: created in the test's own warehouse and never joins the shared metadata.
AWKWARD = ModuleSpec(
    api_name="BTEC_Students",  # a module with Modified_Time
    name="awkward_kinds",
    label="one record of every column type (tests only)",
    fields=(
        FieldSpec("Txt", "txt", "text"),
        FieldSpec("Memo", "memo", "textarea"),
        FieldSpec("Day", "day", "date"),
        FieldSpec("Moment", "moment", "datetime"),
        FieldSpec("Flag", "flag", "boolean"),
        FieldSpec("Count", "count", "integer"),
        FieldSpec("Ratio", "ratio", "double"),
        FieldSpec("Price", "price", "currency"),
        FieldSpec("Ref", "ref", "lookup"),
    ),
)

AWKWARD_RECORDS = [
    {
        "id": "1",
        "Txt": "Zoë \"double\" 'single' back\\slash \\N \\. tab\tin\nnewline, ; | \\\\ done",
        "Memo": "line one\nline two\r\n\ttabbed \\t not-a-tab 😀 العربية 中文 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ﷺ\n\n",
        "Day": "0001-01-01",
        "Moment": "0001-01-01T00:00:00Z",
        "Flag": True,
        "Count": "123456789012345678",
        "Ratio": "1e-300",
        "Price": "0.1",
        "Ref": {"id": "584301700000012345", "name": "x"},
        "Modified_Time": "2026-11-01T10:00:00+03:00",
    },
    {"id": "2"},  # every value missing
    {
        "id": "3",
        "Txt": "\\",
        "Memo": "\\\n\\",
        "Day": "9999-12-31",
        "Moment": "9999-12-31T23:59:59Z",
        "Flag": "false",
        "Count": "-999999999999999999",
        "Ratio": "1.7976931348623157e+308",
        "Price": "-123456.789",
        "Modified_Time": "2026-11-01T10:00:01Z",
    },
    {
        "id": "4",
        "Txt": "NULL",
        "Memo": "null",
        "Day": "2024-02-29",
        "Moment": "2026-03-29T01:30:00+02:00",
        "Flag": False,
        "Count": "0",
        "Ratio": "-2.5e-07",
        "Price": "9007199254740993",
        "Modified_Time": "2026-11-01T10:00:02Z",
    },
]


@pytest.fixture
def awkward(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch) -> ModuleSpec:
    table = schema._module_table(AWKWARD)
    schema.metadata.remove(table)  # other warehouses must not create it
    table.create(warehouse.engine)
    monkeypatch.setitem(schema.MODULE_TABLES, AWKWARD.name, table)
    return AWKWARD


def _apply_all(store: Warehouse, spec: ModuleSpec, incoming: pd.DataFrame, tenant: str = "t") -> DiffResult:
    result = diff(
        incoming,
        store.load_state(tenant, spec),
        fingerprint_columns=spec.fingerprint_columns,
        natural_key=spec.natural_key,
    )
    updated = result.of("UPDATED")
    if len(updated):
        old = store.load_rows(tenant, spec, updated["zoho_id"].tolist())
        result.changes = field_changes(updated.set_index("zoho_id"), old, spec.fingerprint_columns)
    store.apply(spec, result, RunInfo(tenant_id=tenant, module=spec.name), Cursor(max_id="9"))
    return result


def test_awkward_values_round_trip_exactly_through_the_bulk_path(warehouse: Warehouse, awkward: ModuleSpec):
    incoming = canonicalise(awkward, frame_from_records(awkward, AWKWARD_RECORDS))
    assert incoming["invalid_reason"].isna().all(), incoming["invalid_reason"].tolist()
    assert _apply_all(warehouse, awkward, incoming).counts()["NEW"] == 4

    # typed, as stored
    table = schema.MODULE_TABLES[awkward.name]
    with warehouse.engine.connect() as conn:
        stored = {r.zoho_id: r for r in conn.execute(sa.select(table).where(table.c.tenant_id == "t"))}

    def aware(ts):
        return ts if ts is None or ts.tzinfo else ts.replace(tzinfo=UTC)

    one, empty, three, four = stored["1"], stored["2"], stored["3"], stored["4"]
    canonical = incoming.set_index("zoho_id")
    for row in (one, three, four):  # text exactly as canonicalised, awkward characters and all
        assert (row.txt, row.memo) == (canonical.at[row.zoho_id, "txt"], canonical.at[row.zoho_id, "memo"])
    for awkward_char in ("\t", "\n", "\\", '"', "'", "\\N", "ë"):
        assert awkward_char in one.txt
    for awkward_char in ("\n", "\t", "\\t", "😀", "العربية", "中文", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢"):
        assert awkward_char in one.memo
    assert (one.day, aware(one.moment)) == (date(1, 1, 1), datetime(1, 1, 1, tzinfo=UTC))
    assert (three.day, aware(three.moment)) == (
        date(9999, 12, 31),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    )
    assert aware(four.moment) == datetime(2026, 3, 28, 23, 30, tzinfo=UTC)
    assert (one.flag, three.flag, four.flag) == (True, False, False)
    assert all(type(r.flag) is bool for r in (one, three, four))
    assert (one.count, three.count, four.count) == (123456789012345678, -999999999999999999, 0)
    assert (one.ratio, three.ratio, four.ratio) == (1e-300, 1.7976931348623157e308, -2.5e-07)
    assert (one.price, three.price, four.price) == (0.1, -123456.789, 9007199254740992.0)
    assert (one.ref, three.txt, three.memo, four.txt, four.memo) == (
        "584301700000012345",
        "\\",
        "\\\n\\",
        "NULL",
        "null",
    )
    assert aware(one.zoho_modified_time) == datetime(2026, 11, 1, 7, 0, tzinfo=UTC)
    assert all(getattr(empty, c) is None for c in (*awkward.columns, "zoho_modified_time"))
    assert empty.fingerprint and empty.deleted_at is None and empty.first_seen_at is not None

    # canonical, as read back for the diff: exactly the strings that went in
    back = warehouse.load_rows("t", awkward, ["1", "2", "3", "4"])
    expected = incoming.set_index("zoho_id")[list(awkward.columns)]
    for zid in expected.index:
        for col in awkward.columns:
            want, got = expected.at[zid, col], back.at[zid, col]
            assert (pd.isna(want) and pd.isna(got)) or want == got, (zid, col, want, got)
    assert _apply_all(warehouse, awkward, incoming).counts()["UNCHANGED"] == 4


def test_an_update_keeps_first_seen_at_and_rewrites_the_rest(warehouse: Warehouse):
    _sync(warehouse, _classes({}, {}))
    before = warehouse.read_table("school_a", CLASSES).set_index("zoho_id")
    result = _sync(warehouse, _classes({"Class_Name": "Renamed"}, {}))
    assert result.counts()["UPDATED"] == 1
    after = warehouse.read_table("school_a", CLASSES).set_index("zoho_id")
    assert after["first_seen_at"].tolist() == before["first_seen_at"].tolist()
    assert after.at["1000", "class_name"] == "Renamed"
    assert after.at["1000", "updated_at"] > before.at["1000", "updated_at"]
    assert after.at["1000", "sync_run_id"] != before.at["1000", "sync_run_id"]
    assert after.at["1000", "fingerprint"] != before.at["1000", "fingerprint"]
    assert after.at["1001", "updated_at"] == before.at["1001", "updated_at"]  # UNCHANGED: not written


def _snapshot(store: Warehouse, tenant: str = "school_a") -> tuple:
    with store.engine.connect() as conn:
        pending = conn.execute(sa.select(sync_pending).order_by(sync_pending.c.zoho_id)).all()
    return (
        store.read_table(tenant, CLASSES, include_deleted=True),
        store.results(tenant),
        store.runs(tenant),
        store.cursor(tenant, CLASSES),
        pending,
    )


def _assert_same_snapshot(a: tuple, b: tuple) -> None:
    assert a[0].equals(b[0])
    assert a[1].equals(b[1])
    assert a[2].equals(b[2])
    assert a[3] == b[3]
    assert a[4] == b[4]


@pytest.mark.parametrize("failing_step", ["_upsert_rows", "_write_subforms", "_log", "_save_cursor"])
@pytest.mark.parametrize("first_load", [True, False], ids=["first-load", "later-load"])
def test_a_failure_in_the_middle_of_apply_writes_nothing(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch, failing_step: str, first_load: bool
):
    if not first_load:  # rows, results, a run and a cursor already there
        _sync(warehouse, _classes({}, {}, {}))
    before = _snapshot(warehouse)
    # NEW, UPDATED, UNCHANGED, DELETED and INVALID records, so that every write of apply has rows
    incoming = _classes({"Class_Name": "Renamed"}, {}, {}, {"Class_Name": None}, *({} for _ in range(600)))
    result = diff(
        incoming,
        warehouse.load_state("school_a", CLASSES),
        fingerprint_columns=CLASSES.fingerprint_columns,
        deleted_ids=() if first_load else ("1002",),
    )
    counts = result.counts()
    assert counts["INVALID"] == 1 and counts["NEW"] > 500 and (first_load or counts["DELETED"] == 1)

    class Boom(Exception):
        pass

    original = getattr(Warehouse, failing_step)

    def step_then_fail(self, *args, **kwargs):
        original(self, *args, **kwargs)  # this step's rows are written in the transaction...
        raise Boom(failing_step)  # ...and then it fails

    monkeypatch.setattr(Warehouse, failing_step, step_then_fail)
    later = Cursor(modified_since=datetime(2030, 1, 1, tzinfo=UTC), max_id="9")
    with pytest.raises(Boom):
        warehouse.apply(CLASSES, result, RunInfo(tenant_id="school_a", module="classes"), later)
    monkeypatch.undo()

    _assert_same_snapshot(_snapshot(warehouse), before)
    if first_load:
        assert warehouse.count("school_a", CLASSES) == 0
        assert warehouse.results("school_a").empty and warehouse.load_pending("school_a", CLASSES).empty
        assert warehouse.cursor("school_a", CLASSES) == Cursor()
    # and the same apply, without the failure, goes through in full
    warehouse.apply(CLASSES, result, RunInfo(tenant_id="school_a", module="classes"), later)
    assert warehouse.cursor("school_a", CLASSES) == later
    assert len(warehouse.results("school_a")) == len(before[1]) + len(result.records)


def test_a_database_error_in_the_bulk_write_rolls_back_and_is_a_sqlalchemy_error(warehouse: Warehouse):
    _sync(warehouse, _classes({}))
    before = _snapshot(warehouse)
    result = diff(
        _classes({"Class_Name": "Renamed"}, {}),
        warehouse.load_state("school_a", CLASSES),
        fingerprint_columns=CLASSES.fingerprint_columns,
    )
    records = result.records.copy()
    records.loc[records["zoho_id"] == "1001", "fingerprint"] = None  # NOT NULL: the row write fails
    with pytest.raises(sa.exc.IntegrityError):
        warehouse.apply(
            CLASSES, DiffResult(records=records), RunInfo(tenant_id="school_a", module="classes"), Cursor()
        )
    _assert_same_snapshot(_snapshot(warehouse), before)


def test_a_large_batch_goes_through_the_bulk_path(warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch):
    calls: list[str] = []
    for name in ("_copy", "_executemany"):
        original = getattr(sql, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(sql, name, spy)
    n = 5000
    first = _sync(warehouse, _classes(*({} for _ in range(n))))
    assert first.counts()["NEW"] == n
    bulk = "_copy" if warehouse.engine.dialect.name == "postgresql" else "_executemany"
    assert calls == [bulk, bulk]  # the rows and the per-record log, in one call each
    assert warehouse.count("school_a", CLASSES) == n
    assert len(warehouse.results("school_a", "classes")) == n
    state = warehouse.load_state("school_a", CLASSES)
    assert len(state) == n and state["deleted"].dtype == bool and not state["deleted"].any()
    assert {str(state[c].dtype) for c in ("zoho_id", "fingerprint", "class_short_name")} == {"object"}

    again = _sync(warehouse, _classes(*({} for _ in range(n))))
    assert again.counts()["UNCHANGED"] == n
    before = warehouse.read_table("school_a", CLASSES).set_index("zoho_id")
    changed = _sync(warehouse, _classes(*({"Term": "T2", "English_Teaching": False} for _ in range(n))))
    assert changed.counts()["UPDATED"] == n
    after = warehouse.read_table("school_a", CLASSES).set_index("zoho_id")
    assert after["term"].eq("T2").all() and not after["english_teaching"].any()
    assert after["first_seen_at"].equals(before["first_seen_at"])
    assert len(changed.changes) == 2 * n
    assert warehouse.accounted_for("school_a", CLASSES) == {"live": n, "pending": 0, "invalid": 0}
