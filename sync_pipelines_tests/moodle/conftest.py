"""The Moodle tests' world: both simulators over HTTP, the demo school synced into the warehouse."""

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import pytest

from sync_pipelines.moodle.client import MoodleClient
from sync_pipelines.moodle.entities import ENTITIES
from sync_pipelines.moodle.reconcile import PushReport, reconcile
from sync_pipelines.sandbox import MoodleSimulator, ZohoSimulator, generate_school
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.zoho.client import ZohoClient
from sync_pipelines.zoho.modules import MODULES
from sync_pipelines.zoho.sync import sync_module

TENANT = "school_a"
TOKEN = "moodle-test-token"


@cache
def _school() -> dict[str, list[dict]]:
    return generate_school(11, scale=0.1)


@dataclass
class World:
    zoho_sim: ZohoSimulator
    moodle_sim: MoodleSimulator
    store: Warehouse

    def zoho(self) -> ZohoClient:
        return ZohoClient(
            tenant_id=TENANT,
            accounts_url=self.zoho_sim.accounts_url,
            client_id="c",
            client_secret="s",
            refresh_token="r",
            sleep=lambda _s: None,
        )

    def moodle(self, **kwargs: object) -> MoodleClient:
        return MoodleClient(
            tenant_id=TENANT, base_url=self.moodle_sim.base_url, token=TOKEN, sleep=lambda _s: None, **kwargs
        )

    def sync_zoho(self) -> None:
        client = self.zoho()
        for spec in MODULES:
            sync_module(
                tenant_id=TENANT, spec=spec, client=client, warehouse=self.store, deleted_check_minutes=0
            )

    def provision(self, **kwargs: object) -> dict[str, PushReport]:
        m = self.moodle()
        return {spec.name: reconcile(spec, m, self.store, TENANT, **kwargs) for spec in ENTITIES}


@pytest.fixture
def world(warehouse: Warehouse) -> Iterator[World]:
    zs = ZohoSimulator(
        data=copy.deepcopy(_school()), clients={"c": ("s", "r")}, refresh_limit_per_minute=None
    )
    ms = MoodleSimulator(tokens={TOKEN: None})
    zs.start()
    ms.start()
    w = World(zs, ms, warehouse)
    w.sync_zoho()
    yield w
    zs.stop()
    ms.stop()
