"""Checks for guarded revisions: what the warehouse a revision runs on already has."""

import sqlalchemy as sa
from alembic import op


def _inspector() -> sa.Inspector:
    return sa.inspect(op.get_bind())


def has_table(table: str) -> bool:
    """Whether ``table`` exists."""
    return _inspector().has_table(table)


def has_column(table: str, column: str) -> bool:
    """Whether ``table`` exists and has ``column``."""
    inspector = _inspector()
    return inspector.has_table(table) and column in {c["name"] for c in inspector.get_columns(table)}


def has_index(table: str, index: str) -> bool:
    """Whether ``table`` exists and has an index named ``index``."""
    inspector = _inspector()
    return inspector.has_table(table) and index in {i["name"] for i in inspector.get_indexes(table)}
