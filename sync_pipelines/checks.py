"""Asset checks: what should hold after every sync, per tenant.

None is blocking: a warning never stops a sync that is still correct. Severity says how bad a
failure is: ERROR for data that will mislead (duplicate accounts), WARN for what a data team
should look at (orphans, stale modules, out-of-range grades, counts that disagree).

The checks that read only the warehouse run with every sync. ``warehouse_matches_zoho`` costs one
Zoho API call per module, so it runs with the nightly reconciliation (job ``reconcile``), right
after every module was read in full.
"""

import dagster as dg
import pandas as pd

from sync_pipelines.metadata import md_table
from sync_pipelines.moodle.assets import run_preflight
from sync_pipelines.moodle.entities import DRIFT_ASSET, ENTITIES
from sync_pipelines.moodle.resource import MoodleResource
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.modules import MODULES, ModuleSpec, module
from sync_pipelines.zoho.resource import ZohoCRMResource

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


def _drift_check(
    name: str, side: str, severity: dg.AssetCheckSeverity, columns: list[str], description: str
) -> dg.AssetChecksDefinition:
    """A check on the drift report: passes when it lists no difference of ``side`` (``zoho``: left
    unhealed; ``moodle``: held only in Moodle)."""

    @dg.asset_check(
        asset=dg.AssetKey(DRIFT_ASSET.split("/")),
        name=name,
        partitions_def=tenant_partitions,
        description=description,
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        d = warehouse.get().moodle.drift(context.partition_key)
        left = d[d["side"] == side] if len(d) else d
        if side == "zoho" and len(left):
            left = left[~left["healed"].astype(bool)]
        counts = left.groupby("entity").size().to_dict() if len(left) else {}
        return dg.AssetCheckResult(
            passed=left.empty,
            severity=severity,
            metadata={
                "differences": len(left),
                **{f"{side}_{e}": int(n) for e, n in counts.items()},
                "sample": dg.MetadataValue.md(md_table(left[columns] if len(left) else left)),
            },
        )

    return _check


_drift_healed = _drift_check(
    "drift_healed",
    "zoho",
    ERROR,
    ["entity", "key", "kind", "detail", "action"],
    "No difference between Zoho and Moodle that the school's moodle.drift policy heals is left unhealed: what "
    "Zoho holds and Moodle lacks or contradicts was restored (ERROR when not: a write failed, Moodle answered "
    "none of the mapped objects, or the policy only reports it).",
)
_moodle_only = _drift_check(
    "nothing_only_in_moodle",
    "moodle",
    WARN,
    ["entity", "moodle_id", "detail", "action"],
    f"Moodle holds no {', '.join(e.name for e in ENTITIES if e.reports_moodle_only)} that Zoho does not say "
    "(made by hand). WARN: the policy's action for them (keep, suspend, hide, unenrol) was taken; nothing is "
    "deleted.",
)


@dg.asset_check(
    asset=dg.AssetKey(["moodle", "users"]),
    partitions_def=tenant_partitions,
    description="The Moodle token's service holds every function the pipeline calls, and its role sees what "
    "the sync reads: users by idnumber and e-mail, every activity grade item (gaps Moodle leaves silent). "
    "Each failure names the capability to add. About 10 calls.",
)
def moodle_role_sees_what_it_needs(
    context: dg.AssetCheckExecutionContext, moodle: MoodleResource, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    findings = run_preflight(moodle.client(context.partition_key), warehouse.get(), context.partition_key)
    failed = [f for f in findings if not f.ok]
    table = pd.DataFrame(
        [(f.check, "ok" if f.ok else "FAILED", f.capability, f.message) for f in findings],
        columns=["check", "outcome", "capability", "message"],
    )
    return dg.AssetCheckResult(
        passed=not failed,
        severity=ERROR,
        metadata={
            "failed": len(failed),
            "missing_capabilities": ", ".join(sorted({f.capability for f in failed if f.capability}))
            or "none",
            "findings": dg.MetadataValue.md(md_table(table)),
        },
    )


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
    # Accounts are found by e-mail: two records sharing one would take each other's account.
    *(_unique_emails(m) for e in ENTITIES if "email" in e.find_by for m in e.sources),
    _drift_healed,
    _moodle_only,
    grades_in_range,
]
count_checks: list[dg.AssetChecksDefinition] = [_count(spec) for spec in MODULES]
#: The checks that cost API calls: with the nightly reconciliation, not every 15 minutes (the
#: preflight also runs before the first write of each day).
nightly_checks: list[dg.AssetChecksDefinition] = [*count_checks, moodle_role_sees_what_it_needs]
