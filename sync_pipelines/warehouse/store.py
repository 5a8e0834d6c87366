"""The tenant-scoped warehouse: read the stored state, apply a diff in one transaction.

Works on SQLite (the embedded default) and PostgreSQL; the SQL is SQLAlchemy Core with the
dialect's own ``INSERT … ON CONFLICT``, always parameterised. Bulk writes go through
:mod:`sync_pipelines.warehouse.sql`: ``COPY`` on PostgreSQL, one ``executemany`` of tuples on SQLite,
both inside the one transaction of :meth:`Warehouse.apply`.
"""

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa

from sync_pipelines.diff import FINGERPRINT_VERSION, ID, VERSION, DiffResult, Status, changes_by_record
from sync_pipelines.warehouse.migrate import upgrade
from sync_pipelines.warehouse.moodle import MoodleStore
from sync_pipelines.warehouse.schema import (
    MODULE_TABLES,
    SUBFORM_TABLES,
    metadata,
    sync_cursors,
    sync_pending,
    sync_results,
    sync_runs,
    webhook_events,
)
from sync_pipelines.warehouse.sql import (
    bulk_insert,
    bulk_upsert,
    fetch_rows,
    in_values,
    upsert_statement,
)
from sync_pipelines.zoho.modules import FINDINGS, MODIFIED, ModuleSpec

logger = logging.getLogger(__name__)


@dataclass
class Cursor:
    """Where the last successful read of a (tenant, module) stopped."""

    modified_since: datetime | None = None
    deleted_since: datetime | None = None
    max_id: str | None = None
    last_full_at: datetime | None = None


@dataclass
class RunInfo:
    """Bookkeeping about one module sync, written to ``sync_runs``."""

    tenant_id: str
    module: str
    mode: str = "incremental"
    dagster_run_id: str | None = None
    sync_run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    api_calls: int = 0
    api_credits: int = 0


@dataclass(frozen=True)
class AppliedEvent:
    """A webhook event a module sync applies, for the ``webhook_events`` ledger."""

    source: str
    event_id: str
    kind: str
    received_at: datetime | None = None


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat() if ts else None


def _aware(ts: datetime | None) -> datetime | None:
    """SQLite hands back naive date-times; everything this store writes is UTC."""
    return ts.replace(tzinfo=UTC) if ts is not None and ts.tzinfo is None else ts


def _parse(ts: str | None) -> datetime | None:
    return datetime.fromisoformat(ts) if ts else None


def _frame(rows: Sequence[tuple], columns: Sequence[str]) -> pd.DataFrame:
    """Rows of plain tuples → a frame of object columns. Plain tuples, never SQLAlchemy ``Row``
    objects: pandas reads tuples in C, and would probe each ``Row`` one attribute at a time."""
    return pd.DataFrame(rows, columns=list(columns), dtype=object)


def _json_default(value):
    """NumPy scalars in a payload → their Python values (as ``to_dict`` would have boxed them)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


_BOOLEANS = {"true": True, "false": False}
_RECORD_ID = r"[0-9]{1,32}"
_INTEGER = r"-?[0-9]{1,18}"


def _objects(s: pd.Series) -> list:
    """A column as a list of plain Python values, ``None`` for missing."""
    values = s.to_numpy(dtype=object)
    missing = pd.isna(values)
    if missing.any():
        values = np.array(values, dtype=object)  # a copy of its own: pandas hands out read-only views
        values[missing] = None
    return values.tolist()


def _integer(value) -> int:
    """An integer's exact value (``int`` of its decimal digits: no trip through a float)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return int(float(value))


def _in_range(parsed: pd.Series) -> pd.Series:
    """Times a database (and Python) can hold, years 1 to 9999; others NaT. Only invalid records
    carry others (their findings keep the value)."""
    if parsed.isna().all():
        return parsed
    ok = parsed.dt.year.between(1, 9999).fillna(False).astype(bool)
    return parsed if ok[parsed.notna()].all() else parsed.where(ok)


def db_columns(frame: pd.DataFrame, spec: ModuleSpec) -> dict[str, list]:
    """Canonical strings → lists of Python values of the SQL column types (``None`` for missing):
    the rows of a bulk write, a column at a time, with no per-row or per-cell pandas call.

    A value that cannot be read as its kind is ``None``.
    """
    kinds = {f.column: f.kind for f in spec.fields}
    kinds[MODIFIED] = "datetime"
    out: dict[str, list] = {}
    for col, kind in kinds.items():
        if col not in frame:
            continue
        s = frame[col]
        # A missing string is missing after conversion too: one mask per column says both.
        match kind:
            case "date":
                parsed = _in_range(pd.to_datetime(s, format="%Y-%m-%d", errors="coerce"))
                values, missing = parsed.dt.date.to_numpy(dtype=object), parsed.isna().to_numpy()
            case "datetime":
                parsed = _in_range(pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601"))
                values, missing = parsed.dt.to_pydatetime(), parsed.isna().to_numpy()
            case "boolean":
                mapped = s.map(_BOOLEANS)
                values, missing = mapped.to_numpy(dtype=object), mapped.isna().to_numpy()
            case "integer":
                # Canonical integers only (at most 18 digits: they fit the column); any other
                # value is NULL here and stays in the record's findings.
                ok = s.astype(object).where(s.notna(), "").str.fullmatch(_INTEGER).fillna(False).astype(bool)
                missing = ~ok.to_numpy()
                raw = s.to_numpy(dtype=object)
                out[col] = [None if m else _integer(v) for v, m in zip(raw, missing, strict=True)]
                continue
            case "lookup":
                # A record id, or nothing: a value that is not one stays in the record's findings.
                ok = (
                    s.astype(object).where(s.notna(), "").str.fullmatch(_RECORD_ID).fillna(False).astype(bool)
                )
                values, missing = s.to_numpy(dtype=object), ~ok.to_numpy()
            case "double" | "currency":
                number = pd.to_numeric(s, errors="coerce")
                values = number.to_numpy(dtype=object)  # Python floats (ints if every one is whole)
                missing = number.isna().to_numpy()
            case _:
                values = s.to_numpy(dtype=object)
                missing = pd.isna(values)
        if missing.any():
            values = np.array(values, dtype=object)  # a copy of its own: pandas hands out read-only views
            values[missing] = None
        out[col] = values.tolist()
    return out


def from_db(frame: pd.DataFrame, spec: ModuleSpec, *, extra: dict[str, str] | None = None) -> pd.DataFrame:
    """SQL values → the canonical strings the diff compares (the inverse of :func:`db_columns`).
    ``extra``: other columns of the frame to convert, with their kinds."""
    out = frame.copy()
    kinds = {f.column: f.kind for f in spec.fields if f.column in frame}
    kinds.update(extra or {})
    for column, kind in kinds.items():
        s = frame[column]
        present = s.notna()
        match kind:
            case "date":
                v = pd.to_datetime(s, errors="coerce").dt.strftime("%Y-%m-%d")
            case "datetime":
                v = pd.to_datetime(s, utc=True, errors="coerce").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            case "boolean":
                v = s.map({True: "true", False: "false"})
            case "integer":
                # Only the values present: a missing one would turn the column into floats,
                # which round integers beyond 2**53.
                v = np.full(len(s), None, dtype=object)
                known = pd.to_numeric(s[present], errors="coerce").astype("Int64").astype(str)
                v[present.to_numpy()] = known.to_numpy(dtype=object)
                v = pd.Series(v, index=s.index, dtype=object)
            case "double" | "currency":
                v = (
                    pd.to_numeric(s, errors="coerce")
                    .astype(float)
                    .astype(str)
                    .str.replace(r"\.0$", "", regex=True)
                )
            case _:
                v = s
        out[column] = v.astype(object).where(present, None)
    return out


def _subform_rows(text: str | None) -> list[dict]:
    """A subform column's canonical JSON → its rows; a value that is not a list of rows (kept as
    text, and a finding of its record) has none."""
    if not text:
        return []
    try:
        rows = json.loads(text)
    except ValueError:
        return []
    return rows if isinstance(rows, list) and all(isinstance(r, dict) for r in rows) else []


#: Rows one sync writes from which the module table's statistics are refreshed at once (PostgreSQL).
ANALYZE_AFTER_ROWS = 10_000


class Warehouse:
    """A warehouse database. ``url`` is any SQLAlchemy URL (``sqlite:///…``, ``postgresql://…``)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        if create:
            # Alembic: the revisions, then the tables brought to the code's metadata in place
            # (sync_pipelines/warehouse/migrate.py); a no-op is one query.
            report = upgrade(self.engine, metadata)
            if report.changed or report.skipped:
                logger.info("warehouse schema upgraded:\n%s", report)

    def __repr__(self) -> str:
        return f"Warehouse({self.engine.url.render_as_string(hide_password=True)})"

    @property
    def moodle(self) -> MoodleStore:
        """The Moodle-side bookkeeping tables (id maps, enrolments, grades, push results)."""
        return MoodleStore(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    def forget_tenant(self, tenant_id: str) -> dict[str, int]:
        """Delete every row of one school, in every table, in one transaction; returns rows per table.

        Other schools' rows are not touched. For a school that starts over (``make demo`` on a
        warehouse that is used for more than the demo), never for a school that is synced.
        """
        deleted: dict[str, int] = {}
        with self.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                if "tenant_id" in table.c:
                    count = conn.execute(table.delete().where(table.c.tenant_id == tenant_id)).rowcount
                    if count:
                        deleted[table.name] = count
        return deleted

    # --- reads --------------------------------------------------------------------------------

    def load_state(
        self,
        tenant_id: str,
        spec: ModuleSpec,
        *,
        with_modified: bool = False,
        nothing: bool = False,
        ids: Sequence[str] | None = None,
        keys: pd.DataFrame | None = None,
    ) -> pd.DataFrame:
        """Stored records of the module: ``zoho_id``, ``fingerprint``, ``aux_fingerprint``,
        ``fingerprint_version``, ``deleted``, natural key; ``Modified_Time`` too when
        ``with_modified`` (pushed records are ordered against it).

        Every stored record, or with ``ids`` only those of ``ids`` and, with ``keys`` (a frame of
        the natural key's columns), every record holding one of those keys' first column (what
        the diff needs of the others: who holds a key first). Both are indexed lookups, each one
        statement whatever the number of values (:func:`in_values`). ``nothing``: the same columns
        and no row, without a query (a sync that fetched nothing has nothing to compare)."""
        t = MODULE_TABLES[spec.name]
        # The flag as the database returns it (a bool, or SQLite's 0/1), made a bool by pandas:
        # typed as an integer, it needs no conversion of each value on the way.
        deleted = sa.type_coerce(t.c.deleted_at.isnot(None), sa.Integer()).label("deleted")
        cols = [t.c.zoho_id, t.c.fingerprint, t.c.aux_fingerprint, t.c.fingerprint_version, deleted]
        cols += [t.c[c] for c in spec.natural_key]
        names = [ID, "fingerprint", "aux_fingerprint", VERSION, "deleted", *spec.natural_key]
        if with_modified and spec.has_modified_time:
            cols.append(t.c.zoho_modified_time)
            names.append(MODIFIED)
        query = sa.select(*cols).where(t.c.tenant_id == tenant_id)
        rows: list = []
        if nothing:
            pass
        elif ids is None:
            with self.engine.connect() as conn:
                rows = fetch_rows(conn, query)
        else:
            wanted = sorted({str(i) for i in ids if i is not None})
            first = spec.natural_key[0] if spec.natural_key and keys is not None else None
            held = sorted({v for v in keys[first].tolist() if isinstance(v, str)}) if first else []
            with self.engine.connect() as conn:
                for among in in_values(conn, t.c.zoho_id, wanted):
                    rows += [tuple(r) for r in conn.execute(query.where(among))]
                for among in in_values(conn, t.c[first], held) if first else ():
                    rows += [tuple(r) for r in conn.execute(query.where(among))]
            rows = list({r[0]: r for r in rows}.values())  # a record found both ways, once
        frame = _frame(rows, names)
        if MODIFIED in frame:
            frame[MODIFIED] = from_db(frame, spec, extra={MODIFIED: "datetime"})[MODIFIED]
        frame["deleted"] = frame["deleted"].astype(bool)
        return frame

    def load_rows(
        self, tenant_id: str, spec: ModuleSpec, ids: Sequence[str], columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Stored canonical values of ``ids`` (of ``columns``, default every field), indexed by
        ``zoho_id``."""
        t = MODULE_TABLES[spec.name]
        wanted = list(columns) if columns is not None else list(spec.columns)
        cols = [t.c.zoho_id, *(t.c[c] for c in wanted)]
        rows: list = []
        with self.engine.connect() as conn:
            for among in in_values(conn, t.c.zoho_id, list(ids)):
                rows += [
                    tuple(r) for r in conn.execute(sa.select(*cols).where(t.c.tenant_id == tenant_id, among))
                ]
        frame = _frame(rows, [ID, *wanted])
        return from_db(frame, spec).set_index(ID)

    def read_table(self, tenant_id: str, spec: ModuleSpec, *, include_deleted: bool = False) -> pd.DataFrame:
        """The module's rows for one tenant, as stored (for reports, checks and tests)."""
        t = MODULE_TABLES[spec.name]
        q = sa.select(t).where(t.c.tenant_id == tenant_id).order_by(t.c.zoho_id)
        if not include_deleted:
            q = q.where(t.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            return pd.read_sql(q, conn)

    def count(self, tenant_id: str, spec: ModuleSpec) -> int:
        """Live rows of the module for one tenant."""
        t = MODULE_TABLES[spec.name]
        q = sa.select(sa.func.count()).where(t.c.tenant_id == tenant_id, t.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def accounted_for(self, tenant_id: str, spec: ModuleSpec) -> dict[str, int]:
        """What the warehouse holds of a module: live rows, of which ``invalid`` carry findings,
        and ``pending``: records an earlier version held back, stored by the next sync."""
        t = MODULE_TABLES[spec.name]
        live = t.c.deleted_at.is_(None)
        q = sa.select(sa.func.count(), sa.func.count(t.c.findings)).where(t.c.tenant_id == tenant_id, live)
        pq = sa.select(sa.func.count()).where(
            sync_pending.c.tenant_id == tenant_id, sync_pending.c.module == spec.name
        )
        with self.engine.connect() as conn:
            rows, invalid = conn.execute(q).one()
            pending = int(conn.execute(pq).scalar_one())
        return {"live": int(rows), "invalid": int(invalid), "pending": pending}

    def known_ids(self, tenant_id: str, spec: ModuleSpec) -> pd.Index:
        """Ids of the module's live (not deleted) records."""
        t = MODULE_TABLES[spec.name]
        q = sa.select(t.c.zoho_id).where(t.c.tenant_id == tenant_id, t.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            return pd.Index([r[0] for r in fetch_rows(conn, q)], dtype=object)

    def load_pending(self, tenant_id: str, spec: ModuleSpec) -> pd.DataFrame:
        """Records an earlier version held back (SKIPPED) in ``sync_pending``, as canonical rows:
        the first sync after the upgrade stores them with the records it reads."""
        q = sa.select(sync_pending.c.payload).where(
            sync_pending.c.tenant_id == tenant_id, sync_pending.c.module == spec.name
        )
        with self.engine.connect() as conn:
            payloads = conn.execute(q).scalars().all()
        return pd.DataFrame(
            [json.loads(p) for p in payloads], columns=[ID, *spec.columns, MODIFIED], dtype=object
        )

    def applied_events(self, tenant_id: str, module: str, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` the ledger holds as applied to ``module`` for ``tenant_id``."""
        found: set[str] = set()
        with self.engine.connect() as conn:
            for among in in_values(conn, webhook_events.c.event_id, list(event_ids)):
                rows = conn.execute(
                    sa.select(webhook_events.c.event_id).where(
                        webhook_events.c.tenant_id == tenant_id, webhook_events.c.module == module, among
                    )
                )
                found.update(r[0] for r in rows)
        return found

    def event_ledger(self, tenant_id: str) -> pd.DataFrame:
        """Every webhook event applied for ``tenant_id`` (one row per event and module)."""
        q = sa.select(webhook_events).where(webhook_events.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            return pd.read_sql(q.order_by(webhook_events.c.applied_at), conn)

    def cursor(self, tenant_id: str, spec: ModuleSpec) -> Cursor:
        q = sa.select(sync_cursors).where(
            sync_cursors.c.tenant_id == tenant_id, sync_cursors.c.module == spec.name
        )
        with self.engine.connect() as conn:
            row = conn.execute(q).mappings().first()
        if row is None:
            return Cursor()
        return Cursor(
            modified_since=_parse(row["modified_since"]),
            deleted_since=_parse(row["deleted_since"]),
            max_id=row["max_id"],
            last_full_at=_aware(row["last_full_at"]),
        )

    def runs(self, tenant_id: str, module: str | None = None) -> pd.DataFrame:
        q = sa.select(sync_runs).where(sync_runs.c.tenant_id == tenant_id).order_by(sync_runs.c.started_at)
        if module:
            q = q.where(sync_runs.c.module == module)
        with self.engine.connect() as conn:
            return pd.read_sql(q, conn)

    def results(self, tenant_id: str, module: str | None = None, zoho_id: str | None = None) -> pd.DataFrame:
        """The per-record log: answers "why didn't this student sync?"."""
        q = sa.select(sync_results).where(sync_results.c.tenant_id == tenant_id).order_by(sync_results.c.id)
        if module:
            q = q.where(sync_results.c.module == module)
        if zoho_id:
            q = q.where(sync_results.c.zoho_id == zoho_id)
        with self.engine.connect() as conn:
            return pd.read_sql(q, conn)

    # --- writes -------------------------------------------------------------------------------

    def apply(
        self,
        spec: ModuleSpec,
        result: DiffResult,
        run: RunInfo,
        cursor: Cursor,
        *,
        forget_pending: Sequence[str] = (),
        events: Sequence[AppliedEvent] = (),
    ) -> None:
        """Apply one diff, its log, the pending set, the new cursor and the webhook events it
        applies (the ``webhook_events`` ledger) in a single transaction.

        ``forget_pending``: ids of records an earlier version held back that no longer exist in
        Zoho, taken out of the pending set. Either all of it is written or, on any error, none of it: the next
        run starts from the previous cursor and converges.
        """
        now = datetime.now(UTC)
        tenant = run.tenant_id
        records = result.records
        t = MODULE_TABLES[spec.name]
        write = records[records["change"].isin([Status.NEW, Status.UPDATED, Status.REFRESHED])]
        deleted = records.loc[records["sync_status"] == Status.DELETED, ID].tolist()
        resolved = [*records[ID].tolist(), *forget_pending]

        with self.engine.begin() as conn:
            if len(write):
                self._upsert_rows(conn, t, spec, tenant, write, run.sync_run_id, now)
            if len(result.refingerprinted):
                self._refingerprint(conn, t, tenant, records, result.refingerprinted)
            for among in in_values(conn, t.c.zoho_id, deleted):
                conn.execute(
                    t.update()
                    .where(t.c.tenant_id == tenant, among)
                    .values(deleted_at=now, updated_at=now, sync_run_id=run.sync_run_id)
                )
            self._write_subforms(conn, spec, tenant, write, deleted, run.sync_run_id, now)
            for among in in_values(conn, sync_pending.c.zoho_id, resolved):
                conn.execute(
                    sync_pending.delete().where(
                        sync_pending.c.tenant_id == tenant, sync_pending.c.module == spec.name, among
                    )
                )
            self._log(conn, spec, result, run, cursor, now)
            self._save_cursor(conn, spec, tenant, cursor, now)
            if events:
                rows = [
                    {
                        "tenant_id": tenant,
                        "source": e.source,
                        "event_id": e.event_id,
                        "module": spec.name,
                        "kind": e.kind,
                        "received_at": e.received_at,
                        "applied_at": now,
                        "sync_run_id": run.sync_run_id,
                        "dagster_run_id": run.dagster_run_id,
                    }
                    for e in {e.event_id: e for e in events}.values()
                ]
                conn.execute(
                    upsert_statement(
                        self.engine, webhook_events, ["tenant_id", "source", "event_id", "module"]
                    ),
                    rows,
                )
        if len(write) >= ANALYZE_AFTER_ROWS and self.engine.dialect.name == "postgresql":
            # After a bulk load, as PostgreSQL's documentation advises: the planner's statistics
            # otherwise wait for autovacuum, and until then the indexed lookups of the next
            # incremental run (load_state by ids and natural keys) may be planned as table scans.
            with self.engine.begin() as conn:
                conn.exec_driver_sql(f"ANALYZE {self.engine.dialect.identifier_preparer.format_table(t)}")

    def _write_subforms(
        self,
        conn: sa.Connection,
        spec: ModuleSpec,
        tenant: str,
        write: pd.DataFrame,
        deleted: Sequence[str],
        sync_run_id: str,
        now: datetime,
    ) -> None:
        """Each subform's child rows follow their parent: replaced when it is written, marked
        deleted with it."""
        for f in spec.fields:
            if f.kind != "subform":
                continue
            child = SUBFORM_TABLES[(spec.name, f.column)]
            parents = write[~write[ID].duplicated(keep="last")]
            for among in in_values(conn, child.c.parent_id, parents[ID].tolist()):
                conn.execute(child.delete().where(child.c.tenant_id == tenant, among))
            rows: dict[str, list] = {"parent_id": [], "row_id": [], "position": [], "fields": []}
            for parent, text in zip(_objects(parents[ID]), _objects(parents[f.column]), strict=True):
                for position, row in enumerate(_subform_rows(text)):
                    row_id = row.get("id")
                    rows["parent_id"].append(parent)
                    rows["row_id"].append(str(row_id) if row_id else f"{parent}:{position}")
                    rows["position"].append(position)
                    rows["fields"].append(json.dumps(row, ensure_ascii=False, sort_keys=True))
            if rows["parent_id"]:
                bulk_insert(
                    conn,
                    child,
                    rows,
                    constants={
                        "tenant_id": tenant,
                        "updated_at": now,
                        "deleted_at": None,
                        "sync_run_id": sync_run_id,
                    },
                )
            for among in in_values(conn, child.c.parent_id, list(deleted)):
                conn.execute(
                    child.update()
                    .where(child.c.tenant_id == tenant, among)
                    .values(deleted_at=now, updated_at=now, sync_run_id=sync_run_id)
                )

    def read_subform(self, tenant_id: str, spec: ModuleSpec, column: str) -> pd.DataFrame:
        """A subform's child rows for one tenant (for reports, checks and tests)."""
        child = SUBFORM_TABLES[(spec.name, column)]
        q = (
            sa.select(child)
            .where(child.c.tenant_id == tenant_id)
            .order_by(child.c.parent_id, child.c.position)
        )
        with self.engine.connect() as conn:
            return pd.read_sql(q, conn)

    def record_failure(self, run: RunInfo, error: str) -> None:
        """Log a module sync that failed before anything was applied."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(
                sync_runs.insert().values(
                    sync_run_id=run.sync_run_id,
                    dagster_run_id=run.dagster_run_id,
                    tenant_id=run.tenant_id,
                    module=run.module,
                    started_at=run.started_at,
                    finished_at=now,
                    outcome="failed",
                    mode=run.mode,
                    counts=None,
                    api_calls=run.api_calls,
                    api_credits=run.api_credits,
                    watermark=None,
                    error=error[:4000],
                )
            )

    @staticmethod
    def _refingerprint(
        conn: sa.Connection, t: sa.Table, tenant: str, records: pd.DataFrame, ids: pd.Index
    ) -> None:
        """Give UNCHANGED rows stored in an older fingerprint format their current fingerprints
        (nothing else of them changes: not ``updated_at``, not the run that last wrote them)."""
        rows = records[records[ID].isin(ids) & records["change"].eq(Status.UNCHANGED)]
        rows = rows[~rows[ID].duplicated(keep="last")]
        aux = rows["aux_fingerprint"] if "aux_fingerprint" in rows else pd.Series(None, index=rows.index)
        stmt = (
            t.update()
            .where(t.c.tenant_id == tenant, t.c.zoho_id == sa.bindparam("_id"))
            .values(fingerprint=sa.bindparam("_fp"), aux_fingerprint=sa.bindparam("_aux"))
            .values({VERSION: FINGERPRINT_VERSION})
        )
        params = [
            {"_id": z, "_fp": f, "_aux": a}
            for z, f, a in zip(_objects(rows[ID]), _objects(rows["fingerprint"]), _objects(aux), strict=True)
        ]
        if params:
            conn.execute(stmt, params)

    def _upsert_rows(
        self,
        conn: sa.Connection,
        t: sa.Table,
        spec: ModuleSpec,
        tenant: str,
        write: pd.DataFrame,
        sync_run_id: str,
        now: datetime,
    ) -> None:
        # One row per id, the last one winning (as one upsert after another would leave it).
        write = write[~write[ID].duplicated(keep="last")]
        columns = {ID: _objects(write[ID]), **db_columns(write, spec)}
        columns["fingerprint"] = _objects(write["fingerprint"])
        columns[VERSION] = [FINGERPRINT_VERSION] * len(write)
        for col in ("aux_fingerprint", FINDINGS):
            columns[col] = _objects(write[col]) if col in write else [None] * len(write)
        for col in (*spec.columns, MODIFIED):  # a column the frame lacks is written empty
            columns.setdefault(col, [None] * len(write))
        bulk_upsert(
            conn,
            t,
            columns,
            ["tenant_id", "zoho_id"],
            keep=frozenset({"first_seen_at"}),
            constants={
                "tenant_id": tenant,
                "first_seen_at": now,
                "updated_at": now,
                "deleted_at": None,
                "sync_run_id": sync_run_id,
            },
        )

    def _log(
        self,
        conn: sa.Connection,
        spec: ModuleSpec,
        result: DiffResult,
        run: RunInfo,
        cursor: Cursor,
        now: datetime,
    ) -> None:
        conn.execute(
            sync_runs.insert().values(
                sync_run_id=run.sync_run_id,
                dagster_run_id=run.dagster_run_id,
                tenant_id=run.tenant_id,
                module=spec.name,
                started_at=run.started_at,
                finished_at=now,
                outcome="success",
                mode=run.mode,
                counts=json.dumps(result.counts()),
                api_calls=run.api_calls,
                api_credits=run.api_credits,
                watermark=_iso(cursor.modified_since),
                error=None,
            )
        )
        recs = result.records
        if recs.empty:
            return
        changed = changes_by_record(result.changes)
        zids = _objects(recs[ID])
        reasons = recs["sync_reason"].to_numpy(dtype=object).tolist()
        found = recs[FINDINGS].to_numpy(dtype=object).tolist() if FINDINGS in recs else [None] * len(zids)
        bulk_insert(
            conn,
            sync_results,
            {
                "zoho_id": zids,
                "status": _objects(recs["sync_status"]),
                "change": _objects(recs["change"]) if "change" in recs else [None] * len(zids),
                "reason": [r if isinstance(r, str) else None for r in reasons],
                "findings": [f if isinstance(f, str) else None for f in found],
                "changes": [
                    json.dumps(changed[z], ensure_ascii=False) if z in changed else None for z in zids
                ]
                if changed
                else [None] * len(zids),
            },
            constants={"sync_run_id": run.sync_run_id, "tenant_id": run.tenant_id, "module": spec.name},
        )

    def _save_cursor(
        self, conn: sa.Connection, spec: ModuleSpec, tenant: str, cursor: Cursor, now: datetime
    ) -> None:
        values = {
            "tenant_id": tenant,
            "module": spec.name,
            "modified_since": _iso(cursor.modified_since),
            "deleted_since": _iso(cursor.deleted_since),
            "max_id": cursor.max_id,
            "last_full_at": cursor.last_full_at,
            "updated_at": now,
        }
        conn.execute(upsert_statement(self.engine, sync_cursors, ["tenant_id", "module"]), [values])


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # The wait first: switching a fresh database to WAL takes a lock another process may hold
    # (two first runs at once), and without a busy timeout SQLite answers "database is locked".
    cur.execute("PRAGMA busy_timeout=30000")  # tenants sync in parallel processes
    cur.execute("PRAGMA journal_mode=WAL")  # readers (the UI, reports) never block a sync
    cur.close()
