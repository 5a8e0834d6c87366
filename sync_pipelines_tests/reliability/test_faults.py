"""Faults from the services: a sync under injected faults ends where a fault-free sync ends.

Both simulators share one seeded :class:`~sync_pipelines.sandbox.faults.FaultPlan`: 429s, 500s, 503s,
dropped connections, slow answers, revoked tokens and lost answers (a write applied, its answer
never sent). The demo school is synced through the Dagster job ``full_sync`` as ``make demo`` does
(a first full sync, a school day of edits in Zoho and marking in Moodle, a second sync) and once
more (the next tick, when the warehouse's mirror of Zoho reads back what the second sync wrote),
once without faults and once with them. After every sync the two worlds are compared record for
record: Moodle's users, courses, categories and enrolments (by idnumber: Moodle ids may differ) and
every Zoho record, write-backs included (Moodle ids mapped back to idnumbers); after the last one
also every warehouse row of every module table and the pipeline's id map, enrolments and grades.
A run that fails under faults is run again, as the 15-minute schedule would, within a bound; a run
that succeeds must have reached the fault-free state, not left part of it to the next run.

The helpers here (a school's simulators, runs, snapshots, comparisons) are shared with
``test_isolation.py``.
"""

import contextlib
import copy
import functools
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
import yaml

from sync_pipelines.definitions import build_definitions
from sync_pipelines.moodle import resource as moodle_resource
from sync_pipelines.moodle.client import MoodleClient
from sync_pipelines.moodle.resource import MoodleResource
from sync_pipelines.sandbox import MoodleSimulator, ZohoSimulator, generate_school
from sync_pipelines.sandbox.faults import FaultPlan
from sync_pipelines.tenants import tenant_partitions
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.resource import WarehouseResource
from sync_pipelines.zoho.assets import zoho_ops_config
from sync_pipelines.zoho.modules import MODULES
from sync_pipelines.zoho.resource import ZohoCRMResource

#: Where the tests write their measured figures (the lead assembles RELIABILITY.md from them).
RESULTS_DIR = Path(__file__).resolve().parents[2] / ".local" / "reliability"

#: Fast retries for tests: the real policy's shape (5 retries, exponential, full jitter), in ms.
MAX_RETRIES = 5
BACKOFF_BASE = 0.002
BACKOFF_MAX = 0.02

#: Warehouse columns that say when or by which run, not what: left out of comparisons.
VOLATILE_COLUMNS = frozenset(
    {
        "first_seen_at",
        "updated_at",
        "sync_run_id",
        "zoho_modified_time",
        "last_sync_date",
        "last_sync_with_moodle",
        # a digest of columns that are compared one by one (some of them volatile, above)
        "aux_fingerprint",
    }
)
#: Warehouse columns holding a Moodle id (mirrored from Zoho): mapped to the Moodle object's idnumber.
WAREHOUSE_MOODLE_IDS = {
    "student_moodle_id": "user",
    "teacher_moodle_id": "user",
    "moodle_class_id": "course",
    "moodle_course_id": "course",
    "moodle_grade_id": "item",
    "moodle_grade_composite_key": "composite",
}
#: Zoho fields that say when, not what.
VOLATILE_ZOHO_FIELDS = frozenset(
    {"Created_Time", "Modified_Time", "Last_Sync_Date", "Last_Sync_with_Moodle", "Created_By", "Modified_By"}
)
#: Zoho fields holding a Moodle id (written back by the pipeline): mapped like the warehouse's.
ZOHO_MOODLE_IDS = {
    "Student_Moodle_ID": "user",
    "Teacher_Moodle_ID": "user",
    "Moodle_Class_ID": "course",
    "Moodle_Course_ID": "course",
    "Moodle_Grade_ID": "item",
    "Moodle_Grade_Composite_Key": "composite",
}
#: Moodle fields that say when (or are a secret), not what.
VOLATILE_MOODLE_FIELDS = frozenset(
    {"id", "password", "timecreated", "timemodified", "firstaccess", "lastaccess", "cacherev", "sortorder"}
)


# --- one school: its simulators and credentials --------------------------------------------------------


@dataclass
class School:
    """One tenant: its Zoho and Moodle simulators and the secrets the tenants file points at.

    Attributes:
        tenant_id: the tenant (a ``tenants`` partition).
        zoho: its Zoho simulator (started).
        moodle: its Moodle simulator (started).
        env_prefix: prefix of the environment variables holding its secrets.
        client_id: Zoho OAuth client id.
        client_secret: Zoho OAuth client secret.
        refresh_token: Zoho refresh token.
        moodle_token: Moodle web-services token.
        webhook_secret: the receiver's shared secret for this tenant.
        grade_items: Moodle grade item id → (course idnumber, item name), for the items the
            school's teachers made (so composite keys can be mapped back).
    """

    tenant_id: str
    zoho: ZohoSimulator
    moodle: MoodleSimulator
    env_prefix: str
    client_id: str
    client_secret: str
    refresh_token: str
    moodle_token: str
    webhook_secret: str
    grade_items: dict[int, tuple[str, str]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Environment variable name → value, for the names :meth:`tenant_entry` gives."""
        p = self.env_prefix
        return {
            f"{p}_ZOHO_ID": self.client_id,
            f"{p}_ZOHO_SECRET": self.client_secret,
            f"{p}_ZOHO_REFRESH": self.refresh_token,
            f"{p}_MOODLE": self.moodle_token,
            f"{p}_HOOK": self.webhook_secret,
        }

    def tenant_entry(self) -> dict[str, Any]:
        """This school's entry of a tenants file (names of variables, never secrets)."""
        p = self.env_prefix
        return {
            "id": self.tenant_id,
            "zoho": {
                "accounts_url": self.zoho.accounts_url,
                "client_id_env": f"{p}_ZOHO_ID",
                "client_secret_env": f"{p}_ZOHO_SECRET",
                "refresh_token_env": f"{p}_ZOHO_REFRESH",
            },
            "moodle": {"base_url": self.moodle.base_url, "token_env": f"{p}_MOODLE"},
            "webhook_secret_env": f"{p}_HOOK",
        }

    def stop(self) -> None:
        """Stop both simulators."""
        self.zoho.stop()
        self.moodle.stop()


def start_school(
    tenant_id: str,
    data: dict[str, list[dict]],
    monkeypatch: pytest.MonkeyPatch,
    *,
    faults: FaultPlan | None = None,
    env_prefix: str | None = None,
    hand_made_moodle_users: int = 0,
) -> School:
    """Start one school's simulators, export its secrets, and return it.

    Args:
        tenant_id: the tenant id.
        data: the Zoho records (``generate_school`` output), copied as they are.
        monkeypatch: sets the secrets in the environment for the test's duration.
        faults: a fault plan for both simulators (shared: one RNG for the school's requests).
        env_prefix: prefix of the secrets' variable names (default: from the tenant id).
        hand_made_moodle_users: accounts made by hand in Moodle before any sync, so that this
            school's Moodle ids differ from another's.
    """
    prefix = env_prefix or tenant_id.upper().replace("-", "_")
    secret = f"{tenant_id}-zoho-secret-value"
    zoho = ZohoSimulator(
        data=data,
        clients={f"{tenant_id}-client": (secret, f"{tenant_id}-refresh-value")},
        # The token endpoint's throttle is not under test; faults revoke tokens often.
        refresh_limit_per_minute=None,
        faults=faults,
    )
    moodle = MoodleSimulator(tokens={f"{tenant_id}-moodle-token-value": None}, faults=faults)
    for n in range(hand_made_moodle_users):
        moodle.add_user(
            username=f"staff{n}.{tenant_id}",
            firstname="Staff",
            lastname=str(n),
            email=f"staff{n}@{tenant_id}.example",
        )
    zoho.start()
    moodle.start()
    school = School(
        tenant_id=tenant_id,
        zoho=zoho,
        moodle=moodle,
        env_prefix=prefix,
        client_id=f"{tenant_id}-client",
        client_secret=secret,
        refresh_token=f"{tenant_id}-refresh-value",
        moodle_token=f"{tenant_id}-moodle-token-value",
        webhook_secret=f"{tenant_id}-webhook-secret-value",
    )
    for name, value in school.env.items():
        monkeypatch.setenv(name, value)
    return school


def write_tenants_file(path: Path, schools: Sequence[School]) -> Path:
    """Write a tenants file naming ``schools``; returns its path."""
    path.write_text(yaml.safe_dump({"tenants": [s.tenant_entry() for s in schools]}))
    return path


def fast_moodle_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the Moodle resource's clients millisecond backoffs.

    ``MoodleResource`` exposes ``max_retries`` but no backoff setting (``ZohoCRMResource`` has
    ``backoff_base_seconds``): the client it builds is given the test backoff here instead.
    """
    fast = functools.partial(MoodleClient, backoff_base=BACKOFF_BASE, backoff_max=BACKOFF_MAX)
    monkeypatch.setattr(moodle_resource, "MoodleClient", fast)


def definitions(tenants_file: Path, warehouse_url: str, *, max_retries: int = MAX_RETRIES) -> dg.Definitions:
    """The project's Definitions with test resources: this tenants file, this warehouse, fast retries.

    Args:
        tenants_file: the tenants file.
        warehouse_url: the warehouse.
        max_retries: retries of one HTTP call (the resources' default, 5, unless a test wants runs
            to fail more often than the real policy lets them).
    """
    resources: dict[str, dg.ConfigurableResource] = {
        "zoho": ZohoCRMResource(
            tenants_file=str(tenants_file),
            max_retries=max_retries,
            backoff_base_seconds=BACKOFF_BASE,
            backoff_max_seconds=BACKOFF_MAX,
            # The plan's token refusal is one answer, not Zoho's 10-minute block: the real window
            # is tested in zoho/test_tokens.py; here a refusal is waited out in 1 s.
            token_throttle_seconds=1.0,
        ),
        "moodle": MoodleResource(tenants_file=str(tenants_file), max_retries=max_retries),
        "warehouse": WarehouseResource(url=warehouse_url),
    }
    return build_definitions(resources)


# --- runs ----------------------------------------------------------------------------------------------


# Deletions are checked on every run here (scheduled runs check hourly): the school day deletes.
QUIET = {
    "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
    **zoho_ops_config(deleted_check_minutes=0),
}


@dataclass(frozen=True)
class StepError:
    """A failed step of a run: which, the error's class and its message."""

    step: str
    cls_name: str
    message: str


@dataclass
class RunOutcome:
    """The runs one sync took: attempts until one succeeded (or the bound was reached)."""

    attempts: int
    success: bool
    errors: list[list[StepError]]
    run_ids: list[str]

    @property
    def failed_attempts(self) -> int:
        """Attempts that failed."""
        return self.attempts - (1 if self.success else 0)


def step_errors(result: dg.ExecuteInProcessResult) -> list[StepError]:
    """Every failed step of a run, with the error Dagster recorded."""
    errors = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            cause = error
            while cause is not None and cause.cls_name == "DagsterExecutionStepExecutionError":
                cause = cause.cause
            cause = cause or error
            errors.append(StepError(event.step_key or "", cause.cls_name or "", cause.message.strip()))
    return errors


def run_sync(
    job: dg.JobDefinition, instance: dg.DagsterInstance, tenant_id: str, *, max_attempts: int = 1
) -> RunOutcome:
    """Run ``job`` for one tenant; a failed run is run again, as the schedule would, up to ``max_attempts``."""
    outcome = RunOutcome(attempts=0, success=False, errors=[], run_ids=[])
    while outcome.attempts < max_attempts:
        result = job.execute_in_process(
            instance=instance, partition_key=tenant_id, run_config=QUIET, raise_on_error=False
        )
        outcome.attempts += 1
        outcome.run_ids.append(result.run_id)
        if result.success:
            outcome.success = True
            return outcome
        outcome.errors.append(step_errors(result))
    return outcome


# --- what a school does between two syncs ----------------------------------------------------------------


def school_day(zoho: ZohoSimulator, *, email_domain: str = "school.example") -> str:
    """The demo's school day in Zoho (``sync_pipelines/demo.py``): returns the new student's id.

    A rename and a new city, a class's end date moved, an enrolment deleted, a student added (with
    an academic e-mail at ``email_domain``) and enrolled. Every choice is by Zoho id order, so two
    copies of one school get the same day.
    """
    students = sorted(zoho.records("BTEC_Students"), key=lambda r: int(r["id"]))
    enrolments = sorted(zoho.records("BTEC_Enrollments"), key=lambda r: int(r["id"]))
    classes = sorted(zoho.records("BTEC_Classes"), key=lambda r: int(r["id"]))
    renamed = students[3]
    zoho.update("BTEC_Students", renamed["id"], Last_Name=f"{renamed['Last_Name']}-Haddad", City="Gaziantep")
    zoho.update("BTEC_Classes", classes[0]["id"], End_Date="2027-03-31")
    zoho.delete("BTEC_Enrollments", enrolments[10]["id"])
    new_id = zoho.insert(
        "BTEC_Students",
        {
            "First_Name": "Layla",
            "Last_Name": "Mansour",
            "Frist_Name_Native": "ليلى",
            "Last_Name_Native": "منصور",
            "Academic_Email": f"layla.mansour@{email_domain}",
            "Status": "Active",
        },
    )
    zoho.insert(
        "BTEC_Enrollments",
        {
            "Enrolled_Students": {"id": new_id, "name": "Layla Mansour"},
            "Classes": {"id": classes[1]["id"], "name": classes[1].get("Class_Name")},
            "Enrollment_Type": "Normal",
        },
    )
    return new_id


def mark_work(school: School, courses: int = 3) -> int:
    """Teachers mark an assignment in the first ``courses`` courses (by idnumber); returns grades set.

    Students are taken in idnumber order, so two copies of one school get the same grades whatever
    their Moodle ids.
    """
    moodle = school.moodle
    idnumber = {u["id"]: u.get("idnumber") or "" for u in moodle.users()}
    chosen = sorted((c for c in moodle.courses() if c.get("idnumber")), key=lambda c: c["idnumber"])[:courses]
    marked = 0
    for course in chosen:
        item = moodle.add_grade_item(course["id"], "Assignment 1", grademax=100.0)
        school.grade_items[item] = (course["idnumber"], "Assignment 1")
        students = sorted(
            (e["userid"] for e in moodle.enrolments(course["id"]) if e["roleid"] == 5),
            key=lambda u: idnumber.get(u, ""),
        )
        for n, user_id in enumerate(students):
            moodle.set_grade(course["id"], user_id, item, float((37 + 11 * n) % 101))
            marked += 1
    return marked


# --- snapshots: everything a sync touches, comparable across worlds --------------------------------------

Snapshot = dict[str, dict[str, Any]]


def _plain(value: Any) -> Any:
    """A JSON-ready, comparable form of one value (pandas and numpy scalars included)."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp | datetime | date):
        return None if pd.isna(value) else value.isoformat()
    if value is pd.NaT or value is pd.NA:
        return None
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return _plain(value.item())
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class MoodleIds:
    """Moodle ids of one world → what they stand for (idnumbers, grade items)."""

    def __init__(self, school: School) -> None:
        self.users = {
            int(u["id"]): u.get("idnumber") or f"no-idnumber:{u['username']}" for u in school.moodle.users()
        }
        self.courses = {
            int(c["id"]): c.get("idnumber") or f"no-idnumber:{c['shortname']}"
            for c in school.moodle.courses()
        }
        self.categories = {
            int(c["id"]): c.get("idnumber") or f"no-idnumber:{c['name']}" for c in school.moodle.categories()
        }
        self.items = dict(school.grade_items)

    def map(self, kind: str, value: Any) -> Any:
        """``value`` (a Moodle id, or ``<user id>_<item id>``) as what it stands for.

        A Moodle id that names nothing in this Moodle maps to ``missing:<kind>:<id>``: a Zoho record
        pointing at a Moodle object that does not exist shows up as a difference. Values that are not
        Moodle ids (the demo school's own, older composite keys) are kept as they are.
        """
        value = _plain(value)
        if value is None or value == "":
            return value
        text = str(value)
        if kind == "composite":
            user, sep, item = text.partition("_")
            if not sep or not user.isdigit() or not item.isdigit() or int(item) not in self.items:
                return text
            return f"{self.map('user', user)}|{self.map('item', item)}"
        if not text.isdigit():
            return text
        table = {"user": self.users, "course": self.courses, "category": self.categories, "item": self.items}[
            kind
        ]
        found = table.get(int(text))
        if found is None:
            return f"missing:{kind}:{text}"
        return "/".join(found) if isinstance(found, tuple) else found


def _warehouse_sections(store: Warehouse, tenant_id: str, ids: MoodleIds) -> Snapshot:
    out: Snapshot = {}
    for spec in MODULES:
        frame = store.read_table(tenant_id, spec, include_deleted=True)
        rows: dict[str, Any] = {}
        for record in frame.to_dict("records"):
            row = {}
            for column, value in record.items():
                if column in VOLATILE_COLUMNS or column == "tenant_id":
                    continue
                if column == "deleted_at":
                    row["deleted"] = _plain(value) is not None
                elif column in WAREHOUSE_MOODLE_IDS:
                    row[column] = ids.map(WAREHOUSE_MOODLE_IDS[column], value)
                else:
                    row[column] = _plain(value)
            rows[str(record["zoho_id"])] = row
        out[f"warehouse:{spec.table}"] = rows
    return out


def _pipeline_sections(store: Warehouse, tenant_id: str, ids: MoodleIds) -> Snapshot:
    """The pipeline's own maps (id map, enrolments held, grades read and written), ids mapped."""
    out: Snapshot = {}
    for entity, kind in (("user", "user"), ("course", "course"), ("category", "category")):
        frame = store.moodle.id_map(tenant_id, entity)
        out[f"map:{entity}"] = {
            str(z): {"module": row["zoho_module"], "moodle": ids.map(kind, row["moodle_id"])}
            for z, row in frame.iterrows()
        }
    held = store.moodle.enrolments(tenant_id)
    out["map:enrolment"] = {
        str(k): {
            "user": ids.map("user", row["moodle_user_id"]),
            "course": ids.map("course", row["moodle_course_id"]),
            "role": _plain(row["role_id"]),
        }
        for k, row in held.iterrows()
    }
    grades = store.moodle.grades(tenant_id)
    out["map:grade"] = {
        str(ids.map("composite", row["composite_key"])): {
            "student": _plain(row["student_zoho_id"]),
            "class": _plain(row["class_zoho_id"]),
            "btec_grade": _plain(row["btec_grade"]),
            "percentage": _plain(row["percentage"]),
            "written": _plain(row["written_fingerprint"]) == _plain(row["fingerprint"]),
            "zoho_grade_written": _plain(row["zoho_grade_id"]) is not None,
        }
        for row in grades.to_dict("records")
    }
    return out


def _moodle_sections(school: School, ids: MoodleIds) -> Snapshot:
    moodle = school.moodle
    users: dict[str, Any] = {}
    for u in moodle.users():
        if not u.get("idnumber"):
            continue  # guest, admin, accounts made by hand: not the pipeline's (duplicates are counted apart)
        users[u["idnumber"]] = {k: _plain(v) for k, v in sorted(u.items()) if k not in VOLATILE_MOODLE_FIELDS}
    courses: dict[str, Any] = {}
    for c in moodle.courses():
        row = {k: _plain(v) for k, v in sorted(c.items()) if k not in VOLATILE_MOODLE_FIELDS}
        row["category"] = ids.map("category", c["category"])
        courses[c.get("idnumber") or f"no-idnumber:{c['shortname']}"] = row
    categories: dict[str, Any] = {}
    for c in moodle.categories():
        row = {k: _plain(v) for k, v in sorted(c.items()) if k not in VOLATILE_MOODLE_FIELDS | {"path"}}
        row["parent"] = ids.map("category", c.get("parent")) if c.get("parent") else 0
        categories[c.get("idnumber") or f"no-idnumber:{c['name']}"] = row
    enrolments: dict[str, Any] = {}
    for e in moodle.enrolments():
        key = f"{ids.map('user', e['userid'])}@{ids.map('course', e['courseid'])}"
        enrolments[key] = {
            "roles": sorted(e["roles"]),
            "status": e["status"],
            "timestart": e["timestart"],
            "timeend": e["timeend"],
        }
    return {
        "moodle:users": users,
        "moodle:courses": courses,
        "moodle:categories": categories,
        "moodle:enrolments": enrolments,
    }


def _zoho_sections(school: School, ids: MoodleIds) -> Snapshot:
    out: Snapshot = {}
    for spec in MODULES:
        rows: dict[str, Any] = {}
        for record in school.zoho.records(spec.api_name):
            row = {}
            for name, value in sorted(record.items()):
                if name in VOLATILE_ZOHO_FIELDS:
                    continue
                row[name] = (
                    ids.map(ZOHO_MOODLE_IDS[name], value) if name in ZOHO_MOODLE_IDS else _plain(value)
                )
            key = record["id"]
            if spec.api_name == "BTEC_Grades" and row.get("Moodle_Grade_Composite_Key"):
                composite = row["Moodle_Grade_Composite_Key"]
                if "|" in str(composite):  # written by the pipeline: keyed by what it stands for
                    key = f"grade:{composite}"
                    row.pop("id", None)
            rows.setdefault(str(key), []).append(row)
        # A key held twice is a duplicate: it stays a list, and differs from the reference's one row.
        out[f"zoho:{spec.api_name}"] = {k: v[0] if len(v) == 1 else v for k, v in rows.items()}
    return out


def snapshot(
    school: School, store: Warehouse, *, parts: Iterable[str] = ("warehouse", "map", "moodle", "zoho")
) -> Snapshot:
    """Everything the sync of ``school`` touches, Moodle ids mapped to what they stand for.

    Args:
        school: the school.
        store: the warehouse it syncs into.
        parts: which sections: ``warehouse`` (every row of the nine module tables), ``map`` (the
            pipeline's id map, enrolments held, grades), ``moodle``, ``zoho`` (every record).
    """
    ids = MoodleIds(school)
    wanted = set(parts)
    out: Snapshot = {}
    if "warehouse" in wanted:
        out.update(_warehouse_sections(store, school.tenant_id, ids))
    if "map" in wanted:
        out.update(_pipeline_sections(store, school.tenant_id, ids))
    if "moodle" in wanted:
        out.update(_moodle_sections(school, ids))
    if "zoho" in wanted:
        out.update(_zoho_sections(school, ids))
    return out


@dataclass
class Comparison:
    """How one snapshot differs from a reference, record by record."""

    compared: int = 0
    lost: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        """No record lost, added or changed."""
        return not (self.lost or self.extra or self.changed)

    def describe(self, reference: Snapshot, actual: Snapshot, limit: int = 8) -> str:
        """A readable account of the first differences."""
        lines = [
            f"{len(self.lost)} lost, {len(self.extra)} extra, {len(self.changed)} changed of {self.compared}"
        ]
        for key in self.lost[:limit]:
            lines.append(f"  lost    {key}")
        for key in self.extra[:limit]:
            section, _, record = key.partition(" ")
            lines.append(f"  extra   {key}: {json.dumps(actual[section][record], ensure_ascii=False)[:300]}")
        for key in self.changed[:limit]:
            section, _, record = key.partition(" ")
            ref, got = reference[section][record], actual[section][record]
            if isinstance(ref, dict) and isinstance(got, dict):
                diff = {
                    k: (ref.get(k), got.get(k))
                    for k in sorted(set(ref) | set(got))
                    if ref.get(k) != got.get(k)
                }
            else:
                diff = {"expected": ref, "got": got}
            lines.append(f"  changed {key}: {json.dumps(diff, ensure_ascii=False, default=str)[:400]}")
        return "\n".join(lines)


def compare(reference: Snapshot, actual: Snapshot) -> Comparison:
    """Compare two snapshots section by section, record by record."""
    result = Comparison()
    for section in sorted(set(reference) | set(actual)):
        ref, got = reference.get(section, {}), actual.get(section, {})
        result.compared += len(ref)
        result.lost += [f"{section} {k}" for k in sorted(set(ref) - set(got))]
        result.extra += [f"{section} {k}" for k in sorted(set(got) - set(ref))]
        result.changed += [f"{section} {k}" for k in sorted(set(ref) & set(got)) if ref[k] != got[k]]
    return result


def duplicates(school: School, store: Warehouse) -> dict[str, int]:
    """Duplicates anywhere, by what makes a record unique (each count must be 0).

    Moodle users by idnumber, courses by shortname and by idnumber, categories by idnumber,
    enrolments by (user idnumber, course idnumber); Zoho ``BTEC_Grades`` by composite key; the
    pipeline's id map by Moodle id.
    """

    def extra(values: Iterable[Any]) -> int:
        return sum(n - 1 for n in Counter(v for v in values if v).values())

    moodle = school.moodle
    ids = MoodleIds(school)
    out = {
        "moodle_users_by_idnumber": extra(u.get("idnumber") for u in moodle.users()),
        "moodle_courses_by_shortname": extra(c["shortname"] for c in moodle.courses()),
        "moodle_courses_by_idnumber": extra(c.get("idnumber") for c in moodle.courses()),
        "moodle_categories_by_idnumber": extra(c.get("idnumber") for c in moodle.categories()),
        "moodle_enrolments": extra(
            (ids.map("user", e["userid"]), ids.map("course", e["courseid"])) for e in moodle.enrolments()
        ),
        "zoho_grades_by_composite_key": extra(
            r.get("Moodle_Grade_Composite_Key") for r in school.zoho.records("BTEC_Grades")
        ),
    }
    for entity in ("user", "course", "category"):
        frame = store.moodle.id_map(school.tenant_id, entity)
        out[f"id_map_{entity}_by_moodle_id"] = extra(frame["moodle_id"].tolist())
    return out


def dangling_writebacks(school: School) -> list[str]:
    """Zoho write-backs that point at a Moodle object that does not exist, or at another record's."""
    ids = MoodleIds(school)
    bad = []
    for api_name, id_field, kind in (
        ("BTEC_Students", "Student_Moodle_ID", "user"),
        ("BTEC_Teachers", "Teacher_Moodle_ID", "user"),
        ("BTEC_Classes", "Moodle_Class_ID", "course"),
    ):
        for record in school.zoho.records(api_name):
            value = record.get(id_field)
            if value and str(value).isdigit() and ids.map(kind, value) != record["id"]:
                bad.append(f"{api_name} {record['id']}: {id_field}={value} stands for {ids.map(kind, value)}")
    return bad


def write_results(name: str, figures: Mapping[str, Any]) -> Path:
    """Merge ``figures`` into ``.local/reliability/<name>.json`` (one key per test); returns the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    current: dict[str, Any] = {}
    if path.exists():
        try:
            current = json.loads(path.read_text())
        except ValueError:
            current = {}
    current.update(_plain(dict(figures)))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(current, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


# --- one world: a school, its warehouse and its Dagster instance ---------------------------------------

TENANT = "school_a"
#: The demo school's generator seed (``make demo`` uses it too).
SCHOOL_SEED = 2026
#: Runs of one sync under faults before it counts as not converging (the schedule would go on).
MAX_ATTEMPTS = 5
#: Further runs the tests wait, after a successful run whose state differs, to report when it caught up.
CATCH_UP_LIMIT = 3
EXTERNAL = ("moodle", "zoho")
EVERYTHING = ("warehouse", "map", "moodle", "zoho")


@functools.cache
def school_data(scale: float) -> dict[str, list[dict]]:
    """The demo school at ``scale`` (generated once per scale; simulators copy what they serve)."""
    return generate_school(SCHOOL_SEED, scale=scale)


@dataclass
class World:
    """One school synced into one warehouse through the project's Dagster job ``full_sync``."""

    school: School
    store: Warehouse
    job: dg.JobDefinition
    instance: dg.DagsterInstance

    def run(self, max_attempts: int = MAX_ATTEMPTS) -> RunOutcome:
        """Sync the school, running a failed run again up to ``max_attempts`` times."""
        return run_sync(self.job, self.instance, self.school.tenant_id, max_attempts=max_attempts)

    def snapshot(self, parts: Iterable[str] = EVERYTHING) -> Snapshot:
        """What the sync has touched so far (see :func:`snapshot`)."""
        return snapshot(self.school, self.store, parts=parts)


@contextlib.contextmanager
def open_world(
    name: str,
    scale: float,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    faults: FaultPlan | None = None,
    *,
    max_retries: int = MAX_RETRIES,
) -> Iterator[World]:
    """Start a school (demo school at ``scale``) with a fresh SQLite warehouse and Dagster instance."""
    school = start_school(TENANT, copy.deepcopy(school_data(scale)), monkeypatch, faults=faults)
    url = f"sqlite:///{folder / f'{name}.db'}"
    store = Warehouse(url)
    try:
        tenants = write_tenants_file(folder / f"{name}.yaml", [school])
        job = definitions(tenants, url, max_retries=max_retries).resolve_job_def("full_sync")
        # In-memory run and event storage: nothing here reads the instance from another process.
        with dg.DagsterInstance.ephemeral() as instance:
            instance.add_dynamic_partitions(tenant_partitions.name, [TENANT])
            yield World(school, store, job, instance)
    finally:
        store.dispose()
        school.stop()


# --- the fault-free reference ------------------------------------------------------------------------


@dataclass
class Reference:
    """Where a fault-free sync of the demo school is after each of its three runs.

    Attributes:
        after_first: Moodle and Zoho after the first full sync.
        after_day: Moodle and Zoho after the sync that follows the school day.
        settled: everything (warehouse, maps, Moodle, Zoho) after the next tick, when the
            warehouse's mirror of Zoho has read back what the previous run wrote.
        seconds: wall time of the three runs.
    """

    after_first: Snapshot
    after_day: Snapshot
    settled: Snapshot
    seconds: float


def sync_reference(scale: float, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Reference:
    """Sync the demo school without faults: first sync, school day, sync, next tick."""
    with open_world("reference", scale, folder, monkeypatch) as world:
        started = time.perf_counter()
        snaps: list[Snapshot] = []
        for step, parts in enumerate((EXTERNAL, EXTERNAL, EVERYTHING)):
            if step == 1:
                school_day(world.school.zoho)
                assert mark_work(world.school) > 0
            outcome = world.run(max_attempts=1)
            assert outcome.success, f"the fault-free sync failed: {outcome.errors}"
            snaps.append(world.snapshot(parts))
        assert not any(duplicates(world.school, world.store).values())
        assert dangling_writebacks(world.school) == []
        return Reference(snaps[0], snaps[1], snaps[2], time.perf_counter() - started)


@pytest.fixture(scope="module")
def module_env() -> Iterator[pytest.MonkeyPatch]:
    """The module's environment: the schools' secrets, fast Moodle retries."""
    patch = pytest.MonkeyPatch()
    fast_moodle_retries(patch)
    yield patch
    patch.undo()


@pytest.fixture(scope="module")
def references(
    module_env: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[float], Reference]:
    """The fault-free reference per school scale, synced once for the whole module."""
    cache: dict[float, Reference] = {}

    def get(scale: float) -> Reference:
        if scale not in cache:
            cache[scale] = sync_reference(scale, tmp_path_factory.mktemp(f"reference-{scale}"), module_env)
        return cache[scale]

    return get


# --- a sync under faults, phase by phase ----------------------------------------------------------------


@dataclass
class Phase:
    """One sync of the scenario under faults, and how its state compares with the reference's.

    Attributes:
        name: which sync.
        attempts: runs until one succeeded (or the bound was reached).
        success: whether a run succeeded within the bound.
        errors: the failed runs' step errors.
        first: the comparison right after the first successful run (``None`` without one).
        first_text: its readable account.
        catch_up_runs: runs after the first successful one until the state matched.
        converged: whether the state matched, right away or after the catch-up runs.
    """

    name: str
    attempts: int
    success: bool
    errors: list[list[StepError]]
    first: Comparison | None = None
    first_text: str = ""
    catch_up_runs: int = 0
    converged: bool = False

    def describe(self) -> str:
        """One paragraph for an assertion message."""
        if not self.success:
            last = self.errors[-1] if self.errors else []
            return f"{self.name}: no run of {self.attempts} succeeded; last errors: {last}"
        assert self.first is not None
        head = f"{self.name}: {self.attempts} run(s) until one succeeded; right after it "
        if self.first.identical:
            return head + f"all {self.first.compared} records identical to the fault-free sync's"
        tail = (
            f"caught up after {self.catch_up_runs} more run(s)"
            if self.converged
            else f"still different after {self.catch_up_runs} more run(s)"
        )
        return head + f"{self.first_text}\n  ({tail})"


def sync_phase(world: World, name: str, reference: Snapshot, parts: Iterable[str]) -> Phase:
    """Run one sync (failed runs run again, up to :data:`MAX_ATTEMPTS`) and compare it with ``reference``.

    If the first successful run leaves a state that differs, the next runs (as the schedule would
    make them) are made too, up to :data:`CATCH_UP_LIMIT`, to report whether and when it caught up.
    """
    parts = tuple(parts)
    outcome = world.run()
    phase = Phase(name, outcome.attempts, outcome.success, outcome.errors)
    if not outcome.success:
        return phase
    got = world.snapshot(parts)
    phase.first = compare(reference, got)
    phase.first_text = phase.first.describe(reference, got)
    phase.converged = phase.first.identical
    while not phase.converged and phase.catch_up_runs < CATCH_UP_LIMIT:
        more = world.run()
        phase.catch_up_runs += more.attempts
        phase.converged = more.success and compare(reference, world.snapshot(parts)).identical
    return phase


def sync_scenario(world: World, reference: Reference) -> list[Phase]:
    """The demo scenario under faults: first full sync, school day, sync, next tick.

    The school day (and its marking) only happens on a world that caught up with the reference:
    marking a half-provisioned Moodle would give other grades, and every later difference would
    be the test's, not the sync's.
    """
    phases = [sync_phase(world, "first full sync", reference.after_first, EXTERNAL)]
    if not phases[-1].converged:
        return phases
    school_day(world.school.zoho)
    mark_work(world.school)
    phases.append(sync_phase(world, "sync after a school day", reference.after_day, EXTERNAL))
    if not phases[-1].converged:
        return phases
    phases.append(sync_phase(world, "next tick", reference.settled, EVERYTHING))
    return phases


def figures(
    plan: FaultPlan, phases: Sequence[Phase], world: World, seconds: float, scale: float
) -> dict[str, Any]:
    """The measured figures of one scenario, for the results file."""
    dups = duplicates(world.school, world.store)
    compared = [p.first for p in phases if p.first is not None]
    return {
        "school_scale": scale,
        "fault_rate": plan.rate,
        "seed": plan.seed,
        "faults_injected": plan.total,
        "faults_by_kind": dict(sorted(plan.injected.items())),
        "faults_by_service": plan.by_service(),
        "api_requests": plan.requests,
        "runs_attempted": sum(p.attempts + p.catch_up_runs for p in phases),
        "runs_failed": sum(len(p.errors) for p in phases),
        "records_compared": sum(c.compared for c in compared),
        "lost": sum(len(c.lost) + len(c.changed) for c in compared),
        "extra": sum(len(c.extra) for c in compared),
        "duplicates": sum(dups.values()),
        "wall_seconds": round(seconds, 1),
    }


def assert_converged_without_duplicates(phases: Sequence[Phase], world: World) -> None:
    """Every sync succeeded within the bound and matched the fault-free sync, with no duplicate."""
    report = "\n".join(p.describe() for p in phases)
    assert len(phases) == 3 and all(p.success for p in phases), report
    assert all(p.first is not None and p.first.identical for p in phases), report
    assert {k: v for k, v in duplicates(world.school, world.store).items() if v} == {}
    assert dangling_writebacks(world.school) == []


def logged_faults(school: School) -> Counter[str]:
    """Faults the simulators' request logs show, per kind (``slow`` and ``expire_token`` included)."""
    logged = Counter(r.fault for r in school.zoho.requests if r.fault)
    logged.update(r.fault for r in school.moodle.requests if r.fault)
    return logged


# --- the tests -----------------------------------------------------------------------------------------


def test_a_sync_at_10_percent_faults_ends_exactly_where_a_fault_free_sync_ends(
    references: Callable[[float], Reference], module_env: pytest.MonkeyPatch, tmp_path: Path
):
    scale = 0.1
    reference = references(scale)
    plan = FaultPlan(rate=0.1, seed=10)
    with open_world("faults-10", scale, tmp_path, module_env, faults=plan) as world:
        started = time.perf_counter()
        phases = sync_scenario(world, reference)
        seconds = time.perf_counter() - started
        assert_converged_without_duplicates(phases, world)
        assert plan.total >= 5, f"too few faults to prove anything: {plan.summary()}"
        assert logged_faults(world.school) == plan.injected  # every fault counted was really served
        out = figures(plan, phases, world, seconds, scale)
    write_results("faults", {"rate_10_percent": out})


def test_lost_answers_never_duplicate_and_a_successful_run_leaves_nothing_undone(
    references: Callable[[float], Reference], module_env: pytest.MonkeyPatch, tmp_path: Path
):
    """Half the writes are applied and never answered (Moodle creates, enrols; Zoho upserts, updates).

    The client retries them; the retry of a create meets the object the lost answer made. No Moodle
    object or Zoho grade may exist twice, and a run that reports success must have linked what it
    made: its state must be the fault-free sync's, not one more run away from it.
    """
    scale = 0.1
    reference = references(scale)
    plan = FaultPlan(rate=0.5, seed=2, kinds=("lost_answer",))
    with open_world("lost-answers", scale, tmp_path, module_env, faults=plan) as world:
        started = time.perf_counter()
        phases = sync_scenario(world, reference)
        seconds = time.perf_counter() - started
        assert plan.injected["lost_answer"] >= 10, plan.summary()
        # What holds today: nothing twice, and the schedule's next runs catch up.
        assert {k: v for k, v in duplicates(world.school, world.store).items() if v} == {}
        assert dangling_writebacks(world.school) == []
        assert all(p.converged for p in phases), "\n".join(p.describe() for p in phases)
        # What must hold too: a run that reports success has done the sync, not left it for later.
        assert_converged_without_duplicates(phases, world)
        out = figures(plan, phases, world, seconds, scale)
    write_results("faults", {"lost_answers_50_percent_of_writes": out})


def _clean(errors: Sequence[StepError], school: School) -> list[str]:
    """What is unclean about a failed run's errors (empty: every step failed with a clear error).

    Clear: a ``dagster.Failure`` raised by the asset's guard, naming the service, the tenant and
    the service's error, and never a secret.
    """
    problems = []
    secrets = (school.client_secret, school.refresh_token, school.moodle_token)
    for error in errors:
        if error.cls_name != "Failure":
            problems.append(f"{error.step}: {error.cls_name} (not a clean Failure): {error.message[:200]}")
        elif f"tenant {school.tenant_id!r}" not in error.message or not (
            "Zoho CRM" in error.message or "Moodle" in error.message
        ):
            problems.append(
                f"{error.step}: the error does not name the service and tenant: {error.message[:200]}"
            )
        if any(secret in error.message for secret in secrets):
            problems.append(f"{error.step}: a secret in the error")
    return problems


@pytest.mark.reliability
@pytest.mark.parametrize(
    ("seed", "max_retries"),
    [(1, MAX_RETRIES), (2, MAX_RETRIES), (3, MAX_RETRIES), (4, 1), (5, 1), (6, 0)],
    ids=["seed1", "seed2", "seed3", "seed4-1-retry", "seed5-1-retry", "seed6-no-retry"],
)
def test_at_30_percent_faults_a_sync_converges_or_fails_cleanly_and_the_next_clean_run_converges(
    references: Callable[[float], Reference],
    module_env: pytest.MonkeyPatch,
    tmp_path: Path,
    seed: int,
    max_retries: int,
):
    """30% of requests fail. With the real retry policy the runs converge; with retries turned down
    (1, or none) runs fail: each failure must be a clean one (the asset's ``Failure`` naming the
    service, the tenant and the service's error, no secret), a failed run is run again up to
    :data:`MAX_ATTEMPTS` times, and when none succeeds the next run, fault-free, must converge."""
    scale = 0.1
    reference = references(scale)
    plan = FaultPlan(rate=0.3, seed=seed)
    targets = (reference.after_first, reference.after_day, reference.settled)
    parts = (EXTERNAL, EXTERNAL, EVERYTHING)
    with open_world(
        f"faults-30-{seed}", scale, tmp_path, module_env, faults=plan, max_retries=max_retries
    ) as world:
        started = time.perf_counter()
        phases: list[Phase] = []
        recovered = 0
        for index, name in enumerate(("first full sync", "sync after a school day", "next tick")):
            if index == 1:
                school_day(world.school.zoho)
                mark_work(world.school)
            phase = sync_phase(world, name, targets[index], parts[index])
            if not phase.success:
                unclean = [p for errors in phase.errors for p in _clean(errors, world.school)]
                assert unclean == [], "\n".join(unclean)
                # The faults stop; the next scheduled run, fault-free, must converge.
                world.school.zoho.set_faults(None)
                world.school.moodle.set_faults(None)
                clean = sync_phase(
                    world,
                    f"{name}, fault-free after {phase.attempts} failed runs",
                    targets[index],
                    parts[index],
                )
                world.school.zoho.set_faults(plan)
                world.school.moodle.set_faults(plan)
                recovered += 1
                phase = Phase(
                    clean.name,
                    phase.attempts + clean.attempts,
                    clean.success,
                    phase.errors + clean.errors,
                    clean.first,
                    clean.first_text,
                    clean.catch_up_runs,
                    clean.converged,
                )
            phases.append(phase)
            assert phase.success and phase.first is not None and phase.first.identical, phase.describe()
        seconds = time.perf_counter() - started
        assert_converged_without_duplicates(phases, world)
        out = figures(plan, phases, world, seconds, scale) | {
            "http_retries": max_retries,
            "syncs_failed_cleanly": recovered,
        }
    write_results("faults", {f"rate_30_percent_seed_{seed}_retries_{max_retries}": out})


@pytest.mark.reliability
@pytest.mark.parametrize("scale", [0.3, 1.0])
def test_a_larger_school_at_10_percent_faults_ends_exactly_where_a_fault_free_sync_ends(
    references: Callable[[float], Reference], module_env: pytest.MonkeyPatch, tmp_path: Path, scale: float
):
    reference = references(scale)
    plan = FaultPlan(rate=0.1, seed=int(scale * 100))
    with open_world(f"faults-10-{scale}", scale, tmp_path, module_env, faults=plan) as world:
        started = time.perf_counter()
        phases = sync_scenario(world, reference)
        seconds = time.perf_counter() - started
        assert_converged_without_duplicates(phases, world)
        out = figures(plan, phases, world, seconds, scale)
    write_results("faults", {f"rate_10_percent_scale_{scale}": out})
