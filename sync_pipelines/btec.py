"""BTEC grade conversion: a Moodle percentage → Distinction, Merit, Pass or Refer.

Bands, on the percentage of the item's ``grademax`` (not the raw grade):

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
"""

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
