"""The daily change report: its numbers for a known sequence of runs, on SQLite and PostgreSQL,
its CSV, the asset (once a day) and its schedule."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from sync_pipelines import report as report_module
from sync_pipelines.diff import diff
from sync_pipelines.report import (
    COLUMNS,
    REPORT_KEY,
    daily_change_report,
    daily_changes,
    daily_changes_report,
    day_window,
    last_reads,
    source_lag_seconds,
    synced_before,
    write_csv,
)
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse import Cursor, RunInfo, Warehouse
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.canonical import canonicalise, frame_from_records
from sync_pipelines.zoho.modules import MODULES, module
from sync_pipelines.zoho.sync import aux_columns

CLASSES = module("classes")
DAY = date(2026, 11, 2)
OP = "reports__daily_changes"


def _class(zoho_id: str, **fields: object) -> dict:
    return {
        "id": zoho_id,
        "Class_Name": f"Class {zoho_id}",
        "Class_Short_Name": f"C-{zoho_id}",
        "Start_Date": "2026-09-01",
        "End_Date": "2027-01-15",
        "Term": "T1",
        "Modified_Time": "2026-11-01T10:00:00+00:00",
        **fields,
    }


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def _sync(
    store: Warehouse,
    at: datetime,
    rows: list[dict],
    *,
    tenant: str = "school_a",
    deleted: tuple[str, ...] = (),
    calls: int = 1,
) -> None:
    """One module sync of classes, started at ``at``, applied as :func:`sync_module` applies one."""
    run = RunInfo(tenant_id=tenant, module="classes", started_at=at, api_calls=calls, api_credits=calls)
    incoming = canonicalise(CLASSES, frame_from_records(CLASSES, rows))
    result = diff(
        incoming,
        store.load_state(tenant, CLASSES),
        fingerprint_columns=CLASSES.fingerprint_columns,
        aux_columns=aux_columns(CLASSES),
        deleted_ids=deleted,
        natural_key=CLASSES.natural_key,
    )
    store.apply(CLASSES, result, run, Cursor())


def _failed(store: Warehouse, at: datetime, calls: int = 1) -> None:
    run = RunInfo(tenant_id="school_a", module="classes", started_at=at, api_calls=calls)
    store.record_failure(run, "ZohoError: 500 INTERNAL_ERROR")


NO_NAME = {"Class_Name": ""}
BACKWARDS = {"End_Date": "2026-01-15"}  # before Start_Date


def _a_known_day(store: Warehouse) -> None:
    """DAY, in UTC: three classes arrive (one invalid), one is renamed twice, one is deleted, a
    sync fails, another invalid one arrives; the day after, one more. Another school syncs too."""
    a, b = _class("1000"), _class("1001")
    bad = _class("1002", **NO_NAME, **BACKWARDS)
    _sync(store, _at(DAY, 8), [a, b, bad], calls=3)  # NEW 1000 1001, INVALID 1002
    worse = _class("1003", **NO_NAME, **BACKWARDS, Class_Short_Name="")
    renamed = {**a, "Class_Name": "Networking"}
    _sync(store, _at(DAY, 12), [renamed, b, bad, worse], calls=2)  # UPDATED 1000, INVALID 1002 1003
    _failed(store, _at(DAY, 13), calls=4)
    _sync(store, _at(DAY, 20), [{**a, "Class_Name": "Networking II"}], deleted=("1001",), calls=2)
    _sync(store, _at(DAY, 23, 30), [_class("1005")])  # 02:30 the next day in Istanbul
    _sync(store, _at(DAY + timedelta(days=1), 0, 30), [_class("1004")])
    _sync(store, _at(DAY, 9), [_class("2000"), _class("2001")], tenant="school_b", calls=7)
    _sync(store, _at(DAY - timedelta(days=1), 23, 59), [_class("0999")])


def _row(report, name: str) -> dict:
    return report.table.set_index("module").loc[name].to_dict()


def test_the_report_counts_each_record_once_per_status_for_the_day(warehouse: Warehouse):
    _a_known_day(warehouse)
    report = daily_changes(warehouse, "school_a", DAY, tz="UTC")
    assert list(report.table.columns) == list(COLUMNS)
    assert report.table["module"].tolist() == [m.name for m in MODULES]
    classes = _row(report, "classes")
    assert {
        k: classes[k] for k in ("runs", "failed_runs", "new", "updated", "deleted", "invalid", "api_calls")
    } == {
        "runs": 5,  # 08:00, 12:00, 13:00 (failed), 20:00, 23:30
        "failed_runs": 1,
        "new": 3,  # 1000, 1001, 1005
        "updated": 1,  # 1000, renamed twice
        "deleted": 1,  # 1001
        "invalid": 2,  # 1002 (seen twice) and 1003
        "api_calls": 3 + 2 + 4 + 2 + 1,
    }
    assert classes["top_invalid_reasons"] == (
        "Class_Name: required (2); End_Date: end_before_start (2); Class_Short_Name: required (1)"
    )
    assert report.reasons.to_dict("records") == [
        {"module": "classes", "reason": "Class_Name: required", "records": 2},
        {"module": "classes", "reason": "End_Date: end_before_start", "records": 2},
        {"module": "classes", "reason": "Class_Short_Name: required", "records": 1},
    ]
    students = _row(report, "students")
    assert (students["runs"], students["new"], students["top_invalid_reasons"]) == (0, 0, "")
    assert report.totals() == {
        "runs": 5,
        "failed_runs": 1,
        "new": 3,
        "updated": 1,
        "deleted": 1,
        "invalid": 2,
        "api_calls": 12,
    }

    # Another school's day is its own.
    other = _row(daily_changes(warehouse, "school_b", DAY, tz="UTC"), "classes")
    assert (other["runs"], other["new"], other["api_calls"]) == (1, 2, 7)
    # The next day, and a day in another time zone (Istanbul is UTC+3: 23:30 UTC is the next day).
    assert (
        _row(daily_changes(warehouse, "school_a", DAY + timedelta(days=1), tz="UTC"), "classes")["new"] == 1
    )
    local = _row(daily_changes(warehouse, "school_a", DAY, tz="Europe/Istanbul"), "classes")
    assert (local["runs"], local["new"]) == (5, 3)  # 23:59 the day before is 02:59 of DAY there
    assert daily_changes(warehouse, "school_a", DAY, tz="Europe/Istanbul").start == _at(DAY, 0) - timedelta(
        hours=3
    )
    # Only the top reasons, most records first.
    assert daily_changes(warehouse, "school_a", DAY, tz="UTC", top=1).reasons["reason"].tolist() == [
        "Class_Name: required"
    ]


def test_the_csv_holds_one_row_per_module(warehouse: Warehouse, tmp_path: Path):
    _a_known_day(warehouse)
    path = write_csv(daily_changes(warehouse, "school_a", DAY, tz="UTC"), tmp_path)
    assert path == tmp_path / "school_a" / "2026-11-02.csv"
    lines = path.read_text().splitlines()
    assert (
        lines[0]
        == "tenant_id,day,module,runs,failed_runs,new,updated,deleted,invalid,api_calls,top_invalid_reasons"
    )
    assert len(lines) == 1 + len(MODULES)
    assert (
        "school_a,2026-11-02,classes,5,1,3,1,1,2,12,"
        "Class_Name: required (2); End_Date: end_before_start (2); Class_Short_Name: required (1)"
    ) in lines
    assert "school_a,2026-11-02,students,0,0,0,0,0,0,0," in lines
    assert not list(path.parent.glob(".*"))  # written aside, then renamed


def test_the_sync_log_says_how_fresh_the_data_is(warehouse: Warehouse):
    _a_known_day(warehouse)
    assert last_reads(warehouse, "school_a", ["classes", "students"]) == {
        "classes": _at(DAY + timedelta(days=1), 0, 30)
    }
    later = _at(DAY + timedelta(days=1), 1, 30)
    assert source_lag_seconds(warehouse, "school_a", ["classes"], later) == 3600.0
    assert source_lag_seconds(warehouse, "school_a", ["classes", "students"], later) is None
    assert synced_before(warehouse, "school_a", _at(DAY, 0))
    assert not synced_before(warehouse, "school_a", _at(DAY - timedelta(days=1), 23, 59))
    assert not synced_before(warehouse, "school_c", later)


def test_day_windows_follow_the_time_zone():
    assert day_window(DAY, "UTC") == (_at(DAY, 0), _at(DAY + timedelta(days=1), 0))
    start, end = day_window(date(2026, 3, 29), "Europe/Berlin")  # the clocks go forward: 23 hours
    assert (end - start) == timedelta(hours=23)


# --- the asset -------------------------------------------------------------------------------------


def _materialize(instance: dg.DagsterInstance, url: str, day: str = "") -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [daily_changes_report],
        instance=instance,
        partition_key="school_a",
        resources={"warehouse": WarehouseResource(url=url)},
        run_config={"ops": {OP: {"config": {"day": day}}}},
    )


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SYNC_LOCAL_DIR", str(tmp_path / "local"))
    monkeypatch.setattr(report_module, "TIMEZONE", "UTC")
    return tmp_path / "local"


def test_the_asset_shows_the_day_as_numbers_a_table_and_a_csv(
    warehouse: Warehouse, warehouse_url: str, local: Path
):
    _a_known_day(warehouse)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, ["school_a"])
        result = _materialize(instance, warehouse_url, DAY.isoformat())
        [mat] = [e.materialization for e in result.get_asset_materialization_events()]
    meta = mat.metadata
    assert mat.asset_key == REPORT_KEY and mat.partition == "school_a"
    for key, expected in {
        "new": 3,
        "updated": 1,
        "deleted": 1,
        "invalid": 2,
        "runs": 5,
        "failed_runs": 1,
        "api_calls": 12,
        "dagster/row_count": len(MODULES),
        "classes.new": 3,
        "classes.invalid": 2,
        "classes.runs": 5,
        "students.new": 0,
    }.items():
        assert isinstance(meta[key], dg.IntMetadataValue), key
        assert meta[key].value == expected, key
    assert meta["day"].value == "2026-11-02" and meta["complete"].value is True
    path = Path(meta["csv"].value)
    assert isinstance(meta["csv"], dg.PathMetadataValue)
    assert path == local / "reports" / "school_a" / "2026-11-02.csv"
    assert "school_a,2026-11-02,classes,5,1,3,1,1,2,12," in path.read_text()
    schema = meta["dagster/column_schema"].value
    assert [c.name for c in schema.columns] == list(COLUMNS)
    assert "| classes | 5 | 1 | 3 | 1 | 1 | 2 | 12 | Class_Name: required (2);" in meta["changes"].value
    assert "| total | 5 | 1 | 3 | 1 | 1 | 2 | 12 |" in meta["changes"].value
    assert "| classes | End_Date: end_before_start | 2 |" in meta["top_invalid_reasons"].value


def test_without_a_day_the_asset_reports_yesterday_once(
    warehouse: Warehouse, warehouse_url: str, local: Path
):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, ["school_a"])
        # The school's first sync is today: nothing to report for yesterday.
        today = datetime.now(UTC).date()
        _sync(warehouse, datetime.now(UTC) - timedelta(seconds=5), [_class("1000")])
        assert _materialize(instance, warehouse_url).get_asset_materialization_events() == []

        yesterday = today - timedelta(days=1)
        _sync(warehouse, _at(yesterday, 12), [_class("1001"), _class("1002")])
        first = _materialize(instance, warehouse_url).get_asset_materialization_events()
        assert [e.materialization.metadata["day"].value for e in first] == [yesterday.isoformat()]
        assert first[0].materialization.metadata["new"].value == 2
        assert first[0].materialization.metadata["complete"].value is True
        # A second run the same day (the next 15-minute sync, the schedule) makes none.
        again = _materialize(instance, warehouse_url)
        assert again.success and again.get_asset_materialization_events() == []
        # Asked for a day, it reports it whenever asked; today's report is not complete yet.
        so_far = _materialize(instance, warehouse_url, "today").get_asset_materialization_events()
        meta = so_far[0].materialization.metadata
        assert (meta["day"].value, meta["complete"].value, meta["new"].value) == (today.isoformat(), False, 1)
        assert (local / "reports" / "school_a" / f"{today.isoformat()}.csv").exists()
        assert _materialize(instance, warehouse_url).get_asset_materialization_events() == []


def test_a_bad_day_fails_with_what_is_wanted(warehouse_url: str, local: Path):
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, ["school_a"])
        result = dg.materialize(
            [daily_changes_report],
            instance=instance,
            partition_key="school_a",
            resources={"warehouse": WarehouseResource(url=warehouse_url)},
            run_config={"ops": {OP: {"config": {"day": "2nd of November"}}}},
            raise_on_error=False,
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "YYYY-MM-DD, today or yesterday" in failure.step_failure_data.error.message


def test_the_schedule_asks_every_school_once_a_day():
    when = datetime(2026, 11, 3, 0, 30, tzinfo=UTC)
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as context,
    ):
        instance.add_dynamic_partitions(tenant_partitions.name, ["school_b", "school_a"])
        requests = daily_change_report(context)
    assert [(r.partition_key, r.run_key) for r in requests] == [
        ("school_a", f"report:school_a:{when.isoformat()}"),
        ("school_b", f"report:school_b:{when.isoformat()}"),
    ]
    assert all(r.tags["sync/trigger"] == "report" and not r.run_config for r in requests)
    assert daily_change_report.cron_schedule == "30 0 * * *"
    assert daily_change_report.job_name == "daily_report"


def test_the_report_is_in_the_definitions_with_its_job_and_schedule():
    from sync_pipelines.definitions import defs

    spec = next(s for s in defs.resolve_all_asset_specs() if s.key == REPORT_KEY)
    assert spec.group_name == "reports"
    assert spec.partitions_def == tenant_partitions
    assert {d.asset_key for d in spec.deps} == {dg.AssetKey(["zoho", m.name]) for m in MODULES}
    assert "dagster/column_schema" in spec.metadata
    job = defs.resolve_job_def("daily_report")
    assert set(job.asset_layer.executable_asset_keys) == {REPORT_KEY}
    assert defs.resolve_schedule_def("daily_change_report").job_name == "daily_report"
