"""The demo school: deterministic, the right size, realistic, and dirty exactly where it says."""

import re
from collections import Counter
from datetime import date, datetime
from functools import cache

import pytest
import requests

from sync_pipelines.sandbox import (
    BASE_COUNTS,
    DEMO_SEED,
    DIRTY_RECORDS,
    ORG_TZ,
    DirtyRecord,
    ZohoSimulator,
    demo_credentials,
    generate_school,
    parse_time,
)
from sync_pipelines.zoho.modules import MODULES, FieldSpec, ModuleSpec, metadata_for

_ARABIC = re.compile(r"[\u0600-\u06FF]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ACADEMIC = re.compile(r"^[a-z]+\.[a-z]+\d+@school\.example$")


@cache
def school() -> dict[str, list[dict]]:
    return generate_school(DEMO_SEED)


def _dirty(module: str, field: str, problem: str | None = None) -> set[int]:
    return {
        d.position
        for d in DIRTY_RECORDS
        if d.module == module and d.field == field and (problem is None or d.problem == problem)
    }


def _fields(kind: str) -> list[tuple[ModuleSpec, FieldSpec]]:
    return [(m, f) for m in MODULES for f in m.fields if f.kind == kind]


def _ids(pairs: list[tuple[ModuleSpec, FieldSpec]]) -> list[str]:
    return [f"{m.name}.{f.api_name}" for m, f in pairs]


def test_the_same_seed_gives_the_same_school_and_another_seed_another():
    assert generate_school(5, scale=0.1) == generate_school(5, scale=0.1)
    assert generate_school(6, scale=0.1) != generate_school(5, scale=0.1)
    assert generate_school() == school()  # DEMO_SEED is the default


def test_counts_at_full_scale_and_scaled():
    assert {m: len(r) for m, r in school().items()} == BASE_COUNTS
    assert set(school()) == {m.api_name for m in MODULES}
    small = generate_school(1, scale=0.1)
    assert {m: len(r) for m, r in small.items()} == {
        m: max(1, round(n * 0.1)) for m, n in BASE_COUNTS.items()
    }


def test_ids_are_19_digits_unique_and_increase_in_creation_order():
    every = [r["id"] for records in school().values() for r in records]
    assert all(len(i) == 19 and i.isdigit() for i in every)
    assert len(set(every)) == len(every)
    for module, records in school().items():
        ids = [int(r["id"]) for r in records]
        assert ids == sorted(ids), module


@pytest.mark.parametrize("spec", MODULES, ids=lambda m: m.name)
def test_records_hold_the_module_fields_and_times_only_where_zoho_has_them(spec: ModuleSpec):
    meta = metadata_for(spec.api_name)
    for rec in school()[spec.api_name]:
        assert set(rec) - {"id"} <= set(meta)
        assert {f.api_name for f in spec.fields} <= set(rec)
        assert ("Modified_Time" in rec) is spec.has_modified_time
        if spec.has_modified_time:
            created, modified = parse_time(rec["Created_Time"]), parse_time(rec["Modified_Time"])
            assert (
                datetime(2026, 1, 1, tzinfo=ORG_TZ)
                <= created
                <= modified
                < datetime(2026, 11, 1, tzinfo=ORG_TZ)
            )
            assert rec["Modified_Time"].endswith("+03:00")


@pytest.mark.parametrize(("spec", "field"), _fields("lookup"), ids=_ids(_fields("lookup")))
def test_lookups_resolve_except_the_listed_dirty_ones(spec: ModuleSpec, field: FieldSpec):
    targets = {r["id"]: r for r in school()[field.lookup_module]}
    dangling = set()
    for position, rec in enumerate(school()[spec.api_name]):
        value = rec[field.api_name]
        if value is None:
            continue
        assert set(value) == {"name", "id"}
        if value["id"] not in targets:
            dangling.add(position)
        else:
            target = targets[value["id"]]
            assert value["name"] == (target.get("Name") or target.get("Product_Name"))
    assert dangling == _dirty(spec.api_name, field.api_name, "missing_lookup")


@pytest.mark.parametrize(("spec", "field"), _fields("picklist"), ids=_ids(_fields("picklist")))
def test_picklist_values_come_from_the_orgs_picklists(spec: ModuleSpec, field: FieldSpec):
    values = [rec[field.api_name] for rec in school()[spec.api_name]]
    outside = {i for i, v in enumerate(values) if v is not None and v not in field.picklist}
    assert outside == _dirty(spec.api_name, field.api_name)
    for i in outside:
        expected = "none_picklist" if values[i] == "-None-" else "unknown_picklist"
        assert i in _dirty(spec.api_name, field.api_name, expected)
    if len(values) > 50:
        assert len(Counter(values)) > 1  # drawn, not constant


@pytest.mark.parametrize(("spec", "field"), _fields("email"), ids=_ids(_fields("email")))
def test_emails_are_valid_except_the_listed_bad_ones(spec: ModuleSpec, field: FieldSpec):
    bad = {
        i
        for i, rec in enumerate(school()[spec.api_name])
        if rec[field.api_name] is not None and not _EMAIL.match(rec[field.api_name])
    }
    assert bad == _dirty(spec.api_name, field.api_name, "bad_email")
    if field.api_name == "Academic_Email":
        emails = [r[field.api_name] for r in school()[spec.api_name] if r[field.api_name]]
        assert len(set(emails)) == len(emails)
        assert sum(bool(_ACADEMIC.match(e)) for e in emails) >= len(emails) - 3


@pytest.mark.parametrize(("spec", "field"), _fields("date"), ids=_ids(_fields("date")))
def test_dates_are_iso_dates_except_the_listed_bad_ones(spec: ModuleSpec, field: FieldSpec):
    bad = set()
    for i, rec in enumerate(school()[spec.api_name]):
        try:
            if rec[field.api_name] is not None:
                date.fromisoformat(rec[field.api_name])
        except ValueError:
            bad.add(i)
    assert bad == _dirty(spec.api_name, field.api_name, "bad_date")


@pytest.mark.parametrize("spec", [m for m in MODULES if m.date_order], ids=lambda m: m.name)
def test_end_dates_follow_start_dates_except_the_listed_ones(spec: ModuleSpec):
    start, end = (spec.field(c).api_name for c in spec.date_order)
    backwards = set()
    for i, rec in enumerate(school()[spec.api_name]):
        try:
            if date.fromisoformat(rec[end]) < date.fromisoformat(rec[start]):
                backwards.add(i)
        except (TypeError, ValueError):
            continue
    assert backwards == _dirty(spec.api_name, end, "bad_date_order")


@pytest.mark.parametrize("spec", MODULES, ids=lambda m: m.name)
def test_required_fields_are_filled_except_the_listed_ones(spec: ModuleSpec):
    for field in (f for f in spec.fields if f.required):
        empty = {i for i, rec in enumerate(school()[spec.api_name]) if rec[field.api_name] in (None, "")}
        assert empty == _dirty(spec.api_name, field.api_name, "missing_required"), field.api_name


@pytest.mark.parametrize("spec", [m for m in MODULES if m.natural_key], ids=lambda m: m.name)
def test_natural_keys_are_unique(spec: ModuleSpec):
    keys = [
        tuple(str(rec[spec.field(c).api_name]) for c in spec.natural_key)
        for rec in school()[spec.api_name]
        if all(rec[spec.field(c).api_name] for c in spec.natural_key)
    ]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("dirt", DIRTY_RECORDS, ids=lambda d: f"{d.module}[{d.position}].{d.field}")
def test_each_dirty_record_holds_its_dirty_value(dirt: DirtyRecord):
    assert school()[dirt.module][dirt.position][dirt.field] == dirt.value
    assert dirt.outcome == {"none_picklist": "VALID", "missing_lookup": "SKIPPED"}.get(
        dirt.problem, "INVALID"
    )


def test_dirty_records_are_a_few_percent_and_nobody_points_at_a_rejected_one():
    per_module = Counter(d.module for d in DIRTY_RECORDS)
    for module, n in per_module.items():
        assert n <= max(1, 0.05 * BASE_COUNTS[module]), module
    rejected = {school()[d.module][d.position]["id"] for d in DIRTY_RECORDS if d.outcome != "VALID"}
    for spec in MODULES:
        for field in (f for f in spec.fields if f.kind == "lookup"):
            pointed = {r[field.api_name]["id"] for r in school()[spec.api_name] if r[field.api_name]}
            assert not pointed & rejected, f"{spec.name}.{field.api_name}"


def test_names_are_realistic_arabic_turkish_and_english():
    students = school()["BTEC_Students"]
    natives = [s["Frist_Name_Native"] for s in students if s["Frist_Name_Native"]]
    assert len(natives) > 0.5 * len(students) and all(_ARABIC.search(n) for n in natives)
    assert all(_ARABIC.search(s["Last_Name_Native"]) for s in students if s["Last_Name_Native"])
    assert not any(_ARABIC.search(s["First_Name"] or "") for s in students)  # transliterated
    assert any(set("çğışöüÇĞİŞÖÜ") & set(s["Last_Name"] + (s["First_Name"] or "")) for s in students)
    assert any(s["Nationality"] == "United Kingdom" for s in students)


def test_a_clean_record_of_every_module_is_accepted_by_the_simulator():
    """The generator and the simulator's validation agree on what a valid record is."""
    creds = demo_credentials()
    with ZohoSimulator(data=generate_school(3, scale=0.05)) as sim:
        token = requests.post(
            f"{sim.accounts_url}/oauth/v2/token",
            data={"grant_type": "refresh_token", **creds._asdict()},
            timeout=5,
        ).json()["access_token"]
        for spec in MODULES:
            record = dict(sim.records(spec.api_name)[0])
            record.pop("id")
            r = requests.post(
                f"{sim.api_domain}/crm/v8/{spec.api_name}/upsert",
                json={"data": [record], "trigger": []},
                headers={"Authorization": f"Zoho-oauthtoken {token}"},
                timeout=5,
            )
            assert r.status_code == 200, (spec.name, r.json())
