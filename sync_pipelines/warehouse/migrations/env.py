"""How Alembic reaches the warehouse: the connection handed over by the upgrade, else a URL.

:func:`sync_pipelines.warehouse.migrate.upgrade` passes its own connection (already locked, inside
its transaction) as ``config.attributes["connection"]``; the revisions then run in that
transaction. From the command line (``python -m sync_pipelines.warehouse.migrate …``) the URL is
``--url``, else ``WAREHOUSE_URL`` or ``SYNC_DATABASE_URL``, else the embedded default; ``--sql`` writes the SQL instead.
"""

import sqlalchemy as sa
from alembic import context

from sync_pipelines.settings import warehouse_url
from sync_pipelines.warehouse.migrate import VERSION_TABLE

config = context.config


def _url() -> str:
    return config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or warehouse_url()


def _configure(**kw) -> None:
    context.configure(
        version_table=VERSION_TABLE,
        # Revisions are written by hand; autogenerate is the upgrade's table-driven part.
        target_metadata=config.attributes.get("target_metadata"),
        on_version_apply=config.attributes.get("on_version_apply"),
        **kw,
    )


def _run(connection: sa.Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():  # a no-op inside the upgrade's own transaction
        context.run_migrations()


if context.is_offline_mode():
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    _run(connection)
else:
    engine = sa.create_engine(_url())
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()
