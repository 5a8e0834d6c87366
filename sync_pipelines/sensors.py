"""Webhook sensors: one per source (Zoho, Moodle), over the receiver's drop directory.

Each tick turns the drop files waiting for a tenant into **one run** for that tenant, which reads
only the records the events name and materialises only the assets they affect.

Exactly once, without losing a file:

* A tick reads every waiting file. A file that cannot be used (bad JSON, wrong shape, unknown
  tenant, an event the pipeline has no use for) moves to ``quarantine/`` beside a reason file.
* The others become run requests whose ``run_key`` is a digest of their names: a replayed or
  retried tick asks for the same run, which Dagster starts only once.
* The files of a tick stay where they are until the **next** tick, which finds their names in
  the committed cursor and moves them to ``processed/``. A tick that crashed before Dagster
  stored its runs and cursor leaves them in place for the next tick to request again.

No file is ever deleted by the pipeline.
"""

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from sync_pipelines.tenants import TenantConfigError, load_tenants, partition_changes, tenant_partitions
from sync_pipelines.webhooks.drop import (
    DropEvent,
    DropFileError,
    DropSource,
    drop_dir,
    move_processed,
    pending_files,
    quarantine,
    read_event,
)
from sync_pipelines.zoho.modules import MODULES_BY_API_NAME

logger = logging.getLogger(__name__)

MAX_FILES_PER_TICK = 500

#: Assets to refresh after a Zoho record of a module changes, beside the module's own asset.
ZOHO_DOWNSTREAM: dict[str, tuple[str, ...]] = {
    "students": ("moodle/users", "zoho/sync_bookkeeping"),
    "teachers": ("moodle/users", "zoho/sync_bookkeeping"),
    "programmes": ("moodle/courses",),
    "classes": ("moodle/courses", "moodle/enrolments", "zoho/sync_bookkeeping"),
    "enrolments": ("moodle/enrolments", "zoho/sync_bookkeeping"),
}

#: Assets a Moodle event affects.
MOODLE_EVENTS: dict[str, tuple[str, ...]] = {
    "\\core\\event\\user_graded": ("moodle/grades", "zoho/grade_writeback"),
    "\\core\\event\\user_created": ("moodle/users", "zoho/sync_bookkeeping"),
    "\\core\\event\\user_updated": ("moodle/users", "zoho/sync_bookkeeping"),
    "\\core\\event\\user_enrolment_created": ("moodle/enrolments", "zoho/sync_bookkeeping"),
    "\\core\\event\\user_enrolment_deleted": ("moodle/enrolments", "zoho/sync_bookkeeping"),
}


def _step(asset: str) -> str:
    return asset.replace("/", "__")


@dataclass
class TenantBatch:
    """What one tenant's waiting files ask for: the assets and each asset's run config."""

    tenant_id: str
    files: list[Path] = field(default_factory=list)
    assets: set[str] = field(default_factory=set)
    record_ids: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    deleted_ids: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    pushed: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))
    course_ids: set[int] = field(default_factory=set)

    def add(self, event: DropEvent) -> None:
        """Fold one event in; raises DropFileError for an event the pipeline cannot use."""
        payload = event.payload
        if event.kind in ("zoho.notification", "zoho.records"):
            spec = MODULES_BY_API_NAME.get(str(payload.get("module")))
            if spec is None:
                raise DropFileError(f"module {payload.get('module')!r} is not synced")
            self.assets.update({f"zoho/{spec.name}", *ZOHO_DOWNSTREAM.get(spec.name, ())})
            if event.kind == "zoho.records":
                self.pushed[spec.name] += list(payload.get("records") or [])
            elif payload.get("event_type") == "deleted":
                self.deleted_ids[spec.name] += [str(i) for i in payload.get("record_ids") or []]
            else:
                self.record_ids[spec.name] += [str(i) for i in payload.get("record_ids") or []]
        elif event.kind == "moodle.event":
            affected = MOODLE_EVENTS.get(str(payload.get("eventname")))
            if affected is None:
                raise DropFileError(f"event {payload.get('eventname')!r} is not one the pipeline acts on")
            self.assets.update(affected)
            if "moodle/grades" in affected and payload.get("courseid"):
                self.course_ids.add(int(payload["courseid"]))
        else:
            raise DropFileError(f"unknown kind {event.kind!r}")
        self.files.append(event.path)

    def run_config(self) -> dict:
        ops: dict[str, dict] = {}
        for name in set(self.record_ids) | set(self.deleted_ids) | set(self.pushed):
            config: dict = {}
            if self.record_ids.get(name):
                config["record_ids"] = sorted(set(self.record_ids[name]))
            if self.deleted_ids.get(name):
                config["deleted_ids"] = sorted(set(self.deleted_ids[name]))
            if self.pushed.get(name):
                config["pushed_records_json"] = json.dumps(self.pushed[name], ensure_ascii=False)
            ops[_step(f"zoho/{name}")] = {"config": config}
        if self.course_ids and "moodle/grades" in self.assets:
            ops[_step("moodle/grades")] = {"config": {"course_ids": sorted(self.course_ids)}}
        return {"ops": ops}

    def run_request(self, source: DropSource, root: Path) -> dg.RunRequest:
        names = sorted(str(p.relative_to(root)) for p in self.files)
        digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:24]
        return dg.RunRequest(
            run_key=f"{source}:{self.tenant_id}:{digest}",
            partition_key=self.tenant_id,
            asset_selection=[dg.AssetKey(a.split("/")) for a in sorted(self.assets)],
            run_config=self.run_config(),
            tags={"sync/trigger": f"{source}-webhook", "sync/events": str(len(self.files))},
        )


def _tenant_of(root: Path, path: Path) -> str:
    return path.relative_to(root).parts[0]


def evaluate(
    source: DropSource, root: Path, cursor: str | None, tenants: Iterable[str]
) -> tuple[list[dg.RunRequest], str, list[str]]:
    """One tick: (run requests, the new cursor, tenants with files), moving files as described above."""
    submitted = set(json.loads(cursor)["submitted"]) if cursor else set()
    known = set(tenants)
    fresh: list[Path] = []
    for path in pending_files(root, source):
        if str(path.relative_to(root)) in submitted:
            move_processed(path)  # its run request was committed with the cursor that names it
        elif len(fresh) < MAX_FILES_PER_TICK:
            fresh.append(path)

    batches: dict[str, TenantBatch] = {}
    for path in fresh:
        tenant_id = _tenant_of(root, path)
        try:
            event = read_event(path)
            if event.tenant_id != tenant_id or event.source != source:
                raise DropFileError(f"file says tenant {event.tenant_id!r}, source {event.source!r}")
            if tenant_id not in known:
                raise DropFileError(f"tenant {tenant_id!r} is not in the tenants file")
            batches.setdefault(tenant_id, TenantBatch(tenant_id)).add(event)
        except DropFileError as exc:
            moved = quarantine(path, exc.reason)
            logger.warning("quarantined %s: %s", moved, exc)
    requests = [b.run_request(source, root) for b in batches.values() if b.assets]
    names = sorted(str(p.relative_to(root)) for b in batches.values() for p in b.files)
    return requests, json.dumps({"submitted": names}), sorted(batches)


def _drop_sensor(source: DropSource) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{source}_webhook_sensor",
        minimum_interval_seconds=15,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=dg.AssetSelection.all(),
        description=f"Turns {source.title()} webhook drop files into one run per tenant that syncs only "
        "the records they name; unusable files go to quarantine/ with the reason.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        try:
            tenants = set(load_tenants())
        except TenantConfigError as exc:
            return dg.SkipReason(str(exc))
        root = drop_dir()
        requests, cursor, seen = evaluate(source, root, context.cursor, tenants)
        existing = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
        partitions = partition_changes(existing | set(seen), existing)  # a tenant's first event
        return dg.SensorResult(run_requests=requests, cursor=cursor, dynamic_partitions_requests=partitions)

    return _sensor


zoho_webhook_sensor = _drop_sensor("zoho")
moodle_webhook_sensor = _drop_sensor("moodle")
