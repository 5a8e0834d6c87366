"""Crash consistency: a sync SIGKILLed anywhere, then run normally, ends exactly where a clean one does.

Each world is a Zoho and a Moodle simulator (served by this test process) and a warehouse; the
sync runs in a child process (:mod:`crash_worker`) that is killed at a named point or after a
random delay. The state after the kill and one normal run is compared, record by record, with a
world that never crashed: warehouse rows, Moodle users/courses/enrolments (by idnumber: Moodle
ids differ between worlds), Zoho write-backs. No Moodle object or Zoho grade may exist twice, and
no Zoho record may point at a Moodle id that does not exist.
"""

import copy
import itertools
import json
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from sync_pipelines.sandbox import MoodleSimulator, ZohoSimulator, generate_school
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.store import from_db
from sync_pipelines.zoho.modules import MODULES
from sync_pipelines_tests.reliability import crash_worker
from sync_pipelines_tests.reliability.crash_worker import KILL_POINTS

TENANT = "school_a"
_WORKERS = multiprocessing.get_context("forkserver")
_WORKERS.set_forkserver_preload(["sync_pipelines_tests.reliability.crash_worker"])
_RUNS = itertools.count()
RESULTS = Path(".local/reliability")


@cache
def _school() -> dict[str, list[dict]]:
    return generate_school(21, scale=0.1)


@dataclass
class World:
    zoho: ZohoSimulator
    moodle: MoodleSimulator
    url: str
    folder: Path

    def run(self, kill_at: str | None = None, *, kill_after: float | None = None) -> int:
        """One sync in a child process; returns its exit code (-9 when it was killed)."""
        cfg = {
            "zoho_url": self.zoho.accounts_url,
            "moodle_url": self.moodle.base_url,
            "warehouse_url": self.url,
            "tenant": TENANT,
            "kill_at": kill_at,
        }
        # Forked from a server process that imported the worker once (multiprocessing's
        # forkserver): a fresh process per sync, as before, without paying the imports each time.
        err = self.folder / f"run-{next(_RUNS)}.stderr"
        proc = _WORKERS.Process(target=crash_worker.child, args=(json.dumps(cfg), str(err)))
        proc.start()
        proc.join(timeout=kill_after if kill_after is not None else 300)
        if proc.is_alive():
            if kill_after is None:
                proc.kill()
                raise AssertionError("the sync did not end in 300 s")
            proc.kill()
            proc.join()
        if proc.exitcode not in (0, -signal.SIGKILL):
            raise AssertionError(f"the sync failed (exit {proc.exitcode}):\n{err.read_text()[-3000:]}")
        return proc.exitcode

    def school_day(self) -> None:
        """Edits in Zoho and marking in Moodle, the same in every world (keyed by Zoho ids)."""
        students = sorted(self.zoho.records("BTEC_Students"), key=lambda r: r["id"])
        self.zoho.update("BTEC_Students", students[4]["id"], Last_Name="Renamed")
        enrolments = sorted(self.zoho.records("BTEC_Enrollments"), key=lambda r: r["id"])
        self.zoho.delete("BTEC_Enrollments", enrolments[3]["id"])
        by_idnumber = {c["idnumber"]: c["id"] for c in self.moodle.courses() if c.get("idnumber")}
        users = {u["id"]: u.get("idnumber") for u in self.moodle.users()}
        for class_id in sorted(by_idnumber)[:3]:
            course = by_idnumber[class_id]
            item = self.moodle.add_grade_item(course, f"Assignment {class_id[-3:]}", grademax=100.0)
            for e in sorted(self.moodle.enrolments(course), key=lambda e: users[e["userid"]] or ""):
                if e["roleid"] == 5:
                    self.moodle.set_grade(course, e["userid"], item, float(int(users[e["userid"]]) % 97))


def snapshot(world: World) -> dict:
    """Everything a sync decides, with Moodle ids replaced by the idnumbers they stand for."""
    store = Warehouse(world.url)
    tables = {}
    for spec in MODULES:
        stored = store.read_table(TENANT, spec, include_deleted=True)
        frame = from_db(stored, spec)[["zoho_id", *spec.fingerprint_columns, "fingerprint"]]
        frame = frame.assign(deleted=stored["deleted_at"].notna())
        tables[spec.name] = sorted(map(tuple, frame.astype(str).to_numpy().tolist()))
    grades = store.moodle.grades(TENANT)
    tables["moodle_grades"] = sorted(
        map(
            tuple,
            grades[["student_zoho_id", "class_zoho_id", "item_name", "grade_raw", "btec_grade"]]
            .astype(str)
            .to_numpy()
            .tolist(),
        )
    )
    store.dispose()
    users = {u["id"]: u for u in world.moodle.users() if u.get("idnumber")}
    courses = {c["id"]: c for c in world.moodle.courses() if c.get("idnumber")}
    categories = {c["id"]: c.get("idnumber") for c in world.moodle.categories()}
    moodle = {
        "users": sorted(
            (
                u["idnumber"],
                u["username"],
                u["firstname"],
                u["lastname"],
                u["email"],
                int(u.get("suspended") or 0),
            )
            for u in users.values()
        ),
        "courses": sorted(
            (c["idnumber"], c["shortname"], c["fullname"], str(categories.get(c.get("categoryid"))))
            for c in courses.values()
        ),
        "enrolments": sorted(
            (users[e["userid"]]["idnumber"], courses[e["courseid"]]["idnumber"], e["roleid"])
            for e in world.moodle.enrolments()
            if e["userid"] in users and e["courseid"] in courses
        ),
    }
    writeback = {}
    for module, field, pool in (
        ("BTEC_Students", "Student_Moodle_ID", users),
        ("BTEC_Teachers", "Teacher_Moodle_ID", users),
        ("BTEC_Classes", "Moodle_Class_ID", courses),
    ):
        pointed = {r["id"]: r.get(field) for r in world.zoho.records(module) if r.get(field)}
        writeback[module] = sorted(
            (z, pool[int(m)]["idnumber"] if int(m) in pool else f"MISSING {m}") for z, m in pointed.items()
        )
    ours = [
        r for r in world.zoho.records("BTEC_Grades") if "_" in str(r.get("Moodle_Grade_Composite_Key") or "")
    ]
    writeback["BTEC_Grades"] = sorted(
        (r["Student"]["id"], r["Class"]["id"], r.get("BTEC_Grade_Name"), r["Grade"]) for r in ours
    )
    return {"tables": tables, "moodle": moodle, "writeback": writeback}


def duplicates(world: World) -> list[str]:
    """Anything the sync made twice."""
    found = []
    for name, values in (
        ("moodle user idnumber", [u.get("idnumber") for u in world.moodle.users() if u.get("idnumber")]),
        ("moodle course shortname", [c["shortname"] for c in world.moodle.courses()]),
        ("moodle enrolment", [(e["userid"], e["courseid"], e["roleid"]) for e in world.moodle.enrolments()]),
        (
            "zoho grade composite key",
            [
                r.get("Moodle_Grade_Composite_Key")
                for r in world.zoho.records("BTEC_Grades")
                if "_" in str(r.get("Moodle_Grade_Composite_Key") or "")
            ],
        ),
    ):
        found += [f"{name} {v!r} ×{n}" for v, n in Counter(values).items() if n > 1]
    return found


@pytest.fixture
def worlds(tmp_path: Path) -> Iterator[tuple[World, World]]:
    sims = []
    made = []
    for name in ("reference", "crashed"):
        z = ZohoSimulator(
            data=copy.deepcopy(_school()), clients={"c": ("s", "r")}, refresh_limit_per_minute=None
        )
        m = MoodleSimulator(tokens={"t": None})
        z.start()
        m.start()
        sims += [z, m]
        made.append(World(z, m, f"sqlite:///{tmp_path / name}.db", tmp_path))
    yield made[0], made[1]
    for s in sims:
        s.stop()


def _heal_and_compare(reference: World, crashed: World, stats: Counter) -> None:
    # The crashed world heals with one normal run; then both take one more, so that what each
    # wrote back to Zoho is read back into its warehouse mirror: the state a schedule settles in.
    assert crashed.run() == 0
    assert crashed.run() == 0
    assert reference.run() == 0
    stats["normal_runs"] += 2
    assert duplicates(crashed) == []
    got, want = snapshot(crashed), snapshot(reference)
    for part in want:
        for key in want[part]:
            extra = sorted(set(got[part][key]) - set(want[part][key]))[:3]
            missing = sorted(set(want[part][key]) - set(got[part][key]))[:3]
            assert got[part][key] == want[part][key], (
                f"{part}/{key} differs: extra {extra}, missing {missing}"
            )
    assert not any("MISSING" in str(v) for v in got["writeback"].values())
    stats["records_compared"] += sum(len(v) for v in got["tables"].values()) + sum(
        len(v) for v in got["moodle"].values()
    )


def _scenario(
    reference: World, crashed: World, kills: list[tuple[str | None, float | None]], stats: Counter
) -> None:
    """Day 1 and day 2 in both worlds; the crashed one is killed as told before each normal run."""
    assert reference.run() == 0
    for day in (1, 2):
        if day == 2:
            reference.school_day()
            crashed.school_day()
            assert reference.run() == 0
        # Day 1 kills in pipeline order (early points have work then); day 2 in reverse, so the
        # late points (grade write-back) are reached before a completed run consumes their work.
        for point, delay in kills if day == 1 else list(reversed(kills)):
            code = crashed.run(point, kill_after=delay)
            stats["runs_killed"] += code == -signal.SIGKILL
            stats[f"killed_at:{point or 'random'}"] += code == -signal.SIGKILL
        _heal_and_compare(reference, crashed, stats)


def _record(name: str, stats: Counter, started: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {**stats, "records_lost": 0, "duplicates": 0, "seconds": round(time.monotonic() - started, 1)}
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2, sort_keys=True))


def test_a_sync_killed_at_each_named_point_converges_with_no_duplicate(worlds: tuple[World, World]):
    started, stats = time.monotonic(), Counter()
    _scenario(*worlds, [(point, None) for point in KILL_POINTS], stats)
    assert {p: stats[f"killed_at:{p}"] >= 1 for p in KILL_POINTS} == dict.fromkeys(KILL_POINTS, True)
    _record("crash_named_points", stats, started)


@pytest.mark.reliability
def test_a_sync_killed_at_random_moments_converges_with_no_duplicate(worlds: tuple[World, World]):
    started, stats = time.monotonic(), Counter()
    rng = random.Random(int(os.environ.get("SYNC_CRASH_SEED", "7")))
    kills = [(None, rng.uniform(0.3, 3.0)) for _ in range(12)]
    _scenario(*worlds, kills, stats)
    _record("crash_random", stats, started)
