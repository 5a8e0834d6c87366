"""Asset checks: what should hold after every sync, per tenant.

None is blocking: a warning never stops a sync that is still correct. Severity says how bad a
failure is: ERROR for data that will mislead (duplicate accounts), WARN for what a data team
should look at (orphans, stale modules, out-of-range grades, counts that disagree).

The checks that read only the warehouse run with every sync. ``warehouse_matches_zoho`` costs one
Zoho API call per module, so it runs with the nightly reconciliation (job ``reconcile``), right
after every module was read in full.
"""

import os
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd

from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.assets import md_table
from sync_pipelines.zoho.modules import MODULES, ModuleSpec, module
from sync_pipelines.zoho.resource import ZohoCRMResource

FRESHNESS_HOURS = float(os.environ.get("SYNC_FRESHNESS_HOURS", "2"))
WARN = dg.AssetCheckSeverity.WARN
ERROR = dg.AssetCheckSeverity.ERROR


def _key(spec: ModuleSpec) -> dg.AssetKey:
    return dg.AssetKey(["zoho", spec.name])


@dg.asset_check(
    asset=dg.AssetKey(["zoho", "enrolments"]),
    partitions_def=tenant_partitions,
    description="Every live enrolment points at a live student and a live class.",
)
def enrolments_point_at_live_students_and_classes(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    store, tenant = warehouse.get(), context.partition_key
    e = store.read_table(tenant, module("enrolments"))
    students = store.known_ids(tenant, module("students"))
    classes = store.known_ids(tenant, module("classes"))
    orphans = e[~e["student_id"].isin(students) | ~e["class_id"].isin(classes)]
    return dg.AssetCheckResult(
        passed=orphans.empty,
        severity=WARN,
        metadata={
            "orphans": len(orphans),
            "sample": dg.MetadataValue.md(md_table(orphans[["zoho_id", "student_id", "class_id"]])),
        },
    )


def _unique_emails(name: str) -> dg.AssetChecksDefinition:
    spec = module(name)

    @dg.asset_check(
        asset=_key(spec),
        name="academic_emails_are_unique",
        partitions_def=tenant_partitions,
        description=f"No two live {name} share an academic e-mail (case-insensitive): one would take the other's Moodle account.",
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        rows = warehouse.get().read_table(context.partition_key, spec)
        email = rows["academic_email"].str.lower()
        dups = rows[email.notna() & email.duplicated(keep=False)]
        return dg.AssetCheckResult(
            passed=dups.empty,
            severity=ERROR,
            metadata={
                "duplicates": len(dups),
                "sample": dg.MetadataValue.md(md_table(dups[["zoho_id", "academic_email"]])),
            },
        )

    return _check


@dg.asset_check(
    asset=dg.AssetKey(["moodle", "grades"]),
    partitions_def=tenant_partitions,
    description="Every grade read from Moodle lies between 0 and its item's grademax (> 0).",
)
def grades_in_range(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    g = warehouse.get().moodle.grades(context.partition_key)
    bad = g[~((g["grade_max"] > 0) & (g["grade_raw"] >= 0) & (g["grade_raw"] <= g["grade_max"]))]
    return dg.AssetCheckResult(
        passed=bad.empty,
        severity=WARN,
        metadata={
            "out_of_range": len(bad),
            "sample": dg.MetadataValue.md(md_table(bad[["composite_key", "grade_raw", "grade_max"]])),
        },
    )


def _freshness(spec: ModuleSpec) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=_key(spec),
        name="synced_recently",
        partitions_def=tenant_partitions,
        description=f"The last successful sync of {spec.api_name} is under {FRESHNESS_HOURS:g} h old (SYNC_FRESHNESS_HOURS).",
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        runs = warehouse.get().runs(context.partition_key, spec.name)
        ok = runs[runs["outcome"] == "success"]
        last = pd.to_datetime(ok["finished_at"], utc=True).max() if len(ok) else None
        age = (datetime.now(UTC) - last.to_pydatetime()) if last is not None else None
        return dg.AssetCheckResult(
            passed=age is not None and age < timedelta(hours=FRESHNESS_HOURS),
            severity=WARN,
            metadata={
                "last_success": last.isoformat() if last is not None else "never",
                "age_hours": round(age.total_seconds() / 3600, 2) if age is not None else -1.0,
            },
        )

    return _check


def count_matches(in_zoho: int, held: dict[str, int]) -> dg.AssetCheckResult:
    """Zoho's count against the warehouse's live rows (every record is stored, valid or not;
    ``pending`` counts records an earlier version held back that the next sync stores)."""
    return dg.AssetCheckResult(
        passed=in_zoho == held["live"] + held.get("pending", 0),
        severity=WARN,
        metadata={"zoho_count": in_zoho, **held},
    )


def _count(spec: ModuleSpec) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=_key(spec),
        name="warehouse_matches_zoho",
        partitions_def=tenant_partitions,
        description=f"Zoho's record count of {spec.api_name} equals the warehouse's live rows (the mirror "
        "holds invalid records too, with their findings). One API call.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, zoho: ZohoCRMResource, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        tenant = context.partition_key
        return count_matches(
            zoho.client(tenant).count(spec.api_name), warehouse.get().accounted_for(tenant, spec)
        )

    return _check


warehouse_checks: list[dg.AssetChecksDefinition] = [
    enrolments_point_at_live_students_and_classes,
    _unique_emails("students"),
    _unique_emails("teachers"),
    grades_in_range,
    *(_freshness(spec) for spec in MODULES),
]
count_checks: list[dg.AssetChecksDefinition] = [_count(spec) for spec in MODULES]
