"""BTEC grades, two ways: a Moodle percentage, or a unit's criteria, → D, M, P, R (or RR).

**From a percentage.** Bands, on the percentage of the item's ``grademax`` (not the raw grade):

============ ======== =======
percentage   grade    letter
============ ======== =======
≥ 70         Distinction  D
≥ 60         Merit    M
≥ 40         Pass     P
below 40     Refer    R
============ ======== =======

A grade above ``grademax`` (extra credit) is a Distinction; a missing grade has no BTEC grade.
The letters are the values of Zoho's ``BTEC_Grades.Grade`` picklist.

**From criteria** (:func:`criteria_grade`, :func:`criteria_grades`). A unit states its Pass,
Merit and Distinction criteria in Zoho's ``BTEC`` module (``P1_description`` … ``P10_description``,
``M1`` … ``M9``, ``D1`` … ``D6``; :data:`CRITERIA`, :func:`unit_criteria`); a learner's grade
record holds, in a subform, which of them the learner met. Every Pass criterion met → P; and every
Merit → M; and every Distinction → D; a Pass criterion missed → R, or the school's last-attempt
letter (default RR) on the last allowed attempt. A band the unit has no criteria in is not
reachable (no M criteria: P at best). A filling with a criterion not assessed is reported, not
graded. The school's picklist values, subform names and attempt limit are per tenant
(``grading:`` in the tenants file, :class:`sync_pipelines.tenants.GradingConfig`); the status rule
(:func:`next_status`) never moves back a ``Grade_Status`` staff moved forward.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

BANDS: tuple[tuple[float, str, str], ...] = (
    (70.0, "Distinction", "D"),
    (60.0, "Merit", "M"),
    (40.0, "Pass", "P"),
    (float("-inf"), "Refer", "R"),
)


def btec_grade(percentage: float | None) -> tuple[str, str] | None:
    """``(grade, letter)`` for one percentage, or ``None`` when there is no grade."""
    if percentage is None or pd.isna(percentage):
        return None
    for floor, name, letter in BANDS:
        if percentage >= floor:
            return name, letter
    raise AssertionError("unreachable: the last band has no floor")


def btec_grades(percentages: pd.Series) -> pd.DataFrame:
    """Vectorised :func:`btec_grade`: columns ``btec_grade`` and ``letter`` (missing where no grade)."""
    p = pd.to_numeric(percentages, errors="coerce")
    conditions = [p >= floor for floor, _, _ in BANDS]
    names = np.select(conditions, [name for _, name, _ in BANDS], default="")
    letters = np.select(conditions, [letter for _, _, letter in BANDS], default="")
    out = pd.DataFrame({"btec_grade": names, "letter": letters}, index=percentages.index).astype(object)
    return out.where(p.notna(), None)


def percentage(grade_raw: pd.Series, grade_max: pd.Series) -> pd.Series:
    """Percentage of ``grade_max``; missing where either is missing or ``grade_max`` is not positive."""
    raw = pd.to_numeric(grade_raw, errors="coerce")
    top = pd.to_numeric(grade_max, errors="coerce")
    return (raw / top * 100.0).where(top > 0)


# --- criteria grading -----------------------------------------------------------------------------

Band = Literal["P", "M", "D"]

#: The bands of a unit's criteria, lowest first: letter, name, how many criteria Zoho's ``BTEC``
#: unit module can describe (``P1_description`` … ``P10_description``, ``M1`` … ``M9``, ``D1`` … ``D6``).
CRITERIA_BANDS: tuple[tuple[Band, str, int], ...] = (
    ("P", "Pass", 10),
    ("M", "Merit", 9),
    ("D", "Distinction", 6),
)


@dataclass(frozen=True)
class Criterion:
    """One assessment criterion code a unit may have.

    Attributes:
        code: ``P1`` … ``D6``.
        band: ``P``, ``M`` or ``D``.
        number: its number within the band.
        order: its place in :data:`CRITERIA` (``P1`` is 0, ``D6`` is 24): the order staff read them.
    """

    code: str
    band: Band
    number: int
    order: int

    @property
    def description_field(self) -> str:
        """The Zoho API name of the unit's description of this criterion (``P1_description``)."""
        return f"{self.code}_description"

    @property
    def description_column(self) -> str:
        """The column of that field in the units table and dataframes (``p1_description``)."""
        return f"{self.code.lower()}_description"


#: Every criterion code a unit can have, in order: P1 … P10, M1 … M9, D1 … D6.
CRITERIA: tuple[Criterion, ...] = tuple(
    Criterion(f"{band}{n}", band, n, order)
    for order, (band, n) in enumerate(
        (band, n) for band, _, count in CRITERIA_BANDS for n in range(1, count + 1)
    )
)
CRITERIA_BY_CODE: dict[str, Criterion] = {c.code: c for c in CRITERIA}
_CODE_BY_COLUMN: dict[str, Criterion] = {c.description_column: c for c in CRITERIA}

#: The letters a criteria outcome can have: the four BTEC grades, ``RR`` (Refer on the last
#: allowed attempt) and ``F`` (Fail), for a school whose last-attempt outcome is a fail.
LETTERS: tuple[str, ...] = ("D", "M", "P", "R", "RR", "F")
#: What a Pass criterion still missed on the last allowed attempt may give.
LAST_ATTEMPT_LETTERS: tuple[str, ...] = ("R", "RR", "F")


@dataclass(frozen=True)
class GradeValues:
    """The org's ``BTEC_Grades.Grade`` picklist value for each outcome letter (the shipped org
    spells each as its letter)."""

    D: str = "D"
    M: str = "M"
    P: str = "P"
    R: str = "R"
    RR: str = "RR"
    F: str = "F"

    def value(self, letter: str) -> str:
        """The picklist value of ``letter`` (one of :data:`LETTERS`)."""
        if letter not in LETTERS:
            raise ValueError(f"unknown grade letter {letter!r}: expected one of {', '.join(LETTERS)}")
        return getattr(self, letter)


@dataclass(frozen=True)
class StatusValues:
    """The org's ``BTEC_Grades.Grade_Status`` values the status rule (:func:`next_status`) knows.

    Attributes:
        marked: what the pipeline sets once a filling is graded.
        forward: statuses staff move a grade to after marking: never moved back.
        before: statuses before marking, which ``marked`` replaces (an empty status too).
    """

    marked: str = "Marking completed"
    forward: tuple[str, ...] = ("In review", "Ready for release", "Released")
    before: tuple[str, ...] = ("Not Marked", "In Marking")


@dataclass(frozen=True)
class SubformFields:
    """The field API names of one row of the grade record's criteria subform
    (``BTEC_Grades.Learning_Outcomes_Assessm``; the shipped field metadata does not list them).

    Attributes:
        code: the criterion code (``P1``).
        title: the criterion's description, as the unit states it.
        achieved: whether the learner met it: true, false, or empty when not assessed (guess: a
            checkbox; a real org's subform metadata would say).
        feedback: the assessor's feedback on it.
    """

    code: str = "Criterion_Code"
    title: str = "Criterion"
    achieved: str = "Achieved"
    feedback: str = "Feedback"


@dataclass(frozen=True)
class Outcome:
    """A unit grade from its criteria, or why there is none.

    Attributes:
        letter: one of :data:`LETTERS`, or ``None`` when the filling is not graded.
        grade: the org's picklist value of ``letter`` (what ``BTEC_Grades.Grade`` gets), or ``None``.
        reason: why, in words for a report (``"P3 not met"``, ``"incomplete: P3 not assessed"``).
    """

    letter: str | None
    grade: str | None
    reason: str

    @property
    def graded(self) -> bool:
        return self.letter is not None


def unit_criteria(units: pd.DataFrame, *, id_column: str = "zoho_id") -> pd.DataFrame:
    """The criteria each unit states: one row per unit and non-empty criterion description.

    Args:
        units: units as the units table holds them (``zoho_id``, ``p1_description`` …
            ``d6_description``); a description column it lacks counts as empty everywhere.
        id_column: the column holding the unit's id.

    Returns:
        Columns ``unit_id`` (the unit's ``zoho_id``), ``code``, ``band`` (``P``/``M``/``D``),
        ``order`` (see :class:`Criterion`) and ``description`` (stripped), sorted by unit and
        order. An empty or white-space-only description is no criterion: a unit with fewer
        criteria leaves the rest of the fields empty.
    """
    present = [c.description_column for c in CRITERIA if c.description_column in units.columns]
    long = units[[id_column, *present]].melt(id_vars=id_column, var_name="column", value_name="description")
    text = long["description"].astype("string").str.strip()
    keep = (text.notna() & (text != "")).to_numpy(dtype=bool)
    long = long.loc[keep]
    criteria = long["column"].map(_CODE_BY_COLUMN)
    out = pd.DataFrame(
        {
            "unit_id": long[id_column].astype(object),
            "code": criteria.map(lambda c: c.code).astype(object),
            "band": criteria.map(lambda c: c.band).astype(object),
            "order": criteria.map(lambda c: c.order).astype("int64"),
            "description": text.loc[keep].astype(object),
        }
    )
    return out.sort_values(["unit_id", "order"], kind="stable").reset_index(drop=True)


def _unit_codes(codes: Iterable[str]) -> list[Criterion]:
    criteria = []
    for code in dict.fromkeys(codes):
        if code not in CRITERIA_BY_CODE:
            raise ValueError(f"unknown criterion code {code!r}: expected P1-P10, M1-M9 or D1-D6")
        criteria.append(CRITERIA_BY_CODE[code])
    return sorted(criteria, key=lambda c: c.order)


def _achieved(code: str, value: object) -> bool | None:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise ValueError(f"criterion {code}: achieved must be true, false or empty, got {value!r}")


def _joined(codes: Iterable[str]) -> str:
    return ", ".join(codes)


def criteria_grade(
    achieved: Mapping[str, bool | None],
    codes: Sequence[str],
    *,
    attempt: int,
    last_attempt: int | None,
    values: GradeValues = GradeValues(),
    missed_on_last: str = "RR",
) -> Outcome:
    """The unit grade a learner's filling of its criteria gives.

    The rule (each band is reached only from the one below, and only if the unit has criteria in
    it):

    * a Pass criterion not met → ``R``; on the last allowed attempt (``attempt >= last_attempt``)
      → ``missed_on_last`` (default ``RR``);
    * every Pass criterion met → ``P``; also every Merit criterion → ``M``; also every
      Distinction criterion → ``D``;
    * a unit with no Merit criteria stops at ``P`` (Merit is not reachable, and so neither is
      Distinction, whatever D criteria it states); one with Merit but no Distinction criteria
      stops at ``M``.

    No grade (``letter`` ``None``) when the filling is incomplete (a criterion of the unit without
    true or false: ``"incomplete: P3 not assessed"``), when it assesses a criterion the unit does
    not state, or when the unit states no Pass criterion.

    Args:
        achieved: criterion code → met (``True``), not met (``False``), not assessed (``None``).
        codes: the unit's criteria codes (:func:`unit_criteria`), in any order.
        attempt: the attempt graded, 1 for the first submission.
        last_attempt: the last attempt allowed, or ``None`` for no limit.
        values: the org's picklist value for each letter.
        missed_on_last: the letter of a Pass criterion missed on the last attempt (``R``, ``RR``
            or ``F``).

    Raises:
        ValueError: an unknown code, an achieved value that is not true, false or empty, an
            attempt below 1 or an unknown ``missed_on_last``.
    """
    if missed_on_last not in LAST_ATTEMPT_LETTERS:
        raise ValueError(
            f"missed_on_last must be one of {', '.join(LAST_ATTEMPT_LETTERS)}, got {missed_on_last!r}"
        )
    if attempt < 1:
        raise ValueError(f"attempt must be 1 or more, got {attempt!r}")
    unit = _unit_codes(codes)
    filled = {code: _achieved(code, value) for code, value in achieved.items()}
    stated = {c.code for c in unit}
    if not any(c.band == "P" for c in unit):
        return Outcome(None, None, "not graded: the unit states no Pass criteria")
    extra = [code for code in filled if code not in stated]
    if extra:
        extra.sort(
            key=lambda code: (
                CRITERIA_BY_CODE[code].order if code in CRITERIA_BY_CODE else len(CRITERIA),
                code,
            )
        )
        return Outcome(None, None, f"not graded: {_joined(extra)} not criteria of the unit")
    missing = [c.code for c in unit if filled.get(c.code) is None]
    if missing:
        return Outcome(None, None, f"incomplete: {_joined(missing)} not assessed")
    missed = {band: [c.code for c in unit if c.band == band and not filled[c.code]] for band in "PMD"}
    has = {band: any(c.band == band for c in unit) for band in "PMD"}
    last = last_attempt is not None and attempt >= last_attempt
    letter, reason = _ladder(missed, has, last, attempt, last_attempt, missed_on_last)
    return Outcome(letter, values.value(letter), reason)


def _ladder(
    missed: Mapping[str, Sequence[str]],
    has: Mapping[str, bool],
    last: bool,
    attempt: int,
    last_attempt: int | None,
    missed_on_last: str,
) -> tuple[str, str]:
    if missed["P"]:
        if last:
            return missed_on_last, f"{_joined(missed['P'])} not met on attempt {attempt} of {last_attempt}"
        return "R", f"{_joined(missed['P'])} not met"
    if not has["M"]:
        return "P", "all P criteria met; the unit has no M criteria"
    if missed["M"]:
        return "P", f"all P criteria met; {_joined(missed['M'])} not met"
    if not has["D"]:
        return "M", "all P and M criteria met; the unit has no D criteria"
    if missed["D"]:
        return "M", f"all P and M criteria met; {_joined(missed['D'])} not met"
    return "D", "all P, M and D criteria met"


def criteria_grades(
    fillings: pd.DataFrame,
    criteria: pd.DataFrame,
    *,
    last_attempt: int | None,
    values: GradeValues = GradeValues(),
    missed_on_last: str = "RR",
) -> pd.DataFrame:
    """Vectorised :func:`criteria_grade` over many grade records.

    Args:
        fillings: one row per grade record and criterion assessed: ``grade_id``, ``unit_id``,
            ``attempt`` (missing, or no such column: 1), ``code`` and ``achieved`` (true, false,
            or missing when not assessed). A grade record with no rows at all is one row with a
            missing ``code`` (what ``explode`` makes of an empty subform).
        criteria: the units' criteria, as :func:`unit_criteria` gives them.
        last_attempt, values, missed_on_last: as for :func:`criteria_grade`.

    Returns:
        One row per ``grade_id``, in order of first appearance: ``grade_id``, ``letter``,
        ``grade``, ``reason`` (``letter`` and ``grade`` missing where not graded). A criterion
        assessed twice in one record is not graded either.

    Raises:
        ValueError: as :func:`criteria_grade`, or a grade record with two units or no id.
    """
    if missed_on_last not in LAST_ATTEMPT_LETTERS:
        raise ValueError(
            f"missed_on_last must be one of {', '.join(LAST_ATTEMPT_LETTERS)}, got {missed_on_last!r}"
        )
    lacking = [c for c in ("grade_id", "unit_id", "code", "achieved") if c not in fillings.columns]
    if lacking:
        raise ValueError(f"fillings lack the columns {lacking}")
    if "attempt" not in fillings.columns:
        fillings = fillings.assign(attempt=1)
    unknown = set(criteria["code"].dropna()) - set(CRITERIA_BY_CODE)
    if unknown:
        raise ValueError(f"unknown criterion codes {sorted(unknown)}: expected P1-P10, M1-M9 or D1-D6")
    if fillings["grade_id"].isna().any():
        raise ValueError("fillings has rows without a grade_id")
    achieved = fillings["achieved"]
    bad = achieved.notna() & ~achieved.isin([True, False])
    if bad.any():
        first = fillings.loc[bad].iloc[0]
        raise ValueError(
            f"grade {first['grade_id']}, criterion {first['code']}: achieved must be true, false or "
            f"empty, got {first['achieved']!r}"
        )
    records = fillings.groupby("grade_id", sort=False).agg(
        unit_id=("unit_id", "first"), units=("unit_id", "nunique"), attempt=("attempt", "first")
    )
    if (records["units"] > 1).any():
        raise ValueError(
            f"grade records with more than one unit: {list(records.index[records['units'] > 1])}"
        )
    attempt = pd.to_numeric(records["attempt"], errors="coerce").fillna(1)
    if (attempt < 1).any():
        raise ValueError(f"attempt must be 1 or more: grade records {list(records.index[attempt < 1])}")

    # One row per criterion the unit states or the filling assesses.
    stated = (
        records[["unit_id"]]
        .reset_index()
        .merge(criteria[["unit_id", "code"]].drop_duplicates(), on="unit_id")
    )
    given = fillings.loc[fillings["code"].notna(), ["grade_id", "code", "achieved"]]
    twice = given.duplicated(["grade_id", "code"], keep=False)
    rows = stated.merge(given.loc[~twice], on=["grade_id", "code"], how="outer", indicator=True)
    # A code that is no criterion at all (a typo in Zoho) is one the unit does not state: last.
    rows["order"] = rows["code"].map({c.code: c.order for c in CRITERIA}).fillna(len(CRITERIA))
    rows["band"] = rows["code"].map({c.code: c.band for c in CRITERIA})
    rows = rows.sort_values(["order", "code"], kind="stable")
    is_stated = rows["_merge"] != "right_only"
    assessed = rows["achieved"].notna()
    met = assessed & rows["achieved"].fillna(False).astype(bool)

    def codes(mask: pd.Series) -> pd.Series:
        picked = rows.loc[mask]
        joined = picked.groupby("grade_id", sort=False)["code"].agg(_joined)
        return joined.reindex(records.index).fillna("")

    def count(mask: pd.Series) -> pd.Series:
        return mask.groupby(rows["grade_id"]).sum().reindex(records.index).fillna(0)

    twice_codes = (
        (
            given.loc[twice]
            .drop_duplicates(["grade_id", "code"])
            .groupby("grade_id", sort=False)["code"]
            .agg(_joined)
        )
        .reindex(records.index)
        .fillna("")
    )
    extra = codes(~is_stated)
    missing = codes(is_stated & ~assessed)
    missed = {band: codes(is_stated & assessed & ~met & (rows["band"] == band)) for band in "PMD"}
    has = {band: count(is_stated & (rows["band"] == band)) > 0 for band in "PMD"}

    last = pd.Series(last_attempt is not None, index=records.index) & (
        attempt >= (last_attempt if last_attempt is not None else np.inf)
    )
    attempt_text = attempt.astype(int).astype(str)
    p_text = missed["P"] + " not met"
    choices = [
        (~has["P"], None, "not graded: the unit states no Pass criteria"),
        (twice_codes != "", None, "not graded: " + twice_codes + " assessed twice"),
        (extra != "", None, "not graded: " + extra + " not criteria of the unit"),
        (missing != "", None, "incomplete: " + missing + " not assessed"),
        (
            (missed["P"] != "") & last,
            missed_on_last,
            p_text + " on attempt " + attempt_text + f" of {last_attempt}",
        ),
        (missed["P"] != "", "R", p_text),
        (~has["M"], "P", "all P criteria met; the unit has no M criteria"),
        (missed["M"] != "", "P", "all P criteria met; " + missed["M"] + " not met"),
        (~has["D"], "M", "all P and M criteria met; the unit has no D criteria"),
        (missed["D"] != "", "M", "all P and M criteria met; " + missed["D"] + " not met"),
    ]
    conditions = [c.to_numpy(dtype=bool) for c, _, _ in choices]
    letters = np.select(conditions, [letter or "" for _, letter, _ in choices], default="D")
    reasons = np.select(
        conditions,
        [np.broadcast_to(np.asarray(r, dtype=object), len(records)) for _, _, r in choices],
        default="all P, M and D criteria met",
    )
    out = pd.DataFrame({"grade_id": records.index, "letter": letters, "reason": reasons}).astype(object)
    out["letter"] = out["letter"].where(out["letter"] != "", None)
    grade_of = {letter: values.value(letter) for letter in LETTERS}
    out["grade"] = out["letter"].map(grade_of).astype(object).where(out["letter"].notna(), None)
    return out[["grade_id", "letter", "grade", "reason"]].reset_index(drop=True)


def read_filling(
    rows: Iterable[Mapping[str, Any]], fields: SubformFields = SubformFields()
) -> dict[str, bool | None]:
    """A grade record's criteria subform rows → ``{code: achieved}`` for :func:`criteria_grade`.

    ``achieved`` is read from a checkbox (true or false; empty: not assessed). Rows without a
    code are left out.

    Raises:
        ValueError: a code given twice, or an achieved value that is not true, false or empty.
    """
    filling: dict[str, bool | None] = {}
    for row in rows:
        code = row.get(fields.code)
        if code is None or (isinstance(code, str) and not code.strip()):
            continue
        code = str(code).strip().upper()
        if code in filling:
            raise ValueError(f"criterion {code} is assessed in two rows of {fields.code}")
        filling[code] = _achieved(code, row.get(fields.achieved))
    return filling


def filling_rows(
    criteria: pd.DataFrame,
    achieved: Mapping[str, bool | None],
    feedback: Mapping[str, str] | None = None,
    fields: SubformFields = SubformFields(),
) -> list[dict[str, Any]]:
    """The criteria subform rows to write for one grade record: one per criterion of its unit.

    The rows carry no ``id``: sent in an update or upsert, they replace the rows the record holds.
    Zoho keeps a row only when its ``id`` is sent (its v8 update-subforms sample sends the rows to
    keep by id: https://www.zoho.com/crm/developer/docs/api/v8/update-subforms.html), and gives
    each new row an id of its own.

    Args:
        criteria: the unit's rows of :func:`unit_criteria` (``code``, ``description``).
        achieved: code → met, not met, or not assessed (``None``).
        feedback: code → the assessor's feedback, where there is any.
        fields: the subform's field API names.
    """
    feedback = feedback or {}
    return [
        {
            fields.code: code,
            fields.title: description,
            fields.achieved: _achieved(code, achieved.get(code)),
            fields.feedback: feedback.get(code) or None,
        }
        for code, description in zip(criteria["code"], criteria["description"], strict=True)
    ]


def next_status(
    current_zoho_status: str | None,
    marked: bool,
    statuses: StatusValues = StatusValues(),
) -> str | None:
    """The ``Grade_Status`` to write, or ``None`` to leave Zoho's as it is.

    The pipeline never moves a status back: a status staff moved forward (``statuses.forward``:
    In review, Ready for release, Released) stays, and so does ``marked`` itself. A graded
    filling (``marked``) moves an empty status or one before marking (Not Marked, In Marking) to
    ``statuses.marked`` (Marking completed). A filling not graded changes nothing, and neither
    does a status the rule does not know (it may be a step forward the school added).
    """
    current = (current_zoho_status or "").strip()
    if current in ("", "-None-"):
        current = ""
    if not marked or current == statuses.marked or current in statuses.forward:
        return None
    if current == "" or current in statuses.before:
        return statuses.marked
    return None
