"""The tenant-scoped warehouse: read the stored state, apply a diff in one transaction.

Works on SQLite (the embedded default) and PostgreSQL; the SQL is SQLAlchemy Core with the
dialect's own ``INSERT … ON CONFLICT``, always parameterised. Bulk writes go through
:mod:`sync_pipelines.warehouse.sql`: ``COPY`` on PostgreSQL, one ``executemany`` of tuples on SQLite,
both inside the one transaction of :meth:`Warehouse.apply`.
"""

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa

from sync_pipelines.diff import ID, DiffResult, Status, changes_by_record
from sync_pipelines.warehouse.moodle import MoodleStore
from sync_pipelines.warehouse.schema import (
    MODULE_TABLES,
    metadata,
    sync_cursors,
    sync_pending,
    sync_results,
    sync_runs,
)
from sync_pipelines.warehouse.sql import (
    bulk_insert,
    bulk_upsert,
    fetch_rows,
    in_values,
    upsert_statement,
)
from sync_pipelines.zoho.canonical import MODIFIED
from sync_pipelines.zoho.modules import ModuleSpec


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
                parsed = pd.to_datetime(s, format="%Y-%m-%d", errors="coerce")
                values, missing = parsed.dt.date.to_numpy(dtype=object), parsed.isna().to_numpy()
            case "datetime":
                parsed = pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601")
                values, missing = parsed.dt.to_pydatetime(), parsed.isna().to_numpy()
            case "boolean":
                mapped = s.map(_BOOLEANS)
                values, missing = mapped.to_numpy(dtype=object), mapped.isna().to_numpy()
            case "integer":
                missing = pd.to_numeric(s, errors="coerce").isna().to_numpy()
                raw = s.to_numpy(dtype=object)
                out[col] = [None if m else _integer(v) for v, m in zip(raw, missing, strict=True)]
                continue
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


def from_db(frame: pd.DataFrame, spec: ModuleSpec) -> pd.DataFrame:
    """SQL values → the canonical strings the diff compares (the inverse of :func:`db_columns`)."""
    out = frame.copy()
    for f in spec.fields:
        s = frame[f.column]
        present = s.notna()
        match f.kind:
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
        out[f.column] = v.astype(object).where(present, None)
    return out


class Warehouse:
    """A warehouse database. ``url`` is any SQLAlchemy URL (``sqlite:///…``, ``postgresql://…``)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.engine = sa.create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        if create:
            metadata.create_all(self.engine)

    def __repr__(self) -> str:
        return f"Warehouse({self.engine.url.render_as_string(hide_password=True)})"

    @property
    def moodle(self) -> MoodleStore:
        """The Moodle-side bookkeeping tables (id maps, enrolments, grades, push results)."""
        return MoodleStore(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    # --- reads --------------------------------------------------------------------------------

    def load_state(self, tenant_id: str, spec: ModuleSpec) -> pd.DataFrame:
        """Every stored record of the module: ``zoho_id``, ``fingerprint``, ``deleted``, natural key."""
        t = MODULE_TABLES[spec.name]
        # The flag as the database returns it (a bool, or SQLite's 0/1), made a bool by pandas:
        # typed as an integer, it needs no conversion of each value on the way.
        deleted = sa.type_coerce(t.c.deleted_at.isnot(None), sa.Integer()).label("deleted")
        cols = [t.c.zoho_id, t.c.fingerprint, deleted]
        cols += [t.c[c] for c in spec.natural_key]
        with self.engine.connect() as conn:
            rows = fetch_rows(conn, sa.select(*cols).where(t.c.tenant_id == tenant_id))
        frame = _frame(rows, [ID, "fingerprint", "deleted", *spec.natural_key])
        frame["deleted"] = frame["deleted"].astype(bool)
        return frame

    def load_rows(self, tenant_id: str, spec: ModuleSpec, ids: Sequence[str]) -> pd.DataFrame:
        """Stored canonical values of ``ids``, indexed by ``zoho_id``."""
        t = MODULE_TABLES[spec.name]
        cols = [t.c.zoho_id, *(t.c[c] for c in spec.columns)]
        rows: list = []
        with self.engine.connect() as conn:
            for among in in_values(conn, t.c.zoho_id, list(ids)):
                rows += [
                    tuple(r) for r in conn.execute(sa.select(*cols).where(t.c.tenant_id == tenant_id, among))
                ]
        frame = _frame(rows, [ID, *spec.columns])
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
        """What the warehouse accounts for of a module: live rows, records waiting (SKIPPED),
        and records held back as INVALID (latest status INVALID, not stored)."""
        live = set(self.known_ids(tenant_id, spec))
        r = sync_results
        q = (
            sa.select(r.c.zoho_id, r.c.status)
            .where(r.c.tenant_id == tenant_id, r.c.module == spec.name)
            .order_by(r.c.id)
        )
        pq = sa.select(sa.func.count()).where(
            sync_pending.c.tenant_id == tenant_id, sync_pending.c.module == spec.name
        )
        with self.engine.connect() as conn:
            latest = _frame(fetch_rows(conn, q), ["zoho_id", "status"])
            pending = int(conn.execute(pq).scalar_one())
        latest = latest.drop_duplicates("zoho_id", keep="last")
        invalid = latest[(latest["status"] == Status.INVALID) & ~latest["zoho_id"].isin(live)]
        return {"live": len(live), "pending": pending, "invalid": len(invalid)}

    def known_ids(self, tenant_id: str, spec: ModuleSpec) -> pd.Index:
        """Ids of the module's live (not deleted) records."""
        t = MODULE_TABLES[spec.name]
        q = sa.select(t.c.zoho_id).where(t.c.tenant_id == tenant_id, t.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            return pd.Index([r[0] for r in fetch_rows(conn, q)], dtype=object)

    def load_pending(self, tenant_id: str, spec: ModuleSpec) -> pd.DataFrame:
        """SKIPPED records waiting for a lookup target, as canonical rows."""
        q = sa.select(sync_pending.c.payload).where(
            sync_pending.c.tenant_id == tenant_id, sync_pending.c.module == spec.name
        )
        with self.engine.connect() as conn:
            payloads = conn.execute(q).scalars().all()
        return pd.DataFrame(
            [json.loads(p) for p in payloads], columns=[ID, *spec.columns, MODIFIED], dtype=object
        )

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
    ) -> None:
        """Apply one diff, its log, the pending set and the new cursor in a single transaction.

        ``forget_pending``: ids of waiting (SKIPPED) records that no longer exist in Zoho, taken
        out of the pending set. Either all of it is written or, on any error, none of it: the next
        run starts from the previous cursor and converges.
        """
        now = datetime.now(UTC)
        tenant = run.tenant_id
        records = result.records
        t = MODULE_TABLES[spec.name]
        write = records[records["sync_status"].isin([Status.NEW, Status.UPDATED])]
        deleted = records.loc[records["sync_status"] == Status.DELETED, ID].tolist()
        skipped = records[records["sync_status"] == Status.SKIPPED]
        resolved = [*records.loc[records["sync_status"] != Status.SKIPPED, ID].tolist(), *forget_pending]

        with self.engine.begin() as conn:
            if len(write):
                self._upsert_rows(conn, t, spec, tenant, write, run.sync_run_id, now)
            for among in in_values(conn, t.c.zoho_id, deleted):
                conn.execute(
                    t.update()
                    .where(t.c.tenant_id == tenant, among)
                    .values(deleted_at=now, updated_at=now, sync_run_id=run.sync_run_id)
                )
            for among in in_values(conn, sync_pending.c.zoho_id, resolved):
                conn.execute(
                    sync_pending.delete().where(
                        sync_pending.c.tenant_id == tenant, sync_pending.c.module == spec.name, among
                    )
                )
            if len(skipped):
                self._upsert_pending(conn, spec, tenant, skipped, now)
            self._log(conn, spec, result, run, cursor, now)
            self._save_cursor(conn, spec, tenant, cursor, now)

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

    def _upsert_pending(
        self, conn: sa.Connection, spec: ModuleSpec, tenant: str, skipped: pd.DataFrame, now: datetime
    ) -> None:
        skipped = skipped[~skipped[ID].duplicated(keep="last")]
        cols = [ID, *spec.columns, *([MODIFIED] if MODIFIED in skipped else [])]
        values = [_objects(skipped[c]) for c in cols]
        payloads = [
            json.dumps(dict(zip(cols, row, strict=True)), ensure_ascii=False, default=_json_default)
            for row in zip(*values, strict=True)
        ]
        bulk_upsert(
            conn,
            sync_pending,
            {"zoho_id": values[0], "reason": _objects(skipped["sync_reason"]), "payload": payloads},
            ["tenant_id", "module", "zoho_id"],
            keep=frozenset({"first_skipped_at"}),
            constants={
                "tenant_id": tenant,
                "module": spec.name,
                "first_skipped_at": now,
                "last_seen_at": now,
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
        bulk_insert(
            conn,
            sync_results,
            {
                "zoho_id": zids,
                "status": _objects(recs["sync_status"]),
                "reason": [r if isinstance(r, str) else None for r in reasons],
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
    cur.execute("PRAGMA journal_mode=WAL")  # readers (the UI, reports) never block a sync
    cur.execute("PRAGMA busy_timeout=30000")  # tenants sync in parallel processes
    cur.close()
