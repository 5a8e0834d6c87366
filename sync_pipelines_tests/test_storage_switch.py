"""One setting, ``SYNC_DATABASE_URL``, moves Dagster's storage and the warehouse to PostgreSQL, from
make too; ``make demo`` on a used warehouse resets only the demo school's rows."""

import os
import subprocess
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from sync_pipelines import demo
from sync_pipelines.diff import diff
from sync_pipelines.warehouse import Cursor, RunInfo, Warehouse
from sync_pipelines.zoho.canonical import canonicalise, frame_from_records
from sync_pipelines.zoho.modules import module

from .conftest import postgres_database

ROOT = Path(__file__).resolve().parents[1]
PROGRAMMES = module("programmes")
_STORAGE_ENV = ("DAGSTER_HOME", "WAREHOUSE_URL", "SYNC_DATABASE_URL", "SYNC_DAGSTER_PG_URL")


@pytest.fixture
def database() -> str:
    """A fresh PostgreSQL database, as a user writes its URL (plain ``postgresql://``)."""
    gen = postgres_database()
    url = sa.make_url(next(gen)).set(drivername="postgresql").render_as_string(hide_password=False)
    yield url
    next(gen, None)


def _make_where(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in _STORAGE_ENV}
    out = subprocess.run(
        ["make", "-s", "where", *(f"{k}={v}" for k, v in env.items())],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def test_make_keeps_everything_embedded_by_default():
    where = _make_where()
    assert f"dagster instance: {ROOT} (storage: sqlite)" in where
    assert f"warehouse: sqlite:///{ROOT / '.local' / 'warehouse.db'}" in where


def test_one_make_setting_moves_the_instance_and_the_warehouse_to_postgresql():
    where = _make_where(SYNC_DATABASE_URL="postgresql://sync:s3cret@db.internal:5432/school")
    assert f"dagster instance: {ROOT / 'instances' / 'postgres'} (storage: postgres)" in where
    assert "warehouse: postgresql://sync:***@db.internal:5432/school" in where
    assert "s3cret" not in where


@pytest.mark.postgres
def test_the_postgres_instance_keeps_runs_and_partitions_in_that_database(database, monkeypatch):
    monkeypatch.setenv("SYNC_DATABASE_URL", database)
    monkeypatch.setenv("SYNC_DAGSTER_PG_URL", database.replace("postgresql://", "postgresql+psycopg2://"))
    monkeypatch.setenv("DAGSTER_HOME", str(ROOT / "instances" / "postgres"))

    @dg.asset(partitions_def=dg.DynamicPartitionsDefinition(name="tenants"))
    def probe() -> int:
        return 1

    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("tenants", ["school_a"])
        assert dg.materialize([probe], instance=instance, partition_key="school_a").success
    engine = sa.create_engine(database.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("select count(*) from runs")).scalar() == 1
        assert conn.execute(sa.text("select partition from dynamic_partitions")).scalars().all() == [
            "school_a"
        ]
    engine.dispose()


def _sync_one_programme(store: Warehouse, tenant: str) -> None:
    rows = [{"id": "9001", "Name": f"Programme of {tenant}", "Modified_Time": "2026-11-01T10:00:00+03:00"}]
    incoming = canonicalise(PROGRAMMES, frame_from_records(PROGRAMMES, rows))
    result = diff(
        incoming, store.load_state(tenant, PROGRAMMES), fingerprint_columns=PROGRAMMES.fingerprint_columns
    )
    store.apply(PROGRAMMES, result, RunInfo(tenant_id=tenant, module=PROGRAMMES.name), Cursor(max_id="9001"))


@pytest.mark.postgres
def test_the_demo_on_a_used_warehouse_resets_only_its_own_school(database, monkeypatch):
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    monkeypatch.setenv("SYNC_DATABASE_URL", database)
    used = Warehouse(database)
    _sync_one_programme(used, demo.TENANT)  # an earlier demo
    _sync_one_programme(used, "real_school")  # a school this warehouse syncs

    store, said = demo.fresh_demo_warehouse()

    # its programme, the run, the per-record log and the read position
    assert said.startswith(f"reset the 4 rows of tenant '{demo.TENANT}' an earlier demo left (in 4 tables)")
    assert "no other tenant's rows are touched" in said
    assert store.count(demo.TENANT, PROGRAMMES) == 0 and store.runs(demo.TENANT).empty
    kept = store.read_table("real_school", PROGRAMMES)
    assert isinstance(kept, pd.DataFrame) and kept["zoho_id"].tolist() == ["9001"]
    assert demo.fresh_demo_warehouse()[1].startswith(f"it held no rows of tenant '{demo.TENANT}'")
    store.dispose()
    used.dispose()
