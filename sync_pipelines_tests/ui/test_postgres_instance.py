"""The production instance, ``deploy/dagster.postgres.yaml``, on the machine's PostgreSQL server.

A fresh database and a ``DAGSTER_HOME`` holding a copy of the file, with the connection values in
the environment as the file documents: the instance opens through ``DagsterInstance.get()``, keeps
the tenant partition, the run and its materializations in PostgreSQL, and queues runs at most one
per school.
"""

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from sync_pipelines.sandbox import ZohoSimulator, generate_school
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.assets import zoho_assets
from sync_pipelines.zoho.resource import ZohoCRMResource
from sync_pipelines_tests.conftest import postgres_database

INSTANCE_YAML = Path(__file__).resolve().parents[2] / "deploy" / "dagster.postgres.yaml"
TENANT = "school_pg"
SECRET = "pg-test-client-secret"
REFRESH = "pg-test-refresh-token"
#: A few Zoho modules: two without upstream, one that waits for one of them.
ASSETS = ["zoho/programmes", "zoho/teachers", "zoho/units"]
PER_TENANT_LIMIT = {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}

pytestmark = pytest.mark.postgres


@pytest.fixture
def database_url() -> Iterator[str]:
    """An empty PostgreSQL database of its own, dropped afterwards (the suite's helper)."""
    yield from postgres_database()


@pytest.fixture
def instance(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    """The instance a production host would open: DAGSTER_HOME with the yaml, values from the env."""
    url = sa.make_url(database_url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(INSTANCE_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USER", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    monkeypatch.setenv("DAGSTER_PG_DB", str(url.database))
    monkeypatch.setenv("DAGSTER_COMPUTE_LOG_DIR", str(tmp_path / "compute_logs"))
    monkeypatch.setenv("DAGSTER_MAX_CONCURRENT_RUNS", "7")
    with dg.DagsterInstance.get() as opened:
        yield opened


@pytest.fixture
def sim() -> Iterator[ZohoSimulator]:
    server = ZohoSimulator(data=generate_school(11, scale=0.1), clients={"pg-cid": (SECRET, REFRESH)})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _tenants_file(path: Path, sim: ZohoSimulator, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PG_T_ZOHO_ID", "pg-cid")
    monkeypatch.setenv("PG_T_ZOHO_SECRET", SECRET)
    monkeypatch.setenv("PG_T_ZOHO_REFRESH", REFRESH)
    zoho = {
        "accounts_url": sim.accounts_url,
        "client_id_env": "PG_T_ZOHO_ID",
        "client_secret_env": "PG_T_ZOHO_SECRET",
        "refresh_token_env": "PG_T_ZOHO_REFRESH",
    }
    path.write_text(yaml.safe_dump({"tenants": [{"id": TENANT, "zoho": zoho}]}))
    return str(path)


def test_the_production_yaml_loads_a_queued_coordinator_with_one_run_per_tenant(
    instance: dg.DagsterInstance,
) -> None:
    coordinator = instance.run_coordinator
    assert isinstance(coordinator, dg.QueuedRunCoordinator)
    queue = coordinator.get_run_queue_config()
    assert (
        queue.max_concurrent_runs == 7
    )  # several schools side by side, as many as DAGSTER_MAX_CONCURRENT_RUNS
    assert list(queue.tag_concurrency_limits) == [PER_TENANT_LIMIT]
    assert instance.get_concurrency_config().run_queue_config == queue

    assert not instance.telemetry_enabled
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"


def test_runs_and_materializations_of_a_tenant_are_stored_in_postgres(
    instance: dg.DagsterInstance,
    database_url: str,
    sim: ZohoSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenants_file = _tenants_file(tmp_path / "tenants.yaml", sim, monkeypatch)
    instance.add_dynamic_partitions(tenant_partitions.name, [TENANT])

    result = dg.materialize(
        zoho_assets,
        selection=ASSETS,
        instance=instance,
        partition_key=TENANT,
        resources={
            "zoho": ZohoCRMResource(tenants_file=tenants_file),
            "warehouse": WarehouseResource(url=f"sqlite:///{tmp_path / 'warehouse.db'}"),
        },
    )
    assert result.success

    # Read back through the instance.
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == TENANT
    assert instance.get_dynamic_partitions(tenant_partitions.name) == [TENANT]
    for key in ASSETS:
        asset_key = dg.AssetKey.from_user_string(key)
        event = instance.get_latest_materialization_event(asset_key)
        assert event is not None and event.run_id == result.run_id
        assert event.asset_materialization is not None
        assert event.asset_materialization.partition == TENANT
        assert event.asset_materialization.metadata["dagster/row_count"].value > 0
        assert instance.get_materialized_partitions(asset_key) == {TENANT}

    # And in the database itself, not in SQLite files under DAGSTER_HOME.
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            status = conn.execute(
                sa.text("SELECT status FROM runs WHERE run_id = :id"), {"id": result.run_id}
            ).scalar_one()
            materialized = conn.execute(
                sa.text(
                    "SELECT asset_key, partition FROM event_logs"
                    " WHERE run_id = :id AND dagster_event_type = 'ASSET_MATERIALIZATION'"
                ),
                {"id": result.run_id},
            ).all()
            partitions = conn.execute(
                sa.text("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = :name"),
                {"name": tenant_partitions.name},
            ).scalars()
            assert status == "SUCCESS"
            assert sorted(dg.AssetKey.from_db_string(k).to_user_string() for k, _ in materialized) == sorted(
                ASSETS
            )
            assert {p for _, p in materialized} == {TENANT}
            assert list(partitions) == [TENANT]
    finally:
        engine.dispose()
    home = Path(instance.root_directory)
    assert not list(home.rglob("*.db")), "the production instance must not fall back to SQLite"
