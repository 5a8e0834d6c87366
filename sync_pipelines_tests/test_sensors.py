import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sync_pipelines.definitions import reconcile
from sync_pipelines.schedules import RECONCILE_CONFIG, incremental_sync, nightly_reconciliation
from sync_pipelines.sensors import evaluate, moodle_webhook_sensor, zoho_webhook_sensor
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.webhooks.drop import pending_files, write_event
from sync_pipelines.zoho.modules import MODULES

ZOHO = {
    "accounts_url": "http://127.0.0.1:9",
    "client_id_env": "A",
    "client_secret_env": "B",
    "refresh_token_env": "C",
}


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    drop = tmp_path / "drop"
    drop.mkdir()
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        yaml.safe_dump({"tenants": [{"id": "school_a", "zoho": ZOHO}, {"id": "school_b", "zoho": ZOHO}]})
    )
    monkeypatch.setenv("SYNC_DROP_DIR", str(drop))
    monkeypatch.setenv("SYNC_TENANTS_FILE", str(tenants))
    return drop


def _zoho(root: Path, tenant: str, module: str, event_type: str, *ids: str) -> Path:
    payload = {"module": module, "event_type": event_type, "record_ids": list(ids)}
    _, path = write_event(root, tenant, "zoho", "zoho.notification", payload)
    assert path is not None
    return path


def _by_hand(root: Path, payload: dict) -> Path:
    """A well-formed drop file the receiver would never have written (e.g. from an older version)."""
    path = root / "school_a" / "zoho" / "20260101T000000000001Z-byhand.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "event_id": "byhand",
        "tenant_id": "school_a",
        "source": "zoho",
        "kind": "zoho.notification",
        "received_at": "2026-01-01T00:00:00+00:00",
        "payload": payload,
    }
    path.write_text(json.dumps(doc))
    return path


def _graded(root: Path, tenant: str, course: int, item: int, *, total: bool = False) -> Path:
    payload = {
        "eventname": "\\core\\event\\user_graded",
        "objectid": item * 10,
        "relateduserid": 7,
        "courseid": course,
        "userid": 2,
        "contextinstanceid": None,
        "other": {"itemid": item},
        "timecreated": 1_790_000_000,
        "grade_item": {
            "id": item,
            "itemtype": "course" if total else "mod",
            "itemmodule": None if total else "assign",
            "grademax": 100.0,
            "is_course_total": total,
        },
    }
    _, path = write_event(root, tenant, "moodle", "moodle.event", payload)
    assert path is not None
    return path


def test_many_files_become_one_run_per_tenant_with_only_the_affected_assets(root: Path):
    _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    _zoho(root, "school_a", "BTEC_Students", "created", "222")
    _zoho(root, "school_a", "BTEC_Enrollments", "deleted", "333")
    _zoho(root, "school_b", "BTEC_Teachers", "updated", "444")
    requests, cursor, tenants = evaluate("zoho", root, None, {"school_a", "school_b"})
    assert tenants == ["school_a", "school_b"]
    by_tenant = {r.partition_key: r for r in requests}
    a = by_tenant["school_a"]
    assert {k.to_user_string() for k in a.asset_selection} == {
        "zoho/students",
        "moodle/users",
        "zoho/sync_bookkeeping",
        "zoho/enrolments",
        "moodle/enrolments",
    }
    assert a.run_config["ops"] == {
        "zoho__students": {"config": {"record_ids": ["111", "222"]}},
        "zoho__enrolments": {"config": {"deleted_ids": ["333"]}},
    }
    assert {k.to_user_string() for k in by_tenant["school_b"].asset_selection} == {
        "zoho/teachers",
        "moodle/users",
        "zoho/sync_bookkeeping",
    }
    assert len(json.loads(cursor)["submitted"]) == 4


def test_a_replayed_tick_asks_for_the_same_runs_and_files_move_only_after_commit(root: Path):
    first = _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    requests, cursor, _ = evaluate("zoho", root, None, {"school_a"})
    replay, replay_cursor, _ = evaluate("zoho", root, None, {"school_a"})  # the cursor was never stored
    assert [r.run_key for r in replay] == [r.run_key for r in requests]
    assert replay_cursor == cursor
    assert first.exists()

    later = _zoho(root, "school_a", "BTEC_Students", "updated", "999")
    after, cursor2, _ = evaluate("zoho", root, cursor, {"school_a"})  # the cursor naming `first` was stored
    assert not first.exists() and (first.parent / "processed" / first.name).exists()
    assert [r.run_config["ops"]["zoho__students"]["config"]["record_ids"] for r in after] == [["999"]]
    assert later.exists()
    done, _, _ = evaluate("zoho", root, cursor2, {"school_a"})
    assert done == [] and pending_files(root, "zoho") == []


@pytest.mark.parametrize(
    ("writer", "reason"),
    [
        (lambda root: root.joinpath("school_a", "zoho", "20260101T000000000000Z-bad.json"), "json"),
        (lambda root: _zoho(root, "school_zz", "BTEC_Students", "updated", "1"), "not in the tenants file"),
        (
            lambda root: _by_hand(root, {"module": "Leads", "event_type": "updated", "record_ids": ["1"]}),
            "leads",
        ),
    ],
)
def test_unusable_files_are_quarantined_with_their_reason_and_the_rest_still_runs(
    root: Path, writer, reason: str
):
    good = _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    bad = writer(root)
    if not bad.exists():
        bad.parent.mkdir(parents=True, exist_ok=True)
        bad.write_text('{"event_id": "x", "trunc')
    requests, _, _ = evaluate("zoho", root, None, {"school_a"})
    assert [r.partition_key for r in requests] == ["school_a"]
    quarantined = bad.parent / "quarantine" / bad.name
    assert quarantined.exists() and not bad.exists()
    assert reason in (bad.parent / "quarantine" / f"{bad.name}.reason.txt").read_text().lower()
    assert good.exists()


def test_grading_events_read_only_their_course_and_the_course_total_adds_nothing(root: Path):
    _graded(root, "school_a", 42, 7)
    _graded(root, "school_a", 42, 8, total=True)
    requests, _, _ = evaluate("moodle", root, None, {"school_a"})
    (request,) = requests
    assert {k.to_user_string() for k in request.asset_selection} == {"moodle/grades", "zoho/grade_writeback"}
    assert request.run_config["ops"] == {"moodle__grades": {"config": {"course_ids": [42]}}}


def test_sensor_definitions_tick_and_add_a_new_tenants_partition(root: Path):
    _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    with dg.instance_for_test() as instance:
        result = zoho_webhook_sensor(dg.build_sensor_context(instance=instance))
        assert [r.partition_key for r in result.run_requests] == ["school_a"]
        assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [["school_a"]]
        idle = moodle_webhook_sensor(dg.build_sensor_context(instance=instance))
        assert idle.run_requests == []


def test_schedules_run_every_tenant_and_the_nightly_one_reads_everything():
    when = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as context,
    ):
        instance.add_dynamic_partitions(tenant_partitions.name, ["school_a", "school_b"])
        runs = incremental_sync(context)
        assert [r.partition_key for r in runs] == ["school_a", "school_b"]
        assert len({r.run_key for r in runs}) == 2
        nightly = nightly_reconciliation(context)
        assert [r.partition_key for r in nightly] == ["school_a", "school_b"]
    assert nightly_reconciliation.job_name == "reconcile"
    assert reconcile.config == RECONCILE_CONFIG  # the nightly job reads every module in full
    assert {op["config"]["full_refresh"] for op in RECONCILE_CONFIG["ops"].values()} == {True}
    assert set(RECONCILE_CONFIG["ops"]) == {f"zoho__{m.name}" for m in MODULES}
