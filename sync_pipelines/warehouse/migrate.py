"""Schema migrations of the warehouse: Alembic revisions first, then the tables follow the code.

:func:`upgrade` brings any warehouse — fresh, made by ``create_all`` before migrations existed, or
made by an older version of the code — to the tables of a ``target`` :class:`~sqlalchemy.MetaData`
(the code's ``sync_pipelines.warehouse.schema.metadata``), in place, keeping every row.

Why Alembic, and why two parts
------------------------------
Alembic is SQLAlchemy's own migration tool: the warehouse is SQLAlchemy Core already, and Alembic
brings the three things a hand-written ``ALTER`` generator would have to reinvent for each dialect:
versioned revisions with a version table; a comparison of a live database with a ``MetaData``
(autogenerate) that knows each dialect's reflection quirks; and operations that alter tables the
way the dialect can — plain ``ALTER TABLE`` on PostgreSQL, "batch mode" on SQLite (a new table,
the rows copied, the old one dropped, the new one renamed, indexes re-made), since SQLite cannot
change a column in place.

The module tables are derived from the module table (``sync_pipelines/zoho/modules.py``): a field
added there must not need a hand-written revision, and a revision per field would go stale with
every change of the org's field metadata. So the upgrade has two parts:

1. **Revisions** (``sync_pipelines/warehouse/migrations/versions/``), run with Alembic's
   ``upgrade head``: for what a comparison cannot express — renames, data moves, steps in order.
   ``0001_baseline`` creates the schema of commit 5d5b30b, frozen, written out in the revision
   (``schema.py`` is not imported). A database holding baseline tables but no version table
   (made by ``create_all`` before migrations) is stamped at ``0001_baseline`` instead.
   A **fresh** database (no version table, none of the baseline's or the target's tables) is
   made by ``create_all`` of ``target`` and stamped at the newest revision — Alembic's recipe
   for building an up-to-date database from scratch: revisions move existing rows, a fresh
   warehouse has none, and it is made exactly as the code says, as fast as ``create_all``.
2. **The table-driven part**: ``alembic.autogenerate.produce_migrations`` compares the database
   with ``target``, and its operations are applied with ``alembic.operations.Operations``: new
   tables and columns created, dropped columns dropped, retyped columns converted, nullability,
   indexes and comments (where the dialect has them) changed as reported. Only tables of
   ``target`` are compared: a table the code no longer knows is **never dropped**, it is left alone
   and named in :attr:`MigrationReport.tables_left_alone`. Server defaults are not compared. A
   renamed column looks to the comparison like a dropped column and a new one: a rename is a
   revision (it runs first, and the comparison then finds the column in place).

Retyping, and values that cannot be converted
---------------------------------------------
A value is converted through its text form: it keeps its meaning when that text is valid input
for the new type (``'2024-03-01'`` → a date, ``'42'`` → an integer, ``12.0`` → ``12``, a
date → ``'2024-03-01'``), and text longer than a new ``VARCHAR(n)`` is not valid (it is never
truncated). A value that is not valid (``'soon'`` as a date, ``1.5`` as an integer, ``true`` as an
integer) does not lose its row: the row stays, that one value becomes NULL, and the old value is
kept, as text, in the table ``warehouse_rejected_values`` (table, column, the row's primary key as
JSON, old value, old and new type, when), counted in :attr:`Retype.rejected`. If the column was
NOT NULL it is left NULL-able (reported in :attr:`MigrationReport.skipped`).

* PostgreSQL: ``ALTER TABLE … ALTER COLUMN … TYPE … USING CAST(CAST(col AS TEXT) AS new)``, the
  table locked first, the session in UTC. When that cast would fail, the values that would fail it
  are found one by one (a temporary PL/pgSQL function that tries the cast), saved and set to NULL
  before the ``ALTER``.
* SQLite: the table is recreated in batch mode with the new type, and the values are converted in
  Python (ISO 8601 for dates and times, PostgreSQL's spellings of booleans, decimal digits for
  integers) and written in the new type's storage format — after the copy, by primary key (before
  it, by rowid, in a table without one). Alembic's batch copy would ``CAST``, and
  ``CAST('2024-03-01' AS DATE)`` is ``2024`` in SQLite: the copy here is a plain ``INSERT …
  SELECT``. Values of types this does not know (JSON, binary, custom types) are kept as stored.

Other changes that cannot be made as the target says are not made, and said in ``skipped``: a NOT
NULL column added to a table that has rows (and no server default) is added NULL-able; NOT NULL is
not set on a column holding NULLs; a unique index the rows violate is not created. Each is tried
again at the next upgrade that is not a no-op.

Concurrency, and the no-op fast path
------------------------------------
Every ``Warehouse(...)`` construction calls :func:`upgrade`, so the common case costs one query:
the fingerprint of ``target`` (its DDL for the engine's dialect, comments, indexes, and the newest
revision) is compared with the one stored in ``warehouse_schema_state`` by the last upgrade; equal
means nothing to do. Otherwise the upgrade takes a lock, checks again (another process may have
just done it), and runs both parts in **one transaction**:

* PostgreSQL: ``pg_advisory_lock`` on the upgrade's own connection, held around the whole upgrade
  (two first runs on a fresh database no longer race on ``CREATE TABLE``); DDL is transactional.
* SQLite: a file lock beside the database (``<file>.migrate-lock``, the ``filelock`` package), so a
  long upgrade does not run into the busy timeout of another, then ``BEGIN IMMEDIATE`` on a
  connection whose driver does not manage transactions itself, so that the DDL is inside the
  transaction too (pysqlite would otherwise commit around it).

Another dialect gets the upgrade in one transaction, without a lock, and a retype as its own
``ALTER`` casts it.

The fingerprint is written in the same transaction, so a failed upgrade leaves the warehouse as it
was, and is tried again by the next construction. ``upgrade(..., force=True)`` skips the fast path
(a warehouse changed by hand).

A warehouse follows the code that last upgraded it: an older version of the code opening it would
drop the columns a newer one added (and refuses to run if the warehouse is at a revision it does
not have). Deploy one version of the code per warehouse at a time.

Tables of this module's own
---------------------------
``warehouse_alembic_version`` is Alembic's version table, under a name of its own because the
warehouse may share a PostgreSQL database with Dagster's storage, which has an ``alembic_version``
of its own. ``warehouse_schema_state`` holds the fingerprint; ``warehouse_rejected_values`` the
values a retype could not convert. None of them is compared with ``target``.

Developers
----------
There is no ``alembic.ini``: :func:`alembic_config` is its equivalent in code, and
``python -m sync_pipelines.warehouse.migrate [--url URL] <alembic command>`` is the ``alembic``
command line on it (``revision -m "…"``, ``history``, ``current``, ``heads``, ``stamp``, …);
``… migrate apply`` runs :func:`upgrade` with the code's metadata and prints the report. How to
write a revision: ``sync_pipelines/warehouse/migrations/__init__.py``.
"""

import argparse
import functools
import hashlib
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata, produce_migrations
from alembic.config import CommandLine, Config
from alembic.migration import MigrationContext
from alembic.operations import Operations, ops
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.schema import CreateIndex, CreateTable

__all__ = [
    "BASELINE",
    "MIGRATIONS_DIR",
    "OWN_TABLES",
    "REJECTS_TABLE",
    "STATE_TABLE",
    "VERSION_TABLE",
    "MigrationError",
    "MigrationReport",
    "Retype",
    "alembic_config",
    "convert",
    "differences",
    "fingerprint",
    "main",
    "text_form",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "warehouse_alembic_version"
STATE_TABLE = "warehouse_schema_state"
REJECTS_TABLE = "warehouse_rejected_values"
BASELINE = "0001_baseline"
OWN_TABLES = frozenset({VERSION_TABLE, STATE_TABLE, REJECTS_TABLE})

#: Bumped when what the fingerprint covers, or how the upgrade applies it, changes.
_FINGERPRINT_FORMAT = 1
#: The PostgreSQL advisory lock of the upgrade (a fixed 64-bit key, per database).
LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"sync_pipelines.warehouse.migrate").digest()[:8], "big", signed=True
)

_own = sa.MetaData()

schema_state = sa.Table(
    STATE_TABLE,
    _own,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("fingerprint", sa.String(64), nullable=False, comment="of the target the last upgrade applied"),
    sa.Column("revision", sa.String(32), comment="the newest revision at the time"),
    sa.Column("upgraded_at", sa.DateTime(timezone=True), nullable=False),
    comment="What the last schema upgrade brought the warehouse to (one row).",
)

rejected_values = sa.Table(
    REJECTS_TABLE,
    _own,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("table_name", sa.String(128), nullable=False),
    sa.Column("column_name", sa.String(128), nullable=False),
    sa.Column("row_key", sa.Text(), nullable=False, comment="JSON: the row's primary key"),
    sa.Column("old_value", sa.Text(), comment="the value, as text, before the retype set it NULL"),
    sa.Column("old_type", sa.String(64)),
    sa.Column("new_type", sa.String(64)),
    sa.Column("migrated_at", sa.DateTime(timezone=True), nullable=False),
    comment="Values a column retype could not convert: the row kept, the value NULL, the old value here.",
)

#: One upgrade at a time in a process: Alembic's ``context`` and ``op`` proxies are module globals.
_PROCESS_LOCK = threading.Lock()


class MigrationError(RuntimeError):
    """The warehouse cannot be upgraded by this code (e.g. it is at a revision this code lacks)."""


# --- the report -----------------------------------------------------------------------------------


@dataclass
class Retype:
    """One column whose type changed."""

    table: str
    column: str
    old_type: str
    new_type: str
    #: values that could not be converted: now NULL, the old ones in ``warehouse_rejected_values``
    rejected: int = 0

    def __str__(self) -> str:
        lost = (
            f", {self.rejected} values not convertible (NULL, kept in {REJECTS_TABLE})"
            if self.rejected
            else ""
        )
        return f"{self.table}.{self.column}: {self.old_type} -> {self.new_type}{lost}"


@dataclass
class MigrationReport:
    """What an :func:`upgrade` did. Columns and indexes are named ``table.column``."""

    #: the revision the warehouse was stamped at: the baseline for one made before migrations, the
    #: newest for a fresh one
    stamped: str | None = None
    fresh: bool = False  # a fresh warehouse, made by ``create_all`` of the target (``tables_created``)
    revisions_applied: list[str] = field(default_factory=list)
    tables_created: list[str] = field(default_factory=list)
    columns_added: list[str] = field(default_factory=list)
    columns_dropped: list[str] = field(default_factory=list)
    columns_retyped: list[Retype] = field(default_factory=list)
    columns_altered: list[str] = field(default_factory=list)  # nullability, comments
    indexes_created: list[str] = field(default_factory=list)
    indexes_dropped: list[str] = field(default_factory=list)
    other_changes: list[str] = field(default_factory=list)  # table comments, constraints
    tables_left_alone: list[str] = field(default_factory=list)  # in the database, not in the target
    skipped: list[str] = field(default_factory=list)  # differences not applied, and why

    @property
    def changed(self) -> bool:
        """Whether the upgrade changed the warehouse."""
        return bool(
            self.stamped
            or self.revisions_applied
            or self.tables_created
            or self.columns_added
            or self.columns_dropped
            or self.columns_retyped
            or self.columns_altered
            or self.indexes_created
            or self.indexes_dropped
            or self.other_changes
        )

    @property
    def empty(self) -> bool:
        """Nothing done and nothing to say (the no-op fast path)."""
        return not (self.changed or self.tables_left_alone or self.skipped)

    def lines(self) -> list[str]:
        """One line per thing done or noted, for a log."""
        out = []
        if self.fresh:
            out.append(f"a fresh warehouse: made from the code's schema, stamped at revision {self.stamped}")
        elif self.stamped:
            out.append(f"stamped at revision {self.stamped} (made before migrations)")
        out += [f"revision applied: {r}" for r in self.revisions_applied]
        out += [f"table created: {t}" for t in self.tables_created]
        out += [f"column added: {c}" for c in self.columns_added]
        out += [f"column dropped: {c}" for c in self.columns_dropped]
        out += [f"column retyped: {r}" for r in self.columns_retyped]
        out += [f"column altered: {c}" for c in self.columns_altered]
        out += [f"index created: {i}" for i in self.indexes_created]
        out += [f"index dropped: {i}" for i in self.indexes_dropped]
        out += [f"changed: {c}" for c in self.other_changes]
        out += [f"table left alone (not in the code's schema): {t}" for t in self.tables_left_alone]
        out += [f"not applied: {s}" for s in self.skipped]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines()) or "warehouse schema up to date"


# --- Alembic configuration ------------------------------------------------------------------------


def alembic_config(url: str | None = None, *, connection: sa.Connection | None = None) -> Config:
    """The Alembic configuration of the warehouse: what ``alembic.ini`` would hold, in code.

    ``connection`` (used by :func:`upgrade`) is the connection ``env.py`` runs the revisions on;
    else ``url``, else ``WAREHOUSE_URL``, else the embedded default.
    """
    config = Config(stdout=sys.stdout)  # (Alembic's default is the stdout of its import)
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(rev)s")  # versions/0002_rename_x.py
    config.set_main_option("path_separator", "os")
    if url:
        config.attributes["url"] = url
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def _head() -> str:
    return _script().get_current_head() or ""


# --- the fingerprint (the fast path) --------------------------------------------------------------


def fingerprint(target: sa.MetaData, dialect: sa.Dialect) -> str:
    """SHA-256 of what :func:`upgrade` brings a warehouse of ``dialect`` to: the DDL of every
    table of ``target``, its comments and indexes, and the newest revision."""
    h = hashlib.sha256(f"{_FINGERPRINT_FORMAT}|{_head()}|{dialect.name}\n".encode())
    for table in sorted(target.tables.values(), key=lambda t: t.key):
        h.update(str(CreateTable(table).compile(dialect=dialect)).encode())
        h.update(f"{table.comment!r}|".encode())
        h.update("".join(f"{c.name}:{c.comment!r};" for c in table.columns).encode())
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            h.update(str(CreateIndex(index).compile(dialect=dialect)).encode())
    return h.hexdigest()


_STORED = sa.select(schema_state.c.fingerprint).where(schema_state.c.id == 1)


def _stored_fingerprint(engine: sa.Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return conn.execute(_STORED).scalar()
    except sa.exc.DBAPIError:  # no state table yet (or a busy database): the locked path decides
        return None


def _stored_fingerprint_locked(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table(STATE_TABLE):
        return None
    return conn.execute(_STORED).scalar()


def _save_fingerprint(conn: sa.Connection, value: str) -> None:
    conn.execute(schema_state.delete())
    conn.execute(
        schema_state.insert().values(id=1, fingerprint=value, revision=_head(), upgraded_at=datetime.now(UTC))
    )


# --- the upgrade ----------------------------------------------------------------------------------


def upgrade(engine: sa.Engine, target: sa.MetaData, *, force: bool = False) -> MigrationReport:
    """Bring the warehouse of ``engine`` to the tables of ``target``, in place, keeping its rows.

    Revisions first (a warehouse made before migrations is stamped at the baseline), then every
    table of ``target`` made to match it (see the module docstring for what is done, how values
    are converted, and what is never done). One transaction, under a lock: concurrent upgrades of
    one warehouse wait for each other, and all but the first find nothing to do. When the stored
    fingerprint says the warehouse is already at ``target`` this is one query and returns an empty
    report; ``force=True`` compares anyway.

    Raises :class:`MigrationError` if the warehouse is at a revision this code does not have.
    """
    expected = fingerprint(target, engine.dialect)
    if not force and _stored_fingerprint(engine) == expected:
        return MigrationReport()
    with _PROCESS_LOCK, _locked(engine) as conn:
        if not force and _stored_fingerprint_locked(conn) == expected:
            return MigrationReport()
        report = MigrationReport()
        _own.create_all(conn)
        if _is_fresh(conn, target):
            _create(conn, target, report)
        else:
            _run_revisions(conn, report)
            _follow_metadata(conn, target, report)
        _save_fingerprint(conn, expected)
    return report


def differences(conn: sa.Connection, target: sa.MetaData) -> list:
    """Alembic's ``compare_metadata`` of the database with ``target``, its tables only (what the
    table-driven part of :func:`upgrade` would apply; empty when the warehouse is at ``target``)."""
    return compare_metadata(_comparison_context(conn, target), target)


@contextmanager
def _locked(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection of its own, holding the upgrade lock, inside a transaction that covers DDL."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.select(sa.func.pg_advisory_lock(LOCK_KEY)))
            conn.commit()  # the lock is the session's: it outlives this transaction
            try:
                with conn.begin():
                    conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")  # conversions as the store writes
                    yield conn
            finally:
                try:
                    conn.execute(sa.select(sa.func.pg_advisory_unlock(LOCK_KEY)))
                    conn.commit()
                except sa.exc.DBAPIError:
                    conn.invalidate()  # the session closes, and its lock with it
    elif dialect == "sqlite":
        with _sqlite_file_lock(engine.url), engine.connect() as conn:
            # The driver in autocommit mode emits no BEGIN/COMMIT of its own (pysqlite would
            # commit around DDL); the transaction is ours, and takes the write lock at once.
            conn.execution_options(isolation_level="AUTOCOMMIT")
            with conn.begin():
                if not conn.connection.driver_connection.in_transaction:  # (unless a hook began one)
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn
    else:  # other dialects: one transaction, no lock
        with engine.begin() as conn:
            yield conn


def _sqlite_file_lock(url: sa.URL):
    database = url.database or ""
    if url.query.get("uri") and database.startswith("file:"):
        database = database[len("file:") :].split("?")[0]
    if not database or database == ":memory:" or "mode=memory" in (url.database or ""):
        return nullcontext()  # one connection's database: nobody to race with
    from filelock import FileLock

    return FileLock(f"{Path(database).resolve()}.migrate-lock")


def _baseline_tables() -> set[str]:
    return set(_script().get_revision(BASELINE).module.TABLES)


def _is_fresh(conn: sa.Connection, target: sa.MetaData) -> bool:
    """No version table, and none of the tables of the baseline or of the target."""
    present = set(sa.inspect(conn).get_table_names())
    return VERSION_TABLE not in present and not present & (_baseline_tables() | set(target.tables))


def _create(conn: sa.Connection, target: sa.MetaData, report: MigrationReport) -> None:
    """A fresh warehouse: the target's tables made as they are, stamped at the newest revision
    (Alembic's "building an up to date database from scratch")."""
    report.tables_left_alone = sorted(set(sa.inspect(conn).get_table_names()) - OWN_TABLES)
    target.create_all(conn)
    MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).stamp(_script(), "heads")
    report.stamped, report.fresh = _head(), True
    report.tables_created = sorted(target.tables)


def _run_revisions(conn: sa.Connection, report: MigrationReport) -> None:
    script = _script()
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    current = context.get_current_heads()
    if not current:
        if _baseline_tables() & set(sa.inspect(conn).get_table_names()):
            context.stamp(script, BASELINE)
            report.stamped = BASELINE
    else:
        for revision in current:
            try:
                script.get_revision(revision)
            except CommandError as e:
                raise MigrationError(
                    f"the warehouse is at revision {revision!r}, which this code does not have "
                    "(made by a newer version of sync_pipelines?)"
                ) from e

    applied: list[str] = []

    def on_version_apply(*, ctx, step, heads, run_args) -> None:
        if step.is_upgrade and not step.is_stamp:
            applied.extend(step.up_revision_ids)

    config = alembic_config(connection=conn)
    config.attributes["on_version_apply"] = on_version_apply
    command.upgrade(config, "head")
    report.revisions_applied = applied


# --- the table-driven part ------------------------------------------------------------------------


def _comparison_context(conn: sa.Connection, target: sa.MetaData) -> MigrationContext:
    def include_name(name, type_, parent_names) -> bool:
        return type_ != "table" or name in target.tables

    return MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "compare_server_default": False,
            "include_name": include_name,
            "version_table": VERSION_TABLE,
        },
    )


def _follow_metadata(conn: sa.Connection, target: sa.MetaData, report: MigrationReport) -> None:
    present = set(sa.inspect(conn).get_table_names())
    report.tables_left_alone = sorted(present - set(target.tables) - OWN_TABLES)
    context = _comparison_context(conn, target)
    operations = Operations(context)
    for op in produce_migrations(context, target).upgrade_ops.ops:
        match op:
            case ops.CreateTableOp():
                operations.invoke(op)
                report.tables_created.append(op.table_name)
            case ops.CreateIndexOp():
                _create_index(conn, operations, op, report)
            case ops.ModifyTableOps():
                _TableChange(conn, operations, op, report).apply()
            case _:  # (a DropTableOp cannot come: only tables of the target are compared)
                report.skipped.append(f"{type(op).__name__} on {getattr(op, 'table_name', '?')}")


def _create_index(conn: sa.Connection, operations: Operations, op: ops.CreateIndexOp, report) -> None:
    """Create an index; a unique one the rows violate is left out (and said)."""
    try:
        with conn.begin_nested():
            operations.invoke(op)
    except sa.exc.IntegrityError as e:
        report.skipped.append(f"index {op.index_name} on {op.table_name}: not created ({e.orig})")
    else:
        report.indexes_created.append(f"{op.table_name}.{op.index_name}")


def _plain(type_: Any, dialect: sa.Dialect) -> Any:
    """The type a dialect sees: a variant resolved."""
    return getattr(type_, "_variant_mapping", {}).get(dialect.name, type_)


def _type_sql(type_: Any, dialect: sa.Dialect) -> str:
    try:
        return _plain(type_, dialect).compile(dialect=dialect)
    except sa.exc.CompileError:
        return repr(type_)


def _row_key(names: Sequence[str], values: Sequence) -> str:
    return json.dumps(dict(zip(names, values, strict=True)), default=str, sort_keys=True)


def _nullable_copy(column: sa.Column) -> sa.Column:
    return sa.Column(
        column.name, column.type, nullable=True, comment=column.comment, server_default=column.server_default
    )


class _TableChange:
    """The operations autogenerate reported for one existing table, applied the dialect's way."""

    def __init__(
        self, conn: sa.Connection, operations: Operations, op: ops.ModifyTableOps, report: MigrationReport
    ) -> None:
        self.conn = conn
        self.operations = operations
        self.dialect = conn.dialect
        self.name = op.table_name
        self.report = report
        self.q = self.dialect.identifier_preparer.quote
        self.adds = [o for o in op.ops if isinstance(o, ops.AddColumnOp)]
        self.drops = [o for o in op.ops if isinstance(o, ops.DropColumnOp)]
        self.alters = [o for o in op.ops if isinstance(o, ops.AlterColumnOp)]
        self.index_drops = [o for o in op.ops if isinstance(o, ops.DropIndexOp)]
        self.index_creates = [o for o in op.ops if isinstance(o, ops.CreateIndexOp)]
        known = (ops.AddColumnOp, ops.DropColumnOp, ops.AlterColumnOp, ops.DropIndexOp, ops.CreateIndexOp)
        self.others = [o for o in op.ops if not isinstance(o, known)]
        self.has_rows = conn.execute(
            sa.select(sa.literal(1)).select_from(sa.table(self.name)).limit(1)
        ).first()
        self.primary_key = sa.inspect(conn).get_pk_constraint(self.name)["constrained_columns"]

    def apply(self) -> None:
        for o in self.index_drops:  # first: an index may name a column about to go
            self.operations.invoke(o)
            self.report.indexes_dropped.append(f"{self.name}.{o.index_name}")
        if self.dialect.name == "sqlite":
            self._sqlite()
        else:
            self._alter_in_place()
        for o in self.index_creates:  # last: on the columns as they now are
            _create_index(self.conn, self.operations, o, self.report)

    # --- common -------------------------------------------------------------------------------

    def _column_to_add(self, o: ops.AddColumnOp) -> sa.Column:
        column = o.column
        self.report.columns_added.append(f"{self.name}.{column.name}")
        if not column.nullable and column.server_default is None and self.has_rows:
            self.report.skipped.append(
                f"{self.name}.{column.name}: added NULL-able, not NOT NULL: the table has rows and the "
                "column no server default (a revision can fill it)"
            )
            return _nullable_copy(column)
        return column

    def _can_set(self, o: ops.AlterColumnOp, to_be_nulled: int = 0) -> bool:
        """Whether the nullability change of ``o`` can be made (NOT NULL on a column without NULLs,
        counting ``to_be_nulled`` values about to become NULL)."""
        if o.modify_nullable is not False:
            return True
        c = sa.column(o.column_name)
        nulls = self.conn.execute(
            sa.select(sa.func.count()).select_from(sa.table(self.name)).where(c.is_(None))
        )
        count = nulls.scalar() + to_be_nulled
        if count:
            self.report.skipped.append(f"{self.name}.{o.column_name}: left NULL-able, {count} rows hold NULL")
        return not count

    def _reject(self, o: ops.AlterColumnOp, rejects: list[tuple[str, str | None]]) -> None:
        """Keep the values a retype could not convert (``(row key JSON, old text)``)."""
        if not rejects:
            return
        now = datetime.now(UTC)
        old, new = _type_sql(o.existing_type, self.dialect), _type_sql(o.modify_type, self.dialect)
        self.conn.execute(
            rejected_values.insert(),
            [
                {
                    "table_name": self.name,
                    "column_name": o.column_name,
                    "row_key": key,
                    "old_value": text,
                    "old_type": old[:64],
                    "new_type": new[:64],
                    "migrated_at": now,
                }
                for key, text in rejects
            ],
        )
        if o.existing_nullable is False:
            self.report.skipped.append(
                f"{self.name}.{o.column_name}: left NULL-able, {len(rejects)} values could not be converted"
            )

    def _retype_entry(self, o: ops.AlterColumnOp, rejected: int) -> None:
        self.report.columns_retyped.append(
            Retype(
                self.name,
                o.column_name,
                _type_sql(o.existing_type, self.dialect),
                _type_sql(o.modify_type, self.dialect),
                rejected,
            )
        )

    def _note_nullable(self, o: ops.AlterColumnOp) -> None:
        state = "NULL-able" if o.modify_nullable else "NOT NULL"
        self.report.columns_altered.append(f"{self.name}.{o.column_name}: {state}")

    def _other(self, o: ops.MigrateOperation, invoke) -> None:
        name = type(o).__name__.removesuffix("Op")
        try:
            with self.conn.begin_nested():
                invoke(o)
        except sa.exc.IntegrityError as e:
            self.report.skipped.append(f"{name} on {self.name} ({e.orig})")
        else:
            self.report.other_changes.append(f"{name} on {self.name}")

    # --- PostgreSQL (and any dialect that alters in place) ------------------------------------

    def _alter_in_place(self) -> None:
        for o in self.adds:
            self.operations.add_column(self.name, self._column_to_add(o))
        for o in self.alters:
            nullable = o.existing_nullable
            if o.modify_type is not None and self.dialect.name == "postgresql":
                nullable = self._retype_in_place(o)
            elif o.modify_type is not None:  # another dialect: its own ALTER, values as it casts them
                self.operations.alter_column(
                    self.name, o.column_name, type_=o.modify_type, existing_type=o.existing_type
                )
                self._retype_entry(o, 0)
            if o.modify_nullable is not None and self._can_set(o):
                nullable = o.modify_nullable
                self.operations.alter_column(
                    self.name,
                    o.column_name,
                    nullable=nullable,
                    existing_type=o.modify_type or o.existing_type,
                )
                self._note_nullable(o)
            if o.modify_comment is not False:
                self.operations.alter_column(
                    self.name,
                    o.column_name,
                    comment=o.modify_comment,
                    existing_comment=o.existing_comment,
                    existing_type=o.modify_type or o.existing_type,
                    existing_nullable=nullable,
                )
                self.report.columns_altered.append(f"{self.name}.{o.column_name}: comment")
        for o in self.drops:
            self.operations.invoke(o)
            self.report.columns_dropped.append(f"{self.name}.{o.column_name}")
        for o in self.others:
            self._other(o, self.operations.invoke)

    def _retype_in_place(self, o: ops.AlterColumnOp) -> bool | None:
        """PostgreSQL: convert through the text form; values that would fail are NULLed and kept.
        Returns the column's nullability afterwards."""
        table, column = self.q(self.name), self.q(o.column_name)
        new_type = _plain(o.modify_type, self.dialect)
        new_sql = new_type.compile(dialect=self.dialect)
        as_text = f"CAST({column} AS TEXT)"
        self.conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # no writer meanwhile
        length = new_type.length if isinstance(new_type, sa.String) else None
        if isinstance(new_type, sa.String):
            valid = f"char_length({as_text}) <= {int(length)}" if length else "TRUE"
        else:
            valid = f"pg_temp.sp_castable({as_text}, '{new_sql}')"
        rejects: list[tuple[str, str | None]] = []
        if not self._casts_cleanly(table, as_text, new_sql, valid, string=isinstance(new_type, sa.String)):
            keys = self.primary_key or ["ctid"]  # (a table without a primary key: its row address)
            key_sql = ", ".join(self.q(k) if self.primary_key else "CAST(ctid AS TEXT)" for k in keys)
            self.conn.exec_driver_sql(_PG_CASTABLE)
            rows = self.conn.exec_driver_sql(
                f"SELECT {key_sql}, {as_text} FROM {table} WHERE {column} IS NOT NULL AND NOT ({valid})"
            ).all()
            self.conn.exec_driver_sql("DROP FUNCTION pg_temp.sp_castable(text, text)")
            rejects = [(_row_key(keys, row[:-1]), row[-1]) for row in rows]
            self._reject(o, rejects)
            if rows and o.existing_nullable is False:
                self.operations.alter_column(
                    self.name, o.column_name, nullable=True, existing_type=o.existing_type
                )
            if rows:
                t = sa.table(self.name, *(sa.column(k) for k in self.primary_key), sa.column(o.column_name))
                if self.primary_key:
                    where = sa.and_(*(t.c[k] == sa.bindparam(f"_sp_k{i}") for i, k in enumerate(keys)))
                else:
                    where = sa.text("ctid = CAST(:_sp_k0 AS tid)")
                self.conn.execute(
                    t.update().where(where).values({o.column_name: None}),
                    [{f"_sp_k{i}": v for i, v in enumerate(row[:-1])} for row in rows],
                )
        self.operations.alter_column(
            self.name,
            o.column_name,
            type_=new_type,
            existing_type=o.existing_type,
            existing_nullable=o.existing_nullable,
            postgresql_using=f"CAST({as_text} AS {new_sql})",
        )
        self._retype_entry(o, len(rejects))
        return True if rejects else o.existing_nullable

    def _casts_cleanly(self, table: str, as_text: str, new_sql: str, valid: str, *, string: bool) -> bool:
        """Whether every value converts (one statement, in a savepoint)."""
        if string:
            sql = f"SELECT count(*) FROM {table} WHERE NOT ({valid})"
        else:
            sql = f"SELECT count(CAST({as_text} AS {new_sql})) FROM {table}"
        try:
            with self.conn.begin_nested():
                count = self.conn.exec_driver_sql(sql).scalar()
        except sa.exc.DBAPIError:
            return False
        return not (string and count)

    # --- SQLite: batch mode -------------------------------------------------------------------

    def _sqlite(self) -> None:
        retypes = [o for o in self.alters if o.modify_type is not None]
        # Converted values are written after the table copy, by primary key, so that the old
        # column's affinity never touches them (a REAL column would read '12' back as 12.0); by
        # rowid before the copy when there is no primary key to go by (or it is retyped itself).
        keyed = bool(self.primary_key) and not any(o.column_name in self.primary_key for o in retypes)
        converted = {o.column_name: self._sqlite_convert(o, keyed) for o in retypes}
        relax = {
            o.column_name for o in retypes if converted[o.column_name][1] and o.existing_nullable is False
        }
        if not keyed:
            if relax:  # NULL can only go into a NULL-able column: one more table copy, first
                with self.operations.batch_alter_table(self.name, recreate="always") as batch:
                    for o in retypes:
                        if o.column_name in relax:
                            batch.alter_column(o.column_name, nullable=True, existing_type=o.existing_type)
                converted = {o.column_name: self._sqlite_convert(o, keyed) for o in retypes}
                relax = set()
            self._sqlite_write(retypes, converted, keyed)

        # The structure to copy: the table as it is, with the new types. The copy is then a
        # plain INSERT … SELECT (no CAST), and the values are the converted ones.
        copy_from = sa.Table(
            self.name,
            sa.MetaData(),
            autoload_with=self.conn,
            listeners=[("column_reflect", self.operations.impl.autogen_column_reflect)],
        )
        for o in retypes:
            copy_from.c[o.column_name].type = _plain(o.modify_type, self.dialect)
        rejected = {c: len(r) for c, (_, r) in converted.items()} if keyed else {}
        nullable = {c: True for c in relax}
        for o in self.alters:
            if o.modify_nullable is not None and self._can_set(o, rejected.get(o.column_name, 0)):
                nullable.setdefault(o.column_name, o.modify_nullable)
                self._note_nullable(o)
        not_null_adds = any(not o.column.nullable and o.column.server_default is None for o in self.adds)
        recreate = "always" if retypes or (not_null_adds and not self.has_rows) else "auto"
        with self.operations.batch_alter_table(self.name, copy_from=copy_from, recreate=recreate) as batch:
            for o in self.adds:
                batch.add_column(self._column_to_add(o))
            for o in self.drops:
                batch.drop_column(o.column_name)
                self.report.columns_dropped.append(f"{self.name}.{o.column_name}")
            for name, value in nullable.items():
                batch.alter_column(name, nullable=value, existing_type=copy_from.c[name].type)
        if keyed:
            self._sqlite_write(retypes, converted, keyed)
        for o in self.others:  # constraints: a table copy each, one the rows violate left out
            self._other(o, self._in_batch)

    def _in_batch(self, o: ops.MigrateOperation) -> None:
        with self.operations.batch_alter_table(self.name) as batch:
            batch.invoke(o)

    def _sqlite_convert(
        self, o: ops.AlterColumnOp, keyed: bool
    ) -> tuple[list[dict], list[tuple[str, str | None]]]:
        """The new values of a retyped column (each with its row: ``_sp_k0…`` by primary key, or
        ``_sp_rowid``), and the values that do not convert (row key JSON, old text)."""
        keys = self.primary_key or ["rowid"]  # (a table without a primary key: its rowid)
        column = self.q(o.column_name)
        rows = self.conn.exec_driver_sql(
            f"SELECT rowid, {', '.join(self.q(k) for k in keys)}, {column} FROM {self.q(self.name)} "
            f"WHERE {column} IS NOT NULL"
        )
        old_type, new_type = _plain(o.existing_type, self.dialect), _plain(o.modify_type, self.dialect)
        updates, rejects = [], []
        for rowid, *key, raw in rows:
            try:
                value = convert(raw, old_type, new_type)
            except ValueError:
                rejects.append((_row_key(keys, key), text_form(raw, old_type)))
                value = None
            where = {f"_sp_k{i}": k for i, k in enumerate(key)} if keyed else {"_sp_rowid": rowid}
            updates.append({**where, "_sp_value": value})
        return updates, rejects

    def _sqlite_write(self, retypes: list[ops.AlterColumnOp], converted: dict, keyed: bool) -> None:
        for o in retypes:
            updates, rejects = converted[o.column_name]
            self._reject(o, rejects)
            if updates:
                keys = self.primary_key if keyed else []
                t = sa.table(
                    self.name, sa.column(o.column_name, o.modify_type), *(sa.column(k) for k in keys)
                )
                if keyed:
                    where = sa.and_(*(t.c[k] == sa.bindparam(f"_sp_k{i}") for i, k in enumerate(keys)))
                else:
                    where = sa.literal_column("rowid") == sa.bindparam("_sp_rowid")
                self.conn.execute(
                    t.update().where(where).values({o.column_name: sa.bindparam("_sp_value")}), updates
                )
            self._retype_entry(o, len(rejects))


_PG_CASTABLE = """
CREATE OR REPLACE FUNCTION pg_temp.sp_castable(value text, type_name text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE 'SELECT CAST(' || quote_literal(value) || ' AS ' || type_name || ')';
    RETURN true;
EXCEPTION WHEN others THEN
    RETURN false;
END
$$
"""


# --- value conversion on SQLite -------------------------------------------------------------------

_TRUE = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE = frozenset({"f", "false", "n", "no", "off", "0"})
_INTEGER = re.compile(r"[+-]?\d+")
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.IGNORECASE)


def text_form(raw: Any, old_type: Any) -> str | None:
    """A stored SQLite value as text, spelt as PostgreSQL would print the old type's value."""
    if raw is None:
        return None
    if isinstance(old_type, sa.Boolean) and raw in (0, 1):
        return "true" if raw else "false"
    if isinstance(raw, float):
        text = repr(raw)
        return text.removesuffix(".0")
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    return str(raw)


def convert(raw: Any, old_type: Any, new_type: Any) -> Any:
    """A stored SQLite value of ``old_type`` as a Python value of ``new_type``, through its text
    form (:func:`text_form`). Raises ``ValueError`` when the text is not valid input for the new
    type. Types not handled here (JSON, binary, custom types) keep the value as stored."""
    if isinstance(new_type, sa.TypeDecorator | sa.LargeBinary | sa.JSON | sa.PickleType):
        return raw
    text = text_form(raw, old_type)
    if text is None:
        return None
    if isinstance(new_type, sa.String):  # String, Text, Unicode, Enum
        if new_type.length and len(text) > new_type.length:
            raise ValueError(f"longer than {new_type.length}")
        return text
    word = text.strip()
    if isinstance(new_type, sa.Boolean):
        if word.lower() in _TRUE:
            return True
        if word.lower() in _FALSE:
            return False
        raise ValueError(f"not a boolean: {word!r}")
    if isinstance(new_type, sa.Integer):
        if not _INTEGER.fullmatch(word):
            raise ValueError(f"not an integer: {word!r}")
        value, bits = int(word), 63 if isinstance(new_type, sa.BigInteger) else 31
        bits = 15 if isinstance(new_type, sa.SmallInteger) else bits
        if not -(2**bits) <= value < 2**bits:
            raise ValueError(f"out of range: {word}")
        return value
    if isinstance(new_type, sa.Float):
        if not _DECIMAL.fullmatch(word):
            raise ValueError(f"not a number: {word!r}")
        return float(word)
    if isinstance(new_type, sa.Numeric):
        try:
            return Decimal(word)
        except InvalidOperation as e:
            raise ValueError(f"not a number: {word!r}") from e
    if isinstance(new_type, sa.DateTime):
        value = datetime.fromisoformat(word)
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value  # stored as UTC
    if isinstance(new_type, sa.Date):
        try:
            return date.fromisoformat(word)
        except ValueError:
            return datetime.fromisoformat(word).date()
    if isinstance(new_type, sa.Time):
        return time.fromisoformat(word)
    return raw


# --- the command line -----------------------------------------------------------------------------

_PROG = "python -m sync_pipelines.warehouse.migrate"


def _next_revision_id(message: str | None) -> str:
    """``NNNN_slug``, numbered after the newest revision; at most 32 characters (the version
    table's column)."""
    numbers = [
        int(m.group(1)) for s in _script().walk_revisions() if (m := re.match(r"(\d{4})_", s.revision))
    ]
    slug = re.sub(r"[^a-z0-9]+", "_", (message or "revision").lower()).strip("_")[:27].rstrip("_")
    return f"{max(numbers, default=0) + 1:04d}_{slug or 'revision'}"


def main(argv: Sequence[str] | None = None) -> int:
    """``alembic``'s command line on :func:`alembic_config`, plus ``apply`` (the whole upgrade)."""
    from sync_pipelines.settings import WAREHOUSE_URL_ENV, warehouse_url

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument(
        "--url",
        help=f"the warehouse (default: ${WAREHOUSE_URL_ENV} or $SYNC_DATABASE_URL, else the embedded one)",
    )
    known, rest = pre.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    logging.basicConfig(format="%(levelname)-5.5s [%(name)s] %(message)s")  # as alembic.ini would
    logging.getLogger("alembic").setLevel(logging.INFO)
    url = known.url or warehouse_url()
    if rest[:1] == ["apply"]:
        from sync_pipelines.warehouse import schema  # with the Moodle tables (the package imports them)

        engine = sa.create_engine(url)
        try:
            print(upgrade(engine, schema.metadata, force="--force" in rest[1:]))
        finally:
            engine.dispose()
        return 0
    cli = CommandLine(prog=f"{_PROG} [--url URL]")
    cli.parser.epilog = (
        "Also: `apply [--force]` runs the whole upgrade of the warehouse (revisions, then the tables "
        "follow the code) and prints what it did. `revision -m MSG` numbers the new revision itself. "
        "See sync_pipelines/warehouse/migrations/__init__.py."
    )
    options = cli.parser.parse_args(rest)
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    if options.cmd[0] is command.revision and not options.rev_id:
        options.rev_id = _next_revision_id(options.message)
    cli.run_cmd(alembic_config(url), options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
