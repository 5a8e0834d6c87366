"""Moodle assets (users, courses, enrolments, grades) and the write-backs to Zoho."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from sync_pipelines.moodle import provision
from sync_pipelines.moodle.client import MoodleClient, MoodleError
from sync_pipelines.moodle.provision import PushReport
from sync_pipelines.moodle.resource import MoodleResource
from sync_pipelines.tenants import TenantConfigError, tenant_partitions
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.assets import md_table
from sync_pipelines.zoho.client import ZohoError
from sync_pipelines.zoho.resource import ZohoCRMResource

OWNERS = ["team:data-platform"]


class PushConfig(dg.Config):
    """Run configuration of a step that writes to Moodle or back to Zoho."""

    dry_run: bool = False
    """Compute and report every write, make none (Moodle and Zoho are only read)."""


class GradesConfig(dg.Config):
    """Run configuration of the grade read."""

    course_ids: list[int] = Field(default_factory=list)
    """Moodle course ids to read (a grading event names one); empty reads every synced course."""


def _key(*path: str) -> dg.AssetKey:
    return dg.AssetKey(list(path))


def push_metadata(report: PushReport, calls: int | None = None) -> dict[str, object]:
    """What a data team sees on a push step: counts, what was (or would be) written, failures."""
    meta: dict[str, object] = {"dry_run": report.dry_run, **report.counts()}
    meta["writes"] = dg.MetadataValue.md(md_table(report.plan))
    meta["failures"] = dg.MetadataValue.md(md_table(report.failures))
    meta["waiting"] = dg.MetadataValue.md(md_table(report.skipped))
    if calls is not None:
        meta["api_calls"] = calls
    return meta


#: How often a Moodle step reads the site's own information again (one call).
SITE_INFO_MAX_AGE = timedelta(hours=24)


def remember_site(client: MoodleClient, store: Warehouse, tenant_id: str) -> None:
    """Record which Moodle user the pipeline's token acts as (``core_webservice_get_site_info``),
    once a day: the webhook sensor drops the events that user causes, the echoes of the
    pipeline's own writes, before they cost a run."""
    checked = store.moodle.site_checked_at(tenant_id)
    if checked is not None and datetime.now(UTC) - checked < SITE_INFO_MAX_AGE:
        return
    info = client.site_info()
    if isinstance(info.get("userid"), int):
        store.moodle.save_site(tenant_id, info["userid"], info.get("release"))


def _guard(step: Callable[[], dg.MaterializeResult]) -> dg.MaterializeResult:
    try:
        return step()
    except (MoodleError, ZohoError, TenantConfigError) as exc:
        # The message names the tenant, the service's error code and message, never a secret.
        raise dg.Failure(description=str(exc), metadata={"error_type": type(exc).__name__}) from exc


_COMMON = {"partitions_def": tenant_partitions, "owners": OWNERS}


@dg.asset(
    key=_key("moodle", "users"),
    deps=[_key("zoho", "students"), _key("zoho", "teachers")],
    group_name="moodle",
    kinds={"moodle"},
    description="One Moodle account per Zoho student and teacher (idnumber = Zoho id), created, linked, "
    "updated or suspended; the map is the `moodle_id_map` table (entity `user`).",
    **_COMMON,
)
def moodle_users(
    context: dg.AssetExecutionContext,
    config: PushConfig,
    moodle: MoodleResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    def step() -> dg.MaterializeResult:
        client = moodle.client(context.partition_key)
        remember_site(client, warehouse.get(), context.partition_key)
        report = provision.push_users(
            client, warehouse.get(), context.partition_key, dry_run=config.dry_run, run_id=context.run.run_id
        )
        return dg.MaterializeResult(metadata=push_metadata(report, client.stats.calls))

    return _guard(step)


@dg.asset(
    key=_key("moodle", "courses"),
    deps=[_key("zoho", "classes"), _key("zoho", "programmes")],
    group_name="moodle",
    kinds={"moodle"},
    description="One Moodle course per Zoho class (shortname = Class_Short_Name, idnumber = Zoho id), in one "
    "course category per programme; the map is `moodle_id_map` (entities `course`, `category`).",
    **_COMMON,
)
def moodle_courses(
    context: dg.AssetExecutionContext,
    config: PushConfig,
    moodle: MoodleResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    def step() -> dg.MaterializeResult:
        client, store, tenant = moodle.client(context.partition_key), warehouse.get(), context.partition_key
        cats = provision.push_categories(
            client, store, tenant, dry_run=config.dry_run, run_id=context.run.run_id
        )
        report = provision.push_courses(
            client, store, tenant, dry_run=config.dry_run, run_id=context.run.run_id
        )
        meta = push_metadata(report, client.stats.calls)
        meta.update({f"categories_{k}": v for k, v in cats.counts().items()})
        return dg.MaterializeResult(metadata=meta)

    return _guard(step)


@dg.asset(
    key=_key("moodle", "enrolments"),
    deps=[
        _key("zoho", "enrolments"),
        _key("zoho", "classes"),
        _key("moodle", "users"),
        _key("moodle", "courses"),
    ],
    group_name="moodle",
    kinds={"moodle"},
    description="One Moodle manual enrolment per Zoho enrolment (student role) and per class teacher "
    "(editing-teacher role); deleted enrolments and withdrawn students are unenrolled.",
    **_COMMON,
)
def moodle_enrolments(
    context: dg.AssetExecutionContext,
    config: PushConfig,
    moodle: MoodleResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    def step() -> dg.MaterializeResult:
        client = moodle.client(context.partition_key)
        report = provision.push_enrolments(
            client, warehouse.get(), context.partition_key, dry_run=config.dry_run, run_id=context.run.run_id
        )
        return dg.MaterializeResult(metadata=push_metadata(report, client.stats.calls))

    return _guard(step)


@dg.asset(
    key=_key("moodle", "grades"),
    deps=[_key("moodle", "enrolments")],
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
        grades = provision.collect_grades(
            client, warehouse.get(), context.partition_key, course_ids=config.course_ids
        )
        counts = grades["btec_grade"].value_counts().to_dict() if len(grades) else {}
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(grades),
                "api_calls": client.stats.calls,
                **{f"grade_{k.lower()}": int(v) for k, v in counts.items()},
            }
        )

    return _guard(step)


@dg.asset(
    key=_key("zoho", "grade_writeback"),
    deps=[_key("moodle", "grades")],
    group_name="writeback",
    kinds={"zoho"},
    description="BTEC grades upserted into Zoho BTEC_Grades (duplicate check on Moodle_Grade_Composite_Key, "
    "Grade = D/M/P/R), only those that changed since they were last written.",
    **_COMMON,
)
def grade_writeback(
    context: dg.AssetExecutionContext, config: PushConfig, zoho: ZohoCRMResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    def step() -> dg.MaterializeResult:
        client = zoho.client(context.partition_key)
        report = provision.write_back_grades(
            client, warehouse.get(), context.partition_key, dry_run=config.dry_run, run_id=context.run.run_id
        )
        return dg.MaterializeResult(metadata=push_metadata(report, client.stats.calls))

    return _guard(step)


@dg.asset(
    key=_key("zoho", "sync_bookkeeping"),
    deps=[_key("moodle", "users"), _key("moodle", "courses"), _key("moodle", "enrolments")],
    group_name="writeback",
    kinds={"zoho"},
    description="Moodle ids and sync flags written onto the Zoho records (Student_Moodle_ID, Teacher_Moodle_ID, "
    "Moodle_Class_ID, Moodle_Course_ID, Synced_to_Moodle, Last_Sync_Date), batched, only when changed.",
    **_COMMON,
)
def sync_bookkeeping(
    context: dg.AssetExecutionContext, config: PushConfig, zoho: ZohoCRMResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    def step() -> dg.MaterializeResult:
        client = zoho.client(context.partition_key)
        report = provision.write_back_bookkeeping(
            client, warehouse.get(), context.partition_key, dry_run=config.dry_run, run_id=context.run.run_id
        )
        return dg.MaterializeResult(metadata=push_metadata(report, client.stats.calls))

    return _guard(step)


moodle_assets = [moodle_users, moodle_courses, moodle_enrolments, moodle_grades]
writeback_assets = [grade_writeback, sync_bookkeeping]
#: Step names of every asset with a ``dry_run`` switch (for the dry-run job's config).
PUSH_STEPS = [
    "moodle__users",
    "moodle__courses",
    "moodle__enrolments",
    "zoho__grade_writeback",
    "zoho__sync_bookkeeping",
]
