"""The warehouse: SQLAlchemy tables built from the module table, and the tenant-scoped stores."""

from sync_pipelines.warehouse import org_cache  # noqa: F401  (registers zoho_org_metadata on the metadata)
from sync_pipelines.warehouse.moodle import MoodleStore, Push, payload_fingerprint
from sync_pipelines.warehouse.store import Cursor, RunInfo, Warehouse

__all__ = ["Cursor", "MoodleStore", "Push", "RunInfo", "Warehouse", "payload_fingerprint"]
