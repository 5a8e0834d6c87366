"""One module sync for one tenant: fetch → canonicalise and validate → diff → apply → report.

No Dagster here: the asset calls :func:`sync_module`, and so can a script or a test.

How changes are found
---------------------
* Modules with ``Modified_Time``: ``If-Modified-Since`` one second past the watermark. The
  watermark is the greatest ``Modified_Time`` seen, capped at the read's start less an overlap
  (see :func:`_watermark`), so every record modified at or before it was there to be read when
  the read began; Zoho's times have one-second resolution and the header is inclusive, so one
  second past it skips exactly what was read already. (An inclusive header re-read, every run,
  every record stamped in the watermark's second: a write-back stamps hundreds in one second.)
* Deletions: ``/deleted`` since the last check (less an overlap), read by an incremental run when
  the last check is ``deleted_check_minutes`` old (default 60) or older, so that most scheduled
  runs of an unchanged module cost one call, not two. Webhook events apply deletions at once in
  between, and a full read needs no ``/deleted`` at all (see below).
* Modules without it (``Products``, ``BTEC_Enrollments``): Zoho record ids grow with creation
  time, so new records are read newest-first (``sort_by=id``, descending) and the read stops at
  the first id already seen, usually one page; deletions come from ``/deleted`` as above; edits to
  existing records are found by a full reconciliation, run when the last one is older than
  ``reconcile_after_hours`` (default 24: the nightly run) or on demand, and between
  reconciliations by webhook events.
* A full read (first run, reconciliation, ``full_refresh``) marks DELETED every stored record Zoho
  no longer returns, which catches deletions purged from the recycle bin, and so stands in for a
  ``/deleted`` check.
"""

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd

from sync_pipelines.diff import ID, DependencyCheck, DiffResult, Status, diff, field_changes
from sync_pipelines.warehouse import Cursor, RunInfo, Warehouse
from sync_pipelines.zoho.canonical import (
    INVALID_REASON,
    MODIFIED,
    canonicalise,
    frame_from_records,
    usable_ids,
)
from sync_pipelines.zoho.client import ZohoClient
from sync_pipelines.zoho.modules import ModuleSpec, module

logger = logging.getLogger(__name__)

#: How far before a read's start the next incremental read begins (covers edits during the read
#: and clock skew between this machine and Zoho).
WATERMARK_OVERLAP = timedelta(minutes=5)
#: How old the last ``/deleted`` check may grow before an incremental read makes another.
DELETED_CHECK_MINUTES = 60.0


@dataclass
class ModuleSyncReport:
    """What one module sync did: the diff, the API cost and the new position."""

    tenant_id: str
    spec: ModuleSpec
    mode: str
    result: DiffResult
    fetched: int
    deleted_seen: int
    api_calls: int
    api_credits: int
    cursor: Cursor
    sync_run_id: str
    pending: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return self.result.counts()


def _parse_zoho_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _id_key(zoho_id: str) -> int:
    return int(zoho_id) if zoho_id and zoho_id.isdigit() else -1


def _newer_than(records: Iterator[dict], max_id: str | None) -> Iterator[dict]:
    """Records of an id-descending read until the first one already seen."""
    floor = _id_key(max_id) if max_id else -1
    for rec in records:
        if _id_key(str(rec.get("id"))) <= floor:
            return
        yield rec


def sync_module(
    *,
    tenant_id: str,
    spec: ModuleSpec,
    client: ZohoClient,
    warehouse: Warehouse,
    full_refresh: bool = False,
    reconcile_after_hours: float = 24.0,
    deleted_check_minutes: float = DELETED_CHECK_MINUTES,
    dagster_run_id: str | None = None,
    now: datetime | None = None,
    record_ids: Sequence[str] = (),
    deleted_ids: Sequence[str] = (),
    pushed_records: Sequence[dict] = (),
) -> ModuleSyncReport:
    """Sync one Zoho module of one tenant into the warehouse.

    With ``record_ids``, ``deleted_ids`` or ``pushed_records`` (a webhook-driven run), only those
    records are read (by id) or taken as sent, and the incremental read position is left where
    it was: the next scheduled read sees them again and finds them UNCHANGED. A record an event
    names that Zoho no longer has is taken as deleted.

    ``deleted_check_minutes`` spaces out the ``/deleted`` reads of incremental runs (0: every
    run); a full read makes none.

    Raises:
        ZohoError: Zoho failed (after retries). Nothing was applied; the failure is logged in
            ``sync_runs`` and the next run starts from the same cursor.
    """
    now = now or datetime.now(UTC)
    calls0, credits0 = client.stats.calls, client.stats.credits
    cursor = warehouse.cursor(tenant_id, spec)
    first = cursor.modified_since is None and cursor.max_id is None and cursor.last_full_at is None
    stale = cursor.last_full_at is None or now - cursor.last_full_at > timedelta(hours=reconcile_after_hours)
    targeted = bool(record_ids or deleted_ids or pushed_records)
    full = not targeted and (full_refresh or first or (not spec.has_modified_time and stale))
    mode = "event" if targeted else "full" if full else "incremental"
    run = RunInfo(tenant_id=tenant_id, module=spec.name, mode=mode, dagster_run_id=dagster_run_id)

    check_deleted = False
    try:
        if targeted:
            raw, deleted_rows = _fetch_targeted(client, spec, record_ids, deleted_ids, pushed_records)
        else:
            check_deleted = not full and (
                cursor.deleted_since is None
                or now - cursor.deleted_since >= timedelta(minutes=deleted_check_minutes) + WATERMARK_OVERLAP
            )
            raw, deleted_rows = _fetch(client, spec, cursor, full, check_deleted=check_deleted)
    except Exception as exc:
        run.api_calls, run.api_credits = client.stats.calls - calls0, client.stats.credits - credits0
        warehouse.record_failure(run, f"{type(exc).__name__}: {exc}")
        raise

    incoming = canonicalise(spec, frame_from_records(spec, raw))
    # A record with no usable id can be neither stored nor logged against a key: count it, say so.
    keyed = usable_ids(incoming[ID])
    unidentified = int((~keyed).sum())
    if unidentified:
        logger.warning(
            "tenant %s %s: %d record(s) without a usable Zoho id left out", tenant_id, spec.name, unidentified
        )
    incoming = incoming[keyed]
    fetched_ids = set(incoming[ID])
    deleted_ids = {str(d["id"]) for d in deleted_rows if d.get("id")}
    pending = warehouse.load_pending(tenant_id, spec)
    # A waiting (SKIPPED) record Zoho has since deleted, or that a full read no longer returns, is
    # forgotten: kept, it would come back as NEW the day its lookup target arrived.
    dead = pending[ID].isin(deleted_ids) | (full & ~pending[ID].isin(fetched_ids))
    forget_pending = pending.loc[dead, ID].tolist()
    pending = pending[~dead]
    if len(pending):
        pending[INVALID_REASON] = None
        incoming = pd.concat([pending, incoming], ignore_index=True)  # a fresh copy wins

    state = warehouse.load_state(tenant_id, spec)
    if full:
        live = state.loc[~state["deleted"], ID]
        deleted_ids |= set(live) - fetched_ids
    deps = [
        DependencyCheck(d.column, warehouse.known_ids(tenant_id, module(d.target)), d.reason)
        for d in spec.dependencies
    ]
    result = diff(
        incoming,
        state,
        fingerprint_columns=spec.fingerprint_columns,
        dependencies=deps,
        deleted_ids=deleted_ids,
        natural_key=spec.natural_key,
    )
    updated = result.of(Status.UPDATED)
    if len(updated):
        old = warehouse.load_rows(tenant_id, spec, updated[ID].tolist())
        result.changes = field_changes(updated.set_index(ID), old, spec.fingerprint_columns)

    new_cursor = cursor if targeted else _advance(cursor, incoming, raw, full or check_deleted, full, now)
    run.api_calls, run.api_credits = client.stats.calls - calls0, client.stats.credits - credits0
    warehouse.apply(spec, result, run, new_cursor, forget_pending=forget_pending)
    counts = result.counts()
    logger.info("tenant %s %s (%s): %s", tenant_id, spec.name, run.mode, counts)
    return ModuleSyncReport(
        tenant_id=tenant_id,
        spec=spec,
        mode=run.mode,
        result=result,
        fetched=len(raw),
        deleted_seen=len(deleted_rows),
        api_calls=run.api_calls,
        api_credits=run.api_credits,
        cursor=new_cursor,
        sync_run_id=run.sync_run_id,
        pending=counts[Status.SKIPPED],
        extra={"unidentified": unidentified},
    )


def _fetch(
    client: ZohoClient, spec: ModuleSpec, cursor: Cursor, full: bool, *, check_deleted: bool
) -> tuple[list[dict], list[dict]]:
    if spec.has_modified_time:
        since = (
            None if full or cursor.modified_since is None else cursor.modified_since + timedelta(seconds=1)
        )
        records = list(client.iter_records(spec.api_name, spec.api_fields, modified_since=since))
    elif full:
        records = list(client.iter_records(spec.api_name, spec.api_fields, sort_by="id", sort_order="desc"))
    else:
        newest_first = client.iter_records(spec.api_name, spec.api_fields, sort_by="id", sort_order="desc")
        records = list(_newer_than(newest_first, cursor.max_id))
    deleted = list(client.iter_deleted(spec.api_name, since=cursor.deleted_since)) if check_deleted else []
    return records, deleted


def _watermark(previous: datetime | None, seen: datetime | None, started: datetime) -> datetime | None:
    """The next ``If-Modified-Since``: the newest time seen, but never past the read's start.

    A record edited while a read is under way can get a ``Modified_Time`` older than another
    record read after it; capping at the start (less an overlap for clock skew) re-reads such
    records next time instead of skipping them. Re-reads are cheap: they come back UNCHANGED.
    """
    if seen is None:
        return previous
    capped = min(seen, started - WATERMARK_OVERLAP)
    return max(filter(None, [previous, capped]))


def _fetch_targeted(
    client: ZohoClient,
    spec: ModuleSpec,
    record_ids: Sequence[str],
    deleted_ids: Sequence[str],
    pushed: Sequence[dict],
) -> tuple[list[dict], list[dict]]:
    records: list[dict] = [dict(r) for r in pushed]
    gone = [{"id": str(d)} for d in dict.fromkeys(deleted_ids)]
    for rid in dict.fromkeys(record_ids):
        record = client.get_record(spec.api_name, rid, spec.api_fields)
        if record is None:
            gone.append({"id": str(rid)})
        else:
            records.append(record)
    return records, gone


def _advance(
    cursor: Cursor, incoming: pd.DataFrame, raw: list[dict], deletions_known: bool, full: bool, now: datetime
) -> Cursor:
    newest = None
    if MODIFIED in incoming and incoming[MODIFIED].notna().any():
        newest = _parse_zoho_time(incoming[MODIFIED].dropna().max())
    modified = _watermark(cursor.modified_since, newest, now)
    # Every deletion made before the read started (less the overlap) is known now: from /deleted
    # (If-Modified-Since returns each one deleted since the last check) or from a full read.
    deleted_since = _watermark(cursor.deleted_since, now, now) if deletions_known else cursor.deleted_since
    ids = [str(r.get("id")) for r in raw if r.get("id")]
    max_id = max([*ids, *([cursor.max_id] if cursor.max_id else [])], key=_id_key, default=None)
    return Cursor(
        modified_since=modified,
        deleted_since=deleted_since,
        max_id=max_id,
        last_full_at=now if full else cursor.last_full_at,
    )
