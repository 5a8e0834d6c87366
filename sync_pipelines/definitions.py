"""The one Definitions object: assets, jobs, sensors and resources."""

import os

import dagster as dg

from sync_pipelines.settings import WAREHOUSE_URL_ENV, default_warehouse_url, local_dir
from sync_pipelines.tenants import TENANTS_FILE_ENV, default_tenants_file, tenants_sensor
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.assets import zoho_assets
from sync_pipelines.zoho.resource import ZohoCRMResource

#: The main job: every Zoho module of one tenant (a partition), in dependency order.
zoho_full_sync = dg.define_asset_job(
    name="zoho_full_sync",
    selection=dg.AssetSelection.groups("zoho"),
    description="Sync every Zoho CRM module of one school into the warehouse.",
)


def _warehouse() -> WarehouseResource:
    # The URL may carry a password: when it comes from the environment, pass it as an EnvVar so
    # Dagster resolves it at run time and never shows it in the UI or run config.
    if os.environ.get(WAREHOUSE_URL_ENV):
        return WarehouseResource(url=dg.EnvVar(WAREHOUSE_URL_ENV))
    local_dir().mkdir(parents=True, exist_ok=True)
    return WarehouseResource(url=default_warehouse_url())


def _tenants_file() -> str | dg.EnvVar:
    return (
        dg.EnvVar(TENANTS_FILE_ENV)
        if os.environ.get(TENANTS_FILE_ENV)
        else str(default_tenants_file().resolve())
    )


defs = dg.Definitions(
    assets=zoho_assets,
    # Sync steps wait on HTTP, not CPU, and a subprocess per step costs about 2 s of start-up; in
    # one process they also share the tenant's OAuth token (Zoho throttles token refreshes).
    executor=dg.in_process_executor,
    jobs=[zoho_full_sync],
    sensors=[tenants_sensor],
    resources={
        "zoho": ZohoCRMResource(tenants_file=_tenants_file()),
        "warehouse": _warehouse(),
    },
)
