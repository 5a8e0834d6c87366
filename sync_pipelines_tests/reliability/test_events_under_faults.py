"""Webhook events under a seeded mix of faults: accepted, applied, retried, dead-lettered, lost.

A school is synced once; then, round after round, Zoho records are edited, deleted and pushed and
each change is delivered to the real receiver as a webhook (some deliveries twice, as a sender
retrying a lost answer would), while the Zoho and Moodle simulators answer a share of requests with
429s, 5xx pages, dropped connections and revoked tokens. The sensor ticks and its runs execute in a
real Dagster instance, as the daemon would run them; a run that fails leaves its events pending and
a later tick retries them. At the end the faults stop and the sensor drains.

Asserted: no accepted event is lost (each is processed or dead-lettered, none left pending), the
ledger holds each applied Zoho event once per module, redeliveries were stored once, and the
warehouse holds Zoho's last state of every record an event touched.
"""

import contextlib
import random
import time
from pathlib import Path

import pandas as pd
import pytest

from sync_pipelines.sandbox.faults import FaultPlan
from sync_pipelines.webhooks.drop import dead_letters, pending_files
from sync_pipelines.zoho.modules import module
from sync_pipelines_tests.event_world import TENANT, World, event_world
from sync_pipelines_tests.reliability.test_faults import write_results

FAULT_KINDS = ("429", "500", "503", "drop", "expire_token")
#: The sensor's default: an event is dead-lettered after 8 failed runs (retried without delay here).
MAX_ATTEMPTS = 8


def _round(world: World, rng: random.Random, tally: dict, touched: dict[str, set[str]]) -> None:
    """One round of school work in Zoho, each change delivered as a webhook."""
    students = sorted(world.zoho.records("BTEC_Students"), key=lambda r: r["id"])
    enrolments = sorted(world.zoho.records("BTEC_Enrollments"), key=lambda r: r["id"])
    for _ in range(rng.randint(3, 6)):
        action = rng.choice(("edit", "edit", "enrolment", "push", "delete"))
        if action == "edit":
            rec = rng.choice(students)
            world.zoho.update("BTEC_Students", rec["id"], Last_Name=f"Name-{rng.randrange(10**6)}")
            reply = world.notify("BTEC_Students", "updated", rec["id"])
            touched["students"].add(rec["id"])
        elif action == "enrolment":
            rec = rng.choice(enrolments)
            world.zoho.update("BTEC_Enrollments", rec["id"], End_Date=f"2027-{rng.randint(1, 12):02d}-28")
            reply = world.notify("BTEC_Enrollments", "edit", rec["id"])
            touched["enrolments"].add(rec["id"])
        elif action == "push":
            rec = dict(rng.choice(students))
            world.zoho.update("BTEC_Students", rec["id"], City=f"Town-{rng.randrange(10**6)}")
            reply = world.push("students", [world.zoho.record("BTEC_Students", rec["id"])])
            touched["students"].add(rec["id"])
        else:
            rec = rng.choice(enrolments)
            if world.zoho.record("BTEC_Enrollments", rec["id"]) is None:
                continue
            world.zoho.delete("BTEC_Enrollments", rec["id"])
            reply = world.notify("BTEC_Enrollments", "deleted", rec["id"])
            touched["enrolments"].add(rec["id"])
        assert reply.status_code == 202, reply.text
        tally["accepted"] += 1
        tally["event_ids"].add(reply.json()["event_id"])
    # A signed Moodle delivery sent twice (its answer lost): one event.
    body = {
        "eventname": "\\core\\event\\user_updated",
        "objectid": str(rng.randint(3, 50)),
        "userid": "5000",
        "relateduserid": None,
        "timecreated": int(time.time()),
        "event_id": f"m-{rng.randrange(10**12)}",
        "origin": "web",
    }
    first, again = world.moodle_event(body), world.moodle_event(body)
    assert (first.status_code, again.status_code) == (202, 202)
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    tally["accepted"] += 1
    tally["redeliveries_stored_once"] += 1


def _drain(world: World, ticks: int) -> None:
    for _ in range(ticks):
        for source in ("zoho", "moodle"):
            with contextlib.suppress(AssertionError):  # still pending: the next tick goes on
                world.drain(source, max_ticks=1, max_attempts=MAX_ATTEMPTS)


def _files(world: World, folder: str) -> list[Path]:
    folders = [world.drop / TENANT / s / folder for s in ("zoho", "moodle")]
    return [p for f in folders for p in f.glob("*.json") if not p.name.endswith(".reason.json")]


def run_mix(
    tmp_path: Path, monkeypatch, warehouse_url: str, *, rounds: int, rate: float, seed: int, retries: int
) -> dict:
    """``retries``: HTTP retries of one call (the resources' default is 5). Without any, a run that
    reads N records fails with probability 1 - (1 - rate)^N, so a backlog that grows while it fails
    soon never succeeds: that is the harsh case of the quick variant, with small batches."""
    plan = FaultPlan(rate=rate, seed=seed, kinds=FAULT_KINDS)
    rng = random.Random(seed)
    tally: dict = {"accepted": 0, "event_ids": set(), "redeliveries_stored_once": 0}
    touched: dict[str, set[str]] = {"students": set(), "enrolments": set()}
    started = time.perf_counter()
    with event_world(
        tmp_path, monkeypatch, warehouse_url, seed=seed, scale=0.1, faults=plan, retries=0
    ) as world:
        for _ in range(rounds):
            _round(world, rng, tally, touched)
            _drain(world, 1)
        world.zoho.set_faults(None)
        world.moodle.set_faults(None)
        _drain(world, 6)

        processed, dead = _files(world, "processed"), _files(world, "dead")
        pending = [p for s in ("zoho", "moodle") for p in pending_files(world.drop, s)]
        ledger = world.store.event_ledger(TENANT)
        mismatches = []
        for name, ids in touched.items():
            spec = module(name)
            table = world.store.read_table(TENANT, spec, include_deleted=True).set_index("zoho_id")
            for zoho_id in sorted(ids):
                held = world.zoho.record(spec.api_name, zoho_id)
                row = table.loc[zoho_id].to_dict() if zoho_id in table.index else None
                if held is None:
                    ok = row is not None and not pd.isna(row["deleted_at"])
                elif name == "students":
                    ok = row is not None and (row["last_name"], row["city"]) == (
                        held["Last_Name"],
                        held["City"],
                    )
                else:
                    ok = row is not None and str(row["end_date"])[:10] == held["End_Date"]
                if not ok:
                    mismatches.append((name, zoho_id))
        runs = world.runs
        figures = {
            "events_accepted": tally["accepted"],
            "redeliveries_stored_once": tally["redeliveries_stored_once"],
            "events_applied": len(processed),
            "events_retried": sum(t.retried for t in world.ticks),
            "events_dead_lettered": len(dead),
            "events_lost": tally["accepted"] - len(processed) - len(dead) - len(pending),
            "events_pending_after_drain": len(pending),
            "zoho_events_in_ledger": int(ledger["event_id"].nunique()),
            "ledger_rows_applied_twice": int(ledger.duplicated(["event_id", "module"]).sum()),
            "runs": len(runs),
            "runs_failed": sum(not r.success for r in runs),
            "faults_injected": plan.total,
            "records_checked": sum(len(v) for v in touched.values()),
            "records_not_at_zohos_last_state": len(mismatches),
            "seconds": round(time.perf_counter() - started, 1),
        }
        notes = dead_letters(world.drop, "zoho") + dead_letters(world.drop, "moodle")
    assert figures["events_lost"] == 0 and figures["events_pending_after_drain"] == 0, figures
    assert figures["events_applied"] + figures["events_dead_lettered"] == figures["events_accepted"], figures
    assert figures["ledger_rows_applied_twice"] == 0, figures
    assert all(n["reason"] and n["attempts"] for n in notes), notes  # every dead letter says why
    if not figures["events_dead_lettered"]:
        assert mismatches == [], mismatches
    return figures


def test_events_under_a_seeded_mix_of_faults_are_never_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    figures = run_mix(
        tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'w.db'}", rounds=5, rate=0.2, seed=11, retries=0
    )
    assert figures["runs_failed"] > 0, "the faults failed no run: the retry path was not exercised"
    write_results("events", {"quick_sqlite_rate_20_no_http_retries": figures})


@pytest.mark.reliability
@pytest.mark.parametrize("seed", [21, 22])
def test_events_under_heavier_faults_on_both_backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, warehouse_url: str, seed: int
):
    figures = run_mix(tmp_path, monkeypatch, warehouse_url, rounds=15, rate=0.2, seed=seed, retries=1)
    backend = warehouse_url.split(":", 1)[0].split("+", 1)[0]
    write_results("events", {f"{backend}_rate_20_one_http_retry_seed_{seed}": figures})
