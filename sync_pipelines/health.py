"""Freshness and the per-school health view.

**Dagster's freshness.** The Zoho module assets and ``moodle/grades`` carry a
``FreshnessPolicy.time_window`` (warn after ``SYNC_FRESHNESS_WARN_HOURS``, default 1 h: four missed
15-minute runs; fail after ``SYNC_FRESHNESS_FAIL_HOURS``, default 3 h), which Dagster's freshness
daemon evaluates (``dagster dev`` and ``dagster-daemon`` run it; ``freshness: enabled`` in
``dagster.yaml``, on by default). It is the supported successor of
``build_last_update_freshness_checks`` and ``build_sensor_for_freshness_checks``, which 1.13 marks
superseded. Both judge an asset by its **latest materialization of any partition**: while one
school syncs, the asset is fresh for all. They cannot say "school X is stale", so the health view
below does, per school.

**The health view.** ``ops/school_health`` is an observed asset (like ``events/dead_letters``):
the ``school_health`` sensor computes it every ``SYNC_HEALTH_INTERVAL_SECONDS`` (default 300) from
the Dagster instance and the warehouse's ``sync_runs``, and reports one observation with one row
per school: its state, last successful sync (the oldest of its modules' latest successes, so one
module that keeps failing shows), minutes since, the module that is stalest, its last finished run
and the failing step, and its dead letters still in ``dead/``. The metadata holds the table, the
counts per state, and per school ``<school>: state``, ``<school>: minutes_since_success``,
``<school>: dead_letters`` and ``<school>: healthy`` (1 or 0), which the UI plots over time.

States, worst first: ``failing`` (the last finished run failed, or its tenants entry is broken),
``stale`` (no success for ``SYNC_FRESHNESS_FAIL_HOURS``), ``late`` (none for
``SYNC_FRESHNESS_WARN_HOURS``), ``new`` (never synced, listed for less than the fail window),
``healthy``; ``unknown`` when the school's figures could not be read (the reason is in its row).
A school is computed on its own: one that cannot be read never stops the others or the view.

A school that becomes **overdue** (no success for the fail window, or never synced that long
after it was first listed) is alerted once to its own target (:mod:`sync_pipelines.alerts`), and
once again when it recovers.
"""

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from sync_pipelines.alerts import PARTITION_TAG, Alert, dispatch, first_line, step_failures, webserver_url
from sync_pipelines.metadata import md_table
from sync_pipelines.moodle.entities import GRADES_ASSET
from sync_pipelines.tenants import TenantConfigError, TenantSet, read_tenants, tenant_partitions
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.warehouse.schema import sync_runs
from sync_pipelines.warehouse.store import Warehouse
from sync_pipelines.webhooks.drop import DEAD, DEAD_SUFFIX, SOURCES, drop_dir
from sync_pipelines.zoho.modules import MODULES

logger = logging.getLogger(__name__)

WARN_HOURS_ENV = "SYNC_FRESHNESS_WARN_HOURS"
FAIL_HOURS_ENV = "SYNC_FRESHNESS_FAIL_HOURS"
INTERVAL_ENV = "SYNC_HEALTH_INTERVAL_SECONDS"
DEFAULT_WARN_HOURS = 1.0
DEFAULT_FAIL_HOURS = 3.0

HEALTH_ASSET = dg.AssetKey(["ops", "school_health"])
GRADES_KEY = dg.AssetKey(GRADES_ASSET.split("/"))
ZOHO_KEYS = tuple(dg.AssetKey(["zoho", m.name]) for m in MODULES)
#: The assets whose freshness is each school's: every Zoho module, and the grades read from Moodle.
FRESH_ASSETS = frozenset({*ZOHO_KEYS, GRADES_KEY})

STATES = ("failing", "stale", "late", "new", "healthy", "unknown")


def freshness_windows() -> tuple[timedelta, timedelta]:
    """``(warn, fail)`` from the environment; defaults (1 h, 3 h) when unset or unusable."""
    try:
        warn = float(os.environ.get(WARN_HOURS_ENV, DEFAULT_WARN_HOURS))
        fail = float(os.environ.get(FAIL_HOURS_ENV, DEFAULT_FAIL_HOURS))
    except ValueError:
        logger.warning("%s / %s are not numbers: using 1 h and 3 h", WARN_HOURS_ENV, FAIL_HOURS_ENV)
        warn, fail = DEFAULT_WARN_HOURS, DEFAULT_FAIL_HOURS
    # Dagster asks for windows of a minute or more, the warning before the failure.
    if not (1 / 60 <= warn < fail):
        logger.warning(
            "%s=%s must be under %s=%s (and at least a minute): using 1 h and 3 h",
            WARN_HOURS_ENV,
            warn,
            FAIL_HOURS_ENV,
            fail,
        )
        warn, fail = DEFAULT_WARN_HOURS, DEFAULT_FAIL_HOURS
    return timedelta(hours=warn), timedelta(hours=fail)


def freshness_policy() -> dg.FreshnessPolicy:
    warn, fail = freshness_windows()
    return dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn)


def with_freshness_policies(assets: Iterable) -> list:
    """``assets`` with the freshness policy on the specs of :data:`FRESH_ASSETS` (others as given)."""
    policy = freshness_policy()

    def _apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        return dg.apply_freshness_policy(spec, policy) if spec.key in FRESH_ASSETS else spec

    out = []
    for asset in assets:
        if isinstance(asset, dg.AssetsDefinition) and any(k in FRESH_ASSETS for k in asset.keys):
            out.append(asset.map_asset_specs(_apply))
        else:
            out.append(asset)
    return out


#: Where the health view shows in the UI: one observation per tick of the ``school_health`` sensor.
school_health_asset = dg.AssetSpec(
    key=HEALTH_ASSET,
    group_name="ops",
    kinds={"zoho", "moodle"},
    owners=["team:data-platform"],
    description="One row per school: healthy, late, stale, failing, new or unknown; last successful sync "
    "(its stalest module), minutes since, last run and failing step, dead letters pending. Observed by the "
    "school_health sensor; per-school numbers in the metadata (<school>: minutes_since_success, …).",
)


# --- one school -----------------------------------------------------------------------------------


@dataclass
class SchoolHealth:
    """One row of the health view."""

    tenant_id: str
    name: str
    state: str = "unknown"
    last_success: datetime | None = None
    stalest: str = ""
    minutes_since: float | None = None
    last_run: str = ""
    last_run_id: str = ""
    failing: str = ""
    dead_letters: int = 0
    overdue: bool = False
    note: str = ""

    def row(self) -> dict:
        return {
            "school": self.tenant_id,
            "state": self.state,
            "last success (UTC)": self.last_success.strftime("%Y-%m-%d %H:%M")
            if self.last_success
            else "never",
            "minutes since": round(self.minutes_since) if self.minutes_since is not None else None,
            "stalest": self.stalest,
            "last run": self.last_run,
            "failing": self.failing,
            "dead letters": self.dead_letters,
            "note": self.note,
        }


def _aware(value: object) -> datetime | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class WarehouseRuns:
    """Per tenant and module: the latest success, and the latest failure newer than it (its error)."""

    success: dict[tuple[str, str], datetime] = field(default_factory=dict)
    failure: dict[tuple[str, str], tuple[datetime, str]] = field(default_factory=dict)


def warehouse_runs(store: Warehouse) -> WarehouseRuns:
    """At most two grouped queries over ``sync_runs``, whatever its length: the latest time per
    tenant, module and outcome; then, if some module failed after its last success, the error of
    each module's latest failure."""
    c = sync_runs.c
    latest = sa.func.max(c.finished_at).label("at")
    grouped = sa.select(c.tenant_id, c.module, c.outcome, latest).group_by(c.tenant_id, c.module, c.outcome)
    out = WarehouseRuns()
    failed_at: dict[tuple[str, str], datetime] = {}
    with store.engine.connect() as conn:
        for tenant_id, module, outcome, at in conn.execute(grouped):
            when = _aware(at)
            if when is None:
                continue
            if outcome == "success":
                out.success[(tenant_id, module)] = when
            else:
                failed_at[(tenant_id, module)] = max(when, failed_at.get((tenant_id, module), when))
        failing = {k for k, when in failed_at.items() if k not in out.success or out.success[k] < when}
        if not failing:
            return out
        last = (
            sa.select(c.tenant_id, c.module, sa.func.max(c.finished_at).label("at"))
            .where(c.outcome != "success")
            .group_by(c.tenant_id, c.module)
            .subquery()
        )
        errors = sa.select(c.tenant_id, c.module, c.error).join(
            last,
            sa.and_(c.tenant_id == last.c.tenant_id, c.module == last.c.module, c.finished_at == last.c.at),
        )
        for tenant_id, module, error in conn.execute(errors.where(c.outcome != "success")):
            if (tenant_id, module) in failing:
                out.failure[(tenant_id, module)] = (
                    failed_at[(tenant_id, module)],
                    first_line(error or "", 200),
                )
    return out


def _dead_letters(root: Path, tenant_id: str) -> int:
    count = 0
    for source in SOURCES:
        folder = root / tenant_id / source / DEAD
        if folder.is_dir():
            count += sum(
                1
                for p in folder.glob("*.json")
                if not p.name.endswith(DEAD_SUFFIX) and not p.name.startswith(".")
            )
    return count


def _last_run(instance: dg.DagsterInstance, tenant_id: str) -> dg.RunRecord | None:
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            tags={PARTITION_TAG: tenant_id},
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
        ),
        limit=1,
    )
    return records[0] if records else None


def assess(
    tenant_id: str,
    *,
    instance: dg.DagsterInstance,
    runs: WarehouseRuns | None,
    runs_error: str,
    tenants: TenantSet | None,
    drop_root: Path,
    now: datetime,
    first_seen: datetime,
) -> SchoolHealth:
    """The health of one school (raises only on a bug; the caller still shields the others)."""
    warn, fail = freshness_windows()
    tenant = tenants.tenants.get(tenant_id) if tenants else None
    health = SchoolHealth(tenant_id, tenant.name if tenant else tenant_id)
    health.dead_letters = _dead_letters(drop_root, tenant_id)

    record = _last_run(instance, tenant_id)
    failing = ""
    if record is not None:
        run = record.dagster_run
        ended = record.end_time or record.update_timestamp.timestamp()
        at = datetime.fromtimestamp(ended, UTC).strftime("%H:%M")
        health.last_run = f"{run.status.value} {run.job_name} {run.run_id[:8]} at {at}"
        health.last_run_id = run.run_id
        if run.status == dg.DagsterRunStatus.FAILURE:
            steps = step_failures(instance, run.run_id)
            failing = "; ".join(f"{s}: {e}" for s, e in steps[:2]) or "the run failed (no step failed)"

    if runs is None:
        health.note = runs_error
        return health  # unknown: without the warehouse nothing can be said of freshness
    latest: dict[str, datetime | None] = {
        f"zoho/{m.name}": runs.success.get((tenant_id, m.name)) for m in MODULES
    }
    if tenant is None or tenant.moodle is not None:
        grades = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=GRADES_KEY, asset_partitions=[tenant_id]), limit=1
        ).records
        latest[GRADES_ASSET] = datetime.fromtimestamp(grades[0].timestamp, UTC) if grades else None
    never = [k for k, v in latest.items() if v is None]
    if never and len(never) < len(latest):
        health.stalest = f"{never[0]} (never)" + (f" +{len(never) - 1}" if len(never) > 1 else "")
    elif not never:
        stalest = min(latest, key=lambda k: latest[k])
        health.stalest = stalest
        health.last_success = latest[stalest]
        health.minutes_since = (now - latest[stalest]).total_seconds() / 60.0
    if not failing:
        module_failures = [
            (m.name, err) for m in MODULES if (err := runs.failure.get((tenant_id, m.name))) is not None
        ]
        if (
            module_failures
            and record is not None
            and record.dagster_run.status != dg.DagsterRunStatus.SUCCESS
        ):
            failing = "; ".join(f"zoho/{name}: {e[1]}" for name, e in module_failures[:2])

    if tenants is not None and tenant_id in tenants.broken:
        failing = f"tenants file: {first_line(tenants.broken[tenant_id], 200)}"
    health.failing = failing
    age = now - health.last_success if health.last_success else None
    health.overdue = age >= fail if age is not None else now - first_seen >= fail
    if failing:
        health.state = "failing"
    elif health.overdue:
        health.state = "stale"
    elif age is None:
        health.state = "new"
    elif age >= warn:
        health.state = "late"
    else:
        health.state = "healthy"
    return health


def school_health(
    instance: dg.DagsterInstance,
    store: Warehouse | None,
    tenants: TenantSet | None,
    *,
    now: datetime | None = None,
    first_seen: Mapping[str, float] | None = None,
    drop_root: Path | None = None,
    store_error: str = "",
) -> list[SchoolHealth]:
    """Every school's health: the tenants partitions and the schools of the tenants file."""
    now = now or datetime.now(UTC)
    first_seen = first_seen or {}
    schools = set(instance.get_dynamic_partitions(tenant_partitions.name))
    if tenants is not None:
        schools |= tenants.partition_ids
    runs, runs_error = None, store_error or "warehouse unavailable"
    if store is not None:
        try:
            runs = warehouse_runs(store)
        except Exception as exc:  # one unreadable warehouse makes every row unknown, not the view fail
            runs_error = f"warehouse unreadable: {type(exc).__name__}: {first_line(str(exc), 160)}"
    root = drop_root or drop_dir()
    rows = []
    for tenant_id in sorted(schools):
        seen = datetime.fromtimestamp(first_seen.get(tenant_id, now.timestamp()), UTC)
        try:
            rows.append(
                assess(
                    tenant_id,
                    instance=instance,
                    runs=runs,
                    runs_error=runs_error,
                    tenants=tenants,
                    drop_root=root,
                    now=now,
                    first_seen=seen,
                )
            )
        except Exception as exc:  # this school's figures only
            logger.exception("school_health: tenant %s could not be assessed", tenant_id)
            rows.append(
                SchoolHealth(
                    tenant_id,
                    tenant_id,
                    note=f"not assessed: {type(exc).__name__}: {first_line(str(exc), 160)}",
                )
            )
    return rows


def health_observation(rows: Sequence[SchoolHealth]) -> dg.AssetObservation:
    """The observation of ``ops/school_health``: the table, the counts, numbers per school."""
    warn, fail = freshness_windows()
    counts = {state: sum(1 for r in rows if r.state == state) for state in STATES}
    metadata: dict[str, object] = {
        "schools": dg.MetadataValue.md(md_table(pd.DataFrame([r.row() for r in rows]))),
        **{state: counts[state] for state in STATES},
        "warn_after_hours": warn.total_seconds() / 3600,
        "fail_after_hours": fail.total_seconds() / 3600,
    }
    for r in rows:
        metadata[f"{r.tenant_id}: state"] = r.state
        metadata[f"{r.tenant_id}: healthy"] = int(r.state == "healthy")
        metadata[f"{r.tenant_id}: dead_letters"] = r.dead_letters
        if r.minutes_since is not None:
            metadata[f"{r.tenant_id}: minutes_since_success"] = round(r.minutes_since, 1)
    bad = [f"{r.tenant_id} {r.state}" for r in rows if r.state not in ("healthy", "new")]
    description = f"{counts['healthy']} of {len(rows)} schools healthy" + (
        f"; {', '.join(bad)}" if bad else ""
    )
    return dg.AssetObservation(asset_key=HEALTH_ASSET, description=description, metadata=metadata)


# --- overdue alerts -------------------------------------------------------------------------------


def _duration(minutes: float) -> str:
    hours, mins = divmod(int(minutes), 60)
    return f"{hours} h {mins:02d} min" if hours else f"{mins} min"


def overdue_alert(h: SchoolHealth, first_seen: float) -> Alert:
    school = f"{h.name} ({h.tenant_id})" if h.name != h.tenant_id else h.tenant_id
    _, fail = freshness_windows()
    if h.last_success is not None:
        since = h.last_success.timestamp()
        subject = f"{school} has not synced for {_duration(h.minutes_since or 0)}"
        lines = [f"Last successful sync: {h.last_success:%Y-%m-%d %H:%M} UTC (stalest: {h.stalest})"]
    else:
        since = first_seen
        subject = f"{school} has never synced ({h.stalest or 'no module'})"
        lines = [f"Listed since {datetime.fromtimestamp(first_seen, UTC):%Y-%m-%d %H:%M} UTC"]
    lines.insert(0, f"School: {school}")
    lines.append(f"Threshold: {fail.total_seconds() / 3600:g} h ({FAIL_HOURS_ENV})")
    if h.last_run:
        lines.append(f"Last run: {h.last_run}")
    if h.failing:
        lines.append(f"Failing: {h.failing}")
    if h.dead_letters:
        lines.append(f"Dead letters pending: {h.dead_letters}")
    if base := webserver_url():
        lines.append(f"Health: {base}/assets/{'/'.join(HEALTH_ASSET.path)}")
    return Alert(
        keys=(f"stale:{h.tenant_id}:{int(since)}",),
        kind="stale",
        tenant_id=h.tenant_id,
        subject=subject,
        lines=tuple(lines),
    )


def recovered_alert(h: SchoolHealth) -> Alert:
    school = f"{h.name} ({h.tenant_id})" if h.name != h.tenant_id else h.tenant_id
    at = h.last_success or datetime.now(UTC)
    return Alert(
        keys=(f"recovered:{h.tenant_id}:{int(at.timestamp())}",),
        kind="recovered",
        tenant_id=h.tenant_id,
        subject=f"{school} is syncing again",
        lines=(f"School: {school}", f"Last successful sync: {at:%Y-%m-%d %H:%M} UTC; state {h.state}"),
    )


def _read_cursor(cursor: str | None) -> tuple[dict[str, float], set[str]]:
    try:
        doc = json.loads(cursor) if cursor else {}
        return {str(k): float(v) for k, v in doc.get("first_seen", {}).items()}, set(doc.get("overdue", []))
    except (ValueError, TypeError, AttributeError):
        return {}, set()


def evaluate_health(
    instance: dg.DagsterInstance,
    store: Warehouse | None,
    tenants: TenantSet | None,
    cursor: str | None,
    *,
    log: logging.Logger,
    now: datetime | None = None,
    store_error: str = "",
    drop_root: Path | None = None,
) -> tuple[dg.AssetObservation, str, list[SchoolHealth]]:
    """One tick: the rows, the observation, the overdue and recovered alerts sent; the new cursor."""
    now = now or datetime.now(UTC)
    first_seen, overdue = _read_cursor(cursor)
    rows = school_health(
        instance, store, tenants, now=now, first_seen=first_seen, drop_root=drop_root, store_error=store_error
    )
    for h in rows:
        first_seen.setdefault(h.tenant_id, now.timestamp())
        if h.state == "unknown":
            continue  # nothing new is known: neither overdue nor recovered
        if h.overdue and h.tenant_id not in overdue:
            dispatch(overdue_alert(h, first_seen[h.tenant_id]), log=log, tenants=tenants, now=now.timestamp())
            overdue.add(h.tenant_id)
        elif not h.overdue and h.tenant_id in overdue:
            if h.last_success is not None:
                dispatch(recovered_alert(h), log=log, tenants=tenants, now=now.timestamp())
            overdue.discard(h.tenant_id)
    listed = {h.tenant_id for h in rows}
    new_cursor = json.dumps(
        {
            "first_seen": {k: v for k, v in sorted(first_seen.items()) if k in listed},
            "overdue": sorted(overdue & listed),
        }
    )
    return health_observation(rows), new_cursor, rows


def _interval_seconds() -> int:
    try:
        return max(30, int(float(os.environ.get(INTERVAL_ENV, "300"))))
    except ValueError:
        logger.warning("%s is not a number of seconds: using 300", INTERVAL_ENV)
        return 300


@dg.sensor(
    name="school_health",
    minimum_interval_seconds=_interval_seconds(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Observes ops/school_health: one row per school (healthy, late, stale, failing, new), from the "
    "Dagster instance and the warehouse's sync_runs; alerts a school once when it goes overdue "
    "(SYNC_FRESHNESS_FAIL_HOURS without a successful sync) and once when it recovers.",
)
def school_health_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
) -> dg.SensorResult:
    try:
        tenants: TenantSet | None = read_tenants()
    except TenantConfigError as exc:
        context.log.warning(f"school_health: tenants file unusable ({exc}); only the partitions are shown")
        tenants = None
    store, store_error = None, ""
    try:
        store = warehouse.get()
    except Exception as exc:
        store_error = f"warehouse unavailable: {type(exc).__name__}: {first_line(str(exc), 160)}"
        context.log.warning(f"school_health: {store_error}")
    started = time.monotonic()
    observation, cursor, rows = evaluate_health(
        context.instance, store, tenants, context.cursor, log=context.log, store_error=store_error
    )
    context.log.info(
        f"school_health: {observation.description} ({len(rows)} schools, {time.monotonic() - started:.1f} s)"
    )
    return dg.SensorResult(asset_events=[observation], cursor=cursor)
