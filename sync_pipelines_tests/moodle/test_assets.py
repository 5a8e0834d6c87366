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


def test_a_role_that_cannot_see_users_by_idnumber_stops_before_the_first_write_and_says_what_to_add(
    sims: tuple[ZohoSimulator, MoodleSimulator], warehouse_url: str, tmp_path: Path
):
    zoho, moodle = sims
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, ["school_a"])
        job = _job(tmp_path, zoho, moodle, warehouse_url, "full_sync")
        first = job.execute_in_process(instance=instance, partition_key="school_a")
        assert first.success  # a full role: the preflight passes, accounts are made
        made = len([u for u in moodle.users() if u.get("idnumber")])
        store = Warehouse(warehouse_url)
        with store.engine.begin() as conn:  # the preflight passed today: ask again
            conn.exec_driver_sql("UPDATE moodle_site SET preflight_at = NULL")
        moodle.set_missing_capabilities({"moodle/user:viewalldetails"})
        zoho.insert(
            "BTEC_Students",
            {
                "First_Name": "New",
                "Last_Name": "Comer",
                "Academic_Email": "new.comer@school.example",
                "Status": "Active",
            },
        )
        second = job.execute_in_process(instance=instance, partition_key="school_a", raise_on_error=False)
    assert not second.success
    failures = [e for e in second.all_events if e.is_step_failure]
    assert {e.step_key for e in failures} >= {"moodle__users"}
    message = next(e for e in failures if e.step_key == "moodle__users").step_failure_data.error.message
    assert "moodle/user:viewalldetails" in message and "nothing was written" in message
    assert len([u for u in moodle.users() if u.get("idnumber")]) == made  # no account created
    runs = store.moodle.push_results("school_a").query("action == 'run'")
    assert "moodle/user:viewalldetails" in runs["message"].iloc[-1]
    _, findings = store.moodle.preflight("school_a")
    assert [f["capability"] for f in findings if not f["ok"]] == ["moodle/user:viewalldetails"]
    store.dispose()
