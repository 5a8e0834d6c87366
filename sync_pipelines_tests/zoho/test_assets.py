"""The Dagster assets: the main job for a tenant partition, through the real resources."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sync_pipelines.definitions import zoho_full_sync
from sync_pipelines.sandbox import ZohoSimulator, generate_school
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.assets import zoho_assets
from sync_pipelines.zoho.modules import MODULES, module
from sync_pipelines.zoho.resource import ZohoCRMResource

SECRET = "s3cret-client-secret-value"
REFRESH = "r3fresh-token-value"


@pytest.fixture
def sim() -> Iterator[ZohoSimulator]:
    s = ZohoSimulator(data=generate_school(7, scale=0.2), clients={"cid": (SECRET, REFRESH)})
    s.start()
    yield s
    s.stop()


def _tenants_file(tmp_path: Path, sim: ZohoSimulator, *tenants: str) -> str:
    path = tmp_path / "tenants.yaml"
    doc = {
        "tenants": [
            {
                "id": t,
                "zoho": {
                    "accounts_url": sim.accounts_url,
                    "client_id_env": "T_ZOHO_ID",
                    "client_secret_env": "T_ZOHO_SECRET",
                    "refresh_token_env": "T_ZOHO_REFRESH",
                },
            }
            for t in tenants
        ]
    }
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def _materialize(
    instance: dg.DagsterInstance, tenants_file: str, url: str, tenant: str
) -> dg.ExecuteInProcessResult:
    job = dg.Definitions(
        assets=zoho_assets,
        jobs=[zoho_full_sync],
        resources={
            "zoho": ZohoCRMResource(tenants_file=tenants_file),
            "warehouse": WarehouseResource(url=url),
        },
    ).resolve_job_def("zoho_full_sync")
    return job.execute_in_process(instance=instance, partition_key=tenant, raise_on_error=False)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_ZOHO_ID", "cid")
    monkeypatch.setenv("T_ZOHO_SECRET", SECRET)
    monkeypatch.setenv("T_ZOHO_REFRESH", REFRESH)


def test_the_main_job_syncs_a_tenant_and_reports_in_metadata(
    sim: ZohoSimulator, warehouse_url: str, tmp_path: Path, env: None
):
    tenants_file = _tenants_file(tmp_path, sim, "school_a")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, ["school_a"])
        result = _materialize(instance, tenants_file, warehouse_url, "school_a")
        assert result.success
        mats = {e.asset_key.path[-1]: e.materialization for e in result.get_asset_materialization_events()}
    store = Warehouse(warehouse_url)
    for spec in MODULES:
        meta = mats[spec.name].metadata
        assert meta["dagster/row_count"].value == store.count("school_a", spec)
        # every record is in the mirror, the dirty ones too
        assert meta["new"].value + meta["invalid"].value == store.count("school_a", spec)
        assert meta["api_calls"].value >= 1
        assert mats[spec.name].partition == "school_a"
    # Every call the simulator answered is accounted for in some module's metadata.
    assert sum(mats[s.name].metadata["api_calls"].value for s in MODULES) == len(sim.requests)
    students = mats["students"].metadata
    assert "| zoho_id | change | findings |" in students["invalid_records"].value
    assert students["invalid"].value > 0
    store.dispose()


def test_secrets_never_reach_logs_or_metadata_and_a_bad_secret_fails_clearly(
    sim: ZohoSimulator, warehouse_url: str, tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
):
    tenants_file = _tenants_file(tmp_path, sim, "school_a")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, ["school_a"])
        ok = _materialize(instance, tenants_file, warehouse_url, "school_a")
        monkeypatch.setenv("T_ZOHO_SECRET", "a-wrong-secret-value")
        bad = _materialize(instance, tenants_file, warehouse_url, "school_a")
        logs = [str(e) for r in (ok, bad) for e in instance.all_logs(r.run_id)]
    assert ok.success and not bad.success
    text = "\n".join(logs)
    for secret in (SECRET, REFRESH, "a-wrong-secret-value"):
        assert secret not in text
    failure = next(e for e in bad.all_events if e.is_step_failure)
    assert "school_a" in failure.step_failure_data.error.message
    assert "invalid_client" in failure.step_failure_data.error.message


def test_partitions_keep_tenants_apart(sim: ZohoSimulator, tmp_path: Path, env: None):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    tenants_file = _tenants_file(tmp_path, sim, "school_a", "school_b")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, ["school_a", "school_b"])
        assert _materialize(instance, tenants_file, url, "school_a").success
    store = Warehouse(url)
    assert store.count("school_a", module("students")) > 0
    assert store.count("school_b", module("students")) == 0
    store.dispose()
