"""Shared fixtures: warehouses on SQLite and on the PostgreSQL server of the machine."""

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sync_pipelines.warehouse import Warehouse

#: Where temporary files go when TMPDIR is not set: memory. Nearly every test keeps a Dagster instance
#: (SQLite run and event storage) and a SQLite warehouse under tmp_path, and Dagster writes and
#: commits every event: on a shared disk each commit waits for an fsync, which took about half the
#: suite's time. Nothing a test checks depends on the disk (a crash test kills processes, not power).
MEMORY_TMP = Path("/dev/shm")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("TMPDIR") or not os.access(MEMORY_TMP, os.W_OK):
        return
    if shutil.disk_usage(MEMORY_TMP).free < 4 * 2**30:
        return
    folder = MEMORY_TMP / "sync_pipelines_tests"
    folder.mkdir(exist_ok=True)
    # Subprocesses (the webserver, crash workers, make) inherit it; xdist workers start after this.
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)


#: The files that take longest (``pytest --durations``), heaviest first. ``make test`` hands whole files
#: to its workers (``--dist loadfile``) in collection order; a heavy file collected last would run
#: alone at the end while the other workers idle, so these are collected first. Only the order
#: changes: every test of every file still runs, each file's tests together and in their order.
HEAVY_FIRST = (  # worker-seconds per file in one run of the suite (pytest --durations=0), 2026-12-08
    "test_benchmarks.py",  # 88, then the quick Moodle-by-change and Bulk Read benches came
    "zoho/test_sync.py",  # 142
    "reliability/test_isolation.py",  # 104
    "zoho/test_mirror.py",  # 89
    "moodle/test_criteria.py",  # 88
    "warehouse/test_migrations.py",  # 77
    "moodle/test_provision.py",  # 70
    "moodle/test_assets.py",  # 58
    "reliability/test_faults.py",  # 53
    "moodle/test_drift.py",  # 45
    "test_event_delivery.py",  # 42
    "zoho/test_canonical.py",  # 38
    "reliability/test_hostile.py",  # 36
    "test_checks.py",  # 33
    "zoho/test_assets.py",  # 32
    "warehouse/test_store.py",  # 32
    "reliability/test_crash.py",  # 31
    "test_progress.py",  # 30
    "zoho/test_tokens.py",  # 22
    "test_report.py",  # 17
    "test_events_e2e.py",  # 17
    # measured on their own (2026-12-08, -n 3): 42 s for the three
    "moodle/test_by_change.py",
    "zoho/test_bulk_read.py",
    "warehouse/test_fingerprint_upgrade.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}

    def heaviness(item: pytest.Item) -> int:
        try:
            name = item.path.relative_to(root).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(name, len(rank))

    items.sort(key=heaviness)  # stable: within a file, and among the rest, the order is kept


#: Server for the PostgreSQL variants; each test gets a database of its own, dropped afterwards.
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(autouse=True)
def _private_token_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test keeps Zoho access tokens in a folder of its own (``SYNC_TOKEN_DIR``), never in
    the work tree's ``.local``, so no test inherits another's token or throttle."""
    if "SYNC_TOKEN_DIR" not in os.environ:
        monkeypatch.setenv("SYNC_TOKEN_DIR", str(tmp_path_factory.mktemp("zoho_tokens")))


def postgres_database() -> Iterator[str]:
    """A fresh database on the PostgreSQL server, dropped afterwards: its URL."""
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"sp_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh, empty warehouse URL: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
    else:
        yield from postgres_database()


@pytest.fixture
def warehouse(warehouse_url: str) -> Iterator[Warehouse]:
    store = Warehouse(warehouse_url)
    yield store
    store.dispose()
