"""Schedules: an incremental sync of every tenant, and a nightly reconciliation.

Both run the main job once per tenant (partition). Cron expressions come from the environment
(``SYNC_INCREMENTAL_CRON``, default every 15 minutes; ``SYNC_RECONCILE_CRON``, default 02:00)
and the time zone from ``SYNC_SCHEDULE_TIMEZONE`` (default UTC). Runs use the in-process executor
(the Definitions default), so a run that finds nothing changed costs a few seconds.
"""

import os

import dagster as dg

from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.zoho.assets import zoho_ops_config

INCREMENTAL_CRON = os.environ.get("SYNC_INCREMENTAL_CRON", "*/15 * * * *")
RECONCILE_CRON = os.environ.get("SYNC_RECONCILE_CRON", "0 2 * * *")
TIMEZONE = os.environ.get("SYNC_SCHEDULE_TIMEZONE", "UTC")

#: The nightly run re-reads every module in full: edits to modules without Modified_Time, and
#: deletions purged from Zoho's recycle bin, are caught here.
#: Every module read in full; the org's field metadata (``/settings/modules``, ``/settings/fields``)
#: read again by the run's first Zoho step (the rest find it an hour fresh).
RECONCILE_CONFIG = zoho_ops_config(full_refresh=True, org_metadata_max_age_hours=1.0)


def per_tenant(
    context: dg.ScheduleEvaluationContext, label: str, run_config: dict | None = None
) -> list[dg.RunRequest]:
    """One run request per tenant partition, keyed by the tick: a replayed tick runs nothing twice."""
    tenants = context.instance.get_dynamic_partitions(tenant_partitions.name)
    stamp = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "now"
    return [
        dg.RunRequest(
            run_key=f"{label}:{tenant}:{stamp}",
            partition_key=tenant,
            run_config=run_config or {},
            tags={"sync/trigger": label},
        )
        for tenant in sorted(tenants)
    ]


MAIN_JOB = "full_sync"


@dg.schedule(
    name="incremental_sync",
    job_name=MAIN_JOB,
    cron_schedule=INCREMENTAL_CRON,
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Incremental sync of every tenant: Zoho changes since the last run, Moodle, write-back.",
)
def incremental_sync(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    return per_tenant(context, "incremental")


@dg.schedule(
    name="nightly_reconciliation",
    job_name="reconcile",
    cron_schedule=RECONCILE_CRON,
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Full re-read of every Zoho module per tenant (modules without Modified_Time, purged deletions), "
    "then warehouse counts against Zoho's.",
)
def nightly_reconciliation(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    return per_tenant(context, "reconcile")  # the job's own config reads every module in full


schedules = [incremental_sync, nightly_reconciliation]
