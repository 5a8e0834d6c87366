"""Progress and plots: long reads and writes log at a steady pace; every materialization's numbers
are numeric metadata the UI can plot."""

import copy
import json
import logging
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from sync_pipelines.definitions import build_definitions
from sync_pipelines.metadata import PUSH_STATUSES, ZOHO_STATUSES, numeric, run_metadata
from sync_pipelines.moodle.assets import moodle_progress
from sync_pipelines.moodle.client import MoodleClient
from sync_pipelines.moodle.entities import ENTITIES
from sync_pipelines.moodle.grades import collect_grades
from sync_pipelines.moodle.reconcile import reconcile
from sync_pipelines.moodle.resource import MoodleResource
from sync_pipelines.progress import Progress, progress_seconds
from sync_pipelines.sandbox import MoodleSimulator, ZohoSimulator, generate_school
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.client import ZohoClient
from sync_pipelines.zoho.modules import MODULES, module
from sync_pipelines.zoho.resource import ZohoCRMResource
from sync_pipelines.zoho.sync import sync_module

TENANT = "school_a"
TOKEN = "moodle-progress-token"


class Lines:
    """A log that keeps what it is told (``info`` only, as a step's ``context.log`` is used)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str) -> None:
        self.lines.append(msg)


class Ticks:
    """A clock that moves one second every time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


# --- the helper -----------------------------------------------------------------------------------


def test_progress_logs_by_the_clock_not_per_page_and_once_at_the_end():
    log, clock = Lines(), Ticks()
    with Progress(log, "zoho/students (BTEC_Students) for school_a", every=10, clock=clock) as p:
        for _ in range(35):  # a page a second
            p.add("list", 200)
    # at 10, 20 and 30 seconds, then the end: never once per page
    assert len(log.lines) == 4
    assert log.lines[0] == (
        "zoho/students (BTEC_Students) for school_a: 10 pages, 2,000 records, 200.0 records/s, "
        "10 API calls, 10 s [list 10 pages 2,000 records]"
    )
    assert log.lines[-1].startswith(
        "zoho/students (BTEC_Students) for school_a: done, 35 pages, 7,000 records"
    )
    assert p.lines == log.lines


def test_a_short_read_logs_only_its_end_line_and_a_failure_says_so():
    log = Lines()
    with Progress(log, "zoho/programmes for a", every=10, clock=Ticks()) as p:
        p.add("list", 12)
    assert len(log.lines) == 1 and ": done, 1 pages, 12 records" in log.lines[0]

    failed = Lines()
    with (
        pytest.raises(RuntimeError),
        Progress(failed, "moodle/users for a", unit="requests", clock=Ticks()) as p,
    ):
        p.add("core_user_create_users", 50)
        raise RuntimeError("boom")
    assert failed.lines == [
        "moodle/users for a: failed, 1 requests, 50 records, 25.0 records/s, 1 API calls, 2 s "
        "[core_user_create_users 1 requests 50 records]"
    ]


def test_the_pace_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SYNC_PROGRESS_SECONDS", "2.5")
    assert progress_seconds() == 2.5 == Progress(Lines(), "x").every
    for bad in ("", "soon", "0", "-1"):
        monkeypatch.setenv("SYNC_PROGRESS_SECONDS", bad)
        assert progress_seconds() == 10.0


# --- Zoho: a first sync of many pages -------------------------------------------------------------


@cache
def _big_school() -> dict[str, list[dict]]:
    return generate_school(7, scale=1.0)  # 3,000 enrolments: 15 pages of 200


def _zoho(sim: ZohoSimulator) -> ZohoClient:
    return ZohoClient(
        tenant_id=TENANT,
        accounts_url=sim.accounts_url,
        client_id="c",
        client_secret="s",
        refresh_token="r",
        sleep=lambda _s: None,
    )


def test_a_first_sync_of_many_pages_logs_at_a_steady_pace(tmp_path: Path):
    store = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    with ZohoSimulator(data=copy.deepcopy(_big_school()), clients={"c": ("s", "r")}) as sim:
        client = _zoho(sim)
        log, clock = Lines(), Ticks()
        spec = module("enrolments")
        progress = Progress(
            log,
            f"zoho/{spec.name} ({spec.api_name}) for {TENANT}",
            every=4,
            clock=clock,
            calls=lambda: client.stats.calls,
        )
        report = sync_module(tenant_id=TENANT, spec=spec, client=client, warehouse=store, progress=progress)
    assert report.fetched == 3000
    pages = progress.by_kind["list"][0]
    assert pages == 15 and progress.by_kind["list"][1] == 3000
    # Lookup targets not in the warehouse yet are asked of Zoho by id: pages of their own.
    assert progress.by_kind["ids"][0] >= 1
    # One line per 4 seconds of the clock (a page a second) and one at the end: neither one a page
    # nor none.
    steady = log.lines[:-1]
    assert len(steady) == progress.pages // 4
    assert 2 <= len(steady) < pages
    for line in log.lines:
        assert line.startswith("zoho/enrolments (BTEC_Enrollments) for school_a: ")
        assert " pages, " in line and " records, " in line and " records/s, " in line and " API calls" in line
    assert log.lines[-1].startswith(
        f"zoho/enrolments (BTEC_Enrollments) for school_a: done, {progress.pages} pages, "
        f"{progress.records:,} records"
    )
    # every call is one page of the progress (the token request aside)
    assert progress.api_calls == report.api_calls
    store.dispose()


def test_without_a_progress_the_lines_go_to_the_module_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    store = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    data = {"Products": copy.deepcopy(_big_school()["Products"])}
    caplog.set_level(logging.INFO, logger="sync_pipelines.zoho.sync")
    with ZohoSimulator(data=data, clients={"c": ("s", "r")}) as sim:
        sync_module(tenant_id=TENANT, spec=module("programmes"), client=_zoho(sim), warehouse=store)
    assert any(
        r.getMessage().startswith("zoho/programmes (Products) for school_a: done, 1 pages, 12 records")
        for r in caplog.records
    )
    store.dispose()


# --- Moodle: batches and gradebooks ----------------------------------------------------------------


class _Context:
    """What :func:`moodle_progress` uses of a step's context."""

    def __init__(self) -> None:
        self.log = Lines()


def test_moodle_user_batches_and_gradebook_reads_log_progress(tmp_path: Path):
    store = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    school = generate_school(11, scale=0.1)
    with (
        ZohoSimulator(data=school, clients={"c": ("s", "r")}, refresh_limit_per_minute=None) as zs,
        MoodleSimulator(tokens={TOKEN: None}) as ms,
    ):
        zoho = _zoho(zs)
        for spec in MODULES:
            sync_module(tenant_id=TENANT, spec=spec, client=zoho, warehouse=store, deleted_check_minutes=0)
        # A small max_input_vars: the accounts go in many batches.
        client = MoodleClient(
            tenant_id=TENANT, base_url=ms.base_url, token=TOKEN, sleep=lambda _s: None, max_input_vars=120
        )
        users = next(e for e in ENTITIES if e.name == "users")
        ctx = _Context()
        with moodle_progress(ctx, client, f"moodle/users for {TENANT}", every=3, clock=Ticks()) as progress:
            report = reconcile(users, client, store, TENANT)
        created = sum(1 for p in report.pushes if p.action == "create" and p.ok)
        batches, records = progress.by_kind["core_user_create_users"]
        assert created > 20 and batches >= 4 and records == created
        lines = ctx.log.lines
        assert 1 <= len(lines) - 1 < progress.pages  # by the clock, not per request
        assert lines[-1].startswith(f"moodle/users for {TENANT}: done, {progress.pages} requests, ")
        assert f"core_user_create_users {batches} requests {created} records" in lines[-1]
        assert client.call.__func__ is MoodleClient.call  # the step's client is given back as it was

        for spec in ENTITIES:
            if spec.name != "users":
                reconcile(spec, client, store, TENANT)
        ctx = _Context()
        with moodle_progress(ctx, client, f"moodle/grades for {TENANT}", every=2, clock=Ticks()) as progress:
            collect_grades(client, store, TENANT)
        courses = len(store.moodle.id_map(TENANT, "course"))
        assert progress.by_kind["gradereport_user_get_grade_items"][0] == courses > 2
        assert len(ctx.log.lines) >= 2
        assert "gradereport_user_get_grade_items" in ctx.log.lines[-1]
    store.dispose()


# --- numeric metadata ------------------------------------------------------------------------------


def test_numeric_metadata_is_ints_and_floats_only():
    meta = run_metadata(
        counts={"NEW": 3, "INVALID": 1},
        statuses=ZOHO_STATUSES,
        row_count=4,
        api_calls=2,
        api_credits=2,
        duration_seconds=1.23456,
        lag_seconds=None,
        fetched=4,
    )
    assert meta["new"] == dg.MetadataValue.int(3) and meta["deleted"] == dg.MetadataValue.int(0)
    assert meta["duration_seconds"] == dg.MetadataValue.float(1.235)
    assert "lag_seconds" not in meta
    assert list(meta)[:1] == ["dagster/row_count"]
    for bad in ("3", True, {"a": 1}):
        with pytest.raises(TypeError):
            numeric({"x": bad})


@pytest.fixture
def sims(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[ZohoSimulator, MoodleSimulator]]:
    for name, value in {
        "P_ID": "cid",
        "P_SECRET": "csecret",
        "P_REFRESH": "crefresh",
        "P_MOODLE": TOKEN,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SYNC_LOCAL_DIR", str(tmp_path / "local"))
    with (
        ZohoSimulator(data=generate_school(5, scale=0.1), clients={"cid": ("csecret", "crefresh")}) as z,
        MoodleSimulator(tokens={TOKEN: None}) as m,
    ):
        yield z, m


def _defs(tmp_path: Path, zoho: ZohoSimulator, moodle: MoodleSimulator, url: str) -> dg.Definitions:
    tenants = tmp_path / "tenants.yaml"
    tenant = {
        "id": TENANT,
        "zoho": {
            "accounts_url": zoho.accounts_url,
            "client_id_env": "P_ID",
            "client_secret_env": "P_SECRET",
            "refresh_token_env": "P_REFRESH",
        },
        "moodle": {"base_url": moodle.base_url, "token_env": "P_MOODLE"},
    }
    tenants.write_text(yaml.safe_dump({"tenants": [tenant]}))
    return build_definitions(
        {
            "zoho": ZohoCRMResource(tenants_file=str(tenants)),
            "moodle": MoodleResource(tenants_file=str(tenants)),
            "warehouse": WarehouseResource(url=url),
        }
    )


NUMERIC = (dg.IntMetadataValue, dg.FloatMetadataValue)


def _is_int(meta: dict, key: str) -> int:
    assert isinstance(meta[key], dg.IntMetadataValue), f"{key}: {meta[key]!r}"
    return meta[key].value


def test_every_materialization_of_the_main_job_has_its_numbers_as_numeric_metadata(
    sims: tuple[ZohoSimulator, MoodleSimulator], warehouse_url: str, tmp_path: Path
):
    zoho, moodle = sims
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, [TENANT])
        job = _defs(tmp_path, zoho, moodle, warehouse_url).resolve_job_def("full_sync")
        result = job.execute_in_process(instance=instance, partition_key=TENANT)
        assert result.success
        mats = {
            e.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()
        }
        logs = [str(r.user_message) for r in instance.all_logs(result.run_id)]
    store = Warehouse(warehouse_url)
    runs = store.runs(TENANT).set_index("module")

    # Zoho: every status, the row count, API calls and credits, duration and lag, all numbers.
    for spec in MODULES:
        meta = mats[f"zoho/{spec.name}"]
        counts = json.loads(runs.at[spec.name, "counts"])
        for status in ZOHO_STATUSES:
            assert _is_int(meta, status) == counts[status.upper()]
        assert _is_int(meta, "dagster/row_count") == store.count(TENANT, spec)
        assert _is_int(meta, "new") + _is_int(meta, "invalid") == store.count(TENANT, spec)
        assert _is_int(meta, "api_credits") == runs.at[spec.name, "api_credits"]
        assert _is_int(meta, "api_calls") == runs.at[spec.name, "api_calls"] + _is_int(
            meta, "org_metadata_api_calls"
        )
        assert (
            isinstance(meta["duration_seconds"], dg.FloatMetadataValue) and meta["duration_seconds"].value > 0
        )
        assert isinstance(meta["lag_seconds"], dg.FloatMetadataValue)
        started = pd.Timestamp(runs.at[spec.name, "started_at"])
        started = started.tz_localize("UTC") if started.tzinfo is None else started
        if spec.has_modified_time:
            # from the newest Modified_Time the mirror holds to the read's start
            held = pd.to_datetime(store.read_table(TENANT, spec)["zoho_modified_time"], utc=True)
            expected = (started - held.max()).total_seconds()
            assert meta["lag_seconds"].value == pytest.approx(expected, abs=5)
        else:
            assert meta["lag_seconds"].value == 0.0  # a full read: nothing older than it
        assert isinstance(meta["watermark" if spec.has_modified_time else "max_id"], dg.MetadataValue)
        for key, value in meta.items():
            assert not isinstance(value, dg.TextMetadataValue) or key in {"mode", "max_id", "sync_run_id"}, (
                key
            )

    # Moodle: every push status, held objects, API calls, duration, lag.
    users = mats["moodle/users"]
    for status in PUSH_STATUSES:
        _is_int(users, status)
    assert _is_int(users, "new") == len([u for u in moodle.users() if u.get("idnumber")]) > 0
    assert _is_int(users, "dagster/row_count") == len(store.moodle.id_map(TENANT, "user"))
    assert _is_int(users, "failed") == 0 and _is_int(users, "api_calls") > 0
    assert isinstance(users["lag_seconds"], dg.FloatMetadataValue) and 0 <= users["lag_seconds"].value < 600
    enrolments = mats["moodle/enrolments"]
    assert _is_int(enrolments, "new") == _is_int(enrolments, "create_ok")
    assert _is_int(enrolments, "dagster/row_count") == len(store.moodle.enrolments(TENANT))
    assert _is_int(mats["moodle/grades"], "dagster/row_count") == len(store.moodle.grades(TENANT))
    for key in ("grade_distinction", "grade_merit", "grade_pass", "grade_refer"):
        _is_int(mats["moodle/grades"], key)
    _is_int(mats["moodle/drift"], "unhealed")
    _is_int(mats["moodle/rubrics"], "assessments")

    # Write-back: the same keys, and its Zoho credits.
    bookkeeping = mats["zoho/sync_bookkeeping"]
    for status in PUSH_STATUSES:
        _is_int(bookkeeping, status)
    written = store.moodle.push_results(TENANT, "students").query("action == 'update'")
    assert _is_int(bookkeeping, "updated") >= len(written) > 0
    assert _is_int(bookkeeping, "api_credits") > 0
    assert isinstance(bookkeeping["duration_seconds"], dg.FloatMetadataValue)

    # Each materialization's counts are numbers, never text or JSON.
    for key, meta in mats.items():
        for name in ("dagster/row_count", "api_calls", "new", "updated", "unchanged", "skipped"):
            if name in meta:
                assert isinstance(meta[name], NUMERIC), (key, name)
    # The progress lines reached the run's log, through the step's context.
    assert any(m.startswith("zoho/students (BTEC_Students) for school_a: done, ") for m in logs)
    assert any(m.startswith("moodle/users for school_a: done, ") for m in logs)
    assert any(m.startswith("zoho/sync_bookkeeping for school_a: done, ") for m in logs)
    # The daily report has nothing to say yet: the school's first sync is today.
    assert "reports/daily_changes" not in mats
    store.dispose()
