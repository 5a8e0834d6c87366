"""SQL helpers shared by the warehouse stores."""

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def upsert_statement(
    engine: sa.Engine, table: sa.Table, keys: list[str], *, keep: frozenset[str] = frozenset()
):
    """``INSERT … ON CONFLICT (keys) DO UPDATE`` of every column but ``keys`` and ``keep``.

    SQLite and PostgreSQL spell it the same way; their dialects build it.
    """
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in {*keys, *keep}},
    )
