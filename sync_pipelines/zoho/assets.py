"""One asset per Zoho module, built from the module table."""

import time
from datetime import datetime, timedelta

import dagster as dg
from pydantic import Field

from sync_pipelines.diff import ID, Status
from sync_pipelines.metadata import ZOHO_STATUSES, md_table, run_metadata
from sync_pipelines.progress import Progress
from sync_pipelines.tenants import TenantConfigError, tenant_partitions
from sync_pipelines.warehouse.org_cache import load_tenant_modules
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.warehouse.schema import column_type
from sync_pipelines.webhooks.drop import DropFileError, drop_dir, read_event, resolve
from sync_pipelines.zoho.client import ZohoError
from sync_pipelines.zoho.modules import MODULES, ModuleSpec, module
from sync_pipelines.zoho.resource import ZohoCRMResource
from sync_pipelines.zoho.sync import DELETED_CHECK_MINUTES, ModuleEvent, ModuleSyncReport, sync_module

#: How old a tenant's cached org metadata may grow before a run reads it again; the nightly
#: reconciliation reads it again whatever its age (an hour, for its first step).
ORG_METADATA_MAX_AGE_HOURS = 36.0


class ZohoSyncConfig(dg.Config):
    """Run configuration of a Zoho module sync."""

    full_refresh: bool = False
    """Read every record, not only what changed; also marks missing records DELETED."""
    reconcile_after_hours: float = 24.0
    """Modules without Modified_Time are fully reconciled when the last full read is older."""
    deleted_check_minutes: float = DELETED_CHECK_MINUTES
    """Incremental runs read Zoho's /deleted when the last check is this old (0: every run)."""
    record_ids: list[str] = Field(default_factory=list)
    """Read only these records, by id; the read position does not move."""
    deleted_ids: list[str] = Field(default_factory=list)
    """Records said to be deleted in Zoho: each is confirmed by id before it is marked DELETED."""
    event_files: list[str] = Field(default_factory=list)
    """Webhook events to apply, as references to their drop files (``<tenant>/zoho/<file>``); the
    run reads the records from the files, so no record content is ever part of run config."""
    org_metadata_max_age_hours: float = ORG_METADATA_MAX_AGE_HOURS
    """The tenant's cached /settings/modules and /settings/fields are read again when older."""


def module_events(tenant_id: str, spec: ModuleSpec, refs: list[str]) -> list[ModuleEvent]:
    """The webhook events of ``spec``'s module that ``refs`` name, read from their drop files, in
    arrival order.

    Raises:
        DropFileError: a reference names no file, or a file of another tenant or module.
    """
    root = drop_dir()
    out: list[tuple[datetime, str, ModuleEvent]] = []
    for ref in refs:
        path = resolve(root, ref)
        event = read_event(path)
        if event.tenant_id != tenant_id or event.source != "zoho":
            raise DropFileError(
                f"{ref} is an event of {event.tenant_id}/{event.source}, not {tenant_id}/zoho"
            )
        payload = event.payload
        if payload.get("module") != spec.api_name:
            raise DropFileError(f"{ref} is about {payload.get('module')}, not {spec.api_name}")
        ids = tuple(payload.get("record_ids") or ())
        deleted = event.kind == "zoho.notification" and payload.get("event_type") == "deleted"
        out.append(
            (
                event.received_at,
                path.name,
                ModuleEvent(
                    source="zoho",
                    event_id=event.event_id,
                    kind=event.kind,
                    received_at=event.received_at,
                    record_ids=() if deleted else ids,
                    deleted_ids=ids if deleted else (),
                    records=tuple(payload.get("records") or ()),
                ),
            )
        )
    return [e for _, _, e in sorted(out, key=lambda t: (t[0], t[1]))]


def zoho_ops_config(**config: object) -> dict:
    """Run configuration giving every Zoho module asset the same :class:`ZohoSyncConfig` values,
    e.g. ``zoho_ops_config(deleted_check_minutes=0)`` for a run that checks deletions at once."""
    return {"ops": {f"zoho__{m.name}": {"config": dict(config)} for m in MODULES}}


def asset_key(spec: ModuleSpec) -> dg.AssetKey:
    return dg.AssetKey(["zoho", spec.name])


def report_metadata(
    report: ModuleSyncReport,
    row_count: int,
    *,
    api_calls: int | None = None,
    duration_seconds: float | None = None,
    org_metadata_api_calls: int | None = None,
) -> dict[str, object]:
    """What the data team sees on a materialization: every count a number the UI plots
    (:func:`~sync_pipelines.metadata.run_metadata`), then the mode, the read position and the tables.

    ``api_calls`` (default: the sync's own) is the step's, the org metadata read included.
    """
    recs = report.result.records
    problems = recs.loc[recs["sync_status"] == Status.INVALID, [ID, "change", "sync_reason"]]
    problems = problems.rename(columns={"sync_reason": "findings"})
    meta: dict[str, object] = run_metadata(
        counts=report.counts,
        statuses=ZOHO_STATUSES,
        row_count=row_count,
        api_calls=report.api_calls if api_calls is None else api_calls,
        api_credits=report.api_credits,
        duration_seconds=duration_seconds,
        lag_seconds=report.lag_seconds,
        fetched=report.fetched,
        deleted_listed=report.deleted_seen,
        unidentified=report.extra.get("unidentified", 0),
        confirmed_deleted_by_id=report.extra.get("confirmed_deleted", 0),
        lookups_missing_in_zoho=report.extra.get("lookups_missing_in_zoho", 0),
        lookups_waiting=report.extra.get("lookups_waiting", 0),
        subform_reads=report.extra.get("subform_reads", 0),
        events_applied=report.extra.get("events_applied", 0),
        org_metadata_api_calls=org_metadata_api_calls,
    )
    meta["mode"] = report.mode
    if report.cursor.modified_since is not None:
        meta["watermark"] = dg.MetadataValue.timestamp(report.cursor.modified_since)
    meta["max_id"] = report.cursor.max_id or ""
    meta["sync_run_id"] = report.sync_run_id
    meta["changes"] = dg.MetadataValue.md(md_table(report.result.changes))
    meta["invalid_records"] = dg.MetadataValue.md(md_table(problems))
    return meta


def _column_schema(spec: ModuleSpec) -> dg.TableSchema:
    cols = [dg.TableColumn("tenant_id", "string"), dg.TableColumn("zoho_id", "string")]
    cols += [
        dg.TableColumn(
            f.column, str(column_type(f.kind)).lower(), description=f"{spec.api_name}.{f.api_name}"
        )
        for f in spec.fields
    ]
    cols += [
        dg.TableColumn(c, "string" if c == "fingerprint" else "timestamp")
        for c in ("fingerprint", "first_seen_at", "updated_at", "deleted_at")
    ]
    cols.append(
        dg.TableColumn("findings", "string", description="JSON: the validation rules the record breaks")
    )
    return dg.TableSchema(columns=cols)


def build_zoho_asset(spec: ModuleSpec) -> dg.AssetsDefinition:
    """The asset that syncs one Zoho module of one tenant into the warehouse."""
    upstream = [asset_key(module(target)) for target in spec.upstream]
    waits = ", ".join(f"`{module(t).name}`" for t in spec.upstream) or "nothing"

    @dg.asset(
        key=asset_key(spec),
        deps=upstream,
        partitions_def=tenant_partitions,
        group_name="zoho",
        kinds={"zoho", "pandas", "sql"},
        owners=["team:data-platform"],
        tags={"zoho_module": spec.api_name},
        description=(
            f"Warehouse table `{spec.table}`: one row per {spec.label}, per tenant. Synced from the "
            f"Zoho CRM module `{spec.api_name}` (incremental, fingerprint diff). Waits for {waits}."
        ),
        metadata={
            "zoho_module": spec.api_name,
            "dagster/table_name": spec.table,
            "dagster/column_schema": _column_schema(spec),
            "natural_key": ", ".join(spec.natural_key) or "zoho_id",
            "incremental_by": "Modified_Time" if spec.has_modified_time else "id + nightly reconciliation",
        },
    )
    def _sync(
        context: dg.AssetExecutionContext,
        config: ZohoSyncConfig,
        zoho: ZohoCRMResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        tenant_id = context.partition_key
        store = warehouse.get()
        started = time.monotonic()
        try:
            client = zoho.client(tenant_id)
            calls0 = client.stats.calls
            # The tenant's own org, checked against the module table before any data moves: one
            # error naming every missing field or module, or the specs as this org spells them.
            specs = {
                s.name: s
                for s in load_tenant_modules(
                    store.engine,
                    zoho.tenant(tenant_id),
                    client,
                    max_age=timedelta(hours=config.org_metadata_max_age_hours),
                )
            }
            report = sync_module(
                tenant_id=tenant_id,
                spec=specs[spec.name],
                org_specs=specs,
                client=client,
                warehouse=store,
                full_refresh=config.full_refresh,
                reconcile_after_hours=config.reconcile_after_hours,
                deleted_check_minutes=config.deleted_check_minutes,
                dagster_run_id=context.run.run_id,
                record_ids=config.record_ids,
                deleted_ids=config.deleted_ids,
                events=module_events(tenant_id, spec, config.event_files),
                progress=Progress(
                    context.log,
                    f"zoho/{spec.name} ({specs[spec.name].api_name}) for {tenant_id}",
                    calls=lambda: client.stats.calls,
                ),
            )
        except (ZohoError, TenantConfigError, DropFileError) as exc:
            # The message already names the tenant and Zoho's code, and never a secret.
            raise dg.Failure(description=str(exc), metadata={"error_type": type(exc).__name__}) from exc
        context.log.info(f"{spec.name} for {tenant_id}: {report.counts} in {report.api_calls} API calls")
        calls = client.stats.calls - calls0
        meta = report_metadata(
            report,
            store.count(tenant_id, spec),
            # Every call of the step, reading the org's metadata (when its cache was stale) included.
            api_calls=calls,
            org_metadata_api_calls=calls - report.api_calls,
            duration_seconds=time.monotonic() - started,
        )
        return dg.MaterializeResult(metadata=meta)

    return _sync


zoho_assets: list[dg.AssetsDefinition] = [build_zoho_asset(spec) for spec in MODULES]
