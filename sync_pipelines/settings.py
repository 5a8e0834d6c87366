"""Where things live: by default everything embedded under ``.local/``, no server needed.

One setting, ``SYNC_DATABASE_URL`` (a PostgreSQL URL), moves the warehouse there; the Makefile also
points ``DAGSTER_HOME`` at ``instances/postgres`` for it, whose ``dagster.yaml`` keeps Dagster's runs,
event logs and schedules in the same database. ``WAREHOUSE_URL``, when set, names the warehouse alone
and wins.
"""

import os
from pathlib import Path

LOCAL_DIR_ENV = "SYNC_LOCAL_DIR"
WAREHOUSE_URL_ENV = "WAREHOUSE_URL"
DATABASE_URL_ENV = "SYNC_DATABASE_URL"


def local_dir() -> Path:
    """The folder for the embedded SQLite warehouse (``.local`` under the working directory)."""
    return Path(os.environ.get(LOCAL_DIR_ENV, ".local")).resolve()


def default_warehouse_url() -> str:
    return f"sqlite:///{local_dir() / 'warehouse.db'}"


def warehouse_url_env() -> str | None:
    """The environment variable that names the warehouse, or ``None`` for the embedded default."""
    for name in (WAREHOUSE_URL_ENV, DATABASE_URL_ENV):
        if os.environ.get(name):
            return name
    return None


def warehouse_url() -> str:
    """The warehouse's SQLAlchemy URL: ``WAREHOUSE_URL``, else ``SYNC_DATABASE_URL``, else SQLite."""
    name = warehouse_url_env()
    return os.environ[name] if name else default_warehouse_url()


def describe() -> str:
    """Where this process keeps Dagster's runs and the warehouse (``make where``), no password shown."""
    import sqlalchemy as sa
    import yaml

    home = Path(os.environ.get("DAGSTER_HOME") or ".").resolve()
    try:
        storage = next(iter((yaml.safe_load((home / "dagster.yaml").read_text()) or {}).get("storage", {})))
    except (OSError, StopIteration, AttributeError):
        storage = "default (no storage in dagster.yaml)"
    url = sa.make_url(warehouse_url()).render_as_string(hide_password=True)
    return f"dagster instance: {home} (storage: {storage})\nwarehouse: {url}"


if __name__ == "__main__":
    print(describe())
