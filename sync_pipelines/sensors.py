"""Webhook sensors: one per source (Zoho, Moodle), over the receiver's drop directory.

Each tick turns a tenant's waiting drop files into **one run** for that tenant, which reads only the
records the events name and materialises only the assets they affect.

**At least once into runs, exactly once into the warehouse.**

* A tick reads every waiting file. A file that cannot be used (bad JSON, wrong shape, unreadable,
  an unknown tenant, an event the pipeline has no use for) moves to ``quarantine/`` beside a
  reason file. Events of a school whose entry in the tenants file is broken wait, untouched, until
  it is fixed; the tick says which.
* The others become one run request per tenant. Its run config carries **event references**
  (``<tenant>/<source>/<file>``), never record contents: the run reads the files.
* The files stay pending while their run is in flight; the cursor names the run (its
  ``run_key``). A later tick looks the run up: when it **succeeded**, its files move to
  ``processed/``; when it **failed or was cancelled** (or never appeared), each file's attempt is
  recorded (``.attempts/``) and the files are asked for again after a growing delay
  (:data:`RETRY_BASE_SECONDS` · 2^(attempt-1)). After :data:`MAX_ATTEMPTS` they move to ``dead/``
  with an alert-ready JSON note, are logged as errors and reported as observations of the
  ``events/dead_letters`` asset, partition = tenant.
* One run per tenant and source is in flight at a time, and a tenant's files go in arrival order:
  a newer event never overtakes an older one that is waiting for its retry.
* The warehouse keeps every applied Zoho event (``webhook_events``), written in the transaction
  that applies it: a retried run skips what its failed predecessor already applied.
* A Moodle event whose actor (``userid``) is the pipeline's own web-services user is the echo of the
  pipeline's own write: it moves to ``processed/`` without a run.

A tick that crashed before Dagster stored its runs and cursor leaves every file where it was; run
keys are digests of the files and the attempt, so a replayed tick asks for the same run, which
Dagster starts once. No file is ever deleted by the pipeline.
"""

import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

from sync_pipelines.events import MOODLE_EVENTS, MoodleEvent
from sync_pipelines.moodle.entities import GRADES_ASSET, moodle_route, zoho_route
from sync_pipelines.tenants import TenantConfigError, partition_changes, read_tenants, tenant_partitions
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.webhooks.drop import (
    Attempt,
    DropEvent,
    DropFileError,
    DropSource,
    attempts,
    dead_letter,
    drop_dir,
    heal_quarantine,
    move_processed,
    pending_files,
    quarantine,
    read_event,
    record_attempt,
    reference,
)
from sync_pipelines.zoho.modules import MODULES_BY_API_NAME

logger = logging.getLogger(__name__)

#: Most files one run covers (a tenant with more gets the rest in its next run).
MAX_FILES_PER_RUN = 500
#: Runs an event may fail in before it is dead-lettered (``SYNC_EVENT_MAX_ATTEMPTS``).
MAX_ATTEMPTS = int(os.environ.get("SYNC_EVENT_MAX_ATTEMPTS", "8"))
#: Wait before the first retry; doubles with each attempt (``SYNC_EVENT_RETRY_BASE_SECONDS``).
#: With the defaults, an event is retried for about an hour (30 s … 32 min) before it is dead.
RETRY_BASE_SECONDS = float(os.environ.get("SYNC_EVENT_RETRY_BASE_SECONDS", "30"))
#: A run asked for this long ago that Dagster never created counts as a failed attempt.
LOST_AFTER_SECONDS = 600.0

DEAD_LETTERS = dg.AssetKey(["events", "dead_letters"])


def _step(asset: str) -> str:
    return asset.replace("/", "__")


def is_echo(event: DropEvent, service_user_id: int | None) -> bool:
    """Whether a Moodle event is the echo of the pipeline's own write: its actor (``userid``) is
    the pipeline's web-services user, acting through a web-service call (``origin`` ``ws``; a
    plugin too old to send ``origin`` is judged by the user alone). The same account changing
    something in the browser or a CLI script is no echo."""
    return (
        service_user_id is not None
        and event.kind == MoodleEvent.kind
        and event.payload.get("userid") == service_user_id
        and event.payload.get("origin") in (None, "ws")
    )


@dataclass
class TenantBatch:
    """What one tenant's waiting files ask for: the assets and each asset's run config."""

    tenant_id: str
    root: Path
    files: list[Path] = field(default_factory=list)
    assets: set[str] = field(default_factory=set)
    zoho_events: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    course_ids: set[int] = field(default_factory=set)
    attempt: int = 1

    def add(self, event: DropEvent) -> None:
        """Fold one event in; raises DropFileError for an event the pipeline cannot use."""
        payload = event.payload
        if event.source == "zoho":
            spec = MODULES_BY_API_NAME.get(str(payload.get("module")))
            if spec is None:
                raise DropFileError(f"module {payload.get('module')!r} is not synced")
            self.assets.update(zoho_route(spec.name))
            self.zoho_events[spec.name].append(reference(self.root, event.path))
        else:
            spec = MOODLE_EVENTS[payload["eventname"]]  # read_event checked it against the model
            self.assets.update(moodle_route(spec.short_name))
            if spec.reads_course and payload.get("courseid"):
                self.course_ids.add(int(payload["courseid"]))
        self.files.append(event.path)

    def run_config(self) -> dict:
        ops: dict[str, dict] = {
            _step(f"zoho/{name}"): {"config": {"event_files": refs}}
            for name, refs in self.zoho_events.items()
        }
        if self.course_ids and GRADES_ASSET in self.assets:
            ops[_step(GRADES_ASSET)] = {"config": {"course_ids": sorted(self.course_ids)}}
        return {"ops": ops}

    def refs(self) -> list[str]:
        return [reference(self.root, p) for p in self.files]

    def run_request(self, source: DropSource) -> dg.RunRequest:
        return dg.RunRequest(
            run_key=run_key(source, self.tenant_id, self.refs(), self.attempt),
            partition_key=self.tenant_id,
            asset_selection=[dg.AssetKey(a.split("/")) for a in sorted(self.assets)],
            run_config=self.run_config(),
            tags={
                "sync/trigger": f"{source}-webhook",
                "sync/events": str(len(self.files)),
                "sync/attempt": str(self.attempt),
            },
        )


def run_key(source: str, tenant_id: str, refs: Iterable[str], attempt: int) -> str:
    """The run key of a batch: the same files at the same attempt ask for the same run."""
    digest = hashlib.sha256("\n".join(sorted(refs)).encode()).hexdigest()[:24]
    return f"{source}:{tenant_id}:{digest}:{attempt}"


# --- runs in flight -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOutcome:
    """What became of a requested run.

    Attributes:
        run_id: the Dagster run id.
        status: ``SUCCESS``, ``FAILURE``, ``CANCELED``, or ``ACTIVE`` (queued, starting, running).
        reason: for a failed run, its error in one line.
    """

    run_id: str
    status: str
    reason: str = ""


RunLookup = Callable[[str], RunOutcome | None]


@dataclass
class Flight:
    """A run asked for and not yet seen to end."""

    run_key: str
    tenant_id: str
    files: list[str]
    attempt: int
    asked_at: float

    def as_json(self) -> dict:
        return self.__dict__


def _flights(cursor: str | None, source: str) -> list[Flight]:
    if not cursor:
        return []
    try:
        doc = json.loads(cursor)
    except ValueError:
        logger.error("webhook sensor: cursor unreadable, starting afresh (pending files are asked for again)")
        return []
    if "flights" in doc:
        return [Flight(**f) for f in doc["flights"]]
    # The first version's cursor: {"submitted": [files]}, asked for as one run per tenant.
    by_tenant: dict[str, list[str]] = defaultdict(list)
    for name in doc.get("submitted", []):
        by_tenant[name.split("/")[0]].append(name)
    return [Flight(_legacy_key(source, t, names), t, names, 1, time.time()) for t, names in by_tenant.items()]


def _legacy_key(source: str, tenant_id: str, names: list[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:24]
    return f"{source}:{tenant_id}:{digest}"


def first_line(text: str | None, limit: int = 300) -> str:
    """The first non-blank line of ``text``, shortened to ``limit`` characters."""
    line = next((s.strip() for s in (text or "").splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def step_error(event: dg.DagsterEvent) -> str:
    """The first line of what made a step fail: its ``Failure`` description, else its exception.

    Dagster wraps a step's own exception ("Error occurred while executing op …"): the cause says it.
    """
    data = event.step_failure_data
    if data is None:
        return first_line(event.message) or "failed"
    if data.user_failure_data is not None and data.user_failure_data.description:
        return first_line(data.user_failure_data.description)
    error = data.error
    while error is not None and error.cause is not None and error.cls_name.startswith("Dagster"):
        error = error.cause
    return first_line(error.message if error else event.message) or "failed"


def _failure_reason(instance: dg.DagsterInstance, run_id: str) -> str:
    """The first step failure's message of a run, else its run-failure message."""
    records = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
    ).records
    for wanted in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE):
        for record in records:
            event = record.event_log_entry.dagster_event
            if event is None or event.event_type != wanted:
                continue
            if wanted == dg.DagsterEventType.STEP_FAILURE:
                return f"{event.step_key}: {step_error(event)}"
            return first_line(event.message or "run failed")
    return "run failed"


def instance_lookup(instance: dg.DagsterInstance, sensor_name: str | None = None) -> RunLookup:
    """Look runs up in a Dagster instance by their run key (and the sensor that asked for them)."""
    done = {dg.DagsterRunStatus.SUCCESS: "SUCCESS", dg.DagsterRunStatus.FAILURE: "FAILURE"}
    done[dg.DagsterRunStatus.CANCELED] = "CANCELED"

    def lookup(key: str) -> RunOutcome | None:
        tags = {RUN_KEY_TAG: key, **({SENSOR_NAME_TAG: sensor_name} if sensor_name else {})}
        runs = instance.get_runs(filters=dg.RunsFilter(tags=tags), limit=1)
        if not runs:
            return None
        run = runs[0]
        status = done.get(run.status, "ACTIVE")
        reason = _failure_reason(instance, run.run_id) if status == "FAILURE" else ""
        if status == "CANCELED":
            reason = "the run was cancelled"
        return RunOutcome(run.run_id, status, reason)

    return lookup


# --- one tick -------------------------------------------------------------------------------------


@dataclass
class Tick:
    """What one tick did.

    Attributes:
        requests: the runs asked for.
        cursor: the cursor to commit with them.
        tenants: tenants with files this tick (for their partitions).
        processed: files moved to ``processed/`` (their run succeeded).
        retried: files whose run failed and that will be asked for again.
        dead: the notes of files dead-lettered this tick.
        quarantined: files moved to ``quarantine/``.
        echoes: Moodle events that were the echo of the pipeline's own write.
        waiting: tenant → why its files wait (a run in flight, a retry delay, a broken entry).
    """

    requests: list[dg.RunRequest] = field(default_factory=list)
    cursor: str = ""
    tenants: list[str] = field(default_factory=list)
    processed: int = 0
    retried: int = 0
    dead: list[dict] = field(default_factory=list)
    quarantined: int = 0
    echoes: int = 0
    waiting: dict[str, str] = field(default_factory=dict)


def _safe_quarantine(path: Path, reason: str, tick: Tick) -> None:
    try:
        quarantine(path, reason)
        tick.quarantined += 1
    except FileNotFoundError:
        pass  # moved meanwhile
    except OSError as exc:
        logger.error("webhook sensor: could not quarantine %s (%s): %s", path, exc.strerror or exc, reason)


def _land(root: Path, flight: Flight, outcome: RunOutcome, tick: Tick, max_attempts: int, now: float) -> bool:
    """Settle the files of a run that ended; ``False`` when some could not be moved (disk)."""
    at = datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds")
    for ref in flight.files:
        path = root / ref
        if not path.is_file():
            continue  # already settled (a replayed tick, or moved by hand)
        try:
            if outcome.status == "SUCCESS":
                move_processed(path)
                tick.processed += 1
                continue
            every = record_attempt(path, Attempt(outcome.run_id, outcome.status, outcome.reason, at))
            if len(every) >= max_attempts:
                try:
                    event: DropEvent | None = read_event(path)
                except (DropFileError, OSError):
                    event = None
                dead_letter(path, event, every)
                tick.dead.append(
                    {
                        "tenant_id": flight.tenant_id,
                        "file": path.name,
                        "event_id": event.event_id if event else None,
                        "attempts": len(every),
                        "reason": outcome.reason,
                    }
                )
            else:
                tick.retried += 1
        except OSError as exc:
            # The file stays pending and the run is looked up again on the next tick.
            logger.error("webhook sensor: could not settle %s after run %s: %s", ref, outcome.run_id, exc)
            return False
    return True


def _ready(tried: list[Attempt], now: float, retry_base: float) -> bool:
    """Whether a pending file's retry delay has passed (a file never tried is always ready)."""
    if not tried:
        return True
    try:
        last = datetime.fromisoformat(tried[-1].at).timestamp()
    except ValueError:
        return True
    return now >= last + retry_base * 2 ** (len(tried) - 1)


def evaluate(
    source: DropSource,
    root: Path,
    cursor: str | None,
    tenants: Iterable[str],
    lookup: RunLookup,
    *,
    broken: Mapping[str, str] | None = None,
    service_users: Mapping[str, int] | None = None,
    now: float | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    retry_base: float = RETRY_BASE_SECONDS,
) -> Tick:
    """One tick over the drop files of ``source``: settle ended runs, then ask for new ones.

    Args:
        source: ``"zoho"`` or ``"moodle"``.
        root: the drop root.
        cursor: the cursor the previous tick committed.
        tenants: the usable tenants.
        lookup: finds a run by its run key (:func:`instance_lookup`).
        broken: tenants whose entry in the tenants file is broken → the error; their files wait.
        service_users: tenant → the Moodle user id of the pipeline's web-services user (echoes).
        now: Unix seconds (tests pass their own).
        max_attempts: failed runs before an event is dead-lettered.
        retry_base: seconds before the first retry; doubles each attempt.
    """
    now = time.time() if now is None else now
    known, broken, service_users = set(tenants), dict(broken or {}), dict(service_users or {})
    tick = Tick()

    flying: list[Flight] = []
    for flight in _flights(cursor, source):
        outcome = lookup(flight.run_key)
        if outcome is None and now - flight.asked_at > LOST_AFTER_SECONDS:
            outcome = RunOutcome("", "LOST", f"the run asked for at {flight.asked_at:.0f} never appeared")
        if (
            outcome is None
            or outcome.status == "ACTIVE"
            or not _land(root, flight, outcome, tick, max_attempts, now)
        ):
            flying.append(flight)
    busy = {f.tenant_id for f in flying}
    in_flight = {ref for f in flying for ref in f.files}

    batches: dict[str, TenantBatch] = {}
    held: set[str] = set()  # tenants whose oldest waiting file is not ready: the rest waits behind it
    for path in pending_files(root, source):
        tenant_id = path.parent.parent.name
        if tenant_id in busy:
            tick.waiting[tenant_id] = "a run is in flight"
            continue
        if tenant_id in broken:
            tick.waiting[tenant_id] = f"its entry in the tenants file is broken: {broken[tenant_id]}"
            continue
        if tenant_id in held or reference(root, path) in in_flight:
            continue
        batch = batches.get(tenant_id)
        if batch is not None and len(batch.files) >= MAX_FILES_PER_RUN:
            continue
        try:
            tried = attempts(path)
            if not _ready(tried, now, retry_base):
                held.add(tenant_id)
                tick.waiting[tenant_id] = "an event waits for its retry; later ones wait behind it"
                continue
            event = read_event(path)
            if event.tenant_id != tenant_id or event.source != source:
                raise DropFileError(f"file says tenant {event.tenant_id!r}, source {event.source!r}")
            if tenant_id not in known:
                raise DropFileError(f"tenant {tenant_id!r} is not in the tenants file")
            if is_echo(event, service_users.get(tenant_id)):
                move_processed(path)
                tick.echoes += 1
                continue
            batch = batches.setdefault(tenant_id, TenantBatch(tenant_id, root))
            batch.add(event)
            batch.attempt = max(batch.attempt, len(tried) + 1)
        except DropFileError as exc:
            _safe_quarantine(path, exc.reason, tick)
        except FileNotFoundError:
            continue  # moved meanwhile
        except OSError as exc:  # unreadable (permissions, I/O error): never retried on every tick
            _safe_quarantine(path, f"unreadable: {exc.strerror or exc}", tick)

    for batch in batches.values():
        if not batch.assets:
            continue
        request = batch.run_request(source)
        tick.requests.append(request)
        flying.append(Flight(request.run_key or "", batch.tenant_id, batch.refs(), batch.attempt, now))
    tick.tenants = sorted(batches)
    tick.cursor = json.dumps({"flights": [f.as_json() for f in flying]})
    return tick


# --- the sensors ----------------------------------------------------------------------------------


def service_user_ids(warehouse: WarehouseResource | None) -> dict[str, int]:
    """Tenant → the pipeline's Moodle web-services user id, as the Moodle steps last recorded it."""
    if warehouse is None:
        return {}
    try:
        return warehouse.get().moodle.service_users()
    except Exception as exc:  # no warehouse yet: no echo is recognised, nothing is lost
        logger.warning("webhook sensor: Moodle service users unknown (%s); echoes will run", exc)
        return {}


def _dead_letter_events(source: str, dead: list[dict]) -> list[dg.AssetObservation]:
    return [
        dg.AssetObservation(
            asset_key=DEAD_LETTERS,
            partition=note["tenant_id"],
            description=f"{source} event {note['event_id']} dead-lettered after {note['attempts']} attempts",
            metadata={
                "source": source,
                "file": note["file"],
                "event_id": note["event_id"] or "",
                "attempts": note["attempts"],
                "reason": note["reason"],
            },
        )
        for note in dead
    ]


def _drop_sensor(source: DropSource) -> dg.SensorDefinition:
    name = f"{source}_webhook_sensor"

    @dg.sensor(
        name=name,
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=dg.AssetSelection.all(),
        description=f"Turns {source.title()} webhook drop files into one run per tenant that syncs only "
        "the records they name; files leave the pending set when their run succeeded, failed runs are "
        "retried, then dead-lettered; unusable files go to quarantine/ with the reason.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource
    ) -> dg.SensorResult | dg.SkipReason:
        try:
            tenant_set = read_tenants()
        except TenantConfigError as exc:
            return dg.SkipReason(str(exc))
        root = drop_dir()
        for tenant_id in tenant_set.tenants:
            heal_quarantine(root, source, tenant_id)
        tick = evaluate(
            source,
            root,
            context.cursor,
            tenant_set.tenants,
            instance_lookup(context.instance, name),
            broken=tenant_set.broken,
            service_users=service_user_ids(warehouse) if source == "moodle" else {},
        )
        for tenant_id, why in sorted(tick.waiting.items()):
            context.log.info(f"tenant {tenant_id}: events wait: {why}")
        for note in tick.dead:
            context.log.error(
                f"tenant {note['tenant_id']}: event {note['event_id']} dead-lettered after "
                f"{note['attempts']} attempts: {note['reason']}"
            )
        existing = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
        partitions = partition_changes(existing | set(tick.tenants), existing)  # a tenant's first event
        return dg.SensorResult(
            run_requests=tick.requests,
            cursor=tick.cursor,
            dynamic_partitions_requests=partitions,
            asset_events=_dead_letter_events(source, tick.dead),
        )

    return _sensor


zoho_webhook_sensor = _drop_sensor("zoho")
moodle_webhook_sensor = _drop_sensor("moodle")

#: Where dead letters show in the UI: one observation per event, partition = tenant.
dead_letters_asset = dg.AssetSpec(
    key=DEAD_LETTERS,
    group_name="events",
    kinds={"zoho", "moodle"},
    partitions_def=tenant_partitions,
    owners=["team:data-platform"],
    description="Webhook events every retry failed for: one observation per event (file, event id, attempts, "
    "reason). The files are under <drop>/<tenant>/<source>/dead/ with a JSON note; move one back to retry it.",
)
