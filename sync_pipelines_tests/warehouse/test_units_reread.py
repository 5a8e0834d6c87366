"""Revision 0003: a warehouse at 0002 forgets the units' read position (so the criteria
descriptions are read), and only theirs; on SQLite and PostgreSQL."""

import sqlalchemy as sa

from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.migrate import STATE_TABLE, VERSION_TABLE


def test_a_warehouse_at_0002_reads_units_in_full_once_and_keeps_other_positions(warehouse_url: str):
    store = Warehouse(warehouse_url)
    with store.engine.begin() as conn:
        for module in ("units", "students"):
            conn.execute(
                sa.text(
                    "INSERT INTO sync_cursors (tenant_id, module, modified_since, updated_at) VALUES ('t1', :m, 'x', CURRENT_TIMESTAMP)"
                ),
                {"m": module},
            )
        conn.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version_num = '0002_mirror_reread'")
        conn.exec_driver_sql(f"DELETE FROM {STATE_TABLE}")
    store.dispose()

    upgraded = Warehouse(warehouse_url)
    with upgraded.engine.connect() as conn:
        left = {m for (m,) in conn.execute(sa.text("SELECT module FROM sync_cursors WHERE tenant_id = 't1'"))}
        at = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    assert left == {"students"}
    assert at == "0003_units_criteria_reread"
    upgraded.dispose()
