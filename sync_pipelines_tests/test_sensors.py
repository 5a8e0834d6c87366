import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.storage.tags import RUN_KEY_TAG

from sync_pipelines.definitions import reconcile
from sync_pipelines.schedules import RECONCILE_CONFIG, incremental_sync, nightly_reconciliation
from sync_pipelines.sensors import (
    LOST_AFTER_SECONDS,
    RETRY_BASE_SECONDS,
    evaluate,
    instance_lookup,
    moodle_webhook_sensor,
    zoho_webhook_sensor,
)
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.webhooks.drop import (
    attempts,
    dead_letters,
    heal_quarantine,
    pending_files,
    read_event,
    write_event,
)
from sync_pipelines.zoho.modules import MODULES

PUSHED = {"id": "5843017000000999001", "First_Name": "Ada", "Email": "ada.private@example.org"}
ZOHO = {
    "accounts_url": "http://127.0.0.1:9",
    "client_id_env": "A",
    "client_secret_env": "B",
    "refresh_token_env": "C",
}


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    drop = tmp_path / "drop"
    drop.mkdir()
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        yaml.safe_dump({"tenants": [{"id": "school_a", "zoho": ZOHO}, {"id": "school_b", "zoho": ZOHO}]})
    )
    monkeypatch.setenv("SYNC_DROP_DIR", str(drop))
    monkeypatch.setenv("SYNC_TENANTS_FILE", str(tenants))
    return drop


def _zoho(root: Path, tenant: str, module: str, event_type: str, *ids: str) -> Path:
    payload = {"module": module, "event_type": event_type, "record_ids": list(ids)}
    _, path = write_event(root, tenant, "zoho", "zoho.notification", payload)
    assert path is not None
    return path


def _by_hand(root: Path, payload: dict) -> Path:
    """A well-formed drop file the receiver would never have written (e.g. from an older version)."""
    path = root / "school_a" / "zoho" / "20260101T000000000001Z-byhand.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "event_id": "byhand",
        "tenant_id": "school_a",
        "source": "zoho",
        "kind": "zoho.notification",
        "received_at": "2026-01-01T00:00:00+00:00",
        "payload": payload,
    }
    path.write_text(json.dumps(doc))
    return path


def _graded(
    root: Path,
    tenant: str,
    course: int,
    item: int,
    *,
    total: bool = False,
    userid: int = 2,
    origin: str | None = None,
) -> Path:
    payload = {
        "eventname": "\\core\\event\\user_graded",
        "objectid": item * 10,
        "relateduserid": 7,
        "courseid": course,
        "userid": userid,
        **({"origin": origin} if origin else {}),
        "contextinstanceid": None,
        "other": {"itemid": item},
        "timecreated": 1_790_000_000,
        "grade_item": {
            "id": item,
            "itemtype": "course" if total else "mod",
            "itemmodule": None if total else "assign",
            "grademax": 100.0,
            "is_course_total": total,
        },
    }
    _, path = write_event(root, tenant, "moodle", "moodle.event", payload)
    assert path is not None
    return path


# --- runs in a real Dagster instance ------------------------------------------------------------


class FailConfig(dg.Config):
    fail: bool = False


@dg.op
def _step(config: FailConfig) -> None:
    if config.fail:
        raise dg.Failure(description="tenant school_a (token): HTTP 400 Access Denied: too many requests")


@dg.job
def _stand_in() -> None:
    _step()


def run_for(instance: dg.DagsterInstance, request: dg.RunRequest, *, fail: bool = False) -> None:
    """Run a stand-in job under the request's run key, as the daemon would run the real one."""
    _stand_in.execute_in_process(
        instance=instance,
        run_config={"ops": {"_step": {"config": {"fail": fail}}}},
        tags={RUN_KEY_TAG: request.run_key, **request.tags},
        raise_on_error=False,
    )


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def tick(root: Path, instance: dg.DagsterInstance, cursor: str | None, source: str = "zoho", **kwargs):
    return evaluate(
        source,
        root,
        cursor,
        kwargs.pop("tenants", {"school_a", "school_b"}),
        instance_lookup(instance),
        **kwargs,
    )


def test_many_files_become_one_run_per_tenant_carrying_event_references_not_records(
    root: Path, instance: dg.DagsterInstance
):
    a1 = _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    a2 = _zoho(root, "school_a", "BTEC_Students", "created", "222")
    a3 = _zoho(root, "school_a", "BTEC_Enrollments", "deleted", "333")
    _, pushed = write_event(
        root, "school_b", "zoho", "zoho.records", {"module": "BTEC_Teachers", "records": [PUSHED]}
    )
    t = tick(root, instance, None)
    assert t.tenants == ["school_a", "school_b"]
    by_tenant = {r.partition_key: r for r in t.requests}
    a = by_tenant["school_a"]
    assert {k.to_user_string() for k in a.asset_selection} == {
        "zoho/students",
        "moodle/users",
        "zoho/sync_bookkeeping",
        "zoho/enrolments",
        "moodle/enrolments",
        "moodle/drift",
    }
    ref = lambda p: f"school_a/zoho/{p.name}"  # noqa: E731
    assert a.run_config["ops"] == {
        "zoho__students": {"config": {"event_files": [ref(a1), ref(a2)]}},
        "zoho__enrolments": {"config": {"event_files": [ref(a3)]}},
    }
    b = by_tenant["school_b"]
    assert b.run_config["ops"] == {
        "zoho__teachers": {"config": {"event_files": [f"school_b/zoho/{pushed.name}"]}}
    }
    # Names, e-mails and birth dates stay in the drop file: run storage and the UI never see them.
    assert PUSHED["Email"] not in json.dumps([r.run_config for r in t.requests])
    assert {f["tenant_id"] for f in json.loads(t.cursor)["flights"]} == {"school_a", "school_b"}


def test_a_replayed_tick_asks_for_the_same_runs_and_files_stay_pending_while_in_flight(
    root: Path, instance: dg.DagsterInstance
):
    first = _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    t1 = tick(root, instance, None)
    replay = tick(root, instance, None)  # the cursor was never stored
    assert [r.run_key for r in replay.requests] == [r.run_key for r in t1.requests]
    # Committed, the run not started yet: nothing is asked again, nothing moves.
    waiting = tick(root, instance, t1.cursor)
    assert waiting.requests == [] and first.exists()
    assert waiting.waiting == {"school_a": "a run is in flight"}


def test_a_succeeded_run_moves_its_files_to_processed(root: Path, instance: dg.DagsterInstance):
    first = _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    t1 = tick(root, instance, None)
    run_for(instance, t1.requests[0])
    later = _zoho(root, "school_a", "BTEC_Students", "updated", "999")
    t2 = tick(root, instance, t1.cursor)
    assert t2.processed == 1
    assert not first.exists() and (first.parent / "processed" / first.name).exists()
    assert [r.run_config["ops"]["zoho__students"]["config"]["event_files"] for r in t2.requests] == [
        [f"school_a/zoho/{later.name}"]
    ]
    run_for(instance, t2.requests[0])
    t3 = tick(root, instance, t2.cursor)
    assert t3.requests == [] and pending_files(root, "zoho") == []


def test_a_failed_run_puts_its_events_back_and_they_are_retried_then_dead_lettered(
    root: Path, instance: dg.DagsterInstance
):
    event = _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    now = time.time()
    t = tick(root, instance, None, now=now, max_attempts=3, retry_base=60)
    keys = []
    for attempt in (1, 2, 3):
        (request,) = t.requests
        assert request.tags["sync/attempt"] == str(attempt)
        keys.append(request.run_key)
        run_for(instance, request, fail=True)
        t = tick(root, instance, t.cursor, now=now, max_attempts=3, retry_base=60)
        if attempt < 3:
            # Back in the pending set with its attempt, not asked for again before its delay.
            assert event.exists() and t.requests == [] and t.retried == 1
            assert [a.status for a in attempts(event)] == ["FAILURE"] * attempt
            assert "Access Denied" in attempts(event)[-1].reason
            now += 60 * 2 ** (attempt - 1) + 1
            t = tick(root, instance, t.cursor, now=now, max_attempts=3, retry_base=60)
    assert len(set(keys)) == 3  # each attempt is a new run, not one Dagster already ran
    # The third failure: dead letter, with an alert-ready note.
    assert not event.exists() and t.requests == []
    dead = event.parent / "dead" / event.name
    note = json.loads(dead.with_name(dead.name + ".reason.json").read_text())
    assert note["tenant_id"] == "school_a" and note["event_id"] == read_event(dead).event_id
    assert len(note["attempts"]) == 3 and "Access Denied" in note["reason"]
    assert [d["file"] for d in t.dead] == [event.name]
    assert dead_letters(root, "zoho") == [note]


def test_a_cancelled_run_is_an_attempt_too(root: Path, instance: dg.DagsterInstance):
    event = _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    t = tick(root, instance, None)
    (request,) = t.requests
    run = instance.create_run_for_job(_stand_in, tags={RUN_KEY_TAG: request.run_key})
    instance.report_run_canceled(run)
    t = tick(root, instance, t.cursor)
    assert event.exists() and [a.status for a in attempts(event)] == ["CANCELED"]


def test_a_run_that_never_appears_is_lost_and_its_events_are_asked_for_again(
    root: Path, instance: dg.DagsterInstance
):
    event = _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    now = time.time()
    t = tick(root, instance, None, now=now)
    assert tick(root, instance, t.cursor, now=now + 60).requests == []  # not lost yet
    t = tick(root, instance, t.cursor, now=now + LOST_AFTER_SECONDS + 1, retry_base=0)
    assert [a.status for a in attempts(event)] == ["LOST"]
    assert [r.tags["sync/attempt"] for r in t.requests] == ["2"]


def test_a_newer_event_waits_behind_an_older_one_that_waits_for_its_retry(
    root: Path, instance: dg.DagsterInstance
):
    older = _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    now = time.time()
    t = tick(root, instance, None, now=now)
    run_for(instance, t.requests[0], fail=True)
    newer = _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    _zoho(root, "school_b", "BTEC_Students", "updated", "5")
    t = tick(root, instance, t.cursor, now=now)
    assert [r.partition_key for r in t.requests] == ["school_b"]  # school_a waits, in order
    assert "retry" in t.waiting["school_a"]
    t = tick(root, instance, t.cursor, now=now + RETRY_BASE_SECONDS + 1)
    (request,) = [r for r in t.requests if r.partition_key == "school_a"]
    assert request.run_config["ops"]["zoho__students"]["config"]["event_files"] == [
        f"school_a/zoho/{older.name}",
        f"school_a/zoho/{newer.name}",
    ]


@pytest.mark.parametrize(
    ("writer", "reason"),
    [
        (lambda root: root.joinpath("school_a", "zoho", "20260101T000000000000Z-bad.json"), "json"),
        (lambda root: _zoho(root, "school_zz", "BTEC_Students", "updated", "1"), "not in the tenants file"),
        (
            lambda root: _by_hand(root, {"module": "Leads", "event_type": "updated", "record_ids": ["1"]}),
            "leads",
        ),
        (lambda root: _unreadable(root), "unreadable: input/output error"),
    ],
)
def test_unusable_files_are_quarantined_with_their_reason_and_the_rest_still_runs(
    root: Path, instance: dg.DagsterInstance, writer, reason: str
):
    good = _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    bad = writer(root)
    if not bad.exists() and not bad.is_symlink():
        bad.parent.mkdir(parents=True, exist_ok=True)
        bad.write_text('{"event_id": "x", "trunc')
    t = tick(root, instance, None, tenants={"school_a"})
    assert [r.partition_key for r in t.requests] == ["school_a"]
    quarantined = bad.parent / "quarantine" / bad.name
    assert quarantined.is_symlink() or quarantined.exists()
    assert not bad.exists() and not bad.is_symlink()
    assert reason in (bad.parent / "quarantine" / f"{bad.name}.reason.txt").read_text().lower()
    assert good.exists()
    assert tick(root, instance, None, tenants={"school_a"}).quarantined == 0  # not again on every tick


def _unreadable(root: Path) -> Path:
    """A drop file whose read fails with an I/O error (as a bad disk sector would): a link to
    ``/proc/self/mem``, which the kernel refuses to read at offset 0."""
    path = root / "school_a" / "zoho" / "20260101T000000000002Z-unreadable.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to("/proc/self/mem")
    return path


def test_a_full_disk_quarantines_without_a_reason_note_and_a_later_tick_writes_it(root: Path, tmp_path: Path):
    bad = root / "school_a" / "zoho" / "20260101T000000000000Z-bad.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"event_id": "x", "trunc')
    # The tick runs in a process that cannot write a byte (RLIMIT_FSIZE 0: every write fails, as on
    # a full disk; a rename needs no space and still works).
    script = f"""
import resource, signal, json
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
from pathlib import Path
from sync_pipelines.sensors import evaluate
t = evaluate("zoho", Path({str(root)!r}), None, {{"school_a"}}, lambda key: None)
print(json.dumps({{"quarantined": t.quarantined, "requests": len(t.requests)}}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"quarantined": 1, "requests": 0}
    assert "its reason note could not be written" in done.stderr
    moved = bad.parent / "quarantine" / bad.name
    note = moved.with_name(moved.name + ".reason.txt")
    assert moved.exists() and not note.exists()
    assert heal_quarantine(root, "zoho", "school_a") == 1
    assert "not valid json" in note.read_text().lower()


def test_a_broken_tenants_events_wait_untouched_and_the_others_run(root: Path, instance: dg.DagsterInstance):
    waiting = _zoho(root, "school_b", "BTEC_Students", "updated", "1")
    _zoho(root, "school_a", "BTEC_Students", "updated", "2")
    t = tick(root, instance, None, tenants={"school_a"}, broken={"school_b": "unknown data_centre 'mars'"})
    assert [r.partition_key for r in t.requests] == ["school_a"]
    assert waiting.exists() and "unknown data_centre" in t.waiting["school_b"]


def test_the_echo_of_the_pipelines_own_moodle_write_costs_no_run(root: Path, instance: dg.DagsterInstance):
    echo = _graded(root, "school_a", 42, 7, userid=99, origin="ws")
    by_hand = _graded(root, "school_a", 43, 8, userid=99, origin="web")  # the same account, in the browser
    teacher = _graded(root, "school_a", 44, 9, userid=12, origin="ws")
    t = tick(root, instance, None, "moodle", service_users={"school_a": 99})
    assert t.echoes == 1 and (echo.parent / "processed" / echo.name).exists()
    (request,) = t.requests
    assert request.run_config["ops"] == {"moodle__grades": {"config": {"course_ids": [43, 44]}}}
    assert by_hand.exists() and teacher.exists()


def test_the_first_versions_cursor_is_taken_over(root: Path, instance: dg.DagsterInstance):
    first = _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    name = f"school_a/zoho/{first.name}"
    legacy = json.dumps({"submitted": [name]})
    digest = hashlib.sha256(name.encode()).hexdigest()[:24]
    run_for(instance, dg.RunRequest(run_key=f"zoho:school_a:{digest}"))
    t = tick(root, instance, legacy)
    assert t.processed == 1 and t.requests == [] and not first.exists()


def test_grading_events_read_only_their_course_and_the_course_total_adds_nothing(
    root: Path, instance: dg.DagsterInstance
):
    _graded(root, "school_a", 42, 7)
    _graded(root, "school_a", 42, 8, total=True)
    t = tick(root, instance, None, "moodle")
    (request,) = t.requests
    assert {k.to_user_string() for k in request.asset_selection} == {"moodle/grades", "zoho/grade_writeback"}
    assert request.run_config["ops"] == {"moodle__grades": {"config": {"course_ids": [42]}}}


def test_sensor_definitions_tick_and_add_a_new_tenants_partition(root: Path, tmp_path: Path):
    _zoho(root, "school_a", "BTEC_Students", "updated", "111")
    warehouse = WarehouseResource(url=f"sqlite:///{tmp_path / 'w.db'}")
    with dg.instance_for_test() as instance:
        with dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse}) as context:
            result = zoho_webhook_sensor(context)
        assert [r.partition_key for r in result.run_requests] == ["school_a"]
        assert [list(r.partition_keys) for r in result.dynamic_partitions_requests] == [["school_a"]]
        with dg.build_sensor_context(instance=instance, resources={"warehouse": warehouse}) as context:
            idle = moodle_webhook_sensor(context)
        assert idle.run_requests == []


def test_schedules_run_every_tenant_and_the_nightly_one_reads_everything():
    when = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as context,
    ):
        instance.add_dynamic_partitions(tenant_partitions.name, ["school_a", "school_b"])
        runs = incremental_sync(context)
        assert [r.partition_key for r in runs] == ["school_a", "school_b"]
        assert len({r.run_key for r in runs}) == 2
        nightly = nightly_reconciliation(context)
        assert [r.partition_key for r in nightly] == ["school_a", "school_b"]
    assert nightly_reconciliation.job_name == "reconcile"
    assert reconcile.config == RECONCILE_CONFIG  # the nightly job reads every module in full
    assert {op["config"]["full_refresh"] for op in RECONCILE_CONFIG["ops"].values()} == {True}
    assert set(RECONCILE_CONFIG["ops"]) == {f"zoho__{m.name}" for m in MODULES}
