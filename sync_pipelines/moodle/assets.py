"""Moodle assets, generated from the entity table, the grade read, and the write-backs to Zoho.

One asset per Moodle entity of :data:`sync_pipelines.moodle.entities.ENTITIES` (``moodle/users``,
``moodle/categories``, ``moodle/courses``, ``moodle/enrolments``), each the one reconciliation
(:func:`~sync_pipelines.moodle.reconcile.reconcile`) of that entity; ``moodle/drift``, the report
of every difference the last reconciliations found; ``moodle/grades``; and the two write-backs.
"""

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from pydantic import Field

from sync_pipelines.metadata import PUSH_STATUSES, md_table, run_metadata
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
from sync_pipelines.moodle.grades import read_grades
from sync_pipelines.moodle.reconcile import PushReport, reconcile
from sync_pipelines.moodle.resource import MoodleResource
from sync_pipelines.progress import Progress
from sync_pipelines.report import source_lag_seconds
from sync_pipelines.tenants import TenantConfigError, tenant_partitions
from sync_pipelines.warehouse import Push, Warehouse
from sync_pipelines.warehouse.moodle import ReadPosition
from sync_pipelines.warehouse.resource import WarehouseResource

logger = logging.getLogger(__name__)
OWNERS = ["team:data-platform"]
#: The BTEC grades a grade read counts (``grade_distinction``...), each on every materialization.
GRADE_NAMES = ("Distinction", "Merit", "Pass", "Refer")


class PushConfig(dg.Config):
    """Run configuration of a step that writes to Moodle or back to Zoho."""

    dry_run: bool = False
    """Compute and report every write, make none (Moodle and Zoho are only read)."""
    full_read: bool = False
    """Reconcile against everything Moodle holds, as the nightly ``reconcile`` job does (by
    default a scheduled run reads Moodle only for what the warehouse says is to be written)."""


class GradesConfig(dg.Config):
    """Run configuration of the grade read."""

    course_ids: list[int] = Field(default_factory=list)
    """Moodle course ids to read in full (a grading event names one); empty reads by change."""
    full_read: bool = False
    """Read every synced course's gradebook, as the nightly ``reconcile`` job does."""


#: Jobs whose Moodle steps read Moodle in full (``sync_pipelines.definitions.reconcile``, which the
#: ``nightly_reconciliation`` schedule runs).
FULL_READ_JOBS = frozenset({"reconcile"})
#: Run triggers (tag ``sync/trigger``) whose entity steps reconcile in full: the nightly schedule's
#: runs, and the plugin's events (an enrolment removed by hand is drift Moodle alone knows of).
FULL_READ_TRIGGERS = frozenset({"reconcile", "moodle-webhook"})
#: An entity step reconciles in full when its last full reconciliation is older than this.
FULL_RECONCILE_AFTER = timedelta(hours=25)


def wants_full_read(context: dg.AssetExecutionContext, asked: bool) -> bool:
    """Whether this run reads Moodle in full: asked in the step's config, the ``reconcile`` job, or
    a run the nightly schedule started."""
    return (
        asked or context.run.job_name in FULL_READ_JOBS or context.run.tags.get("sync/trigger") == "reconcile"
    )


def reconciles_in_full(
    context: dg.AssetExecutionContext, asked: bool, store: Warehouse, tenant: str, name: str
) -> bool:
    """Whether an entity step reconciles in full (:func:`wants_full_read`, a plugin event's run, or
    no full reconciliation of the entity for :data:`FULL_RECONCILE_AFTER`); else by change."""
    if wants_full_read(context, asked) or context.run.tags.get("sync/trigger") in FULL_READ_TRIGGERS:
        return True
    last = store.moodle.read_position(tenant, name).last_full_at
    return last is None or datetime.now(UTC) - last >= FULL_RECONCILE_AFTER


def _key(path: str) -> dg.AssetKey:
    return dg.AssetKey(path.split("/"))


#: What each write action counts as, in a push step's per-status counts (:data:`PUSH_STATUSES`).
#: A grade upsert counts as updated (Zoho's answer does not reach the push log as insert or update).
WRITE_STATUS = {
    "create": "new",
    "update": "updated",
    "restore": "updated",
    "link": "updated",
    "upsert": "updated",
    "remove": "deleted",
    "suspend": "deleted",
    "hide": "deleted",
    "unenrol": "deleted",
}


def write_counts(report: PushReport) -> dict[str, int]:
    """The writes Moodle or Zoho confirmed, as ``new``/``updated``/``deleted``, and ``failed``."""
    out = {"new": 0, "updated": 0, "deleted": 0, "failed": 0}
    for p in report.pushes:
        status = WRITE_STATUS.get(p.action.split(" ")[0], "updated") if p.ok else "failed"
        out[status] += 1
    return out


def push_metadata(
    report: PushReport,
    calls: int | None = None,
    *,
    row_count: int | None = None,
    api_credits: int | None = None,
    duration_seconds: float | None = None,
    lag_seconds: float | None = None,
) -> dict[str, object]:
    """What a data team sees on a push step: the counts as numbers the UI plots (every one of
    :data:`PUSH_STATUSES`, then per action ``<action>_ok``/``<action>_failed`` or, in a dry run,
    ``planned_<action>``), API calls, duration and lag; what was (or would be) written, failures,
    drift."""
    meta: dict[str, object] = {"dry_run": report.dry_run}
    meta.update(
        run_metadata(
            counts={**report.counts(), **write_counts(report)},
            statuses=PUSH_STATUSES,
            row_count=row_count,
            api_calls=calls,
            api_credits=api_credits,
            duration_seconds=duration_seconds,
            lag_seconds=lag_seconds,
        )
    )
    meta["writes"] = dg.MetadataValue.md(md_table(report.plan))
    meta["failures"] = dg.MetadataValue.md(md_table(report.failures))
    meta["waiting"] = dg.MetadataValue.md(md_table(report.skipped))
    if len(report.drift):
        meta["drift_found"] = dg.MetadataValue.md(md_table(report.drift))
    return meta


# --- progress -------------------------------------------------------------------------------------


#: Lists in an answer that are no records (the site information's, the warnings).
_NOT_RECORDS = frozenset({"warnings", "functions", "advancedfeatures"})


def _records(params: Mapping[str, Any] | None, answer: Any) -> int:
    """The records one web-service call carried: those it answered (a list; the lists of an
    object, such as ``usergrades``), else those it sent (a write that answers nothing)."""
    if isinstance(answer, list):
        return len(answer)
    if isinstance(answer, dict):
        return sum(len(v) for k, v in answer.items() if isinstance(v, list) and k not in _NOT_RECORDS)
    sent = [
        len(v) for v in (params or {}).values() if isinstance(v, list) and v and isinstance(v[0], Mapping)
    ]
    return max(sent, default=0)


@contextmanager
def moodle_progress(
    context: dg.AssetExecutionContext, client: MoodleClient, what: str, **options: Any
) -> Iterator[Progress]:
    """A step's progress lines (:mod:`sync_pipelines.progress`): every web-service call of
    ``client`` counted as one request, with the records it carried, by function (gradebooks read
    course after course, enrolled users per course, user creation batches...). ``options`` go to
    :class:`Progress` (``every``, ``clock``)."""
    progress = Progress(context.log, what, unit="requests", calls=lambda: client.stats.calls, **options)

    def observed(function: str, params: Mapping[str, Any] | None, answer: Any) -> None:
        progress.add(function, _records(params, answer))

    with client.observe(observed), progress:
        yield progress


def held_count(store: Warehouse, tenant_id: str, spec: EntitySpec) -> int:
    """Objects the pipeline holds in Moodle for an entity (its id map, or the enrolments it holds)."""
    if spec.derived_identity:
        return len(store.moodle.enrolments(tenant_id))
    return len(store.moodle.id_map(tenant_id, spec.entity))


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
            started, now = time.monotonic(), datetime.now(UTC)
            client = moodle.client(tenant)
            full = reconciles_in_full(context, config.full_read, store, tenant, spec.name)
            with moodle_progress(context, client, f"{spec.asset} for {tenant}"):
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
                    full=full,
                )
            if full and not config.dry_run:
                store.moodle.save_read_position(tenant, spec.name, ReadPosition(last_full_at=now))
            meta = push_metadata(
                report,
                client.stats.calls,
                row_count=held_count(store, tenant, spec),
                duration_seconds=time.monotonic() - started,
                lag_seconds=source_lag_seconds(store, tenant, spec.sources, now),
            )
            meta["read_mode"] = "full" if full else "by change"
            return dg.MaterializeResult(metadata=meta)

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
    started = time.monotonic()
    drift = warehouse.get().moodle.drift(context.partition_key)
    counts = {
        "unhealed": int((~drift["healed"].astype(bool)).sum()) if len(drift) else 0,
        **{f"{e.entity}_{side}": 0 for e in ENTITIES for side in ("zoho", "moodle")},
    }
    if len(drift):
        counts.update(
            {f"{e}_{side}": int(n) for (e, side), n in drift.groupby(["entity", "side"]).size().items()}
        )
        counts.update(
            {
                f"{e}_{side}_{kind}": int(n)
                for (e, side, kind), n in drift.groupby(["entity", "side", "kind"]).size().items()
            }
        )
    meta: dict[str, object] = run_metadata(
        counts=counts, row_count=len(drift), duration_seconds=time.monotonic() - started
    )
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
        started, now = time.monotonic(), datetime.now(UTC)
        client = moodle.client(tenant)
        with moodle_progress(context, client, f"{RUBRICS_ASSET} for {tenant}"):
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
        written = {
            "written": sum(p.ok for p in report.pushes),
            "failed": sum(not p.ok for p in report.pushes),
        }
        meta: dict[str, object] = run_metadata(
            counts={**report.counts(), **written},
            row_count=len(report.rubrics),
            api_calls=client.stats.calls,
            duration_seconds=time.monotonic() - started,
            lag_seconds=source_lag_seconds(store, tenant, ["units", "classes"], now),
        )
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
        started = time.monotonic()
        tenant = context.partition_key
        client = moodle.client(tenant)
        with moodle_progress(context, client, f"{GRADES_ASSET} for {tenant}"):
            read = read_grades(
                client,
                warehouse.get(),
                tenant,
                course_ids=config.course_ids,
                full=wants_full_read(context, config.full_read),
            )
        grades = read.grades
        letters = grades["btec_grade"].value_counts().to_dict() if len(grades) else {}
        by_grade = {f"grade_{name.lower()}": 0 for name in GRADE_NAMES}
        by_grade.update({f"grade_{str(k).lower()}": int(v) for k, v in letters.items()})
        courses = int(grades["moodle_course_id"].nunique()) if len(grades) else 0
        ungraded = int(grades["letter"].isna().sum()) if len(grades) else 0
        return dg.MaterializeResult(
            metadata=run_metadata(
                counts=by_grade,
                row_count=len(grades),
                api_calls=client.stats.calls,
                duration_seconds=time.monotonic() - started,
                courses_with_grades=courses,
                ungraded=ungraded,
                gradebooks_read=read.courses_read,
                changed_grades=read.changed,
            )
            | {
                "read_mode": read.mode,
                "since": dg.MetadataValue.timestamp(float(read.since))
                if read.since is not None
                else "none yet",
            }
        )

    return guard(step, warehouse.get(), context.partition_key, "grade", context.run.run_id)


moodle_assets = [*entity_assets, moodle_drift, moodle_rubrics, moodle_grades]
#: Step names of the Moodle assets with a ``dry_run`` switch (for the dry-run job's config).
PUSH_STEPS = [*(spec.asset.replace("/", "__") for spec in ENTITIES), RUBRICS_ASSET.replace("/", "__")]
