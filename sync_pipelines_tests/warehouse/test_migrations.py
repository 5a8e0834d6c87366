"""Schema migrations: revisions, the table-driven part, and concurrent upgrades.

Each warehouse test runs on SQLite and on the PostgreSQL server (a fresh database per test).
"""

import multiprocessing
import pickle
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from sync_pipelines.warehouse import migrate, schema
from sync_pipelines.warehouse.migrate import (
    BASELINE,
    REJECTS_TABLE,
    VERSION_TABLE,
    MigrationError,
    alembic_config,
    upgrade,
)
from sync_pipelines_tests.conftest import postgres_database

T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
T1 = datetime(2024, 6, 7, 8, 9, 10, tzinfo=UTC)


# --- helpers --------------------------------------------------------------------------------------


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # as the Warehouse's engine has them
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()


def make_engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


@pytest.fixture
def engine(warehouse_url: str) -> Iterator[sa.Engine]:
    engine = make_engine(warehouse_url)
    yield engine
    engine.dispose()


@pytest.fixture
def other_url(warehouse_url: str, tmp_path) -> Iterator[str]:
    """A second fresh database of the same kind as ``warehouse_url``."""
    if warehouse_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    yield from postgres_database()


def run_baseline(engine: sa.Engine) -> None:
    """The previous schema: revision 0001 only, as Alembic's own ``upgrade 0001_baseline``."""
    with engine.begin() as conn:
        command.upgrade(alembic_config(connection=conn), BASELINE)


def reflect(engine: sa.Engine, name: str) -> sa.Table:
    return sa.Table(name, sa.MetaData(), autoload_with=engine)


def aware(value):
    """SQLite hands back naive date-times (UTC); PostgreSQL aware ones."""
    return value.replace(tzinfo=UTC) if isinstance(value, datetime) and value.tzinfo is None else value


def rows(engine: sa.Engine, name: str, *order: str) -> list[dict]:
    table = reflect(engine, name)
    with engine.connect() as conn:
        result = conn.execute(sa.select(table).order_by(*(table.c[o] for o in order)))
        return [{k: aware(v) for k, v in r._mapping.items()} for r in result]


def differences(engine: sa.Engine, target: sa.MetaData) -> list:
    """Alembic's ``compare_metadata`` of the database with ``target`` (its tables only)."""

    def include_name(name, type_, parent_names):
        return type_ != "table" or name in target.tables

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
        return compare_metadata(context, target)


def version(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _revisions_after_baseline() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [s.revision for s in reversed(list(script.walk_revisions())) if s.revision != BASELINE]


def snapshot(engine: sa.Engine) -> dict:
    """Every table of the warehouse as the database describes it (the module's own tables aside)."""
    inspector = sa.inspect(engine)
    comments = engine.dialect.supports_comments
    out = {}
    for name in sorted(set(inspector.get_table_names()) - migrate.OWN_TABLES):
        out[name] = {
            "columns": {
                c["name"]: (
                    c["type"].compile(dialect=engine.dialect),
                    c["nullable"],
                    c.get("comment"),
                    str(c.get("default")),
                )
                for c in inspector.get_columns(name)
            },
            "primary_key": inspector.get_pk_constraint(name)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(name)
            ),
            "unique": inspector.get_unique_constraints(name),
            "comment": inspector.get_table_comment(name)["text"] if comments else None,
        }
    return out


def _column(c: sa.Column, **changes) -> sa.Column:
    kw = {
        "type_": c.type,
        "primary_key": c.primary_key,
        "nullable": c.nullable,
        "comment": c.comment,
        "autoincrement": c.autoincrement,
    } | changes
    return sa.Column(c.name, kw.pop("type_"), **kw)


def modified(changes: dict[str, Callable[[sa.Table], list]], base: sa.MetaData | None = None) -> sa.MetaData:
    """A copy of the code's metadata in which each table of ``changes`` is rebuilt from the items
    (columns, indexes) its function returns."""
    target = sa.MetaData()
    for table in (base or schema.metadata).tables.values():
        if table.name in changes:
            sa.Table(table.name, target, *changes[table.name](table), comment=table.comment)
        else:
            table.to_metadata(target)
    return target


def _indexes(table: sa.Table) -> list[sa.Index]:
    return [sa.Index(i.name, *(c.name for c in i.columns), unique=i.unique) for i in table.indexes]


def _teachers(table: sa.Table) -> list:
    """zoho_teachers gains ``office`` (and an index on it), loses ``phone_number``, and
    ``teacher_moodle_id`` becomes an integer."""
    columns = []
    for c in table.columns:
        if c.name == "phone_number":
            continue
        columns.append(_column(c, type_=sa.BigInteger()) if c.name == "teacher_moodle_id" else _column(c))
    office = sa.Column("office", sa.String(64), comment="the teacher's room")
    return [*columns, office, *_indexes(table), sa.Index("ix_zoho_teachers_office", "tenant_id", "office")]


def teachers_target() -> sa.MetaData:
    return modified({"zoho_teachers": _teachers})


def insert_previous_rows(engine: sa.Engine) -> None:
    """Rows of the previous schema: three teachers and two sync results."""
    teachers, results = reflect(engine, "zoho_teachers"), reflect(engine, "sync_results")
    common = {"fingerprint": "f" * 64, "first_seen_at": T0, "updated_at": T1, "sync_run_id": "run-1"}
    with engine.begin() as conn:
        conn.execute(
            teachers.insert(),
            [
                {
                    "tenant_id": "t1",
                    "zoho_id": "z1",
                    "name": "Ada Lovelace",
                    "email": "ada@example.org",
                    "academic_email": "ada@school.example",
                    "phone_number": "+44 20 1234",
                    "teacher_moodle_id": "42",
                    "zoho_modified_time": T0,
                    "deleted_at": None,
                    **common,
                },
                {
                    "tenant_id": "t1",
                    "zoho_id": "z2",
                    "name": "Alan Turing",
                    "email": None,
                    "academic_email": "alan@school.example",
                    "phone_number": None,
                    "teacher_moodle_id": None,
                    "zoho_modified_time": None,
                    "deleted_at": T1,
                    **common,
                },
                {
                    "tenant_id": "t2",
                    "zoho_id": "z1",
                    "name": "Grace Hopper",
                    "email": "grace@example.org",
                    "academic_email": "grace@school.example",
                    "phone_number": "+1 555",
                    "teacher_moodle_id": "7",
                    "zoho_modified_time": T1,
                    "deleted_at": None,
                    **common,
                },
            ],
        )
        conn.execute(
            results.insert(),
            [
                {
                    "sync_run_id": "run-1",
                    "tenant_id": "t1",
                    "module": "teachers",
                    "zoho_id": "z1",
                    "status": "NEW",
                    "reason": None,
                    "changes": None,
                },
                {
                    "sync_run_id": "run-1",
                    "tenant_id": "t1",
                    "module": "teachers",
                    "zoho_id": "z2",
                    "status": "UPDATED",
                    "reason": "changed",
                    "changes": '{"name": ["Alan", "Alan Turing"]}',
                },
            ],
        )


def assert_previous_rows_upgraded(engine: sa.Engine) -> None:
    """The rows of :func:`insert_previous_rows`, after :func:`teachers_target`."""
    teachers = rows(engine, "zoho_teachers", "tenant_id", "zoho_id")
    assert [(t["tenant_id"], t["zoho_id"]) for t in teachers] == [("t1", "z1"), ("t1", "z2"), ("t2", "z1")]
    assert [t["teacher_moodle_id"] for t in teachers] == [42, None, 7]
    assert [t["name"] for t in teachers] == ["Ada Lovelace", "Alan Turing", "Grace Hopper"]
    assert [t["email"] for t in teachers] == ["ada@example.org", None, "grace@example.org"]
    assert [t["academic_email"] for t in teachers] == [
        "ada@school.example",
        "alan@school.example",
        "grace@school.example",
    ]
    assert [t["zoho_modified_time"] for t in teachers] == [T0, None, T1]
    assert [t["deleted_at"] for t in teachers] == [None, T1, None]
    assert {(t["fingerprint"], t["first_seen_at"], t["updated_at"], t["sync_run_id"]) for t in teachers} == {
        ("f" * 64, T0, T1, "run-1")
    }
    assert all(t["office"] is None for t in teachers)
    assert "phone_number" not in teachers[0]
    results = rows(engine, "sync_results", "id")
    assert [(r["id"], r["zoho_id"], r["status"], r["reason"], r["changes"]) for r in results] == [
        (1, "z1", "NEW", None, None),
        (2, "z2", "UPDATED", "changed", '{"name": ["Alan", "Alan Turing"]}'),
    ]
    assert {(r["sync_run_id"], r["tenant_id"], r["module"]) for r in results} == {("run-1", "t1", "teachers")}


# --- the previous schema, upgraded ----------------------------------------------------------------


@pytest.fixture
def baseline_only(tmp_path, monkeypatch, request) -> Path:
    """The migrations folder with the baseline revision alone: the tests of the table-driven
    part then see exactly the changes they make, whatever data revisions the project has since
    (those are tested against the real chain, in sync_pipelines_tests/zoho/test_mirror.py)."""
    location = tmp_path / "migrations_baseline_only"
    shutil.copytree(migrate.MIGRATIONS_DIR, location, ignore=shutil.ignore_patterns("__pycache__"))
    for revision in (location / "versions").glob("0*.py"):
        if not revision.name.startswith(BASELINE):
            revision.unlink()
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", location)
    migrate._script.cache_clear()
    request.addfinalizer(migrate._script.cache_clear)
    return location


def test_previous_schema_upgraded_keeps_every_row(engine, baseline_only):
    run_baseline(engine)
    insert_previous_rows(engine)
    target = teachers_target()

    report = upgrade(engine, target)

    assert report.stamped is None
    assert report.revisions_applied == []
    assert "zoho_teachers.office" in report.columns_added
    assert "zoho_teachers.phone_number" in report.columns_dropped
    retypes = {(r.table, r.column): r for r in report.columns_retyped}
    assert retypes[("zoho_teachers", "teacher_moodle_id")].rejected == 0
    assert "zoho_teachers.ix_zoho_teachers_office" in report.indexes_created
    assert report.skipped == []
    assert_previous_rows_upgraded(engine)
    columns = {c["name"]: c for c in sa.inspect(engine).get_columns("zoho_teachers")}
    assert isinstance(columns["teacher_moodle_id"]["type"], sa.Integer)
    assert "office" in columns and "phone_number" not in columns
    assert "ix_zoho_teachers_office" in {i["name"] for i in sa.inspect(engine).get_indexes("zoho_teachers")}
    assert differences(engine, target) == []
    assert version(engine) == head()


def test_values_that_cannot_be_converted_are_kept_aside_and_the_rows_stay(engine, baseline_only):
    run_baseline(engine)
    insert_previous_rows(engine)
    cursors, pending = reflect(engine, "sync_cursors"), reflect(engine, "sync_pending")
    with engine.begin() as conn:
        conn.execute(
            cursors.insert(),
            [
                {
                    "tenant_id": "t1",
                    "module": "students",
                    "modified_since": "2024-03-01T10:00:00+00:00",
                    "updated_at": T0,
                },
                {"tenant_id": "t1", "module": "teachers", "modified_since": "not a date", "updated_at": T0},
                {"tenant_id": "t2", "module": "classes", "modified_since": None, "updated_at": T0},
            ],
        )
        conn.execute(sa.text("UPDATE zoho_teachers SET teacher_moodle_id = 'abc' WHERE tenant_id = 't2'"))
        conn.execute(
            pending.insert(),
            [
                {
                    "tenant_id": "t1",
                    "module": "classes",
                    "zoho_id": "c1",
                    "reason": "teacher_not_synced_yet",
                    "payload": "12",
                    "first_skipped_at": T0,
                    "last_seen_at": T1,
                },
                {
                    "tenant_id": "t1",
                    "module": "classes",
                    "zoho_id": "c2",
                    "reason": "teacher_not_synced_yet",
                    "payload": '{"a": 1}',
                    "first_skipped_at": T0,
                    "last_seen_at": T1,
                },
            ],
        )

    def cursors_change(table: sa.Table) -> list:
        columns = [
            _column(c, type_=sa.DateTime(timezone=True)) if c.name == "modified_since" else _column(c)
            for c in table.columns
        ]
        return [*columns, *_indexes(table)]

    def pending_change(table: sa.Table) -> list:  # NOT NULL text → integer
        columns = [
            _column(c, type_=sa.BigInteger()) if c.name == "payload" else _column(c) for c in table.columns
        ]
        return [*columns, *_indexes(table)]

    target = modified(
        {"zoho_teachers": _teachers, "sync_cursors": cursors_change, "sync_pending": pending_change}
    )
    report = upgrade(engine, target)

    retypes = {(r.table, r.column): r.rejected for r in report.columns_retyped}
    assert retypes[("sync_cursors", "modified_since")] == 1
    assert retypes[("zoho_teachers", "teacher_moodle_id")] == 1
    assert retypes[("sync_pending", "payload")] == 1
    assert any(s.startswith("sync_pending.payload: left NULL-able") for s in report.skipped)

    got = rows(engine, "sync_cursors", "tenant_id", "module")
    assert [(c["tenant_id"], c["module"], c["modified_since"]) for c in got] == [
        ("t1", "students", datetime(2024, 3, 1, 10, 0, tzinfo=UTC)),
        ("t1", "teachers", None),
        ("t2", "classes", None),
    ]
    assert [c["updated_at"] for c in got] == [T0, T0, T0]
    teachers = rows(engine, "zoho_teachers", "tenant_id", "zoho_id")
    assert [t["teacher_moodle_id"] for t in teachers] == [42, None, None]
    assert [t["name"] for t in teachers] == ["Ada Lovelace", "Alan Turing", "Grace Hopper"]
    assert [(p["zoho_id"], p["payload"], p["reason"]) for p in rows(engine, "sync_pending", "zoho_id")] == [
        ("c1", 12, "teacher_not_synced_yet"),
        ("c2", None, "teacher_not_synced_yet"),
    ]
    kept = {
        (r["table_name"], r["column_name"], r["row_key"], r["old_value"])
        for r in rows(engine, REJECTS_TABLE, "id")
    }
    assert kept == {
        ("sync_cursors", "modified_since", '{"module": "teachers", "tenant_id": "t1"}', "not a date"),
        ("zoho_teachers", "teacher_moodle_id", '{"tenant_id": "t2", "zoho_id": "z1"}', "abc"),
        ("sync_pending", "payload", '{"module": "classes", "tenant_id": "t1", "zoho_id": "c2"}', '{"a": 1}'),
    }
    # what could not be applied (NOT NULL on payload) is all that still differs
    remaining = differences(engine, target)
    assert [(d[0][0], d[0][2], d[0][3]) for d in remaining] == [
        ("modify_nullable", "sync_pending", "payload")
    ]


# --- warehouses made before migrations, and fresh ones --------------------------------------------


def test_warehouse_made_by_create_all_is_stamped_and_upgraded(engine):
    schema.metadata.create_all(engine)  # what Warehouse(...) did before migrations
    insert_previous_rows(engine)
    assert not sa.inspect(engine).has_table(VERSION_TABLE)
    target = teachers_target()

    report = upgrade(engine, target)

    assert report.stamped == BASELINE and not report.fresh
    assert report.revisions_applied == _revisions_after_baseline()
    assert version(engine) == head()
    assert "zoho_teachers.office" in report.columns_added
    assert "zoho_teachers.phone_number" in report.columns_dropped
    assert_previous_rows_upgraded(engine)
    assert differences(engine, target) == []


def test_warehouse_of_the_baseline_without_version_table_is_stamped_not_recreated(engine):
    run_baseline(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))  # as create_all at commit 5d5b30b left it
    insert_previous_rows(engine)

    report = upgrade(engine, schema.metadata)

    assert report.stamped == BASELINE
    assert BASELINE not in report.revisions_applied  # running it would have failed: the tables exist
    assert version(engine) == head()
    assert len(rows(engine, "zoho_teachers", "tenant_id", "zoho_id")) == 3
    assert len(rows(engine, "sync_results", "id")) == 2
    assert differences(engine, schema.metadata) == []


def test_fresh_database_is_brought_to_the_target(engine):
    target = teachers_target()

    report = upgrade(engine, target)

    assert report.fresh and report.stamped == head()  # made as the target says, no revision to run
    assert report.revisions_applied == []
    assert report.tables_created == sorted(target.tables)
    assert version(engine) == head()
    assert differences(engine, target) == []
    assert set(sa.inspect(engine).get_table_names()) == set(target.tables) | migrate.OWN_TABLES
    assert "office" in {c["name"] for c in sa.inspect(engine).get_columns("zoho_teachers")}
    assert str(report).startswith(
        f"a fresh warehouse: made from the code's schema, stamped at revision {head()}"
    )


def test_database_with_other_tables_only_is_fresh_and_they_are_left_alone(engine):
    with engine.begin() as conn:  # e.g. Dagster's storage in the same database
        conn.execute(sa.text("CREATE TABLE runs (id INTEGER PRIMARY KEY, status TEXT)"))
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('dagster_rev')"))

    report = upgrade(engine, schema.metadata)

    assert report.tables_left_alone == ["alembic_version", "runs"]
    assert report.tables_created == sorted(schema.metadata.tables)
    assert rows(engine, "alembic_version", "version_num") == [{"version_num": "dagster_rev"}]
    assert version(engine) == head()
    assert differences(engine, schema.metadata) == []


def test_second_upgrade_is_a_no_op_of_one_query(engine):
    target = teachers_target()
    assert not upgrade(engine, target).empty

    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    report = upgrade(engine, target)

    assert report.empty
    assert str(report) == "warehouse schema up to date"
    assert len(statements) == 1, statements  # the fingerprint, and nothing else
    # the full comparison agrees: nothing differs
    statements.clear()
    assert upgrade(engine, target, force=True).empty
    assert len(statements) > 1
    # and a change of the target is not hidden by the fast path
    changed = modified(
        {
            "zoho_teachers": lambda t: [
                *(c for c in _teachers(t) if isinstance(c, sa.Column) and c.name != "office"),
                sa.Column("mobile", sa.String(32)),
                *_indexes(t),
            ]
        }
    )
    report = upgrade(engine, changed)
    assert report.columns_added == ["zoho_teachers.mobile"]
    assert report.columns_dropped == ["zoho_teachers.office"]
    assert report.indexes_dropped == ["zoho_teachers.ix_zoho_teachers_office"]


def test_real_target_equals_create_all_on_a_fresh_database(engine, other_url):
    run_baseline(engine)
    insert_previous_rows(engine)

    upgrade(engine, schema.metadata)

    assert differences(engine, schema.metadata) == []
    fresh = make_engine(other_url)
    try:
        schema.metadata.create_all(fresh)
        assert differences(fresh, schema.metadata) == []
        assert snapshot(engine) == snapshot(fresh)
    finally:
        fresh.dispose()
    assert len(rows(engine, "zoho_teachers", "tenant_id", "zoho_id")) == 3
    assert [r["status"] for r in rows(engine, "sync_results", "id")] == ["NEW", "UPDATED"]


def test_tables_the_code_no_longer_knows_are_left_alone(engine):
    run_baseline(engine)
    insert_previous_rows(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE legacy_notes (id INTEGER PRIMARY KEY, note TEXT)"))
        conn.execute(sa.text("INSERT INTO legacy_notes VALUES (1, 'keep me')"))
    target = modified({})
    target.remove(target.tables["zoho_teachers"])

    report = upgrade(engine, target)

    assert report.tables_left_alone == ["legacy_notes", "zoho_teachers"]
    assert "left alone" in str(report)
    assert len(rows(engine, "zoho_teachers", "tenant_id", "zoho_id")) == 3
    assert rows(engine, "legacy_notes", "id") == [{"id": 1, "note": "keep me"}]
    # the teachers' table, no longer in the target, was not brought to it either
    assert "phone_number" in {c["name"] for c in sa.inspect(engine).get_columns("zoho_teachers")}


def test_warehouse_at_an_unknown_revision_is_refused(engine):
    upgrade(engine, schema.metadata)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999_from_the_future'"))

    with pytest.raises(MigrationError, match="9999_from_the_future"):
        upgrade(engine, teachers_target())
    assert "phone_number" in {c["name"] for c in sa.inspect(engine).get_columns("zoho_teachers")}


def test_a_failed_upgrade_changes_nothing(engine, monkeypatch):
    run_baseline(engine)
    insert_previous_rows(engine)
    before = snapshot(engine)

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(migrate, "_save_fingerprint", fail)  # after every change was made
    with pytest.raises(RuntimeError, match="disk full"):
        upgrade(engine, teachers_target())

    assert snapshot(engine) == before
    assert not sa.inspect(engine).has_table(migrate.STATE_TABLE)
    assert [t["phone_number"] for t in rows(engine, "zoho_teachers", "tenant_id", "zoho_id")] == [
        "+44 20 1234",
        None,
        "+1 555",
    ]


# --- concurrent upgrades --------------------------------------------------------------------------


def _upgrade_in_child(url: str, target: bytes, barrier, results) -> None:
    engine = make_engine(url)
    try:
        barrier.wait(timeout=60)
        report = upgrade(engine, pickle.loads(target))
        results.put(("ok", report.changed, report.empty))
    except BaseException as e:  # reported to the parent, which fails the test
        results.put(("error", repr(e), False))
    finally:
        engine.dispose()


@pytest.mark.parametrize("start", ["fresh", "previous schema with rows"])
def test_concurrent_upgrades_all_succeed(warehouse_url, start):
    if start != "fresh":
        engine = make_engine(warehouse_url)
        run_baseline(engine)
        insert_previous_rows(engine)
        engine.dispose()
    processes = 3
    target = pickle.dumps(teachers_target())  # one target for all, whatever the code says meanwhile
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    children = [
        ctx.Process(target=_upgrade_in_child, args=(warehouse_url, target, barrier, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=180) for _ in children]
    for child in children:
        child.join(timeout=60)

    assert [o[0] for o in outcomes] == ["ok"] * processes, outcomes
    assert sorted(o[1] for o in outcomes) == [False] * (processes - 1) + [True]  # one did it
    assert sum(o[2] for o in outcomes) == processes - 1  # the others found nothing to do
    engine = make_engine(warehouse_url)
    try:
        assert differences(engine, pickle.loads(target)) == []
        assert version(engine) == head()
        if start != "fresh":
            assert_previous_rows_upgraded(engine)
    finally:
        engine.dispose()


# --- for developers -------------------------------------------------------------------------------


def test_command_line_applies_and_reports_the_revision(warehouse_url, capsys):
    assert migrate.main(["--url", warehouse_url, "apply"]) == 0
    assert "a fresh warehouse" in capsys.readouterr().out
    assert migrate.main(["--url", warehouse_url, "apply"]) == 0
    assert capsys.readouterr().out.strip() == "warehouse schema up to date"
    assert migrate.main(["--url", warehouse_url, "current"]) == 0
    assert f"{head()} (head)" in capsys.readouterr().out


def test_a_new_revision_from_the_template_runs(tmp_path):
    """What a developer does: ``revision -m …`` writes a numbered file that Alembic then runs."""
    location = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, location, ignore=shutil.ignore_patterns("__pycache__"))
    config = alembic_config(f"sqlite:///{tmp_path / 'w.db'}")
    config.set_main_option("script_location", str(location))
    rev_id = migrate._next_revision_id("Rename the teachers' phone!")
    assert (
        rev_id
        == f"{len(list(ScriptDirectory.from_config(config).walk_revisions())) + 1:04d}_rename_the_teachers_phone"
    )
    assert len(migrate._next_revision_id("x" * 80)) <= 32  # the version table's column

    script = command.revision(config, message="rename the teachers' phone", rev_id=rev_id)

    assert (location / "versions" / f"{rev_id}.py").is_file()
    assert script.down_revision == head()
    command.upgrade(config, "head")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        assert version(engine) == rev_id
        assert sa.inspect(engine).has_table("zoho_teachers")
    finally:
        engine.dispose()


def test_sqlite_conversions_follow_postgresql_spellings():
    convert = migrate.convert
    assert convert("2024-03-01", sa.String(), sa.Date()) == date(2024, 3, 1)
    assert convert("2024-03-01 10:00:00.000000", sa.DateTime(), sa.Date()) == date(2024, 3, 1)
    assert convert("2024-03-01T12:00:00+02:00", sa.String(), sa.DateTime()) == datetime(2024, 3, 1, 10)
    assert convert(" 42 ", sa.String(), sa.BigInteger()) == 42
    assert convert(12.0, sa.Float(), sa.Integer()) == 12
    assert convert(1, sa.Boolean(), sa.String()) == "true"
    assert convert("Yes", sa.String(), sa.Boolean()) is True
    assert convert(42, sa.Integer(), sa.String(8)) == "42"
    for raw, old, new in [
        ("soon", sa.String(), sa.Date()),
        (1.5, sa.Float(), sa.Integer()),
        (1, sa.Boolean(), sa.Integer()),
        ("maybe", sa.String(), sa.Boolean()),
        ("a" * 9, sa.String(), sa.String(8)),
        (2**40, sa.BigInteger(), sa.Integer()),
    ]:
        with pytest.raises(ValueError):
            convert(raw, old, new)


def test_changes_the_rows_do_not_allow_are_reported_not_applied(engine):
    run_baseline(engine)
    insert_previous_rows(engine)  # sync_cursors stays empty

    def teachers(table: sa.Table) -> list:
        columns = [
            # two teachers have an email, one has none; every teacher has an academic email
            _column(c, nullable=False) if c.name in {"email", "academic_email"} else _column(c)
            for c in table.columns
        ]
        return [
            *columns,
            sa.Column("grade", sa.String(8), nullable=False),  # no server default, rows present
            sa.Column("level", sa.Integer(), nullable=False, server_default="1"),
            *_indexes(table),
            sa.Index("ix_zoho_teachers_fingerprint", "fingerprint", unique=True),  # all rows share it
            sa.Index("ix_zoho_teachers_academic_email", "tenant_id", "academic_email", unique=True),
        ]

    def cursors(table: sa.Table) -> list:  # an empty table: NOT NULL without default is fine
        return [*(_column(c) for c in table.columns), sa.Column("shard", sa.Integer(), nullable=False)]

    target = modified({"zoho_teachers": teachers, "sync_cursors": cursors})
    report = upgrade(engine, target)

    assert "zoho_teachers.academic_email: NOT NULL" in report.columns_altered
    assert any(s.startswith("zoho_teachers.email: left NULL-able, 1 rows hold NULL") for s in report.skipped)
    assert any(s.startswith("zoho_teachers.grade: added NULL-able") for s in report.skipped)
    assert any(
        s.startswith("index ix_zoho_teachers_fingerprint on zoho_teachers: not created")
        for s in report.skipped
    )
    assert "zoho_teachers.ix_zoho_teachers_academic_email" in report.indexes_created
    assert {"zoho_teachers.grade", "zoho_teachers.level", "sync_cursors.shard"} <= set(report.columns_added)
    columns = {c["name"]: c for c in sa.inspect(engine).get_columns("zoho_teachers")}
    assert (columns["email"]["nullable"], columns["academic_email"]["nullable"]) == (True, False)
    assert (columns["grade"]["nullable"], columns["level"]["nullable"]) == (True, False)
    assert not {c["name"]: c for c in sa.inspect(engine).get_columns("sync_cursors")}["shard"]["nullable"]
    teachers_rows = rows(engine, "zoho_teachers", "tenant_id", "zoho_id")
    assert [(t["grade"], t["level"]) for t in teachers_rows] == [(None, 1)] * 3
    assert [t["email"] for t in teachers_rows] == ["ada@example.org", None, "grace@example.org"]
    # what is left is exactly what was reported
    left = sorted(
        (d[0][0], d[0][3]) if isinstance(d, list) else (d[0], d[1].name) for d in differences(engine, target)
    )
    assert left == [
        ("add_index", "ix_zoho_teachers_fingerprint"),
        ("modify_nullable", "email"),
        ("modify_nullable", "grade"),
    ]


# --- the baseline is frozen -----------------------------------------------------------------------

BASELINE_COMMIT = "5d5b30bf1b501a6077b70af0aa942e47592696ad"

_CREATE_ALL_OF_THE_TREE = """
import sys
sys.path.insert(0, sys.argv[1])
import sqlalchemy as sa
import sync_pipelines.warehouse.moodle
from sync_pipelines.warehouse import schema
assert schema.__file__.startswith(sys.argv[1]), schema.__file__
schema.metadata.create_all(sa.create_engine(sys.argv[2]))
"""


def test_baseline_is_the_schema_of_its_commit(engine, other_url, tmp_path):
    """0001 makes exactly what ``create_all`` made at the commit it froze (needs the git history)."""
    root = Path(__file__).resolve().parents[2]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", BASELINE_COMMIT, "sync_pipelines"], capture_output=True
    )
    # Every checkout the suite runs in (a developer's, CI's clone of main) holds that commit.
    assert archive.returncode == 0, f"git archive {BASELINE_COMMIT} failed: {archive.stderr.decode().strip()}"
    tree = tmp_path / "tree"
    (tmp_path / "tree.tar").write_bytes(archive.stdout)
    with tarfile.open(tmp_path / "tree.tar") as tar:
        tar.extractall(tree, filter="data")
    subprocess.run([sys.executable, "-c", _CREATE_ALL_OF_THE_TREE, str(tree), other_url], check=True)

    run_baseline(engine)

    then = make_engine(other_url)
    try:
        assert snapshot(engine) == snapshot(then)
    finally:
        then.dispose()


_RENAME_REVISION = '''"""Rename zoho_teachers.phone_number to mobile: a rename, which the comparison cannot tell."""

from alembic import op

from sync_pipelines.warehouse.migrations.helpers import has_column

revision = "0002_rename_teacher_phone"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if has_column("zoho_teachers", "phone_number") and not has_column("zoho_teachers", "mobile"):
        with op.batch_alter_table("zoho_teachers") as batch:
            batch.alter_column("phone_number", new_column_name="mobile")


def downgrade() -> None:
    raise NotImplementedError
'''


def test_a_rename_revision_keeps_the_values(engine, baseline_only):
    (baseline_only / "versions" / "0002_rename_teacher_phone.py").write_text(_RENAME_REVISION)
    migrate._script.cache_clear()
    run_baseline(engine)
    insert_previous_rows(engine)

    def teachers(table: sa.Table) -> list:
        columns = [_column(c) for c in table.columns if c.name != "phone_number"]
        return [*columns, sa.Column("mobile", sa.String(255)), *_indexes(table)]

    target = modified({"zoho_teachers": teachers})
    report = upgrade(engine, target)

    assert report.revisions_applied == ["0002_rename_teacher_phone"]
    assert "zoho_teachers.mobile" not in report.columns_added
    assert "zoho_teachers.phone_number" not in report.columns_dropped
    got = rows(engine, "zoho_teachers", "tenant_id", "zoho_id")
    assert [t["mobile"] for t in got] == ["+44 20 1234", None, "+1 555"]
    assert version(engine) == "0002_rename_teacher_phone"
    assert differences(engine, target) == []
