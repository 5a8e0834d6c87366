"""Moodle grades → the warehouse: each graded item of a synced student, with its BTEC grade.

Knows nothing of Zoho's API (the write-back to Zoho is :mod:`sync_pipelines.writeback`). A row is
a gradebook item of a learner (``gradereport_user_get_grade_items``: the item's id, name, range,
the learner's raw grade and feedback), so the three ways of reading below give the same rows.

**How Moodle is read** (:func:`read_grades`):

* **By change** (every scheduled run, the steady state). One ``mod_assign_get_assignments`` for
  the school's synced courses (the assignment ids; one request up to ~950 courses) and one
  ``mod_assign_get_grades`` over all of those assignments with ``since`` (the grades whose
  ``timemodified`` is at or after the read position): a run in which nobody graded makes these two
  calls, whatever the number of courses. A grade it names that the warehouse already holds (same
  course, learner, date graded and value) is not read again; for the others, the gradebook of
  their course is read (``gradereport_user_get_grade_items``, one call a course, as the full read
  makes it), and only the changed items are kept. A
  changed grade of a rubric assessment brings that assessment's fillings saved since
  (``core_grading_get_gradingform_instances`` with ``since``).
* **In full** (the nightly ``reconcile`` job, the first read of a school, ``full_read`` in the
  step's config, and any run when the last full read is older than :data:`FULL_READ_AFTER`):
  every synced course's gradebook, and every rubric filling, as every run used to.
* **The courses an event names** (the plugin's ``user_graded``, through the webhook sensor:
  ``course_ids``): those courses' gradebooks in full, at once.

**What only the nightly read (or an event) brings.** ``mod_assign_get_grades`` answers assignments
(``mod_assign``) only. Grades of every other activity — quizzes, lessons, workshops, forums'
ratings, SCORM and H5P packages, external tools (LTI) — and of manual grade items, grades
overridden or entered in the gradebook (grader report, import), and a change of an item's name or
maximum alone, reach the warehouse with the nightly full read, or within a minute when the
plugin's ``user_graded`` event names the course. A feedback comment edited in the same second as
the previous save, with the grade unchanged, waits for the nightly read too.

**The read position** (``since``) is kept per tenant in ``sync_cursors`` (``moodle/grades``, see
:meth:`~sync_pipelines.warehouse.moodle.MoodleStore.read_position`), in the Moodle site's own
clock: the greatest ``timemodified`` ``mod_assign_get_grades`` answered, less
:data:`SINCE_OVERLAP_SECONDS`, never moving back; a grade saved while the read ran, even with an
earlier time stamp than one already seen, is answered again by the next read, which finds the ones
it already holds. It is saved after the grades, so a run that fails never moves it.
"""

import html
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from sync_pipelines.btec import btec_grades, percentage, unit_criteria
from sync_pipelines.diff import fingerprint
from sync_pipelines.moodle.client import MoodleClient
from sync_pipelines.moodle.criteria import rubric_fillings
from sync_pipelines.tenants import GradingConfig
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.moodle import ReadPosition
from sync_pipelines.zoho.modules import module

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")

#: The read position's name in ``sync_cursors`` (``moodle/grades``).
POSITION = "grades"
#: How far behind the greatest ``timemodified`` seen the next ``since`` starts: a grade whose
#: transaction committed after the read, with an earlier time stamp, is still answered next time.
SINCE_OVERLAP_SECONDS = 300
#: A scheduled run reads every gradebook when the last full read is older than this (the nightly
#: ``reconcile`` job normally makes one every 24 hours).
FULL_READ_AFTER = timedelta(hours=25)

NAMES = {
    "D": "Distinction",
    "M": "Merit",
    "P": "Pass",
    "R": "Refer",
    "RR": "Refer (last attempt)",
    "F": "Fail",
}

_COLUMNS = [
    "moodle_user_id",
    "moodle_course_id",
    "grade_item_id",
    "item_name",
    "grade_raw",
    "grade_max",
    "cmid",
    "feedback",
    "assignment_id",
    "graded_at",
]


@dataclass(frozen=True)
class GradeRead:
    """What one grade read did.

    Attributes:
        grades: the rows read and stored (all of them in a full read; the changed ones by change).
        mode: ``full``, ``by change`` or ``courses`` (the courses an event names).
        courses_read: gradebooks read (``gradereport_user_get_grade_items`` calls).
        changed: grades ``mod_assign_get_grades`` answered that the warehouse did not hold yet.
        since: the read position after the read (Unix seconds, the site's clock), or ``None``.
    """

    grades: pd.DataFrame
    mode: str
    courses_read: int
    changed: int
    since: int | None


def collect_grades(
    client: MoodleClient,
    store: Warehouse,
    tenant_id: str,
    *,
    course_ids: Sequence[int] = (),
    grading: GradingConfig | None = None,
    full: bool = False,
) -> pd.DataFrame:
    """The rows :func:`read_grades` read and stored."""
    return read_grades(client, store, tenant_id, course_ids=course_ids, grading=grading, full=full).grades


def read_grades(
    client: MoodleClient,
    store: Warehouse,
    tenant_id: str,
    *,
    course_ids: Sequence[int] = (),
    grading: GradingConfig | None = None,
    full: bool = False,
    now: datetime | None = None,
) -> GradeRead:
    """Read what changed in the synced courses' gradebooks and store each graded item with its BTEC grade.

    ``course_ids`` (Moodle ids; a grading event names one) reads those courses in full and leaves
    the read position alone; ``full`` reads every synced course; otherwise the read is by change,
    or in full when the school was never read in full or not for :data:`FULL_READ_AFTER` (module
    docstring). Course-total items (``itemtype == "course"``) are never counted as an assignment
    grade. An item of a unit assessment with a rubric (:mod:`sync_pipelines.moodle.criteria`) is
    graded from the learner's criteria with the school's rule (``grading``), never from its
    percentage; an incomplete filling has no grade and says why (``reason``). Every other item
    keeps the percentage conversion.
    """
    grading = grading or GradingConfig()
    now = now or datetime.now(UTC)
    courses = store.moodle.id_map(tenant_id, "course")
    synced = sorted(int(c) for c in courses["moodle_id"])
    if course_ids:
        named = {int(i) for i in course_ids}
        wanted = [c for c in synced if c in named]
        rows = [r for c in wanted for r in _gradebook(client, c, None)]
        grades = _store(client, store, tenant_id, rows, grading, set(wanted))
        since = store.moodle.read_position(tenant_id, POSITION).since
        return GradeRead(grades, "courses", len(wanted), 0, since)

    position = store.moodle.read_position(tenant_id, POSITION)
    full = full or position.last_full_at is None or now - position.last_full_at >= FULL_READ_AFTER
    assignments = {int(a["id"]): a for a in client.assignments(synced)} if synced else {}
    answer = client.assign_grades(sorted(assignments), since=position.since or 0) if assignments else []
    changes = _changes(answer, assignments)
    latest = max((c["timemodified"] for c in changes), default=None)
    since = position.since
    if latest is not None:
        since = max(since or 0, latest - SINCE_OVERLAP_SECONDS)

    if full:
        rows = [r for c in synced for r in _gradebook(client, c, None)]
        grades = _store(client, store, tenant_id, rows, grading, set(synced))
        read = GradeRead(grades, "full", len(synced), len(changes), since)
    else:
        fresh = _unseen(changes, store.moodle.grades(tenant_id))
        by_course: dict[int, set[int]] = defaultdict(set)
        for c in fresh:
            by_course[c["course"]].add(c["userid"])
        pairs = {(c["assignment"], c["userid"]) for c in fresh}
        rows = [
            r
            for course, learners in sorted(by_course.items())
            for r in _gradebook(client, course, learners)
            if (r["assignment_id"], r["moodle_user_id"]) in pairs
        ]
        filled_since = min((c["timemodified"] for c in fresh), default=0) - SINCE_OVERLAP_SECONDS
        grades = _store(
            client,
            store,
            tenant_id,
            rows,
            grading,
            set(by_course),
            changed={"answer": answer, "assignments": {a for a, _ in pairs}, "since": max(filled_since, 0)},
        )
        read = GradeRead(grades, "by change", len(by_course), len(fresh), since)
    store.moodle.save_read_position(
        tenant_id,
        POSITION,
        ReadPosition(since=since, last_full_at=now if full else position.last_full_at),
    )
    return read


def _changes(answer: list[dict], assignments: dict[int, dict]) -> list[dict]:
    """``mod_assign_get_grades``' grades as flat records with their course; ``-1`` (no grade: a
    rubric filling taken as empty, a grade removed) is left out, as the gradebook shows none."""
    out = []
    for entry in answer:
        assignment = assignments.get(int(entry.get("assignmentid", -1)))
        if assignment is None:
            continue
        for g in entry.get("grades") or []:
            value = float(g.get("grade") or -1)
            if value < 0:
                continue
            out.append(
                {
                    "assignment": int(entry["assignmentid"]),
                    "course": int(assignment["course"]),
                    "userid": int(g["userid"]),
                    "grade": value,
                    "attemptnumber": int(g.get("attemptnumber") or 0),
                    "timemodified": int(g.get("timemodified") or 0),
                }
            )
    return out


def _unseen(changes: list[dict], stored: pd.DataFrame) -> list[dict]:
    """The changes the warehouse does not hold yet. A stored row holds one when it is of the same
    course and learner, graded at the same second (the gradebook's date graded is the assignment
    grade's ``timemodified``: Moodle 4.5 ``mod/assign/locallib.php`` convert_grade_for_gradebook())
    with the same value, and for a criteria grade the same attempt. Without the grade item (which
    ``mod_assign_get_grades`` does not give) that is as close as the warehouse can match."""
    if not changes or stored.empty:
        return list(changes)
    held: dict[tuple, set] = defaultdict(set)
    have = stored[stored["graded_at"].notna() & stored["grade_raw"].notna()]
    for c, u, t, g, a, how in zip(
        have["moodle_course_id"],
        have["moodle_user_id"],
        have["graded_at"],
        have["grade_raw"],
        have["attempt"],
        have["grading"],
        strict=True,
    ):
        # A percentage grade matches whatever the attempt; a criteria grade only its own attempt,
        # and one that waits for a filling (no attempt) nothing: its filling is what is awaited.
        attempt = None if how != "criteria" else ("waiting" if pd.isna(a) else int(a))
        held[(int(c), int(u), int(t), round(float(g), 5))].add(attempt)
    out = []
    for c in changes:
        attempts = held.get((c["course"], c["userid"], c["timemodified"], round(c["grade"], 5)))
        if attempts and (None in attempts or c["attemptnumber"] + 1 in attempts):
            continue
        out.append(c)
    return out


def _gradebook(client: MoodleClient, course_id: int, learners: set[int] | None) -> list[dict]:
    """A course's graded items (``gradereport_user_get_grade_items``, one call), of every learner
    (``None``) or of ``learners``. Always asked for every user (``userid`` 0): that answer holds the
    learners the gradebook shows (active student enrolments), where a single ``userid`` is answered
    for anyone, an unenrolled learner too, and a read by change must keep what a full read keeps."""
    rows = []
    for usergrade in client.get_grade_items(int(course_id), 0):
        uid = int(usergrade["userid"])
        if learners is not None and uid not in learners:
            continue
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
                    "assignment_id": int(item["iteminstance"])
                    if item.get("itemmodule") == "assign" and item.get("iteminstance") is not None
                    else None,
                    "graded_at": int(item["gradedategraded"]) if item.get("gradedategraded") else None,
                }
            )
    return rows


def _store(
    client: MoodleClient,
    store: Warehouse,
    tenant_id: str,
    rows: list[dict],
    grading: GradingConfig,
    course_ids: set[int],
    changed: dict | None = None,
) -> pd.DataFrame:
    """The rows with their Zoho ids and BTEC grades, stored; ``changed`` (a read by change) is what
    the criteria need from it: the ``mod_assign_get_grades`` answer, the assignments that changed,
    the ``since`` of their fillings."""
    courses = store.moodle.id_map(tenant_id, "course")
    users = store.moodle.id_map(tenant_id, "user")
    students = users[users["zoho_module"] == "students"]
    user_to_zoho = pd.Series(students.index, index=students["moodle_id"].astype(int))
    course_to_zoho = pd.Series(courses.index, index=courses["moodle_id"].astype(int))
    grades = pd.DataFrame(rows, columns=_COLUMNS)
    grades["composite_key"] = grades["moodle_user_id"].astype(str) + "_" + grades["grade_item_id"].astype(str)
    grades["student_zoho_id"] = grades["moodle_user_id"].map(user_to_zoho)
    grades["class_zoho_id"] = grades["moodle_course_id"].map(course_to_zoho)
    grades["percentage"] = percentage(grades["grade_raw"], grades["grade_max"])
    by_percentage = btec_grades(grades["percentage"])
    grades["btec_grade"] = by_percentage["btec_grade"]
    grades["letter"] = by_percentage["letter"]
    grades["grading"] = "percentage"
    for column in ("criteria", "remarks", "reason", "unit_zoho_id", "attempt", "grader_id"):
        grades[column] = None
    grades["graded_at"] = grades["graded_at"].astype(object)
    grades = _by_criteria(client, store, tenant_id, grades, grading, course_ids, changed)
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
    grades = grades.drop(columns=["cmid", "assignment_id"])
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
    changed: dict | None = None,
) -> pd.DataFrame:
    """Grade the items of rubric assessments from the learners' criteria (see read_grades)."""
    rubrics = store.moodle.rubrics(tenant_id)
    assessed = set(rubrics.loc[rubrics["definition_id"].notna(), "cmid"].astype(int))
    if grades.empty or not assessed:
        return grades
    if changed is None:
        fillings = rubric_fillings(client, store, tenant_id, courses)
    else:
        fillings = rubric_fillings(
            client,
            store,
            tenant_id,
            courses,
            assign_grades=changed["answer"],
            assignment_ids=changed["assignments"],
            since=changed["since"],
        )
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
