"""Drop files: one JSON file per accepted webhook event, written by the receiver, read by the sensors.

Layout under the drop root (``SYNC_DROP_DIR``, by default ``<local_dir()>/drop``)::

    <root>/<tenant>/<source>/20260125T103000123456Z-<event_id>.json   pending, oldest name first
    <root>/<tenant>/<source>/processed/…                               moved there once applied
    <root>/<tenant>/<source>/quarantine/… + <name>.reason.txt          files that cannot be used
    <root>/<tenant>/<source>/.seen/id-<event_id>, .seen/sha256-<hash>  the duplicate index

A file holds ``{"event_id", "tenant_id", "source", "kind", "received_at", "payload"}``; the payload of
each kind is described in :data:`KIND_SOURCES` and checked by :func:`validate_payload`:

* ``zoho.notification``: ``{"module", "event_type": created|updated|deleted, "record_ids": [str, …]}``
* ``zoho.records``: ``{"module", "records": [record as Zoho API JSON, with "id", …]}``
* ``moodle.event``: ``{"eventname", "objectid", "relateduserid", "courseid", "userid",
  "contextinstanceid", "other", "timecreated", "grade_item"}`` (types as in :func:`validate_payload`)

Guarantees:

* **Atomic.** A file is written under a temporary name (``.tmp-…``) in the same folder, flushed,
  fsynced and renamed into place; the folder is fsynced after. A killed writer leaves at most a
  ``.tmp-`` file, which :func:`pending_files` never lists.
* **Once per event.** An event id, or a content hash, already seen for a tenant and source is not
  written again. The index is a folder of marker files created with ``O_CREAT | O_EXCL``, so it
  survives restarts and holds across processes. A marker names the file it stands for; a marker whose
  file never appeared (its writer died between the two steps) is taken over after
  :data:`CLAIM_WAIT_SECONDS`, so a crash can cause a duplicate but never a lost event.
* **Contained.** Tenant ids are validated before any path is built, and the tenant folder must
  resolve inside the root: nothing is written elsewhere.
* **Never deleted.** Files are moved to ``processed/`` or ``quarantine/``, never removed.
"""

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

from sync_pipelines.settings import local_dir
from sync_pipelines.tenants import TENANT_ID, TenantConfigError, validate_tenant_id
from sync_pipelines.zoho.modules import MODULES_BY_API_NAME

logger = logging.getLogger(__name__)

DropSource = Literal["zoho", "moodle"]
SOURCES: tuple[DropSource, ...] = get_args(DropSource)
DROP_DIR_ENV = "SYNC_DROP_DIR"

PROCESSED = "processed"
QUARANTINE = "quarantine"
SEEN = ".seen"
TMP_PREFIX = ".tmp-"
REASON_SUFFIX = ".reason.txt"
NAME_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"

#: Every kind of event, and the source whose folder it lives in.
KIND_SOURCES: dict[str, DropSource] = {
    "zoho.notification": "zoho",
    "zoho.records": "zoho",
    "moodle.event": "moodle",
}
ZOHO_EVENT_TYPES: tuple[str, ...] = ("created", "updated", "deleted")
#: The Moodle core events the observer plugin forwards (``get_data()["eventname"]``).
MOODLE_EVENTS: frozenset[str] = frozenset(
    "\\core\\event\\" + name
    for name in (
        "user_created",
        "user_updated",
        "user_enrolment_created",
        "user_enrolment_deleted",
        "user_graded",
    )
)
MOODLE_INT_FIELDS: tuple[str, ...] = ("objectid", "timecreated")
MOODLE_OPTIONAL_INT_FIELDS: tuple[str, ...] = ("relateduserid", "courseid", "userid", "contextinstanceid")
MOODLE_FIELDS: tuple[str, ...] = (
    "eventname",
    *MOODLE_INT_FIELDS,
    *MOODLE_OPTIONAL_INT_FIELDS,
    "other",
    "grade_item",
)

#: Event ids become part of file names: letters, digits, ".", "_" and "-", starting with a letter or digit.
EVENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FIELDS: tuple[str, ...] = ("event_id", "tenant_id", "source", "kind", "received_at", "payload")

#: How long a writer waits for the file of an existing marker before deciding its writer died.
CLAIM_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class DropEvent:
    """One event read back from a drop file.

    Attributes:
        event_id: the sender's id, or the SHA-256 of the canonical payload when it gave none.
        tenant_id: the school.
        source: ``"zoho"`` or ``"moodle"``.
        kind: one of :data:`KIND_SOURCES`.
        received_at: when the receiver accepted it (UTC).
        payload: the normalised payload of the kind.
        path: the file it was read from.
    """

    event_id: str
    tenant_id: str
    source: DropSource
    kind: str
    received_at: datetime
    payload: dict
    path: Path


class DropFileError(ValueError):
    """A drop file that cannot be used: bad JSON, missing or wrong fields, unknown kind.

    Attributes:
        reason: what is wrong, fit for a quarantine note.
        path: the file, when known.
    """

    def __init__(self, reason: str, path: Path | None = None) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.reason = reason
        self.path = path


def drop_dir() -> Path:
    """The drop root: ``SYNC_DROP_DIR`` when set, else ``<local_dir()>/drop``."""
    value = os.environ.get(DROP_DIR_ENV)
    return Path(value).resolve() if value else local_dir() / "drop"


def canonical_json(value: object) -> bytes:
    """``value`` as canonical JSON: sorted keys, no spaces, UTF-8, no NaN or infinity."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def content_hash(value: object) -> str:
    """SHA-256 (hex) of :func:`canonical_json` of ``value``: the derived event id."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


def validate_event_id(event_id: str) -> str:
    """Return ``event_id`` if it is safe as part of a file name, else raise ``ValueError``."""
    if not isinstance(event_id, str) or not EVENT_ID.match(event_id):
        raise ValueError(
            f"invalid event id {str(event_id)[:80]!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return event_id


# --- payloads -------------------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _check_module(payload: dict) -> None:
    module = payload.get("module")
    if not isinstance(module, str) or module not in MODULES_BY_API_NAME:
        raise ValueError(
            f"payload.module {module!r} is not a module of the table ({', '.join(MODULES_BY_API_NAME)})"
        )


def _check_zoho_notification(payload: dict) -> None:
    _check_module(payload)
    if payload.get("event_type") not in ZOHO_EVENT_TYPES:
        raise ValueError(f"payload.event_type must be one of {', '.join(ZOHO_EVENT_TYPES)}")
    ids = payload.get("record_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ValueError("payload.record_ids must be a non-empty list of non-empty strings")


def _check_zoho_records(payload: dict) -> None:
    _check_module(payload)
    records = payload.get("records")
    if not isinstance(records, list) or not records:
        raise ValueError("payload.records must be a non-empty list")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"payload.records[{i}] is not an object")
        rid = record.get("id")
        if not (isinstance(rid, str) and rid) and not _is_int(rid):
            raise ValueError(f"payload.records[{i}] has no id")


def _check_grade_item(item: object) -> None:
    if item is None:
        return
    if not isinstance(item, dict):
        raise ValueError("payload.grade_item must be an object or null")
    if not _is_int(item.get("id")):
        raise ValueError("payload.grade_item.id must be an integer")
    if not isinstance(item.get("itemtype"), str):
        raise ValueError("payload.grade_item.itemtype must be a string")
    if item.get("itemmodule") is not None and not isinstance(item.get("itemmodule"), str):
        raise ValueError("payload.grade_item.itemmodule must be a string or null")
    if not _is_number(item.get("grademax")):
        raise ValueError("payload.grade_item.grademax must be a number")
    if not isinstance(item.get("is_course_total"), bool):
        raise ValueError("payload.grade_item.is_course_total must be true or false")


def _check_moodle_event(payload: dict) -> None:
    if missing := [f for f in MOODLE_FIELDS if f not in payload]:
        raise ValueError(f"payload is missing {', '.join(missing)}")
    if payload["eventname"] not in MOODLE_EVENTS:
        raise ValueError(f"payload.eventname {payload['eventname']!r} is not a forwarded Moodle event")
    for name in MOODLE_INT_FIELDS:
        if not _is_int(payload[name]):
            raise ValueError(f"payload.{name} must be an integer")
    for name in MOODLE_OPTIONAL_INT_FIELDS:
        if payload[name] is not None and not _is_int(payload[name]):
            raise ValueError(f"payload.{name} must be an integer or null")
    if payload["other"] is not None and not isinstance(payload["other"], dict):
        raise ValueError("payload.other must be an object or null")
    _check_grade_item(payload["grade_item"])


_PAYLOAD_CHECKS = {
    "zoho.notification": _check_zoho_notification,
    "zoho.records": _check_zoho_records,
    "moodle.event": _check_moodle_event,
}


def validate_payload(kind: str, payload: object) -> None:
    """Check that ``payload`` has the shape of ``kind``.

    Args:
        kind: one of :data:`KIND_SOURCES`.
        payload: the normalised payload.

    Raises:
        ValueError: unknown kind, or a payload of the wrong shape (the message names the field).
    """
    if kind not in KIND_SOURCES:
        raise ValueError(f"unknown kind {kind!r} (one of {', '.join(KIND_SOURCES)})")
    if not isinstance(payload, dict):
        raise ValueError("payload is not an object")
    _PAYLOAD_CHECKS[kind](payload)


# --- writing --------------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("received_at must be timezone-aware")
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _source_dir(root: Path, tenant_id: str, source: str) -> Path:
    """``<root>/<tenant>/<source>``, created, and proved to lie inside ``root``."""
    base = Path(root).resolve()
    tenant_dir = base / validate_tenant_id(tenant_id)
    folder = tenant_dir / source
    # A tenant folder replaced by a symlink would otherwise carry writes out of the root.
    if not tenant_dir.resolve().is_relative_to(base):
        raise ValueError(f"tenant folder {tenant_id!r} resolves outside the drop root")
    folder.mkdir(parents=True, exist_ok=True)
    if not folder.resolve().is_relative_to(base):
        raise ValueError(f"{tenant_id}/{source} resolves outside the drop root")
    return folder


def _write_temp(folder: Path, name: str, data: bytes) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{name}.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def _atomic_write(target: Path, data: bytes) -> None:
    tmp = _write_temp(target.parent, target.name, data)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _stored(folder: Path, name: str) -> bool:
    """Whether the event file ``name`` exists: pending, processed or quarantined."""
    if not name or "/" in name or name.startswith("."):
        return False
    return any((d / name).is_file() for d in (folder, folder / PROCESSED, folder / QUARANTINE))


def _read_marker(marker: Path) -> str:
    try:
        return marker.read_text("utf-8").strip()
    except FileNotFoundError:
        return ""


def _claim(marker: Path, name: str, folder: Path) -> str | None:
    """Claim ``marker`` for the file ``name``.

    Returns:
        ``None`` when the claim is ours (new, or taken over from a writer that died); otherwise the
        name of the file already stored for this key.
    """
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        deadline = time.monotonic() + CLAIM_WAIT_SECONDS
        while True:
            existing = _read_marker(marker)
            if _stored(folder, existing):
                return existing
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)  # another writer may be between its claim and its rename
        logger.warning(
            "drop index: taking over %s, whose file never appeared (its writer died?)", marker.name
        )
        _atomic_write(marker, name.encode("utf-8"))
        return None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(name)
        fh.flush()
        os.fsync(fh.fileno())
    return None


def _claim_all(folder: Path, keys: list[str], name: str, claimed: list[Path]) -> str | None:
    """Claim every key for ``name``, appending our markers to ``claimed``.

    Returns:
        ``None`` when every key is ours; else the name of the file stored for the first key taken.
    """
    seen = folder / SEEN
    seen.mkdir(exist_ok=True)
    for key in keys:
        existing = _claim(seen / key, name, folder)
        if existing is not None:
            # Our fresh claims must name the stored original, or they would look abandoned later.
            for marker in claimed:
                _atomic_write(marker, existing.encode("utf-8"))
            return existing
        claimed.append(seen / key)
    _fsync_dir(seen)
    return None


def write_event(
    root: Path,
    tenant_id: str,
    source: DropSource,
    kind: str,
    payload: dict,
    *,
    event_id: str | None = None,
    received_at: datetime | None = None,
    dedup_key: object | None = None,
) -> tuple[str, Path | None]:
    """Write one event as a drop file, unless it was already written.

    Args:
        root: the drop root.
        tenant_id: the school (validated before any path is built).
        source: ``"zoho"`` or ``"moodle"``; must match the kind.
        kind: one of :data:`KIND_SOURCES`.
        payload: the normalised payload (checked with :func:`validate_payload`).
        event_id: the sender's event id; when ``None``, the SHA-256 of the canonical ``dedup_key``.
        received_at: when the event was accepted (timezone-aware); now when ``None``.
        dedup_key: what identifies the content for duplicate detection, when the payload alone does
            not (a Zoho notification's payload carries no time, so the receiver adds the sender's
            timestamp); defaults to the payload.

    Returns:
        ``(event_id, path)``; ``path`` is ``None`` when the event id or the content was already seen
        for this tenant and source.

    Raises:
        ValueError: invalid tenant id, event id, source, kind or payload, or naive ``received_at``.
        OSError: the file could not be written (nothing is marked as seen in that case).
    """
    tenant_id = validate_tenant_id(tenant_id)
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r} (one of {', '.join(SOURCES)})")
    validate_payload(kind, payload)
    if KIND_SOURCES[kind] != source:
        raise ValueError(f"kind {kind} belongs to source {KIND_SOURCES[kind]}, not {source}")
    digest = content_hash(payload if dedup_key is None else dedup_key)
    event_id = digest if event_id is None else validate_event_id(event_id)
    moment = _utc(received_at if received_at is not None else datetime.now(UTC))
    record = {
        "event_id": event_id,
        "tenant_id": tenant_id,
        "source": source,
        "kind": kind,
        "received_at": _iso(moment),
        "payload": payload,
    }
    data = json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"
    name = f"{moment.strftime(NAME_TIME_FORMAT)}-{event_id}.json"
    folder = _source_dir(root, tenant_id, source)

    tmp = _write_temp(folder, name, data)
    claimed: list[Path] = []
    try:
        existing = _claim_all(folder, [f"id-{event_id}", f"sha256-{digest}"], name, claimed)
        if existing is not None:
            tmp.unlink()
            logger.debug("drop: %s/%s event %s already stored as %s", tenant_id, source, event_id, existing)
            return event_id, None
        path = folder / name
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        # Release our claims, so that the sender's retry is stored at once rather than taken for a duplicate.
        for marker in claimed:
            marker.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    return event_id, path


# --- reading --------------------------------------------------------------------------------------


def pending_files(root: Path, source: DropSource, *, tenant_id: str | None = None) -> list[Path]:
    """Every drop file of ``source`` not yet processed or quarantined.

    Args:
        root: the drop root.
        source: ``"zoho"`` or ``"moodle"``.
        tenant_id: only this tenant's files (all tenants when ``None``).

    Returns:
        ``<root>/<tenant>/<source>/*.json`` sorted by file name (so by receipt time, then tenant);
        temporary files, hidden files and folders whose name is not a tenant id are never listed.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r} (one of {', '.join(SOURCES)})")
    root = Path(root)
    if tenant_id is not None:
        tenants = [validate_tenant_id(tenant_id)]
    elif root.is_dir():
        tenants = sorted(p.name for p in root.iterdir() if p.is_dir() and TENANT_ID.match(p.name))
    else:
        tenants = []
    files: list[Path] = []
    for tenant in tenants:
        folder = root / tenant / source
        if folder.is_dir():
            files.extend(
                p
                for p in folder.iterdir()
                if p.name.endswith(".json") and not p.name.startswith(".") and p.is_file()
            )
    return sorted(files, key=lambda p: (p.name, p.parent.parent.name))


def _location(path: Path) -> tuple[str, str] | None:
    """``(tenant, source)`` from where a file lies in the layout, or ``None`` outside the layout."""
    folder = path.parent
    if folder.name in (PROCESSED, QUARANTINE):
        folder = folder.parent
    if folder.name in SOURCES and TENANT_ID.match(folder.parent.name):
        return folder.parent.name, folder.name
    return None


def _parse(path: Path) -> DropEvent:
    raw = path.read_bytes()
    if not raw.strip():
        raise ValueError("empty file")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"not valid JSON (truncated or corrupt): {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:  # a sensor must quarantine such a file, not fail on it every tick
        raise ValueError("JSON nested too deeply to read") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, found {type(doc).__name__}")
    if missing := [f for f in FIELDS if f not in doc]:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    event_id = validate_event_id(doc["event_id"])
    try:
        tenant_id = validate_tenant_id(doc["tenant_id"])
    except TenantConfigError as exc:
        raise ValueError(str(exc)) from exc
    source, kind = doc["source"], doc["kind"]
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r} (one of {', '.join(SOURCES)})")
    validate_payload(kind, doc["payload"])
    if KIND_SOURCES[kind] != source:
        raise ValueError(f"kind {kind} belongs to source {KIND_SOURCES[kind]}, not {source}")
    try:
        received_at = _utc(datetime.fromisoformat(doc["received_at"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"received_at {doc['received_at']!r} is not an ISO time with a zone") from exc
    where = _location(path)
    if where is not None and where != (tenant_id, source):
        raise ValueError(
            f"file says tenant {tenant_id}, source {source}, but lies under {where[0]}/{where[1]}"
        )
    return DropEvent(
        event_id=event_id,
        tenant_id=tenant_id,
        source=source,
        kind=kind,
        received_at=received_at,
        payload=doc["payload"],
        path=path,
    )


def read_event(path: Path) -> DropEvent:
    """Read and check one drop file.

    Args:
        path: a file listed by :func:`pending_files` (or any drop file).

    Returns:
        The event.

    Raises:
        DropFileError: the file is empty, truncated, not JSON, or its fields have the wrong shape;
            ``reason`` says which. A file whose tenant or source disagree with the folder it lies in
            is refused too, so a misplaced file cannot leak into another school.
        OSError: the file could not be read (e.g. it was moved meanwhile).
    """
    path = Path(path)
    try:
        return _parse(path)
    except DropFileError:
        raise
    except ValueError as exc:
        raise DropFileError(str(exc), path) from exc


# --- moving ---------------------------------------------------------------------------------------


def _home(path: Path) -> Path:
    """The ``<root>/<tenant>/<source>`` folder a drop file belongs to."""
    folder = path.parent
    return folder.parent if folder.name in (PROCESSED, QUARANTINE) else folder


def _free_target(folder: Path, name: str) -> Path:
    target = folder / name
    stem, suffix = name.removesuffix(".json"), ".json" if name.endswith(".json") else ""
    n = 0
    while target.exists() or target.with_name(target.name + REASON_SUFFIX).exists():
        n += 1
        target = folder / f"{stem}.{n}{suffix}"
    return target


def _move(path: Path, folder: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"drop file {path} does not exist")
    folder.mkdir(exist_ok=True)
    # Never overwrite: an existing file of the same name keeps its place, this one gets a suffix.
    target = _free_target(folder, path.name)
    os.rename(path, target)
    _fsync_dir(folder)
    _fsync_dir(path.parent)
    return target


def move_processed(path: Path) -> Path:
    """Move a drop file to ``processed/`` beside it (never deleting anything).

    Args:
        path: a pending drop file.

    Returns:
        The file's new path.

    Raises:
        FileNotFoundError: the file is gone (moved by another run).
    """
    return _move(path, _home(Path(path)) / PROCESSED)


def quarantine(path: Path, reason: str) -> Path:
    """Move a drop file that cannot be used to ``quarantine/``, with ``<name>.reason.txt`` beside it.

    Args:
        path: the drop file.
        reason: why it cannot be used (e.g. :attr:`DropFileError.reason`).

    Returns:
        The file's new path.

    Raises:
        FileNotFoundError: the file is gone (moved by another run).
    """
    target = _move(path, _home(Path(path)) / QUARANTINE)
    note = f"{reason}\nquarantined at {_iso(datetime.now(UTC))}\n"
    _atomic_write(target.with_name(target.name + REASON_SUFFIX), note.encode("utf-8"))
    logger.warning("drop: quarantined %s: %s", target.name, reason)
    return target
