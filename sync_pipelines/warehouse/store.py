"""The tenant-scoped warehouse: read the stored state, apply a diff in one transaction.

Works on SQLite (the embedded default) and PostgreSQL; the SQL is SQLAlchemy Core with the
dialect's own ``INSERT … ON CONFLICT``, always parameterised.
"""

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

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
from sync_pipelines.warehouse.sql import upsert_statement
from sync_pipelines.zoho.canonical import MODIFIED
from sync_pipelines.zoho.modules import ModuleSpec

_CHUNK = 500  # ids per IN (...) list: far below SQLite's and PostgreSQL's parameter limits


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


def _chunks(values: Sequence, size: int = _CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def to_db(frame: pd.DataFrame, spec: ModuleSpec) -> pd.DataFrame:
    """Canonical strings → values of the SQL column types (one column at a time)."""
    out = pd.DataFrame(index=frame.index)
    kinds = {f.column: f.kind for f in spec.fields}
    kinds[MODIFIED] = "datetime"
    for col, kind in kinds.items():
        if col not in frame:
            continue
        s = frame[col]
        match kind:
            case "date":
                v = pd.to_datetime(s, format="%Y-%m-%d", errors="coerce").dt.date
            case "datetime":
                v = pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601").dt.to_pydatetime()
                v = pd.Series(v, index=s.index, dtype=object)
            case "boolean":
                v = s.map({"true": True, "false": False})
            case "integer":
                v = pd.to_numeric(s, errors="coerce").astype("Int64")
            case "double" | "currency":
                v = pd.to_numeric(s, errors="coerce")
            case _:
                v = s
        v = v.astype(object)
        out[col] = v.where(s.notna() & pd.notna(v), None)
    return out


def from_db(frame: pd.DataFrame, spec: ModuleSpec) -> pd.DataFrame:
    """SQL values → the canonical strings the diff compares (the inverse of :func:`to_db`)."""
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
                v = pd.to_numeric(s, errors="coerce").astype("Int64").astype(str)
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
        cols = [t.c.zoho_id, t.c.fingerprint, t.c.deleted_at.isnot(None).label("deleted")]
        cols += [t.c[c] for c in spec.natural_key]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*cols).where(t.c.tenant_id == tenant_id)).all()
        frame = pd.DataFrame(rows, columns=[ID, "fingerprint", "deleted", *spec.natural_key], dtype=object)
        frame["deleted"] = frame["deleted"].astype(bool)
        return frame

    def load_rows(self, tenant_id: str, spec: ModuleSpec, ids: Sequence[str]) -> pd.DataFrame:
        """Stored canonical values of ``ids``, indexed by ``zoho_id``."""
        t = MODULE_TABLES[spec.name]
        cols = [t.c.zoho_id, *(t.c[c] for c in spec.columns)]
        rows: list = []
        with self.engine.connect() as conn:
            for chunk in _chunks(list(ids)):
                rows += conn.execute(
                    sa.select(*cols).where(t.c.tenant_id == tenant_id, t.c.zoho_id.in_(chunk))
                ).all()
        frame = pd.DataFrame(rows, columns=[ID, *spec.columns], dtype=object)
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
            latest = pd.DataFrame(conn.execute(q).all(), columns=["zoho_id", "status"])
            pending = int(conn.execute(pq).scalar_one())
        latest = latest.drop_duplicates("zoho_id", keep="last")
        invalid = latest[(latest["status"] == Status.INVALID) & ~latest["zoho_id"].isin(live)]
        return {"live": len(live), "pending": pending, "invalid": len(invalid)}

    def known_ids(self, tenant_id: str, spec: ModuleSpec) -> pd.Index:
        """Ids of the module's live (not deleted) records."""
        t = MODULE_TABLES[spec.name]
        q = sa.select(t.c.zoho_id).where(t.c.tenant_id == tenant_id, t.c.deleted_at.is_(None))
        with self.engine.connect() as conn:
            return pd.Index(conn.execute(q).scalars().all(), dtype=object)

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

    def apply(self, spec: ModuleSpec, result: DiffResult, run: RunInfo, cursor: Cursor) -> None:
        """Apply one diff, its log, the pending set and the new cursor in a single transaction.

        Either all of it is written or, on any error, none of it: the next run starts from the
        previous cursor and converges.
        """
        now = datetime.now(UTC)
        tenant = run.tenant_id
        records = result.records
        t = MODULE_TABLES[spec.name]
        write = records[records["sync_status"].isin([Status.NEW, Status.UPDATED])]
        deleted = records.loc[records["sync_status"] == Status.DELETED, ID].tolist()
        skipped = records[records["sync_status"] == Status.SKIPPED]
        resolved = records.loc[records["sync_status"] != Status.SKIPPED, ID].tolist()

        with self.engine.begin() as conn:
            if len(write):
                self._upsert_rows(conn, t, spec, tenant, write, run.sync_run_id, now)
            if deleted:
                conn.execute(
                    t.update()
                    .where(t.c.tenant_id == tenant, t.c.zoho_id == sa.bindparam("zid"))
                    .values(deleted_at=now, updated_at=now, sync_run_id=run.sync_run_id),
                    [{"zid": z} for z in deleted],
                )
            for chunk in _chunks(resolved):
                conn.execute(
                    sync_pending.delete().where(
                        sync_pending.c.tenant_id == tenant,
                        sync_pending.c.module == spec.name,
                        sync_pending.c.zoho_id.in_(chunk),
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
        values = to_db(write, spec)
        values.insert(0, "zoho_id", write[ID].to_numpy())
        values["fingerprint"] = write["fingerprint"].to_numpy()
        if MODIFIED not in values:
            values[MODIFIED] = None
        values = values.assign(
            tenant_id=tenant, first_seen_at=now, updated_at=now, deleted_at=None, sync_run_id=sync_run_id
        )
        rows = values.astype(object).where(values.notna(), None).to_dict("records")
        conn.execute(
            upsert_statement(self.engine, t, ["tenant_id", "zoho_id"], keep=frozenset({"first_seen_at"})),
            rows,
        )

    def _upsert_pending(
        self, conn: sa.Connection, spec: ModuleSpec, tenant: str, skipped: pd.DataFrame, now: datetime
    ) -> None:
        cols = [ID, *spec.columns, *([MODIFIED] if MODIFIED in skipped else [])]
        payloads = skipped[cols].astype(object).where(skipped[cols].notna(), None).to_dict("records")
        rows = [
            {
                "tenant_id": tenant,
                "module": spec.name,
                "zoho_id": p[ID],
                "reason": reason,
                "payload": json.dumps(p, ensure_ascii=False),
                "first_skipped_at": now,
                "last_seen_at": now,
            }
            for p, reason in zip(payloads, skipped["sync_reason"], strict=True)
        ]
        keys = ["tenant_id", "module", "zoho_id"]
        conn.execute(
            upsert_statement(self.engine, sync_pending, keys, keep=frozenset({"first_skipped_at"})), rows
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
        rows = [
            {
                "sync_run_id": run.sync_run_id,
                "tenant_id": run.tenant_id,
                "module": spec.name,
                "zoho_id": zid,
                "status": status,
                "reason": reason if isinstance(reason, str) else None,
                "changes": json.dumps(changed[zid], ensure_ascii=False) if zid in changed else None,
            }
            for zid, status, reason in recs[[ID, "sync_status", "sync_reason"]].itertuples(index=False)
        ]
        conn.execute(sync_results.insert(), rows)

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
