"""The production topology, as separate OS processes on one machine (``make topology``).

What a deployment runs (DEPLOY.md), each in a process group of its own:

* the Zoho and Moodle simulators holding the demo school (``python -m sync_pipelines.sandbox``),
  standing in for a school's Zoho CRM and Moodle;
* ``dagster-daemon run`` and ``dagster-webserver``, both on ``DAGSTER_HOME`` holding the production
  instance file ``deploy/dagster.postgres.yaml`` (QueuedRunCoordinator, one run per school);
* the webhook receiver (``python -m sync_pipelines.webhooks``), writing drop files the daemon's
  sensors read.

Dagster's storage and the warehouse (``WAREHOUSE_URL``) are two fresh databases of the PostgreSQL
server at 127.0.0.1 (``TEST_POSTGRES_URL``), dropped afterwards. The demo tenant's credentials are
exported as ``scripts/dev.sh`` does, but nobody adds its partition: the ``tenants_sensor`` does.
``SYNC_INCREMENTAL_CRON`` is every minute, so ``incremental_sync`` (RUNNING by default in code:
nothing starts it) ticks at the next minute: a ``full_sync`` of the school. A few seconds before
that tick, a signed Zoho webhook reaches the receiver; the ``zoho_webhook_sensor`` turns its drop
file into a second, small run (one payment re-read by id, the one asset ``zoho/payments``) for the
same school. Both runs must have been queued by the QueuedRunCoordinator (``RUN_ENQUEUED``, then
launched by the daemon) and succeed, never side by side: the one asked for while the other was in
progress waits in the queue (the usual case; the timings printed say which waited). The webserver
must answer ``/server_info`` and GraphQL about them.

Slow (up to a minute of waiting for the cron, then the demo school's first full sync: 1.5 to 2.5
minutes in all), so ``make test`` deselects it (marker ``topology``); ``make topology`` runs it. ``SYNC_TOPOLOGY_SCALE``
(default 1, the demo school as ``make demo`` has it) makes the school smaller or larger.
On failure the daemon's log (with the runs' own output) and the ends of the others are printed.
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import pytest
import requests
import sqlalchemy as sa
import yaml
from dagster._core.events import DagsterEventType

from sync_pipelines.sandbox import DEMO_MOODLE_TOKEN, DEMO_SEED, demo_credentials, generate_school
from sync_pipelines.webhooks.signing import sign
from sync_pipelines_tests.conftest import postgres_database

#: Deselected by default (pyproject's addopts): `make topology` runs it, and CI does.
pytestmark = [pytest.mark.topology, pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INSTANCE_YAML = ROOT / "deploy" / "dagster.postgres.yaml"
TENANT = "demo_school"
SCALE = float(os.environ.get("SYNC_TOPOLOGY_SCALE", "1"))
ZOHO_WEBHOOK_SECRET = "topology-zoho-webhook-secret"
MOODLE_WEBHOOK_SECRET = "topology-moodle-webhook-secret"
MAX_CONCURRENT_RUNS = 4
#: How long before the schedule's tick the webhook is sent.
WEBHOOK_LEAD_S = 3.0
#: The webhook's record: a payment, whose event runs the one asset zoho/payments.
WEBHOOK_MODULE = "BTEC_Payments"

SCHEDULE = "incremental_sync"
WEBHOOK_SENSOR = "zoho_webhook_sensor"
#: Daemons the topology needs, as GraphQL names them.
NEEDED_DAEMONS = {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"}

START_TIMEOUT_S = 90.0
#: The cron ticks within a minute; one more minute in case the first tick found no partition yet.
TICK_TIMEOUT_S = 150.0
RUN_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 20.0

INSTANCE_QUERY = """
{ instance { runQueuingSupported runLauncher { name }
    runQueueConfig { maxConcurrentRuns tagConcurrencyLimitsYaml }
    daemonHealth { allDaemonStatuses { daemonType required healthy } } } }
"""
REPOSITORIES_QUERY = (
    "{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name location { name } } }"
    " ... on PythonError { message } } }"
)
SCHEDULE_QUERY = """
query ($sel: ScheduleSelector!) { scheduleOrError(scheduleSelector: $sel) { __typename
    ... on Schedule { name cronSchedule scheduleState { status } }
    ... on PythonError { message } } }
"""
RUNS_QUERY = """
query ($runIds: [String!]) { runsOrError(filter: {runIds: $runIds}) { __typename
    ... on Runs { results { runId status jobName tags { key value } } }
    ... on PythonError { message } } }
"""

T = TypeVar("T")


# --- processes ------------------------------------------------------------------------------------


@dataclass
class Process:
    """One OS process of the topology, leading a process group of its own, its output in ``log``."""

    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self, tail: int | None = None) -> str:
        try:
            lines = self.log.read_text("utf-8", errors="replace").splitlines()
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(lines[-tail:] if tail else lines)

    def stop(self) -> None:
        """TERM to the whole group (the daemon's and the webserver's code servers and run workers
        are in it), then KILL to whatever is left of it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        # The leader may be gone while children of its group are not.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=STOP_TIMEOUT_S)


@dataclass
class Topology:
    """The processes, their environment and the URLs they answer on."""

    workdir: Path
    env: dict[str, str]
    ports: dict[str, int]
    processes: list[Process] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)

    def url(self, name: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[name]}{path}"

    def start(self, name: str, *argv: str) -> Process:
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            popen = subprocess.Popen(
                list(argv),
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a process group of its own: stopped as a whole
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def process(self, name: str) -> Process:
        return next(p for p in self.processes if p.name == name)

    def check_alive(self) -> None:
        for process in self.processes:
            if not process.alive():
                raise AssertionError(
                    f"{process.name} exited with {process.popen.returncode}:\n{process.output(tail=80)}"
                )

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.5) -> T:
        """Poll ``probe`` until it returns something other than None (or False); every process must
        stay up meanwhile."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            self.check_alive()
            try:
                value = probe()
                if value is not None and value is not False:
                    self.mark(what)
                    return value
            except (requests.RequestException, OSError, KeyError, TypeError, ValueError) as exc:
                last_error = exc
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})"
                )
            time.sleep(every)

    def mark(self, what: str) -> None:
        self.timings[what] = time.monotonic() - self.started_at

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            self.url("webserver", "/graphql"), json={"query": query, "variables": variables or {}}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def stop_all(self) -> None:
        # The webserver and the receiver first (nothing new comes in), the daemon (and the runs it
        # started) next, the simulators last.
        order = {"webserver": 0, "receiver": 1, "daemon": 2, "simulators": 3}
        for process in sorted(self.processes, key=lambda p: order.get(p.name, 9)):
            process.stop()

    def report(self, *, failed: bool) -> None:
        """What happened: the timings; on failure, the daemon's whole log and the ends of the others."""
        print(
            "topology timings (s; a step: since the start):",
            json.dumps({k: round(v, 1) for k, v in self.timings.items()}),
        )
        if self.facts:
            print("topology facts:", json.dumps(self.facts))
        if not failed:
            return
        for process in self.processes:
            whole = process.name == "daemon"
            title = "log" if whole else "last 80 lines"
            print(f"\n===== {process.name} ({title}, exit {process.popen.returncode}) =====")
            print(process.output(tail=None if whole else 80))


@contextlib.contextmanager
def running(topology: Topology) -> Iterator[Topology]:
    """Stop every process on the way out, whatever happened; print the logs when it failed."""
    failed = True
    try:
        yield topology
        failed = False
    finally:
        topology.stop_all()
        topology.report(failed=failed)


# --- the pieces -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tenants_file(path: Path, zoho_port: int, moodle_port: int) -> dict[str, str]:
    """The project's demo tenant, as tenants.yaml has it, pointed at this test's simulator ports;
    its webhook secrets set. Returns the variables its ``*_env`` keys name, with values (as
    scripts/dev.sh exports them)."""
    document = yaml.safe_load((ROOT / "tenants.yaml").read_text("utf-8"))
    demo = next(t for t in document["tenants"] if t["id"] == TENANT)
    demo["zoho"]["accounts_url"] = demo["zoho"]["api_domain"] = f"http://127.0.0.1:{zoho_port}"
    demo["moodle"]["base_url"] = f"http://127.0.0.1:{moodle_port}"
    path.write_text(yaml.safe_dump({"tenants": [demo]}, sort_keys=False), "utf-8")
    creds = demo_credentials()
    return {
        demo["zoho"]["client_id_env"]: creds.client_id,
        demo["zoho"]["client_secret_env"]: creds.client_secret,
        demo["zoho"]["refresh_token_env"]: creds.refresh_token,
        demo["zoho"]["webhook_secret_env"]: ZOHO_WEBHOOK_SECRET,
        demo["moodle"]["token_env"]: DEMO_MOODLE_TOKEN,
        demo["moodle"]["webhook_secret_env"]: MOODLE_WEBHOOK_SECRET,
    }


def _environment(
    workdir: Path, dagster_url: str, warehouse_url: str, tenant_env: dict[str, str]
) -> dict[str, str]:
    """What every process of a deployment is given (DEPLOY.md lists it), nothing inherited that
    could point elsewhere (the Makefile's DAGSTER_HOME, a developer's SYNC_* or DEMO_*)."""
    inherited = {
        k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SYNC_", "DEMO_", "WAREHOUSE_"))
    }
    url = sa.make_url(dagster_url)
    home = workdir / "dagster_home"
    home.mkdir()
    shutil.copyfile(INSTANCE_YAML, home / "dagster.yaml")
    return {
        **inherited,
        **tenant_env,
        "PYTHONUNBUFFERED": "1",
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_USER": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "",
        "DAGSTER_PG_DB": str(url.database),
        "DAGSTER_COMPUTE_LOG_DIR": str(workdir / "compute_logs"),
        "DAGSTER_MAX_CONCURRENT_RUNS": str(MAX_CONCURRENT_RUNS),
        "WAREHOUSE_URL": warehouse_url,
        "SYNC_TENANTS_FILE": str(workdir / "tenants.yaml"),
        "SYNC_DROP_DIR": str(workdir / "drop"),
        "SYNC_LOCAL_DIR": str(workdir / "local"),
        "SYNC_TOKEN_DIR": str(workdir / "zoho_tokens"),
        "SYNC_INCREMENTAL_CRON": "* * * * *",
    }


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    """Two fresh databases, Dagster's and the warehouse's, dropped afterwards."""
    dagster_db = postgres_database()
    warehouse_db = postgres_database()
    try:
        yield next(dagster_db), next(warehouse_db)
    finally:
        for generator in (warehouse_db, dagster_db):
            with contextlib.suppress(StopIteration):
                next(generator)


@pytest.fixture
def instance_env(
    databases: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The deployment's environment; this process gets it too, to open the instance itself."""
    ports = {"zoho": _free_port(), "moodle": _free_port()}
    tenant_env = _tenants_file(tmp_path / "tenants.yaml", ports["zoho"], ports["moodle"])
    env = _environment(tmp_path, *databases, tenant_env)
    for key, value in env.items():
        if key.startswith(("DAGSTER_", "SYNC_", "WAREHOUSE_")) or key in tenant_env:
            monkeypatch.setenv(key, value)
    env["_TOPOLOGY_ZOHO_PORT"], env["_TOPOLOGY_MOODLE_PORT"] = str(ports["zoho"]), str(ports["moodle"])
    return env


def _run_events(instance: dg.DagsterInstance, run_id: str) -> dict[DagsterEventType, float]:
    """The first timestamp of each run-level event of a run."""
    first: dict[DagsterEventType, float] = {}
    for entry in instance.all_logs(run_id):
        if entry.dagster_event is not None:
            first.setdefault(entry.dagster_event.event_type, entry.timestamp)
    return first


def _find_run(instance: dg.DagsterInstance, tag: str, value: str) -> dg.DagsterRun | None:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={tag: value}))
    return runs[-1] if runs else None  # the oldest


def _finished(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    run = instance.get_run_by_id(run_id)
    return run if run is not None and run.is_finished else None


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _health(topology: Topology, name: str, path: str) -> bool:
    response = requests.get(topology.url(name, path), timeout=5)
    return response.status_code == 200


def _daemons_healthy(topology: Topology) -> dict[str, Any] | None:
    instance = topology.graphql(INSTANCE_QUERY)["instance"]
    statuses = {s["daemonType"]: s for s in instance["daemonHealth"]["allDaemonStatuses"]}
    return instance if all(statuses.get(d, {}).get("healthy") for d in NEEDED_DAEMONS) else None


# --- the test -------------------------------------------------------------------------------------


def _storage_facts(databases: tuple[str, str], run_ids: list[str]) -> dict[str, Any]:
    dagster_url, warehouse_url = databases
    facts: dict[str, Any] = {}
    for label, url in (("dagster", dagster_url), ("warehouse", warehouse_url)):
        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                facts[f"{label} database MB"] = round(
                    conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one() / 2**20,
                    1,
                )
                if label == "dagster":
                    for run_id in run_ids:
                        rows, size = conn.execute(
                            sa.text("SELECT count(*), sum(length(event)) FROM event_logs WHERE run_id = :id"),
                            {"id": run_id},
                        ).one()
                        facts[f"event_logs of run {run_id[:8]}"] = (
                            f"{rows} rows, {round((size or 0) / 2**10)} KiB"
                        )
        finally:
            engine.dispose()
    return facts


def test_schedule_and_webhook_runs_go_through_the_queue_one_at_a_time_per_school(
    instance_env: dict[str, str], databases: tuple[str, str], tmp_path: Path
) -> None:
    env = dict(instance_env)
    ports = {
        "zoho": int(env.pop("_TOPOLOGY_ZOHO_PORT")),
        "moodle": int(env.pop("_TOPOLOGY_MOODLE_PORT")),
        "receiver": _free_port(),
        "webserver": _free_port(),
    }
    topology = Topology(tmp_path, env, ports)
    python = str(BIN / "python")
    payment_id = generate_school(DEMO_SEED, scale=SCALE)[WEBHOOK_MODULE][0]["id"]

    with running(topology), dg.DagsterInstance.get() as instance:
        topology.start(
            "simulators",
            python, "-m", "sync_pipelines.sandbox",
            "--port", str(ports["zoho"]), "--moodle-port", str(ports["moodle"]), "--scale", str(SCALE),
        )  # fmt: skip
        topology.start("receiver", python, "-m", "sync_pipelines.webhooks", "--port", str(ports["receiver"]))
        topology.start("daemon", str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml")
        topology.start(
            "webserver",
            str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(ports["webserver"]),
        )  # fmt: skip

        # Everything answers.
        topology.wait(
            "receiver healthy", lambda: _health(topology, "receiver", "/v1/health"), START_TIMEOUT_S
        )
        topology.wait(
            "simulators up",
            lambda: _listening(ports["zoho"]) and _listening(ports["moodle"]),
            START_TIMEOUT_S,
        )
        server_info = topology.wait(
            "webserver /server_info",
            lambda: requests.get(topology.url("webserver", "/server_info"), timeout=5).json(),
            START_TIMEOUT_S,
        )
        assert server_info["dagster_version"] == dg.__version__
        assert server_info["dagster_webserver_version"] == dg.__version__

        # The webserver reads the production instance: runs queued, one per school.
        status = topology.wait(
            "daemons healthy", lambda: _daemons_healthy(topology), START_TIMEOUT_S, every=2
        )
        assert status["runQueuingSupported"] is True
        assert status["runLauncher"]["name"] == "DefaultRunLauncher"
        assert status["runQueueConfig"]["maxConcurrentRuns"] == MAX_CONCURRENT_RUNS
        limits = yaml.safe_load(status["runQueueConfig"]["tagConcurrencyLimitsYaml"])
        assert limits == [
            {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)

        # The schedule is running as the code declares it (default_status=RUNNING), every minute here.
        repositories = topology.graphql(REPOSITORIES_QUERY)["repositoriesOrError"]
        assert repositories["__typename"] == "RepositoryConnection", repositories
        (repository,) = repositories["nodes"]
        selector = {
            "repositoryLocationName": repository["location"]["name"],
            "repositoryName": repository["name"],
            "scheduleName": SCHEDULE,
        }
        schedule = topology.graphql(SCHEDULE_QUERY, {"sel": selector})["scheduleOrError"]
        assert schedule["__typename"] == "Schedule", schedule
        assert schedule["cronSchedule"] == "* * * * *"
        assert schedule["scheduleState"]["status"] == "RUNNING"

        # The tenants sensor adds the school's partition (nobody else does); the cron ticks at the
        # next minute.
        topology.wait(
            "tenants sensor added the partition",
            lambda: TENANT in instance.get_dynamic_partitions("tenants"),
            START_TIMEOUT_S,
            every=1,
        )

        # A signed Zoho webhook for one payment, WEBHOOK_LEAD_S before the tick: the sensor makes
        # its run up to ~20 s later (it ticks every 15 s), so the two runs of the school are
        # nearly always asked for while the other is in progress, and one has to wait its turn.
        tick_at = (time.time() // 60 + 1) * 60
        topology.wait("a moment before the tick", lambda: time.time() >= tick_at - WEBHOOK_LEAD_S, 61.0)
        body = json.dumps(
            {"module": WEBHOOK_MODULE, "event_type": "updated", "record_id": payment_id}
        ).encode()
        response = requests.post(
            topology.url("receiver", f"/v1/webhooks/zoho/{TENANT}"),
            data=body,
            headers={"Content-Type": "application/json", **sign(ZOHO_WEBHOOK_SECRET, body, int(time.time()))},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "accepted" and not response.json()["duplicate"]
        (drop_file,) = (tmp_path / "drop" / TENANT / "zoho").glob("*.json")
        assert json.loads(drop_file.read_text("utf-8"))["payload"]["record_ids"] == [payment_id]
        topology.mark("webhook accepted")

        scheduled = topology.wait(
            "schedule tick made a run",
            lambda: _find_run(instance, "dagster/schedule_name", SCHEDULE),
            TICK_TIMEOUT_S,
            every=1,
        )
        webhook = topology.wait(
            "webhook sensor made a run",
            lambda: _find_run(instance, "dagster/sensor_name", WEBHOOK_SENSOR),
            RUN_TIMEOUT_S,
            every=1,
        )
        assert scheduled.job_name == "full_sync"
        assert webhook.tags["sync/trigger"] == "zoho-webhook"
        assert webhook.asset_selection == {dg.AssetKey(["zoho", "payments"])}

        # Both succeed.
        for label, run in (("scheduled", scheduled), ("webhook", webhook)):
            done = topology.wait(
                f"{label} run finished", lambda run=run: _finished(instance, run.run_id), RUN_TIMEOUT_S
            )
            assert done.status == dg.DagsterRunStatus.SUCCESS, f"{label} run {run.run_id}: {done.status}"
            assert done.tags["dagster/partition"] == TENANT

        # Both went through the queue: enqueued by the QueuedRunCoordinator (the default coordinator
        # starts a run at once, with no RUN_ENQUEUED), then launched by the daemon (RUN_STARTING).
        order = [
            DagsterEventType.RUN_ENQUEUED,
            DagsterEventType.RUN_STARTING,
            DagsterEventType.RUN_START,
            DagsterEventType.RUN_SUCCESS,
        ]
        events = {
            label: _run_events(instance, run.run_id)
            for label, run in (("scheduled", scheduled), ("webhook", webhook))
        }
        for label, seen in events.items():
            assert all(e in seen for e in order), f"{label} run: {sorted(e.value for e in seen)}"
            times = [seen[e] for e in order]
            assert times == sorted(times), f"{label} run: events out of order: {seen}"
            topology.timings[f"{label} run, launch to end"] = (
                seen[DagsterEventType.RUN_SUCCESS] - seen[DagsterEventType.RUN_STARTING]
            )

        # One run per school at a time: the one launched second was launched only after the other
        # had ended; when it was asked for while the other was in progress, it waited in the queue.
        (first_label, first), (second_label, second) = sorted(
            events.items(), key=lambda item: item[1][DagsterEventType.RUN_STARTING]
        )
        ended, launched = first[DagsterEventType.RUN_SUCCESS], second[DagsterEventType.RUN_STARTING]
        assert launched >= ended, (
            f"the {second_label} run was launched {ended - launched:.1f} s before the {first_label} run ended"
        )
        held = second[DagsterEventType.RUN_ENQUEUED] < ended
        topology.timings[
            f"{second_label} run, queued behind the {first_label} run" if held else "no run held"
        ] = launched - second[DagsterEventType.RUN_ENQUEUED]

        # The webserver says the same, from the same database.
        runs = topology.graphql(RUNS_QUERY, {"runIds": [scheduled.run_id, webhook.run_id]})["runsOrError"]
        assert runs["__typename"] == "Runs", runs
        assert {r["runId"]: r["status"] for r in runs["results"]} == {
            scheduled.run_id: "SUCCESS",
            webhook.run_id: "SUCCESS",
        }
        assert {r["runId"]: r["jobName"] for r in runs["results"]}[scheduled.run_id] == "full_sync"

        # The steps' output went to the compute log folder of the instance file.
        assert any((tmp_path / "compute_logs").rglob("*")), "no compute logs written"

        # For sizing PostgreSQL (DEPLOY.md): what the two runs left in Dagster's database and the
        # warehouse's.
        topology.facts.update(_storage_facts(databases, [scheduled.run_id, webhook.run_id]))
