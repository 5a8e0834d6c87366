"""Each school's own Zoho org: its metadata, checked against the module table, and the module
table as that org spells it.

``MODULES`` describes one school's org (the shipped ``zoho_fields.json``). Another school's org
may hold other picklist values, lack a field, or name a module or field otherwise. For each
tenant:

1. :class:`OrgMetadata` holds its org's ``/settings/modules`` list and the ``/settings/fields``
   of the modules synced (fetched with :func:`fetch_org`; cached in the warehouse by
   :func:`sync_pipelines.warehouse.org_cache.load_org`).
2. :func:`tenant_modules` checks the org against the module table, through the tenant's
   ``zoho.modules`` / ``zoho.fields`` mapping (:class:`~sync_pipelines.tenants.OrgMapping`), and
   gives the nine specs as the org spells them: same ``name``, columns and warehouse table; the
   org's module and field API names; kind, required flag, picklist and lookup target from the
   org's own field metadata. Every problem found is reported at once, in one
   :class:`OrgSchemaError`, before any data moves.

What is a problem: a module the org's ``/settings/modules`` does not list (or lists as not
available through the API); a field of the module table the org lacks, unless mapped to null;
a field whose kind in the org cannot be stored in the warehouse column of our kind (our ``date``
is the org's ``text``, say: see :func:`storable`); a lookup pointing at another module than the
one the table depends on; two columns reading the same field of the org.

Both shapes of field metadata are read: Zoho v8's (``pick_list_values`` as objects with
``actual_value``, ``lookup.module.api_name``, ``system_mandatory``) and the shipped file's
(``pick_list_values`` as strings, ``lookup_module``, ``required``).
"""

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, Protocol

from sync_pipelines.tenants import OrgMapping, Tenant, TenantConfigError
from sync_pipelines.zoho.modules import (
    _ZOHO_KINDS,
    MODULES,
    MODULES_BY_API_NAME,
    FieldSpec,
    Kind,
    ModuleSpec,
    metadata_for,
    shipped_modules,
)

#: System fields every read names besides the module table's own: no column may read them.
_SYSTEM_FIELDS = ("id", "Modified_Time")


class OrgSchemaError(TenantConfigError):
    """A tenant's org does not fit the module table. ``str()`` lists every problem, one a line.

    Attributes:
        tenant_id: the tenant whose org was checked.
        problems: one sentence per problem, each naming the module (and field) concerned.
    """

    def __init__(self, tenant_id: str, problems: Sequence[str]) -> None:
        self.tenant_id = tenant_id
        self.problems = tuple(problems)
        super().__init__(tenant_id, self.problems)  # all arguments in args: the error pickles

    def __str__(self) -> str:
        n = len(self.problems)
        head = (
            f"tenant {self.tenant_id}: its Zoho org does not fit the module table "
            f"({n} problem{'' if n == 1 else 's'}; map names in tenants.yaml under zoho.modules / "
            "zoho.fields, a missing field to null):"
        )
        return head + "".join(f"\n  - {p}" for p in self.problems)


class MetadataClient(Protocol):
    """What :func:`fetch_org` needs of a :class:`~sync_pipelines.zoho.client.ZohoClient`."""

    def get_modules(self) -> list[dict]: ...

    def get_fields(self, module: str) -> list[dict]: ...


@dataclass(frozen=True)
class OrgMetadata:
    """One tenant's org, as its metadata APIs answered.

    Attributes:
        tenant_id: the tenant.
        modules: Zoho's ``/settings/modules`` ``modules`` list.
        fields: module API name → Zoho's ``/settings/fields?module=`` ``fields`` list, for the
            modules fetched (not necessarily every module of the list).
        fetched_at: when it was fetched (``None``: not from Zoho, e.g. :func:`shipped_org`).
    """

    tenant_id: str
    modules: tuple[Mapping[str, Any], ...]
    fields: Mapping[str, tuple[Mapping[str, Any], ...]]
    fetched_at: datetime | None = None

    def module(self, api_name: str) -> Mapping[str, Any] | None:
        """The ``/settings/modules`` entry of ``api_name``, or ``None`` if the org has none."""
        for entry in self.modules:
            if entry.get("api_name") == api_name:
                return entry
        return None

    @property
    def module_names(self) -> tuple[str, ...]:
        """API names of every module the org lists."""
        return tuple(str(m["api_name"]) for m in self.modules if m.get("api_name"))

    def fields_of(self, api_name: str) -> dict[str, Mapping[str, Any]] | None:
        """Field API name → metadata of module ``api_name``, or ``None`` if not fetched."""
        listed = self.fields.get(api_name)
        if listed is None:
            return None
        return {str(f["api_name"]): f for f in listed if f.get("api_name")}


def default_org_modules() -> tuple[str, ...]:
    """The module API names of the module table, as the shipped org spells them."""
    return tuple(m.api_name for m in MODULES)


def org_module_names(mapping: OrgMapping | None) -> tuple[str, ...]:
    """The module API names of the module table, as an org with ``mapping`` spells them (what
    :func:`fetch_org` should fetch the fields of), in ``MODULES`` order."""
    mapping = mapping or OrgMapping()
    return tuple(mapping.module_api_name(m.name) for m in MODULES)


def fetch_org(
    tenant_id: str,
    client: MetadataClient,
    modules: Iterable[str] | None = None,
    *,
    fetched_at: datetime | None = None,
) -> OrgMetadata:
    """Ask the org for its module list, then for the fields of each module of ``modules``
    (API names; default :func:`default_org_modules`) that the list holds, as available through
    the API. One call, plus one per module.

    Raises:
        ZohoError: a call failed (the client's own error, untouched).
        TypeError: an answer was not a list of objects.
    """
    listed = _objects(client.get_modules(), "get_modules()")
    available = {m.get("api_name") for m in listed if m.get("api_supported") is not False}
    wanted = default_org_modules() if modules is None else tuple(modules)
    fields = {
        name: _objects(client.get_fields(name), f"get_fields({name!r})")
        for name in dict.fromkeys(wanted)
        if name in available
    }
    return OrgMetadata(tenant_id=tenant_id, modules=listed, fields=fields, fetched_at=fetched_at)


def shipped_org(tenant_id: str = "shipped") -> OrgMetadata:
    """The shipped org (``zoho_fields.json``) as :class:`OrgMetadata`: every module of the file,
    listed as available through the API."""
    names = shipped_modules()
    return OrgMetadata(
        tenant_id=tenant_id,
        modules=tuple({"api_name": n, "module_name": n, "api_supported": True} for n in names),
        fields={n: tuple(metadata_for(n).values()) for n in names},
    )


def _objects(answer: object, what: str) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(answer, list) or not all(isinstance(x, Mapping) for x in answer):
        raise TypeError(f"{what} must answer a list of objects, got {type(answer).__name__}")
    return tuple(answer)


# --- one field's metadata, either shape ----------------------------------------------------------


def field_kind(meta: Mapping[str, Any]) -> Kind | None:
    """The canonical kind of a field's ``data_type``, or ``None`` for one this sync does not read
    (``ownerlookup``, ``subform``, ``formula``...)."""
    return _ZOHO_KINDS.get(meta.get("data_type"))  # type: ignore[arg-type]


def field_picklist(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """Allowed values, ``-None-`` excluded. v8 gives objects (the API value is ``actual_value``);
    the shipped file gives the strings."""
    values: list[str] = []
    for v in meta.get("pick_list_values") or ():
        if isinstance(v, Mapping):
            v = v.get("actual_value", v.get("display_value"))
        if isinstance(v, str) and v != "-None-":
            values.append(v)
    return tuple(values)


def field_required(meta: Mapping[str, Any]) -> bool:
    """Whether the org requires a value (``required`` in the shipped file, ``system_mandatory``
    in v8)."""
    return bool(meta.get("required") or meta.get("system_mandatory"))


def field_lookup_module(meta: Mapping[str, Any]) -> str | None:
    """The API name of the module a lookup points at (v8 ``lookup.module.api_name``; v2's
    ``lookup.module`` string; the shipped file's ``lookup_module``), or ``None``."""
    if meta.get("lookup_module"):
        return str(meta["lookup_module"])
    lookup = meta.get("lookup")
    target = lookup.get("module") if isinstance(lookup, Mapping) else None
    if isinstance(target, Mapping):
        target = target.get("api_name")
    return str(target) if target else None


# --- kinds -----------------------------------------------------------------------------------------

_SHORT_TEXT: frozenset[Kind] = frozenset({"text", "email", "phone", "website", "autonumber", "picklist"})
_NUMBERS: frozenset[Kind] = frozenset({"double", "currency", "integer"})
#: Our kind → the org kinds whose canonical values its warehouse column holds, converted as the
#: org's kind converts them (``store.db_columns``): strings of at most 255 characters in a
#: ``VARCHAR(255)`` (a lookup's id is one), any string in ``TEXT``, ids only in a lookup's
#: ``VARCHAR(32)``, whole numbers in a float column; date, date-time and boolean only as
#: themselves.
_HOLDS: dict[Kind, frozenset[Kind]] = {
    **{k: _SHORT_TEXT | {"lookup"} for k in _SHORT_TEXT},
    "textarea": _SHORT_TEXT | {"lookup", "textarea"},
    "lookup": frozenset({"lookup"}),
    "date": frozenset({"date"}),
    "datetime": frozenset({"datetime"}),
    "boolean": frozenset({"boolean"}),
    "integer": frozenset({"integer"}),
    "double": _NUMBERS,
    "currency": _NUMBERS,
}


def storable(ours: Kind, theirs: Kind) -> bool:
    """Whether the warehouse column of our kind holds the org's kind (``date`` ← ``text``: no)."""
    return theirs in _HOLDS.get(ours, frozenset({ours}))


# --- the tenant's specs ------------------------------------------------------------------------------


def _near(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f"; the org has {', '.join(close)}" if close else ""


def _check(spec: ModuleSpec, org: OrgMetadata, mapping: OrgMapping) -> tuple[ModuleSpec | None, list[str]]:
    """The tenant's spec of ``spec`` (``None`` when it cannot be built), and the problems found."""
    api = mapping.module_api_name(spec.name)
    mapped = api != spec.api_name
    where = f"module {spec.name}"
    entry = org.module(api)
    if entry is None:
        how = f"looked for {api}, as zoho.modules maps it" if mapped else f"looked for {api}"
        hint = "" if mapped else f"; map it under zoho.modules.{spec.name}"
        return None, [
            f"{where}: not in the org's /settings/modules ({how}{_near(api, org.module_names)}{hint})"
        ]
    if entry.get("api_supported") is False:
        return None, [f"{where}: the org's {api} is not available through the API (api_supported is false)"]
    org_fields = org.fields_of(api)
    if org_fields is None:
        return None, [f"{where}: the org metadata holds no /settings/fields of {api} (fetch it)"]

    ours_meta = spec.field_metadata
    # Names suggested for a missing field: the org's fields no other column reads.
    spare = set(org_fields) - {mapping.field_api_name(spec.name, f.api_name) for f in spec.fields}
    problems: list[str] = []
    fields: list[FieldSpec] = []
    for f in spec.fields:
        theirs = mapping.field_api_name(spec.name, f.api_name)
        if theirs is None:  # mapped to null: the org has no such field
            fields.append(replace(f, required=False, absent=True))
            continue
        field_where = f"{where} ({api}), field {f.api_name}"
        if theirs != f.api_name:
            field_where += f" (the org's {theirs})"
        meta = org_fields.get(theirs)
        if meta is None:
            hint = (
                ""
                if mapping.is_field_mapped(spec.name, f.api_name)
                else (f"; map it under zoho.fields.{spec.name}.{f.api_name}, to null if the org has none")
            )
            problems.append(f"{field_where}: not in the org{_near(theirs, spare)}{hint}")
            continue
        kind = field_kind(meta)
        if kind is None:
            problems.append(
                f"{field_where}: our kind is {f.kind}, the org's data_type is "
                f"{meta.get('data_type')!r}, which this sync does not read"
            )
            continue
        if not storable(f.kind, kind):
            problems.append(
                f"{field_where}: incompatible kinds, ours is {f.kind} and the org's is {kind}; "
                f"the warehouse's {f.kind} column cannot hold {kind} values"
            )
            continue
        lookup_module = field_lookup_module(meta) if kind == "lookup" else None
        if f.kind == "lookup" and kind == "lookup" and f.lookup_module and lookup_module:
            target = MODULES_BY_API_NAME.get(f.lookup_module)
            expected = mapping.module_api_name(target.name) if target else f.lookup_module
            # (A target the org lacks is a problem of its own: its lookups are not one more each.)
            if lookup_module != expected and org.module(expected) is not None:
                problems.append(
                    f"{field_where}: the org's lookup points at {lookup_module}, "
                    f"the module table's at {expected}"
                )
                continue
        # Required by our own rule (the table says so and the shipped org does not), or by the org.
        ours_required = f.required and not field_required(ours_meta.get(f.api_name, {}))
        fields.append(
            replace(
                f,
                api_name=theirs,
                kind=kind,
                required=ours_required or field_required(meta),
                picklist=field_picklist(meta),
                lookup_module=lookup_module,
            )
        )

    readers: dict[str, list[str]] = {}
    for f in fields:
        if not f.absent:
            readers.setdefault(f.api_name, []).append(f.column)
    for name, columns in readers.items():
        if len(columns) > 1 or name in _SYSTEM_FIELDS:
            into = ", ".join(columns) + (f" and Zoho's own {name}" if name in _SYSTEM_FIELDS else "")
            problems.append(f"{where} ({api}): the org's field {name} would be read into {into}")
    if problems:
        return None, problems
    return replace(spec, api_name=api, fields=tuple(fields), org_fields=MappingProxyType(org_fields)), []


def tenant_spec(spec: ModuleSpec, org: OrgMetadata, mapping: OrgMapping | None = None) -> ModuleSpec:
    """``spec`` (one of ``MODULES``) as the tenant's org spells it, checked against that org.

    Same ``name``, ``columns``, table, natural key, dependencies (their targets stay the module
    table's API names: look them up among the tenant's specs by ``name``); the org's API names
    (``mapping`` from the tenant's ``zoho`` section); kind, required flag, picklist and lookup
    target from the org's field metadata. A field mapped to null is kept, ``absent``: never
    requested, never required, its column empty. With the shipped org and no mapping, the spec
    equals ``spec``.

    Raises:
        OrgSchemaError: every problem of this module, in one message.
    """
    built, problems = _check(spec, org, mapping or OrgMapping())
    if problems:
        raise OrgSchemaError(org.tenant_id, problems)
    assert built is not None
    return built


def tenant_modules(tenant: Tenant, org: OrgMetadata) -> tuple[ModuleSpec, ...]:
    """The nine specs of ``tenant``, in ``MODULES`` order, read from and checked against its org.

    Raises:
        OrgSchemaError: every problem of every module, in one message.
        ValueError: ``org`` is another tenant's.
    """
    if org.tenant_id != tenant.id:
        raise ValueError(f"org metadata of tenant {org.tenant_id!r} given for tenant {tenant.id!r}")
    mapping = tenant.zoho.mapping
    specs: list[ModuleSpec] = []
    problems: list[str] = []
    readers: dict[str, list[str]] = {}
    for spec in MODULES:
        readers.setdefault(mapping.module_api_name(spec.name), []).append(spec.name)
    for api, names in readers.items():
        if len(names) > 1:
            problems.append(f"modules {' and '.join(names)} would both read the org's {api}")
    for spec in MODULES:
        built, found = _check(spec, org, mapping)
        problems += found
        if built is not None:
            specs.append(built)
    problems += _grading_problems(tenant, specs)
    if problems:
        raise OrgSchemaError(tenant.id, problems)
    return tuple(specs)


def _grading_problems(tenant: Tenant, specs: Sequence[ModuleSpec]) -> list[str]:
    """The school's ``grading`` values its org's ``Grade`` and ``Grade_Status`` picklists lack."""
    grades = next((s for s in specs if s.name == "grades"), None)
    if grades is None:
        return []
    mapping = tenant.zoho.mapping
    meta = grades.field_metadata
    grade, status = (mapping.field_api_name("grades", f) for f in ("Grade", "Grade_Status"))
    if not grade or not status or grade not in meta or status not in meta:
        return []
    found = tenant.grading.org_problems(field_picklist(meta[grade]), field_picklist(meta[status]))
    return [f"{grades.api_name}: {p}" for p in found]


__all__ = [
    "MetadataClient",
    "OrgMetadata",
    "OrgSchemaError",
    "default_org_modules",
    "fetch_org",
    "field_kind",
    "field_lookup_module",
    "field_picklist",
    "field_required",
    "org_module_names",
    "shipped_org",
    "storable",
    "tenant_modules",
    "tenant_spec",
]
