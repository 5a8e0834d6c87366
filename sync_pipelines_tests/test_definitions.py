import dagster as dg

from sync_pipelines.definitions import defs

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
}


def test_asset_keys_groups_and_lineage_are_pinned():
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert {k: {d.asset_key.to_user_string() for d in s.deps} for k, s in specs.items()} == EXPECTED_UPSTREAM
    for spec in specs.values():
        assert spec.group_name == "zoho"
        assert "zoho" in spec.kinds
        assert spec.owners
        assert spec.description and "one row per" in spec.description
        assert spec.partitions_def == dg.DynamicPartitionsDefinition(name="tenants")


def test_main_job_covers_every_zoho_asset_and_resources_are_bound():
    job = defs.resolve_job_def("zoho_full_sync")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == set(EXPECTED_UPSTREAM)
    assert set(defs.resources) >= {"zoho", "warehouse"}
    assert defs.resolve_sensor_def("tenants_sensor")
