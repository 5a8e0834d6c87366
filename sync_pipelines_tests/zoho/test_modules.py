import pytest

from sync_pipelines.zoho.modules import MODULES, RESERVED_COLUMNS, ModuleSpec, metadata_for, module

NINE = {
    "BTEC_Students",
    "BTEC_Teachers",
    "Products",
    "BTEC",
    "BTEC_Classes",
    "BTEC_Enrollments",
    "BTEC_Registrations",
    "BTEC_Payments",
    "BTEC_Grades",
}


def test_the_nine_school_modules_in_dependency_order():
    assert {m.api_name for m in MODULES} == NINE
    seen: set[str] = set()
    for spec in MODULES:
        assert set(spec.upstream) <= seen, f"{spec.api_name} comes before what it depends on"
        seen.add(spec.api_name)


@pytest.mark.parametrize("spec", MODULES, ids=lambda m: m.name)
def test_module_table_matches_the_orgs_field_metadata(spec: ModuleSpec):
    meta = metadata_for(spec.api_name)
    assert len(spec.api_fields) <= 50
    for f in spec.fields:
        assert f.api_name in meta, f"{spec.api_name}.{f.api_name} is not a field of the org"
        assert set(f.picklist) == set(meta[f.api_name].get("pick_list_values", ())) - {"-None-"}
    for dep in spec.dependencies:
        f = spec.field(dep.column)
        assert f.kind == "lookup" and f.lookup_module == dep.target
    for col in spec.natural_key:
        spec.field(col)
    assert len(set(spec.columns)) == len(spec.columns)
    assert not set(spec.columns) & RESERVED_COLUMNS, "a field would collide with a column the pipeline adds"


def test_modules_without_modified_time_are_the_documented_two():
    assert {m.api_name for m in MODULES if not m.has_modified_time} == {"Products", "BTEC_Enrollments"}
    assert module("students") is module("BTEC_Students")
    with pytest.raises(KeyError):
        module("Leads")
