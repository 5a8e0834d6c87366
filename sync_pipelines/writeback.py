"""What the pipeline writes back to Zoho from Moodle: BTEC grades into ``BTEC_Grades``, and the
Moodle ids and sync flags onto the Zoho records (the bookkeeping fields of the Moodle entity
table, :data:`sync_pipelines.moodle.entities.ENTITIES`).

The one place that joins the two halves: it reads the warehouse (the Moodle side's maps and
grades) and writes with the Zoho client; ``sync_pipelines.moodle`` and ``sync_pipelines.zoho``
import nothing of each other's.
"""

import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from sync_pipelines.btec import filling_rows, unit_criteria
from sync_pipelines.diff import fingerprint
from sync_pipelines.moodle.assets import OWNERS, PushConfig, guard, push_metadata
from sync_pipelines.moodle.entities import BOOKKEEPING_ASSET, ENTITIES, GRADE_WRITEBACK_ASSET, GRADES_ASSET
from sync_pipelines.moodle.reconcile import PushReport
from sync_pipelines.progress import Progress
from sync_pipelines.report import source_lag_seconds
from sync_pipelines.tenants import GradingConfig, Tenant, tenant_partitions
from sync_pipelines.warehouse import Push, Warehouse
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.client import UpsertResult, ZohoClient, ZohoError
from sync_pipelines.zoho.modules import module
from sync_pipelines.zoho.resource import ZohoCRMResource


def write_back_grades(
    zoho: ZohoClient,
    store: Warehouse,
    tenant_id: str,
    *,
    dry_run: bool = False,
    run_id: str | None = None,
    tenant: Tenant | None = None,
) -> PushReport:
    """Upsert changed BTEC grades into Zoho ``BTEC_Grades``, keyed by ``Moodle_Grade_Composite_Key``.

    A grade from criteria (``grading`` ``criteria``) also writes one subform row per criterion of
    the unit (the school's ``grading`` names), the grader's overall ``Feedback``, ``Grader_Name``,
    ``Attempt_Number``, ``Attempt_Date`` and ``BTEC_Unit``, and moves ``Grade_Status`` to the marked
    status unless staff moved it further in Zoho. A filling without a grade (incomplete) is skipped
    with its reason.
    """
    grading = tenant.grading if tenant is not None else GradingConfig()
    g = store.moodle.grades(tenant_id)
    placed = g["student_zoho_id"].notna() & g["class_zoho_id"].notna()
    graded = g["letter"].notna()
    todo = g[(g["fingerprint"] != g["written_fingerprint"]) & placed & graded]
    unplaced = g[~placed]
    ungraded = g[placed & ~graded & (g["fingerprint"] != g["written_fingerprint"])]
    plan = pd.DataFrame(
        {
            "key": todo["composite_key"],
            "action": "upsert",
            "detail": todo["item_name"].astype(str) + ": " + todo["letter"].astype(str),
        }
    )
    skipped = pd.concat(
        [
            pd.DataFrame({"key": unplaced["composite_key"], "reason": "not_a_synced_student_or_class"}),
            pd.DataFrame(
                {"key": ungraded["composite_key"], "reason": "not graded: " + ungraded["reason"].astype(str)}
            ),
        ],
        ignore_index=True,
    )
    report = PushReport(
        "grade",
        dry_run,
        plan,
        skipped=skipped,
        unchanged=int(len(g) - len(todo) - len(unplaced) - len(ungraded)),
    )
    if dry_run or todo.empty:
        return report
    by_criteria = todo["grading"] == "criteria"
    extra = _criteria_fields(store, tenant_id, todo[by_criteria], grading) if by_criteria.any() else {}
    records = [
        {
            "Moodle_Grade_Composite_Key": k,
            "Student": {"id": s},
            "Class": {"id": c},
            "Grade": letter,
            "BTEC_Grade_Name": name,
            "Moodle_Grade_ID": str(item),
            **extra.get(k, {}),
        }
        for k, s, c, letter, name, item in zip(
            todo["composite_key"],
            todo["student_zoho_id"],
            todo["class_zoho_id"],
            todo["letter"],
            todo["item_name"],
            todo["grade_item_id"],
            strict=True,
        )
    ]
    results = zoho.upsert("BTEC_Grades", records, duplicate_check_fields=["Moodle_Grade_Composite_Key"])
    report.pushes = [
        _zoho_push("grade", k, "upsert", r) for k, r in zip(todo["composite_key"], results, strict=True)
    ]
    written = [
        {"composite_key": k, "written_fingerprint": fp, "zoho_grade_id": r.record_id}
        for k, fp, r in zip(todo["composite_key"], todo["fingerprint"], results, strict=True)
        if r.ok
    ]
    store.moodle.mark_grades_written(tenant_id, written, report.pushes, run_id)
    report.skipped = skipped
    return report


def _criteria_fields(
    store: Warehouse, tenant_id: str, rows: pd.DataFrame, grading: GradingConfig
) -> dict[str, dict]:
    """Per composite key, the fields a criteria grade writes besides the grade itself."""
    units = store.read_table(tenant_id, module("units"))
    criteria = unit_criteria(units)
    units = units.set_index("zoho_id")
    teachers = store.read_table(tenant_id, module("teachers")).set_index("zoho_id")["name"]
    users = store.moodle.id_map(tenant_id, "user")
    grader_name = {
        int(m): teachers.get(z) for z, m in users[users["zoho_module"] == "teachers"]["moodle_id"].items()
    }
    mirror = store.read_table(tenant_id, module("grades"))
    status_now = dict(zip(mirror["moodle_grade_composite_key"], mirror["grade_status"], strict=True))
    out: dict[str, dict] = {}
    for r in rows.itertuples(index=False):
        achieved = json.loads(r.criteria)
        fields: dict = {
            "Feedback": r.feedback,
            "Attempt_Number": int(r.attempt),
            "Attempt_Date": datetime.fromtimestamp(int(r.graded_at), UTC).date().isoformat()
            if r.graded_at
            else None,
            "BTEC_Unit": units["name"].get(r.unit_zoho_id) if "name" in units else None,
        }
        if r.grader_id is not None and not pd.isna(r.grader_id):
            fields["Grader_Name"] = grader_name.get(int(r.grader_id)) or f"Moodle user {int(r.grader_id)}"
        if grading.subform:
            fields[grading.subform] = filling_rows(
                criteria[criteria["unit_id"] == r.unit_zoho_id],
                achieved,
                json.loads(r.remarks) if isinstance(r.remarks, str) else None,
                fields=grading.subform_fields,
            )
        status = grading.next_status(status_now.get(r.composite_key), True)
        if status is not None:
            fields["Grade_Status"] = status
        out[r.composite_key] = fields
    return out


def _zoho_push(entity: str, key: str, action: str, r: UpsertResult) -> Push:
    return Push(
        "zoho",
        entity,
        key,
        action,
        r.ok,
        remote_id=r.record_id,
        errorcode=None if r.ok else r.code,
        message=None if r.ok else r.message,
    )


# --- sync bookkeeping back to Zoho -----------------------------------------------------------------

#: (Zoho module, Zoho field for the Moodle id, warehouse column mirroring it), from the entity table.
BOOKKEEPING = tuple(b for e in ENTITIES for b in e.bookkeeping)
#: Which id map holds each bookkept module's Moodle ids.
_MAP_OF = {b[0]: e for e in ENTITIES for b in e.bookkeeping}


def _moodle_ids(store: Warehouse, tenant_id: str, name: str) -> pd.Series:
    """Zoho id → the Moodle id to record on it (as text), for one module."""
    if _MAP_OF[name].derived_identity:
        held = store.moodle.enrolments(tenant_id)
        held = held[held.index.str.startswith("enrolment:")]
        return pd.Series(
            held["moodle_course_id"].astype(int).astype(str).to_numpy(), index=held.index.str[10:]
        )
    ids = store.moodle.id_map(tenant_id, _MAP_OF[name].entity)
    return ids[ids["zoho_module"] == name]["moodle_id"].astype(int).astype(str)


def write_back_bookkeeping(
    zoho: ZohoClient,
    store: Warehouse,
    tenant_id: str,
    *,
    dry_run: bool = False,
    run_id: str | None = None,
    tenant: Tenant | None = None,
) -> PushReport:
    """Write Moodle ids and sync flags onto the Zoho records, batched, only where they changed.

    A value is written when it differs both from what the warehouse mirror of Zoho holds and
    from what this step last wrote (the mirror catches up on the next Zoho sync).
    """
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    report = PushReport("bookkeeping", dry_run, pd.DataFrame(columns=["key", "action", "detail"]))
    plans = []
    for name, api_field, column in BOOKKEEPING:
        spec = module(name)
        ids = _moodle_ids(store, tenant_id, name)
        mirror = store.read_table(tenant_id, spec).set_index("zoho_id")
        desired = pd.DataFrame({api_field: ids})
        if "synced_to_moodle" in spec.columns:
            desired["Synced_to_Moodle"] = True
        desired = desired[desired.index.isin(mirror.index)]
        same_in_zoho = mirror[column].reindex(desired.index).astype(object) == desired[api_field]
        if "synced_to_moodle" in spec.columns:
            same_in_zoho &= mirror["synced_to_moodle"].reindex(desired.index).fillna(False).astype(bool)
        desired["_fp"] = fingerprint(
            desired.astype(str).reset_index(), [c for c in desired.columns if c != "_fp"]
        ).to_numpy()
        written = store.moodle.writeback_state(tenant_id, name)
        todo = desired[~same_in_zoho & (desired["_fp"] != written.reindex(desired.index))]
        report.unchanged += len(desired) - len(todo)
        plans.append(
            pd.DataFrame(
                {
                    "key": todo.index,
                    "action": f"update {spec.api_name}",
                    "detail": api_field + "=" + todo[api_field],
                }
            )
        )
        if dry_run or todo.empty:
            continue
        fields = [c for c in todo.columns if c != "_fp"]
        records = [
            {
                "id": z,
                **{f: row[f] for f in fields},
                **({"Last_Sync_Date": now} if "last_sync_date" in spec.columns else {}),
            }
            for z, row in todo.iterrows()
        ]
        results = zoho.update(spec.api_name, records)
        pushes = [_zoho_push(name, z, "update", r) for z, r in zip(todo.index, results, strict=True)]
        report.pushes += pushes
        store.moodle.save_writeback(
            tenant_id,
            name,
            {z: fp for z, fp, r in zip(todo.index, todo["_fp"], results, strict=True) if r.ok},
            pushes,
            run_id,
        )
    report.plan = pd.concat(plans, ignore_index=True) if plans else report.plan
    return report


# --- the assets ------------------------------------------------------------------------------------

_COMMON = {"partitions_def": tenant_partitions, "owners": OWNERS}


def _key(path: str) -> dg.AssetKey:
    return dg.AssetKey(path.split("/"))


def _writeback_asset(
    key: str,
    deps: list[str],
    entity: str,
    write: Callable[..., PushReport],
    description: str,
    *,
    reads: Sequence[str],
    held: Callable[[Warehouse, str], int],
) -> dg.AssetsDefinition:
    """A write-back step; ``reads``: the Zoho modules of the warehouse it writes from (its lag),
    ``held``: how many records it has written (its row count)."""

    @dg.asset(
        key=_key(key),
        deps=[_key(d) for d in deps],
        group_name="writeback",
        kinds={"zoho"},
        description=description,
        **_COMMON,
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: PushConfig,
        zoho: ZohoCRMResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        store, tenant, run_id = warehouse.get(), context.partition_key, context.run.run_id

        def step() -> dg.MaterializeResult:
            started, now = time.monotonic(), datetime.now(UTC)
            client = zoho.client(tenant)
            progress = Progress(context.log, f"{key} for {tenant}", calls=lambda: client.stats.calls)
            with progress, client.observe(progress.add):
                report = write(
                    client, store, tenant, dry_run=config.dry_run, run_id=run_id, tenant=zoho.tenant(tenant)
                )
            meta = push_metadata(
                report,
                client.stats.calls,
                row_count=held(store, tenant),
                api_credits=client.stats.credits,
                duration_seconds=time.monotonic() - started,
                lag_seconds=source_lag_seconds(store, tenant, reads, now),
            )
            return dg.MaterializeResult(metadata=meta)

        return guard(step, store, tenant, entity, run_id, target="zoho", also=(ZohoError,))

    return _asset


grade_writeback = _writeback_asset(
    GRADE_WRITEBACK_ASSET,
    [GRADES_ASSET],
    "grade",
    write_back_grades,
    "BTEC grades upserted into Zoho BTEC_Grades (duplicate check on Moodle_Grade_Composite_Key, "
    "Grade = D/M/P/R), only those that changed since they were last written.",
    reads=("units", "teachers", "grades"),
    held=lambda store, tenant: int(store.moodle.grades(tenant)["zoho_grade_id"].notna().sum()),
)
sync_bookkeeping = _writeback_asset(
    BOOKKEEPING_ASSET,
    [spec.asset for spec in ENTITIES if spec.bookkeeping],
    "bookkeeping",
    write_back_bookkeeping,
    "Moodle ids and sync flags written onto the Zoho records (Student_Moodle_ID, Teacher_Moodle_ID, "
    "Moodle_Class_ID, Moodle_Course_ID, Synced_to_Moodle, Last_Sync_Date), batched, only when changed.",
    reads=tuple(dict.fromkeys(name for name, _, _ in BOOKKEEPING)),
    held=lambda store, tenant: sum(
        len(store.moodle.writeback_state(tenant, name))
        for name in dict.fromkeys(n for n, _, _ in BOOKKEEPING)
    ),
)
writeback_assets = [grade_writeback, sync_bookkeeping]
#: Step names of the write-backs (both have a ``dry_run`` switch).
WRITEBACK_STEPS = [GRADE_WRITEBACK_ASSET.replace("/", "__"), BOOKKEEPING_ASSET.replace("/", "__")]
