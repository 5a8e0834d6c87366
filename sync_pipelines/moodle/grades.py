"""Moodle grades → the warehouse: each graded item of a synced student, with its BTEC grade.

Reads gradebooks with ``gradereport_user_get_grade_items``; knows nothing of Zoho's API (the
write-back to Zoho is :mod:`sync_pipelines.writeback`).
"""

from collections.abc import Sequence

import pandas as pd

from sync_pipelines.btec import btec_grades, percentage
from sync_pipelines.diff import fingerprint
from sync_pipelines.moodle.client import MoodleClient
from sync_pipelines.warehouse import Warehouse


def collect_grades(
    client: MoodleClient, store: Warehouse, tenant_id: str, *, course_ids: Sequence[int] = ()
) -> pd.DataFrame:
    """Read synced courses' gradebooks and store each graded item with its BTEC grade.

    ``course_ids`` (Moodle ids) limits the read to those courses (a grading event names one);
    empty reads every synced course. Course-total items (``itemtype == "course"``) are never
    counted as an assignment grade.
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
                    }
                )
    cols = ["moodle_user_id", "moodle_course_id", "grade_item_id", "item_name", "grade_raw", "grade_max"]
    grades = pd.DataFrame(rows, columns=cols)
    grades["composite_key"] = grades["moodle_user_id"].astype(str) + "_" + grades["grade_item_id"].astype(str)
    grades["student_zoho_id"] = grades["moodle_user_id"].map(user_to_zoho)
    grades["class_zoho_id"] = grades["moodle_course_id"].map(course_to_zoho)
    grades["percentage"] = percentage(grades["grade_raw"], grades["grade_max"])
    grades["btec_grade"] = btec_grades(grades["percentage"])["btec_grade"]
    grades["fingerprint"] = fingerprint(
        grades.astype(str),
        ["composite_key", "grade_raw", "grade_max", "item_name", "student_zoho_id", "class_zoho_id"],
    )
    grades = grades.astype(object).where(grades.notna(), None)
    store.moodle.save_grades(tenant_id, grades.to_dict("records"))
    return grades
