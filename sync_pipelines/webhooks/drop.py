"""Drop files: one JSON file per accepted webhook event, written by the receiver, read by the sensors.

Layout under the drop root (``SYNC_DROP_DIR``, by default ``<local_dir()>/drop``)::

    <root>/<tenant>/<source>/20260125T103000123456Z-<event_id>.json   pending, oldest name first
    <root>/<tenant>/<source>/processed/…                               moved there once a run applied it
    <root>/<tenant>/<source>/quarantine/… + <name>.reason.txt          files that cannot be used
    <root>/<tenant>/<source>/dead/… + <name>.reason.json               dead letters: every attempt failed
    <root>/<tenant>/<source>/.attempts/<name>.json                      failed attempts of a pending file
    <root>/<tenant>/<source>/.seen/id-<event_id>, .seen/sig-<hash>     the redelivery index (expires)

A file holds ``{"event_id", "tenant_id", "source", "kind", "received_at", "payload"}``; each kind's
payload is one model of :mod:`sync_pipelines.events`, which checks it (:func:`validate_payload`).

Guarantees:

* **Atomic.** A file is written under a temporary name (``.tmp-…``) in the same folder, flushed,
  fsynced and renamed into place; the folder is fsynced after. A killed writer leaves at most a
  ``.tmp-`` file, which :func:`pending_files` never lists.
* **Once per delivery, not per content.** A redelivery is the same sender's event id (the Moodle
  plugin sends one, the same on every retry) or the same signed delivery (timestamp and signature)
  inside the replay window; it is not written again. Two deliveries with equal bodies and neither
  (two edits of one record, pushed or notified by Zoho) are two events. The index is a folder of
  marker files created with ``O_CREAT | O_EXCL``, so it survives restarts and holds across
  processes. Markers expire: an event id's after :data:`EVENT_ID_TTL_SECONDS`, a signature's after
  :data:`SIGNATURE_TTL_SECONDS` (past the replay window the receiver refuses the delivery anyway),
  swept by the writer at most once a minute. A marker names the file it stands for; a marker whose
  file never appeared (its writer died between the two steps) is taken over after
  :data:`CLAIM_WAIT_SECONDS`, so a crash can cause a duplicate but never a lost event.
* **Contained.** Tenant ids are validated before any path is built, and the tenant folder must
  resolve inside the root: nothing is written elsewhere.
* **Never deleted.** Files are moved to ``processed/``, ``quarantine/`` or ``dead/``, never removed
  (a dead letter moved back into its folder is retried like a new event).
"""

import hashlib
import json
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import get_args

from sync_pipelines import events
from sync_pipelines.events import KIND_SOURCES, Source
from sync_pipelines.settings import local_dir
from sync_pipelines.tenants import TENANT_ID, TenantConfigError, validate_tenant_id
from sync_pipelines.webhooks.signing import TOLERANCE_SECONDS

logger = logging.getLogger(__name__)

DropSource = Source
SOURCES: tuple[DropSource, ...] = get_args(Source)
DROP_DIR_ENV = "SYNC_DROP_DIR"

PROCESSED = "processed"
QUARANTINE = "quarantine"
DEAD = "dead"
SEEN = ".seen"
ATTEMPTS = ".attempts"
TMP_PREFIX = ".tmp-"
REASON_SUFFIX = ".reason.txt"
DEAD_SUFFIX = ".reason.json"
NAME_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
#: Folders a drop file can lie in, beside its pending place.
RESTING = (PROCESSED, QUARANTINE, DEAD)

#: How long a sender's event id is remembered (the Moodle plugin retries a failed delivery with
#: growing delays, for days at most).
EVENT_ID_TTL_SECONDS = 14 * 24 * 3600.0
#: How long a signed delivery is remembered: twice the replay window, plus a minute of clock skew.
SIGNATURE_TTL_SECONDS = 2 * TOLERANCE_SECONDS + 60.0
#: The writer sweeps expired markers of a folder at most this often.
SWEEP_INTERVAL_SECONDS = 60.0

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


def validate_payload(kind: str, payload: object) -> None:
    """Check that ``payload`` has the shape of ``kind`` (its model in :mod:`sync_pipelines.events`).

    Raises:
        ValueError: unknown kind, or a payload of the wrong shape (the message names the field).
    """
    events.check(kind, payload)


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
    """Whether the event file ``name`` exists: pending, processed, quarantined or dead."""
    if not name or "/" in name or name.startswith("."):
        return False
    return any((d / name).is_file() for d in (folder, *(folder / r for r in RESTING)))


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
        try:
            expired = time.time() - marker.stat().st_mtime > _ttl(marker.name)
        except FileNotFoundError:  # swept meanwhile: claim it afresh
            return _claim(marker, name, folder)
        if expired:  # not swept yet, but no longer a redelivery
            _atomic_write(marker, name.encode("utf-8"))
            return None
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


def signature_key(timestamp: str, signature: str) -> str:
    """The redelivery key of a signed delivery: a digest of its timestamp and signature (the
    signature covers the body, so equal keys mean the same bytes sent at the same second)."""
    return "sig-" + hashlib.sha256(f"{timestamp.strip()}\x00{signature.strip().lower()}".encode()).hexdigest()


def _ttl(marker: str) -> float:
    return SIGNATURE_TTL_SECONDS if marker.startswith("sig-") else EVENT_ID_TTL_SECONDS


_last_sweep: dict[Path, float] = {}


def sweep_markers(folder: Path, *, now: float | None = None) -> int:
    """Delete the expired redelivery markers of one ``<tenant>/<source>`` folder.

    A marker's age is its modification time (set when it was claimed). Markers only stand for
    deliveries; no event file is touched.

    Returns:
        The markers deleted.
    """
    now = time.time() if now is None else now
    seen = Path(folder) / SEEN
    removed = 0
    try:
        entries = list(os.scandir(seen))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if now - entry.stat().st_mtime > _ttl(entry.name):
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue  # another writer swept it
    return removed


def _maybe_sweep(folder: Path) -> None:
    now = time.monotonic()
    if now - _last_sweep.get(folder, -SWEEP_INTERVAL_SECONDS) >= SWEEP_INTERVAL_SECONDS:
        _last_sweep[folder] = now
        try:
            sweep_markers(folder)
        except OSError as exc:  # a sweep is housekeeping: it never stops a delivery
            logger.warning("drop: could not sweep expired markers of %s: %s", folder, exc)


def new_event_id() -> str:
    """A fresh event id for a delivery that came without one (never equal to another)."""
    return uuid.uuid4().hex


def write_event(
    root: Path,
    tenant_id: str,
    source: DropSource,
    kind: str,
    payload: dict,
    *,
    event_id: str | None = None,
    received_at: datetime | None = None,
    redelivery_keys: Sequence[str] = (),
) -> tuple[str, Path | None]:
    """Write one event as a drop file, unless it is a redelivery of one already written.

    Args:
        root: the drop root.
        tenant_id: the school (validated before any path is built).
        source: ``"zoho"`` or ``"moodle"``; must match the kind.
        kind: one of :data:`KIND_SOURCES`.
        payload: the normalised payload (checked with :func:`validate_payload`).
        event_id: the sender's event id: a redelivery carries the same one. When ``None``, the event
            gets a fresh id and only ``redelivery_keys`` can make it a redelivery.
        received_at: when the event was accepted (timezone-aware); now when ``None``.
        redelivery_keys: other keys that identify this delivery (e.g. :func:`signature_key`).

    Returns:
        ``(event_id, path)``; ``path`` is ``None`` when the delivery was already written (the id
        returned is then the one of the stored event).

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
    keys = [*([f"id-{validate_event_id(event_id)}"] if event_id is not None else []), *redelivery_keys]
    event_id = event_id if event_id is not None else new_event_id()
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
    _maybe_sweep(folder)

    tmp = _write_temp(folder, name, data)
    claimed: list[Path] = []
    try:
        existing = _claim_all(folder, keys, name, claimed) if keys else None
        if existing is not None:
            tmp.unlink()
            logger.debug("drop: %s/%s delivery already stored as %s", tenant_id, source, existing)
            return _event_id_of(existing, event_id), None
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


def _event_id_of(name: str, default: str) -> str:
    """The event id in a drop file name (``<time>-<event_id>.json``)."""
    stem = name.removesuffix(".json")
    _, sep, event_id = stem.partition("-")
    return event_id if sep and EVENT_ID.match(event_id) else default


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
    tenants = (
        [validate_tenant_id(tenant_id)] if tenant_id is not None else [p.name for p in _tenant_dirs(root)]
    )
    files: list[Path] = []
    for tenant in tenants:
        folder = root / tenant / source
        try:
            # One tenant's unreadable folder is that tenant's problem: the others are still listed.
            files.extend(
                p
                for p in folder.iterdir()
                if p.name.endswith(".json") and not p.name.startswith(".") and p.is_file()
            )
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.error("drop: cannot list %s: %s", folder, exc.strerror or exc)
    return sorted(files, key=lambda p: (p.name, p.parent.parent.name))


def _tenant_dirs(root: Path) -> list[Path]:
    """The tenant folders under the drop root (names that are tenant ids), sorted."""
    try:
        return sorted(p for p in Path(root).iterdir() if TENANT_ID.match(p.name) and p.is_dir())
    except FileNotFoundError:
        return []


def _location(path: Path) -> tuple[str, str] | None:
    """``(tenant, source)`` from where a file lies in the layout, or ``None`` outside the layout."""
    folder = path.parent
    if folder.name in RESTING:
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
    return folder.parent if folder.name in RESTING else folder


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


def quarantine(path: Path, reason: str) -> Path:
    """Move a drop file that cannot be used to ``quarantine/``, with ``<name>.reason.txt`` beside it.

    The move is a rename, which needs no free space; the reason note does. When the note cannot be
    written (a full disk), the reason is logged as an error and :func:`heal_quarantine` writes it
    on a later tick: the file is never left in the pending set to fail again.

    Args:
        path: the drop file.
        reason: why it cannot be used (e.g. :attr:`DropFileError.reason`).

    Returns:
        The file's new path.

    Raises:
        FileNotFoundError: the file is gone (moved by another run).
        OSError: the file could not be moved.
    """
    target = _move(path, _home(Path(path)) / QUARANTINE)
    try:
        _write_note(target, reason)
    except OSError as exc:
        logger.error(
            "drop: quarantined %s, but its reason note could not be written (%s); reason: %s",
            target.name,
            exc.strerror or exc,
            reason,
        )
        return target
    logger.warning("drop: quarantined %s: %s", target.name, reason)
    return target


def _write_note(target: Path, reason: str) -> None:
    note = f"{reason}\nquarantined at {_iso(datetime.now(UTC))}\n"
    _atomic_write(target.with_name(target.name + REASON_SUFFIX), note.encode("utf-8"))


def heal_quarantine(root: Path, source: DropSource, tenant_id: str) -> int:
    """Write the missing reason notes of a tenant's quarantined files (after a full disk).

    The reason is found again by reading the file; a file that reads back fine was quarantined for
    a reason outside it (an unknown tenant, a refused event), logged when it happened.

    Returns:
        The notes written.
    """
    folder = Path(root) / validate_tenant_id(tenant_id) / source / QUARANTINE
    written = 0
    try:
        files = sorted(p for p in folder.iterdir() if p.name.endswith(".json") and p.is_file())
    except FileNotFoundError:
        return 0
    for path in files:
        if path.with_name(path.name + REASON_SUFFIX).exists():
            continue
        try:
            read_event(path)
            reason = "quarantined when its note could not be written; see the sensor log of that time"
        except DropFileError as exc:
            reason = exc.reason
        except OSError as exc:
            reason = f"unreadable: {exc.strerror or exc}"
        try:
            _write_note(path, reason)
            written += 1
        except OSError:
            break  # still no space: try again on the next tick
    return written


# --- attempts and dead letters --------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One run that covered a drop file and did not succeed.

    Attributes:
        run_id: the Dagster run.
        status: ``FAILURE``, ``CANCELED`` or ``LOST`` (the run never appeared).
        reason: the run's error, one line.
        at: when the sensor saw the run end (ISO UTC).
    """

    run_id: str
    status: str
    reason: str
    at: str


def _attempts_file(path: Path) -> Path:
    return _home(Path(path)) / ATTEMPTS / (Path(path).name + ".json")


def attempts(path: Path) -> list[Attempt]:
    """The failed attempts recorded for a pending drop file (oldest first)."""
    try:
        doc = json.loads(_attempts_file(path).read_text("utf-8"))
        return [Attempt(**a) for a in doc["attempts"]]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as exc:
        # A damaged attempts note must not block the event: it starts counting again.
        logger.warning("drop: attempts of %s unreadable (%s); counting from zero", Path(path).name, exc)
        return []


def record_attempt(path: Path, attempt: Attempt) -> list[Attempt]:
    """Add a failed attempt to a pending drop file's note; returns every attempt so far."""
    every = [*attempts(path), attempt]
    note = _attempts_file(path)
    note.parent.mkdir(exist_ok=True)
    doc = {"file": Path(path).name, "attempts": [a.__dict__ for a in every]}
    _atomic_write(note, json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8"))
    return every


def _forget_attempts(path: Path) -> None:
    try:
        _attempts_file(path).unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("drop: could not remove the attempts note of %s: %s", Path(path).name, exc)


def move_processed(path: Path) -> Path:
    """Move a drop file to ``processed/`` beside it, once a run that covered it succeeded.

    Args:
        path: a pending drop file.

    Returns:
        The file's new path.

    Raises:
        FileNotFoundError: the file is gone (moved by another run).
    """
    target = _move(path, _home(Path(path)) / PROCESSED)
    _forget_attempts(path)
    return target


def dead_letter(path: Path, event: "DropEvent | None", every: Sequence[Attempt]) -> Path:
    """Move a drop file whose every attempt failed to ``dead/``, with ``<name>.reason.json``.

    The note is alert-ready JSON: ``tenant_id``, ``source``, ``event_id``, ``kind``, ``file``,
    ``attempts`` (each run id, status, reason and time), ``reason`` (the last one) and
    ``dead_lettered_at``. Moving the file back into its folder retries it from zero attempts.

    Returns:
        The file's new path.
    """
    target = _move(path, _home(Path(path)) / DEAD)
    where = _location(target) or ("", "")
    note = {
        "tenant_id": where[0],
        "source": where[1],
        "file": target.name,
        "event_id": event.event_id if event else None,
        "kind": event.kind if event else None,
        "received_at": _iso(event.received_at) if event else None,
        "attempts": [a.__dict__ for a in every],
        "reason": every[-1].reason if every else "",
        "dead_lettered_at": _iso(datetime.now(UTC)),
    }
    try:
        _atomic_write(
            target.with_name(target.name + DEAD_SUFFIX),
            json.dumps(note, ensure_ascii=False, indent=1).encode("utf-8"),
        )
    except OSError as exc:
        logger.error("drop: dead letter %s has no note (%s): %s", target.name, exc.strerror or exc, note)
    _forget_attempts(path)
    logger.error(
        "drop: %s/%s event %s dead-lettered after %d attempts: %s",
        where[0],
        where[1],
        note["event_id"],
        len(every),
        note["reason"],
    )
    return target


def dead_letters(root: Path, source: DropSource, tenant_id: str | None = None) -> list[dict]:
    """The notes of every dead letter (of one tenant, or all), oldest file first."""
    root = Path(root)
    tenants = [tenant_id] if tenant_id else sorted(p.name for p in _tenant_dirs(root))
    notes: list[dict] = []
    for tenant in tenants:
        folder = root / tenant / source / DEAD
        if not folder.is_dir():
            continue
        for note in sorted(folder.glob("*" + DEAD_SUFFIX)):
            try:
                notes.append(json.loads(note.read_text("utf-8")))
            except (OSError, ValueError) as exc:
                notes.append({"tenant_id": tenant, "file": note.name, "reason": f"note unreadable: {exc}"})
    return notes


def resolve(root: Path, ref: str) -> Path:
    """The drop file an event reference (``<tenant>/<source>/<name>``, as run config carries it)
    names, wherever it lies now: pending, processed or dead.

    Raises:
        DropFileError: the reference is malformed or names no file.
    """
    parts = ref.split("/")
    if len(parts) != 3 or not TENANT_ID.match(parts[0]) or parts[1] not in SOURCES:
        raise DropFileError(f"event reference {ref[:120]!r} is not <tenant>/<source>/<file>")
    name = parts[2]
    if not name.endswith(".json") or name.startswith(".") or "\\" in name:
        raise DropFileError(f"event reference {ref[:120]!r} names no drop file")
    folder = Path(root) / parts[0] / parts[1]
    for candidate in (folder / name, folder / PROCESSED / name, folder / DEAD / name):
        if candidate.is_file():
            return candidate
    raise DropFileError(f"the drop file {ref} is in none of pending, processed/ or dead/")


def reference(root: Path, path: Path) -> str:
    """The event reference of a pending drop file: ``<tenant>/<source>/<name>``."""
    tenant, source = _location(Path(path)) or ("", "")
    return f"{tenant}/{source}/{Path(path).name}"
