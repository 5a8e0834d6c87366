"""One Zoho access token per tenant across processes: the shared file store, against the simulator.

Every test runs the real :class:`ZohoSimulator` over HTTP on loopback and real token files in a
temporary folder; nothing of ours is mocked. The cross-process tests start OS processes with
multiprocessing's ``spawn`` (nothing inherited but the arguments and the environment): each builds
its own client, or runs its own Dagster materialization, and reports through a queue.

The simulator keeps its default sliding throttle (5 refreshes a minute) and gets Zoho CRM's
documented one (10 in 10 minutes per refresh token) on top, so processes refreshing on their own
would be refused.
"""

import json
import logging
import multiprocessing as mp
import os
import queue
import stat
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from sync_pipelines.sandbox import ORG_TZ, RequestLog, ZohoSimulator, generate_school
from sync_pipelines.settings import LOCAL_DIR_ENV
from sync_pipelines.zoho.client import ZohoAuthError, ZohoClient, ZohoError, ZohoRateLimitError
from sync_pipelines.zoho.tokens import TOKEN_DIR_ENV, FileTokenStore, TokenRecord, credentials_digest

TENANT = "school_a"
CLIENT_ID = "1000.tokens-test-client"
SECRET = "cs-tokens-test-SECRET-value"
REFRESH = "1000.rt-tokens-test-SECRET-value"
#: Zoho CRM's documented token throttle: 10 access tokens per refresh token in 10 minutes.
ZOHO_TOKEN_LIMIT = (10, 600.0)
#: Seconds any one cross-process step may take before the test fails.
TIMEOUT = 60.0
SPAWN = mp.get_context("spawn")


# --- what the processes run -----------------------------------------------------------------------


def _client(accounts_url: str, token_dir: str | Path, **overrides: Any) -> ZohoClient:
    """A client of the test tenant with its own store on ``token_dir``: what another process has."""
    kwargs: dict[str, Any] = {
        "tenant_id": TENANT,
        "accounts_url": accounts_url,
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "refresh_token": REFRESH,
        "token_cache": FileTokenStore(token_dir),
    }
    return ZohoClient(**(kwargs | overrides))


def _call_org(
    accounts_url: str,
    token_dir: str,
    starts: list[Any],
    results: Any,
    overrides: dict[str, Any],
    ready: Any = None,
) -> None:
    """One process: one client, then one ``GET /org`` per start signal (a Barrier or an Event).

    ``ready``, a Barrier, is waited on once the client is built (spawning takes a while).
    """
    client = _client(accounts_url, token_dir, **overrides)
    if ready is not None:
        ready.wait(TIMEOUT)
    for start in starts:
        if start.wait(TIMEOUT) is False:  # an Event that never came; a Barrier raises instead
            results.put({"pid": os.getpid(), "error": "no start signal"})
            return
        report: dict[str, Any] = {"pid": os.getpid(), "error": None}
        try:
            report["org"] = client.get_org()["id"]
        except ZohoError as exc:
            report["error"] = str(exc)
        results.put(report | client.stats.as_metadata())


def _materialize_teachers(tenants_file: str, warehouse_url: str, start: Any, results: Any) -> None:
    """One process: one Dagster run of the ``zoho/teachers`` asset, through the real resources."""
    # Imported here, not at the top: the client-only processes need not pay for importing Dagster.
    import dagster as dg

    from sync_pipelines.tenants import tenant_partitions
    from sync_pipelines.warehouse.resource import WarehouseResource
    from sync_pipelines.zoho.assets import zoho_assets
    from sync_pipelines.zoho.resource import ZohoCRMResource

    (teachers,) = [a for a in zoho_assets if a.key == dg.AssetKey(["zoho", "teachers"])]
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, [TENANT])
        start.wait(TIMEOUT)
        result = dg.materialize(
            [teachers],
            instance=instance,
            partition_key=TENANT,
            resources={
                "zoho": ZohoCRMResource(tenants_file=tenants_file),
                "warehouse": WarehouseResource(url=warehouse_url),
            },
            raise_on_error=False,
        )
        failures = [e.step_failure_data.error.message for e in result.all_events if e.is_step_failure]
        metadata = {
            key: value.value
            for event in result.get_asset_materialization_events()
            for key, value in event.materialization.metadata.items()
            if key.startswith("api_calls")
        }
        results.put({"pid": os.getpid(), "success": result.success, "failures": failures, **metadata})


# --- fixtures and helpers -------------------------------------------------------------------------


class Processes:
    """OS processes started with spawn, each joined (or, if stuck, killed) when the test ends."""

    def __init__(self) -> None:
        self.started: list[SpawnProcess] = []

    def start(self, target: Callable[..., None], *args: Any) -> SpawnProcess:
        process = SPAWN.Process(target=target, args=args, daemon=True)
        process.start()
        self.started.append(process)
        return process

    def collect(self, results: Any, count: int) -> list[dict[str, Any]]:
        """``count`` reports from ``results``; fails at once if a process died without reporting."""
        reports: list[dict[str, Any]] = []
        deadline = time.monotonic() + TIMEOUT
        while len(reports) < count:
            try:
                reports.append(results.get(timeout=0.2))
                continue
            except queue.Empty:
                pass
            dead = [p.exitcode for p in self.started if p.exitcode not in (None, 0)]
            assert not dead, f"a process died with exit code {dead}"
            assert time.monotonic() < deadline, f"{len(reports)} of {count} reports came in"
        return reports

    def close(self) -> None:
        for process in self.started:
            process.join(timeout=TIMEOUT)
            if process.is_alive():
                process.kill()
                process.join()


@pytest.fixture
def processes() -> Iterator[Processes]:
    started = Processes()
    yield started
    started.close()


@pytest.fixture
def token_dir(tmp_path: Path) -> Path:
    return tmp_path / "zoho_tokens"


@pytest.fixture
def sim() -> Iterator[ZohoSimulator]:
    with ZohoSimulator(clients={CLIENT_ID: (SECRET, REFRESH)}, token_rate_limit=ZOHO_TOKEN_LIMIT) as s:
        yield s


def _token_requests(sim: ZohoSimulator) -> list[RequestLog]:
    return [r for r in sim.requests if r.path == "/oauth/v2/token"]


def _refresh_directly(sim: ZohoSimulator) -> requests.Response:
    """A refresh by someone else holding the same refresh token (another tool, another app)."""
    form = {
        "grant_type": "refresh_token",
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "refresh_token": REFRESH,
    }
    return requests.post(f"{sim.accounts_url}/oauth/v2/token", data=form, timeout=5)


def _record(store: FileTokenStore, sim: ZohoSimulator) -> TokenRecord:
    path = store.path(sim.accounts_url, CLIENT_ID, SECRET, REFRESH)
    return TokenRecord.from_json(json.loads(path.read_text())) if path.exists() else TokenRecord()


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


class FakeTime:
    """Wall clock and sleep for the client, and the same clock for the simulator: no real waiting."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, ORG_TZ)


# --- across processes -----------------------------------------------------------------------------


def test_processes_calling_at_once_make_one_refresh(
    sim: ZohoSimulator, token_dir: Path, processes: Processes
) -> None:
    count = 8
    barrier, results = SPAWN.Barrier(count), SPAWN.Queue()
    for _ in range(count):
        processes.start(_call_org, sim.accounts_url, str(token_dir), [barrier], results, {})
    reports = processes.collect(results, count)
    assert [r["error"] for r in reports] == [None] * count
    assert {r["org"] for r in reports} == {sim.org["id"]}
    assert len({r["pid"] for r in reports}) == count
    assert [r.status for r in _token_requests(sim)] == [200]
    assert sum(r["zoho_token_refreshes"] for r in reports) == 1
    assert sum(r.get("zoho_calls.token", 0) for r in reports) == 1


def test_dagster_runs_in_separate_processes_make_one_refresh(
    token_dir: Path, tmp_path: Path, processes: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = 3  # 8 took over 20 s on two busy cores; 3 show the same single refresh
    monkeypatch.setenv("TT_ZOHO_ID", CLIENT_ID)
    monkeypatch.setenv("TT_ZOHO_SECRET", SECRET)
    monkeypatch.setenv("TT_ZOHO_REFRESH", REFRESH)
    monkeypatch.setenv(TOKEN_DIR_ENV, str(token_dir))  # the resource's store, in every run process
    with ZohoSimulator(
        data=generate_school(7, scale=0.05),
        clients={CLIENT_ID: (SECRET, REFRESH)},
        token_rate_limit=ZOHO_TOKEN_LIMIT,
    ) as sim:
        tenants_file = tmp_path / "tenants.yaml"
        zoho = {
            "accounts_url": sim.accounts_url,
            "client_id_env": "TT_ZOHO_ID",
            "client_secret_env": "TT_ZOHO_SECRET",
            "refresh_token_env": "TT_ZOHO_REFRESH",
        }
        tenants_file.write_text(yaml.safe_dump({"tenants": [{"id": TENANT, "zoho": zoho}]}))
        barrier, results = SPAWN.Barrier(runs), SPAWN.Queue()
        started = time.monotonic()
        for n in range(runs):
            warehouse = f"sqlite:///{tmp_path / f'warehouse{n}.db'}"
            processes.start(_materialize_teachers, str(tenants_file), warehouse, barrier, results)
        reports = processes.collect(results, runs)
        elapsed = time.monotonic() - started
        digest = credentials_digest(sim.accounts_url, CLIENT_ID, SECRET, REFRESH)
    assert [(r["success"], r["failures"]) for r in reports] == [(True, [])] * runs
    assert elapsed < 60  # the runs all fall within one throttle minute
    assert [r.status for r in _token_requests(sim)] == [200]
    # every call the simulator answered is in some run's metadata: the refresh counted once
    assert sum(r["api_calls"] for r in reports) == len(sim.requests)
    assert [p.name for p in token_dir.iterdir() if p.suffix == ".json"] == [f"{digest}.json"]


def test_a_throttled_endpoint_is_left_alone_by_every_process_until_the_window_ends(
    token_dir: Path, processes: Processes
) -> None:
    window = 2.0
    with ZohoSimulator(
        clients={CLIENT_ID: (SECRET, REFRESH)}, refresh_limit_per_minute=None, token_rate_limit=(1, window)
    ) as sim:
        first, second, ready, results = SPAWN.Event(), SPAWN.Event(), SPAWN.Barrier(3), SPAWN.Queue()
        overrides = {"token_throttle_seconds": window, "token_wait_seconds": 30.0}
        for start in (first, second):
            processes.start(_call_org, sim.accounts_url, str(token_dir), [start], results, overrides, ready)
        ready.wait(TIMEOUT)
        assert "access_token" in _refresh_directly(sim).json()  # the window's only refresh, taken
        sim.reset_log()
        first.set()
        store = FileTokenStore(token_dir)
        _wait_for(lambda: _record(store, sim).throttled_until > 0)  # the refusal, recorded
        assert _record(store, sim).throttled_until > time.time()
        second.set()  # the second process starts inside the window
        reports = processes.collect(results, 2)
        assert _record(store, sim).throttled_until == 0.0
    assert [r["error"] for r in reports] == [None, None]
    tokens = _token_requests(sim)
    assert [r.status for r in tokens] == [400, 200]
    refused_at = tokens[0].time
    assert [r for r in tokens if r.time < refused_at + timedelta(seconds=window)] == tokens[:1]
    assert sum(r.get("zoho_calls.token", 0) for r in reports) == 2
    assert sum(r["zoho_token_refreshes"] for r in reports) == 1


def test_a_revoked_token_is_refreshed_once_for_every_process(
    sim: ZohoSimulator, token_dir: Path, processes: Processes
) -> None:
    count = 4
    barrier, again, results = SPAWN.Barrier(count), SPAWN.Event(), SPAWN.Queue()
    for _ in range(count):
        processes.start(_call_org, sim.accounts_url, str(token_dir), [barrier, again], results, {})
    before = processes.collect(results, count)
    assert [r["error"] for r in before] == [None] * count
    sim.expire_tokens()  # Zoho revoked the shared token: every process's next call gets 401
    sim.reset_log()
    again.set()
    after = processes.collect(results, count)
    assert [r["error"] for r in after] == [None] * count
    assert [r.status for r in _token_requests(sim)] == [200]
    assert sorted(r.status for r in sim.requests if r.path.endswith("/org")) == [200] * count + [401] * count
    refreshes = sum(r["zoho_token_refreshes"] for r in after) - sum(r["zoho_token_refreshes"] for r in before)
    assert refreshes == 1


# --- in one process, with a fake clock ------------------------------------------------------------


def test_a_throttle_past_the_wait_budget_raises_saying_when_and_asks_nothing(token_dir: Path) -> None:
    fake = FakeTime()
    with ZohoSimulator(
        clients={CLIENT_ID: (SECRET, REFRESH)},
        refresh_limit_per_minute=None,
        token_rate_limit=ZOHO_TOKEN_LIMIT,
        clock=fake.datetime,
    ) as sim:
        for _ in range(ZOHO_TOKEN_LIMIT[0]):  # ten refreshes elsewhere: the 10 minutes are used up
            assert "access_token" in _refresh_directly(sim).json()
        sim.reset_log()
        # Zoho's 600 s window, the default 120 s budget; each client has a store of its own, as
        # two processes would.
        first = _client(sim.accounts_url, token_dir, clock=fake, sleep=fake.sleep)
        with pytest.raises(ZohoRateLimitError) as refused:
            first.get_org()
        until = datetime.fromtimestamp(fake.now + 600, UTC).isoformat(timespec="seconds")
        assert (refused.value.status, refused.value.code) == (400, "Access Denied")
        assert refused.value.details == {"throttled_until": until, "retry_after_seconds": 600}
        assert until in str(refused.value)

        second = _client(sim.accounts_url, token_dir, clock=fake, sleep=fake.sleep)
        with pytest.raises(ZohoRateLimitError) as waiting:
            second.get_org()
        assert (waiting.value.status, waiting.value.code) == (None, "TOKEN_THROTTLED")
        assert until in str(waiting.value)
        assert fake.slept == []
        assert [r.status for r in _token_requests(sim)] == [400]  # the second process asked nothing

        fake.now += 540  # 60 s of the window left: within the budget, so it is waited out
        assert second.get_org()["id"] == sim.org["id"]
        assert fake.slept == [60.0]
        assert [r.status for r in _token_requests(sim)] == [400, 200]
        assert first.get_org()["id"] == sim.org["id"]  # reads the second one's token
        assert len(_token_requests(sim)) == 2


# --- the file -------------------------------------------------------------------------------------


def test_the_token_file_is_private_and_the_token_reaches_no_log_or_error(
    sim: ZohoSimulator, token_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = FileTokenStore(token_dir)
    client = _client(sim.accounts_url, token_dir, token_cache=store)
    client.get_org()
    path = store.path(sim.accounts_url, CLIENT_ID, SECRET, REFRESH)
    assert path.parent == token_dir.resolve()
    assert stat.S_IMODE(token_dir.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in token_dir.iterdir()} == {
        path.name: 0o600,
        path.with_suffix(".lock").name: 0o600,
    }
    saved = json.loads(path.read_text())
    assert set(saved) == {
        "access_token",
        "expires_at",
        "obtained_at",
        "api_domain",
        "scopes",
        "throttled_until",
    }
    assert saved["expires_at"] == pytest.approx(time.time() + 3600, abs=60)  # wall clock, Unix seconds
    assert saved["api_domain"] == sim.api_domain
    token = saved["access_token"]
    assert token

    errors: list[ZohoError] = []
    sim.expire_tokens()
    sim.clients[CLIENT_ID] = ("a-rotated-secret", REFRESH)  # and the refresh is refused
    with pytest.raises(ZohoAuthError) as refused:
        client.get_org()
    errors.append(refused.value)
    sim.clients[CLIENT_ID] = (SECRET, REFRESH)
    sim.token_rate_limit = (0, 600.0)  # and then throttled
    with pytest.raises(ZohoRateLimitError) as throttled:
        client.get_org()
    errors.append(throttled.value)

    texts = [caplog.text, repr(client), repr(store), repr(client._slot), repr(_record(store, sim))]
    texts += [t for e in errors for t in (str(e), repr(e), repr(e.args))]
    texts += [p.name for p in token_dir.iterdir()]
    for secret in (token, SECRET, REFRESH):
        assert all(secret not in text for text in texts), secret


def test_the_folder_comes_from_the_environment_and_an_open_one_is_refused(
    sim: ZohoSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_DIR_ENV, raising=False)
    monkeypatch.setenv(LOCAL_DIR_ENV, str(tmp_path / "local"))
    store = FileTokenStore()
    assert store.directory == (tmp_path / "local" / "zoho_tokens").resolve()
    monkeypatch.setenv(TOKEN_DIR_ENV, str(tmp_path / "mine"))
    assert store.directory == (tmp_path / "mine").resolve()  # read when a client is made
    _client(sim.accounts_url, tmp_path / "unused", token_cache=store).get_org()
    assert len(list((tmp_path / "mine").glob("*.json"))) == 1

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    with pytest.raises(PermissionError, match="mode 0700"):
        _client(sim.accounts_url, shared).get_org()
    assert list(shared.iterdir()) == []
    assert len(_token_requests(sim)) == 1
