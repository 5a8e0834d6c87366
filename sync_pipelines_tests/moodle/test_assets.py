"""The main job and its dry run, through Dagster, against both simulators."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sync_pipelines.definitions import build_definitions
from sync_pipelines.moodle.resource import MoodleResource
from sync_pipelines.sandbox import MoodleSimulator, ZohoSimulator, generate_school
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.resource import ZohoCRMResource

MOODLE_TOKEN = "m00dle-token-value"


@pytest.fixture
def sims(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ZohoSimulator, MoodleSimulator]]:
    for name, value in {
        "T_ID": "cid",
        "T_SECRET": "csecret-value",
        "T_REFRESH": "crefresh-value",
        "T_MOODLE": MOODLE_TOKEN,
    }.items():
        monkeypatch.setenv(name, value)
    with (
        ZohoSimulator(
            data=generate_school(5, scale=0.1), clients={"cid": ("csecret-value", "crefresh-value")}
        ) as z,
        MoodleSimulator(tokens={MOODLE_TOKEN: None}) as m,
    ):
        yield z, m


def _job(
    tmp_path: Path,
    zoho: ZohoSimulator,
    moodle: MoodleSimulator,
    url: str,
    name: str,
) -> dg.JobDefinition:
    tenants = tmp_path / "tenants.yaml"
    tenant = {
        "id": "school_a",
        "zoho": {
            "accounts_url": zoho.accounts_url,
            "client_id_env": "T_ID",
            "client_secret_env": "T_SECRET",
            "refresh_token_env": "T_REFRESH",
        },
        "moodle": {"base_url": moodle.base_url, "token_env": "T_MOODLE"},
    }
    tenants.write_text(yaml.safe_dump({"tenants": [tenant]}))
    resources = {
        "zoho": ZohoCRMResource(tenants_file=str(tenants)),
        "moodle": MoodleResource(tenants_file=str(tenants)),
        "warehouse": WarehouseResource(url=url),
    }
    return build_definitions(resources).resolve_job_def(name)


def test_dry_run_then_full_sync_through_dagster(
    sims: tuple[ZohoSimulator, MoodleSimulator], warehouse_url: str, tmp_path: Path
):
    zoho, moodle = sims
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, ["school_a"])
        dry = _job(tmp_path, zoho, moodle, warehouse_url, "full_sync_dry_run").execute_in_process(
            instance=instance, partition_key="school_a"
        )
        assert dry.success
        assert [u for u in moodle.users() if u.get("idnumber")] == []
        assert not [r for r in zoho.requests if r.method in ("POST", "PUT") and "/crm/" in r.path]
        users = next(
            e.materialization
            for e in dry.get_asset_materialization_events()
            if e.asset_key.path == ["moodle", "users"]
        )
        assert users.metadata["dry_run"].value is True
        assert users.metadata["planned_create"].value > 0
        assert "| key | action | detail |" in users.metadata["writes"].value

        real = _job(tmp_path, zoho, moodle, warehouse_url, "full_sync").execute_in_process(
            instance=instance, partition_key="school_a"
        )
        assert real.success
        logs = "\n".join(str(e) for e in instance.all_logs(real.run_id))
    store = Warehouse(warehouse_url)
    assert (
        len(store.moodle.id_map("school_a", "user"))
        == len([u for u in moodle.users() if u.get("idnumber")])
        > 0
    )
    assert any(r.get("Student_Moodle_ID") for r in zoho.records("BTEC_Students"))
    for secret in (MOODLE_TOKEN, "csecret-value", "crefresh-value"):
        assert secret not in logs
    store.dispose()
