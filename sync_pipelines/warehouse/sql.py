"""SQL helpers shared by the warehouse stores.

Besides the ``INSERT … ON CONFLICT`` statement, the bulk writers here move many rows at once:

* on PostgreSQL with psycopg 3, with ``COPY … FROM STDIN`` (binary format, values dumped by
  psycopg's typed dumpers): straight into the table for plain inserts, and through a temporary
  table, then one ``INSERT … SELECT … ON CONFLICT``, for upserts;
* elsewhere (SQLite), with one ``executemany`` of positional tuples through the DBAPI cursor,
  each value passed through the column type's own bind processor, exactly as SQLAlchemy does.

Either way everything runs on the caller's connection, inside its transaction: a failure rolls
back with the rest of it. Names come from the table objects, quoted by the dialect; values are
never spliced into SQL text.
"""

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import repeat
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def upsert_statement(
    engine: sa.Engine | sa.Connection,
    table: sa.Table,
    keys: list[str],
    *,
    keep: frozenset[str] = frozenset(),
    select: sa.Select | None = None,
    columns: Sequence[str] = (),
):
    """``INSERT … ON CONFLICT (keys) DO UPDATE`` of every column but ``keys`` and ``keep``.

    SQLite and PostgreSQL spell it the same way; their dialects build it. With ``select``, the
    rows inserted are those of the query (``INSERT INTO table (columns) SELECT …``).
    """
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table)
    if select is not None:
        stmt = stmt.from_select(list(columns), select)
    return stmt.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in {*keys, *keep}},
    )


def in_values(
    conn: sa.Connection, column: sa.ColumnElement, values: Sequence[str], *, chunk: int = 500
) -> Iterable[sa.ColumnElement[bool]]:
    """Conditions that together say ``column IN values`` (text values; others match nothing).

    One condition with the whole list as a single parameter where the dialect can take one (a
    PostgreSQL array, a SQLite JSON array read by ``json_each``), else one per ``chunk`` values.
    """
    values = [v for v in values if isinstance(v, str)]
    if conn.dialect.name == "postgresql":
        # PostgreSQL text cannot hold NUL: no stored value has one, so such a value matches nothing
        # (and would fail the whole statement as a parameter).
        values = [v for v in values if "\x00" not in v]
    if not values:
        return
    if conn.dialect.name == "postgresql":
        yield column == sa.any_(sa.bindparam(None, values, type_=postgresql.ARRAY(sa.String())))
    elif conn.dialect.name == "sqlite":
        each = sa.func.json_each(sa.bindparam(None, json.dumps(values), type_=sa.String())).table_valued(
            "value"
        )
        yield column.in_(sa.select(each.c.value))
    else:
        for i in range(0, len(values), chunk):
            yield column.in_(values[i : i + chunk])


# --- bulk reads -----------------------------------------------------------------------------------


def fetch_rows(conn: sa.Connection, query: sa.Select) -> list[tuple]:
    """The rows of ``query`` as plain tuples, read straight from the DBAPI cursor.

    The values are those SQLAlchemy would return (a column whose type has a result processor on
    this dialect, such as SQLite's booleans and dates, goes through it, a column at a time), but
    no ``Row`` is built per row; pandas then reads the tuples in C. A query whose parameters need
    SQLAlchemy's own processing (lists expanded into ``IN``, typed binds) runs the ordinary way.
    """
    dialect = conn.dialect
    compiled = query.compile(dialect=dialect)
    binds = compiled.binds.values()
    if (
        getattr(compiled, "post_compile_params", None)
        or getattr(compiled, "literal_execute_params", None)
        or any(b.expanding or b.type.dialect_impl(dialect).bind_processor(dialect) for b in binds)
        or (compiled.positional and compiled.positiontup is None)
    ):
        return [tuple(r) for r in conn.execute(query)]
    params = compiled.params
    if compiled.positional:
        params = tuple(params[name] for name in compiled.positiontup)
    with _dbapi_cursor(conn, compiled.string) as cursor:
        cursor.execute(compiled.string, params)
        codes = [d[1] for d in cursor.description]
        rows = cursor.fetchall()
    processors = [
        c.type.dialect_impl(dialect).result_processor(dialect, code)
        for c, code in zip(query.selected_columns, codes, strict=True)
    ]
    if rows and any(processors):
        columns = [
            [process(v) for v in values] if process else values
            for values, process in zip(zip(*rows, strict=True), processors, strict=True)
        ]
        rows = list(zip(*columns, strict=True))
    return rows


# --- bulk writes ----------------------------------------------------------------------------------

#: Column values of a bulk write: a sequence per column, all of one length.
Columns = Mapping[str, Sequence[Any]]


def bulk_insert(
    conn: sa.Connection, table: sa.Table, columns: Columns, constants: Mapping[str, Any] | None = None
) -> None:
    """Insert one row per position of ``columns`` (plus ``constants``, the same in every row)."""
    constants = constants or {}
    names, n = _names(table, columns, constants)
    if not n:
        return
    if _can_copy(conn):
        _copy(conn, _quoted_table(conn, table), names, _rows(names, columns, constants))
    else:
        _executemany(conn, table, table.insert(), names, columns, constants, n)


def bulk_upsert(
    conn: sa.Connection,
    table: sa.Table,
    columns: Columns,
    keys: list[str],
    *,
    keep: frozenset[str] = frozenset(),
    constants: Mapping[str, Any] | None = None,
) -> None:
    """The bulk :func:`upsert_statement`: insert the rows, or update every column but ``keys``
    and ``keep`` of those whose ``keys`` are already stored.

    The rows' keys must be unique (as in any single ``INSERT … ON CONFLICT DO UPDATE``).
    """
    constants = constants or {}
    names, n = _names(table, columns, constants)
    if not n:
        return
    if not _can_copy(conn):
        stmt = upsert_statement(conn, table, keys, keep=keep)
        _executemany(conn, table, stmt, names, columns, constants, n)
        return
    # COPY into a temporary copy of the table, then one INSERT … SELECT … ON CONFLICT.
    preparer = conn.dialect.identifier_preparer
    stage = f"sp_stage_{table.name}"
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE {preparer.quote(stage)} "
        f"(LIKE {_quoted_table(conn, table)} INCLUDING DEFAULTS) ON COMMIT DROP"
    )
    _copy(conn, preparer.quote(stage), names, _rows(names, columns, constants))
    source = sa.select(*(sa.column(c) for c in names)).select_from(sa.table(stage))
    conn.execute(upsert_statement(conn, table, keys, keep=keep, select=source, columns=names))
    conn.exec_driver_sql(f"DROP TABLE {preparer.quote(stage)}")


def _names(table: sa.Table, columns: Columns, constants: Mapping[str, Any]) -> tuple[list[str], int]:
    names = [*columns, *constants]
    unknown = [c for c in names if c not in table.c]
    if unknown:
        raise KeyError(f"{table.name} has no column(s) {unknown}")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise ValueError(f"bulk write into {table.name}: columns of lengths {sorted(lengths)}")
    return names, lengths.pop()


def _rows(names: list[str], columns: Columns, constants: Mapping[str, Any]) -> Iterable[tuple]:
    return zip(*(columns[c] if c in columns else repeat(constants[c]) for c in names), strict=False)


def _quoted_table(conn: sa.Connection, table: sa.Table) -> str:
    return conn.dialect.identifier_preparer.format_table(table)


def _can_copy(conn: sa.Connection) -> bool:
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


@contextmanager
def _dbapi_cursor(conn: sa.Connection, statement: str) -> Iterator[Any]:
    """A cursor of the connection's own DBAPI connection, so inside its transaction; a DBAPI
    error comes out as SQLAlchemy would have raised it (``IntegrityError``, ``DataError``, …)."""
    dbapi = conn.dialect.dbapi
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        yield cursor
    except dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(statement, None, exc, dbapi.Error, dialect=conn.dialect) from exc
    finally:
        cursor.close()


def _copy(conn: sa.Connection, target: str, names: list[str], rows: Iterable[tuple]) -> None:
    """``COPY target (names) FROM STDIN`` in binary, each value dumped as the type of its column."""
    cols = ", ".join(conn.dialect.identifier_preparer.quote(c) for c in names)
    statement = f"COPY {target} ({cols}) FROM STDIN (FORMAT BINARY)"
    with _dbapi_cursor(conn, statement) as cursor:
        # The columns' type oids, for the binary dumpers (a query that returns no row).
        cursor.execute(f"SELECT {cols} FROM {target} WHERE false")
        oids = [d.type_code for d in cursor.description]
        with cursor.copy(statement) as copy:
            copy.set_types(oids)
            write = copy.write_row
            for row in rows:
                write(row)


def _executemany(
    conn: sa.Connection,
    table: sa.Table,
    stmt: sa.Executable,
    names: list[str],
    columns: Columns,
    constants: Mapping[str, Any],
    n: int,
) -> None:
    """One ``executemany`` of positional tuples, streamed to the DBAPI cursor: the statement
    compiled once by the dialect, each value passed through its column type's bind processor
    (what SQLAlchemy itself would send, without building a dict per row)."""
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect, column_keys=names)
    order = compiled.positiontup if compiled.positional else None
    if order is None or not set(order) <= set(names):  # a named-parameter driver: the plain way
        rows = [dict(zip(names, row, strict=True)) for row in _rows(names, columns, constants)]
        conn.execute(stmt, rows)
        return
    values: list[Iterable[Any]] = []
    for name in order:
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if name in constants:
            value = constants[name]
            values.append(repeat(process(value) if process else value, n))
        elif process:
            values.append([process(v) for v in columns[name]])
        else:
            values.append(columns[name])
    with _dbapi_cursor(conn, compiled.string) as cursor:
        cursor.executemany(compiled.string, zip(*values, strict=False))  # constants repeat
