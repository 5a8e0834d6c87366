"""The delivery guarantee, end to end: receiver (uvicorn, real HTTP) → drop folder → sensor tick →
real Dagster runs of the main job against the simulators → warehouse.

Every accepted event is applied exactly once (the ``webhook_events`` ledger holds it once, and the
warehouse holds the last state); a failed run's events are retried and applied; a broken tenant
leaves the others syncing; the pipeline's own Moodle writes cost no run.
"""

import time
from collections.abc import Iterator

import pytest

from sync_pipelines.zoho.modules import module
from sync_pipelines_tests.conftest import postgres_database
from sync_pipelines_tests.event_world import BROKEN, TENANT, World, event_world


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def school(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One school for the module (its first sync is the slow part), once per warehouse backend;
    each test works on records of its own."""
    tmp = tmp_path_factory.mktemp(f"events_{request.param}")
    with pytest.MonkeyPatch.context() as monkeypatch:
        if request.param == "sqlite":
            with event_world(tmp, monkeypatch, f"sqlite:///{tmp / 'warehouse.db'}") as w:
                yield w
        else:
            for url in postgres_database():
                with event_world(tmp, monkeypatch, url) as w:
                    yield w


@pytest.fixture
def world(school: World) -> World:
    """The school, with this test's ticks, runs and ledger counted from zero."""
    school.zoho.fail_next(0)
    school.ticks.clear()
    school.runs.clear()
    school.ledger_start = len(school.store.event_ledger(TENANT))
    return school


def _stored(world: World, name: str, zoho_id: str) -> dict:
    return world.store.load_rows(TENANT, module(name), [zoho_id]).iloc[0].to_dict()


def _ledger(world: World) -> list[tuple[str, str]]:
    """The ledger rows this test added."""
    frame = world.store.event_ledger(TENANT).iloc[world.ledger_start :]
    return list(zip(frame["event_id"], frame["module"], strict=True))


def test_the_second_edit_of_a_record_is_an_event_and_reaches_the_warehouse(world: World):
    """Enrolments have no Modified_Time, and Zoho's body no time: the second edit looks exactly like
    the first. It must still be written, run and applied."""
    enrolment = world.zoho.records("BTEC_Enrollments")[0]["id"]
    answers = []
    for end in ("2027-06-30", "2027-07-31"):
        world.zoho.update("BTEC_Enrollments", enrolment, End_Date=end)
        answers.append(world.notify("BTEC_Enrollments", "edit", enrolment).json())
        world.drain()
        assert str(_stored(world, "enrolments", enrolment)["end_date"])[:10] == end
    assert [a["duplicate"] for a in answers] == [False, False]
    assert sorted(_ledger(world)) == sorted((a["event_id"], "enrolments") for a in answers)


def test_a_push_back_to_an_earlier_state_wins_and_a_late_older_push_does_not(world: World):
    student = dict(world.zoho.records("BTEC_Students")[0])
    sid = student["id"]
    states = [("Active", "2027-01-10T09:00:00+00:00"), ("Withdraw", "2027-01-10T09:05:00+00:00")]
    states.append(("Active", "2027-01-10T09:10:00+00:00"))
    for status, modified in states:  # three pushes, then one run
        assert (
            world.push("students", [{**student, "Status": status, "Modified_Time": modified}]).status_code
            == 202
        )
    world.drain()
    assert _stored(world, "students", sid)["status"] == "Active"
    # A redelivered or late push of the Withdraw state (older Modified_Time) never brings it back.
    world.push("students", [{**student, "Status": "Withdraw", "Modified_Time": states[1][1]}])
    world.drain()
    assert _stored(world, "students", sid)["status"] == "Active"
    assert len(_ledger(world)) == 4  # each push considered once


def test_a_failed_runs_events_are_retried_and_applied_exactly_once(world: World):
    sid = world.zoho.records("BTEC_Students")[1]["id"]
    world.zoho.update("BTEC_Students", sid, Last_Name="Retried-Once")
    answer = world.notify("BTEC_Students", "updated", sid).json()
    # Zoho fails every read of that record for a while: the first run fails, the events stay.
    world.zoho.fail_next(4, status=500, path_contains=f"/BTEC_Students/{sid}")
    world.drain()
    failed = [r for r in world.runs if not r.success]
    assert failed, "the fault did not fail a run"
    assert any(t.retried for t in world.ticks)
    assert _stored(world, "students", sid)["last_name"] == "Retried-Once"
    assert _ledger(world) == [(answer["event_id"], "students")]
    processed = [p.name for p in (world.drop / TENANT / "zoho" / "processed").glob("*.json")]
    assert [n for n in processed if answer["event_id"] in n] != []
    assert not list((world.drop / TENANT / "zoho" / "dead").glob("*.json"))


def test_a_broken_tenant_is_refused_alone_and_the_good_one_keeps_syncing(world: World):
    refused = world.notify("BTEC_Students", "updated", "1", tenant=BROKEN)
    assert refused.status_code == 401
    sid = world.zoho.records("BTEC_Students")[2]["id"]
    world.zoho.update("BTEC_Students", sid, First_Name="Still-Synced")
    assert world.notify("BTEC_Students", "updated", sid).status_code == 202
    world.drain()
    assert _stored(world, "students", sid)["first_name"] == "Still-Synced"
    # The broken school's own run fails with its own error, naming it.
    run = world.job.execute_in_process(instance=world.instance, partition_key=BROKEN, raise_on_error=False)
    assert not run.success
    failure = next(e for e in run.all_events if e.event_type_value == "STEP_FAILURE")
    error = failure.step_failure_data.error.message
    assert f"tenant {BROKEN}" in error and "unknown data_centre 'mars'" in error


def test_the_echo_of_the_pipelines_own_moodle_write_costs_no_run(world: World):
    (service_user,) = world.store.moodle.service_users().values()
    course = int(world.store.moodle.id_map(TENANT, "course")["moodle_id"].iloc[0])
    echo = {
        "eventname": "\\core\\event\\user_enrolment_created",
        "objectid": "501",
        "courseid": str(course),
        "userid": str(service_user),
        "relateduserid": "77",
        "timecreated": int(time.time()),
        "event_id": "7d1f5a0e-0000-4000-8000-000000000001",
        "origin": "ws",
    }
    by_hand = {**echo, "origin": "web", "event_id": "7d1f5a0e-0000-4000-8000-000000000002"}
    assert world.moodle_event(echo).status_code == 202
    assert world.moodle_event(by_hand).status_code == 202
    world.drain("moodle")
    assert sum(t.echoes for t in world.ticks) == 1
    assert [r.dagster_run.tags["sync/events"] for r in world.runs] == ["1"]  # the hand-made change only
