"""The warehouse resource."""

import dagster as dg
from pydantic import Field, PrivateAttr

from sync_pipelines.warehouse.store import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse database: embedded SQLite by default, PostgreSQL by setting ``WAREHOUSE_URL``."""

    url: str = Field(description="SQLAlchemy URL, e.g. sqlite:///.local/warehouse.db or postgresql://…")
    _warehouse: Warehouse | None = PrivateAttr(default=None)

    def get(self) -> Warehouse:
        if self._warehouse is None:
            self._warehouse = Warehouse(self.url)
        return self._warehouse

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._warehouse is not None:
            self._warehouse.dispose()
            self._warehouse = None
