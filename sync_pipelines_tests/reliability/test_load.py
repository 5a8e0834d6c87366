"""Load: a burst of signed deliveries, with exact redeliveries mixed in, against the real receiver.

The receiver runs as it does in production (``python -m sync_pipelines.webhooks``, a process of its
own, on a free loopback port). A load generator in this process (threads, one keep-alive
``http.client`` connection each) sends the burst as fast as the receiver answers; a delivery whose
connection fails is sent again, as a webhook sender would. Traffic goes to 127.0.0.1 only and the run
is bounded in count and in time.

Then: every distinct event id has exactly one drop file (none lost, none doubled), every redelivery
was answered ``202`` with ``"duplicate": true`` and written nowhere, and the sensors' listing holds
exactly the distinct events. Latency percentiles and throughput go to ``.local/reliability/load.json``.
"""

import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sync_pipelines.webhooks.drop import TMP_PREFIX, pending_files, read_event
from sync_pipelines.webhooks.signing import sign

FIGURES_FILE = Path(__file__).resolve().parents[2] / ".local" / "reliability" / "load.json"
SECRETS = {"school_a": "load-secret-a-7d1c", "school_b": "load-secret-b-3e9f"}
THREADS = 16
#: No run may take longer than this (the deliveries are signed when made; the window is 300 s).
TIME_BUDGET_SECONDS = 240.0


@dataclass(frozen=True)
class Delivery:
    """One request of the burst."""

    event_id: str
    tenant: str
    source: str
    path: str
    body: bytes
    headers: dict[str, str]
    redelivery: bool


@dataclass
class Outcome:
    """What one delivery got."""

    status: int
    duplicate: bool | None
    event_id: str | None
    seconds: float
    attempts: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ReceiverProcess:
    """The receiver, running as ``python -m sync_pipelines.webhooks``."""

    port: int
    root: Path
    process: subprocess.Popen


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverProcess]:
    """The receiver in a process of its own (tenants and drop root from the environment), stopped
    whatever happens."""
    zoho = {
        "accounts_url": "http://127.0.0.1:9",
        "client_id_env": "A",
        "client_secret_env": "B",
        "refresh_token_env": "C",
    }
    tenants = [{"id": t, "zoho": zoho, "webhook_secret_env": f"LOAD_{t.upper()}"} for t in SECRETS]
    (tmp_path / "tenants.yaml").write_text(yaml.safe_dump({"tenants": tenants}))
    root = tmp_path / "drop"
    env = {
        **os.environ,
        "SYNC_TENANTS_FILE": str(tmp_path / "tenants.yaml"),
        "SYNC_DROP_DIR": str(root),
        **{f"LOAD_{t.upper()}": s for t, s in SECRETS.items()},
    }
    port = _free_port()
    log = (tmp_path / "receiver.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "sync_pipelines.webhooks", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "receiver.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the receiver did not start"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/v1/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                time.sleep(0.05)
        yield ReceiverProcess(port, root, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def burst(total: int, seed: int = 6) -> list[Delivery]:
    """``total`` deliveries: about 90% distinct events (Moodle and Zoho, two schools, signed or by
    bearer) and 10% exact redeliveries of some of them (same bytes, same headers), shuffled."""
    rng = random.Random(seed)
    redeliveries = total // 10
    now = int(time.time())
    originals: list[Delivery] = []
    for i in range(total - redeliveries):
        tenant = rng.choice(list(SECRETS))
        secret = SECRETS[tenant]
        event_id = f"load-{i:05d}"
        if rng.random() < 0.6:
            body = {
                "eventname": "\\core\\event\\user_graded",
                "event_id": event_id,
                "objectid": str(1000 + i),
                "contextinstanceid": "12",
                "userid": "2",
                "courseid": str(10 + i % 40),
                "relateduserid": str(50 + i % 300),
                "other": {"itemid": "341", "overridden": False, "finalgrade": f"{rng.uniform(0, 100):.5f}"},
                "timecreated": now,
                "grade_item": {"id": 341, "itemtype": "mod", "itemmodule": "assign", "grademax": "100.00000"},
            }
            source, path = "moodle", f"/v1/webhooks/moodle/{tenant}"
        else:
            body = {
                "event_id": event_id,
                "module": rng.choice(["BTEC_Students", "BTEC_Grades", "BTEC_Enrollments"]),
                "event_type": rng.choice(["created", "updated", "deleted"]),
                "record_id": str(5843017000000000000 + i),
                "timestamp": str(now),
            }
            source, path = "zoho", f"/v1/webhooks/zoho/{tenant}"
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if source == "zoho" and rng.random() < 0.5:
            headers["Authorization"] = f"Bearer {secret}"
        else:
            headers.update(sign(secret, raw, now))
        originals.append(Delivery(event_id, tenant, source, path, raw, headers, redelivery=False))
    again = [Delivery(**{**d.__dict__, "redelivery": True}) for d in rng.sample(originals, redeliveries)]
    deliveries = originals + again
    rng.shuffle(deliveries)
    return deliveries


def generate_load(
    port: int, deliveries: list[Delivery], threads: int, deadline: float
) -> list[Outcome | None]:
    """Send every delivery from ``threads`` keep-alive connections; ``None`` for any not answered
    before ``deadline`` (monotonic). A failed connection is reopened and the delivery sent again (at
    most 5 times)."""
    outcomes: list[Outcome | None] = [None] * len(deliveries)
    cursor = iter(range(len(deliveries)))
    lock = threading.Lock()

    def worker() -> None:
        """Take the next delivery, send it (again on a fresh connection if this one fails), repeat."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while time.monotonic() < deadline:
                with lock:
                    i = next(cursor, None)
                if i is None:
                    return
                d = deliveries[i]
                for attempt in range(1, 6):
                    started = time.perf_counter()
                    try:
                        conn.request("POST", d.path, body=d.body, headers=d.headers)
                        response = conn.getresponse()
                        payload = response.read()
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                        continue
                    seconds = time.perf_counter() - started
                    answer = json.loads(payload) if payload.startswith(b"{") else {}
                    outcomes[i] = Outcome(
                        response.status, answer.get("duplicate"), answer.get("event_id"), seconds, attempt
                    )
                    break
        finally:
            conn.close()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=max(0.0, deadline - time.monotonic()) + 35)
    return outcomes


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def record(variant: str, figures: dict[str, Any]) -> None:
    """Merge one variant's figures into :data:`FIGURES_FILE`."""
    FIGURES_FILE.parent.mkdir(parents=True, exist_ok=True)
    try:
        current = json.loads(FIGURES_FILE.read_text())
    except (OSError, ValueError):
        current = {}
    current[variant] = figures
    FIGURES_FILE.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")


def run_burst(rx: ReceiverProcess, total: int, variant: str) -> None:
    """Send the burst and check it: nothing lost, nothing doubled, redeliveries collapsed."""
    deliveries = burst(total)
    started = time.monotonic()
    outcomes = generate_load(rx.port, deliveries, THREADS, started + TIME_BUDGET_SECONDS)
    wall = time.monotonic() - started
    assert rx.process.poll() is None, "the receiver died under load"

    answered = [o for o in outcomes if o is not None]
    latencies = [o.seconds * 1000 for o in answered]
    statuses = Counter(o.status for o in answered)
    distinct = {d.event_id: d for d in deliveries if not d.redelivery}
    files: dict[str, list[Path]] = {}
    for source in ("zoho", "moodle"):
        for path in pending_files(rx.root, source):
            event = read_event(path)
            files.setdefault(event.event_id, []).append(path)
            assert (event.tenant_id, event.source) == (distinct[event.event_id].tenant, source)
    lost = sorted(set(distinct) - set(files))
    doubled = sorted(e for e, paths in files.items() if len(paths) > 1)
    firsts = Counter(
        d.event_id for d, o in zip(deliveries, outcomes, strict=True) if o and o.duplicate is False
    )
    duplicates_answered = sum(1 for o in answered if o.duplicate is True)
    temporaries = [p for p in rx.root.rglob(f"{TMP_PREFIX}*")]
    figures = {
        "deliveries": len(deliveries),
        "distinct_events": len(distinct),
        "redeliveries": sum(d.redelivery for d in deliveries),
        "answered": len(answered),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "answered_duplicate": duplicates_answered,
        "resent_after_a_connection_error": sum(o.attempts - 1 for o in answered),
        "files": sum(len(p) for p in files.values()),
        "lost": len(lost),
        "written_twice": len(doubled),
        "temporary_files_left": len(temporaries),
        "threads": THREADS,
        "seconds": round(wall, 2),
        "throughput_per_second": round(len(answered) / wall, 1),
        "latency_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p95": round(percentile(latencies, 95), 2),
            "p99": round(percentile(latencies, 99), 2),
            "max": round(max(latencies), 2),
        },
    }
    record(variant, figures)
    assert len(answered) == len(deliveries), f"{len(deliveries) - len(answered)} not answered in time"
    assert statuses == {202: len(deliveries)}, statuses
    assert lost == [], f"{len(lost)} events lost, e.g. {lost[:5]}"
    assert doubled == [], f"{len(doubled)} events written twice, e.g. {doubled[:5]}"
    assert all(n == 1 for n in firsts.values()) and set(firsts) == set(distinct)
    assert duplicates_answered == figures["redeliveries"]
    assert temporaries == []
    assert len(pending_files(rx.root, "zoho")) + len(pending_files(rx.root, "moodle")) == len(distinct)


def test_a_burst_of_500_deliveries_loses_nothing_and_collapses_redeliveries(
    receiver: ReceiverProcess,
) -> None:
    """The quick variant, in the default suite."""
    run_burst(receiver, 500, "quick_500")


@pytest.mark.reliability
def test_a_burst_of_10000_deliveries_loses_nothing_and_collapses_redeliveries(
    receiver: ReceiverProcess,
) -> None:
    """The full burst (``make reliability``)."""
    run_burst(receiver, 10_000, "full_10000")
