"""Bulk Read for full reads of big modules: the job's life against the simulator, over real HTTP,
and what a user relies on: the same canonical rows and the same diff as a paged read, bulk only
above the tenant's threshold and only for full reads, and a paged read whenever Bulk Read cannot
be used (no scope, a failed or stuck job), never a module left unread."""

import copy
import logging
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from typing import Any

import pandas as pd
import pytest
import yaml

from sync_pipelines.diff import Status
from sync_pipelines.sandbox import ZohoSimulator, generate_school, zoho_sim
from sync_pipelines.tenants import TenantConfigError, parse_tenants
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.zoho import bulk
from sync_pipelines.zoho import client as client_module
from sync_pipelines.zoho.bulk import BULK_READ_THRESHOLD, json_shape, paged_full, read_full
from sync_pipelines.zoho.canonical import canonicalise, frame_from_records
from sync_pipelines.zoho.client import (
    BULK_READ_JOB_CREDITS,
    ZohoAuthError,
    ZohoClient,
    ZohoError,
    ZohoRateLimitError,
)
from sync_pipelines.zoho.modules import GRADES, MODULES, PROGRAMMES, STUDENTS, FieldSpec, ModuleSpec
from sync_pipelines.zoho.resource import ZohoCRMResource
from sync_pipelines.zoho.sync import sync_module

TENANT = "school_a"
CLIENT = ("test-client", "test-secret", "test-refresh")
BULK_ENDPOINTS = ("bulk_create", "bulk_status", "bulk_download")


@cache
def _school() -> dict[str, list[dict]]:
    return generate_school(2026, scale=0.2)


@pytest.fixture
def make_sim() -> Iterator[Any]:
    started: list[ZohoSimulator] = []

    def make(**kwargs: Any) -> ZohoSimulator:
        sim = ZohoSimulator(
            data=copy.deepcopy(_school()),
            clients={CLIENT[0]: (CLIENT[1], CLIENT[2])},
            refresh_limit_per_minute=None,
            **kwargs,
        )
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim: Any) -> ZohoSimulator:
    return make_sim()


def _client(sim: ZohoSimulator, threshold: int | None = 0, **kwargs: Any) -> ZohoClient:
    return ZohoClient(
        tenant_id=TENANT,
        accounts_url=sim.accounts_url,
        client_id=CLIENT[0],
        client_secret=CLIENT[1],
        refresh_token=CLIENT[2],
        sleep=lambda _s: None,
        bulk_read_threshold=threshold,
        **kwargs,
    )


def _page_size(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """Jobs of ``size`` records instead of 200,000, on both sides."""
    monkeypatch.setattr(zoho_sim, "BULK_READ_PAGE_SIZE", size)
    monkeypatch.setattr(client_module, "BULK_READ_PAGE_SIZE", size)


def _canonical(spec: ModuleSpec, records: list[dict]) -> pd.DataFrame:
    frame = canonicalise(spec, frame_from_records(spec, records))
    return frame.sort_values("zoho_id").reset_index(drop=True)


def _bulk_calls(sim: ZohoSimulator) -> list[str]:
    return [r.path for r in sim.requests if r.path.startswith("/crm/bulk/")]


def _list_calls(sim: ZohoSimulator, spec: ModuleSpec) -> int:
    return sum(1 for r in sim.requests if r.path.endswith(f"/{spec.api_name}") and r.method == "GET")


# --- the job's life -------------------------------------------------------------------------------


def test_a_job_is_added_then_in_progress_then_completed_and_its_zip_holds_every_record(sim: ZohoSimulator):
    client = _client(sim)
    job = client.create_bulk_read(STUDENTS.api_name, bulk.bulk_fields(STUDENTS))
    assert job["state"] == "ADDED" and job["operation"] == "read"

    assert client.bulk_read_job(job["id"])["state"] == "IN PROGRESS"  # first poll
    done = client.wait_bulk_read(job["id"])  # the next poll completes it
    result = done["result"]
    live = sim.records(STUDENTS.api_name)
    assert done["state"] == "COMPLETED"
    assert result["count"] == len(live) and result["more_records"] is False and result["per_page"] == 200_000

    rows = list(client.download_bulk_read(job["id"], result["download_url"]))
    assert [r["id"] for r in rows] == [r["id"] for r in live]  # every record, in id order
    assert set(rows[0]) == {"id", *bulk.bulk_fields(STUDENTS)}  # the header: id and the fields asked
    # The calls and what they cost, counted alike by the client and the simulator.
    assert [client.stats.by_endpoint[e] for e in BULK_ENDPOINTS] == [1, 2, 1]
    assert client.stats.credits == BULK_READ_JOB_CREDITS + 2 + 1 == sim.credits_used()


def test_more_records_than_a_page_come_in_one_job_per_page_each_record_once(
    make_sim: Any, monkeypatch: pytest.MonkeyPatch
):
    _page_size(monkeypatch, 40)  # 100 students: pages of 40, 40, 20
    sim = make_sim()
    client = _client(sim)
    rows = list(client.iter_bulk_read(STUDENTS.api_name, bulk.bulk_fields(STUDENTS)))

    def pages() -> list[int]:
        return [r.body["query"]["page"] for r in sim.requests if r.method == "POST" and "/bulk/" in r.path]

    assert pages() == [1, 2, 3]  # without a count: on while more_records
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in sim.records(STUDENTS.api_name))
    assert len({r["id"] for r in rows}) == len(rows) == 100
    assert client.stats.by_endpoint["bulk_download"] == 3

    sim.reset_log()
    rows = list(client.iter_bulk_read(STUDENTS.api_name, ["Name"], records=100))
    assert pages() == [3, 2, 1]  # with the count: last page first
    assert len({r["id"] for r in rows}) == len(rows) == 100

    sim.reset_log()
    rows = list(client.iter_bulk_read(STUDENTS.api_name, ["Name"], records=70))  # 30 created since
    assert pages() == [2, 1, 3]  # and the pages past the count after the others
    assert len({r["id"] for r in rows}) == 100


def test_a_failed_job_is_a_clear_error_naming_the_job(sim: ZohoSimulator):
    sim.fail_bulk_reads(1)
    client = _client(sim)
    job = client.create_bulk_read(STUDENTS.api_name, ["Name"])
    with pytest.raises(ZohoError) as caught:
        client.wait_bulk_read(job["id"])
    assert caught.value.code == "BULK_READ_FAILED"
    assert (
        job["id"] in str(caught.value)
        and "BTEC_Students" in str(caught.value)
        and TENANT in str(caught.value)
    )


def test_a_job_that_never_finishes_times_out_after_the_configured_wait(make_sim: Any):
    sim = make_sim(bulk_job_polls=1000)
    waits: list[float] = []
    client = ZohoClient(
        tenant_id=TENANT,
        accounts_url=sim.accounts_url,
        client_id=CLIENT[0],
        client_secret=CLIENT[1],
        refresh_token=CLIENT[2],
        sleep=waits.append,
        bulk_poll_seconds=2.0,
        bulk_timeout_seconds=60.0,
    )
    job = client.create_bulk_read(STUDENTS.api_name, ["Name"])
    with pytest.raises(ZohoError) as caught:
        client.wait_bulk_read(job["id"])
    assert caught.value.code == "BULK_READ_TIMEOUT"
    assert waits[:3] == [2.0, 3.0, 4.5]  # a growing interval
    assert 60.0 <= sum(waits) < 60.0 * 1.5 + 2.0  # gave up once the wait passed the timeout


def test_the_result_of_a_job_not_yet_completed_is_not_found(sim: ZohoSimulator):
    client = _client(sim)
    job = client.create_bulk_read(STUDENTS.api_name, ["Name"])
    with pytest.raises(ZohoError) as caught:
        list(client.download_bulk_read(job["id"]))
    assert (caught.value.status, caught.value.code) == (404, "RESOURCE_NOT_FOUND")


def test_downloads_past_ten_a_minute_are_throttled(make_sim: Any):
    sim = make_sim(clock=lambda: datetime(2026, 11, 2, 9, 0, tzinfo=zoho_sim.ORG_TZ))
    client = _client(sim, max_retries=0)
    job = client.wait_bulk_read(client.create_bulk_read(PROGRAMMES.api_name, ["Product_Name"])["id"])
    for _ in range(10):
        assert len(list(client.download_bulk_read(job["id"]))) == len(sim.records(PROGRAMMES.api_name))
    with pytest.raises(ZohoRateLimitError):
        list(client.download_bulk_read(job["id"]))


def test_a_download_url_on_another_host_is_not_followed(sim: ZohoSimulator):
    client = _client(sim)
    job = client.wait_bulk_read(client.create_bulk_read(PROGRAMMES.api_name, ["Product_Name"])["id"])
    rows = list(client.download_bulk_read(job["id"], "https://elsewhere.example/steal"))
    assert len(rows) == len(sim.records(PROGRAMMES.api_name))
    assert all(r.path.startswith("/crm/") or r.path.startswith("/oauth/") for r in sim.requests)


def test_the_simulator_refuses_bulk_read_without_its_scope(make_sim: Any):
    sim = make_sim(enforce_scopes=True, scopes=("ZohoCRM.modules.ALL", "ZohoCRM.settings.ALL"))
    with pytest.raises(ZohoAuthError) as caught:
        _client(sim).create_bulk_read(STUDENTS.api_name, ["Name"])
    assert caught.value.code == "OAUTH_SCOPE_MISMATCH"


# --- the same records as a paged read ---------------------------------------------------------------


@pytest.mark.parametrize("spec", MODULES, ids=lambda s: s.name)
def test_a_module_read_both_ways_canonicalises_to_identical_frames(sim: ZohoSimulator, spec: ModuleSpec):
    """The demo school's dirty records included: bad e-mails, picklist values outside the list,
    lookups to records that do not exist, impossible dates, booleans, numbers, formulas."""
    by_bulk = list(read_full(_client(sim, threshold=0), spec))
    by_pages = list(paged_full(_client(sim, threshold=None), spec))
    assert len(by_bulk) == len(by_pages) == len(sim.records(spec.api_name))
    pd.testing.assert_frame_equal(_canonical(spec, by_bulk), _canonical(spec, by_pages))


def test_csv_text_becomes_the_json_values_of_a_list_read():
    meta = {
        "id": {"api_name": "id"},
        "Flag": {"data_type": "boolean"},
        "Count": {"data_type": "integer"},
        "Amount": {"data_type": "currency"},
        "Target": {"data_type": "lookup"},
        "Owner": {"data_type": "ownerlookup"},
        "Tags": {"data_type": "multiselectpicklist"},
        "Total": {"data_type": "formula"},
        "Label": {"data_type": "formula", "formula": {"return_type": "string"}},
        "Note": {"data_type": "text"},
    }
    spec = ModuleSpec(
        api_name="X",
        name="x",
        label="x",
        fields=tuple(FieldSpec(api_name=n, column=n.lower(), kind="text") for n in meta if n != "id"),
        org_fields=meta,
    )
    shape = json_shape(spec)
    row = {
        "id": "1",
        "Flag": "TRUE",
        "Count": "-7",
        "Amount": "1e3",
        "Target": "58430",
        "Owner": "",
        "Tags": "a;b",
        "Total": "4375.5",
        "Label": "12",
        "Note": "",
    }
    assert shape(row) == {
        "id": "1",
        "Flag": True,
        "Count": -7,
        "Amount": 1000.0,
        "Target": {"id": "58430"},
        "Owner": None,
        "Tags": ["a", "b"],
        "Total": 4375.5,
        "Label": "12",
        "Note": None,
    }
    # What is not the type's text stays text, for the canonicaliser to report as JSON's would be.
    odd = shape({**row, "Flag": "yes", "Count": "2.5", "Amount": "nan", "Total": "n/a"})
    assert (odd["Flag"], odd["Count"], odd["Amount"], odd["Total"]) == ("yes", "2.5", "nan", "n/a")


def test_a_full_sync_by_bulk_stores_what_a_paged_one_stores_and_rereads_as_unchanged(
    make_sim: Any, warehouse: Warehouse, tmp_path: Any
):
    sim = make_sim()
    paged_store = Warehouse(f"sqlite:///{tmp_path / 'paged.db'}")
    spec = GRADES
    by_bulk = sync_module(tenant_id=TENANT, spec=spec, client=_client(sim, threshold=0), warehouse=warehouse)
    by_pages = sync_module(
        tenant_id=TENANT, spec=spec, client=_client(sim, threshold=None), warehouse=paged_store
    )
    assert by_bulk.counts == by_pages.counts and by_bulk.counts[Status.NEW] > 0

    def table(store: Warehouse) -> pd.DataFrame:
        # The fingerprints hash every canonical column (the business ones and the rest apart).
        frame = store.read_table(TENANT, spec)[["zoho_id", "fingerprint", "aux_fingerprint", "findings"]]
        frame = frame.assign(
            modified=pd.to_datetime(store.read_table(TENANT, spec)["zoho_modified_time"], utc=True)
        )
        return frame.sort_values("zoho_id").reset_index(drop=True)

    pd.testing.assert_frame_equal(table(warehouse), table(paged_store))
    # The warehouse filled by pages, read again in full by Bulk Read: nothing changed.
    again = sync_module(
        tenant_id=TENANT,
        spec=spec,
        client=_client(sim, threshold=0),
        warehouse=paged_store,
        full_refresh=True,
    )
    assert again.counts.get(Status.UNCHANGED, 0) > 0
    changed = {
        k: again.counts.get(k, 0) for k in (Status.NEW, Status.UPDATED, Status.REFRESHED, Status.DELETED)
    }
    assert changed == dict.fromkeys(changed, 0)
    paged_store.engine.dispose()


# --- when Bulk Read is used ------------------------------------------------------------------------


def test_bulk_read_only_above_the_threshold(sim: ZohoSimulator):
    n = len(sim.records(STUDENTS.api_name))
    at = _client(sim, threshold=n)
    assert len(list(read_full(at, STUDENTS))) == n
    assert "bulk_create" not in at.stats.by_endpoint and at.stats.by_endpoint["count"] == 1

    above = _client(sim, threshold=n - 1)
    assert len(list(read_full(above, STUDENTS))) == n
    assert above.stats.by_endpoint["bulk_create"] == 1 and "list" not in above.stats.by_endpoint

    never = _client(sim, threshold=None)
    assert len(list(read_full(never, STUDENTS))) == n
    assert "count" not in never.stats.by_endpoint and "bulk_create" not in never.stats.by_endpoint


def test_incremental_reads_stay_paged_above_the_threshold(sim: ZohoSimulator, warehouse: Warehouse):
    client = _client(sim, threshold=0)
    first = sync_module(tenant_id=TENANT, spec=STUDENTS, client=client, warehouse=warehouse)
    assert first.mode == "full" and client.stats.by_endpoint["bulk_create"] == 1
    sid = sim.records(STUDENTS.api_name)[0]["id"]
    sim.update(STUDENTS.api_name, sid, City="Elsewhere")
    sim.reset_log()
    second = sync_module(tenant_id=TENANT, spec=STUDENTS, client=client, warehouse=warehouse)
    assert second.mode == "incremental" and second.counts[Status.UPDATED] == 1
    assert _bulk_calls(sim) == [] and _list_calls(sim, STUDENTS) >= 1


def test_the_tenant_sets_the_threshold_and_the_resource_hands_it_to_the_client(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
):
    zoho = {
        "data_centre": "eu",
        "client_id_env": "A_ID",
        "client_secret_env": "A_S",
        "refresh_token_env": "A_R",
    }
    doc = {
        "tenants": [
            {"id": "a", "zoho": zoho},
            {"id": "b", "zoho": {**zoho, "bulk_read_threshold": 500}},
            {"id": "c", "zoho": {**zoho, "bulk_read_threshold": None}},
        ]
    }
    parsed = parse_tenants(doc)
    assert [parsed[t].zoho.bulk_read_threshold for t in "abc"] == [BULK_READ_THRESHOLD, 500, None]
    for bad in (-1, "many", True):
        with pytest.raises(TenantConfigError, match="bulk_read_threshold"):
            parse_tenants({"tenants": [{"id": "d", "zoho": {**zoho, "bulk_read_threshold": bad}}]})
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(doc))
    for name in ("A_ID", "A_S", "A_R"):
        monkeypatch.setenv(name, f"value-of-{name}")
    resource = ZohoCRMResource(tenants_file=str(path))
    assert [resource.client(t).bulk_read_threshold for t in "abc"] == [BULK_READ_THRESHOLD, 500, None]


# --- when it cannot be used: pages, never nothing ------------------------------------------------


def test_without_the_scope_a_big_module_is_read_by_pages_with_a_warning(
    make_sim: Any, caplog: pytest.LogCaptureFixture
):
    sim = make_sim(enforce_scopes=True, scopes=("ZohoCRM.modules.ALL", "ZohoCRM.settings.ALL"))
    with caplog.at_level(logging.WARNING, logger="sync_pipelines.zoho.bulk"):
        records = list(read_full(_client(sim, threshold=0), STUDENTS))
    assert len(records) == len(sim.records(STUDENTS.api_name))
    assert _bulk_calls(sim) == []  # not even tried: the grant says it would be refused
    assert any("ZohoCRM.bulk.READ" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_a_refused_job_of_a_grant_that_named_no_scopes_falls_back_to_pages(
    make_sim: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    sim = make_sim(enforce_scopes=True, scopes=("ZohoCRM.modules.ALL", "ZohoCRM.settings.ALL"))
    monkeypatch.setattr(
        ZohoClient, "granted_scopes", property(lambda self: ())
    )  # a token answer without scope
    with caplog.at_level(logging.WARNING, logger="sync_pipelines.zoho.bulk"):
        records = list(read_full(_client(sim, threshold=0), STUDENTS))
    assert len(records) == len(sim.records(STUDENTS.api_name))
    assert [r.status for r in sim.requests if r.path.startswith("/crm/bulk/")] == [401]
    assert any("OAUTH_SCOPE_MISMATCH" in r.getMessage() for r in caplog.records)


def test_a_failed_job_is_logged_and_the_module_is_still_read_in_full_by_pages(
    sim: ZohoSimulator, warehouse: Warehouse, caplog: pytest.LogCaptureFixture
):
    sim.fail_bulk_reads(1)
    with caplog.at_level(logging.WARNING, logger="sync_pipelines.zoho.bulk"):
        report = sync_module(
            tenant_id=TENANT, spec=STUDENTS, client=_client(sim, threshold=0), warehouse=warehouse
        )
    live = {r["id"] for r in sim.records(STUDENTS.api_name)}
    assert report.fetched == len(live)  # every student read, none skipped
    assert set(warehouse.read_table(TENANT, STUDENTS)["zoho_id"]) == live
    assert _list_calls(sim, STUDENTS) >= 1
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "BULK_READ_FAILED" in warning and "by pages" in warning


def test_a_second_job_failing_keeps_what_the_first_read_and_reads_the_rest_by_pages(
    make_sim: Any, monkeypatch: pytest.MonkeyPatch
):
    _page_size(monkeypatch, 60)  # 100 students: page 2 (40) is read first, then page 1 fails
    sim = make_sim()
    client = _client(sim, threshold=0)
    real_create = client.create_bulk_read

    def create(module: str, fields: Any = (), *, page: int = 1, callback_url: str | None = None) -> dict:
        if page == 1:
            sim.fail_bulk_reads(1)
        return real_create(module, fields, page=page, callback_url=callback_url)

    client.create_bulk_read = create  # type: ignore[method-assign]
    records = list(read_full(client, STUDENTS))
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == len(sim.records(STUDENTS.api_name))  # each once, none missing
    assert client.stats.by_endpoint["bulk_download"] == 1 and client.stats.by_endpoint["list"] >= 1


def test_a_record_deleted_between_two_jobs_leaves_no_live_record_out_of_the_warehouse(
    make_sim: Any, monkeypatch: pytest.MonkeyPatch, warehouse: Warehouse
):
    """Zoho's pages are positional: a deletion between two jobs shifts the next page by one, so
    one live record falls between them. The full read's missing records are confirmed by id."""
    _page_size(monkeypatch, 40)
    sim = make_sim()
    client = _client(sim, threshold=0)
    first_page_id = sim.records(STUDENTS.api_name)[0]["id"]
    real_create = client.create_bulk_read

    def create(module: str, fields: Any = (), *, page: int = 1, callback_url: str | None = None) -> dict:
        if page == 2:
            sim.delete(STUDENTS.api_name, first_page_id)
        return real_create(module, fields, page=page, callback_url=callback_url)

    client.create_bulk_read = create  # type: ignore[method-assign]
    sync_module(tenant_id=TENANT, spec=STUDENTS, client=client, warehouse=warehouse)
    stored = set(warehouse.read_table(TENANT, STUDENTS)["zoho_id"])
    live = {r["id"] for r in sim.records(STUDENTS.api_name)}
    assert live <= stored  # the shifted record was found by id
