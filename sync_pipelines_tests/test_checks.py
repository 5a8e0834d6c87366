"""Asset checks: they pass where the data holds and fail, as warnings, where their rule breaks."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sync_pipelines.checks import count_matches
from sync_pipelines.definitions import build_definitions
from sync_pipelines.moodle.resource import MoodleResource
from sync_pipelines.sandbox import MoodleSimulator, ZohoSimulator, generate_school
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.modules import module
from sync_pipelines.zoho.resource import ZohoCRMResource

TENANT = "school_a"


@pytest.fixture
def defs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dg.Definitions, ZohoSimulator, MoodleSimulator]]:
    for name, value in {"C_ID": "cid", "C_SECRET": "cs", "C_REFRESH": "cr", "C_MOODLE": "mt"}.items():
        monkeypatch.setenv(name, value)
    with (
        ZohoSimulator(data=generate_school(9, scale=0.1), clients={"cid": ("cs", "cr")}) as zoho,
        MoodleSimulator(tokens={"mt": None}) as moodle,
    ):
        tenants = tmp_path / "tenants.yaml"
        zoho_conf = {
            "accounts_url": zoho.accounts_url,
            "client_id_env": "C_ID",
            "client_secret_env": "C_SECRET",
            "refresh_token_env": "C_REFRESH",
        }
        tenants.write_text(
            yaml.safe_dump(
                {
                    "tenants": [
                        {
                            "id": TENANT,
                            "zoho": zoho_conf,
                            "moodle": {"base_url": moodle.base_url, "token_env": "C_MOODLE"},
                        }
                    ]
                }
            )
        )
        resources = {
            "zoho": ZohoCRMResource(tenants_file=str(tenants)),
            "moodle": MoodleResource(tenants_file=str(tenants)),
            "warehouse": WarehouseResource(url=f"sqlite:///{tmp_path / 'w.db'}"),
        }
        yield build_definitions(resources), zoho, moodle


def _zoho_orphans(zoho: ZohoSimulator) -> list[str]:
    """Zoho's own enrolments whose student or class Zoho does not hold (read from the simulator)."""
    students = {r["id"] for r in zoho.records("BTEC_Students")}
    classes = {r["id"] for r in zoho.records("BTEC_Classes")}
    return [
        e["id"]
        for e in zoho.records("BTEC_Enrollments")
        if (e.get("Enrolled_Students") or {}).get("id") not in students
        or (e.get("Classes") or {}).get("id") not in classes
    ]


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {f"{e.asset_key.to_user_string()}:{e.check_name}": e for e in result.get_asset_check_evaluations()}


def test_checks_pass_after_a_clean_sync_and_flag_what_breaks(
    defs: tuple[dg.Definitions, ZohoSimulator, MoodleSimulator],
):
    definitions, zoho, _ = defs
    sync = definitions.resolve_job_def("full_sync")
    reconcile = definitions.resolve_job_def("reconcile")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, [TENANT])
        first = sync.execute_in_process(instance=instance, partition_key=TENANT)
        checks = _checks(first)
        assert "zoho/enrolments:enrolments_point_at_live_students_and_classes" in checks
        assert not any(k.endswith("warehouse_matches_zoho") for k in checks)  # not in the 15-minute job
        # The demo school's Zoho holds enrolments whose student or class it does not hold: the
        # warehouse mirrors them, and the orphan check names exactly those. Nothing else fails.
        orphans = _zoho_orphans(zoho)
        assert orphans
        orphan_check = "zoho/enrolments:enrolments_point_at_live_students_and_classes"
        assert [k for k, e in checks.items() if not e.passed] == [orphan_check]
        assert checks[orphan_check].metadata["orphans"].value == len(orphans)
        nightly = _checks(reconcile.execute_in_process(instance=instance, partition_key=TENANT))
        counted = {k: e for k, e in nightly.items() if k.endswith("warehouse_matches_zoho")}
        assert len(counted) == 9 and all(e.passed for e in counted.values())
        assert nightly["moodle/users:moodle_role_sees_what_it_needs"].passed
        assert [k for k, e in nightly.items() if not e.passed] == [orphan_check]
        before = len(orphans)

        # a student is deleted in Zoho while their enrolments stay; a record appears unsynced
        enrolment = zoho.records("BTEC_Enrollments")[0]
        zoho.delete("BTEC_Students", enrolment["Enrolled_Students"]["id"])
        zoho.insert("BTEC_Teachers", {"Name": "New Teacher", "Academic_Email": "new.teacher@school.example"})
        second = sync.execute_in_process(
            instance=instance,
            partition_key=TENANT,
            asset_selection=[dg.AssetKey(["zoho", "students"]), dg.AssetKey(["zoho", "enrolments"])],
            # The /deleted check is hourly by default; this run makes it at once.
            run_config={"ops": {"zoho__students": {"config": {"deleted_check_minutes": 0}}}},
        )
        orphan = _checks(second)["zoho/enrolments:enrolments_point_at_live_students_and_classes"]
        assert not orphan.passed and orphan.severity == dg.AssetCheckSeverity.WARN
        assert orphan.metadata["orphans"].value == len(_zoho_orphans(zoho)) > before
        assert zoho_count_matches_after_an_unsynced_insert(definitions, zoho)


def zoho_count_matches_after_an_unsynced_insert(definitions: dg.Definitions, zoho: ZohoSimulator) -> bool:
    """The count check's rule, on the teacher inserted above and never synced."""
    store = definitions.resources["warehouse"].get()
    held = store.accounted_for(TENANT, module("teachers"))
    client = definitions.resources["zoho"].client(TENANT)
    result = count_matches(client.count("BTEC_Teachers"), held)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["zoho_count"].value == held["live"] + held["pending"] + 1
    return True


def test_the_drift_checks_warn_on_what_only_moodle_holds_and_fail_on_what_was_not_restored(
    defs: tuple[dg.Definitions, ZohoSimulator, MoodleSimulator],
):
    definitions, _, moodle = defs
    sync = definitions.resolve_job_def("full_sync")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, [TENANT])
        assert sync.execute_in_process(instance=instance, partition_key=TENANT).success
        client = definitions.resources["moodle"].client(TENANT)
        assert client.create_courses([{"fullname": "Staff room", "shortname": "STAFF", "categoryid": 1}])[
            0
        ].ok
        store = definitions.resources["warehouse"].get()
        held = store.moodle.enrolments(TENANT)
        user, course = int(held["moodle_user_id"].iloc[0]), int(held["moodle_course_id"].iloc[0])
        assert client.unenrol([{"userid": user, "courseid": course}])[0].ok
        moodle.fail_function(
            "enrol_manual_enrol_users", "invalidparameter", "Invalid parameter value detected", count=50
        )
        # Drift is looked for by the nightly reconciliation, which reads Moodle in full (a scheduled
        # run reads it by change only).
        nightly = definitions.resolve_job_def("reconcile")
        checks = _checks(
            nightly.execute_in_process(instance=instance, partition_key=TENANT, raise_on_error=False)
        )
    only = checks["moodle/drift:nothing_only_in_moodle"]
    assert not only.passed and only.severity == dg.AssetCheckSeverity.WARN
    assert only.metadata["moodle_course"].value == 1
    healed = checks["moodle/drift:drift_healed"]
    assert not healed.passed and healed.severity == dg.AssetCheckSeverity.ERROR
    assert healed.metadata["zoho_enrolment"].value >= 1
