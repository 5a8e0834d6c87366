"""Moodle-side bookkeeping in the warehouse: id maps, enrolments, grades, push results.

The id map is what makes every Moodle write idempotent: a Zoho record is created in Moodle once,
then only updated, and only when the payload pushed last time differs. Every write, successful
or not, leaves a row in ``moodle_push_results`` with Moodle's errorcode and message.
"""

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa

from sync_pipelines.warehouse.schema import metadata, sync_cursors
from sync_pipelines.warehouse.sql import upsert_statement

moodle_id_map = sa.Table(
    "moodle_id_map",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("entity", sa.String(16), primary_key=True, comment="user, course or category"),
    sa.Column(
        "zoho_id", sa.String(64), primary_key=True, comment="the Zoho record the Moodle object mirrors"
    ),
    sa.Column("zoho_module", sa.String(32), nullable=False),
    sa.Column("moodle_id", sa.BigInteger(), nullable=False),
    sa.Column("pushed_fingerprint", sa.String(64), comment="SHA-256 of the payload last written to Moodle"),
    sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_moodle_id_map_moodle", "tenant_id", "entity", "moodle_id", unique=True),
    comment="Zoho id ↔ Moodle id, per tenant and entity.",
)

moodle_enrolment_map = sa.Table(
    "moodle_enrolment_map",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(96), primary_key=True, comment="enrolment:<zoho id> or teacher:<class id>"),
    sa.Column("moodle_user_id", sa.BigInteger(), nullable=False),
    sa.Column("moodle_course_id", sa.BigInteger(), nullable=False),
    sa.Column("role_id", sa.Integer(), nullable=False),
    sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=False),
    comment="Enrolments this pipeline made in Moodle and still holds.",
)

moodle_grades = sa.Table(
    "moodle_grades",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("composite_key", sa.String(64), primary_key=True, comment="<moodle user id>_<grade item id>"),
    sa.Column("moodle_user_id", sa.BigInteger(), nullable=False),
    sa.Column("moodle_course_id", sa.BigInteger(), nullable=False),
    sa.Column("grade_item_id", sa.BigInteger(), nullable=False),
    sa.Column("item_name", sa.Text()),
    sa.Column("student_zoho_id", sa.String(32)),
    sa.Column("class_zoho_id", sa.String(32)),
    sa.Column("grade_raw", sa.Float()),
    sa.Column("grade_max", sa.Float()),
    sa.Column("percentage", sa.Float()),
    sa.Column("btec_grade", sa.String(24), comment="Distinction, Merit, Pass, Refer or Refer (last attempt)"),
    sa.Column(
        "letter", sa.String(16), comment="the value written to BTEC_Grades.Grade (the school's picklist)"
    ),
    sa.Column("grading", sa.String(16), comment="percentage, or criteria (a rubric of the unit's criteria)"),
    sa.Column("criteria", sa.Text(), comment="JSON: criterion code → achieved, for a criteria grade"),
    sa.Column("remarks", sa.Text(), comment="JSON: criterion code → the grader's remark on it"),
    sa.Column("reason", sa.Text(), comment="why the criteria give this grade, or no grade"),
    sa.Column("unit_zoho_id", sa.String(32)),
    sa.Column("attempt", sa.Integer(), comment="1 for the first attempt, 2 for a resubmission"),
    sa.Column("grader_id", sa.BigInteger(), comment="the Moodle user who graded"),
    sa.Column("graded_at", sa.BigInteger(), comment="Unix time of the grade"),
    sa.Column("feedback", sa.Text(), comment="the grader's overall feedback, as text"),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("written_fingerprint", sa.String(64), comment="fingerprint last written to Zoho BTEC_Grades"),
    sa.Column("zoho_grade_id", sa.String(32), comment="the BTEC_Grades record written"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    comment="Grades read from Moodle gradebooks, with their BTEC conversion.",
)

zoho_writeback_state = sa.Table(
    "zoho_writeback_state",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("module", sa.String(64), primary_key=True),
    sa.Column("zoho_id", sa.String(32), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False, comment="SHA-256 of the fields last written"),
    sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
    comment="Sync bookkeeping last written back to each Zoho record.",
)

moodle_push_results = sa.Table(
    "moodle_push_results",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column("target", sa.String(16), nullable=False, comment="moodle or zoho"),
    sa.Column("entity", sa.String(32), nullable=False),
    sa.Column("key", sa.String(96), nullable=False, comment="the Zoho id (or enrolment key) written for"),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column(
        "outcome", sa.String(16), nullable=False, comment="success, error, or skipped (message says why)"
    ),
    sa.Column("remote_id", sa.String(64), comment="Moodle id or Zoho id written"),
    sa.Column("errorcode", sa.Text()),
    sa.Column("message", sa.Text()),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_moodle_push_results_key", "tenant_id", "entity", "key"),
    comment="Every write to Moodle or back to Zoho, per record, with the service's error on failure.",
)


moodle_site = sa.Table(
    "moodle_site",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column(
        "service_user_id",
        sa.BigInteger(),
        nullable=False,
        comment="the Moodle user the pipeline's token acts as (core_webservice_get_site_info userid)",
    ),
    sa.Column("release", sa.Text()),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column(
        "preflight_at", sa.DateTime(timezone=True), comment="when the capability preflight last passed"
    ),
    sa.Column(
        "preflight", sa.Text(), comment="the last preflight's findings (JSON: check, ok, capability, message)"
    ),
    comment="What the pipeline knows of each school's Moodle site; events its own user caused are echoes.",
)


moodle_drift = sa.Table(
    "moodle_drift",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("entity", sa.String(16), primary_key=True, comment="user, category, course or enrolment"),
    sa.Column(
        "side",
        sa.String(8),
        primary_key=True,
        comment="zoho: Moodle lacks or contradicts it; moodle: only Moodle holds it",
    ),
    sa.Column(
        "key",
        sa.String(96),
        primary_key=True,
        comment="the Zoho key, or moodle:<Moodle id> for a Moodle-only object",
    ),
    sa.Column("moodle_id", sa.String(64)),
    sa.Column("kind", sa.String(16), nullable=False, comment="missing, differs or moodle_only"),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column(
        "action",
        sa.String(96),
        nullable=False,
        comment="restored, reported, suspended, hidden, unenrolled (failed)",
    ),
    sa.Column("healed", sa.Boolean(), nullable=False),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    comment="The differences between Zoho and Moodle the last reconciliation of each entity found, and what it did.",
)


moodle_rubrics = sa.Table(
    "moodle_rubrics",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("cmid", sa.BigInteger(), primary_key=True, comment="the assignment's course module"),
    sa.Column("assignment_id", sa.BigInteger(), nullable=False),
    sa.Column("course_id", sa.BigInteger(), nullable=False),
    sa.Column("class_zoho_id", sa.String(32), nullable=False),
    sa.Column("unit_zoho_id", sa.String(32), nullable=False),
    sa.Column("definition_id", sa.BigInteger(), comment="the rubric's grading definition"),
    sa.Column("criteria", sa.Text(), comment="JSON: criterion id → code, level id → points"),
    sa.Column(
        "status",
        sa.String(16),
        nullable=False,
        comment="create, update, unchanged, drift, failed, not_visible",
    ),
    sa.Column("detail", sa.Text()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    comment="Each unit assessment (a Moodle assignment) and the rubric of its unit's BTEC criteria.",
)


@dataclass(frozen=True)
class ReadPosition:
    """Where a Moodle step's reads stand (:meth:`MoodleStore.read_position`).

    Attributes:
        since: for the grade read, the next ``mod_assign_get_grades`` ``since`` (Unix seconds, by
            the Moodle site's own clock); ``None`` before the first.
        last_full_at: when the step last read Moodle in full (every course's gradebook, every
            object of the entity), or ``None``.
    """

    since: int | None = None
    last_full_at: datetime | None = None


#: ``sync_cursors.module`` of a Moodle step's read position: ``moodle/<step>`` (Zoho modules use
#: their bare names, so the two never meet).
def _position_key(step: str) -> str:
    return f"moodle/{step}"


@dataclass(frozen=True)
class Push:
    """One write, for the push log."""

    target: str
    entity: str
    key: str
    action: str
    ok: bool
    remote_id: str | None = None
    errorcode: str | None = None
    message: str | None = None
    #: ``success`` or ``error`` from ``ok`` unless given: ``skipped`` for a record the step could not
    #: use (``message`` says why), which no write was tried for.
    outcome: str | None = None


class MoodleStore:
    """Tenant-scoped access to the Moodle bookkeeping tables."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _upsert(self, conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping], keys: list[str]) -> None:
        if rows:
            conn.execute(upsert_statement(self.engine, table, keys), list(rows))

    # --- the site -----------------------------------------------------------------------------

    def save_site(self, tenant_id: str, service_user_id: int, release: str | None) -> None:
        """Record the pipeline's own Moodle user (from ``core_webservice_get_site_info``)."""
        row = {
            "tenant_id": tenant_id,
            "service_user_id": int(service_user_id),
            "release": release,
            "checked_at": datetime.now(UTC),
        }
        with self.engine.begin() as conn:
            self._upsert(conn, moodle_site, [row], ["tenant_id"])

    def site_checked_at(self, tenant_id: str) -> datetime | None:
        """When the site was last recorded for ``tenant_id``, or ``None``."""
        with self.engine.connect() as conn:
            value = conn.execute(
                sa.select(moodle_site.c.checked_at).where(moodle_site.c.tenant_id == tenant_id)
            ).scalar()
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    def save_preflight(self, tenant_id: str, findings: Sequence[Mapping], passed: bool) -> None:
        """Record a preflight's findings; ``preflight_at`` moves only when it passed."""
        values: dict = {"preflight": json.dumps(list(findings), ensure_ascii=False)}
        if passed:
            values["preflight_at"] = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(moodle_site.update().where(moodle_site.c.tenant_id == tenant_id).values(**values))

    def preflight(self, tenant_id: str) -> tuple[datetime | None, list[dict]]:
        """When the preflight last passed (or ``None``), and the last preflight's findings."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(moodle_site.c.preflight_at, moodle_site.c.preflight).where(
                    moodle_site.c.tenant_id == tenant_id
                )
            ).first()
        if row is None:
            return None, []
        at = row[0].replace(tzinfo=UTC) if row[0] is not None and row[0].tzinfo is None else row[0]
        return at, json.loads(row[1]) if row[1] else []

    def service_users(self) -> dict[str, int]:
        """Tenant → the pipeline's Moodle user id, for every tenant with a recorded site."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(moodle_site.c.tenant_id, moodle_site.c.service_user_id)).all()
        return {tenant: int(user) for tenant, user in rows}

    # --- read positions (the sync_cursors rows of the Moodle steps) ----------------------------

    def read_position(self, tenant_id: str, step: str) -> ReadPosition:
        """The read position of a Moodle step (``grades``, ``users``, ``enrolments``...) of a tenant,
        kept in ``sync_cursors`` under ``moodle/<step>``: ``modified_since`` holds ``since`` as
        Unix seconds, ``last_full_at`` the last full read."""
        t = sync_cursors
        q = sa.select(t.c.modified_since, t.c.last_full_at).where(
            t.c.tenant_id == tenant_id, t.c.module == _position_key(step)
        )
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            return ReadPosition()
        since = int(row[0]) if row[0] not in (None, "") else None
        at = row[1].replace(tzinfo=UTC) if row[1] is not None and row[1].tzinfo is None else row[1]
        return ReadPosition(since=since, last_full_at=at)

    def save_read_position(self, tenant_id: str, step: str, position: ReadPosition) -> None:
        """Store a step's read position (after the step succeeded: a failed run never moves it)."""
        values = {
            "tenant_id": tenant_id,
            "module": _position_key(step),
            "modified_since": None if position.since is None else str(int(position.since)),
            "deleted_since": None,
            "max_id": None,
            "last_full_at": position.last_full_at,
            "updated_at": datetime.now(UTC),
        }
        with self.engine.begin() as conn:
            self._upsert(conn, sync_cursors, [values], ["tenant_id", "module"])

    # --- id map -------------------------------------------------------------------------------

    def id_map(self, tenant_id: str, entity: str) -> pd.DataFrame:
        """``zoho_id`` → ``moodle_id``, ``pushed_fingerprint`` for one entity."""
        t = moodle_id_map
        q = sa.select(t.c.zoho_id, t.c.zoho_module, t.c.moodle_id, t.c.pushed_fingerprint).where(
            t.c.tenant_id == tenant_id, t.c.entity == entity
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        frame = pd.DataFrame(rows, columns=["zoho_id", "zoho_module", "moodle_id", "pushed_fingerprint"])
        return frame.set_index("zoho_id")

    def save_reconciliation(
        self,
        tenant_id: str,
        entity: str,
        *,
        maps: Sequence[Mapping],
        removed: Sequence[str],
        derived: bool,
        pushes: Sequence[Push],
        drift: pd.DataFrame,
        run_id: str | None,
    ) -> None:
        """One reconciliation's outcome, in one transaction: the map rows it made or kept (``key``,
        ``zoho_id``, ``zoho_module``, ``moodle_id``, ``pushed_fingerprint``; for an enrolment the
        ``moodle_id`` is ``<user>:<course>:<role>``), the map keys it dropped, every write and
        skip, and the entity's drift (which replaces the last one's)."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            if derived:
                t = moodle_enrolment_map
                rows = []
                for m in maps:
                    user, course, role = (int(p) for p in str(m["moodle_id"]).split(":"))
                    rows.append(
                        {
                            "tenant_id": tenant_id,
                            "key": m["key"],
                            "moodle_user_id": user,
                            "moodle_course_id": course,
                            "role_id": role,
                            "pushed_at": now,
                        }
                    )
                self._upsert(conn, t, rows, ["tenant_id", "key"])
                if removed:
                    conn.execute(
                        t.delete().where(t.c.tenant_id == tenant_id, t.c.key == sa.bindparam("k")),
                        [{"k": k} for k in removed],
                    )
            else:
                rows = [
                    {
                        "tenant_id": tenant_id,
                        "entity": entity,
                        "zoho_id": m["zoho_id"],
                        "zoho_module": m["zoho_module"],
                        "moodle_id": int(m["moodle_id"]),
                        "pushed_fingerprint": m["pushed_fingerprint"],
                        "pushed_at": now,
                    }
                    for m in maps
                ]
                # A re-created object takes a new Moodle id: the old row goes first (unique index).
                if rows:
                    conn.execute(
                        moodle_id_map.delete().where(
                            moodle_id_map.c.tenant_id == tenant_id,
                            moodle_id_map.c.entity == entity,
                            moodle_id_map.c.zoho_id == sa.bindparam("z"),
                        ),
                        [{"z": r["zoho_id"]} for r in rows],
                    )
                    conn.execute(moodle_id_map.insert(), rows)
            self._replace_drift(conn, tenant_id, entity, drift, run_id, now)
            self._log(conn, tenant_id, pushes, run_id, now)

    def save_rubrics(
        self,
        tenant_id: str,
        rubrics: pd.DataFrame,
        pushes: Sequence[Push],
        drift: pd.DataFrame,
        run_id: str | None,
    ) -> None:
        """The rubric reconciliation's outcome (it replaces the last one's), its writes and drift."""
        now = datetime.now(UTC)
        rows = [
            {
                **{k: (None if pd.isna(v) else v) for k, v in r.items()},
                "tenant_id": tenant_id,
                "updated_at": now,
            }
            for r in rubrics.to_dict("records")
        ]
        with self.engine.begin() as conn:
            conn.execute(moodle_rubrics.delete().where(moodle_rubrics.c.tenant_id == tenant_id))
            if rows:
                conn.execute(moodle_rubrics.insert(), rows)
            self._replace_drift(conn, tenant_id, "rubric", drift, run_id, now)
            self._log(conn, tenant_id, pushes, run_id, now)

    def _replace_drift(
        self,
        conn: sa.Connection,
        tenant_id: str,
        entity: str,
        drift: pd.DataFrame,
        run_id: str | None,
        now: datetime,
    ) -> None:
        """The entity's drift becomes ``drift`` (each reconciliation reports all it finds)."""
        t = moodle_drift
        conn.execute(t.delete().where(t.c.tenant_id == tenant_id, t.c.entity == entity))
        if not len(drift):
            return
        conn.execute(
            t.insert(),
            [
                {
                    "tenant_id": tenant_id,
                    "entity": entity,
                    "side": d["side"],
                    "key": str(d["key"]),
                    "moodle_id": None if pd.isna(d["moodle_id"]) else str(d["moodle_id"]),
                    "kind": d["kind"],
                    "detail": str(d["detail"]),
                    "action": str(d["action"])[:96],
                    "healed": bool(d["healed"]),
                    "dagster_run_id": run_id,
                    "seen_at": now,
                }
                for d in drift.drop_duplicates(["side", "key"]).to_dict("records")
            ],
        )

    def rubrics(self, tenant_id: str) -> pd.DataFrame:
        """The unit assessments and their rubrics (``moodle_rubrics``)."""
        q = (
            sa.select(moodle_rubrics)
            .where(moodle_rubrics.c.tenant_id == tenant_id)
            .order_by(moodle_rubrics.c.cmid)
        )
        with self.engine.connect() as conn:
            return pd.read_sql(q, conn)

    def drift(self, tenant_id: str, entity: str | None = None) -> pd.DataFrame:
        """The drift the last reconciliation of each entity found (``moodle_drift``)."""
        t = moodle_drift
        q = sa.select(t).where(t.c.tenant_id == tenant_id).order_by(t.c.entity, t.c.side, t.c.key)
        if entity:
            q = q.where(t.c.entity == entity)
        with self.engine.connect() as conn:
            return pd.read_sql(q, conn)

    # --- enrolments ---------------------------------------------------------------------------

    def enrolments(self, tenant_id: str) -> pd.DataFrame:
        t = moodle_enrolment_map
        q = sa.select(t.c.key, t.c.moodle_user_id, t.c.moodle_course_id, t.c.role_id).where(
            t.c.tenant_id == tenant_id
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return pd.DataFrame(rows, columns=["key", "moodle_user_id", "moodle_course_id", "role_id"]).set_index(
            "key"
        )

    # --- grades -------------------------------------------------------------------------------

    def grades(self, tenant_id: str) -> pd.DataFrame:
        q = (
            sa.select(moodle_grades)
            .where(moodle_grades.c.tenant_id == tenant_id)
            .order_by(moodle_grades.c.composite_key)
        )
        with self.engine.connect() as conn:
            return pd.read_sql(q, conn)

    def save_grades(self, tenant_id: str, rows: Sequence[Mapping]) -> None:
        """Upsert grades read from Moodle; what was written to Zoho is kept."""
        now = datetime.now(UTC)
        values = [{"tenant_id": tenant_id, "updated_at": now, **r} for r in rows]
        if not values:
            return
        stmt = upsert_statement(
            self.engine,
            moodle_grades,
            ["tenant_id", "composite_key"],
            keep=frozenset({"written_fingerprint", "zoho_grade_id"}),
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, values)

    def mark_grades_written(
        self, tenant_id: str, written: Sequence[Mapping], pushes: Sequence[Push], run_id: str | None
    ) -> None:
        """``written``: ``composite_key``, ``written_fingerprint``, ``zoho_grade_id``."""
        t = moodle_grades
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            if written:
                conn.execute(
                    t.update()
                    .where(t.c.tenant_id == tenant_id, t.c.composite_key == sa.bindparam("k"))
                    .values(written_fingerprint=sa.bindparam("fp"), zoho_grade_id=sa.bindparam("gid")),
                    [
                        {"k": w["composite_key"], "fp": w["written_fingerprint"], "gid": w["zoho_grade_id"]}
                        for w in written
                    ],
                )
            self._log(conn, tenant_id, pushes, run_id, now)

    # --- Zoho write-back ----------------------------------------------------------------------

    def writeback_state(self, tenant_id: str, module: str) -> pd.Series:
        t = zoho_writeback_state
        q = sa.select(t.c.zoho_id, t.c.fingerprint).where(t.c.tenant_id == tenant_id, t.c.module == module)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return pd.Series({r[0]: r[1] for r in rows}, dtype=object)

    def save_writeback(
        self,
        tenant_id: str,
        module: str,
        written: Mapping[str, str],
        pushes: Sequence[Push],
        run_id: str | None,
    ) -> None:
        now = datetime.now(UTC)
        rows = [
            {"tenant_id": tenant_id, "module": module, "zoho_id": z, "fingerprint": fp, "written_at": now}
            for z, fp in written.items()
        ]
        with self.engine.begin() as conn:
            self._upsert(conn, zoho_writeback_state, rows, ["tenant_id", "module", "zoho_id"])
            self._log(conn, tenant_id, pushes, run_id, now)

    # --- the push log -------------------------------------------------------------------------

    def log(self, tenant_id: str, pushes: Sequence[Push], run_id: str | None) -> None:
        with self.engine.begin() as conn:
            self._log(conn, tenant_id, pushes, run_id, datetime.now(UTC))

    def _log(
        self, conn: sa.Connection, tenant_id: str, pushes: Sequence[Push], run_id: str | None, now: datetime
    ) -> None:
        if not pushes:
            return
        conn.execute(
            moodle_push_results.insert(),
            [
                {
                    "tenant_id": tenant_id,
                    "dagster_run_id": run_id,
                    "target": p.target,
                    "entity": p.entity,
                    "key": p.key,
                    "action": p.action,
                    "outcome": p.outcome or ("success" if p.ok else "error"),
                    "remote_id": p.remote_id,
                    "errorcode": p.errorcode,
                    "message": p.message,
                    "at": now,
                }
                for p in pushes
            ],
        )

    def push_results(self, tenant_id: str, entity: str | None = None) -> pd.DataFrame:
        t = moodle_push_results
        q = sa.select(t).where(t.c.tenant_id == tenant_id).order_by(t.c.id)
        if entity:
            q = q.where(t.c.entity == entity)
        with self.engine.connect() as conn:
            return pd.read_sql(q, conn)


def payload_fingerprint(payload: Mapping) -> str:
    """SHA-256 of a payload's canonical JSON (sorted keys, no spaces): what a write would send."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
