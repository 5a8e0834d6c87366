"""The receiver SIGKILLed while it writes drop files: no partial file is ever processed, nothing lost.

The receiver runs as in production (``python -m sync_pipelines.webhooks``, tenants file and drop root
from the environment). Client threads post deliveries to it without pause, so that a kill lands in
the middle of writes; after a random moment it is killed with SIGKILL, and then, as the sensors would:

* every file ``pending_files`` lists reads back (a partial write would be empty or truncated JSON);
* a sensor tick (:func:`sync_pipelines.sensors.evaluate`, for Zoho and Moodle, its cursor carried
  from tick to tick so that files do move to ``processed/``) runs without error and quarantines
  nothing; leftover ``.tmp-`` files stay where they are, never listed, never moved;
* every delivery that was answered ``202`` is on disk exactly once (pending or processed).

A delivery whose connection broke is sent again after the restart, as a sender retries. At the end,
every delivery has been accepted and is on disk exactly once. Figures go to
``.local/reliability/receiver_crash.json``.
"""

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from sync_pipelines.sensors import RunOutcome, evaluate
from sync_pipelines.webhooks.drop import (
    PROCESSED,
    QUARANTINE,
    SEEN,
    SOURCES,
    TMP_PREFIX,
    pending_files,
    read_event,
)
from sync_pipelines.webhooks.signing import sign

FIGURES_FILE = Path(__file__).resolve().parents[2] / ".local" / "reliability" / "receiver_crash.json"
SECRETS = {"school_a": "crash-secret-a-51c0", "school_b": "crash-secret-b-9d22"}
CLIENTS = 8


def ALL_SUCCEED(run_key: str) -> RunOutcome:
    """Every run the sensor asked for succeeded: this test is about the receiver, not the runs."""
    return RunOutcome(f"run-{run_key}", "SUCCESS")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Delivery:
    """One event a sender must get accepted."""

    event_id: str
    tenant: str
    source: str
    path: str
    body: bytes
    bearer: bool
    accepted: bool = False
    attempts: int = 0

    def headers(self) -> dict[str, str]:
        """Headers for a fresh attempt (a retry is signed anew, as a sender does)."""
        secret = SECRETS[self.tenant]
        if self.bearer:
            return {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}
        return {"Content-Type": "application/json", **sign(secret, self.body, int(time.time()))}


def make_delivery(n: int, rng: random.Random) -> Delivery:
    """Delivery ``n``: a Moodle grading event (signed) or a Zoho notification (signed or bearer)."""
    tenant = rng.choice(list(SECRETS))
    event_id = f"crash-{n:05d}"
    if rng.random() < 0.5:
        body = {
            "eventname": "\\core\\event\\user_graded",
            "event_id": event_id,
            "objectid": str(n),
            "courseid": str(10 + n % 7),
            "relateduserid": str(50 + n % 90),
            "userid": "2",
            "contextinstanceid": "12",
            "other": {"itemid": "341", "overridden": False, "finalgrade": f"{n % 100}.50000"},
            "timecreated": 1769337000 + n,
            "grade_item": {"id": 341, "itemtype": "mod", "grademax": "100.00000"},
        }
        return Delivery(
            event_id, tenant, "moodle", f"/v1/webhooks/moodle/{tenant}", json.dumps(body).encode(), False
        )
    body = {"event_id": event_id, "module": "BTEC_Students", "event_type": "updated", "record_id": str(n)}
    path = f"/v1/webhooks/zoho/{tenant}"
    return Delivery(event_id, tenant, "zoho", path, json.dumps(body).encode(), rng.random() < 0.5)


@dataclass
class World:
    """The drop root, the receiver's environment, and the deliveries so far."""

    base: Path
    root: Path
    env: dict[str, str]
    rng: random.Random
    deliveries: list[Delivery] = field(default_factory=list)
    retry: deque[Delivery] = field(default_factory=deque)
    cursors: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(SOURCES))
    process: subprocess.Popen | None = None
    figures: Counter[str] = field(default_factory=Counter)
    #: answers other than "202, this event id" (there must be none)
    unexpected: list[str] = field(default_factory=list)

    def start(self) -> int:
        """Start the receiver on a free port and wait until it answers; returns the port."""
        port = _free_port()
        log = (self.base / "receiver.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sync_pipelines.webhooks", "--host", "127.0.0.1", "--port", str(port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, (self.base / "receiver.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the receiver did not start"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/v1/health")
                ok = conn.getresponse().status == 200
                conn.close()
                if ok:
                    return port
            except OSError:
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the receiver (no clean-up of any kind) and reap it."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """Stop the receiver if it runs (fixture clean-up)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def next_delivery(self, *, new: bool = True) -> Delivery | None:
        """A delivery to send: a retry first, else a new one (``None`` when only retries are wanted
        and none is left)."""
        if self.retry:
            return self.retry.popleft()
        if not new:
            return None
        d = make_delivery(len(self.deliveries), self.rng)
        self.deliveries.append(d)
        return d


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """Two schools, a drop root, and a receiver that is always stopped in the end."""
    zoho = {
        "accounts_url": "http://127.0.0.1:9",
        "client_id_env": "A",
        "client_secret_env": "B",
        "refresh_token_env": "C",
    }
    tenants = [{"id": t, "zoho": zoho, "webhook_secret_env": f"CRASH_{t.upper()}"} for t in SECRETS]
    (tmp_path / "tenants.yaml").write_text(yaml.safe_dump({"tenants": tenants}))
    root = tmp_path / "drop"
    env = {
        **os.environ,
        "SYNC_TENANTS_FILE": str(tmp_path / "tenants.yaml"),
        "SYNC_DROP_DIR": str(root),
        **{f"CRASH_{t.upper()}": s for t, s in SECRETS.items()},
    }
    w = World(tmp_path, root, env, random.Random(2))
    try:
        yield w
    finally:
        w.stop()


def post_until_stopped(
    w: World, port: int, stop: threading.Event, lock: threading.Lock, *, new: bool = True
) -> None:
    """A sender: post deliveries one after another until told to stop (or, with ``new=False``, until
    no retry is left); a delivery whose connection broke (the receiver died) goes back to the retry
    queue."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        while not stop.is_set():
            with lock:
                d = w.next_delivery(new=new)
                if d is None:
                    return
                d.attempts += 1
            try:
                conn.request("POST", d.path, body=d.body, headers=d.headers())
                response = conn.getresponse()
                answer = json.loads(response.read())
            except (OSError, http.client.HTTPException, ValueError):
                with lock:
                    w.retry.append(d)
                conn.close()
                if stop.wait(0.02):
                    return
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            with lock:
                if response.status == 202 and answer.get("event_id") == d.event_id:
                    d.accepted = True
                else:
                    w.unexpected.append(f"{d.event_id}: {response.status} {answer}")
    finally:
        conn.close()


def stored(root: Path) -> Counter[str]:
    """How many drop files each event id has, pending or processed."""
    counts: Counter[str] = Counter()
    for source in SOURCES:
        for path in [*pending_files(root, source), *root.glob(f"*/{source}/{PROCESSED}/*.json")]:
            counts[read_event(path).event_id] += 1
    return counts


def check_after_kill(w: World) -> None:
    """What the sensors see after a kill: only whole files, none quarantined, no temporary file
    listed or moved; every accepted delivery stored exactly once."""
    assert w.unexpected == []
    temporaries = len([p for p in w.root.rglob(f"{TMP_PREFIX}*") if SEEN not in p.parts])
    interrupted = temporaries - w.figures["writes_interrupted"]
    w.figures["writes_interrupted"] += interrupted  # a temporary file is a write the kill cut short
    w.figures["kills_mid_write"] += interrupted > 0
    for source in SOURCES:
        for path in pending_files(w.root, source):
            assert not path.name.startswith(TMP_PREFIX)
            read_event(path)  # raises DropFileError on a partial or corrupt file
            w.figures["files_listed"] += 1
        w.cursors[source] = evaluate(source, w.root, w.cursors[source], SECRETS, ALL_SUCCEED).cursor
        w.figures["sensor_ticks"] += 1
    quarantined = list(w.root.glob(f"*/*/{QUARANTINE}/*"))
    moved_temporaries = [p for p in w.root.glob(f"*/*/{PROCESSED}/*") if p.name.startswith(TMP_PREFIX)]
    assert quarantined == [], quarantined
    assert moved_temporaries == [], moved_temporaries
    counts = stored(w.root)
    accepted = {d.event_id for d in w.deliveries if d.accepted}
    assert [e for e in accepted if counts[e] != 1] == [], "an accepted delivery is not on disk exactly once"
    assert [e for e, n in counts.items() if n > 1] == [], "an event is on disk twice"


def run_kills(w: World, kills: int, variant: str) -> None:
    """``kills`` rounds of: start, post from several clients, SIGKILL at a random moment, check."""
    started = time.monotonic()
    for _ in range(kills):
        port = w.start()
        stop, lock = threading.Event(), threading.Lock()
        clients = [
            threading.Thread(target=post_until_stopped, args=(w, port, stop, lock), daemon=True)
            for _ in range(CLIENTS)
        ]
        for c in clients:
            c.start()
        time.sleep(w.rng.uniform(0.25, 1.0))
        w.kill()
        stop.set()
        for c in clients:
            c.join(timeout=15)
        assert not any(c.is_alive() for c in clients), "a client hung"
        w.figures["kills"] += 1
        check_after_kill(w)

    # The senders' last retries (several at once: a retry may wait out a dead writer's claim),
    # then the sensors drain everything.
    port = w.start()
    w.retry = deque(d for d in w.deliveries if not d.accepted)
    stop, lock = threading.Event(), threading.Lock()
    clients = [
        threading.Thread(
            target=post_until_stopped, args=(w, port, stop, lock), kwargs={"new": False}, daemon=True
        )
        for _ in range(CLIENTS)
    ]
    for c in clients:
        c.start()
    for c in clients:
        c.join(timeout=120)
    stop.set()
    w.stop()
    assert [d.event_id for d in w.deliveries if not d.accepted] == [], "the retries did not get through"
    for _ in range(10):  # each tick settles the runs of the previous one
        for source in SOURCES:
            w.cursors[source] = evaluate(source, w.root, w.cursors[source], SECRETS, ALL_SUCCEED).cursor
        if not any(pending_files(w.root, s) for s in SOURCES):
            break
    counts = stored(w.root)
    lost = [d.event_id for d in w.deliveries if counts[d.event_id] == 0]
    doubled = [e for e, n in counts.items() if n > 1]
    leftovers = [p for p in w.root.rglob(f"{TMP_PREFIX}*") if SEEN not in p.parts]
    figures: dict[str, Any] = {
        **w.figures,
        "deliveries": len(w.deliveries),
        "posts": sum(d.attempts for d in w.deliveries),
        "sent_again_after_a_kill": sum(1 for d in w.deliveries if d.attempts > 1),
        "accepted": sum(d.accepted for d in w.deliveries),
        "files": sum(counts.values()),
        "processed": len(list(w.root.glob(f"*/*/{PROCESSED}/*.json"))),
        "pending_after_drain": sum(len(pending_files(w.root, s)) for s in SOURCES),
        "quarantined": len(list(w.root.glob(f"*/*/{QUARANTINE}/*"))),
        "temporary_files_never_listed": len(leftovers),
        "dead_writers_claims_taken_over": (w.base / "receiver.log").read_text().count("taking over"),
        "unexpected_answers": len(w.unexpected),
        "corrupt_files_listed": 0,
        "lost": len(lost),
        "written_twice": len(doubled),
        "seconds": round(time.monotonic() - started, 1),
    }
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    try:
        current = json.loads(FIGURES_FILE.read_text())
    except (OSError, ValueError):
        current = {}
    current[variant] = figures
    FIGURES_FILE.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert w.unexpected == []
    assert lost == [] and doubled == []
    assert figures["pending_after_drain"] == 0 and figures["quarantined"] == 0
    assert figures["processed"] == len(w.deliveries)


def test_a_receiver_killed_5_times_mid_write_loses_and_corrupts_nothing(world: World) -> None:
    """The quick variant, in the default suite."""
    run_kills(world, 5, "quick_5_kills")


@pytest.mark.reliability
def test_a_receiver_killed_25_times_mid_write_loses_and_corrupts_nothing(world: World) -> None:
    """The long variant (``make reliability``)."""
    run_kills(world, 25, "full_25_kills")
