"""Each school's own org: its metadata checked against the module table, the module table as it
spells it, and the metadata cached in the warehouse.

The org is a stub with the two metadata calls of the Zoho client, answering Zoho v8's shapes
(``/settings/modules`` entries; ``/settings/fields`` with picklist values as objects and
``lookup.module.api_name``), built from the shipped metadata and then edited per test.
"""

import copy
import pickle
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
import yaml

from sync_pipelines.tenants import Tenant, TenantConfigError, parse_tenants
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.org_cache import (
    MODULE_LIST,
    cached_org,
    load_org,
    load_tenant_modules,
    zoho_org_metadata,
)
from sync_pipelines.warehouse.schema import MODULE_TABLES, metadata
from sync_pipelines.zoho.canonical import INVALID_REASON, canonicalise, frame_from_records
from sync_pipelines.zoho.client import CallStats, ZohoError
from sync_pipelines.zoho.modules import MODULES, ModuleSpec, metadata_for, module, shipped_modules
from sync_pipelines.zoho.org import (
    OrgMetadata,
    OrgSchemaError,
    fetch_org,
    field_lookup_module,
    field_picklist,
    field_required,
    org_module_names,
    shipped_org,
    storable,
    tenant_modules,
    tenant_spec,
)
from sync_pipelines.zoho.sync import sync_module

TENANT = "school_b"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

# --- a Zoho org answering v8 shapes -----------------------------------------------------------------

_JSON_TYPES = {
    "boolean": "boolean",
    "integer": "integer",
    "double": "double",
    "currency": "double",
    "lookup": "jsonobject",
    "ownerlookup": "jsonobject",
    "subform": "jsonarray",
    "multiselectlookup": "jsonarray",
}


def _v8_picklist(values: list[str]) -> list[dict]:
    return [
        {
            "display_value": v,
            "sequence_number": i + 1,
            "reference_value": v,
            "colour_code": None,
            "actual_value": v,
            "id": f"58430170000{i:08d}",
            "type": "used",
        }
        for i, v in enumerate(values)
    ]


def _v8_field(meta: dict, n: int) -> dict:
    """A shipped field description as Zoho v8's /settings/fields answers it."""
    target = meta.get("lookup_module")
    return {
        "api_name": meta["api_name"],
        "field_label": meta["api_name"].replace("_", " "),
        "display_label": meta["api_name"].replace("_", " "),
        "data_type": meta["data_type"],
        "json_type": _JSON_TYPES.get(meta["data_type"], "string"),
        "id": f"584301700001{n:07d}",
        "system_mandatory": bool(meta.get("required")),
        "custom_field": True,
        "visible": True,
        "read_only": False,
        "length": 255,
        "pick_list_values": _v8_picklist(meta.get("pick_list_values", [])),
        "lookup": {
            "display_label": meta["api_name"],
            "api_name": meta["api_name"],
            "module": {"api_name": target, "id": "5843017000000002175"},
            "id": f"584301700002{n:07d}",
        }
        if target
        else {},
    }


class StubZoho:
    """The two metadata calls of ``ZohoClient``, answering recorded v8 JSON; counts its calls."""

    def __init__(self) -> None:
        names = shipped_modules()
        self.modules: list[dict] = [
            {
                "api_name": name,
                "module_name": name,
                "singular_label": name.replace("_", " "),
                "plural_label": name.replace("_", " "),
                "generated_type": "default" if name == "Products" else "custom",
                "api_supported": True,
                "creatable": True,
                "viewable": True,
                "visibility": 1,
                "sequence_number": i + 1,
                "id": f"584301700003{i:07d}",
            }
            for i, name in enumerate(names)
        ]
        self.fields: dict[str, list[dict]] = {
            name: [_v8_field(m, i) for i, m in enumerate(metadata_for(name).values())] for name in names
        }
        self.calls: Counter[str] = Counter()
        self.fail = False

    # the client's API
    def get_modules(self) -> list[dict]:
        self.calls["get_modules"] += 1
        if self.fail:
            raise ZohoError(TENANT, 503, "HTTP_503", "unavailable", endpoint="modules")
        return copy.deepcopy(self.modules)

    def get_fields(self, module: str) -> list[dict]:
        self.calls["get_fields"] += 1
        if module not in self.fields:
            raise ZohoError(TENANT, 400, "INVALID_MODULE", "the module name given seems to be invalid")
        return copy.deepcopy(self.fields[module])

    # editing the org
    def field(self, module: str, api_name: str) -> dict:
        return next(f for f in self.fields[module] if f["api_name"] == api_name)

    def rename_module(self, old: str, new: str) -> "StubZoho":
        entry = next(m for m in self.modules if m["api_name"] == old)
        entry["api_name"] = entry["module_name"] = new
        self.fields[new] = self.fields.pop(old)
        for fields in self.fields.values():
            for f in fields:
                if f["lookup"] and f["lookup"]["module"]["api_name"] == old:
                    f["lookup"]["module"]["api_name"] = new
        return self

    def rename_field(self, module: str, old: str, new: str) -> "StubZoho":
        self.field(module, old)["api_name"] = new
        return self

    def drop_field(self, module: str, api_name: str) -> "StubZoho":
        self.fields[module] = [f for f in self.fields[module] if f["api_name"] != api_name]
        return self


def _tenant(zoho_extra: dict | None = None, tenant_id: str = TENANT) -> Tenant:
    zoho = {"data_centre": "eu", "client_id_env": "I", "client_secret_env": "S", "refresh_token_env": "R"}
    return parse_tenants({"tenants": [{"id": tenant_id, "zoho": {**zoho, **(zoho_extra or {})}}]})[tenant_id]


def _tenant_from_yaml(text: str) -> Tenant:
    return parse_tenants(yaml.safe_load(text))[TENANT]


def _specs(stub: StubZoho, tenant: Tenant | None = None) -> dict[str, ModuleSpec]:
    tenant = tenant or _tenant()
    org = fetch_org(tenant.id, stub, org_module_names(tenant.zoho.mapping))
    return {s.name: s for s in tenant_modules(tenant, org)}


def _problems(stub: StubZoho, tenant: Tenant | None = None) -> OrgSchemaError:
    with pytest.raises(OrgSchemaError) as info:
        _specs(stub, tenant)
    return info.value


def _canonical(spec: ModuleSpec, records: list[dict]):
    return canonicalise(spec, frame_from_records(spec, records))


# --- the shipped org ----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["shipped file", "v8 answers"])
def test_the_shipped_org_gives_specs_equal_to_todays_modules(shape: str):
    if shape == "shipped file":
        specs = tenant_modules(_tenant(), shipped_org(TENANT))
    else:
        specs = tuple(_specs(StubZoho()).values())
    assert specs == MODULES
    for ours, theirs in zip(MODULES, specs, strict=True):
        assert theirs.fields == ours.fields  # picklists, required flags, lookups: value for value
        assert theirs.api_fields == ours.api_fields
        assert theirs.has_modified_time is ours.has_modified_time
        assert theirs.table == ours.table


def test_field_metadata_is_read_in_both_shapes():
    v8 = _v8_field(metadata_for("BTEC_Classes")["Term"], 0)
    assert v8["pick_list_values"][0]["actual_value"] == "-None-"  # as Zoho lists it first
    assert (
        field_picklist(v8) == field_picklist(metadata_for("BTEC_Classes")["Term"]) == ("T1", "T2", "T3", "T4")
    )
    assert field_picklist({"pick_list_values": [{"display_value": "-None-", "actual_value": "-None-"}]}) == ()
    # The API value is the actual value, not the (translatable) display value.
    assert field_picklist({"pick_list_values": [{"display_value": "Aktiv", "actual_value": "Active"}]}) == (
        "Active",
    )
    lookup = _v8_field(metadata_for("BTEC_Classes")["Teacher"], 0)
    assert field_lookup_module(lookup) == field_lookup_module(metadata_for("BTEC_Classes")["Teacher"])
    assert field_lookup_module(lookup) == "BTEC_Teachers"
    assert field_lookup_module({"lookup": {}}) is None
    assert field_required({"system_mandatory": True}) and field_required({"required": True})
    assert not field_required({"system_mandatory": False})


# --- adapting to another school's org --------------------------------------------------------------


def test_a_tenants_picklists_are_its_own():
    stub = StubZoho()
    stub.field("BTEC_Students", "Status")["pick_list_values"] = _v8_picklist(["-None-", "Enrolled", "Alumni"])
    students = _specs(stub)["students"]
    assert students.field("status").picklist == ("Enrolled", "Alumni")

    records = [
        {"id": "1", "Status": "Alumni", "First_Name": "A", "Last_Name": "B", "Academic_Email": "a@s.example"},
        {"id": "2", "Status": "Active", "First_Name": "A", "Last_Name": "B", "Academic_Email": "b@s.example"},
    ]
    theirs = _canonical(students, records)
    assert theirs[INVALID_REASON].isna().tolist() == [True, False]
    assert "Status" in theirs[INVALID_REASON][1]
    # The same records against the shipped school's values: the other way round.
    ours = _canonical(module("students"), records)
    assert ours[INVALID_REASON].isna().tolist() == [False, True]


def test_required_flags_come_from_the_tenants_org_but_our_rules_stay():
    stub = StubZoho()
    stub.field("BTEC_Students", "City")["system_mandatory"] = True  # the org requires it
    stub.field("BTEC_Enrollments", "Classes")["system_mandatory"] = False  # the shipped org did
    specs = _specs(stub)
    assert specs["students"].field("city").required
    assert not specs["enrolments"].field("class_id").required
    assert specs["students"].field("first_name").required  # the module table's own rule


def test_a_renamed_module_and_field_are_read_under_the_orgs_names(warehouse: Warehouse):
    tenant = _tenant_from_yaml(
        f"""
        tenants:
          - id: {TENANT}
            zoho:
              data_centre: eu
              client_id_env: I
              client_secret_env: S
              refresh_token_env: R
              modules:
                teachers: Teachers
              fields:
                BTEC_Teachers:
                  Academic_Email: School_Email
        """
    )
    stub = (
        StubZoho()
        .rename_module("BTEC_Teachers", "Teachers")
        .rename_field("Teachers", "Academic_Email", "School_Email")
    )
    specs = _specs(stub, tenant)
    teachers = specs["teachers"]
    assert (
        teachers.api_name == "Teachers" and teachers.name == "teachers" and teachers.table == "zoho_teachers"
    )
    assert teachers.columns == module("teachers").columns
    assert teachers.field("academic_email").api_name == "School_Email"
    assert "School_Email" in teachers.api_fields and "Academic_Email" not in teachers.api_fields
    assert teachers.has_modified_time  # read from the org's own fields (the shipped has no "Teachers")
    # A lookup into the renamed module points at it under its new name, as the table expects.
    assert specs["classes"].field("teacher_id").lookup_module == "Teachers"

    class Records:
        """Zoho's records API for the one module, answering only under the org's names."""

        stats = CallStats()

        def iter_records(self, module_name, fields, **_kwargs):
            assert module_name == "Teachers"
            record = {
                "id": "5843017000000100001",
                "Name": "Ada Lovelace",
                "School_Email": "Ada@School-B.example",
                "Academic_Email": "wrong@never.example",  # a field of the same name is never read
                "Modified_Time": "2026-03-01T08:00:00+00:00",
            }
            yield {k: v for k, v in record.items() if k == "id" or k in fields}

    report = sync_module(tenant_id=TENANT, spec=teachers, client=Records(), warehouse=warehouse, now=T0)
    assert report.counts.get("NEW") == 1
    t = MODULE_TABLES["teachers"]
    with warehouse.engine.connect() as conn:
        row = conn.execute(sa.select(t.c.name, t.c.academic_email).where(t.c.tenant_id == TENANT)).one()
    assert tuple(row) == ("Ada Lovelace", "ada@school-b.example")


def test_a_field_mapped_to_null_stays_empty_without_error():
    stub = StubZoho().drop_field("BTEC_Students", "Sub_Major").drop_field("BTEC_Students", "First_Name")
    tenant = _tenant({"fields": {"students": {"Sub_Major": None, "First_Name": None}}})
    students = _specs(stub, tenant)["students"]
    assert students.columns == module("students").columns
    for column in ("sub_major", "first_name"):
        f = students.field(column)
        assert f.absent and not f.required
        assert f.api_name not in students.api_fields  # never requested: Zoho would refuse it
    frame = _canonical(
        students, [{"id": "1", "Last_Name": "B", "Academic_Email": "a@s.example", "First_Name": "never read"}]
    )
    assert frame[INVALID_REASON].isna().all()
    assert frame["first_name"].isna().all() and frame["sub_major"].isna().all()
    # Unmapped, the same org is refused.
    assert "First_Name" in str(_problems(stub))


def test_every_problem_is_listed_in_one_error():
    stub = (
        StubZoho()
        .drop_field("BTEC_Students", "Sub_Major")
        .drop_field("BTEC_Classes", "Term")
        .drop_field("BTEC_Classes", "Year")
        .rename_module("Products", "Products_BTEC")
    )
    error = _problems(stub)
    assert isinstance(error, TenantConfigError)  # callers that catch that keep working
    assert error.tenant_id == TENANT
    assert len(error.problems) == 4, error.problems
    message = str(error)
    assert message.startswith(f"tenant {TENANT}: ")
    assert "4 problems" in message
    lines = message.splitlines()[1:]
    assert len(lines) == 4
    students, programmes = (
        next(line for line in lines if f"module {m}" in line) for m in ("students", "programmes")
    )
    assert "field Sub_Major" in students and "not in the org" in students
    assert "zoho.fields.students.Sub_Major" in students  # how to map it
    classes = [line for line in lines if "module classes" in line]
    assert [("field Term" in c, "field Year" in c) for c in classes] == [(False, True), (True, False)]
    assert "/settings/modules" in programmes and "Products" in programmes
    assert "the org has Products_BTEC" in programmes and "zoho.modules.programmes" in programmes


def test_a_renamed_field_not_mapped_is_a_problem_and_mapped_it_is_not():
    stub = StubZoho().rename_field("BTEC_Classes", "Class_Name", "Course_Name")
    error = _problems(stub)
    assert error.problems == (error.problems[0],)
    assert "module classes (BTEC_Classes), field Class_Name: not in the org" in error.problems[0]
    mapped = _tenant({"fields": {"classes": {"Class_Name": "Course_Name"}}})
    assert _specs(stub, mapped)["classes"].field("class_name").api_name == "Course_Name"
    # Mapped to a name the org lacks too: still a problem, naming the name looked for.
    wrong = _tenant({"fields": {"classes": {"Class_Name": "Cours_Name"}}})
    assert (
        "(the org's Cours_Name): not in the org; the org has Course_Name"
        in _problems(stub, wrong).problems[0]
    )


def test_an_incompatible_kind_is_an_error_naming_both_kinds():
    stub = StubZoho()
    stub.field("BTEC_Classes", "Start_Date")["data_type"] = "text"
    stub.field("BTEC_Grades", "Attempt_Number")["data_type"] = "double"  # an integer column
    error = _problems(stub)
    assert len(error.problems) == 2
    start, attempt = error.problems
    assert "module classes (BTEC_Classes), field Start_Date" in start
    assert "ours is date and the org's is text" in start
    assert "field Attempt_Number" in attempt and "ours is integer and the org's is double" in attempt
    assert f"tenant {TENANT}" in str(error)


def test_a_compatible_kind_is_taken_from_the_org():
    stub = StubZoho()
    stub.field("BTEC_Students", "City").update(
        data_type="picklist", pick_list_values=_v8_picklist(["Istanbul"])
    )
    stub.field("BTEC_Payments", "Payment_Amount")["data_type"] = "integer"  # into a currency column
    specs = _specs(stub)
    city = specs["students"].field("city")
    assert (city.kind, city.picklist) == ("picklist", ("Istanbul",))
    assert specs["payments"].field("payment_amount").kind == "integer"


@pytest.mark.parametrize(
    ("ours", "theirs", "ok"),
    [
        ("text", "picklist", True),
        ("picklist", "text", True),
        ("email", "text", True),
        ("textarea", "text", True),
        ("text", "textarea", False),  # longer than the column's 255 characters
        ("date", "text", False),
        ("date", "datetime", False),
        ("datetime", "date", False),
        ("lookup", "text", False),
        ("text", "lookup", True),
        ("integer", "double", False),
        ("double", "integer", True),
        ("currency", "double", True),
        ("boolean", "text", False),
    ],
)
def test_storable(ours, theirs, ok):
    assert storable(ours, theirs) is ok


def test_a_kind_this_sync_cannot_read_is_a_problem():
    stub = StubZoho()
    stub.field("BTEC_Students", "Nationality")["data_type"] = "multiselectpicklist"
    (problem,) = _problems(stub).problems
    assert "field Nationality" in problem and "'multiselectpicklist'" in problem


def test_a_lookup_into_another_module_is_a_problem():
    stub = StubZoho()
    stub.field("BTEC_Classes", "Teacher")["lookup"]["module"]["api_name"] = "Contacts"
    (problem,) = _problems(stub).problems
    assert "field Teacher" in problem and "Contacts" in problem and "BTEC_Teachers" in problem


def test_two_columns_may_not_read_one_field_of_the_org():
    tenant = _tenant({"fields": {"students": {"Email": "Academic_Email"}}})
    (problem,) = _problems(StubZoho(), tenant).problems
    assert "Academic_Email would be read into email, academic_email" in problem
    tenant = _tenant({"modules": {"teachers": "BTEC_Students"}})
    assert any(
        "teachers and students" in p or "students and teachers" in p
        for p in _problems(StubZoho(), tenant).problems
    )


def test_a_module_not_available_through_the_api_is_a_problem():
    stub = StubZoho()
    next(m for m in stub.modules if m["api_name"] == "BTEC_Grades")["api_supported"] = False
    (problem,) = _problems(stub).problems
    assert "module grades" in problem and "api_supported" in problem


def test_tenant_spec_checks_one_module_and_the_error_pickles():
    stub = StubZoho().drop_field("BTEC_Teachers", "Phone_Number")
    org = fetch_org(TENANT, stub)
    assert tenant_spec(module("students"), org) == module("students")
    with pytest.raises(OrgSchemaError) as info:
        tenant_spec(module("teachers"), org)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is OrgSchemaError and str(again) == str(info.value)
    assert "field Phone_Number" in str(again)
    with pytest.raises(ValueError, match="given for tenant"):
        tenant_modules(_tenant(tenant_id="school_c"), org)


# --- the cache ------------------------------------------------------------------------------------------


@pytest.fixture
def engine(warehouse_url: str):
    engine = sa.create_engine(warehouse_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def _rows(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(zoho_org_metadata)).scalar_one()


def test_the_cache_is_used_within_max_age_and_refreshed_after(engine):
    stub = StubZoho()
    nine = len(MODULES)
    day = timedelta(days=1)
    first = load_org(engine, TENANT, stub, max_age=day, now=T0)
    assert stub.calls == {"get_modules": 1, "get_fields": nine}
    assert _rows(engine) == 1 + nine
    assert first.fetched_at == T0

    cached = load_org(engine, TENANT, stub, max_age=day, now=T0 + day)
    assert stub.calls == {"get_modules": 1, "get_fields": nine}, "within max_age: no call"
    assert cached == first
    assert tenant_modules(_tenant(), cached) == MODULES

    stub.field("BTEC_Students", "Status")["pick_list_values"] = _v8_picklist(["Alumni"])
    later = load_org(engine, TENANT, stub, max_age=day, now=T0 + day + timedelta(seconds=1))
    assert stub.calls == {"get_modules": 2, "get_fields": 2 * nine}, "older than max_age: fetched"
    assert later.fetched_at == T0 + day + timedelta(seconds=1)
    assert tenant_modules(_tenant(), later)[2].field("status").picklist == ("Alumni",)
    assert _rows(engine) == 1 + nine  # replaced, not added to

    load_org(engine, TENANT, stub, max_age=day, now=T0 + day + timedelta(seconds=2), refresh=True)
    assert stub.calls["get_modules"] == 3, "refresh=True: fetched however fresh"
    load_org(engine, TENANT, stub, max_age=None, now=T0 + 1000 * day)
    assert stub.calls["get_modules"] == 3, "max_age=None: any age will do"


def test_the_cache_is_per_tenant_and_survives_a_failed_fetch(engine):
    stub_b, stub_c = StubZoho(), StubZoho().rename_module("BTEC", "Units")
    load_org(engine, TENANT, stub_b, max_age=None, now=T0)
    c = load_org(engine, "school_c", stub_c, max_age=None, now=T0, modules=org_module_names(None))
    assert stub_c.calls["get_modules"] == 1
    assert c.module("Units") is not None and c.module("BTEC") is None
    assert cached_org(engine, TENANT).module("BTEC") is not None  # school_c's never mixes in

    stub_b.fail = True
    with pytest.raises(ZohoError):
        load_org(engine, TENANT, stub_b, max_age=timedelta(hours=1), now=T0 + timedelta(days=2))
    kept = cached_org(engine, TENANT)
    assert kept is not None and kept.fetched_at == T0 and len(kept.fields) == len(MODULES)


def test_a_module_missing_from_the_cache_is_asked_for(engine):
    stub = StubZoho().rename_module("BTEC_Teachers", "Teachers")
    tenant = _tenant({"modules": {"teachers": "Teachers"}})
    # Cached before tenants.yaml mapped the module: the fields of Teachers are not in it.
    load_org(engine, TENANT, stub, max_age=None, now=T0)
    assert stub.calls == {"get_modules": 1, "get_fields": len(MODULES) - 1}  # BTEC_Teachers: none
    specs = load_tenant_modules(engine, tenant, stub, max_age=None, now=T0 + timedelta(minutes=1))
    assert stub.calls["get_modules"] == 2 and stub.calls["get_fields"] == 2 * len(MODULES) - 1
    assert specs[1].api_name == "Teachers"
    load_tenant_modules(engine, tenant, stub, max_age=None, now=T0 + timedelta(minutes=2))
    assert stub.calls["get_modules"] == 2  # now it is cached
    with engine.connect() as conn:
        keys = set(conn.execute(sa.select(zoho_org_metadata.c.module)).scalars())
    assert keys == {MODULE_LIST, *org_module_names(tenant.zoho.mapping)}


def test_load_tenant_modules_raises_one_error_for_the_whole_org(engine):
    stub = StubZoho().drop_field("BTEC_Payments", "Currency").drop_field("BTEC_Grades", "Feedback")
    with pytest.raises(OrgSchemaError) as info:
        load_tenant_modules(engine, _tenant(), stub, max_age=timedelta(hours=6), now=T0)
    assert len(info.value.problems) == 2
    assert isinstance(cached_org(engine, TENANT), OrgMetadata)  # what was fetched is cached all the same


def test_grading_values_the_orgs_picklists_lack_are_named_by_the_org_check():
    zoho = {"data_centre": "eu", "client_id_env": "I", "client_secret_env": "S", "refresh_token_env": "R"}
    tenant = parse_tenants(
        {
            "tenants": [
                {
                    "id": TENANT,
                    "zoho": zoho,
                    "grading": {"grades": {"M": "Merit"}, "statuses": {"marked": "Marked"}},
                }
            ]
        }
    )[TENANT]
    with pytest.raises(OrgSchemaError) as info:
        tenant_modules(tenant, shipped_org(TENANT))
    text = str(info.value)
    assert "grading.grades.M: 'Merit' is not a value of the Grade picklist" in text
    assert "grading.statuses.marked: 'Marked' is not a value of the Grade_Status picklist" in text
    assert tenant_modules(_tenant(), shipped_org(TENANT))  # the defaults fit the shipped org
