"""Where things live by default: everything embedded under ``.local/``, no server needed."""

import os
from pathlib import Path

LOCAL_DIR_ENV = "SYNC_LOCAL_DIR"
WAREHOUSE_URL_ENV = "WAREHOUSE_URL"


def local_dir() -> Path:
    """The folder for the embedded SQLite warehouse (``.local`` under the working directory)."""
    return Path(os.environ.get(LOCAL_DIR_ENV, ".local")).resolve()


def default_warehouse_url() -> str:
    return f"sqlite:///{local_dir() / 'warehouse.db'}"
