"""No secret in any log line, event, metadata value, run config or stored error of a full sync."""

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from sync_pipelines.definitions import build_definitions
from sync_pipelines.moodle.resource import MoodleResource
from sync_pipelines.sandbox import MoodleSimulator, ZohoSimulator, generate_school
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.resource import ZohoCRMResource

SECRETS = {
    "S_ZOHO_ID": "zoho-client-id-4c1d",
    "S_ZOHO_SECRET": "zoho-client-secret-9f8e7d",
    "S_ZOHO_REFRESH": "1000.refresh-token-a1b2c3",
    "S_MOODLE": "moodle-ws-token-5e6f7a",
}
SECRET_VALUES = [v for k, v in SECRETS.items() if k != "S_ZOHO_ID"]  # a client id is not a secret


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[dg.Definitions, str]]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    with (
        ZohoSimulator(
            data=generate_school(4, scale=0.1),
            clients={SECRETS["S_ZOHO_ID"]: (SECRETS["S_ZOHO_SECRET"], SECRETS["S_ZOHO_REFRESH"])},
        ) as zoho,
        MoodleSimulator(tokens={SECRETS["S_MOODLE"]: None}) as moodle,
    ):
        tenants = tmp_path / "tenants.yaml"
        tenant = {
            "id": "school_a",
            "zoho": {
                "accounts_url": zoho.accounts_url,
                "client_id_env": "S_ZOHO_ID",
                "client_secret_env": "S_ZOHO_SECRET",
                "refresh_token_env": "S_ZOHO_REFRESH",
            },
            "moodle": {"base_url": moodle.base_url, "token_env": "S_MOODLE"},
        }
        tenants.write_text(yaml.safe_dump({"tenants": [tenant]}))
        url = f"sqlite:///{tmp_path / 'w.db'}"
        resources = {
            "zoho": ZohoCRMResource(tenants_file=str(tenants)),
            "moodle": MoodleResource(tenants_file=str(tenants)),
            "warehouse": WarehouseResource(url=url),
        }
        yield build_definitions(resources), url


def _texts(instance: dg.DagsterInstance, run_ids: list[str]) -> Iterator[str]:
    for run_id in run_ids:
        run = instance.get_run_by_id(run_id)
        yield json.dumps(run.run_config, default=str)
        yield json.dumps(dict(run.tags))
        for record in instance.all_logs(run_id):
            yield str(record)
            event = record.dagster_event
            if event and event.is_step_materialization:
                for key, value in event.step_materialization_data.materialization.metadata.items():
                    yield f"{key}={value.value}"
            if event and event.event_type_value == "ASSET_CHECK_EVALUATION":
                yield str(event.event_specific_data)


def test_no_secret_anywhere_in_a_full_sync_and_a_failing_one(
    setup: tuple[dg.Definitions, str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    defs, url = setup
    job = defs.resolve_job_def("full_sync")
    caplog.set_level(logging.DEBUG)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, ["school_a"])
        ok = job.execute_in_process(instance=instance, partition_key="school_a")
        assert ok.success
        monkeypatch.setenv("S_MOODLE", "moodle-ws-token-WRONG-0000")  # Moodle refuses it: invalidtoken
        bad = job.execute_in_process(instance=instance, partition_key="school_a", raise_on_error=False)
        assert not bad.success
        failure = next(e for e in bad.all_events if e.is_step_failure)
        assert "invalidtoken" in failure.step_failure_data.error.message
        texts = list(_texts(instance, [ok.run_id, bad.run_id]))
    texts += [r.getMessage() for r in caplog.records]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        texts += [
            str(row) for row in conn.exec_driver_sql("SELECT error FROM sync_runs WHERE error IS NOT NULL")
        ]
        texts += [
            str(row) for row in conn.exec_driver_sql("SELECT errorcode, message FROM moodle_push_results")
        ]
    engine.dispose()
    joined = "\n".join(texts)
    assert len(texts) > 500  # the grep saw the runs, not an empty list
    for secret in [*SECRET_VALUES, "moodle-ws-token-WRONG-0000"]:
        assert secret not in joined, f"a secret leaked: {secret[:6]}…"
    out = Path(".local/reliability")
    out.mkdir(parents=True, exist_ok=True)
    (out / "secrets.json").write_text(
        json.dumps({"texts_searched": len(texts), "secrets_searched": 4, "leaks": 0})
    )
