"""The one Definitions object: assets, jobs, sensors and resources."""

import os

import dagster as dg

from sync_pipelines.alerts import dead_letter_alerts, run_failure_alerts
from sync_pipelines.checks import nightly_checks, warehouse_checks
from sync_pipelines.health import school_health_asset, school_health_sensor, with_freshness_policies
from sync_pipelines.moodle.assets import PUSH_STEPS, moodle_assets
from sync_pipelines.moodle.resource import MoodleResource
from sync_pipelines.report import daily_change_report, daily_changes_report, daily_report
from sync_pipelines.schedules import RECONCILE_CONFIG, schedules
from sync_pipelines.sensors import dead_letters_asset, moodle_webhook_sensor, zoho_webhook_sensor
from sync_pipelines.settings import default_warehouse_url, local_dir, warehouse_url_env
from sync_pipelines.tenants import TENANTS_FILE_ENV, default_tenants_file, tenants_sensor
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.writeback import WRITEBACK_STEPS, writeback_assets
from sync_pipelines.zoho.assets import zoho_assets
from sync_pipelines.zoho.resource import ZohoCRMResource

_ZOHO_READS = dg.AssetSelection.assets(*zoho_assets)

#: Every Zoho module of one tenant (a partition) into the warehouse, in dependency order.
zoho_full_sync = dg.define_asset_job(
    name="zoho_full_sync",
    selection=_ZOHO_READS,
    description="Sync every Zoho CRM module of one school into the warehouse.",
)

#: The daily change report runs on its own schedule (``daily_change_report``), not every 15 minutes.
_REPORTS = dg.AssetSelection.groups("reports")
#: Everything but the checks that cost API calls (they run with the nightly reconciliation).
_SYNC = dg.AssetSelection.all() - dg.AssetSelection.checks(*nightly_checks) - _REPORTS

#: The main job: Zoho → warehouse → Moodle → grades and bookkeeping back to Zoho, for one school.
full_sync = dg.define_asset_job(
    name="full_sync",
    selection=_SYNC,
    description="Full sync of one school: Zoho into the warehouse, provision Moodle, write grades and Moodle ids back.",
)

#: The same, reporting every Moodle and Zoho write it would make, and making none.
full_sync_dry_run = dg.define_asset_job(
    name="full_sync_dry_run",
    selection=_SYNC,
    config={"ops": {step: {"config": {"dry_run": True}} for step in [*PUSH_STEPS, *WRITEBACK_STEPS]}},
    description="Dry run of full_sync: Moodle and Zoho are read, never written; the writes are listed in metadata.",
)


#: The nightly reconciliation: the main job reading every module in full, then each module's Zoho
#: record count compared with the warehouse (one API call per module, so not every 15 minutes).
reconcile = dg.define_asset_job(
    name="reconcile",
    selection=dg.AssetSelection.all() - _REPORTS,
    config=RECONCILE_CONFIG,
    description="Full re-read of every Zoho module, Moodle and write-back, then warehouse counts against Zoho's.",
)


def _warehouse() -> WarehouseResource:
    # The URL may carry a password: when it comes from the environment, pass it as an EnvVar so
    # Dagster resolves it at run time and never shows it in the UI or run config.
    env_name = warehouse_url_env()
    if env_name:
        return WarehouseResource(url=dg.EnvVar(env_name))
    local_dir().mkdir(parents=True, exist_ok=True)
    return WarehouseResource(url=default_warehouse_url())


def _tenants_file() -> str | dg.EnvVar:
    return (
        dg.EnvVar(TENANTS_FILE_ENV)
        if os.environ.get(TENANTS_FILE_ENV)
        else str(default_tenants_file().resolve())
    )


def default_resources() -> dict[str, dg.ConfigurableResource]:
    """Resources from the environment: the tenants file and the warehouse URL."""
    return {
        "zoho": ZohoCRMResource(tenants_file=_tenants_file()),
        "moodle": MoodleResource(tenants_file=_tenants_file()),
        "warehouse": _warehouse(),
    }


def build_definitions(resources: dict[str, dg.ConfigurableResource] | None = None) -> dg.Definitions:
    """The project's Definitions, with ``resources`` in place of the defaults (tests, scripts)."""
    return dg.Definitions(
        assets=[
            *with_freshness_policies([*zoho_assets, *moodle_assets]),
            *writeback_assets,
            daily_changes_report,
            dead_letters_asset,
            school_health_asset,
        ],
        # Sync steps wait on HTTP, not CPU, and a subprocess per step costs about 2 s of start-up; in
        # one process they also share the tenant's OAuth token (Zoho throttles token refreshes).
        executor=dg.in_process_executor,
        asset_checks=[*warehouse_checks, *nightly_checks],
        jobs=[full_sync, full_sync_dry_run, zoho_full_sync, reconcile, daily_report],
        sensors=[
            tenants_sensor,
            zoho_webhook_sensor,
            moodle_webhook_sensor,
            run_failure_alerts,
            dead_letter_alerts,
            school_health_sensor,
        ],
        schedules=[*schedules, daily_change_report],
        resources=resources if resources is not None else default_resources(),
    )


defs = build_definitions()
