"""Drift both ways: what Moodle lacks or contradicts is restored (or reported), what only Moodle
holds is reported (or suspended, hidden, unenrolled), never deleted. Against the Moodle simulator,
changes "by hand" made through its web services as an admin would, on SQLite and PostgreSQL."""

import pandas as pd
import pytest

from sync_pipelines.moodle.entities import ENTITIES, STUDENT_ROLE, entity
from sync_pipelines.moodle.reconcile import reconcile
from sync_pipelines.tenants import DriftPolicy
from sync_pipelines.zoho.modules import module
from sync_pipelines_tests.moodle.conftest import TENANT, World


def _run(world: World, policy: DriftPolicy | None = None) -> dict:
    m = world.moodle()
    return {s.name: reconcile(s, m, world.store, TENANT, policy=policy) for s in ENTITIES}


def _an_enrolment(world: World) -> tuple[str, int, int]:
    held = world.store.moodle.enrolments(TENANT)
    held = held[held.index.str.startswith("enrolment:")]
    key = held.index[0]
    return key, int(held.at[key, "moodle_user_id"]), int(held.at[key, "moodle_course_id"])


def _drift(world: World, entity_name: str) -> pd.DataFrame:
    return world.store.moodle.drift(TENANT, entity(entity_name).entity)


def test_an_enrolment_removed_by_hand_is_restored_at_the_next_run_and_reported(world: World):
    _run(world)
    key, user, course = _an_enrolment(world)
    [result] = world.moodle().unenrol([{"userid": user, "courseid": course}])
    assert result.ok
    assert not [e for e in world.moodle_sim.enrolments(course) if e["userid"] == user]

    reports = _run(world)
    assert ("restore", key) in [(p.action, p.key) for p in reports["enrolments"].pushes]
    assert [e["roles"] for e in world.moodle_sim.enrolments(course) if e["userid"] == user] == [
        [STUDENT_ROLE]
    ]
    drift = _drift(world, "enrolments").set_index("key")
    assert drift.at[key, "side"] == "zoho" and drift.at[key, "kind"] == "missing"
    assert drift.at[key, "action"] == "restored" and bool(drift.at[key, "healed"])
    assert key in world.store.moodle.enrolments(TENANT).index

    # healed: the next run finds nothing to restore, and the drift table says so
    again = _run(world)
    assert [p for p in again["enrolments"].pushes if p.action == "restore"] == []
    assert key not in set(_drift(world, "enrolments")["key"])


def test_an_enrolment_made_by_hand_is_reported_and_kept_unless_the_school_says_unenrol(world: World):
    _run(world)
    students = world.store.moodle.id_map(TENANT, "user").query("zoho_module == 'students'")
    courses = world.store.moodle.id_map(TENANT, "course")
    held = world.store.moodle.enrolments(TENANT)
    pairs = set(zip(held["moodle_user_id"], held["moodle_course_id"], strict=True))
    user, course = next(
        (int(u), int(c)) for u in students["moodle_id"] for c in courses["moodle_id"] if (u, c) not in pairs
    )
    assert world.moodle().enrol([{"userid": user, "courseid": course, "roleid": STUDENT_ROLE}])[0].ok
    ident = f"{user}:{course}:{STUDENT_ROLE}"

    _run(world)
    drift = _drift(world, "enrolments").set_index("moodle_id")
    assert drift.at[ident, "side"] == "moodle" and drift.at[ident, "action"] == "reported"
    assert not bool(drift.at[ident, "healed"])
    assert [e for e in world.moodle_sim.enrolments(course) if e["userid"] == user]  # kept

    _run(world, DriftPolicy(moodle_only={"enrolments": "unenrol"}))
    assert not [e for e in world.moodle_sim.enrolments(course) if e["userid"] == user]
    assert _drift(world, "enrolments").set_index("moodle_id").at[ident, "action"] == "unenrolled"


def test_a_suspended_account_of_an_active_student_and_a_renamed_course_are_put_back(world: World):
    _run(world)
    active = world.store.read_table(TENANT, module("students")).query("status == 'Active'")
    ids = world.store.moodle.id_map(TENANT, "user")
    zid = next(z for z in active["zoho_id"] if z in ids.index)
    uid = int(ids.at[zid, "moodle_id"])
    course_zid, course_row = next(iter(world.store.moodle.id_map(TENANT, "course").iterrows()))
    cid = int(course_row["moodle_id"])
    m = world.moodle()
    assert m.update_users([{"id": uid, "suspended": 1}])[0].ok
    assert m.update_courses([{"id": cid, "fullname": "Renamed by hand"}])[0].ok

    # report only: nothing is written back, both differences are listed with what differs
    _run(world, DriftPolicy(restore=False))
    assert world.moodle_sim.user(uid)["suspended"] == 1
    users = _drift(world, "users").set_index("key")
    assert users.at[zid, "kind"] == "differs" and users.at[zid, "action"] == "reported"
    assert "suspended: Moodle '1', Zoho '0'" in users.at[zid, "detail"]
    courses = _drift(world, "courses").set_index("key")
    assert "fullname: Moodle 'Renamed by hand'" in courses.at[course_zid, "detail"]

    # the default restores them
    _run(world)
    assert world.moodle_sim.user(uid)["suspended"] == 0
    course = next(c for c in world.moodle_sim.courses() if c["id"] == cid)
    assert course["fullname"] != "Renamed by hand"
    assert bool(_drift(world, "users").set_index("key").at[zid, "healed"])


def test_an_unknown_school_account_and_a_course_without_a_class_are_reported_never_deleted(world: World):
    _run(world)
    domain = (
        world.store.read_table(TENANT, module("students"))["academic_email"].dropna().iloc[0].split("@")[1]
    )
    stranger = world.moodle_sim.add_user(
        username="stranger", firstname="Un", lastname="Known", email=f"stranger@{domain}"
    )
    [made] = world.moodle().create_courses(
        [{"fullname": "Staff room", "shortname": "STAFF", "categoryid": 1}]
    )
    course = int(made.value["id"])
    _run(world)
    users = _drift(world, "users").set_index("moodle_id")
    assert users.at[str(stranger), "side"] == "moodle" and users.at[str(stranger), "action"] == "reported"
    courses = _drift(world, "courses").set_index("moodle_id")
    assert courses.at[str(course), "kind"] == "moodle_only"
    assert world.moodle_sim.user(stranger)["suspended"] == 0
    assert any(c["id"] == course for c in world.moodle_sim.courses())

    _run(world, DriftPolicy(moodle_only={"users": "suspend", "courses": "hide"}))
    assert world.moodle_sim.user(stranger)["suspended"] == 1
    assert next(c for c in world.moodle_sim.courses() if c["id"] == course)["visible"] == 0
    assert _drift(world, "users").set_index("moodle_id").at[str(stranger), "action"] == "suspended"


def test_moodle_answering_none_of_the_mapped_enrolments_restores_nothing(world: World):
    _run(world)
    held = world.store.moodle.enrolments(TENANT)
    m = world.moodle()
    m.unenrol(
        [
            {"userid": int(u), "courseid": int(c)}
            for u, c in zip(held["moodle_user_id"], held["moodle_course_id"], strict=True)
        ]
    )
    report = _run(world)["enrolments"]
    assert [p for p in report.pushes if p.action in ("restore", "create")] == []
    drift = _drift(world, "enrolments")
    assert len(drift) >= len(held) - 1
    assert drift["action"].eq("reported").all()
    assert drift["detail"].str.contains("run the preflight").all()


@pytest.mark.parametrize(
    "policy",
    [{"restore": "yes"}, {"moodle_only": {"courses": "unenrol"}}, {"moodle_only": {"grades": "keep"}}],
)
def test_a_drift_setting_that_is_not_understood_is_refused_with_what_is_allowed(policy, tmp_path):
    from sync_pipelines.tenants import read_tenants

    path = tmp_path / "tenants.yaml"
    import yaml

    path.write_text(
        yaml.safe_dump(
            {"tenants": [{"id": "a", "moodle": {"base_url": "http://m", "token_env": "T", "drift": policy}}]}
        )
    )
    tenants = read_tenants(path)
    assert "a" in tenants.broken
    assert "moodle.drift" in tenants.broken["a"]


def test_a_warehouse_of_the_previous_schema_gets_the_drift_and_rubric_tables_and_new_columns_in_place(
    warehouse_url: str,
):
    """The schema before this change had no ``moodle_drift`` and no ``moodle_site.preflight*``: a
    warehouse holding a site row and an id map is upgraded in place, its rows kept."""
    import sqlalchemy as sa

    from sync_pipelines.warehouse import Warehouse
    from sync_pipelines.warehouse.migrate import STATE_TABLE

    store = Warehouse(warehouse_url)
    store.moodle.save_site("t1", 7, "4.5+")
    store.moodle.save_reconciliation(
        "t1",
        "user",
        maps=[
            {
                "key": "z1",
                "zoho_id": "z1",
                "zoho_module": "students",
                "moodle_id": "41",
                "pushed_fingerprint": "f",
            }
        ],
        removed=[],
        derived=False,
        pushes=[],
        drift=pd.DataFrame(columns=["key", "moodle_id", "side", "kind", "detail", "action", "healed"]),
        run_id=None,
    )
    store.moodle.save_grades(
        "t1",
        [
            {
                "composite_key": "41_7",
                "moodle_user_id": 41,
                "moodle_course_id": 3,
                "grade_item_id": 7,
                "grade_raw": 36.0,
                "grade_max": 50.0,
                "fingerprint": "f",
            }
        ],
    )
    with store.engine.begin() as conn:  # back to the previous schema
        conn.exec_driver_sql("DROP TABLE moodle_drift")
        conn.exec_driver_sql("DROP TABLE moodle_rubrics")
        conn.exec_driver_sql("ALTER TABLE moodle_site DROP COLUMN preflight")
        conn.exec_driver_sql("ALTER TABLE moodle_site DROP COLUMN preflight_at")
        for column in ("letter", "grading", "criteria", "remarks", "reason", "unit_zoho_id", "attempt"):
            conn.exec_driver_sql(f"ALTER TABLE moodle_grades DROP COLUMN {column}")
        for column in ("grader_id", "graded_at", "feedback"):
            conn.exec_driver_sql(f"ALTER TABLE moodle_grades DROP COLUMN {column}")
        conn.exec_driver_sql(f"DELETE FROM {STATE_TABLE}")
    store.dispose()

    upgraded = Warehouse(warehouse_url)
    columns = {c["name"] for c in sa.inspect(upgraded.engine).get_columns("moodle_site")}
    assert {"preflight", "preflight_at", "service_user_id"} <= columns
    assert upgraded.moodle.service_users() == {"t1": 7}
    assert upgraded.moodle.id_map("t1", "user").loc["z1", "moodle_id"] == 41
    upgraded.moodle.save_preflight("t1", [{"check": "service_functions", "ok": True}], True)
    assert upgraded.moodle.preflight("t1")[0] is not None
    assert upgraded.moodle.drift("t1").empty
    assert upgraded.moodle.rubrics("t1").empty
    assert upgraded.moodle.grades("t1")["grade_raw"].tolist() == [36.0]
    grades = {c["name"] for c in sa.inspect(upgraded.engine).get_columns("moodle_grades")}
    assert {"letter", "grading", "criteria", "remarks", "attempt", "grader_id", "feedback"} <= grades
    upgraded.dispose()
