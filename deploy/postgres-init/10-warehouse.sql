-- compose.yaml's PostgreSQL, first start only (an empty data volume): the warehouse's database
-- beside Dagster's (POSTGRES_DB=dagster), owned by the same role. Its tables are created by the
-- first run (sync_pipelines/warehouse/migrate.py); Dagster's by the first webserver or daemon start.
CREATE DATABASE warehouse;
