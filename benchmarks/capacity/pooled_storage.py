"""Dagster's PostgreSQL storage with a connection pool (variant ``pooled`` of capacity_bench).

dagster-postgres gives its run, event-log and schedule storages a ``NullPool`` engine (a new
connection, so a new PostgreSQL backend process, for every storage call) except in the webserver,
which calls ``optimize_for_webserver`` to hold a small pool. This storage does the same in every
process that opens the instance (the daemon, its code servers, every run worker): one pooled
connection per storage kept open (``pool_size=1``), more on demand (``max_overflow``), recycled
after an hour, no statement timeout. Named in ``dagster.yaml`` as

.. code-block:: yaml

    storage:
      custom:
        module: benchmarks.capacity.pooled_storage
        class: PooledPostgresStorage
        config: {postgres_db: {...}}   # as under storage.postgres

It measures, from the benchmark side, what the same class in ``sync_pipelines`` would save.
"""

from dagster_postgres.storage import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

POOL_RECYCLE_S = 3600
MAX_OVERFLOW = 10


class PooledPostgresStorage(DagsterPostgresStorage):
    """:class:`DagsterPostgresStorage` whose three storages keep their connections in a pool."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            # statement_timeout 0: none (the webserver sets one; the runs must not get one).
            storage.optimize_for_webserver(
                statement_timeout=0, pool_recycle=POOL_RECYCLE_S, max_overflow=MAX_OVERFLOW
            )

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
