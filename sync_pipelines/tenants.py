"""Tenants (schools): the tenants file, and the dynamic partitions kept in step with it.

The file names, for each school, where its Zoho and Moodle live and *which environment variables*
hold its secrets; the secrets themselves never appear in the file, in logs or in metadata.

.. code-block:: yaml

    tenants:
      - id: demo_school                       # letters, digits, "_" and "-" only
        name: Demo BTEC School
        zoho:
          data_centre: eu                      # com, eu, in, com.au, jp, com.cn, sa, ca ...
          # or, for any Zoho-compatible endpoint, explicit URLs (they win over data_centre):
          accounts_url: https://accounts.zoho.eu
          api_domain: https://www.zohoapis.eu  # used when the token answer names none
          client_id_env: DEMO_ZOHO_CLIENT_ID
          client_secret_env: DEMO_ZOHO_CLIENT_SECRET
          refresh_token_env: DEMO_ZOHO_REFRESH_TOKEN
          # Only for an org that names things otherwise than the shipped module table
          # (sync_pipelines/zoho/modules.py); the warehouse tables and columns stay the same.
          modules:                             # our module (name or API name): the org's API name
            students: Students                 #   (BTEC_Students: Students would do the same)
          fields:                              # our module (name or API name):
            students:                          #   {our field API name: the org's API name}
              Frist_Name_Native: First_Name_Native
              Sub_Major: null                  # the org has no such field: the column stays empty
        moodle:
          base_url: https://moodle.school.example
          token_env: DEMO_MOODLE_TOKEN
        webhook_secret_env: DEMO_WEBHOOK_SECRET

Each school's org is checked against the module table before any of its data moves (see
:mod:`sync_pipelines.zoho.org`): a module or field the org lacks, and not mapped above, is an
error naming the tenant, the module and the field; picklists are validated against the school's
own values.
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import yaml

from sync_pipelines.zoho.modules import MODULES, MODULES_BY_API_NAME, MODULES_BY_NAME

TENANT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TENANTS_FILE_ENV = "SYNC_TENANTS_FILE"

tenant_partitions = dg.DynamicPartitionsDefinition(name="tenants")

#: Zoho data centres: accounts server and API domain.
DATA_CENTRES: dict[str, tuple[str, str]] = {
    "com": ("https://accounts.zoho.com", "https://www.zohoapis.com"),
    "eu": ("https://accounts.zoho.eu", "https://www.zohoapis.eu"),
    "in": ("https://accounts.zoho.in", "https://www.zohoapis.in"),
    "com.au": ("https://accounts.zoho.com.au", "https://www.zohoapis.com.au"),
    "jp": ("https://accounts.zoho.jp", "https://www.zohoapis.jp"),
    "com.cn": ("https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
    "sa": ("https://accounts.zoho.sa", "https://www.zohoapis.sa"),
    "ca": ("https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),
}


class TenantConfigError(ValueError):
    """The tenants file, or the environment it points at, is not usable."""


@dataclass(frozen=True)
class OrgMapping:
    """How one school's org names our modules and fields (``zoho.modules``, ``zoho.fields``).

    Keys are our module *names* (``students``) and our field API names; pairs are sorted, so
    that two equal mappings compare equal and the config stays hashable.

    Attributes:
        modules: ``(our module name, the org's module API name)`` pairs.
        fields: ``(our module name, our field API name, the org's API name or None)`` triples;
            ``None``: the org has no such field.
    """

    modules: tuple[tuple[str, str], ...] = ()
    fields: tuple[tuple[str, str, str | None], ...] = ()

    def module_api_name(self, name: str) -> str:
        """The org's API name of our module ``name`` (its own API name unless mapped)."""
        for ours, theirs in self.modules:
            if ours == name:
                return theirs
        return MODULES_BY_NAME[name].api_name

    def field_api_name(self, module: str, api_name: str) -> str | None:
        """The org's API name of our field ``api_name`` of module ``module`` (its own unless
        mapped), or ``None`` if the org has no such field."""
        for ours, field_name, theirs in self.fields:
            if ours == module and field_name == api_name:
                return theirs
        return api_name

    def is_field_mapped(self, module: str, api_name: str) -> bool:
        """Whether ``zoho.fields`` names this field (to another API name, or to null)."""
        return any(ours == module and f == api_name for ours, f, _ in self.fields)


@dataclass(frozen=True)
class ZohoTenantConfig:
    accounts_url: str
    api_domain: str | None
    client_id_env: str
    client_secret_env: str
    refresh_token_env: str
    mapping: OrgMapping = field(default_factory=OrgMapping)


@dataclass(frozen=True)
class MoodleTenantConfig:
    base_url: str
    token_env: str


@dataclass(frozen=True)
class Tenant:
    """One school."""

    id: str
    name: str
    zoho: ZohoTenantConfig
    moodle: MoodleTenantConfig | None = None
    webhook_secret_env: str | None = None

    def secret(self, env_name: str) -> str:
        """Read a secret from the environment; the error names the variable, never a value."""
        value = os.environ.get(env_name)
        if not value:
            raise TenantConfigError(f"tenant {self.id}: environment variable {env_name} is not set")
        return value


def validate_tenant_id(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not TENANT_ID.match(tenant_id):
        raise TenantConfigError(f"invalid tenant id {tenant_id!r}: use 1-64 letters, digits, '_' or '-'")
    return tenant_id


def default_tenants_file() -> Path:
    return Path(os.environ.get(TENANTS_FILE_ENV, "tenants.yaml"))


def _require(section: dict, key: str, where: str) -> str:
    value = section.get(key)
    if not isinstance(value, str) or not value.strip():
        raise TenantConfigError(f"{where}: '{key}' is required")
    return value.strip()


def _zoho(raw: dict, where: str) -> ZohoTenantConfig:
    if not isinstance(raw, dict):
        raise TenantConfigError(f"{where}: 'zoho' section is required")
    dc = raw.get("data_centre")
    accounts, api = DATA_CENTRES.get(dc, (None, None)) if dc else (None, None)
    if dc and accounts is None:
        raise TenantConfigError(f"{where}: unknown data_centre {dc!r} (one of {', '.join(DATA_CENTRES)})")
    accounts = raw.get("accounts_url") or accounts
    if not accounts:
        raise TenantConfigError(f"{where}: give zoho.data_centre or zoho.accounts_url")
    api_domain = raw.get("api_domain") or api
    return ZohoTenantConfig(
        accounts_url=accounts.rstrip("/"),
        api_domain=api_domain.rstrip("/") if api_domain else None,
        client_id_env=_require(raw, "client_id_env", where),
        client_secret_env=_require(raw, "client_secret_env", where),
        refresh_token_env=_require(raw, "refresh_token_env", where),
        mapping=_mapping(raw, where),
    )


def _our_module(key: object, where: str) -> str:
    """Our module name for a mapping key: a module name (``students``) or API name."""
    spec = (MODULES_BY_NAME.get(key) or MODULES_BY_API_NAME.get(key)) if isinstance(key, str) else None
    if spec is None:
        names = ", ".join(m.name for m in MODULES)
        raise TenantConfigError(f"{where}: unknown module {key!r} (one of {names}, or their API names)")
    return spec.name


def _api_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TenantConfigError(f"{where}: expected the org's API name (a non-empty string), got {value!r}")
    return value.strip()


def _mapping(raw: dict, where: str) -> OrgMapping:
    """``zoho.modules`` and ``zoho.fields``: keys are checked against the module table."""
    modules_raw = raw.get("modules") or {}
    fields_raw = raw.get("fields") or {}
    if not isinstance(modules_raw, Mapping):
        raise TenantConfigError(f"{where}: zoho.modules must map our modules to the org's API names")
    if not isinstance(fields_raw, Mapping):
        raise TenantConfigError(f"{where}: zoho.fields must map our modules to {{field: API name}}")

    modules: dict[str, str] = {}
    for key, value in modules_raw.items():
        at = f"{where}: zoho.modules.{key}"
        name = _our_module(key, at)
        if name in modules:
            raise TenantConfigError(f"{at}: module {name} is mapped twice")
        modules[name] = _api_name(value, at)
    seen: dict[str, str] = {}
    for name, api in modules.items():
        if api in seen:
            raise TenantConfigError(f"{where}: zoho.modules maps both {seen[api]} and {name} to {api}")
        seen[api] = name

    fields: list[tuple[str, str, str | None]] = []
    done: set[str] = set()
    for key, per_field in fields_raw.items():
        at = f"{where}: zoho.fields.{key}"
        name = _our_module(key, at)
        if name in done:
            raise TenantConfigError(f"{at}: module {name} is mapped twice")
        done.add(name)
        if not isinstance(per_field, Mapping):
            raise TenantConfigError(f"{at}: expected {{our field API name: the org's API name or null}}")
        spec = MODULES_BY_NAME[name]
        ours = {f.api_name for f in spec.fields}
        targets: dict[str, str] = {}
        for field_name, value in per_field.items():
            field_at = f"{at}.{field_name}"
            if field_name not in ours:
                raise TenantConfigError(
                    f"{field_at}: {spec.api_name} has no field {field_name!r} in the module table "
                    f"(keys are our API names: {', '.join(sorted(ours))})"
                )
            theirs = None if value is None else _api_name(value, field_at)
            if theirs is not None:
                if theirs in targets:
                    raise TenantConfigError(
                        f"{at}: both {targets[theirs]} and {field_name} are mapped to {theirs}"
                    )
                targets[theirs] = field_name
            fields.append((name, field_name, theirs))
    return OrgMapping(
        modules=tuple(sorted(modules.items())), fields=tuple(sorted(fields, key=lambda t: t[:2]))
    )


def parse_tenants(document: object, *, source: str = "tenants file") -> dict[str, Tenant]:
    """Validate a parsed tenants document and return the tenants by id."""
    if not isinstance(document, dict) or not isinstance(document.get("tenants"), list):
        raise TenantConfigError(f"{source}: expected a mapping with a 'tenants' list")
    tenants: dict[str, Tenant] = {}
    for i, raw in enumerate(document["tenants"]):
        where = f"{source}: tenants[{i}]"
        if not isinstance(raw, dict):
            raise TenantConfigError(f"{where}: expected a mapping")
        tid = validate_tenant_id(raw.get("id"))
        where = f"{source}: tenant {tid}"
        if tid in tenants:
            raise TenantConfigError(f"{where}: listed twice")
        moodle = raw.get("moodle")
        tenants[tid] = Tenant(
            id=tid,
            name=str(raw.get("name") or tid),
            zoho=_zoho(raw.get("zoho"), where),
            moodle=MoodleTenantConfig(
                base_url=_require(moodle, "base_url", f"{where} moodle").rstrip("/"),
                token_env=_require(moodle, "token_env", f"{where} moodle"),
            )
            if moodle
            else None,
            webhook_secret_env=raw.get("webhook_secret_env"),
        )
    return tenants


def load_tenants(path: str | Path | None = None) -> dict[str, Tenant]:
    """Read and validate the tenants file."""
    path = Path(path) if path else default_tenants_file()
    try:
        document = yaml.safe_load(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise TenantConfigError(f"tenants file {path} not found (set {TENANTS_FILE_ENV})") from exc
    except yaml.YAMLError as exc:
        raise TenantConfigError(f"tenants file {path} is not valid YAML: {exc}") from exc
    return parse_tenants(document, source=str(path))


def partition_changes(
    wanted: set[str], existing: set[str]
) -> list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest]:
    """The requests that make the partitions equal the tenants of the file."""
    requests: list[dg.AddDynamicPartitionsRequest | dg.DeleteDynamicPartitionsRequest] = []
    if add := sorted(wanted - existing):
        requests.append(tenant_partitions.build_add_request(add))
    if remove := sorted(existing - wanted):
        requests.append(tenant_partitions.build_delete_request(remove))
    return requests


@dg.sensor(
    name="tenants_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the `tenants` partitions equal to the schools listed in the tenants file.",
)
def tenants_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Add partitions for new schools, remove those no longer listed."""
    try:
        wanted = set(load_tenants())
    except TenantConfigError as exc:
        return dg.SkipReason(str(exc))
    existing = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
    requests = partition_changes(wanted, existing)
    if not requests:
        return dg.SkipReason("partitions already match the tenants file")
    return dg.SensorResult(dynamic_partitions_requests=requests)


def sync_partitions(instance: dg.DagsterInstance, tenants: dict[str, Tenant]) -> None:
    """Make the instance's tenant partitions match ``tenants`` (for scripts and the demo)."""
    existing = set(instance.get_dynamic_partitions(tenant_partitions.name))
    if add := sorted(set(tenants) - existing):
        instance.add_dynamic_partitions(tenant_partitions.name, add)
    for gone in sorted(existing - set(tenants)):
        instance.delete_dynamic_partition(tenant_partitions.name, gone)
