import logging
import re
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml

import sync_pipelines.tenants as tenants_module
from sync_pipelines.tenants import (
    OrgMapping,
    Tenant,
    TenantConfigError,
    TenantSet,
    ZohoTenantConfig,
    load_tenants,
    parse_tenant_set,
    parse_tenants,
    partition_changes,
    read_tenants,
    sync_partitions,
    tenant_partitions,
    tenants_sensor,
)

ZOHO = {"client_id_env": "A_ID", "client_secret_env": "A_SECRET", "refresh_token_env": "A_REFRESH"}
EU = {"data_centre": "eu", **ZOHO}


def _doc(*tenants: object) -> dict:
    return {"tenants": list(tenants)}


def _write(path: Path, *tenants: object) -> Path:
    path.write_text(yaml.safe_dump(_doc(*tenants)))
    return path


def _one(tenant: dict) -> Tenant:
    return parse_tenants(_doc(tenant))[tenant["id"]]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sync_pipelines.tenants" and r.levelno == logging.WARNING
    ]


def test_data_centre_expands_and_explicit_urls_win():
    tenants = parse_tenants(
        _doc(
            {"id": "school-a", "zoho": EU},
            {
                "id": "school_b",
                "zoho": {**EU, "accounts_url": "http://127.0.0.1:9/", "api_domain": "http://127.0.0.1:9"},
            },
        )
    )
    assert tenants["school-a"].zoho.accounts_url == "https://accounts.zoho.eu"
    assert tenants["school-a"].zoho.api_domain == "https://www.zohoapis.eu"
    assert tenants["school_b"].zoho.accounts_url == "http://127.0.0.1:9"


@pytest.mark.parametrize("bad_id", ["../etc", "a b", "", "x" * 65, "école", "a\n", None, 7])
def test_tenant_ids_are_validated(bad_id: object):
    with pytest.raises(TenantConfigError, match="invalid tenant id"):
        parse_tenants(_doc({"id": bad_id, "zoho": EU}))
    tenant_set = parse_tenant_set(_doc({"id": "ok", "zoho": EU}, {"id": bad_id, "zoho": EU}))
    assert set(tenant_set.tenants) == {"ok"}
    assert list(tenant_set.broken) == ["tenants[1]"]  # an unusable id is no key: a label is
    assert f"tenants[1]: invalid tenant id {bad_id!r}" in tenant_set.broken["tenants[1]"]
    assert tenant_set.partition_ids == {"ok"}


@pytest.mark.parametrize(
    ("tenant", "message"),
    [
        ({"zoho": {"data_centre": "mars", **ZOHO}}, "tenant a: zoho.data_centre: unknown data_centre 'mars'"),
        ({"zoho": {"data_centre": ["eu"], **ZOHO}}, "unknown data_centre of type list"),
        ({"zoho": {"client_id_env": "X"}}, "tenant a: give zoho.data_centre or zoho.accounts_url"),
        ({"zoho": {"data_centre": "eu"}}, "tenant a: zoho.client_id_env is required"),
        (
            {"zoho": {**EU, "client_secret_env": "A-SECRET"}},
            "zoho.client_secret_env is not an environment variable name",
        ),
        (
            {"zoho": {**EU, "refresh_token_env": "1REFRESH"}},
            "zoho.refresh_token_env is not an environment variable name",
        ),
        ({"zoho": {**EU, "client_id_env": 7}}, "zoho.client_id_env is not an environment variable name"),
        ({"zoho": {**EU, "accounts_url": ["x"]}}, "zoho.accounts_url must be a URL"),
        ({}, "tenant a: the zoho section is required"),
        ({"zoho": "eu"}, "tenant a: the zoho section is required"),
        ({"zoho": EU, "moodle": "https://moodle.example"}, "tenant a: moodle must be a mapping"),
        ({"zoho": EU, "moodle": {"base_url": "https://m.example"}}, "tenant a: moodle.token_env is required"),
        ({"zoho": EU, "moodle": {"token_env": "T"}}, "tenant a: moodle.base_url is required"),
        (
            {"zoho": EU, "moodle": {"base_url": "https://m.example", "webhook_secret_env": "M_HOOK"}},
            "tenant a: moodle.token_env is required",  # a webhook key alone is no Moodle section
        ),
        ({"zoho": EU, "webhook_secret_env": "A HOOK"}, "tenant a: webhook_secret_env is not an environment"),
        ({"zoho": {**EU, "webhook_secret_env": "z.hook"}}, "tenant a: zoho.webhook_secret_env is not an"),
        (
            {"zoho": EU, "moodle": {"base_url": "https://m", "token_env": "T", "webhook_secret_env": ["M"]}},
            "tenant a: moodle.webhook_secret_env is not an environment variable name",
        ),
    ],
)
def test_a_broken_tenant_is_named_with_the_key_and_what_is_wrong(tenant: dict, message: str):
    tenant_set = parse_tenant_set(_doc({"id": "a", **tenant}, {"id": "b", "zoho": EU}), source="t.yaml")
    assert set(tenant_set.tenants) == {"b"}
    assert list(tenant_set.broken) == ["a"]
    assert tenant_set.broken["a"].startswith("t.yaml: tenant a: ")
    assert message in tenant_set.broken["a"]
    with pytest.raises(TenantConfigError, match="tenant a: "):
        parse_tenants(_doc({"id": "a", **tenant}))  # the strict parse still refuses it


def test_a_secret_pasted_in_place_of_a_variable_name_is_not_echoed():
    pasted = "1000.a1b2c3d4e5-refresh-token"
    tenant_set = parse_tenant_set(_doc({"id": "a", "zoho": {**EU, "refresh_token_env": pasted}}))
    assert "refresh_token_env is not an environment variable name" in tenant_set.broken["a"]
    assert pasted not in tenant_set.broken["a"]


def test_every_problem_of_one_tenant_is_named_in_its_one_error():
    tenant_set = parse_tenant_set(
        _doc({"id": "a", "zoho": {"data_centre": "mars"}, "moodle": {"base_url": "https://m"}}),
        source="t.yaml",
    )
    assert tenant_set.broken["a"] == (
        "t.yaml: tenant a: zoho.data_centre: unknown data_centre 'mars' (one of com, eu, in, com.au, jp, "
        "com.cn, sa, ca); zoho.client_id_env is required; zoho.client_secret_env is required; "
        "zoho.refresh_token_env is required; moodle.token_env is required"
    )


@pytest.mark.parametrize("entry", ["school_a", ["school_a"], 7, None])
def test_an_entry_that_is_not_a_mapping_is_broken_under_its_position(entry: object):
    tenant_set = parse_tenant_set(_doc({"id": "b", "zoho": EU}, entry), source="t.yaml")
    assert set(tenant_set.tenants) == {"b"}
    assert tenant_set.broken == {
        "tenants[1]": f"t.yaml: tenants[1]: expected a mapping with an id, got {type(entry).__name__}"
    }


def test_one_schools_bad_entry_never_stops_another(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    path = _write(
        tmp_path / "tenants.yaml",
        {"id": "good", "zoho": EU},
        {"id": "mars_school", "zoho": {"data_centre": "mars", **ZOHO}},
        {
            "id": "no_token",
            "zoho": EU,
            "moodle": {"base_url": "https://m.example", "webhook_secret_env": "M"},
        },
        {"id": "school c", "zoho": EU},
    )
    tenant_set = read_tenants(path)
    assert list(tenant_set.tenants) == ["good"] and tenant_set.ids == {"good"}
    assert set(tenant_set.broken) == {"mars_school", "no_token", "tenants[3]"}
    assert (
        f"{path}: tenant mars_school: zoho.data_centre: unknown data_centre 'mars'"
        in tenant_set.broken["mars_school"]
    )
    assert tenant_set.broken["no_token"] == f"{path}: tenant no_token: moodle.token_env is required"
    assert "invalid tenant id 'school c'" in tenant_set.broken["tenants[3]"]  # the space shows
    # The broken schools with a usable id keep their partitions; their runs fail with their own error.
    assert tenant_set.partition_ids == {"good", "mars_school", "no_token"}

    caplog.set_level(logging.WARNING, logger="sync_pipelines.tenants")
    assert list(load_tenants(path)) == ["good"]
    logged = _warnings(caplog)
    assert len(logged) == 3
    for key, message in tenant_set.broken.items():
        assert [line for line in logged if message in line], key


def test_get_of_a_broken_tenant_raises_its_own_error():
    tenant_set = parse_tenant_set(
        _doc({"id": "good", "zoho": EU}, {"id": "mars_school", "zoho": {"data_centre": "mars", **ZOHO}}),
        source="t.yaml",
    )
    assert tenant_set.get("good").zoho.accounts_url == "https://accounts.zoho.eu"
    with pytest.raises(
        TenantConfigError,
        match=re.escape("t.yaml: tenant mars_school: zoho.data_centre: unknown data_centre 'mars'"),
    ):
        tenant_set.get("mars_school")
    for unknown, shown in (("nobody", "nobody"), ("a b", "'a b'")):
        with pytest.raises(TenantConfigError) as info:
            tenant_set.get(unknown)
        assert str(info.value) == f"tenant {shown} is not in the tenants file t.yaml"


def test_a_tenant_listed_twice_is_broken_in_both_entries():
    tenant_set = parse_tenant_set(
        _doc(
            {"id": "a", "zoho": EU},
            {"id": "b", "zoho": EU},
            {"id": "a", "zoho": {**EU, "data_centre": "com"}},
            {"id": "c", "zoho": EU},
            {"id": "c", "zoho": {"data_centre": "mars"}},  # one broken copy: still ambiguous
        ),
        source="t.yaml",
    )
    assert list(tenant_set.tenants) == ["b"]
    assert tenant_set.broken == {
        "a": "t.yaml: tenant a: listed twice (tenants[0], tenants[2]): neither entry is used until only one is left",
        "c": "t.yaml: tenant c: listed twice (tenants[3], tenants[4]): neither entry is used until only one is left",
    }
    assert tenant_set.partition_ids == {"a", "b", "c"}
    with pytest.raises(TenantConfigError, match="tenant a: listed twice"):
        tenant_set.get("a")


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (None, "not found (set SYNC_TENANTS_FILE)"),
        ("tenants: [unclosed", "is not valid YAML"),
        ("schools: []", "expected a mapping with a 'tenants' list"),
        ("tenants: {a: 1}", "expected a mapping with a 'tenants' list"),
        ("", "expected a mapping with a 'tenants' list"),
        (b"\xff\xfe", "cannot be read"),
    ],
)
def test_only_a_file_unusable_as_a_whole_raises(tmp_path: Path, write: str | bytes | None, message: str):
    path = tmp_path / "tenants.yaml"
    if isinstance(write, bytes):
        path.write_bytes(write)
    elif write is not None:
        path.write_text(write)
    with pytest.raises(TenantConfigError, match=re.escape(message)):
        read_tenants(path)
    with pytest.raises(TenantConfigError, match=re.escape(message)):
        load_tenants(path)


def test_an_empty_tenants_list_is_no_tenants():
    assert parse_tenant_set(_doc()) == TenantSet(tenants={}, broken={}, warnings=(), source="tenants file")


def test_a_missing_secret_names_the_variable_but_a_present_one_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
):
    tenant = _one({"id": "a", "zoho": EU})
    monkeypatch.delenv("A_SECRET", raising=False)
    with pytest.raises(TenantConfigError, match="A_SECRET is not set"):
        tenant.secret("A_SECRET")
    monkeypatch.setenv("A_SECRET", "")
    with pytest.raises(TenantConfigError, match="A_SECRET is not set"):
        tenant.secret("A_SECRET")
    monkeypatch.setenv("A_SECRET", "s3cr3t-value")
    assert tenant.secret("A_SECRET") == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(tenant)


# --- webhook secrets: one for the Zoho routes, one for Moodle --------------------------------------


MOODLE = {"base_url": "https://moodle.example", "token_env": "A_MOODLE"}


def test_separate_webhook_secrets(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="sync_pipelines.tenants")
    tenant_set = parse_tenant_set(
        _doc(
            {
                "id": "a",
                "zoho": {**EU, "webhook_secret_env": "A_ZOHO_HOOK"},
                "moodle": {**MOODLE, "webhook_secret_env": "A_MOODLE_HOOK"},
            }
        )
    )
    assert tenant_set.warnings == ()
    tenant = tenant_set.get("a")
    assert (tenant.zoho_webhook_secret_env, tenant.moodle_webhook_secret_env) == (
        "A_ZOHO_HOOK",
        "A_MOODLE_HOOK",
    )
    assert tenant.webhook_secret_env is None
    monkeypatch.setenv("A_ZOHO_HOOK", "zoho-bearer-7f3a")
    monkeypatch.setenv("A_MOODLE_HOOK", "moodle hmac kéy")  # any inner character is fine for an HMAC key
    assert tenant.zoho_webhook_secret() == "zoho-bearer-7f3a"
    assert tenant.moodle_webhook_secret() == "moodle hmac kéy"


def test_the_legacy_single_secret_is_used_for_both_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setenv("A_HOOK", "one-secret-for-both")
    path = _write(
        tmp_path / "tenants.yaml",
        {"id": "a", "zoho": EU, "moodle": MOODLE, "webhook_secret_env": "A_HOOK"},
        {"id": "b", "zoho": EU},
    )
    caplog.set_level(logging.WARNING, logger="sync_pipelines.tenants")
    tenant = load_tenants(path)["a"]
    assert tenant.webhook_secret_env == "A_HOOK"
    assert (tenant.zoho_webhook_secret_env, tenant.moodle_webhook_secret_env) == ("A_HOOK", "A_HOOK")
    assert tenant.zoho_webhook_secret() == tenant.moodle_webhook_secret() == "one-secret-for-both"
    assert _warnings(caplog) == [
        f"{path}: tenant a: webhook_secret_env A_HOOK is the Zoho routes' secret and Moodle's HMAC key: "
        "split it into zoho.webhook_secret_env and moodle.webhook_secret_env, two variables with "
        "different secrets"
    ]  # once per load, naming the tenant and the variable, never the value
    caplog.clear()
    load_tenants(path)
    assert len(_warnings(caplog)) == 1


@pytest.mark.parametrize(
    ("tenant", "zoho_env", "moodle_env", "warning"),
    [
        (
            {"zoho": {**EU, "webhook_secret_env": "Z"}, "webhook_secret_env": "L"},
            "Z",
            "L",
            "webhook_secret_env L is Moodle's HMAC key: split it",
        ),
        (
            {"zoho": EU, "moodle": {**MOODLE, "webhook_secret_env": "M"}, "webhook_secret_env": "L"},
            "L",
            "M",
            "webhook_secret_env L is the Zoho routes' secret: split it",
        ),
        (
            {
                "zoho": {**EU, "webhook_secret_env": "Z"},
                "moodle": {**MOODLE, "webhook_secret_env": "M"},
                "webhook_secret_env": "L",
            },
            "Z",
            "M",
            "webhook_secret_env is ignored",
        ),
        (
            {"zoho": {**EU, "webhook_secret_env": "S"}, "moodle": {**MOODLE, "webhook_secret_env": "S"}},
            "S",
            "S",
            "both name S: give each its own secret",
        ),
        ({"zoho": {**EU, "webhook_secret_env": "Z"}}, "Z", None, None),
        ({"zoho": EU}, None, None, None),
    ],
)
def test_each_route_falls_back_to_the_legacy_key_on_its_own(
    tenant: dict, zoho_env: str | None, moodle_env: str | None, warning: str | None
):
    tenant_set = parse_tenant_set(_doc({"id": "a", **tenant}))
    got = tenant_set.get("a")
    assert (got.zoho_webhook_secret_env, got.moodle_webhook_secret_env) == (zoho_env, moodle_env)
    if warning is None:
        assert tenant_set.warnings == ()
    else:
        assert len(tenant_set.warnings) == 1 and warning in tenant_set.warnings[0], tenant_set.warnings


def test_a_tenant_built_by_hand_with_the_legacy_key_resolves_both():
    zoho = ZohoTenantConfig("https://accounts.zoho.eu", None, "I", "S", "R")
    tenant = Tenant(id="a", name="A", zoho=zoho, webhook_secret_env="L")
    assert (tenant.zoho_webhook_secret_env, tenant.moodle_webhook_secret_env) == ("L", "L")
    assert Tenant(id="a", name="A", zoho=zoho).zoho_webhook_secret_env is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sécret-de-l-école", "characters an 'Authorization: Bearer' header cannot carry"),
        ("two words", "characters an 'Authorization: Bearer' header cannot carry"),
        ("pa=dded", "characters an 'Authorization: Bearer' header cannot carry"),  # '=' only at the end
        ("semi;colon", "characters an 'Authorization: Bearer' header cannot carry"),
        (" leading-space", "leading or trailing whitespace"),
        ("trailing-space ", "leading or trailing whitespace"),
        ("trailing-newline\n", "leading or trailing whitespace"),
    ],
)
def test_a_zoho_secret_a_bearer_header_cannot_carry_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
):
    tenant = _one({"id": "a", "zoho": {**EU, "webhook_secret_env": "A_ZOHO_HOOK"}})
    monkeypatch.setenv("A_ZOHO_HOOK", value)
    with pytest.raises(TenantConfigError) as info:
        tenant.zoho_webhook_secret()
    text = str(info.value)
    assert text.startswith("tenant a: the Zoho webhook secret in A_ZOHO_HOOK ")
    assert message in text
    assert value.strip() not in text


@pytest.mark.parametrize("value", ["abcXYZ019-._~+/", "base64+/token==", "a"])
def test_a_zoho_secret_of_b64token_characters_is_accepted(monkeypatch: pytest.MonkeyPatch, value: str):
    tenant = _one({"id": "a", "zoho": {**EU, "webhook_secret_env": "A_ZOHO_HOOK"}})
    monkeypatch.setenv("A_ZOHO_HOOK", value)
    assert tenant.zoho_webhook_secret() == value


@pytest.mark.parametrize("value", [" moodle-key", "moodle-key\t"])
def test_a_moodle_secret_with_edge_whitespace_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str):
    tenant = _one({"id": "a", "zoho": EU, "moodle": {**MOODLE, "webhook_secret_env": "A_MOODLE_HOOK"}})
    monkeypatch.setenv("A_MOODLE_HOOK", value)
    with pytest.raises(TenantConfigError) as info:
        tenant.moodle_webhook_secret()
    assert str(info.value) == (
        "tenant a: the Moodle webhook secret in A_MOODLE_HOOK has leading or trailing whitespace: remove it"
    )


def test_a_webhook_secret_unset_or_not_configured_names_the_tenant_and_the_variable(
    monkeypatch: pytest.MonkeyPatch,
):
    tenant = _one({"id": "a", "zoho": {**EU, "webhook_secret_env": "A_ZOHO_HOOK"}})
    monkeypatch.delenv("A_ZOHO_HOOK", raising=False)
    with pytest.raises(TenantConfigError, match=r"^tenant a: environment variable A_ZOHO_HOOK is not set"):
        tenant.zoho_webhook_secret()
    monkeypatch.setenv("A_ZOHO_HOOK", "")
    with pytest.raises(TenantConfigError, match="A_ZOHO_HOOK is not set"):
        tenant.zoho_webhook_secret()
    with pytest.raises(
        TenantConfigError, match=re.escape("tenant a: no moodle.webhook_secret_env in the tenants file")
    ):
        tenant.moodle_webhook_secret()


# --- partitions ---------------------------------------------------------------------------------


def _adds_and_deletes(result: dg.SensorResult) -> list[tuple[str, list[str]]]:
    return [(type(r).__name__, list(r.partition_keys)) for r in result.dynamic_partitions_requests]


def test_sensor_keeps_partitions_in_step_with_the_file(tmp_path, monkeypatch: pytest.MonkeyPatch):
    path = _write(tmp_path / "tenants.yaml", *({"id": t, "zoho": EU} for t in ("a", "b")))
    monkeypatch.setenv("SYNC_TENANTS_FILE", str(path))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(tenant_partitions.name, ["b", "gone"])
        result = tenants_sensor(dg.build_sensor_context(instance=instance))
        assert _adds_and_deletes(result) == [
            ("AddDynamicPartitionsRequest", ["a"]),
            ("DeleteDynamicPartitionsRequest", ["gone"]),
        ]
    assert partition_changes({"a"}, {"a"}) == []
    assert set(load_tenants(path)) == {"a", "b"}


def test_sensor_with_a_broken_tenant_still_adds_the_good_ones_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    path = _write(
        tmp_path / "tenants.yaml",
        {"id": "good", "zoho": EU},
        {"id": "mars_school", "zoho": {"data_centre": "mars", **ZOHO}},
        {"id": "school c", "zoho": EU},
    )
    monkeypatch.setenv("SYNC_TENANTS_FILE", str(path))
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(tenant_partitions.name, ["mars_school", "gone"])
    result = tenants_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    # The good school is added; the broken one keeps its partition; only the unlisted one goes.
    assert _adds_and_deletes(result) == [
        ("AddDynamicPartitionsRequest", ["good"]),
        ("DeleteDynamicPartitionsRequest", ["gone"]),
    ]
    logged = capsys.readouterr().err  # a built context's log writes to stderr, not to caplog
    assert "tenant mars_school: zoho.data_centre: unknown data_centre 'mars'" in logged
    assert "tenants[2]: invalid tenant id 'school c'" in logged

    instance.add_dynamic_partitions(tenant_partitions.name, ["good"])
    instance.delete_dynamic_partition(tenant_partitions.name, "gone")
    skipped = tenants_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(skipped, dg.SkipReason)
    assert skipped.skip_message.startswith("partitions already match the tenants file; 2 tenant(s) broken: ")
    assert "tenant mars_school: zoho.data_centre: unknown data_centre 'mars'" in skipped.skip_message
    assert "invalid tenant id 'school c'" in skipped.skip_message


def test_sensor_skips_when_the_file_is_unusable_as_a_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SYNC_TENANTS_FILE", str(tmp_path / "missing.yaml"))
    skipped = tenants_sensor(dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral()))
    assert isinstance(skipped, dg.SkipReason) and "not found" in skipped.skip_message


def test_sync_partitions_keeps_a_broken_schools_partition():
    tenant_set = parse_tenant_set(
        _doc({"id": "good", "zoho": EU}, {"id": "bad", "zoho": {"data_centre": "mars"}})
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(tenant_partitions.name, ["gone"])
    sync_partitions(instance, tenant_set)
    assert sorted(instance.get_dynamic_partitions(tenant_partitions.name)) == ["bad", "good"]
    sync_partitions(instance, tenant_set.tenants)  # a plain mapping: its ids only
    assert instance.get_dynamic_partitions(tenant_partitions.name) == ["good"]


def test_the_shipped_tenants_file_is_valid_and_splits_its_webhook_secrets():
    tenant_set = read_tenants("tenants.yaml")
    assert "demo_school" in tenant_set.tenants
    assert tenant_set.broken == {} and tenant_set.warnings == ()
    demo = tenant_set.get("demo_school")
    assert demo.zoho_webhook_secret_env != demo.moodle_webhook_secret_env
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


def test_the_module_docstrings_example_parses_without_warnings():
    block = tenants_module.__doc__.split(".. code-block:: yaml")[1].split("\n\n")[1]
    tenant_set = parse_tenant_set(yaml.safe_load(textwrap.dedent(block)))
    assert tenant_set.broken == {} and tenant_set.warnings == ()
    demo = tenant_set.get("demo_school")
    assert (demo.zoho_webhook_secret_env, demo.moodle_webhook_secret_env) == (
        "DEMO_ZOHO_WEBHOOK_SECRET",
        "DEMO_MOODLE_WEBHOOK_SECRET",
    )


def test_the_file_is_parsed_once_per_content_and_an_edit_is_seen_at_once(tmp_path, monkeypatch):
    """Every step and sensor reads the tenants file; YAML and the checks run only when it changed."""
    parsed = []
    real = yaml.load
    monkeypatch.setattr(
        tenants_module.yaml, "load", lambda text, Loader: parsed.append(Loader) or real(text, Loader=Loader)
    )
    path = tmp_path / "tenants.yaml"
    entry = {
        "id": "school_a",
        "zoho": {
            "data_centre": "eu",
            "client_id_env": "A_ID",
            "client_secret_env": "A_SECRET",
            "refresh_token_env": "A_R",
        },
    }
    path.write_text(yaml.safe_dump({"tenants": [entry]}))

    first = read_tenants(path)
    assert read_tenants(path) is first and len(parsed) == 1
    path.write_text(yaml.safe_dump({"tenants": [entry, {**entry, "id": "school_b"}]}))
    assert read_tenants(path).ids == {"school_a", "school_b"} and len(parsed) == 2
    assert load_tenants(path).keys() == {"school_a", "school_b"}
    assert len(parsed) == 2
    # With the C loader where PyYAML has libyaml (its wheels do): a parse a quarter of the Python one.
    assert parsed[0] is (yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)
