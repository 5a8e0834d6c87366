"""The daily change report of each school, and what the sync log says about how fresh data is.

``reports/daily_changes`` (partitioned by tenant, like every asset): per Zoho module, for one day,
the records that were NEW, UPDATED, DELETED and INVALID in that day's successful syncs (each
record once per status, however many runs saw it), the syncs run and failed, their API calls, and
the top reasons of the invalid records (``field: rule`` from their findings, with how many records
break it). It is read from the warehouse's sync log (``sync_runs``, ``sync_results``; no table of
its own), shown in the UI as a markdown table and as numeric metadata (totals, and
``<module>.<status>`` per module, plotted day after day), and written as CSV to
``<local dir>/reports/<tenant>/<day>.csv`` (the path is in the metadata).

**Once a day per school.** A day is a calendar day in the schedules' time zone
(``SYNC_SCHEDULE_TIMEZONE``, default UTC), a run belonging to the day it started in. Without a
``day`` in its config the asset reports *yesterday*, once: the ``daily_change_report`` schedule
runs the ``daily_report`` job for every school at 00:30 (``SYNC_REPORT_CRON``; the 15-minute syncs
leave the report out), and a second run the same day makes none (no materialization, the log says
why), nor does a run while the school has no sync before the day's end. ``day: 2026-11-03`` (or ``today``, ``yesterday``)
reports that day whenever asked: a report made before the day is over says ``complete: false``,
and the day is reported again, complete, the next day.
"""

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from sync_pipelines.metadata import md_table, numeric
from sync_pipelines.schedules import TIMEZONE, per_tenant
from sync_pipelines.settings import local_dir
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.warehouse.schema import sync_results, sync_runs
from sync_pipelines.zoho.assets import asset_key
from sync_pipelines.zoho.modules import MODULES

REPORT_KEY = dg.AssetKey(["reports", "daily_changes"])
#: The statuses the report counts, as ``sync_results`` spells them, and its columns' names for them.
STATUSES = {"NEW": "new", "UPDATED": "updated", "DELETED": "deleted", "INVALID": "invalid"}
#: Invalid reasons shown per module.
TOP_REASONS = 3
#: The CSV's columns, in order.
COLUMNS = (
    "tenant_id",
    "day",
    "module",
    "runs",
    "failed_runs",
    *STATUSES.values(),
    "api_calls",
    "top_invalid_reasons",
)
COLUMN_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("tenant_id", "string", description="the school"),
        dg.TableColumn("day", "date", description="the calendar day, in the schedules' time zone"),
        dg.TableColumn("module", "string", description="the Zoho module (the module table's name)"),
        dg.TableColumn("runs", "int", description="module syncs started that day"),
        dg.TableColumn("failed_runs", "int", description="of which failed (nothing applied)"),
        dg.TableColumn("new", "int", description="records stored for the first time"),
        dg.TableColumn("updated", "int", description="records whose business fields changed"),
        dg.TableColumn("deleted", "int", description="records Zoho confirmed deleted"),
        dg.TableColumn("invalid", "int", description="records stored with findings (rules they break)"),
        dg.TableColumn("api_calls", "int", description="Zoho API calls of the day's syncs"),
        dg.TableColumn(
            "top_invalid_reasons",
            "string",
            description=f"the {TOP_REASONS} commonest `field: rule` of the invalid records, with their counts",
        ),
    ]
)
REPORT_CRON_ENV = "SYNC_REPORT_CRON"
REPORT_CRON = os.environ.get(REPORT_CRON_ENV, "30 0 * * *")


# --- the day and the queries ---------------------------------------------------------------------


def day_window(day: date, tz: str = TIMEZONE) -> tuple[datetime, datetime]:
    """The day's start and end (exclusive), in UTC, for a calendar day in time zone ``tz``."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time(), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive date-times; the warehouse writes UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


@dataclass
class DailyReport:
    """One school's changes of one day."""

    tenant_id: str
    day: date
    timezone: str
    start: datetime
    end: datetime
    #: One row per module (every module of the module table, zeros included): :data:`COLUMNS`.
    table: pd.DataFrame
    #: The top invalid reasons: ``module``, ``reason`` (``field: rule``), ``records``.
    reasons: pd.DataFrame

    def totals(self) -> dict[str, int]:
        return {c: int(self.table[c].sum()) for c in ("runs", "failed_runs", *STATUSES.values(), "api_calls")}


def daily_changes(
    store: Warehouse, tenant_id: str, day: date, *, tz: str = TIMEZONE, top: int = TOP_REASONS
) -> DailyReport:
    """The changes of ``tenant_id``'s Zoho modules on ``day`` (see the module docstring).

    Counts distinct records per module and status over the module syncs that started that day
    and succeeded; a record UPDATED twice is one update, one UPDATED in one run and DELETED in
    another counts in both. Runs and API calls count every sync, failed ones too.
    """
    start, end = day_window(day, tz)
    in_day = sa.and_(
        sync_runs.c.tenant_id == tenant_id, sync_runs.c.started_at >= start, sync_runs.c.started_at < end
    )
    runs_q = (
        sa.select(
            sync_runs.c.module,
            sync_runs.c.outcome,
            sa.func.count().label("runs"),
            sa.func.coalesce(sa.func.sum(sync_runs.c.api_calls), 0).label("api_calls"),
        )
        .where(in_day)
        .group_by(sync_runs.c.module, sync_runs.c.outcome)
    )
    joined = sync_results.join(sync_runs, sync_results.c.sync_run_id == sync_runs.c.sync_run_id)
    seen = sa.and_(in_day, sync_runs.c.outcome == "success", sync_results.c.tenant_id == tenant_id)
    status_q = (
        sa.select(
            sync_runs.c.module,
            sync_results.c.status,
            sa.func.count(sa.distinct(sync_results.c.zoho_id)).label("records"),
        )
        .select_from(joined)
        .where(seen, sync_results.c.status.in_(list(STATUSES)))
        .group_by(sync_runs.c.module, sync_results.c.status)
    )
    findings_q = (
        sa.select(sync_runs.c.module, sync_results.c.zoho_id, sync_results.c.findings)
        .select_from(joined)
        .where(seen, sync_results.c.status == "INVALID")
        .distinct()
    )
    with store.engine.connect() as conn:
        runs = [tuple(r) for r in conn.execute(runs_q)]
        statuses = [tuple(r) for r in conn.execute(status_q)]
        findings = [tuple(r) for r in conn.execute(findings_q)]

    names = [m.name for m in MODULES]
    table = pd.DataFrame(0, index=pd.Index(names, name="module"), columns=list(COLUMNS[3:-1]), dtype="int64")
    for name, outcome, count, calls in runs:
        if name not in table.index:
            continue  # a module since dropped from the module table
        table.at[name, "runs"] += int(count)
        table.at[name, "api_calls"] += int(calls or 0)
        if outcome != "success":
            table.at[name, "failed_runs"] += int(count)
    for name, status, count in statuses:
        if name in table.index:
            table.at[name, STATUSES[status]] = int(count)
    reasons = _top_reasons(findings, top)
    shown = {
        name: "; ".join(f"{r.reason} ({r.records})" for r in group.itertuples())
        for name, group in reasons.groupby("module", sort=False)
    }
    table = table.reset_index()
    table["top_invalid_reasons"] = [shown.get(name, "") for name in table["module"]]
    table.insert(0, "day", day.isoformat())
    table.insert(0, "tenant_id", tenant_id)
    return DailyReport(tenant_id, day, tz, start, end, table[list(COLUMNS)], reasons)


def _top_reasons(rows: Sequence[tuple[str, str, str | None]], top: int) -> pd.DataFrame:
    """Per module, the ``top`` commonest ``field: rule`` of the invalid records (each record once
    per reason, whatever its values), most records first, then by name."""
    records: dict[tuple[str, str], set[str]] = {}
    for name, zoho_id, text in rows:
        try:
            found = json.loads(text) if text else []
        except ValueError:
            found = []
        labels = {
            f"{f.get('field') or '?'}: {f.get('rule') or '?'}" for f in found if isinstance(f, dict)
        } or {"(no findings recorded)"}
        for label in labels:
            records.setdefault((name, label), set()).add(zoho_id)
    frame = pd.DataFrame(
        [(name, label, len(ids)) for (name, label), ids in records.items()],
        columns=["module", "reason", "records"],
    )
    if frame.empty:
        return frame
    order = {m.name: i for i, m in enumerate(MODULES)}
    frame["_m"] = frame["module"].map(order).fillna(len(order))
    frame = frame.sort_values(["_m", "records", "reason"], ascending=[True, False, True])
    return frame.groupby("module", sort=False).head(top).drop(columns="_m").reset_index(drop=True)


def synced_before(store: Warehouse, tenant_id: str, moment: datetime) -> bool:
    """Whether the school had any module sync started before ``moment``."""
    q = sa.select(sync_runs.c.sync_run_id).where(
        sync_runs.c.tenant_id == tenant_id, sync_runs.c.started_at < moment
    )
    with store.engine.connect() as conn:
        return conn.execute(q.limit(1)).first() is not None


def last_reads(store: Warehouse, tenant_id: str, modules: Sequence[str]) -> dict[str, datetime]:
    """When each of ``modules`` (module table names) last started a successful sync."""
    q = (
        sa.select(sync_runs.c.module, sa.func.max(sync_runs.c.started_at))
        .where(
            sync_runs.c.tenant_id == tenant_id,
            sync_runs.c.outcome == "success",
            sync_runs.c.module.in_(list(modules)),
        )
        .group_by(sync_runs.c.module)
    )
    with store.engine.connect() as conn:
        return {name: _aware(at) for name, at in conn.execute(q) if at is not None}


def source_lag_seconds(
    store: Warehouse, tenant_id: str, modules: Sequence[str], now: datetime | None = None
) -> float | None:
    """How old the Zoho data a step downstream works from is: seconds from the last successful
    read of the stalest of ``modules`` to ``now``. ``None`` when one of them was never read."""
    if not modules:
        return None
    read = last_reads(store, tenant_id, modules)
    if any(m not in read for m in modules):
        return None
    now = now or datetime.now(UTC)
    return max(0.0, (now - min(read.values())).total_seconds())


# --- the file --------------------------------------------------------------------------------------


def report_dir() -> Path:
    """Where the CSV files go: ``<local dir>/reports`` (``SYNC_LOCAL_DIR``, default ``.local``)."""
    return local_dir() / "reports"


def write_csv(report: DailyReport, root: Path | None = None) -> Path:
    """The report as ``<root>/<tenant>/<day>.csv`` (replaced whole: written aside, then renamed)."""
    path = (root or report_dir()) / report.tenant_id / f"{report.day.isoformat()}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.tmp")
    report.table.to_csv(aside, index=False, lineterminator="\n")
    aside.replace(path)
    return path


def report_metadata(report: DailyReport, path: Path, *, complete: bool) -> dict[str, object]:
    """The report in the UI: totals and ``<module>.<status>`` as numbers, the tables, the CSV."""
    table = report.table
    per_module = {
        f"{row['module']}.{column}": int(row[column])
        for row in table.to_dict("records")
        for column in ("runs", *STATUSES.values())
    }
    shown = table.drop(columns=["tenant_id", "day"])
    total = {"module": "total", **report.totals(), "top_invalid_reasons": ""}
    shown = pd.concat([shown, pd.DataFrame([total])], ignore_index=True)
    meta: dict[str, object] = {
        **numeric({"dagster/row_count": len(table), **report.totals(), **per_module}),
        "day": report.day.isoformat(),
        "timezone": report.timezone,
        "complete": dg.MetadataValue.bool(complete),
        "changes": dg.MetadataValue.md(md_table(shown, limit=len(shown))),
        "top_invalid_reasons": dg.MetadataValue.md(md_table(report.reasons)),
        "csv": dg.MetadataValue.path(str(path)),
        "dagster/column_schema": COLUMN_SCHEMA,
    }
    return meta


# --- the asset, its job and schedule ---------------------------------------------------------------


class DailyReportConfig(dg.Config):
    """Run configuration of the daily change report."""

    day: str = ""
    """The day to report, ``YYYY-MM-DD``, ``today`` or ``yesterday``; empty: yesterday, once
    (the first run after midnight makes it, later runs make none)."""


def _today(tz: str) -> date:
    return datetime.now(ZoneInfo(tz)).date()


def parse_day(text: str, tz: str = TIMEZONE) -> date:
    """A config ``day``: ``YYYY-MM-DD``, ``today`` or ``yesterday`` (in time zone ``tz``)."""
    word = text.strip().lower()
    if word == "today":
        return _today(tz)
    if word == "yesterday":
        return _today(tz) - timedelta(days=1)
    try:
        return date.fromisoformat(word)
    except ValueError:
        raise dg.Failure(description=f"day must be YYYY-MM-DD, today or yesterday, not {text!r}") from None


def _reported(instance: dg.DagsterInstance, tenant_id: str, day: date) -> bool:
    """Whether a complete report of ``day`` is among the partition's last materializations."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=REPORT_KEY, asset_partitions=[tenant_id]), limit=30
    ).records
    for record in records:
        meta = record.asset_materialization.metadata if record.asset_materialization else {}
        said, complete = meta.get("day"), meta.get("complete")
        if said is not None and said.value == day.isoformat() and complete is not None and complete.value:
            return True
    return False


@dg.asset(
    key=REPORT_KEY,
    deps=[asset_key(spec) for spec in MODULES],
    partitions_def=tenant_partitions,
    group_name="reports",
    kinds={"zoho", "sql", "csv"},
    owners=["team:data-platform"],
    output_required=False,
    description=(
        "A school's day of Zoho changes, per module: the records NEW, UPDATED, DELETED and INVALID "
        "in the day's syncs, the runs and failed runs, API calls, and the top invalid reasons "
        "(field: rule). From the sync log (sync_runs, sync_results); a markdown table, numbers per "
        "module, and a CSV file under .local/reports/<tenant>/<day>.csv. Made once a day, for "
        "yesterday, or for the day its config names."
    ),
    metadata={"dagster/column_schema": COLUMN_SCHEMA},
)
def daily_changes_report(
    context: dg.AssetExecutionContext, config: DailyReportConfig, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult]:
    tenant, tz = context.partition_key, TIMEZONE
    store = warehouse.get()
    if config.day:
        day = parse_day(config.day, tz)
    else:
        day = _today(tz) - timedelta(days=1)
        if _reported(context.instance, tenant, day):
            context.log.info(f"daily changes of {tenant} for {day} already reported; nothing to do")
            return
        if not synced_before(store, tenant, day_window(day, tz)[1]):
            context.log.info(f"{tenant} had no sync by the end of {day}; no report")
            return
    report = daily_changes(store, tenant, day, tz=tz)
    path = write_csv(report)
    complete = datetime.now(UTC) >= report.end
    totals = report.totals()
    context.log.info(
        f"daily changes of {tenant} for {day}{'' if complete else ' (so far)'}: "
        + ", ".join(f"{k} {v}" for k, v in totals.items())
        + f"; CSV {path}"
    )
    yield dg.MaterializeResult(metadata=report_metadata(report, path, complete=complete))


#: The report alone, for one school (partition).
daily_report = dg.define_asset_job(
    name="daily_report",
    selection=dg.AssetSelection.assets(REPORT_KEY),
    description="Yesterday's change report of one school (once: a second run the same day makes none).",
)


@dg.schedule(
    name="daily_change_report",
    job=daily_report,
    cron_schedule=REPORT_CRON,
    execution_timezone=TIMEZONE,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Yesterday's change report of every tenant, unless a sync after midnight already made it.",
)
def daily_change_report(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    return per_tenant(context, "report")
