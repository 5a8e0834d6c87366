"""Moodle grades → the warehouse: each graded item of a synced student, with its BTEC grade.

Reads gradebooks with ``gradereport_user_get_grade_items``; knows nothing of Zoho's API (the
write-back to Zoho is :mod:`sync_pipelines.writeback`).
"""

import html
import json
import re
from collections.abc import Sequence

import pandas as pd

from sync_pipelines.btec import btec_grades, percentage, unit_criteria
from sync_pipelines.diff import fingerprint
from sync_pipelines.moodle.client import MoodleClient
from sync_pipelines.moodle.criteria import rubric_fillings
from sync_pipelines.tenants import GradingConfig
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.zoho.modules import module

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


NAMES = {
    "D": "Distinction",
    "M": "Merit",
    "P": "Pass",
    "R": "Refer",
    "RR": "Refer (last attempt)",
    "F": "Fail",
}


def collect_grades(
    client: MoodleClient,
    store: Warehouse,
    tenant_id: str,
    *,
    course_ids: Sequence[int] = (),
    grading: GradingConfig | None = None,
) -> pd.DataFrame:
    """Read synced courses' gradebooks and store each graded item with its BTEC grade.

    ``course_ids`` (Moodle ids) limits the read to those courses (a grading event names one);
    empty reads every synced course. Course-total items (``itemtype == "course"``) are never
    counted as an assignment grade. An item of a unit assessment with a rubric
    (:mod:`sync_pipelines.moodle.criteria`) is graded from the learner's criteria with the school's
    rule (``grading``), never from its percentage; an incomplete filling has no grade and says why
    (``reason``). Every other item keeps the percentage conversion.
    """
    courses = store.moodle.id_map(tenant_id, "course")
    users = store.moodle.id_map(tenant_id, "user")
    students = users[users["zoho_module"] == "students"]
    user_to_zoho = pd.Series(students.index, index=students["moodle_id"].astype(int))
    course_to_zoho = pd.Series(courses.index, index=courses["moodle_id"].astype(int))
    rows: list[dict] = []
    wanted = sorted(course_to_zoho.index)
    if course_ids:
        wanted = [c for c in wanted if c in {int(i) for i in course_ids}]
    for course_id in wanted:
        for usergrade in client.get_grade_items(int(course_id)):
            uid = int(usergrade["userid"])
            for item in usergrade.get("gradeitems") or []:
                if item.get("itemtype") == "course" or item.get("graderaw") is None:
                    continue
                rows.append(
                    {
                        "moodle_user_id": uid,
                        "moodle_course_id": int(course_id),
                        "grade_item_id": int(item["id"]),
                        "item_name": item.get("itemname"),
                        "grade_raw": float(item["graderaw"]),
                        "grade_max": float(item.get("grademax") or 0),
                        "cmid": item.get("cmid"),
                        "feedback": _text(item.get("feedback")),
                    }
                )
    cols = [
        "moodle_user_id",
        "moodle_course_id",
        "grade_item_id",
        "item_name",
        "grade_raw",
        "grade_max",
        "cmid",
        "feedback",
    ]
    grades = pd.DataFrame(rows, columns=cols)
    grades["composite_key"] = grades["moodle_user_id"].astype(str) + "_" + grades["grade_item_id"].astype(str)
    grades["student_zoho_id"] = grades["moodle_user_id"].map(user_to_zoho)
    grades["class_zoho_id"] = grades["moodle_course_id"].map(course_to_zoho)
    grades["percentage"] = percentage(grades["grade_raw"], grades["grade_max"])
    by_percentage = btec_grades(grades["percentage"])
    grades["btec_grade"] = by_percentage["btec_grade"]
    grades["letter"] = by_percentage["letter"]
    grades["grading"] = "percentage"
    for column in ("criteria", "remarks", "reason", "unit_zoho_id", "attempt", "grader_id", "graded_at"):
        grades[column] = None
    grades = _by_criteria(client, store, tenant_id, grades, grading or GradingConfig(), set(wanted))
    grades["fingerprint"] = fingerprint(
        grades.astype(str),
        [
            "composite_key",
            "grade_raw",
            "grade_max",
            "item_name",
            "student_zoho_id",
            "class_zoho_id",
            "letter",
            "criteria",
            "remarks",
            "attempt",
            "feedback",
        ],
    )
    grades = grades.drop(columns=["cmid"])
    grades = grades.astype(object).where(grades.notna(), None)
    store.moodle.save_grades(tenant_id, grades.to_dict("records"))
    return grades


def _text(value: object) -> str | None:
    """Moodle's feedback HTML as plain text (``None`` when empty)."""
    if not value:
        return None
    text = _SPACE.sub(" ", html.unescape(_TAG.sub(" ", str(value)))).strip()
    return text or None


def _by_criteria(
    client: MoodleClient,
    store: Warehouse,
    tenant_id: str,
    grades: pd.DataFrame,
    grading: GradingConfig,
    courses: set[int],
) -> pd.DataFrame:
    """Grade the items of rubric assessments from the learners' criteria (see collect_grades)."""
    fillings = rubric_fillings(client, store, tenant_id, courses)
    rubrics = store.moodle.rubrics(tenant_id)
    assessed = set(rubrics.loc[rubrics["definition_id"].notna(), "cmid"].astype(int))
    if grades.empty or not assessed:
        return grades
    # An item of a rubric assessment is never graded by its percentage: without a filling of the
    # learner's latest attempt (reopened for a resubmission, or marked without the rubric) it waits.
    on_rubric = grades["cmid"].map(lambda c: c is not None and not pd.isna(c) and int(c) in assessed)
    grades.loc[on_rubric, ["grading", "letter", "btec_grade"]] = ["criteria", None, None]
    grades.loc[on_rubric, "reason"] = (
        "no rubric filling of the latest attempt yet (reopened, or marked without the rubric)"
    )
    if fillings.empty:
        return grades
    criteria = unit_criteria(store.read_table(tenant_id, module("units")))
    codes = {u: list(g["code"]) for u, g in criteria.groupby("unit_id", sort=False)}
    by_key = {(int(f.moodle_user_id), int(f.cmid)): f for f in fillings.itertuples(index=False)}
    for idx, row in grades.iterrows():
        if row["cmid"] is None or pd.isna(row["cmid"]):
            continue
        f = by_key.get((int(row["moodle_user_id"]), int(row["cmid"])))
        if f is None:
            continue
        outcome = grading.grade(f.achieved, codes.get(f.unit_zoho_id, []), attempt=int(f.attempt))
        grades.at[idx, "grading"] = "criteria"
        grades.at[idx, "letter"] = outcome.grade
        grades.at[idx, "btec_grade"] = NAMES.get(outcome.letter) if outcome.letter else None
        grades.at[idx, "reason"] = outcome.reason
        grades.at[idx, "criteria"] = json.dumps(dict(sorted(f.achieved.items())))
        grades.at[idx, "remarks"] = json.dumps(dict(sorted(f.remarks.items()))) if f.remarks else None
        grades.at[idx, "unit_zoho_id"] = f.unit_zoho_id
        grades.at[idx, "attempt"] = int(f.attempt)
        grades.at[idx, "grader_id"] = f.grader_id
        grades.at[idx, "graded_at"] = int(f.graded_at)
    return grades
