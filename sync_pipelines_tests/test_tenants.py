import dagster as dg
import pytest
import yaml

from sync_pipelines.tenants import (
    OrgMapping,
    TenantConfigError,
    load_tenants,
    parse_tenants,
    partition_changes,
    tenant_partitions,
    tenants_sensor,
)

ZOHO = {"client_id_env": "A_ID", "client_secret_env": "A_SECRET", "refresh_token_env": "A_REFRESH"}


def _doc(*tenants: dict) -> dict:
    return {"tenants": list(tenants)}


def test_data_centre_expands_and_explicit_urls_win():
    tenants = parse_tenants(
        _doc(
            {"id": "school-a", "zoho": {"data_centre": "eu", **ZOHO}},
            {
                "id": "school_b",
                "zoho": {
                    "data_centre": "eu",
                    "accounts_url": "http://127.0.0.1:9/",
                    "api_domain": "http://127.0.0.1:9",
                    **ZOHO,
                },
            },
        )
    )
    assert tenants["school-a"].zoho.accounts_url == "https://accounts.zoho.eu"
    assert tenants["school-a"].zoho.api_domain == "https://www.zohoapis.eu"
    assert tenants["school_b"].zoho.accounts_url == "http://127.0.0.1:9"


@pytest.mark.parametrize("bad_id", ["../etc", "a b", "", "x" * 65, "école", None, 7])
def test_tenant_ids_are_validated(bad_id: object):
    with pytest.raises(TenantConfigError, match="invalid tenant id"):
        parse_tenants(_doc({"id": bad_id, "zoho": {"data_centre": "eu", **ZOHO}}))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_doc({"id": "a", "zoho": {"data_centre": "mars", **ZOHO}}), "unknown data_centre"),
        (_doc({"id": "a", "zoho": {"client_id_env": "X"}}), "give zoho.data_centre or zoho.accounts_url"),
        (_doc({"id": "a", "zoho": {"data_centre": "eu"}}), "'client_id_env' is required"),
        (
            _doc(
                {"id": "a", "zoho": {"data_centre": "eu", **ZOHO}},
                {"id": "a", "zoho": {"data_centre": "eu", **ZOHO}},
            ),
            "listed twice",
        ),
        ({"schools": []}, "'tenants' list"),
    ],
)
def test_bad_tenants_files_say_what_is_wrong(doc: dict, message: str):
    with pytest.raises(TenantConfigError, match=message):
        parse_tenants(doc)


def test_a_missing_secret_names_the_variable_but_a_present_one_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
):
    tenant = parse_tenants(_doc({"id": "a", "zoho": {"data_centre": "eu", **ZOHO}}))["a"]
    monkeypatch.delenv("A_SECRET", raising=False)
    with pytest.raises(TenantConfigError, match="A_SECRET is not set"):
        tenant.secret("A_SECRET")
    monkeypatch.setenv("A_SECRET", "s3cr3t-value")
    assert tenant.secret("A_SECRET") == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(tenant)


def test_sensor_keeps_partitions_in_step_with_the_file(tmp_path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "tenants.yaml"
    monkeypatch.setenv("SYNC_TENANTS_FILE", str(path))
    path.write_text(
        yaml.safe_dump(_doc(*({"id": t, "zoho": {"data_centre": "eu", **ZOHO}} for t in ("a", "b"))))
    )
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, ["b", "gone"])
        result = tenants_sensor(dg.build_sensor_context(instance=instance))
        assert [(type(r).__name__, list(r.partition_keys)) for r in result.dynamic_partitions_requests] == [
            ("AddDynamicPartitionsRequest", ["a"]),
            ("DeleteDynamicPartitionsRequest", ["gone"]),
        ]
    assert partition_changes({"a"}, {"a"}) == []
    assert set(load_tenants(path)) == {"a", "b"}


def test_the_shipped_tenants_file_is_valid():
    assert "demo_school" in load_tenants("tenants.yaml")


# --- zoho.modules / zoho.fields: how a school's org names our modules and fields -------------------


def _zoho(**extra: object) -> dict:
    return _doc({"id": "school_b", "zoho": {"data_centre": "eu", **ZOHO, **extra}})


def test_org_mapping_is_parsed_by_module_name_or_api_name():
    text = """
    tenants:
      - id: school_b
        zoho:
          data_centre: eu
          client_id_env: A_ID
          client_secret_env: A_SECRET
          refresh_token_env: A_REFRESH
          modules:
            students: Students
            BTEC: Units
          fields:
            BTEC_Students:
              Frist_Name_Native: First_Name_Native
              Sub_Major: null
            classes:
              Class_Name: Course_Name
    """
    mapping = parse_tenants(yaml.safe_load(text))["school_b"].zoho.mapping
    assert mapping == OrgMapping(
        modules=(("students", "Students"), ("units", "Units")),
        fields=(
            ("classes", "Class_Name", "Course_Name"),
            ("students", "Frist_Name_Native", "First_Name_Native"),
            ("students", "Sub_Major", None),
        ),
    )
    assert mapping.module_api_name("students") == "Students"
    assert mapping.module_api_name("units") == "Units"
    assert mapping.module_api_name("teachers") == "BTEC_Teachers"  # not mapped: our API name
    assert mapping.field_api_name("students", "Frist_Name_Native") == "First_Name_Native"
    assert mapping.field_api_name("students", "Sub_Major") is None
    assert mapping.field_api_name("students", "Major") == "Major"
    assert mapping.is_field_mapped("students", "Sub_Major") and not mapping.is_field_mapped(
        "students", "Major"
    )
    hash(parse_tenants(yaml.safe_load(text))["school_b"])  # the config stays hashable


def test_no_mapping_is_the_empty_mapping():
    tenant = parse_tenants(_zoho())["school_b"]
    assert tenant.zoho.mapping == OrgMapping()
    assert load_tenants("tenants.yaml")["demo_school"].zoho.mapping == OrgMapping()
    assert parse_tenants(_zoho(modules=None, fields={}))["school_b"].zoho.mapping == OrgMapping()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"modules": {"studnets": "Students"}}, "zoho.modules.studnets: unknown module 'studnets'"),
        ({"fields": {"Leads": {"Name": "X"}}}, "zoho.fields.Leads: unknown module 'Leads'"),
        (
            {"fields": {"students": {"Nom": "X"}}},
            "zoho.fields.students.Nom: BTEC_Students has no field 'Nom'",
        ),
        ({"fields": {"students": {"sub_major": None}}}, "has no field 'sub_major'"),  # API names, not columns
        ({"modules": {"students": ""}}, "zoho.modules.students: expected the org's API name"),
        ({"modules": {"students": 7}}, "zoho.modules.students: expected the org's API name"),
        ({"modules": {"students": None}}, "zoho.modules.students: expected the org's API name"),
        (
            {"fields": {"students": {"Major": ["A"]}}},
            "zoho.fields.students.Major: expected the org's API name",
        ),
        ({"modules": ["students"]}, "zoho.modules must map"),
        ({"fields": "students"}, "zoho.fields must map"),
        ({"fields": {"students": ["Major"]}}, "zoho.fields.students: expected {our field API name"),
        ({"modules": {"students": "S", "BTEC_Students": "S2"}}, "module students is mapped twice"),
        ({"fields": {"students": {}, "BTEC_Students": {}}}, "module students is mapped twice"),
        (
            {"modules": {"students": "People", "teachers": "People"}},
            "maps both students and teachers to People",
        ),
        (
            {"fields": {"students": {"Email": "Mail", "Academic_Email": "Mail"}}},
            "both Email and Academic_Email are mapped to Mail",
        ),
    ],
)
def test_a_bad_org_mapping_names_the_tenant_and_the_key(extra: dict, message: str):
    with pytest.raises(TenantConfigError) as info:
        parse_tenants(_zoho(**extra))
    assert "tenant school_b" in str(info.value)
    assert message in str(info.value)
