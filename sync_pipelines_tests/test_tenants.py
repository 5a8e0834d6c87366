import dagster as dg
import pytest
import yaml

from sync_pipelines.tenants import (
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
