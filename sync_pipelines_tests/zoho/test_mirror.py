"""The warehouse mirrors Zoho: every live record, every field, deletions only when Zoho confirms.

End to end without Dagster, over real HTTP: the Zoho simulator → client → sync → warehouse, and the
Moodle provisioning step that decides what it cannot use. Each test names the case of the mirror
it guards (what an independent Zoho endpoint showed the earlier version getting wrong).
"""

import copy
import json
from collections.abc import Iterator
from functools import cache
from typing import Any

import pandas as pd
import pytest

from sync_pipelines.diff import Status
from sync_pipelines.moodle.client import MoodleClient
from sync_pipelines.moodle.entities import desired_courses, desired_enrolments, desired_users, entity
from sync_pipelines.moodle.reconcile import reconcile
from sync_pipelines.sandbox import MoodleSimulator, ZohoSimulator, generate_school
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.zoho.client import ZohoClient
from sync_pipelines.zoho.modules import MODULES, module
from sync_pipelines.zoho.sync import sync_module

TENANT = "school_a"
CLIENT = ("test-client", "test-secret", "test-refresh")


@cache
def _school(scale: float) -> dict[str, list[dict]]:
    return generate_school(2026, scale=scale)


def _start(sim: ZohoSimulator) -> Iterator[ZohoSimulator]:
    sim.start()
    yield sim
    sim.stop()


def _new_sim(cls: type[ZohoSimulator] = ZohoSimulator, scale: float = 0.2, **kwargs: Any) -> ZohoSimulator:
    return cls(
        data=copy.deepcopy(_school(scale)),
        clients={CLIENT[0]: (CLIENT[1], CLIENT[2])},
        refresh_limit_per_minute=None,
        **kwargs,
    )


@pytest.fixture
def sim() -> Iterator[ZohoSimulator]:
    yield from _start(_new_sim())


def _client(sim: ZohoSimulator) -> ZohoClient:
    return ZohoClient(
        tenant_id=TENANT,
        accounts_url=sim.accounts_url,
        client_id=CLIENT[0],
        client_secret=CLIENT[1],
        refresh_token=CLIENT[2],
        sleep=lambda _s: None,
    )


def _sync(sim: ZohoSimulator, store: Warehouse, names: list[str] | None = None, **kwargs: Any):
    client = _client(sim)
    return {
        spec.name: sync_module(tenant_id=TENANT, spec=spec, client=client, warehouse=store, **kwargs)
        for spec in MODULES
        if names is None or spec.name in names
    }


def _live_ids(store: Warehouse, name: str) -> set[str]:
    return set(store.read_table(TENANT, module(name))["zoho_id"])


def _row(store: Warehouse, name: str, zoho_id: str) -> dict:
    table = store.read_table(TENANT, module(name), include_deleted=True)
    rows = table[table["zoho_id"] == zoho_id]
    assert len(rows) == 1, f"{name} {zoho_id} is not in the warehouse"
    return rows.iloc[0].to_dict()


def _findings(row: dict) -> list[dict]:
    return json.loads(row["findings"]) if isinstance(row["findings"], str) else []


def _last_result(store: Warehouse, name: str, zoho_id: str) -> dict:
    results = store.results(TENANT, name, zoho_id)
    assert len(results), f"no sync_results row for {name} {zoho_id}"
    return results.iloc[-1].to_dict()


def test_every_live_record_of_every_module_is_in_the_warehouse(sim: ZohoSimulator, warehouse: Warehouse):
    """The demo school is dirty on purpose (bad e-mails, missing required fields, dangling
    lookups, bad picklist values): none of it keeps a record out of the mirror."""
    reports = _sync(sim, warehouse)
    for spec in MODULES:
        held = {r["id"] for r in sim.records(spec.api_name)}
        assert _live_ids(warehouse, spec.name) == held, spec.name
        counts = reports[spec.name].counts
        assert counts["NEW"] + counts["INVALID"] == len(held), spec.name
    # The dirty records are there, each with every rule it breaks named with field and value.
    invalid = sum(warehouse.accounted_for(TENANT, spec)["invalid"] for spec in MODULES)
    assert invalid > 0
    students = warehouse.read_table(TENANT, module("students"))
    flagged = students[students["findings"].notna()]
    for text in flagged["findings"]:
        for finding in json.loads(text):
            assert set(finding) >= {"rule", "field", "value"}
    # A second run changes nothing and leaves the mirror as it is.
    again = _sync(sim, warehouse)
    for spec in MODULES:
        assert again[spec.name].counts["NEW"] == 0, spec.name
        assert again[spec.name].counts["DELETED"] == 0, spec.name
        assert _live_ids(warehouse, spec.name) == {r["id"] for r in sim.records(spec.api_name)}


def _student(sim: ZohoSimulator, **fields: Any) -> str:
    base = {"First_Name": "Amira", "Last_Name": "Kaya", "Status": "Active"}
    return sim.insert("BTEC_Students", {**base, **fields})


def _class_id(sim: ZohoSimulator, n: int = 0) -> str:
    return sorted(sim.records("BTEC_Classes"), key=lambda r: r["id"])[n]["id"]


def _enrol(sim: ZohoSimulator, student_id: str, class_id: str) -> str:
    return sim.insert(
        "BTEC_Enrollments",
        {"Enrolled_Students": {"id": student_id}, "Classes": {"id": class_id}, "Enrollment_Type": "Normal"},
    )


def test_a_student_without_academic_email_is_mirrored_and_the_moodle_step_says_why_it_waits(
    sim: ZohoSimulator, warehouse: Warehouse
):
    student = _student(sim)  # Academic_Email is not mandatory in the org: Zoho holds such students
    enrolment = _enrol(sim, student, _class_id(sim))
    _sync(sim, warehouse)

    row = _row(warehouse, "students", student)
    assert pd.isna(row["deleted_at"])
    assert {"rule": "required", "field": "Academic_Email", "value": None} in _findings(row)
    logged = _last_result(warehouse, "students", student)
    assert (logged["status"], logged["change"]) == ("INVALID", "NEW")
    assert "Academic_Email: required" in logged["reason"]
    # Its enrolment is not held back either: its student is in the mirror.
    assert enrolment in _live_ids(warehouse, "enrolments")
    assert _findings(_row(warehouse, "enrolments", enrolment)) == []

    # The Moodle step decides: no account, and the reason names the field and the value.
    users = desired_users(warehouse, TENANT).rows.set_index("zoho_id")
    assert "Academic_Email: required (empty)" in users.at[student, "unusable"]
    moodle = MoodleSimulator(tokens={"t": None})
    moodle.start()
    try:
        report = reconcile(
            entity("users"),
            MoodleClient(tenant_id=TENANT, base_url=moodle.base_url, token="t"),
            warehouse,
            TENANT,
            dry_run=True,
        )
    finally:
        moodle.stop()
    skipped = report.skipped.set_index("key")["reason"]
    assert skipped[student].startswith("no Moodle account: Academic_Email: required")
    assert student not in set(report.plan["key"])
    waiting = desired_enrolments(warehouse, TENANT).waiting
    reason = waiting.set_index("key").at[f"enrolment:{enrolment}", "reason"]
    assert f"waits for BTEC_Students {student}, which has no Moodle account: Academic_Email" in reason


def test_a_lookup_to_a_record_zoho_does_not_hold_is_a_finding_not_a_wait(
    sim: ZohoSimulator, warehouse: Warehouse
):
    ghost = "5843017000099999999"
    enrolment = _enrol(sim, ghost, _class_id(sim))
    reports = _sync(sim, warehouse)
    row = _row(warehouse, "enrolments", enrolment)
    assert {"rule": "lookup_missing", "field": "Enrolled_Students", "value": ghost} in _findings(row)
    assert (
        "BTEC_Students 5843017000099999999 does not exist in Zoho"
        in _last_result(warehouse, "enrolments", enrolment)["reason"]
    )
    assert reports["enrolments"].extra["lookups_missing_in_zoho"] >= 1
    waiting = desired_enrolments(warehouse, TENANT).waiting
    reason = waiting.set_index("key").at[f"enrolment:{enrolment}", "reason"]
    assert reason == f"waits for BTEC_Students {ghost}, which does not exist in Zoho"


def test_a_lookup_whose_target_zoho_holds_is_noted_and_the_record_is_valid(
    sim: ZohoSimulator, warehouse: Warehouse
):
    _sync(sim, warehouse)
    # The student is created after the students sync ran (as a webhook race would have it).
    student = _student(sim, Academic_Email="late.comer@school.example")
    enrolment = _enrol(sim, student, _class_id(sim))
    _sync(sim, warehouse, ["enrolments"], full_refresh=True)
    row = _row(warehouse, "enrolments", enrolment)
    assert _findings(row) == []
    logged = _last_result(warehouse, "enrolments", enrolment)
    assert logged["status"] == "NEW"
    assert f"BTEC_Students {student} is in Zoho but not in the warehouse yet" in logged["reason"]


def test_classes_sharing_a_short_name_are_both_mirrored_and_only_the_first_gets_a_course(
    sim: ZohoSimulator, warehouse: Warehouse
):
    first = sorted(sim.records("BTEC_Classes"), key=lambda r: r["id"])[0]
    twin = sim.insert(
        "BTEC_Classes",
        {"Class_Name": "Twin class", "Class_Short_Name": first["Class_Short_Name"], "Class_Status": "Active"},
    )
    _sync(sim, warehouse)
    assert {first["id"], twin} <= _live_ids(warehouse, "classes")
    finding = [f for f in _findings(_row(warehouse, "classes", twin)) if f["rule"] == "duplicate_natural_key"]
    assert finding == [
        {
            "rule": "duplicate_natural_key",
            "field": "class_short_name",
            "value": first["Class_Short_Name"],
            "holder": first["id"],
        }
    ]
    assert not [
        f for f in _findings(_row(warehouse, "classes", first["id"])) if f["rule"] == "duplicate_natural_key"
    ]
    courses = desired_courses(warehouse, TENANT).rows.set_index("zoho_id")
    assert f"is already BTEC_Classes {first['id']}'s" in courses.at[twin, "unusable"]
    assert pd.isna(courses.at[first["id"], "unusable"])
    # An incremental run that re-reads only the first class never moves the key to the twin.
    sim.update("BTEC_Classes", first["id"], Term="Spring")
    _sync(sim, warehouse, ["classes"])
    assert not [
        f for f in _findings(_row(warehouse, "classes", first["id"])) if f["rule"] == "duplicate_natural_key"
    ]


def test_a_bad_personal_email_does_not_stop_a_teachers_account_or_their_class(
    sim: ZohoSimulator, warehouse: Warehouse
):
    teacher = sim.insert(
        "BTEC_Teachers",
        {"Name": "Selin Aydin", "Email": "not-an-email", "Academic_Email": "selin@school.example"},
    )
    klass = sim.insert(
        "BTEC_Classes",
        {"Class_Name": "Selin's class", "Class_Short_Name": "SEL-1", "Teacher": {"id": teacher}},
    )
    _sync(sim, warehouse)
    assert {"rule": "invalid_email", "field": "Email", "value": "not-an-email"} in _findings(
        _row(warehouse, "teachers", teacher)
    )
    users = desired_users(warehouse, TENANT).rows.set_index("zoho_id")
    assert users["unusable"].isna()[teacher]
    courses = desired_courses(warehouse, TENANT).rows.set_index("zoho_id")
    assert courses["unusable"].isna()[klass]


class _ShiftingZoho(ZohoSimulator):
    """Deletes one record of a module while a full read of it is between its first and second
    page, and leaves another live record out of one answer: what a read by pages can see."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.victim: tuple[str, str] | None = None
        self.hidden: tuple[str, str] | None = None
        self._served: dict[str, int] = {}

    def _get_records(self, module: str, query: dict[str, str], headers: Any):
        if "ids" in query:
            return super()._get_records(module, query, headers)
        served = self._served.get(module, 0)
        self._served[module] = served + 1
        if self.victim and self.victim[0] == module and served == 1:
            self.delete(*self.victim)
        response = super()._get_records(module, query, headers)
        if self.hidden and self.hidden[0] == module and response.body:
            response.body["data"] = [r for r in response.body["data"] if r["id"] != self.hidden[1]]
        return response


def test_a_full_read_marks_deleted_only_what_zoho_confirms(warehouse: Warehouse):
    sim = _ShiftingZoho(
        data=copy.deepcopy(_school(0.2)),
        clients={CLIENT[0]: (CLIENT[1], CLIENT[2])},
        refresh_limit_per_minute=None,
    )
    sim.start()
    try:
        _sync(sim, warehouse)
        enrolments = sorted(sim.records("BTEC_Enrollments"), key=lambda r: r["id"])
        assert len(enrolments) > 200  # the read takes more than one page
        # Read newest first: the oldest record is on the last page, deleted before it is served.
        victim, hidden = enrolments[0]["id"], enrolments[len(enrolments) // 2]["id"]
        sim.victim, sim.hidden = ("BTEC_Enrollments", victim), ("BTEC_Enrollments", hidden)
        sim._served.clear()
        report = _sync(sim, warehouse, ["enrolments"], full_refresh=True)["enrolments"]
    finally:
        sim.stop()
    deleted = set(report.result.ids(Status.DELETED))
    assert deleted == {victim}
    assert hidden in _live_ids(warehouse, "enrolments")
    assert _live_ids(warehouse, "enrolments") == {r["id"] for r in sim.records("BTEC_Enrollments")}
    assert report.extra["confirmed_deleted"] == 1


def test_more_deletions_than_deleted_lists_converge_in_one_run(warehouse: Warehouse):
    sim = _new_sim(scale=1.0)
    sim.start()
    try:
        _sync(sim, warehouse, ["students", "programmes", "teachers", "units", "classes", "enrolments"])
        gone = [r["id"] for r in sorted(sim.records("BTEC_Enrollments"), key=lambda r: r["id"])[:2100]]
        for zid in gone:
            sim.delete("BTEC_Enrollments", zid)
        first = _sync(sim, warehouse, ["enrolments"], deleted_check_minutes=0)["enrolments"]
        assert set(first.result.ids(Status.DELETED)) == set(gone)
        assert _live_ids(warehouse, "enrolments") == {r["id"] for r in sim.records("BTEC_Enrollments")}
        # Not stuck: the next run is an ordinary one.
        second = _sync(sim, warehouse, ["enrolments"], deleted_check_minutes=0)["enrolments"]
        assert second.mode == "incremental"
        assert second.counts["DELETED"] == 0
    finally:
        sim.stop()


def test_a_bookkeeping_only_change_reaches_the_warehouse_as_refreshed(
    sim: ZohoSimulator, warehouse: Warehouse
):
    _sync(sim, warehouse)
    student = sorted(sim.records("BTEC_Students"), key=lambda r: r["id"])[5]["id"]
    sim.update("BTEC_Students", student, Student_Moodle_ID="4242")
    report = _sync(sim, warehouse, ["students"])["students"]
    logged = _last_result(warehouse, "students", student)
    assert logged["change"] == "REFRESHED"
    assert report.counts["UPDATED"] == 0
    row = _row(warehouse, "students", student)
    assert row["student_moodle_id"] == "4242"
    stamp = pd.Timestamp(sim.record("BTEC_Students", student)["Modified_Time"])
    stored = pd.Timestamp(row["zoho_modified_time"])
    stored = stored.tz_convert(None) if stored.tzinfo else stored
    assert stored == stamp.tz_convert("UTC").tz_localize(None)
    # A full refresh keeps it so.
    _sync(sim, warehouse, ["students"], full_refresh=True)
    assert _row(warehouse, "students", student)["student_moodle_id"] == "4242"


def test_a_formula_field_is_refreshed_by_a_full_read(sim: ZohoSimulator, warehouse: Warehouse):
    _sync(sim, warehouse)
    student = sorted(sim.records("BTEC_Students"), key=lambda r: r["id"])[7]["id"]
    sim.set_formula("BTEC_Students", student, "Total_Amount", 1234.5)
    incremental = _sync(sim, warehouse, ["students"])["students"]
    assert student not in set(incremental.result.records["zoho_id"])  # Modified_Time did not move
    full = _sync(sim, warehouse, ["students"], full_refresh=True)["students"]
    assert _row(warehouse, "students", student)["total_amount"] == "1234.5"
    changed = full.result.records.set_index("zoho_id")
    assert changed.at[student, "change"] == "REFRESHED"


def test_subform_rows_are_a_child_table_that_follows_its_parent(sim: ZohoSimulator, warehouse: Warehouse):
    student = sorted(sim.records("BTEC_Students"), key=lambda r: r["id"])[0]["id"]
    programme = sorted(sim.records("Products"), key=lambda r: r["id"])[0]["id"]
    registration = sim.insert(
        "BTEC_Registrations",
        {
            "Student_ID": {"id": student},
            "Program": {"id": programme},
            "Payment_Schedule": [
                {"Installment_Amount": 500.0, "Due_Date": "2027-01-15"},
                {"Installment_Amount": 700.0, "Due_Date": "2027-03-15"},
            ],
        },
    )
    _sync(sim, warehouse)
    spec = module("registrations")
    child = warehouse.read_subform(TENANT, spec, "payment_schedule")
    mine = child[child["parent_id"] == registration]
    rows = sim.record("BTEC_Registrations", registration)["Payment_Schedule"]
    assert list(mine["row_id"]) == [str(r["id"]) for r in rows]
    assert [json.loads(f)["Installment_Amount"] for f in mine["fields"]] == [500.0, 700.0]

    # One row edited and one removed in Zoho: the parent is UPDATED and its rows replaced.
    sim.update(
        "BTEC_Registrations", registration, Payment_Schedule=[{**rows[0], "Installment_Amount": 550.0}]
    )
    report = _sync(sim, warehouse, ["registrations"])["registrations"]
    assert registration in set(report.result.ids(Status.UPDATED))
    child = warehouse.read_subform(TENANT, spec, "payment_schedule")
    mine = child[child["parent_id"] == registration]
    assert list(mine["row_id"]) == [str(rows[0]["id"])]
    assert json.loads(mine.iloc[0]["fields"])["Installment_Amount"] == 550.0

    # Deleted with its parent.
    sim.delete("BTEC_Registrations", registration)
    _sync(sim, warehouse, ["registrations"], deleted_check_minutes=0)
    child = warehouse.read_subform(TENANT, spec, "payment_schedule")
    assert child.loc[child["parent_id"] == registration, "deleted_at"].notna().all()


def test_a_warehouse_of_the_previous_version_is_upgraded_and_its_next_sync_stores_what_was_held_back(
    sim: ZohoSimulator, warehouse_url: str
):
    """Made by the previous schema (revision 0001), with a student stored and a read position
    that would let the next read be incremental: after the upgrade the next sync is a full read,
    and every student Zoho holds is stored, the ones the previous version held back included."""
    import sqlalchemy as sa
    from alembic import command

    from sync_pipelines.warehouse.migrate import alembic_config

    engine = sa.create_engine(warehouse_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(connection=conn), "0001_baseline")
    students = sorted(sim.records("BTEC_Students"), key=lambda r: r["id"])
    now = pd.Timestamp.now(tz="UTC").to_pydatetime()
    with engine.begin() as conn:
        table = sa.Table("zoho_students", sa.MetaData(), autoload_with=conn)
        conn.execute(
            table.insert(),
            [
                {
                    "tenant_id": TENANT,
                    "zoho_id": students[0]["id"],
                    "first_name": students[0]["First_Name"],
                    "fingerprint": "0" * 64,
                    "first_seen_at": now,
                    "updated_at": now,
                    "sync_run_id": "before",
                }
            ],
        )
        cursors = sa.Table("sync_cursors", sa.MetaData(), autoload_with=conn)
        conn.execute(
            cursors.insert(),
            [
                {
                    "tenant_id": TENANT,
                    "module": "students",
                    "modified_since": now.isoformat(),
                    "deleted_since": now.isoformat(),
                    "last_full_at": now,
                    "updated_at": now,
                }
            ],
        )
    engine.dispose()

    store = Warehouse(warehouse_url)  # upgrades in place
    report = _sync(sim, store, ["students"])["students"]
    assert report.mode == "full"
    assert _live_ids(store, "students") == {r["id"] for r in students}
    assert store.accounted_for(TENANT, module("students"))["invalid"] > 0
    store.dispose()


def test_a_push_or_a_deletion_event_without_subforms_keeps_the_stored_rows(
    sim: ZohoSimulator, warehouse: Warehouse
):
    """Zoho leaves subforms out of list reads, and a pushed record may come without them: neither
    is a subform emptied. A push that carries them is applied as sent."""
    _sync(sim, warehouse)
    spec = module("registrations")
    registration = next(r for r in sim.records("BTEC_Registrations") if r.get("Payment_Schedule"))

    def rows() -> pd.DataFrame:
        child = warehouse.read_subform(TENANT, spec, "payment_schedule")
        return child[(child["parent_id"] == registration["id"]) & child["deleted_at"].isna()]

    before = list(rows()["row_id"])
    assert before == [str(r["id"]) for r in registration["Payment_Schedule"]]
    client = _client(sim)

    pushed = {k: v for k, v in registration.items() if k != "Payment_Schedule"} | {"Intake": "Spring 2027"}
    sync_module(tenant_id=TENANT, spec=spec, client=client, warehouse=warehouse, pushed_records=[pushed])
    assert list(rows()["row_id"]) == before
    # a deletion event about a record Zoho still holds (a read by id with ids=, a list read)
    report = sync_module(
        tenant_id=TENANT, spec=spec, client=client, warehouse=warehouse, deleted_ids=[registration["id"]]
    )
    assert report.counts["DELETED"] == 0
    assert list(rows()["row_id"]) == before
    # a push with the subform: as sent
    one_row = registration["Payment_Schedule"][:1]
    sync_module(
        tenant_id=TENANT,
        spec=spec,
        client=client,
        warehouse=warehouse,
        pushed_records=[pushed | {"Payment_Schedule": one_row}],
    )
    assert list(rows()["row_id"]) == [str(one_row[0]["id"])]
