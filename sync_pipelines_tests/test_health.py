"""The per-school health view (``ops/school_health``), its overdue alerts, and Dagster's freshness
policies on the core assets."""

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from sync_pipelines import health
from sync_pipelines.definitions import defs
from sync_pipelines.health import (
    HEALTH_ASSET,
    evaluate_health,
    freshness_policy,
    school_health_sensor,
)
from sync_pipelines.tenants import read_tenants, tenant_partitions
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.warehouse.schema import sync_runs
from sync_pipelines.zoho.modules import MODULES
from sync_pipelines_tests import test_alerts as alerting
from sync_pipelines_tests.test_alerts import World, _Log, sync, tenants_doc

#: The alert tests' fixtures: a real instance, the webhook stand-ins and the SMTP server.
instance, mailbox, world = alerting.instance, alerting.mailbox, alerting.world

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


@dg.asset(key=["moodle", "grades"], partitions_def=tenant_partitions)
def grades() -> None:
    """Stands in for the Moodle grades asset: a materialization per school is all the view reads."""


def synced(
    store: Warehouse, tenant: str, minutes_ago: float, *, outcome: str = "success", error=None
) -> None:
    """Every module of ``tenant`` synced ``minutes_ago`` (one ``sync_runs`` row each)."""
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    with store.engine.begin() as conn:
        conn.execute(
            sync_runs.insert(),
            [
                {
                    "sync_run_id": str(uuid.uuid4()),
                    "tenant_id": tenant,
                    "module": m.name,
                    "started_at": at,
                    "finished_at": at,
                    "outcome": outcome,
                    "mode": "incremental",
                    "error": error,
                }
                for m in MODULES
            ],
        )


def _value(metadata: dict, key: str):
    return metadata[key].value


@pytest.fixture
def store(tmp_path: Path):
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}")
    yield warehouse
    warehouse.dispose()


def test_the_health_view_marks_only_the_failing_school_and_alerts_an_overdue_one_once(
    world: World, instance: dg.DagsterInstance, store: Warehouse, monkeypatch: pytest.MonkeyPatch
):
    doc = tenants_doc(world.mailbox.port)
    doc["tenants"][1]["moodle"] = {"base_url": "http://127.0.0.1:9", "token_env": "B_MOODLE"}
    doc["tenants"].append(
        {"id": "school_e", "zoho": doc["tenants"][2]["zoho"], "moodle": doc["tenants"][1]["moodle"]}
    )
    Path(world.tmp / "tenants.yaml").write_text(yaml.safe_dump(doc))
    instance.add_dynamic_partitions(tenant_partitions.name, ["school_d", "school_e"])
    monkeypatch.setenv("SYNC_ALERT_SLACK_WEBHOOK_URL", world.hooks["default"].url("/services/TD/BD/default"))

    synced(store, "school_a", 10)
    sync(instance, "school_a", fail=True)  # a's last run failed, though its data is 10 minutes old
    synced(store, "school_b", 5)
    sync(instance, "school_b", fail=False)
    dg.materialize([grades], partition_key="school_b", instance=instance)
    synced(store, "school_c", 240)  # four hours: past the 3 h fail window
    dead = world.drop / "school_c" / "zoho" / "dead"
    dead.mkdir(parents=True)
    (dead / "20260101T000000000000Z-e1.json").write_text("{}")
    (dead / "20260101T000000000000Z-e1.json.reason.json").write_text("{}")
    synced(store, "school_d", 90)  # not in the tenants file: a partition all the same
    dg.materialize([grades], partition_key="school_d", instance=instance)
    synced(store, "school_e", 5)  # a Moodle school whose grades never came back

    resources = {"warehouse": WarehouseResource(url=str(store.engine.url))}

    def tick(cursor: str | None):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            return school_health_sensor.evaluate_tick(context)

    data = tick(None)
    [observation] = data.asset_events
    assert observation.asset_key == HEALTH_ASSET
    meta = observation.metadata
    states = {
        t: _value(meta, f"{t}: state") for t in ("school_a", "school_b", "school_c", "school_d", "school_e")
    }
    assert states == {
        "school_a": "failing",
        "school_b": "healthy",
        "school_c": "stale",
        "school_d": "late",
        "school_e": "new",
    }
    assert [_value(meta, f"school_{x}: healthy") for x in "abcde"] == [0, 1, 0, 0, 0]
    assert [_value(meta, k) for k in ("failing", "stale", "late", "new", "healthy", "unknown")] == [
        1,
        1,
        1,
        1,
        1,
        0,
    ]
    assert _value(meta, "school_c: dead_letters") == 1 and _value(meta, "school_a: dead_letters") == 0
    assert 4.5 < _value(meta, "school_b: minutes_since_success") < 8
    assert 239 < _value(meta, "school_c: minutes_since_success") < 245
    assert "school_e: minutes_since_success" not in meta
    table = _value(meta, "schools")
    [row_a] = [line for line in table.splitlines() if line.startswith("| school_a |")]
    assert "| failing |" in row_a and "zoho__students: RuntimeError: tenant school_a: Zoho answered" in row_a
    [row_e] = [line for line in table.splitlines() if line.startswith("| school_e |")]
    assert "moodle/grades (never)" in row_e
    assert (
        observation.description == "1 of 5 schools healthy; school_a failing, school_c stale, school_d late"
    )

    # Only the overdue school is alerted, once, to its target (c has none of its own: the default).
    assert world.posts() == {"a": 0, "b": 0, "default": 1}
    text = world.hooks["default"].texts[0]
    assert text.startswith("*school_c has not synced for 4 h 0") and "Dead letters pending: 1" in text
    data = tick(data.cursor)
    assert world.posts() == {"a": 0, "b": 0, "default": 1}

    synced(store, "school_c", 0)  # c syncs again: told once that it recovered
    for _ in range(2):
        data = tick(data.cursor)
    assert world.posts() == {"a": 0, "b": 0, "default": 2}
    assert world.hooks["default"].texts[1].startswith("*school_c is syncing again*")


def test_a_school_that_cannot_be_read_is_unknown_and_the_view_still_stands(
    world: World, instance: dg.DagsterInstance, store: Warehouse, monkeypatch: pytest.MonkeyPatch
):
    synced(store, "school_a", 5)
    synced(store, "school_b", 500)
    synced(store, "school_c", 5)
    real = health._dead_letters

    def broken_disk(root: Path, tenant_id: str) -> int:
        if tenant_id == "school_b":
            raise OSError("Input/output error")
        return real(root, tenant_id)

    monkeypatch.setattr(health, "_dead_letters", broken_disk)
    observation, cursor, rows = evaluate_health(instance, store, read_tenants(), None, log=_Log())
    by_id = {r.tenant_id: r for r in rows}
    assert {t: r.state for t, r in by_id.items()} == {
        "school_a": "healthy",
        "school_b": "unknown",
        "school_c": "healthy",
    }
    assert by_id["school_b"].note == "not assessed: OSError: Input/output error"
    assert observation.metadata["unknown"].value == 1
    assert world.posts() == {"a": 0, "b": 0, "default": 0}  # unknown is neither overdue nor recovered

    # No warehouse at all: every school unknown, with the reason, and still an observation.
    observation, _, rows = evaluate_health(
        instance,
        None,
        read_tenants(),
        cursor,
        log=_Log(),
        store_error="warehouse unavailable: OperationalError",
    )
    assert {r.state for r in rows} == {"unknown"}
    assert {r.note for r in rows if r.tenant_id != "school_b"} == {"warehouse unavailable: OperationalError"}
    assert observation.metadata["unknown"].value == 3


def test_the_core_assets_carry_dagsters_freshness_policy_and_the_sensors_are_wired(
    monkeypatch: pytest.MonkeyPatch,
):
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    fresh = {k for k, s in specs.items() if s.freshness_policy is not None}
    assert fresh == {f"zoho/{m.name}" for m in MODULES} | {"moodle/grades"}
    policy = specs["zoho/students"].freshness_policy
    assert isinstance(policy, dg._core.definitions.freshness.TimeWindowFreshnessPolicy)
    assert policy.fail_window.to_timedelta() == timedelta(hours=3)
    assert policy.warn_window.to_timedelta() == timedelta(hours=1)
    # The health view is observed, never materialised by a sync job.
    assert specs["ops/school_health"].group_name == "ops"
    assert HEALTH_ASSET not in defs.resolve_job_def("full_sync").asset_layer.executable_asset_keys
    sensors = {s.name: s for s in defs.sensors}
    assert {"run_failure_alerts", "dead_letter_alerts", "school_health"} <= set(sensors)
    assert isinstance(sensors["run_failure_alerts"], dg.RunStatusSensorDefinition)
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in sensors.values())

    monkeypatch.setenv(health.WARN_HOURS_ENV, "2")
    monkeypatch.setenv(health.FAIL_HOURS_ENV, "6")
    assert freshness_policy().fail_window.to_timedelta() == timedelta(hours=6)
    monkeypatch.setenv(health.WARN_HOURS_ENV, "8")  # a warning after the failure: the defaults
    assert health.freshness_windows() == (timedelta(hours=1), timedelta(hours=3))


def test_the_warehouse_is_read_in_two_grouped_queries_whatever_its_length(warehouse: Warehouse):
    """On SQLite and on PostgreSQL (the conftest's ``warehouse``)."""
    store = warehouse
    for minutes in (300, 200, 100):
        synced(store, "school_a", minutes)
    synced(store, "school_a", 50, outcome="failed", error="tenant school_a: HTTP 401 INVALID_TOKEN\nmore")
    synced(store, "school_b", 20, outcome="failed", error="old failure")
    synced(store, "school_b", 10)
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    runs = health.warehouse_runs(store)
    selects = [s for s in statements if "sync_runs" in s]
    assert len(selects) == 2  # the grouped query, then the failing modules' latest errors
    assert "GROUP BY" in selects[0].upper()
    latest = runs.success[("school_a", "students")]
    assert abs((datetime.now(UTC) - latest) - timedelta(minutes=100)) < timedelta(minutes=1)
    assert runs.failure[("school_a", "students")][1] == "tenant school_a: HTTP 401 INVALID_TOKEN"
    assert ("school_b", "students") in runs.success and ("school_b", "students") not in runs.failure
