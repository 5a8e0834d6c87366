"""Moodle assets, generated from the entity table, the grade read, and the write-backs to Zoho.

One asset per Moodle entity of :data:`sync_pipelines.moodle.entities.ENTITIES` (``moodle/users``,
``moodle/categories``, ``moodle/courses``, ``moodle/enrolments``), each the one reconciliation
(:func:`~sync_pipelines.moodle.reconcile.reconcile`) of that entity; ``moodle/drift``, the report
of every difference the last reconciliations found; ``moodle/grades``; and the two write-backs.
"""

import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from sync_pipelines.metadata import md_table
from sync_pipelines.moodle import preflight
from sync_pipelines.moodle.client import MoodleClient, MoodleError
from sync_pipelines.moodle.criteria import reconcile_rubrics
from sync_pipelines.moodle.entities import (
    DRIFT_ASSET,
    ENTITIES,
    GRADES_ASSET,
    RUBRICS_ASSET,
    EntitySpec,
)
from sync_pipelines.moodle.grades import collect_grades
from sync_pipelines.moodle.reconcile import PushReport, reconcile
from sync_pipelines.moodle.resource import MoodleResource
from sync_pipelines.tenants import TenantConfigError, tenant_partitions
from sync_pipelines.warehouse import Push, Warehouse
from sync_pipelines.warehouse.resource import WarehouseResource

logger = logging.getLogger(__name__)
OWNERS = ["team:data-platform"]


class PushConfig(dg.Config):
    """Run configuration of a step that writes to Moodle or back to Zoho."""

    dry_run: bool = False
    """Compute and report every write, make none (Moodle and Zoho are only read)."""


class GradesConfig(dg.Config):
    """Run configuration of the grade read."""

    course_ids: list[int] = Field(default_factory=list)
    """Moodle course ids to read (a grading event names one); empty reads every synced course."""


def _key(path: str) -> dg.AssetKey:
    return dg.AssetKey(path.split("/"))


def push_metadata(report: PushReport, calls: int | None = None) -> dict[str, object]:
    """What a data team sees on a push step: counts, what was (or would be) written, failures, drift."""
    meta: dict[str, object] = {"dry_run": report.dry_run, **report.counts()}
    meta["writes"] = dg.MetadataValue.md(md_table(report.plan))
    meta["failures"] = dg.MetadataValue.md(md_table(report.failures))
    meta["waiting"] = dg.MetadataValue.md(md_table(report.skipped))
    if len(report.drift):
        meta["drift_found"] = dg.MetadataValue.md(md_table(report.drift))
    if calls is not None:
        meta["api_calls"] = calls
    return meta


#: How often a Moodle step reads the site's own information again (one call).
SITE_INFO_MAX_AGE = timedelta(hours=24)


def remember_site(client: MoodleClient, store: Warehouse, tenant_id: str) -> int | None:
    """The Moodle user the pipeline's token acts as (``core_webservice_get_site_info``), read
    once a day and kept in ``moodle_site``: the webhook sensor drops the events that user causes
    (the echoes of the pipeline's own writes), and the reconciliation leaves that user out."""
    checked = store.moodle.site_checked_at(tenant_id)
    if checked is None or datetime.now(UTC) - checked >= SITE_INFO_MAX_AGE:
        info = client.site_info()
        if isinstance(info.get("userid"), int):
            store.moodle.save_site(tenant_id, info["userid"], info.get("release"))
    return store.moodle.service_users().get(tenant_id)


#: Preflight checks whose failure stops every write: an account Moodle does not show by idnumber or
#: e-mail would be created twice or linked to another record's. A grade item the role cannot see is
#: reported (the asset check fails) but stops nothing: a hidden activity looks the same.
BLOCKING_CHECKS = frozenset({preflight.CHECK_FUNCTIONS, preflight.CHECK_IDNUMBER, preflight.CHECK_EMAIL})


class PreflightFailed(Exception):
    """The token's role lacks what the sync needs: nothing was written."""


def run_preflight(client: MoodleClient, store: Warehouse, tenant_id: str) -> list[preflight.Finding]:
    """The capability preflight (:mod:`sync_pipelines.moodle.preflight`) on the users and courses
    the pipeline manages; recorded in ``moodle_site``."""
    users = store.moodle.id_map(tenant_id, "user")
    courses = store.moodle.id_map(tenant_id, "course")
    rubrics = store.moodle.rubrics(tenant_id)
    findings = preflight.preflight(
        client,
        known_users=[(int(m), str(z)) for z, m in users["moodle_id"].head(preflight.MAX_USERS).items()],
        course_ids=[int(m) for m in courses["moodle_id"].head(preflight.MAX_COURSES)],
        assessments=[
            (int(c), int(a)) for c, a in zip(rubrics["cmid"], rubrics["assignment_id"], strict=True)
        ],
    )
    store.moodle.save_preflight(tenant_id, [asdict(f) for f in findings], all(f.ok for f in findings))
    return findings


def before_first_write(client: MoodleClient, store: Warehouse, tenant_id: str) -> None:
    """Run the preflight unless it passed in the last day; stop before any write when a blocking
    check fails (:data:`BLOCKING_CHECKS`), naming the capability or function to add."""
    passed_at, _ = store.moodle.preflight(tenant_id)
    if passed_at is not None and datetime.now(UTC) - passed_at < SITE_INFO_MAX_AGE:
        return
    failed = [f for f in run_preflight(client, store, tenant_id) if not f.ok]
    for f in failed:
        logger.warning("tenant %s: preflight %s: %s", tenant_id, f.check, f.message)
    blocking = [f for f in failed if f.check in BLOCKING_CHECKS]
    if blocking:
        raise PreflightFailed(
            f"tenant {tenant_id}: the Moodle token's role cannot do what the sync needs; nothing was written: "
            + " | ".join(f.message for f in blocking)
        )


def guard(
    step: Callable[[], dg.MaterializeResult],
    store: Warehouse | None = None,
    tenant_id: str | None = None,
    entity: str = "run",
    run_id: str | None = None,
    *,
    target: str = "moodle",
    also: tuple[type[Exception], ...] = (),
) -> dg.MaterializeResult:
    try:
        return step()
    except (MoodleError, TenantConfigError, PreflightFailed, *also) as exc:
        # An error that stops the step is recorded where every write's outcome is, not only in the
        # run's log; the message names the tenant, the service's error code and message, never a secret.
        if store is not None and tenant_id is not None:
            store.moodle.log(
                tenant_id,
                [
                    Push(
                        target,
                        entity,
                        "*",
                        "run",
                        False,
                        errorcode=getattr(exc, "errorcode", None)
                        or getattr(exc, "code", None)
                        or type(exc).__name__,
                        message=str(exc),
                    )
                ],
                run_id,
            )
        raise dg.Failure(description=str(exc), metadata={"error_type": type(exc).__name__}) from exc


_COMMON = {"partitions_def": tenant_partitions, "owners": OWNERS}


def _entity_asset(spec: EntitySpec) -> dg.AssetsDefinition:
    deps = [*(f"zoho/{m}" for m in spec.sources), *(f"moodle/{e}" for e in spec.after)]

    @dg.asset(
        key=_key(spec.asset),
        deps=[_key(d) for d in deps],
        group_name="moodle",
        kinds={"moodle"},
        description=spec.description,
        **_COMMON,
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: PushConfig,
        moodle: MoodleResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        store, tenant, run_id = warehouse.get(), context.partition_key, context.run.run_id

        def step() -> dg.MaterializeResult:
            client = moodle.client(tenant)
            service_user = remember_site(client, store, tenant)
            before_first_write(client, store, tenant)
            report = reconcile(
                spec,
                client,
                store,
                tenant,
                policy=moodle.drift_policy(tenant),
                dry_run=config.dry_run,
                run_id=run_id,
                service_user_id=service_user,
            )
            return dg.MaterializeResult(metadata=push_metadata(report, client.stats.calls))

        return guard(step, store, tenant, spec.entity, run_id)

    return _asset


entity_assets = [_entity_asset(spec) for spec in ENTITIES]


@dg.asset(
    key=_key(DRIFT_ASSET),
    deps=[_key(spec.asset) for spec in ENTITIES],
    group_name="moodle",
    kinds={"moodle", "pandas"},
    description="Every difference between Zoho and Moodle the last reconciliation of each entity found: its "
    "side (zoho: Moodle lacks or contradicts it; moodle: only Moodle holds it), what differs, and the action "
    "taken under the school's moodle.drift policy. Table `moodle_drift`.",
    **_COMMON,
)
def moodle_drift(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    drift = warehouse.get().moodle.drift(context.partition_key)
    meta: dict[str, object] = {
        "dagster/row_count": len(drift),
        "unhealed": int((~drift["healed"].astype(bool)).sum()) if len(drift) else 0,
    }
    if len(drift):
        counts = drift.groupby(["entity", "side", "kind"]).size()
        meta.update({f"{e}_{side}_{kind}": int(n) for (e, side, kind), n in counts.items()})
    shown = drift[["entity", "side", "kind", "key", "moodle_id", "detail", "action"]] if len(drift) else drift
    meta["differences"] = dg.MetadataValue.md(md_table(shown))
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    key=_key(RUBRICS_ASSET),
    deps=[_key("moodle/courses"), _key("zoho/units"), _key("zoho/classes")],
    group_name="moodle",
    kinds={"moodle"},
    description="A rubric of the unit's BTEC criteria (P1…D6 from Zoho, two levels: Not achieved / Achieved) on "
    "each assignment of a class's course whose name starts with the school's grading.assessment_prefix "
    "(BTEC); updated in place with Moodle's ids, never over learners' fillings (differences are drift). "
    "Table `moodle_rubrics`.",
    **_COMMON,
)
def moodle_rubrics(
    context: dg.AssetExecutionContext,
    config: PushConfig,
    moodle: MoodleResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    store, tenant, run_id = warehouse.get(), context.partition_key, context.run.run_id

    def step() -> dg.MaterializeResult:
        client = moodle.client(tenant)
        service_user = remember_site(client, store, tenant)
        report = reconcile_rubrics(
            client,
            store,
            tenant,
            moodle.grading(tenant),
            service_user_id=service_user,
            dry_run=config.dry_run,
            run_id=run_id,
        )
        meta: dict[str, object] = {**report.counts(), "api_calls": client.stats.calls}
        meta["rubrics"] = dg.MetadataValue.md(
            md_table(report.rubrics[["cmid", "unit_zoho_id", "status", "detail"]])
        )
        return dg.MaterializeResult(metadata=meta)

    return guard(step, store, tenant, "rubric", run_id)


@dg.asset(
    key=_key(GRADES_ASSET),
    deps=[_key("moodle/enrolments"), _key(RUBRICS_ASSET)],
    group_name="moodle",
    kinds={"moodle", "pandas"},
    description="One row per graded Moodle item of a synced student in a synced course, with its BTEC grade "
    "(70+ Distinction, 60+ Merit, 40+ Pass, else Refer, on the percentage of grademax); course totals excluded.",
    **_COMMON,
)
def moodle_grades(
    context: dg.AssetExecutionContext,
    config: GradesConfig,
    moodle: MoodleResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    def step() -> dg.MaterializeResult:
        client = moodle.client(context.partition_key)
        grades = collect_grades(client, warehouse.get(), context.partition_key, course_ids=config.course_ids)
        counts = grades["btec_grade"].value_counts().to_dict() if len(grades) else {}
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(grades),
                "api_calls": client.stats.calls,
                **{f"grade_{k.lower()}": int(v) for k, v in counts.items()},
            }
        )

    return guard(step, warehouse.get(), context.partition_key, "grade", context.run.run_id)


moodle_assets = [*entity_assets, moodle_drift, moodle_rubrics, moodle_grades]
#: Step names of the Moodle assets with a ``dry_run`` switch (for the dry-run job's config).
PUSH_STEPS = [*(spec.asset.replace("/", "__") for spec in ENTITIES), RUBRICS_ASSET.replace("/", "__")]
