"""Drop files: layout, atomic writes, the duplicate index, reading back, processed and quarantine."""

import json
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sync_pipelines.webhooks import drop
from sync_pipelines.webhooks.drop import (
    FIELDS,
    DropEvent,
    DropFileError,
    drop_dir,
    move_processed,
    pending_files,
    quarantine,
    read_event,
    write_event,
)

T0 = datetime(2026, 1, 25, 10, 30, tzinfo=UTC)
NOTIFICATION = {"module": "BTEC_Students", "event_type": "updated", "record_ids": ["5843017000000123456"]}
RECORDS = {"module": "Products", "records": [{"id": "5843017000000000001", "Product_Name": "BTEC L3 IT"}]}
MOODLE = {
    "eventname": "\\core\\event\\user_graded",
    "objectid": 1187,
    "relateduserid": 57,
    "courseid": 12,
    "userid": 2,
    "contextinstanceid": 12,
    "other": {"itemid": 341, "overridden": False, "finalgrade": 87.5},
    "timecreated": 1769337000,
    "grade_item": {
        "id": 341,
        "itemtype": "mod",
        "itemmodule": "assign",
        "grademax": 100.0,
        "is_course_total": False,
    },
}


def notification(record_id: str) -> dict:
    """A Zoho notification about one record."""
    return {**NOTIFICATION, "record_ids": [record_id]}


def all_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` (hidden ones included), relative to it."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def write(root: Path, tenant: str = "school_a", **kwargs: object) -> tuple[str, Path | None]:
    """Write a Zoho notification (overridable by keyword) received at :data:`T0`."""
    args: dict = {"source": "zoho", "kind": "zoho.notification", "payload": NOTIFICATION, "received_at": T0}
    args.update(kwargs)
    return write_event(root, tenant, **args)


@pytest.mark.parametrize(
    ("source", "kind", "payload"),
    [
        ("zoho", "zoho.notification", NOTIFICATION),
        ("zoho", "zoho.records", RECORDS),
        ("moodle", "moodle.event", MOODLE),
    ],
)
def test_write_then_read_round_trip(tmp_path: Path, source: str, kind: str, payload: dict) -> None:
    event_id, path = write_event(
        tmp_path,
        "school_a",
        source,
        kind,
        payload,
        event_id="evt-1",
        received_at=T0 + timedelta(microseconds=7),
    )
    assert event_id == "evt-1"
    assert path == tmp_path / "school_a" / source / "20260125T103000000007Z-evt-1.json"
    document = json.loads(path.read_text("utf-8"))
    assert list(document) == list(FIELDS)
    assert document["received_at"] == "2026-01-25T10:30:00.000007Z"
    assert read_event(path) == DropEvent(
        event_id="evt-1",
        tenant_id="school_a",
        source=source,
        kind=kind,
        received_at=T0 + timedelta(microseconds=7),
        payload=payload,
        path=path,
    )
    assert pending_files(tmp_path, source) == [path]


def test_received_at_is_stored_in_utc(tmp_path: Path) -> None:
    plus_three = T0.astimezone(datetime.fromisoformat("2026-01-01T00:00:00+03:00").tzinfo)
    _, path = write(tmp_path, received_at=plus_three)
    assert path is not None and path.name.startswith("20260125T103000000000Z-")
    assert read_event(path).received_at == T0


def test_an_event_without_a_sender_id_gets_a_fresh_one_each_time(tmp_path: Path) -> None:
    one, first = write(tmp_path)
    two, second = write(tmp_path)  # the same body again: Zoho's second edit of the same record
    assert first is not None and second is not None and one != two
    assert drop.EVENT_ID.match(one) and drop.EVENT_ID.match(two)
    assert len(pending_files(tmp_path, "zoho")) == 2


def test_pending_files_sorted_by_name_across_tenants_and_only_of_the_source(tmp_path: Path) -> None:
    _, late = write(tmp_path, "school_a", payload=notification("2"), received_at=T0 + timedelta(seconds=2))
    _, early = write(tmp_path, "school_b", payload=notification("3"), received_at=T0)
    _, middle = write(tmp_path, "school_a", payload=notification("1"), received_at=T0 + timedelta(seconds=1))
    write_event(tmp_path, "school_a", "moodle", "moodle.event", MOODLE, received_at=T0)
    (tmp_path / "not a tenant" / "zoho").mkdir(parents=True)
    (tmp_path / "not a tenant" / "zoho" / "stray.json").write_text("{}")
    assert pending_files(tmp_path, "zoho") == [early, middle, late]
    assert pending_files(tmp_path, "zoho", tenant_id="school_a") == [middle, late]
    assert pending_files(tmp_path / "missing", "zoho") == []


def test_a_killed_writer_leaves_nothing_that_is_listed(tmp_path: Path) -> None:
    _, path = write(tmp_path, event_id="whole")
    assert path is not None
    folder = path.parent
    partial = path.read_bytes()[:20]
    (folder / f".tmp-{path.name}.x1y2z3").write_bytes(partial)  # what mkstemp leaves behind
    (folder / ".tmp-looks-final.json").write_bytes(partial)
    assert pending_files(tmp_path, "zoho") == [path]
    # and the next write is not disturbed by the leftovers
    assert write(tmp_path, payload=notification("2"), received_at=T0 + timedelta(seconds=1))[1] is not None


def test_write_failure_leaves_no_temp_file_and_no_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(drop.os, "rename", broken_rename)
    with pytest.raises(OSError, match="No space"):
        write(tmp_path, event_id="evt-1")
    assert all_files(tmp_path) == []
    monkeypatch.undo()
    assert write(tmp_path, event_id="evt-1")[1] is not None  # the retry is stored, not taken for a duplicate


# --- duplicates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(
            {"event_id": "evt-1"},
            {"event_id": "evt-1", "payload": {**NOTIFICATION, "record_ids": ["9"]}},
            id="same-event-id",
        ),
        pytest.param(
            {"redelivery_keys": ["sig-abc"]},
            {"redelivery_keys": ["sig-abc"], "received_at": T0 + timedelta(seconds=30)},
            id="same-signed-delivery",
        ),
    ],
)
def test_redeliveries_are_not_written_twice(tmp_path: Path, first: dict, second: dict) -> None:
    first_id, path = write(tmp_path, **first)
    second_id, again = write(tmp_path, **second)
    assert path is not None and again is None
    assert pending_files(tmp_path, "zoho") == [path]
    assert second_id == first_id  # the answer names the stored event


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param({}, {"received_at": T0 + timedelta(hours=1)}, id="same-content-no-id"),
        pytest.param({"event_id": "evt-1"}, {"event_id": "evt-2"}, id="same-content-new-id"),
        pytest.param(
            {"redelivery_keys": ["sig-a"]}, {"redelivery_keys": ["sig-b"]}, id="two-signed-deliveries"
        ),
    ],
)
def test_equal_bodies_of_two_deliveries_are_two_events(tmp_path: Path, first: dict, second: dict) -> None:
    _, path = write(tmp_path, **first)
    _, other = write(tmp_path, **second)
    assert path is not None and other is not None
    assert len(pending_files(tmp_path, "zoho")) == 2


def test_the_signature_key_depends_on_timestamp_and_signature() -> None:
    key = drop.signature_key("1769337000", "sha256=AB")
    assert key == drop.signature_key(" 1769337000 ", "sha256=ab")  # as the receiver compares them
    assert key != drop.signature_key("1769337001", "sha256=ab")
    assert key != drop.signature_key("1769337000", "sha256=ac")
    assert key.startswith("sig-") and drop.EVENT_ID.match(key.removeprefix("sig-"))


@pytest.mark.parametrize(
    ("keys", "ttl"),
    [
        ({"event_id": "evt-1"}, "EVENT_ID_TTL_SECONDS"),
        ({"redelivery_keys": ["sig-x"]}, "SIGNATURE_TTL_SECONDS"),
    ],
    ids=["event-id", "signature"],
)
def test_markers_expire_and_a_late_redelivery_is_a_new_event(tmp_path: Path, keys: dict, ttl: str) -> None:
    _, path = write(tmp_path, **keys)
    assert path is not None
    seen = path.parent / drop.SEEN
    (marker,) = list(seen.iterdir())
    old = time.time() - getattr(drop, ttl) - 5
    os.utime(marker, (old, old))
    # Not swept yet: the expired marker no longer makes a redelivery.
    assert write(tmp_path, **keys, received_at=T0 + timedelta(days=20))[1] is not None
    # Swept: expired markers go, fresh ones stay, and no event file is touched.
    for m in seen.iterdir():
        os.utime(m, (old, old))
    write(tmp_path, event_id="fresh", received_at=T0 + timedelta(days=21))
    before = len(list(seen.iterdir()))
    assert before >= 2
    assert drop.sweep_markers(path.parent) == before - 1
    assert [m.name for m in seen.iterdir()] == ["id-fresh"]
    assert len(pending_files(tmp_path, "zoho")) == 3


@pytest.mark.parametrize(
    ("tenant", "source", "kind", "payload"),
    [("school_b", "zoho", "zoho.notification", NOTIFICATION), ("school_a", "moodle", "moodle.event", MOODLE)],
)
def test_the_index_is_per_tenant_and_source(
    tmp_path: Path, tenant: str, source: str, kind: str, payload: dict
) -> None:
    assert write(tmp_path, event_id="evt-1")[1] is not None
    assert write_event(tmp_path, tenant, source, kind, payload, event_id="evt-1")[1] is not None


@pytest.mark.parametrize(
    "move", [move_processed, lambda p: quarantine(p, "bad")], ids=["processed", "quarantined"]
)
def test_duplicates_stay_duplicates_after_the_file_moved(
    tmp_path: Path, move: Callable[[Path], Path]
) -> None:
    _, path = write(tmp_path, event_id="evt-1")
    assert path is not None
    move(path)
    assert write(tmp_path, event_id="evt-1")[1] is None


def test_concurrent_writers_store_an_event_once(tmp_path: Path) -> None:
    barrier = threading.Barrier(8)

    def deliver(i: int) -> Path | None:
        barrier.wait()
        return write(tmp_path, event_id="evt-1", received_at=T0 + timedelta(microseconds=i))[1]

    with ThreadPoolExecutor(8) as pool:
        paths = list(pool.map(deliver, range(8)))
    stored = [p for p in paths if p is not None]
    assert len(stored) == 1
    assert pending_files(tmp_path, "zoho") == stored


def test_a_claim_whose_writer_died_is_taken_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drop, "CLAIM_WAIT_SECONDS", 0.05)
    seen = tmp_path / "school_a" / "zoho" / ".seen"
    seen.mkdir(parents=True)
    (seen / "id-evt-1").write_text("20260125T090000000000Z-evt-1.json")  # claimed, never renamed
    _, path = write(tmp_path, event_id="evt-1")
    assert path is not None and path.exists()
    assert (seen / "id-evt-1").read_text() == path.name
    assert write(tmp_path, event_id="evt-1")[1] is None


# --- refusing bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", ["../x", "a/b", "..", ".", "", "a%2Fb", "/abs", "x" * 65, "école"])
def test_path_looking_tenant_ids_are_refused_before_any_path_is_built(tmp_path: Path, tenant: str) -> None:
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="invalid tenant id"):
        write(root, tenant)
    assert all_files(tmp_path) == []


def test_a_tenant_folder_symlinked_outside_the_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "school_a").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside the drop root"):
        write(root)
    assert all_files(outside) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"event_id": "../../etc/passwd"}, "invalid event id"),
        ({"event_id": ".hidden"}, "invalid event id"),
        ({"event_id": ""}, "invalid event id"),
        ({"kind": "zoho.unknown"}, "unknown kind"),
        ({"source": "moodle"}, "belongs to source zoho"),
        ({"source": "canvas"}, "unknown source"),
        ({"received_at": datetime(2026, 1, 25, 10, 30)}, "timezone-aware"),
        ({"payload": {**NOTIFICATION, "module": "Leads"}}, "unknown module 'Leads'"),
        ({"payload": {**NOTIFICATION, "record_ids": []}}, "record_id (or ids, comma-separated) is required"),
        (
            {"kind": "zoho.records", "payload": {"module": "Products", "records": [{"Name": "x"}]}},
            "has no id",
        ),
        ({"payload": {**NOTIFICATION, "extra": 1}}, "unexpected field extra"),
        (
            {
                "kind": "zoho.records",
                "payload": {"module": "Products", "records": [{"id": "1", "x": float("nan")}]},
            },
            "Out of range float",
        ),
    ],
)
def test_write_event_refuses_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        write(tmp_path, **kwargs)
    assert [p for p in all_files(tmp_path) if p.suffix == ".json"] == []


# --- reading bad files ----------------------------------------------------------------------------


def _good_document() -> dict:
    return {
        "event_id": "evt-1",
        "tenant_id": "school_a",
        "source": "zoho",
        "kind": "zoho.notification",
        "received_at": "2026-01-25T10:30:00.000000Z",
        "payload": dict(NOTIFICATION),
    }


def _with(**changes: object) -> bytes:
    document = _good_document()
    for key, value in changes.items():
        if value is None:
            del document[key]
        else:
            document[key] = value
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(b"", "empty file", id="empty"),
        pytest.param(b"  \n", "empty file", id="blank"),
        pytest.param(_with()[:40], "not valid JSON (truncated or corrupt)", id="truncated"),
        pytest.param(b"\xff\xfe{}", "not UTF-8", id="not-utf8"),
        pytest.param(b"[1, 2]", "expected a JSON object, found list", id="array"),
        pytest.param(_with(payload=None, kind=None), "missing field(s): kind, payload", id="missing-fields"),
        pytest.param(_with(kind="zoho.unknown"), "unknown kind 'zoho.unknown'", id="unknown-kind"),
        pytest.param(
            _with(kind="moodle.event", payload=MOODLE),
            "kind moodle.event belongs to source moodle",
            id="kind-source",
        ),
        pytest.param(_with(source="canvas"), "unknown source 'canvas'", id="unknown-source"),
        pytest.param(_with(received_at="yesterday"), "is not an ISO time", id="bad-time"),
        pytest.param(
            _with(received_at="2026-01-25T10:30:00"), "not an ISO time with a zone", id="naive-time"
        ),
        pytest.param(_with(event_id="a/b"), "invalid event id", id="bad-event-id"),
        pytest.param(_with(tenant_id="../x"), "invalid tenant id", id="bad-tenant"),
        pytest.param(_with(tenant_id="school_b"), "lies under school_a/zoho", id="wrong-folder"),
        pytest.param(_with(payload=[1]), "payload is not an object", id="payload-array"),
        pytest.param(
            _with(payload={**NOTIFICATION, "record_ids": []}), "record_id (or ids", id="no-record-ids"
        ),
        pytest.param(
            _with(payload={**NOTIFICATION, "event_type": "touched"}), "event_type must be", id="event-type"
        ),
        pytest.param(
            _with(payload={**NOTIFICATION, "module": "Leads"}), "unknown module 'Leads'", id="module"
        ),
        pytest.param(
            _with(kind="zoho.records", payload={"module": "Products", "records": []}),
            "'data' must be a non-empty list of records",
            id="no-records",
        ),
        pytest.param(
            _with(source="moodle", kind="moodle.event", payload={**MOODLE, "objectid": "11 87"}),
            "objectid must be an integer",
            id="moodle-str-id",
        ),
        pytest.param(
            _with(
                source="moodle",
                kind="moodle.event",
                payload={k: v for k, v in MOODLE.items() if k != "objectid"},
            ),
            "payload: objectid is required",
            id="moodle-missing",
        ),
        pytest.param(
            _with(
                source="moodle",
                kind="moodle.event",
                payload={**MOODLE, "grade_item": {**MOODLE["grade_item"], "is_course_total": "perhaps"}},
            ),
            "is_course_total must be true or false",
            id="moodle-grade-item",
        ),
    ],
)
def test_read_event_refuses_unusable_files_with_a_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    source = "moodle" if b'"source": "moodle"' in content else "zoho"
    folder = tmp_path / "school_a" / source
    folder.mkdir(parents=True)
    path = folder / "20260125T103000000000Z-evt-1.json"
    path.write_bytes(content)
    with pytest.raises(DropFileError) as caught:
        read_event(path)
    assert reason in caught.value.reason
    assert caught.value.path == path
    assert isinstance(caught.value, ValueError)


def test_read_event_outside_the_layout_skips_the_folder_check(tmp_path: Path) -> None:
    path = tmp_path / "event.json"
    path.write_bytes(_with())
    assert read_event(path).tenant_id == "school_a"


# --- moving ---------------------------------------------------------------------------------------


def test_move_processed_keeps_the_file_and_never_overwrites(tmp_path: Path) -> None:
    _, path = write(tmp_path, event_id="evt-1")
    assert path is not None
    content = path.read_bytes()
    processed = path.parent / "processed"
    processed.mkdir()
    (processed / path.name).write_text("an older file of the same name")
    moved = move_processed(path)
    assert moved == processed / path.name.replace(".json", ".1.json")
    assert moved.read_bytes() == content
    assert (processed / path.name).read_text() == "an older file of the same name"
    assert pending_files(tmp_path, "zoho") == []
    assert read_event(moved).event_id == "evt-1"
    with pytest.raises(FileNotFoundError):
        move_processed(path)


def test_quarantine_writes_the_reason_beside_the_file(tmp_path: Path) -> None:
    _, path = write(tmp_path, event_id="evt-1")
    assert path is not None
    content = path.read_bytes()
    moved = quarantine(path, "payload.module 'Leads' is not a module of the table")
    assert moved == path.parent / "quarantine" / path.name
    assert moved.read_bytes() == content
    note = moved.with_name(moved.name + ".reason.txt").read_text("utf-8")
    assert note.startswith("payload.module 'Leads' is not a module of the table\nquarantined at ")
    assert pending_files(tmp_path, "zoho") == []
    assert not path.exists()


def test_drop_dir_from_the_environment_or_under_local_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNC_DROP_DIR", str(tmp_path / "drops"))
    assert drop_dir() == tmp_path / "drops"
    monkeypatch.delenv("SYNC_DROP_DIR")
    monkeypatch.setenv("SYNC_LOCAL_DIR", str(tmp_path / "local"))
    assert drop_dir() == tmp_path / "local" / "drop"
