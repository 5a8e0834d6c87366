"""BTEC criteria as Moodle rubrics, and each learner's criteria read back.

**Which assignments.** A class's course assesses the class's unit (Zoho ``BTEC_Classes.Unit``). Its
assignments whose name starts with the school's ``grading.assessment_prefix`` (default ``BTEC``,
case-insensitive; empty: every assignment of the course) are the unit's assessment, and each gets a
rubric of the unit's criteria (``P1_description`` … ``D6_description``, in order, empty ones
skipped): one criterion per code, its description ``"<code>: <description>"``, two levels, *Not
achieved* (0 points) and *Achieved* (1 point). A unit without criteria, or an assignment without a
rubric, keeps the percentage conversion (:mod:`sync_pipelines.btec`).

**Idempotent, and never over learners' fillings.** The rubric is created once
(``core_grading_save_definitions``) and updated only with Moodle's criterion and level ids, so a
description edited in Zoho is applied in place and learners' fillings keep matching. A criterion
added or removed in Zoho after learners were graded with the rubric is not pushed (the web services
would let it, and the fillings would silently stop matching, see the Moodle client): it is drift,
recorded with what differs (``moodle_drift``, entity ``rubric``) for staff to apply in Moodle's rubric
editor. Before anyone is graded, the rubric simply follows Zoho.

**Reading a learner's criteria.** ``core_grading_get_gradingform_instances`` gives each graded
attempt's filling (criterion id → level id); ``mod_assign_get_grades`` gives the attempt's learner,
number and grader (a filling's ``itemid`` is the grade's ``id``). A level with points is a criterion
achieved. The BTEC grade is computed from the criteria with the school's rule
(:class:`sync_pipelines.tenants.GradingConfig`), never from the gradebook's percentage (the share of
rubric points: 4 of 5 criteria is 80 %); an incomplete filling is reported, not graded.
"""

import html
import json
from dataclasses import dataclass, field

import pandas as pd

from sync_pipelines.btec import unit_criteria
from sync_pipelines.moodle.client import MoodleClient, MoodleRecordError
from sync_pipelines.tenants import GradingConfig
from sync_pipelines.warehouse import Warehouse
from sync_pipelines.warehouse.moodle import Push
from sync_pipelines.zoho.modules import module

LEVELS = (("Not achieved", 0), ("Achieved", 1))
RUBRIC_COLUMNS = [
    "cmid",
    "assignment_id",
    "course_id",
    "class_zoho_id",
    "unit_zoho_id",
    "definition_id",
    "criteria",
    "status",
    "detail",
]


@dataclass
class RubricReport:
    """What one rubric reconciliation did: per assessment, its rubric's state and the writes."""

    rubrics: pd.DataFrame
    pushes: list[Push] = field(default_factory=list)
    drift: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            columns=["key", "moodle_id", "side", "kind", "detail", "action", "healed"]
        )
    )

    def counts(self) -> dict[str, int]:
        out = {f"rubrics_{s}": int(n) for s, n in self.rubrics["status"].value_counts().items()}
        out["assessments"] = len(self.rubrics)
        out["drift"] = len(self.drift)
        return out


def assessments(
    client: MoodleClient, store: Warehouse, tenant_id: str, prefix: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the unit assessments: ``cmid``, ``assignment_id``, ``course_id``, ``class_zoho_id``,
    ``unit_zoho_id``, ``name``; the criteria of the units concerned, from :func:`unit_criteria`)."""
    criteria = unit_criteria(store.read_table(tenant_id, module("units")))
    classes = store.read_table(tenant_id, module("classes"))
    courses = store.moodle.id_map(tenant_id, "course")["moodle_id"]
    taught = classes[
        classes["unit_id"].isin(set(criteria["unit_id"])) & classes["zoho_id"].isin(courses.index)
    ]
    empty = pd.DataFrame(
        columns=["cmid", "assignment_id", "course_id", "class_zoho_id", "unit_zoho_id", "name"]
    )
    if taught.empty:
        return empty, criteria
    course_of = {int(courses[z]): (z, u) for z, u in zip(taught["zoho_id"], taught["unit_id"], strict=True)}
    rows = []
    for a in client.assignments(sorted(course_of)):
        name = str(a.get("name") or "")
        if prefix and not name.strip().lower().startswith(prefix.lower()):
            continue
        klass, unit = course_of.get(int(a["course"]), (None, None))
        if klass is None:
            continue
        rows.append(
            {
                "cmid": int(a["cmid"]),
                "assignment_id": int(a["id"]),
                "course_id": int(a["course"]),
                "class_zoho_id": klass,
                "unit_zoho_id": unit,
                "name": name,
            }
        )
    return (pd.DataFrame(rows, columns=empty.columns) if rows else empty), criteria


def assessable_courses(store: Warehouse, tenant_id: str, *, min_learners: int = 1) -> pd.DataFrame:
    """Synced courses of classes whose unit has Pass, Merit and Distinction criteria, with at least
    ``min_learners`` students enrolled (``course_id``, ``class_zoho_id``, ``unit_zoho_id``,
    ``learners``): where a demo or an acceptance run can add a unit assessment."""
    criteria = unit_criteria(store.read_table(tenant_id, module("units")))
    bands = criteria.groupby("unit_id")["band"].apply(set)
    units = set(bands[bands.map(lambda b: {"P", "M", "D"} <= b)].index)
    classes = store.read_table(tenant_id, module("classes"))
    courses = store.moodle.id_map(tenant_id, "course")["moodle_id"]
    held = store.moodle.enrolments(tenant_id)
    learners = held[held["role_id"] == 5].groupby("moodle_course_id").size()
    rows = [
        {
            "course_id": int(courses[k]),
            "class_zoho_id": k,
            "unit_zoho_id": u,
            "learners": int(learners.get(int(courses[k]), 0)),
        }
        for k, u in zip(classes["zoho_id"], classes["unit_id"], strict=True)
        if u in units and k in courses.index
    ]
    out = pd.DataFrame(rows, columns=["course_id", "class_zoho_id", "unit_zoho_id", "learners"])
    return out[out["learners"] >= min_learners].reset_index(drop=True)


def _code(description: str) -> str:
    return str(description).split(":", 1)[0].strip().upper()


def _wanted(criteria: pd.DataFrame) -> list[tuple[str, str]]:
    """``(code, "<code>: <description>")`` per criterion (a description that already starts with
    its code is not prefixed twice)."""
    out = []
    for code, text in zip(criteria["code"], criteria["description"], strict=True):
        text = str(text).strip()
        out.append((code, text if _code(text) == code and ":" in text else f"{code}: {text}"))
    return out


def _same_text(moodle: object) -> str:
    """A criterion's description as Moodle answers it, comparable with Zoho's: HTML entities
    decoded (Moodle answers ``&amp;`` for ``&``), white space collapsed."""
    return " ".join(html.unescape(str(moodle or "")).split())


def _criteria_payload(wanted: list[tuple[str, str]], existing: dict[str, dict] | None = None) -> list[dict]:
    """Moodle's ``rubric_criteria`` for ``wanted``, with the ids of ``existing`` (code → Moodle
    criterion) where the code is already there, so that Moodle updates it in place."""
    out = []
    for order, (code, text) in enumerate(wanted, start=1):
        old = (existing or {}).get(code)
        levels = []
        for definition, score in LEVELS:
            level = {"score": score, "definition": definition, "definitionformat": 1}
            if old:
                same = [lv for lv in old.get("levels") or [] if float(lv.get("score", -1)) == score]
                if same:
                    level["id"] = int(same[0]["id"])
            levels.append(level)
        criterion = {"sortorder": order, "description": text, "descriptionformat": 1, "levels": levels}
        if old:
            criterion["id"] = int(old["id"])
        out.append(criterion)
    return out


def _stored(definition: dict) -> dict:
    """What the warehouse keeps of a rubric: definition id, criterion id → code, level id → points."""
    crit = (definition.get("rubric") or {}).get("rubric_criteria") or []
    return {
        "criteria": {str(c["id"]): _code(c.get("description", "")) for c in crit},
        "levels": {str(lv["id"]): float(lv.get("score", 0)) for c in crit for lv in c.get("levels") or []},
    }


def reconcile_rubrics(
    client: MoodleClient,
    store: Warehouse,
    tenant_id: str,
    grading: GradingConfig,
    *,
    service_user_id: int | None,
    dry_run: bool = False,
    run_id: str | None = None,
) -> RubricReport:
    """Give every unit assessment its unit's rubric (module docstring)."""
    found, criteria = assessments(client, store, tenant_id, grading.assessment_prefix)
    report = RubricReport(pd.DataFrame(columns=RUBRIC_COLUMNS))
    if found.empty:
        store.moodle.save_rubrics(tenant_id, report.rubrics, report.pushes, report.drift, run_id)
        return report
    areas = {int(a["cmid"]): a for a in client.grading_definitions(found["cmid"].tolist())}
    rows, drift = [], []
    for a in found.itertuples(index=False):
        wanted = _wanted(criteria[criteria["unit_id"] == a.unit_zoho_id])
        area = areas.get(int(a.cmid))
        key = f"rubric:{a.cmid}"
        if area is None:  # the role cannot enter or see the activity (see the preflight)
            rows.append(
                {
                    **a._asdict(),
                    "definition_id": None,
                    "criteria": None,
                    "status": "not_visible",
                    "detail": "core_grading_get_definitions does not answer this activity",
                }
            )
            continue
        rubric = next((d for d in area.get("definitions") or [] if d.get("method") == "rubric"), None)
        have = {
            _code(c.get("description", "")): c
            for c in ((rubric or {}).get("rubric") or {}).get("rubric_criteria") or []
        }
        have_codes = [
            _code(c.get("description", ""))
            for c in sorted(have.values(), key=lambda c: c.get("sortorder", 0))
        ]
        want_codes = [c for c, _ in wanted]
        action, detail = None, ""
        if rubric is None:
            action, payload = "create", _criteria_payload(wanted)
        elif have_codes == want_codes:
            texts = {k: _same_text(v.get("description")) for k, v in have.items()}
            changed = [c for c, t in wanted if texts.get(c) != _same_text(t)]
            active = area.get("activemethod") == "rubric"
            if changed or not active:
                action, payload = "update", _criteria_payload(wanted, have)
                detail = "descriptions of " + ", ".join(changed) if changed else "made the active method"
        else:
            graded = client.gradingform_instances(int(rubric["id"]))
            if graded:
                detail = (
                    f"criteria differ: Zoho {', '.join(want_codes)}; Moodle {', '.join(have_codes)}; "
                    f"{len(graded)} filling(s) exist, so the rubric is not changed: apply it in Moodle's rubric editor"
                )
                drift.append(
                    {
                        "key": key,
                        "moodle_id": str(a.cmid),
                        "side": "zoho",
                        "kind": "differs",
                        "detail": detail,
                        "action": "reported",
                        "healed": False,
                    }
                )
            else:
                action, payload = "update", _criteria_payload(wanted, have)
                detail = f"criteria now {', '.join(want_codes)} (no learner graded yet)"
        status = "unchanged" if action is None and not detail else ("drift" if action is None else action)
        if action and not dry_run:
            try:
                client.save_grading_definition(
                    cmid=int(a.cmid),
                    contextid=int(area["contextid"]),
                    name=f"BTEC criteria: {a.name}",
                    criteria=payload,
                    usercreated=int(service_user_id or 0),
                )
                report.pushes.append(
                    Push("moodle", "rubric", key, action, True, remote_id=str(a.cmid), message=detail or None)
                )
            except MoodleRecordError as exc:
                report.pushes.append(
                    Push(
                        "moodle",
                        "rubric",
                        key,
                        action,
                        False,
                        remote_id=str(a.cmid),
                        errorcode=exc.errorcode,
                        message=str(exc),
                    )
                )
                status = "failed"
        rows.append(
            {**a._asdict(), "definition_id": None, "criteria": None, "status": status, "detail": detail}
        )
    if report.pushes and not dry_run:  # read the definitions again: the ids Moodle gave
        areas = {int(a["cmid"]): a for a in client.grading_definitions(found["cmid"].tolist())}
    for row in rows:
        area = areas.get(int(row["cmid"])) or {}
        rubric = next((d for d in area.get("definitions") or [] if d.get("method") == "rubric"), None)
        if rubric is not None:
            row["definition_id"] = int(rubric["id"])
            row["criteria"] = json.dumps(_stored(rubric))
    report.rubrics = pd.DataFrame(rows).drop(columns=["name"]).reindex(columns=RUBRIC_COLUMNS)
    if drift:
        report.drift = pd.DataFrame(drift)
    if not dry_run:
        store.moodle.save_rubrics(tenant_id, report.rubrics, report.pushes, report.drift, run_id)
    return report


def rubric_fillings(
    client: MoodleClient,
    store: Warehouse,
    tenant_id: str,
    course_ids: set[int] | None = None,
    *,
    assign_grades: list[dict] | None = None,
    assignment_ids: set[int] | None = None,
    since: int = 0,
) -> pd.DataFrame:
    """Each learner's latest graded attempt of every rubric assessment: one row per (assignment,
    learner) with ``moodle_user_id``, ``cmid``, ``unit_zoho_id``, ``class_zoho_id``, ``attempt``
    (1 = first), ``grader_id``, ``graded_at`` and ``achieved`` (code → True/False; a criterion of
    the rubric not filled is absent).

    The grade read by change (:mod:`sync_pipelines.moodle.grades`) passes what it already has:
    ``assign_grades`` (its ``mod_assign_get_grades`` answer: the latest attempts that changed, so
    no second call), ``assignment_ids`` (only the rubric assessments with a changed grade) and
    ``since`` (only the fillings saved since: ``core_grading_get_gradingform_instances`` takes it).
    """
    rubrics = store.moodle.rubrics(tenant_id)
    rubrics = rubrics[rubrics["definition_id"].notna()]
    if course_ids:
        rubrics = rubrics[rubrics["course_id"].isin(course_ids)]
    if assignment_ids is not None:
        rubrics = rubrics[rubrics["assignment_id"].astype(int).isin(assignment_ids)]
    cols = [
        "moodle_user_id",
        "cmid",
        "course_id",
        "unit_zoho_id",
        "class_zoho_id",
        "attempt",
        "grader_id",
        "graded_at",
        "achieved",
        "remarks",
    ]
    if rubrics.empty:
        return pd.DataFrame(columns=cols)
    grades: dict[int, dict] = {}
    if assign_grades is None:
        assign_grades = client.assign_grades(rubrics["assignment_id"].astype(int).tolist())
    for entry in assign_grades:
        for g in entry.get("grades") or []:
            grades[int(g["id"])] = g
    out = []
    for r in rubrics.itertuples(index=False):
        stored = json.loads(r.criteria)
        for inst in client.gradingform_instances(int(r.definition_id), since=since):
            g = grades.get(int(inst.get("itemid", -1)))
            if g is None:  # an earlier attempt's filling: the latest one counts
                continue
            achieved, remarks = {}, {}
            for filling in (inst.get("rubric") or {}).get("criteria") or []:
                code = stored["criteria"].get(str(filling.get("criterionid")))
                score = stored["levels"].get(str(filling.get("levelid")))
                if code is not None and score is not None:
                    achieved[code] = score > 0
                    if str(filling.get("remark") or "").strip():
                        remarks[code] = str(filling["remark"]).strip()
            out.append(
                {
                    "moodle_user_id": int(g["userid"]),
                    "cmid": int(r.cmid),
                    "course_id": int(r.course_id),
                    "unit_zoho_id": r.unit_zoho_id,
                    "class_zoho_id": r.class_zoho_id,
                    "attempt": int(g.get("attemptnumber") or 0) + 1,
                    "grader_id": int(g["grader"]) if g.get("grader") not in (None, -1) else None,
                    "graded_at": int(g.get("timemodified") or 0),
                    "achieved": achieved,
                    "remarks": remarks,
                }
            )
    return pd.DataFrame(out, columns=cols)
