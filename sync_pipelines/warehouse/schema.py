"""Warehouse tables, built from the module table (one per Zoho module) plus the sync log.

Every table is keyed by ``tenant_id`` first: one school's rows are never read or written by a
query that does not name its tenant.
"""

import sqlalchemy as sa

from sync_pipelines.zoho.modules import MODULES, Kind, ModuleSpec

metadata = sa.MetaData()

_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER only


def column_type(kind: Kind) -> sa.types.TypeEngine:
    """The SQL type a canonical kind is stored as."""
    match kind:
        case "date":
            return sa.Date()
        case "datetime":
            return sa.DateTime(timezone=True)
        case "boolean":
            return sa.Boolean()
        case "integer":
            return sa.BigInteger()
        case "double" | "currency":
            return sa.Float()
        case "lookup":
            return sa.String(32)  # a record id; a value that is not one is stored NULL (see findings)
        case _:
            # Unbounded: the mirror stores what Zoho holds, a text longer than Zoho's single-line
            # limit too (it is a finding, not a reason to refuse the record).
            return sa.Text()


def _module_table(spec: ModuleSpec) -> sa.Table:
    lookup_indexes = [
        sa.Index(f"ix_{spec.table}_{f.column}", "tenant_id", f.column)
        for f in spec.fields
        if f.kind == "lookup"
    ]
    # An incremental sync reads only the stored records holding the natural keys it was sent
    # (Warehouse.load_state), by this index.
    if spec.natural_key:
        lookup_indexes.append(sa.Index(f"ix_{spec.table}_natural_key", "tenant_id", *spec.natural_key))
    return sa.Table(
        spec.table,
        metadata,
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("zoho_id", sa.String(32), primary_key=True),
        *(
            sa.Column(f.column, column_type(f.kind), comment=f"Zoho {spec.api_name}.{f.api_name}")
            for f in spec.fields
        ),
        sa.Column(
            "zoho_modified_time",
            sa.DateTime(timezone=True),
            comment="Zoho Modified_Time, when the module has it",
        ),
        sa.Column(
            "fingerprint",
            sa.String(64),
            nullable=False,
            comment="of the business fields, in the format fingerprint_version says",
        ),
        sa.Column(
            "aux_fingerprint",
            sa.String(64),
            comment="of the bookkeeping and formula fields, Modified_Time and findings (same format)",
        ),
        sa.Column(
            "fingerprint_version",
            sa.SmallInteger(),
            comment="format of both fingerprints: 2 = sp2 (XXH3-128); NULL = sp1 (SHA-256), written "
            "before the version was stored (sync_pipelines/diff.py)",
        ),
        sa.Column(
            "findings",
            sa.Text(),
            comment='JSON list of the validation rules the record breaks ({"rule","field","value"}); NULL when valid',
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "deleted_at", sa.DateTime(timezone=True), comment="set when Zoho reports the record deleted"
        ),
        sa.Column(
            "sync_run_id", sa.String(36), nullable=False, comment="the sync run that last wrote this row"
        ),
        *lookup_indexes,
        comment=f"One row per {spec.label}, per tenant.",
    )


MODULE_TABLES: dict[str, sa.Table] = {spec.name: _module_table(spec) for spec in MODULES}


def subform_table_name(spec: ModuleSpec, column: str) -> str:
    return f"{spec.table}__{column}"


def _subform_table(spec: ModuleSpec, column: str, api_name: str) -> sa.Table:
    name = subform_table_name(spec, column)
    return sa.Table(
        name,
        metadata,
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column(
            "parent_id", sa.String(32), primary_key=True, comment=f"the {spec.api_name} record's zoho_id"
        ),
        sa.Column("row_id", sa.String(32), primary_key=True, comment="the subform row's own Zoho id"),
        sa.Column(
            "position", sa.Integer(), nullable=False, comment="the row's place in the subform (0 first)"
        ),
        sa.Column("fields", sa.Text(), nullable=False, comment="JSON: the row's fields, canonical"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), comment="set when the parent record is deleted"),
        sa.Column("sync_run_id", sa.String(36), nullable=False),
        comment=f"One row per row of the subform {spec.api_name}.{api_name}, per tenant; replaced with its parent.",
    )


#: Child tables, one per subform field: (module name, column) → table.
SUBFORM_TABLES: dict[tuple[str, str], sa.Table] = {
    (spec.name, f.column): _subform_table(spec, f.column, f.api_name)
    for spec in MODULES
    for f in spec.fields
    if f.kind == "subform"
}

sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("sync_run_id", sa.String(36), primary_key=True),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("module", sa.String(64), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False, comment="success or failed"),
    sa.Column("mode", sa.String(16), nullable=False, comment="incremental or full"),
    sa.Column("counts", sa.Text(), comment="JSON: records per status"),
    sa.Column("api_calls", sa.Integer()),
    sa.Column("api_credits", sa.Integer()),
    sa.Column("watermark", sa.String(32), comment="Modified_Time watermark after the run"),
    sa.Column("error", sa.Text()),
    sa.Index("ix_sync_runs_tenant_module", "tenant_id", "module", "started_at"),
    comment="One row per module sync of one tenant.",
)

sync_results = sa.Table(
    "sync_results",
    metadata,
    sa.Column("id", _BIGINT_ID, primary_key=True, autoincrement=True),
    sa.Column("sync_run_id", sa.String(36), nullable=False),
    sa.Column("tenant_id", sa.String(64), nullable=False),
    sa.Column("module", sa.String(64), nullable=False),
    sa.Column("zoho_id", sa.String(32), nullable=False),
    sa.Column(
        "status",
        sa.String(16),
        nullable=False,
        comment="NEW, UPDATED, REFRESHED, UNCHANGED, DELETED, or INVALID (stored, with findings)",
    ),
    sa.Column("change", sa.String(16), comment="what happened to the stored row (INVALID ones too)"),
    sa.Column("reason", sa.Text()),
    sa.Column("findings", sa.Text(), comment='JSON [{"rule","field","value"}] of an INVALID record'),
    sa.Column("changes", sa.Text(), comment="JSON {field: [old, new]} for UPDATED and REFRESHED records"),
    sa.Index("ix_sync_results_record", "tenant_id", "module", "zoho_id"),
    sa.Index("ix_sync_results_run", "sync_run_id"),
    comment="What each sync run did with each record it saw, and why.",
)

sync_cursors = sa.Table(
    "sync_cursors",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("module", sa.String(64), primary_key=True),
    sa.Column("modified_since", sa.String(32), comment="If-Modified-Since for the next incremental read"),
    sa.Column("deleted_since", sa.String(32), comment="If-Modified-Since for the next /deleted read"),
    sa.Column("max_id", sa.String(32), comment="highest record id seen (modules without Modified_Time)"),
    sa.Column("last_full_at", sa.DateTime(timezone=True), comment="last full reconciliation"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    comment="Incremental-read position per tenant and module.",
)

sync_pending = sa.Table(
    "sync_pending",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("module", sa.String(64), primary_key=True),
    sa.Column("zoho_id", sa.String(32), primary_key=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column(
        "payload",
        sa.Text(),
        nullable=False,
        comment="JSON canonical record, re-applied when its lookup arrives",
    ),
    sa.Column("first_skipped_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    comment=(
        "Records an earlier version held back (SKIPPED); the first sync after the upgrade stores "
        "them. Nothing is added any more."
    ),
)

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("tenant_id", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(16), primary_key=True, comment="zoho or moodle"),
    sa.Column("event_id", sa.String(128), primary_key=True),
    sa.Column("module", sa.String(64), primary_key=True, comment="the module the event was applied to"),
    sa.Column("kind", sa.String(32), nullable=False, comment="zoho.notification or zoho.records"),
    sa.Column("received_at", sa.DateTime(timezone=True), comment="when the receiver accepted it"),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sync_run_id", sa.String(36), comment="the module sync that applied it (sync_runs)"),
    sa.Column("dagster_run_id", sa.String(64)),
    comment=(
        "Webhook events applied to the warehouse, one row per event and module, written in the "
        "transaction that applied it: a retried run skips what is here, so an event is applied once."
    ),
)
