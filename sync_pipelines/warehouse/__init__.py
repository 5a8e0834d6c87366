"""The warehouse: SQLAlchemy tables built from the module table, and the tenant-scoped store."""

from sync_pipelines.warehouse.store import Cursor, RunInfo, Warehouse

__all__ = ["Cursor", "RunInfo", "Warehouse"]
