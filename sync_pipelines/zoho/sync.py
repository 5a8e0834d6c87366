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

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd

from sync_pipelines.diff import ID, NOTE, DiffResult, Status, diff, field_changes
from sync_pipelines.progress import Progress
from sync_pipelines.warehouse import Cursor, RunInfo, Warehouse
from sync_pipelines.warehouse.store import AppliedEvent
from sync_pipelines.zoho.bulk import read_full
from sync_pipelines.zoho.canonical import (
    FINDINGS,
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
    #: When the read began (the ``now`` of the sync).
    started_at: datetime | None = None
    #: How far behind Zoho the mirror may be, in seconds at the read's start (:func:`mirror_lag`).
    lag_seconds: float | None = None

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


@dataclass(frozen=True)
class ModuleEvent:
    """A webhook event about one module, as a run reads it from its drop file.

    Attributes:
        source: ``zoho``.
        event_id: the event's id (the ``webhook_events`` ledger key).
        kind: ``zoho.notification`` or ``zoho.records``.
        received_at: when the receiver accepted it (orders pushes that carry no ``Modified_Time``).
        record_ids: records to read by id (created or edited).
        deleted_ids: records said to be deleted (confirmed by id before anything is recorded).
        records: whole records pushed, applied as sent.
    """

    source: str
    event_id: str
    kind: str
    received_at: datetime | None = None
    record_ids: tuple[str, ...] = ()
    deleted_ids: tuple[str, ...] = ()
    records: tuple[dict, ...] = ()

    def ledger(self) -> AppliedEvent:
        return AppliedEvent(self.source, self.event_id, self.kind, self.received_at)


def order_pushed(pushed: Sequence[dict], state: pd.DataFrame, spec: ModuleSpec) -> tuple[list[dict], int]:
    """Pushed records in Zoho's order, one per record: the last state wins.

    Of several pushes of one record, the one with the latest ``Modified_Time`` wins, then the one
    that arrived last (``pushed`` is in arrival order). A push older (by ``Modified_Time``) than
    the stored record is not applied over it: a retried or late delivery never brings back an
    earlier state.

    Returns:
        ``(records to apply, pushes left out as older than what is stored)``.
    """
    latest: dict[str, tuple[tuple, dict]] = {}
    for arrival, record in enumerate(pushed):
        rid = str(record.get("id"))
        moment = _safe_time(record.get("Modified_Time")) if spec.has_modified_time else None
        key = (moment or datetime.min.replace(tzinfo=UTC), arrival)
        if rid not in latest or key >= latest[rid][0]:
            latest[rid] = (key, record)
    stored: dict[str, datetime | None] = {}
    if spec.has_modified_time and MODIFIED in state and len(state):
        stored = {z: _safe_time(t) for z, t in zip(state[ID], state[MODIFIED], strict=True)}
    chosen, stale = [], 0
    for (moment, _), record in sorted(latest.values(), key=lambda item: item[0][1]):
        held = stored.get(str(record.get("id")))
        pushed_at = moment if moment.year > 1 else None
        if held is not None and pushed_at is not None and pushed_at < held:
            stale += 1
            continue
        chosen.append(record)
    return chosen, stale


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
    events: Sequence[ModuleEvent] = (),
    org_specs: Mapping[str, ModuleSpec] | None = None,
    progress: Progress | None = None,
) -> ModuleSyncReport:
    """Sync one Zoho module of one tenant into the warehouse.

    With ``record_ids``, ``deleted_ids`` or ``pushed_records`` (a webhook-driven run), only those
    records are read (by id) or taken as sent, and the incremental read position is left where
    it was: the next scheduled read sees them again and finds them UNCHANGED. A record an event
    names that Zoho no longer has is taken as deleted.

    ``deleted_check_minutes`` spaces out the ``/deleted`` reads of incremental runs (0: every
    run); a full read makes none.

    ``events`` (webhook events read from their drop files) add their ids and records to those;
    an event the ``webhook_events`` ledger already holds for this module is skipped (a retried
    run), and every other one is recorded there in the transaction that applies it. Pushed records
    apply in Zoho's order (:func:`order_pushed`).

    ``spec`` may be a tenant's own (:func:`sync_pipelines.zoho.org.tenant_spec`); ``org_specs``
    (module name → the tenant's spec) then names the lookup targets as that org spells them.

    ``progress`` is told of every page, batch and record read while the sync runs, and logs
    them at a steady pace (:mod:`sync_pipelines.progress`), its last line when the sync ends;
    without one, the lines go to this module's logger.

    Raises:
        ZohoError: Zoho failed (after retries). Nothing was applied; the failure is logged in
            ``sync_runs`` and the next run starts from the same cursor.
    """
    if progress is None:
        progress = Progress(
            logger, f"zoho/{spec.name} ({spec.api_name}) for {tenant_id}", calls=lambda: client.stats.calls
        )
    with ExitStack() as stack:
        stack.enter_context(progress)  # the end line, also when the sync fails
        observe = getattr(client, "observe", None)  # a stand-in client in a test may have none
        if observe is not None:
            stack.enter_context(observe(progress.add))
        return _sync_module(
            tenant_id=tenant_id,
            spec=spec,
            client=client,
            warehouse=warehouse,
            full_refresh=full_refresh,
            reconcile_after_hours=reconcile_after_hours,
            deleted_check_minutes=deleted_check_minutes,
            dagster_run_id=dagster_run_id,
            now=now,
            record_ids=record_ids,
            deleted_ids=deleted_ids,
            pushed_records=pushed_records,
            events=events,
            org_specs=org_specs,
        )


def _sync_module(
    *,
    tenant_id: str,
    spec: ModuleSpec,
    client: ZohoClient,
    warehouse: Warehouse,
    full_refresh: bool,
    reconcile_after_hours: float,
    deleted_check_minutes: float,
    dagster_run_id: str | None,
    now: datetime | None,
    record_ids: Sequence[str],
    deleted_ids: Sequence[str],
    pushed_records: Sequence[dict],
    events: Sequence[ModuleEvent],
    org_specs: Mapping[str, ModuleSpec] | None,
) -> ModuleSyncReport:
    now = now or datetime.now(UTC)
    calls0, credits0 = client.stats.calls, client.stats.credits
    cursor = warehouse.cursor(tenant_id, spec)
    first = cursor.modified_since is None and cursor.max_id is None and cursor.last_full_at is None
    stale = cursor.last_full_at is None or now - cursor.last_full_at > timedelta(hours=reconcile_after_hours)
    events = list(events)
    done = warehouse.applied_events(tenant_id, spec.name, [e.event_id for e in events]) if events else set()
    fresh = [e for e in events if e.event_id not in done]
    if done:
        logger.info("tenant %s %s: %d event(s) already applied, skipped", tenant_id, spec.name, len(done))
    record_ids = [*record_ids, *(i for e in fresh for i in e.record_ids)]
    deleted_ids = [*deleted_ids, *(i for e in fresh for i in e.deleted_ids)]
    pushed_records = [*pushed_records, *(r for e in fresh for r in e.records)]
    targeted = bool(record_ids or deleted_ids or pushed_records or events)
    full = not targeted and (full_refresh or first or (not spec.has_modified_time and stale))
    mode = "event" if targeted else "full" if full else "incremental"
    run = RunInfo(tenant_id=tenant_id, module=spec.name, mode=mode, dagster_run_id=dagster_run_id)

    check_deleted = flood = False
    subform_reads = 0
    confirm = _Confirm(client)
    try:
        listed: list[dict] = []  # records of a list read: Zoho leaves their subforms out
        stale_pushes = 0
        state = None
        if pushed_records:
            pushed_ids = [str(r.get("id")) for r in pushed_records]
            stored = warehouse.load_state(tenant_id, spec, with_modified=True, ids=pushed_ids)
            pushed_records, stale_pushes = order_pushed(pushed_records, stored, spec)
        if targeted:
            raw, deleted_rows, listed = _fetch_targeted(client, spec, record_ids, deleted_ids, pushed_records)
        else:
            check_deleted = not full and (
                cursor.deleted_since is None
                or now - cursor.deleted_since >= timedelta(minutes=deleted_check_minutes) + WATERMARK_OVERLAP
            )
            raw, deleted_rows, complete = _fetch(client, spec, cursor, full, check_deleted=check_deleted)
            if not complete:
                # More deletions since the last check than /deleted can list (2,000): those it
                # listed are confirmed; the rest are found by a full read whose missing records
                # are confirmed one by one. The module never stays stuck on the flood.
                logger.warning(
                    "tenant %s %s: more than %d deletions since the last check; reading in full",
                    tenant_id,
                    spec.name,
                    len(deleted_rows),
                )
                full, check_deleted, flood = True, False, True
                run.mode = "full"
                raw, _, _ = _fetch(client, spec, cursor, True, check_deleted=False)
            listed = raw
        if state is None and full:
            state = warehouse.load_state(tenant_id, spec)
        subform_reads = _subforms(client, spec, listed, warehouse, tenant_id)
        # A pushed record is applied as sent; one sent without its subforms keeps the stored rows.
        _subforms(client, spec, raw[: len(pushed_records)], warehouse, tenant_id, read=False)
        incoming = canonicalise(spec, frame_from_records(spec, raw))
        # A record with no usable id can be neither stored nor logged against a key: count it, say so.
        keyed = usable_ids(incoming[ID])
        unidentified = int((~keyed).sum())
        if unidentified:
            logger.warning(
                "tenant %s %s: %d record(s) without a usable Zoho id left out",
                tenant_id,
                spec.name,
                unidentified,
            )
        incoming = incoming[keyed]
        deleted_ids = {str(d["id"]) for d in deleted_rows if d.get("id")}
        if state is None:
            # An incremental or event read: only the stored rows of the ids it fetched or was told
            # deleted, and those holding the natural keys it brought, are read (indexed lookups;
            # the diff needs no other). Steady state — Zoho answered 304 (or an empty page) and
            # listed no deletion — reads none (a pending record an earlier version held back
            # still brings the state in, below).
            state = warehouse.load_state(
                tenant_id,
                spec,
                nothing=incoming.empty and not deleted_ids,
                ids=[*incoming[ID].tolist(), *deleted_ids],
                keys=incoming[list(spec.natural_key)] if spec.natural_key else None,
            )
        if full:
            # A stored record a full read did not return is DELETED only when Zoho confirms it (a
            # read by id finds nothing): a page that shifted under a deletion, or a record read
            # while it moved, is no deletion. What the read by id finds joins the batch.
            live = state.loc[~state["deleted"], ID]
            missing = sorted(set(live) - set(incoming[ID]) - deleted_ids)
            if missing:
                found = confirm.records(spec, missing)
                subform_reads += _subforms(client, spec, found, warehouse, tenant_id)
                if found:
                    again = canonicalise(spec, frame_from_records(spec, found))
                    incoming = pd.concat([incoming, again[usable_ids(again[ID])]], ignore_index=True)
                deleted_ids |= set(missing) - {str(r.get("id")) for r in found}
        incoming = _lookup_findings(tenant_id, spec, incoming, warehouse, confirm, org_specs or {})
    except Exception as exc:
        run.api_calls, run.api_credits = client.stats.calls - calls0, client.stats.credits - credits0
        warehouse.record_failure(run, f"{type(exc).__name__}: {exc}")
        raise

    fetched_ids = set(incoming[ID])
    pending = warehouse.load_pending(tenant_id, spec)
    # Records an earlier version held back (SKIPPED) are stored now, unless Zoho has since
    # deleted them or a full read no longer returns them.
    dead = pending[ID].isin(deleted_ids) | (full & ~pending[ID].isin(fetched_ids))
    forget_pending = pending.loc[dead, ID].tolist()
    pending = pending[~dead]
    if len(pending) and not full:
        state = warehouse.load_state(tenant_id, spec)  # held-back records are compared with all
    if len(pending):
        pending[INVALID_REASON] = None
        pending[FINDINGS] = None
        pending = canonicalise(spec, _raw_again(spec, pending))
        incoming = pd.concat([pending, incoming], ignore_index=True)  # a fresh copy wins

    result = diff(
        incoming,
        state,
        fingerprint_columns=spec.fingerprint_columns,
        aux_columns=aux_columns(spec),
        deleted_ids=deleted_ids,
        natural_key=spec.natural_key,
    )
    touched = result.of(Status.UPDATED, Status.REFRESHED, Status.INVALID)
    touched = touched[touched["change"].isin([Status.UPDATED, Status.REFRESHED])]
    if len(touched):
        old = warehouse.load_rows(tenant_id, spec, touched[ID].tolist())
        result.changes = field_changes(touched.set_index(ID), old, spec.columns)

    new_cursor = cursor if targeted else _advance(cursor, incoming, raw, full or check_deleted, full, now)
    if flood:
        # The next /deleted starts where this full read did, without the overlap: the overlap
        # would list the flood again, and every check would read the module in full. A record
        # deleted during the read is either missing from it (confirmed above) or listed then.
        # (Costs: a deletion Zoho stamps earlier than this machine's clock by more than the
        # read took is only found by the next full read.)
        new_cursor.deleted_since = now
    run.api_calls, run.api_credits = client.stats.calls - calls0, client.stats.credits - credits0
    warehouse.apply(
        spec, result, run, new_cursor, forget_pending=forget_pending, events=[e.ledger() for e in fresh]
    )
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
        started_at=now,
        lag_seconds=mirror_lag(spec, cursor, incoming, now, full=full),
        extra={
            "unidentified": unidentified,
            "confirmed_deleted": confirm.confirmed_deleted,
            "lookups_missing_in_zoho": confirm.lookups_missing,
            "lookups_waiting": confirm.lookups_waiting,
            "subform_reads": subform_reads,
            "events_applied": len(fresh),
            "events_already_applied": len(done),
            "stale_pushes": stale_pushes,
            # Stored rows the diff was given (the whole module on a full read, else only those
            # of the records read), and those re-fingerprinted from an older format.
            "state_rows_read": len(state),
            "refingerprinted": len(result.refingerprinted),
        },
    )


def _subforms(
    client: ZohoClient,
    spec: ModuleSpec,
    listed: list[dict],
    warehouse: Warehouse,
    tenant_id: str,
    *,
    read: bool = True,
) -> int:
    """Give records read by a list read their subform rows, in place; returns the reads made.

    With ``read=False`` (records pushed to the pipeline), a record that carries its subforms keeps
    them, and one that does not keeps its stored rows; nothing is read.

    Zoho returns subform values "only when a specific record is fetched" (its get-records page),
    never in a list read, so every record a list read returns is read by id, one call each. An
    unchanged ``Modified_Time`` is no proof that its rows are unchanged: Zoho's times have
    one-second resolution, and an edit in the second of the last read keeps the same time.
    """
    subforms = [f for f in spec.fields if f.kind == "subform" and not f.absent]
    if not subforms or not listed:
        return 0
    names = [f.api_name for f in subforms]
    if read:
        keep, fetch = [], list(listed)
    else:
        keep, fetch = [rec for rec in listed if any(n not in rec for n in names)], []
    if keep:
        ids = [str(r.get("id")) for r in keep]
        old = warehouse.load_rows(tenant_id, spec, ids, [f.column for f in subforms])
        for rec, rid in zip(keep, ids, strict=True):
            for f in subforms:
                if not read and f.api_name in rec:
                    continue  # sent with the push: as sent
                text = old.at[rid, f.column] if rid in old.index else None
                rec[f.api_name] = json.loads(text) if isinstance(text, str) and text.startswith("[") else None
    for rec in fetch:
        one = client.get_record(spec.api_name, str(rec.get("id")), names)
        for name in names:
            rec[name] = None if one is None else one.get(name)
    return len(fetch)


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _safe_time(value: object) -> datetime | None:
    """A Zoho time (text, or a time read back from the warehouse), or None for anything that is
    not one (it is then a finding, elsewhere)."""
    if isinstance(value, datetime):
        if pd.isna(value):
            return None
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:  # a time at the edge of the calendar, shifted past it
            return None
    try:
        return _parse_zoho_time(_text_or_none(value))
    except (ValueError, TypeError, OverflowError):
        return None


def aux_columns(spec: ModuleSpec) -> tuple[str, ...]:
    """The stored columns outside the business fingerprint: bookkeeping and formula fields,
    ``Modified_Time`` and the findings. A change to them alone rewrites the row (REFRESHED)."""
    cols = [f.column for f in spec.fields if not f.fingerprinted]
    if spec.has_modified_time:
        cols.append(MODIFIED)
    return (*sorted(cols), FINDINGS)


def _raw_again(spec: ModuleSpec, canonical: pd.DataFrame) -> pd.DataFrame:
    """A canonical frame (``sync_pending`` payloads) as the raw frame :func:`canonicalise` reads."""
    raw = pd.DataFrame({"id": canonical[ID]}, dtype=object)
    for f in spec.fields:
        raw[f.api_name] = canonical.get(f.column)
    if spec.has_modified_time:
        raw["Modified_Time"] = canonical.get(MODIFIED)
    return raw


class _Confirm:
    """Reads by id (``ids=``, 100 a call) that confirm what a read alone cannot: that a record
    missing from a full read is deleted, and whether a lookup's target exists in Zoho."""

    def __init__(self, client: ZohoClient) -> None:
        self.client = client
        self.confirmed_deleted = 0
        self.lookups_missing = 0
        self.lookups_waiting = 0

    def records(self, spec: ModuleSpec, ids: Sequence[str]) -> list[dict]:
        found = self.client.get_records_by_ids(spec.api_name, list(ids), spec.api_fields)
        self.confirmed_deleted += len(ids) - len(found)
        return found

    def exist(self, spec: ModuleSpec, ids: Sequence[str]) -> set[str]:
        fields = spec.api_fields[:1]
        return {str(r.get("id")) for r in self.client.get_records_by_ids(spec.api_name, list(ids), fields)}


def _lookup_findings(
    tenant_id: str,
    spec: ModuleSpec,
    incoming: pd.DataFrame,
    warehouse: Warehouse,
    confirm: _Confirm,
    org_specs: Mapping[str, ModuleSpec],
) -> pd.DataFrame:
    """A lookup to a record the warehouse does not hold is asked of Zoho: one Zoho does not hold
    is a finding on the record (``lookup_missing``: the field, the id); one Zoho holds arrives
    with its module's next sync, and is only noted in the reason (the record is no less valid)."""
    notes: dict[int, list[str]] = {}
    found_add: dict[int, list[dict]] = {}
    for dep in spec.dependencies:
        if dep.column not in incoming or incoming.empty:
            continue
        values = incoming[dep.column]
        target = module(dep.target)
        target = org_specs.get(target.name, target)
        known = warehouse.known_ids(tenant_id, target)
        absent = values.notna() & ~values.isin(known)
        if not absent.any():
            continue
        wanted = sorted(set(values[absent]))
        held = confirm.exist(target, wanted)
        api = spec.field(dep.column).api_name
        for idx, value in values[absent].items():
            if value in held:
                confirm.lookups_waiting += 1
                notes.setdefault(idx, []).append(
                    f"{api}: {target.api_name} {value} is in Zoho but not in the warehouse yet "
                    f"(arrives with the next {target.name} sync)"
                )
            else:
                confirm.lookups_missing += 1
                found_add.setdefault(idx, []).append({"rule": "lookup_missing", "field": api, "value": value})
                notes.setdefault(idx, []).append(f"{api}: {target.api_name} {value} does not exist in Zoho")
    if not notes:
        return incoming
    incoming = incoming.copy()
    if NOTE not in incoming:
        incoming[NOTE] = pd.Series(None, index=incoming.index, dtype=object)
    for idx, texts in notes.items():
        text = "; ".join(texts)
        if idx in found_add:
            before = incoming.at[idx, INVALID_REASON]
            incoming.at[idx, INVALID_REASON] = text if not isinstance(before, str) else f"{before}; {text}"
            old = incoming.at[idx, FINDINGS]
            incoming.at[idx, FINDINGS] = json.dumps(
                [*(json.loads(old) if isinstance(old, str) else []), *found_add[idx]], ensure_ascii=False
            )
        else:
            incoming.at[idx, NOTE] = text
    return incoming


def _fetch(
    client: ZohoClient, spec: ModuleSpec, cursor: Cursor, full: bool, *, check_deleted: bool
) -> tuple[list[dict], list[dict], bool]:
    """The read itself: records (all, or what changed) and, with ``check_deleted``, Zoho's
    deletions since the last check. The flag is False when ``/deleted`` had more than it lists."""
    if full:  # Bulk Read above the tenant's threshold, else by pages (sync_pipelines.zoho.bulk)
        records = list(read_full(client, spec))
    elif spec.has_modified_time:
        since = None if cursor.modified_since is None else cursor.modified_since + timedelta(seconds=1)
        records = list(client.iter_records(spec.api_name, spec.api_fields, modified_since=since))
    else:
        newest_first = client.iter_records(spec.api_name, spec.api_fields, sort_by="id", sort_order="desc")
        records = list(_newer_than(newest_first, cursor.max_id))
    if not check_deleted:
        return records, [], True
    read = client.read_deleted(spec.api_name, since=cursor.deleted_since)
    return records, read.entries, read.complete


def mirror_lag(
    spec: ModuleSpec, before: Cursor, incoming: pd.DataFrame, now: datetime, *, full: bool
) -> float | None:
    """How far behind Zoho the mirror may be at the read's start (``now``), in seconds.

    With ``Modified_Time``: from the newest ``Modified_Time`` the mirror holds (the newest this
    read brought, else the watermark before it) to ``now``: a school that edits nothing for an hour
    shows an hour, a sync that falls behind shows its backlog. Without it (``Products``,
    ``BTEC_Enrollments``: edits are seen by full reads only): from the last full read's start
    (0 for a full read). ``None`` while the module was never read.
    """
    if spec.has_modified_time:
        newest = None
        if MODIFIED in incoming and incoming[MODIFIED].notna().any():
            newest = _safe_time(incoming[MODIFIED].dropna().max())
        held = max(filter(None, [newest, before.modified_since]), default=None)
    else:
        held = now if full else before.last_full_at
    if held is None:
        return None
    return max(0.0, (now - held).total_seconds())


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
) -> tuple[list[dict], list[dict], list[dict]]:
    """(records, deletions, the records among them that a list read returned)."""
    records: list[dict] = [dict(r) for r in pushed]
    gone: list[dict] = []
    still: list[dict] = []
    # A deletion event is confirmed by a read by id before it is recorded: a record restored from
    # the recycle bin since, or an event about another record, leaves the mirror as it is.
    said_gone = [str(d) for d in dict.fromkeys(deleted_ids)]
    if said_gone:
        still = client.get_records_by_ids(spec.api_name, said_gone, spec.api_fields)
        records += still
        alive = {str(r.get("id")) for r in still}
        gone += [{"id": d} for d in said_gone if d not in alive]
    for rid in dict.fromkeys(record_ids):
        record = client.get_record(spec.api_name, rid, spec.api_fields)
        if record is None:
            gone.append({"id": str(rid)})
        else:
            records.append(record)
    return records, gone, still


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
