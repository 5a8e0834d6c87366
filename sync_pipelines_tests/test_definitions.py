import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from sync_pipelines.definitions import defs
from sync_pipelines.zoho.modules import MODULES

EXPECTED_UPSTREAM = {
    "zoho/programmes": set(),
    "zoho/teachers": set(),
    "zoho/students": set(),
    "zoho/units": {"zoho/programmes"},
    "zoho/classes": {"zoho/programmes", "zoho/units", "zoho/teachers"},
    "zoho/enrolments": {"zoho/students", "zoho/classes"},
    "zoho/registrations": {"zoho/students", "zoho/programmes"},
    "zoho/payments": {"zoho/students", "zoho/registrations"},
    "zoho/grades": {"zoho/students", "zoho/classes"},
    "moodle/users": {"zoho/students", "zoho/teachers"},
    "moodle/categories": {"zoho/programmes"},
    "moodle/courses": {"zoho/classes", "moodle/categories"},
    # a withdrawn student's enrolments are removed: students feed the enrolments too
    "moodle/enrolments": {
        "zoho/enrolments",
        "zoho/classes",
        "zoho/students",
        "moodle/users",
        "moodle/courses",
    },
    "moodle/drift": {"moodle/users", "moodle/categories", "moodle/courses", "moodle/enrolments"},
    "moodle/rubrics": {"moodle/courses", "zoho/units", "zoho/classes"},
    "moodle/grades": {"moodle/enrolments", "moodle/rubrics"},
    "zoho/grade_writeback": {"moodle/grades"},
    "zoho/sync_bookkeeping": {"moodle/users", "moodle/courses", "moodle/enrolments"},
}
GROUPS = {"zoho/grade_writeback": "writeback", "zoho/sync_bookkeeping": "writeback"}


#: Not materialised by any job: the webhook sensors report dead-lettered events as its observations,
#: the health sensor every school's health (one view of all schools, so not partitioned).
OBSERVED = {"events/dead_letters": "events", "ops/school_health": "ops"}
UNPARTITIONED = {"ops/school_health"}
#: Materialised once a day by its own job and schedule, not by the sync jobs.
REPORTS = {"reports/daily_changes": {f"zoho/{m.name}" for m in MODULES}}


def test_asset_keys_groups_and_lineage_are_pinned():
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert {k: {d.asset_key.to_user_string() for d in s.deps} for k, s in specs.items()} == {
        **EXPECTED_UPSTREAM,
        **REPORTS,
        **{k: set() for k in OBSERVED},
    }
    for key, spec in specs.items():
        assert spec.group_name == {**GROUPS, **OBSERVED}.get(key, key.split("/")[0])
        assert spec.kinds & {"zoho", "moodle"}
        assert spec.owners
        assert spec.description and len(spec.description) > 60
        if key in UNPARTITIONED:
            assert spec.partitions_def is None
        else:
            assert spec.partitions_def == dg.DynamicPartitionsDefinition(name="tenants")
    for key in EXPECTED_UPSTREAM:
        if key.startswith("zoho/") and key not in GROUPS:
            assert "one row per" in specs[key].description


def _keys(job_name: str) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_job_def(job_name).asset_layer.executable_asset_keys}


def test_jobs_cover_their_assets_and_resources_are_bound():
    assert _keys("full_sync") == set(EXPECTED_UPSTREAM) == _keys("full_sync_dry_run")
    assert _keys("zoho_full_sync") == {
        k for k in EXPECTED_UPSTREAM if k.startswith("zoho/") and k not in GROUPS
    }
    dry = defs.resolve_job_def("full_sync_dry_run")
    ops = dry.run_config_schema.config_type.fields["ops"].config_type.fields
    assert {name for name, f in ops.items() if "dry_run" in str(f.default_value)} >= {
        "moodle__users",
        "zoho__grade_writeback",
    }
    assert _keys("daily_report") == set(REPORTS)
    assert _keys("reconcile") == set(EXPECTED_UPSTREAM)
    assert set(defs.resources) >= {"zoho", "moodle", "warehouse"}
    assert defs.resolve_sensor_def("tenants_sensor")


def test_dg_lists_the_definitions_the_project_declares():
    """Dagster's project tool finds the one Definitions object through [tool.dg] in pyproject.toml."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "list", "defs", "--json"],
        cwd=root,
        env={**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parents[1])},
        capture_output=True,
        text=True,
        check=True,
    )
    listed = json.loads(out.stdout)
    assert {a["asset_key"] for a in listed["assets"]} == {
        s.key.to_user_string() for s in defs.resolve_all_asset_specs()
    }
    assert {j["name"] for j in listed["jobs"]} >= {"full_sync", "full_sync_dry_run", "reconcile"}
    assert {s["name"] for s in listed["sensors"]} == {s.name for s in defs.sensors}
