"""A signed Moodle grading event, end to end: receiver → drop file → sensor → run → Zoho BTEC_Grades."""

import json
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml
from dagster._core.storage.tags import RUN_KEY_TAG

from sync_pipelines.definitions import build_definitions
from sync_pipelines.moodle.resource import MoodleResource
from sync_pipelines.sandbox import MoodleSimulator, ZohoSimulator, generate_school
from sync_pipelines.sensors import evaluate, instance_lookup
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.webhooks.app import create_app
from sync_pipelines.webhooks.signing import sign
from sync_pipelines.zoho.resource import ZohoCRMResource
from sync_pipelines_tests.event_world import running

TENANT = "school_a"
SECRET = "whsec-school-a-value"


@pytest.fixture
def receiver(school: tuple, tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """The webhook receiver, served on loopback: (base URL, tenants file, drop dir)."""
    tenants, drop = school[2], tmp_path / "drop"
    with running(create_app(tenants_file=tenants, drop_root=drop)) as base:
        yield base, tenants, drop


@pytest.fixture
def school(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ZohoSimulator, MoodleSimulator, Path]]:
    env = {
        "E_ID": "cid",
        "E_SECRET": "csecret",
        "E_REFRESH": "crefresh",
        "E_MOODLE": "mtoken",
        "E_HOOK": SECRET,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with (
        ZohoSimulator(data=generate_school(3, scale=0.1), clients={"cid": ("csecret", "crefresh")}) as zoho,
        MoodleSimulator(tokens={"mtoken": None}) as moodle,
    ):
        tenants = tmp_path / "tenants.yaml"
        tenant = {
            "id": TENANT,
            "zoho": {
                "accounts_url": zoho.accounts_url,
                "client_id_env": "E_ID",
                "client_secret_env": "E_SECRET",
                "refresh_token_env": "E_REFRESH",
            },
            "moodle": {"base_url": moodle.base_url, "token_env": "E_MOODLE"},
            "webhook_secret_env": "E_HOOK",
        }
        tenants.write_text(yaml.safe_dump({"tenants": [tenant]}))
        yield zoho, moodle, tenants


def test_a_signed_grading_event_ends_as_a_btec_grade_in_zoho(
    school: tuple, receiver: tuple[str, Path, Path], warehouse_url: str
):
    zoho, moodle, tenants = school
    base, _, drop = receiver
    resources = {
        "zoho": ZohoCRMResource(tenants_file=str(tenants)),
        "moodle": MoodleResource(tenants_file=str(tenants)),
        "warehouse": WarehouseResource(url=warehouse_url),
    }
    job = build_definitions(resources).resolve_job_def("full_sync")
    store = Warehouse(warehouse_url)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, [TENANT])
        first = job.execute_in_process(instance=instance, partition_key=TENANT)
        assert first.success
        # Only the orphan check may fail: the demo school's Zoho holds enrolments of students it
        # does not hold, and the warehouse mirrors them.
        failing = {e.check_name for e in first.get_asset_check_evaluations() if not e.passed}
        assert failing <= {"enrolments_point_at_live_students_and_classes"}, failing

        # a teacher marks an assignment in Moodle
        course = int(store.moodle.id_map(TENANT, "course")["moodle_id"].iloc[0])
        student = next(e["userid"] for e in moodle.enrolments(course) if e["roleid"] == 5)
        item = moodle.add_grade_item(course, "Assignment 2", grademax=80.0)
        moodle.set_grade(course, student, item, 60.0)  # 75 % → Distinction

        # the plugin posts the event, signed; a forger posts one too
        event = {
            "eventname": "\\core\\event\\user_graded",
            "component": "core",
            "action": "graded",
            "target": "user",
            "objecttable": "grade_grades",
            "objectid": "9001",
            "crud": "u",
            "edulevel": 0,
            "contextid": 55,
            "contextlevel": 50,
            "contextinstanceid": str(course),
            "userid": "2",
            "courseid": str(course),
            "relateduserid": str(student),
            "anonymous": 0,
            "other": {"itemid": str(item), "overridden": False, "finalgrade": "60.00000"},
            "timecreated": int(time.time()),
            "grade_item": {
                "id": item,
                "itemtype": "mod",
                "itemmodule": "assign",
                "grademax": "80.00000",
                "is_course_total": False,
            },
        }
        body = json.dumps(event).encode()
        client = requests.Session()
        url = f"{base}/v1/webhooks/moodle/{TENANT}"
        forged = client.post(
            url,
            data=body,
            headers={**sign("not-the-secret", body, int(time.time())), "content-type": "application/json"},
        )
        assert forged.status_code == 401
        assert not list(drop.rglob("*.json"))
        accepted = client.post(
            url,
            data=body,
            headers={**sign(SECRET, body, int(time.time())), "content-type": "application/json"},
        )
        assert accepted.status_code == 202, accepted.text
        again = client.post(
            url,
            data=body,
            headers={**sign(SECRET, body, int(time.time())), "content-type": "application/json"},
        )
        assert again.json()["duplicate"] is True

        # and something corrupt lands in the drop directory beside it
        corrupt = drop / TENANT / "moodle" / "20260101T000000000000Z-corrupt.json"
        corrupt.write_text('{"event_id": "x", "payl')

        lookup = instance_lookup(instance)
        tick = evaluate("moodle", drop, None, {TENANT}, lookup)
        (request,) = tick.requests
        assert (corrupt.parent / "quarantine" / corrupt.name).exists()
        assert (corrupt.parent / "quarantine" / f"{corrupt.name}.reason.txt").read_text()
        zoho.reset_log()
        run = job.execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            run_config=request.run_config,
            asset_selection=request.asset_selection,
            tags={RUN_KEY_TAG: request.run_key, **request.tags},
        )
        assert run.success
        ran = {e.asset_key.to_user_string() for e in run.get_asset_materialization_events()}
        assert ran == {"moodle/grades", "zoho/grade_writeback"}
        evaluate("moodle", drop, tick.cursor, {TENANT}, lookup)  # the run succeeded: the event is filed away

    key = f"{student}_{item}"
    written = [r for r in zoho.records("BTEC_Grades") if r.get("Moodle_Grade_Composite_Key") == key]
    assert [r["Grade"] for r in written] == ["D"]
    assert [r.path for r in zoho.requests if "/crm/" in r.path] == ["/crm/v8/BTEC_Grades/upsert"]
    assert not list((drop / TENANT / "moodle").glob("*.json"))
    assert list((drop / TENANT / "moodle" / "processed").glob("*.json"))
    store.dispose()
