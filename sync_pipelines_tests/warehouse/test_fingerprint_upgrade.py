"""A warehouse of the previous schema, fingerprinted the old way (sp1, no ``fingerprint_version``
column, no natural-key index), is upgraded in place and re-fingerprinted once by the next read:
no record is reported UPDATED or REFRESHED for it, and a real edit still is. On SQLite and
PostgreSQL.

The old warehouse is made by the sync itself with the fingerprint function of the previous
version (:func:`sync_pipelines.diff.python_digests`, the sp1 reference the removed native module
was tested bit for bit against), then the schema is taken back to the previous one.
"""

import pandas as pd
import pytest
import sqlalchemy as sa

from sync_pipelines import diff as diff_module
from sync_pipelines.sandbox import ZohoSimulator
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.migrate import STATE_TABLE
from sync_pipelines.warehouse.schema import MODULE_TABLES
from sync_pipelines.zoho.modules import MODULES, module
from sync_pipelines.zoho.sync import sync_module
from sync_pipelines_tests.zoho.test_sync import TENANT, _client, _sync_all, sim  # noqa: F401


def _previous_warehouse(school: ZohoSimulator, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sync every module with sp1 fingerprints, then drop what the previous schema lacked."""
    with monkeypatch.context() as patch:
        patch.setattr(diff_module, "mirror_digests", diff_module.python_digests)
        store = Warehouse(url)
        _sync_all(school, store)
    with store.engine.begin() as conn:
        for spec in MODULES:
            table = MODULE_TABLES[spec.name].name
            conn.exec_driver_sql(f"DROP INDEX IF EXISTS ix_{table}_natural_key")
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN fingerprint_version")
        conn.exec_driver_sql(f"DELETE FROM {STATE_TABLE}")  # as the previous version left it
    store.dispose()


def test_the_old_fingerprints_are_replaced_once_and_no_record_is_reported_changed(
    sim: ZohoSimulator,  # noqa: F811
    warehouse_url: str,
    monkeypatch: pytest.MonkeyPatch,
):
    _previous_warehouse(sim, warehouse_url, monkeypatch)
    store = Warehouse(warehouse_url)  # the upgrade: the column and the indexes come back
    before = {spec.name: store.read_table(TENANT, spec) for spec in MODULES}
    for spec in MODULES:
        frame = before[spec.name]
        assert len(frame), spec.name
        assert frame["fingerprint_version"].isna().all(), spec.name
        assert frame["fingerprint"].str.len().eq(64).all(), spec.name  # sp1: SHA-256 hex
    with store.engine.connect() as conn:
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("zoho_students")}
    assert "ix_zoho_students_natural_key" in indexes

    reports = _sync_all(sim, store, full_refresh=True)
    for spec in MODULES:
        counts, live = reports[spec.name].counts, len(before[spec.name])
        assert counts["UPDATED"] == counts["REFRESHED"] == counts["NEW"] == 0, (spec.name, counts)
        # (records with findings count as INVALID: what happened to their rows is their change)
        assert set(reports[spec.name].result.records["change"]) == {"UNCHANGED"}, spec.name
        assert reports[spec.name].extra["refingerprinted"] == live, spec.name
        after = store.read_table(TENANT, spec)
        assert after["fingerprint_version"].eq(diff_module.FINGERPRINT_VERSION).all(), spec.name
        assert after["fingerprint"].str.len().eq(32).all(), spec.name  # sp2: XXH3-128 hex
        # Nothing else of a row changed: not its values, not when or by which run it was written.
        kept = [
            c for c in after.columns if c not in {"fingerprint", "aux_fingerprint", "fingerprint_version"}
        ]
        pd.testing.assert_frame_equal(after[kept], before[spec.name][kept])

    # Once: the next full read finds every record unchanged in the new format, re-fingerprints none.
    again = _sync_all(sim, store, full_refresh=True)
    assert all(r.extra["refingerprinted"] == 0 for r in again.values())
    assert all(r.counts["UPDATED"] == r.counts["REFRESHED"] == 0 for r in again.values())
    # And a real edit is still an edit.
    student = next(r for r in sim.records("BTEC_Students") if r.get("Last_Name"))
    sim.update("BTEC_Students", student["id"], Last_Name="Al-Khatib")
    report = sync_module(tenant_id=TENANT, spec=module("students"), client=_client(sim), warehouse=store)
    assert report.counts["UPDATED"] == 1
    store.dispose()


def test_an_incremental_read_re_fingerprints_only_what_it_read(
    sim: ZohoSimulator,  # noqa: F811
    warehouse_url: str,
    monkeypatch: pytest.MonkeyPatch,
):
    _previous_warehouse(sim, warehouse_url, monkeypatch)
    store = Warehouse(warehouse_url)
    students = module("students")
    touched = [r for r in sim.records("BTEC_Students") if r.get("Last_Name")][:2]
    # One record is edited, one only saved again (its Modified_Time moves, nothing else).
    sim.update("BTEC_Students", touched[0]["id"], Last_Name="Al-Khatib")
    sim.update("BTEC_Students", touched[1]["id"], Last_Name=touched[1]["Last_Name"])
    report = sync_module(tenant_id=TENANT, spec=students, client=_client(sim), warehouse=store)
    assert report.counts["UPDATED"] == 1
    assert report.counts["NEW"] == 0
    by_id = store.read_table(TENANT, students).set_index("zoho_id")
    read = [str(r["id"]) for r in touched]
    assert by_id.loc[read, "fingerprint_version"].eq(2).all()
    assert by_id.drop(index=read)["fingerprint_version"].isna().all()
    store.dispose()
