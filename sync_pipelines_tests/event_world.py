"""A school, its receiver and its sensor in one process, for the event-delivery tests: the receiver
(uvicorn, real HTTP) writes drop files, :meth:`World.drain` ticks the sensor and runs what it asks
for in a real Dagster instance, as the daemon would, against the Zoho and Moodle simulators."""

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml
from dagster._core.storage.tags import RUN_KEY_TAG
from starlette.applications import Starlette

from sync_pipelines.definitions import build_definitions
from sync_pipelines.moodle.resource import MoodleResource
from sync_pipelines.sandbox import MoodleSimulator, ZohoSimulator, generate_school
from sync_pipelines.sandbox.faults import FaultPlan
from sync_pipelines.sensors import Tick, evaluate, instance_lookup
from sync_pipelines.tenants import read_tenants, tenant_partitions
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.webhooks.app import create_app
from sync_pipelines.webhooks.drop import pending_files
from sync_pipelines.webhooks.server import build_server
from sync_pipelines.webhooks.signing import sign
from sync_pipelines.zoho.resource import ZohoCRMResource

TENANT = "school_a"
BROKEN = "school_broken"
ZOHO_TOKEN = "zoho-bearer-a-3f9c"
MOODLE_KEY = "moodle-hmac-a-77d1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app: Starlette) -> Iterator[str]:
    """The receiver served as in production (:func:`~sync_pipelines.webhooks.server.build_server`:
    uvicorn with the header deadline and limits) on a free loopback port, in a thread: its URL."""
    port = _free_port()
    server = build_server(app, "127.0.0.1", port, log_level="warning")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the receiver did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass
class World:
    zoho: ZohoSimulator
    moodle: MoodleSimulator
    tenants_file: Path
    drop: Path
    base: str
    instance: dg.DagsterInstance
    job: dg.JobDefinition
    store: Warehouse
    cursors: dict[str, str | None] = field(default_factory=lambda: {"zoho": None, "moodle": None})
    ticks: list[Tick] = field(default_factory=list)
    runs: list[dg.ExecuteInProcessResult] = field(default_factory=list)
    ledger_start: int = 0

    def push(self, entity: str, records: list[dict]) -> requests.Response:
        return requests.post(
            f"{self.base}/v1/sync/{entity}",
            json={"data": records},
            headers={"Authorization": f"Bearer {ZOHO_TOKEN}", "X-Tenant-ID": TENANT},
            timeout=10,
        )

    def notify(
        self, module_api: str, event_type: str, record_id: str, tenant: str = TENANT
    ) -> requests.Response:
        """Zoho's documented workflow webhook: no event id, no time, a bearer token."""
        return requests.post(
            f"{self.base}/v1/webhooks/zoho/{tenant}",
            json={"module": module_api, "event_type": event_type, "record_id": record_id},
            headers={"Authorization": f"Bearer {ZOHO_TOKEN}"},
            timeout=10,
        )

    def moodle_event(self, body: dict) -> requests.Response:
        raw = json.dumps(body).encode()
        headers = {**sign(MOODLE_KEY, raw, int(time.time())), "Content-Type": "application/json"}
        return requests.post(
            f"{self.base}/v1/webhooks/moodle/{TENANT}", data=raw, headers=headers, timeout=10
        )

    def drain(self, source: str = "zoho", *, max_ticks: int = 12, max_attempts: int = 4) -> None:
        """Tick the sensor and run what it asks for (as the daemon would), until nothing waits."""
        tenant_set = read_tenants(self.tenants_file)
        for _ in range(max_ticks):
            tick = evaluate(
                source,
                self.drop,
                self.cursors[source],
                tenant_set.tenants,
                instance_lookup(self.instance),
                broken=tenant_set.broken,
                service_users=self.store.moodle.service_users(),
                retry_base=0.0,
                max_attempts=max_attempts,
            )
            self.ticks.append(tick)
            self.cursors[source] = tick.cursor
            for request in tick.requests:
                self.runs.append(
                    self.job.execute_in_process(
                        instance=self.instance,
                        partition_key=request.partition_key,
                        run_config=request.run_config,
                        asset_selection=request.asset_selection,
                        tags={RUN_KEY_TAG: request.run_key, **request.tags},
                        raise_on_error=False,
                    )
                )
            live = [f for f in pending_files(self.drop, source) if f.parent.parent.name == TENANT]
            if not tick.requests and not live:
                return
        raise AssertionError(f"{source} events still pending after {max_ticks} ticks")


@contextlib.contextmanager
def event_world(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    warehouse_url: str,
    *,
    seed: int = 5,
    scale: float = 0.1,
    faults: FaultPlan | None = None,
    retries: int = 1,
) -> Iterator[World]:
    """A school synced once, its receiver listening; ``faults`` start after the first sync, and
    each HTTP call is retried ``retries`` times (0: every fault fails its run)."""
    env = {
        "E_ID": "cid",
        "E_SECRET": "csecret",
        "E_REFRESH": "crefresh",
        "E_MOODLE": "mtoken",
        "E_ZOHO_HOOK": ZOHO_TOKEN,
        "E_MOODLE_HOOK": MOODLE_KEY,
        "SYNC_DROP_DIR": str(tmp_path / "drop"),
        "SYNC_TOKEN_DIR": str(tmp_path / "tokens"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with (
        ZohoSimulator(
            data=generate_school(seed, scale=scale), clients={"cid": ("csecret", "crefresh")}
        ) as zoho,
        MoodleSimulator(tokens={"mtoken": None}) as moodle,
    ):
        zoho_cfg = {
            "accounts_url": zoho.accounts_url,
            "api_domain": zoho.api_domain,
            "client_id_env": "E_ID",
            "client_secret_env": "E_SECRET",
            "refresh_token_env": "E_REFRESH",
            "webhook_secret_env": "E_ZOHO_HOOK",
        }
        tenants_file = tmp_path / "tenants.yaml"
        good = {
            "id": TENANT,
            "zoho": zoho_cfg,
            "moodle": {
                "base_url": moodle.base_url,
                "token_env": "E_MOODLE",
                "webhook_secret_env": "E_MOODLE_HOOK",
            },
        }
        broken = {"id": BROKEN, "zoho": {**zoho_cfg, "data_centre": "mars", "accounts_url": None}}
        tenants_file.write_text(yaml.safe_dump({"tenants": [good, broken]}))
        resources = {
            # A fault plan's token refusal is one answer, not Zoho's 10-minute block: wait 1 s.
            "zoho": ZohoCRMResource(
                tenants_file=str(tenants_file),
                max_retries=retries,
                backoff_base_seconds=0.01,
                token_throttle_seconds=1.0,
            ),
            "moodle": MoodleResource(tenants_file=str(tenants_file), max_retries=retries),
            "warehouse": WarehouseResource(url=warehouse_url),
        }
        job = build_definitions(resources).resolve_job_def("full_sync")
        store = Warehouse(warehouse_url)
        # The receiver starts although one school's entry is broken.
        app = create_app(tenants_file=tenants_file, drop_root=tmp_path / "drop")
        # In-memory run and event storage: nothing here reads the instance from another process.
        with running(app) as base, dg.DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions(tenant_partitions.name, [TENANT, BROKEN])
            first = job.execute_in_process(instance=instance, partition_key=TENANT, raise_on_error=False)
            assert first.success
            zoho.set_faults(faults)
            moodle.set_faults(faults)
            yield World(zoho, moodle, tenants_file, tmp_path / "drop", base, instance, job, store)
        store.dispose()
