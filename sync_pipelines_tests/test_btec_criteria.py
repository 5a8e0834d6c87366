"""Criteria grading (sync_pipelines.btec): the unit's criteria, the grade rule at every boundary,
the vectorised rule against the scalar one, the subform rows, and the status rule."""

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_pipelines.btec import (
    CRITERIA,
    CRITERIA_BY_CODE,
    GradeValues,
    Outcome,
    StatusValues,
    SubformFields,
    criteria_grade,
    criteria_grades,
    filling_rows,
    next_status,
    read_filling,
    unit_criteria,
)
from sync_pipelines.zoho.modules import UNITS, metadata_for

#: A full unit: four Pass, three Merit and two Distinction criteria.
UNIT = ("P1", "P2", "P3", "P4", "M1", "M2", "M3", "D1", "D2")
PASS_ONLY = ("P1", "P2", "P3")


def _all(codes: tuple[str, ...], **overrides: bool | None) -> dict[str, bool | None]:
    return {code: overrides.get(code, True) for code in codes}


def _both(
    achieved: dict[str, bool | None],
    codes: tuple[str, ...],
    *,
    attempt: int = 1,
    last_attempt: int | None = 2,
    values: GradeValues | None = None,
    missed_on_last: str = "RR",
) -> Outcome:
    """The scalar rule's outcome, after checking that the vectorised rule gives the same."""
    values = values or GradeValues()
    one = criteria_grade(
        achieved,
        codes,
        attempt=attempt,
        last_attempt=last_attempt,
        values=values,
        missed_on_last=missed_on_last,
    )
    rows = [
        {"grade_id": "g", "unit_id": "u", "attempt": attempt, "code": c, "achieved": a}
        for c, a in achieved.items()
    ]
    fillings = pd.DataFrame(
        rows or [{"grade_id": "g", "unit_id": "u", "attempt": attempt, "code": None, "achieved": None}]
    )
    criteria = pd.DataFrame({"unit_id": "u", "code": list(codes)}, dtype=object)
    (many,) = criteria_grades(
        fillings, criteria, last_attempt=last_attempt, values=values, missed_on_last=missed_on_last
    ).itertuples(index=False)
    assert (many.letter, many.grade, many.reason) == (one.letter, one.grade, one.reason)
    return one


# --- the criteria table and the units' criteria ----------------------------------------------------


def test_the_criteria_table_is_p1_to_p10_m1_to_m9_d1_to_d6_in_order():
    codes = [c.code for c in CRITERIA]
    expected = (
        [f"P{n}" for n in range(1, 11)] + [f"M{n}" for n in range(1, 10)] + [f"D{n}" for n in range(1, 7)]
    )
    assert codes == expected
    assert [c.order for c in CRITERIA] == list(range(25))
    assert CRITERIA_BY_CODE["M1"].band == "M" and CRITERIA_BY_CODE["P10"].number == 10


@pytest.mark.parametrize("criterion", CRITERIA, ids=lambda c: c.code)
def test_every_criterion_is_a_units_field_of_the_orgs_metadata(criterion):
    spec = UNITS.field(criterion.description_column)
    assert spec.api_name == criterion.description_field
    assert metadata_for("BTEC")[criterion.description_field]["data_type"] == "textarea"
    assert (spec.kind, spec.fingerprinted) == ("textarea", True)
    assert spec.api_name in UNITS.api_fields


def test_unit_criteria_skips_empty_and_white_space_descriptions():
    units = pd.DataFrame(
        {
            "zoho_id": ["u2", "u1"],
            "p1_description": ["Explain the market", "  Describe a plan  "],
            "p2_description": ["   ", "List the risks"],
            "p10_description": [None, "Close the loop"],
            "m1_description": ["", None],
            "d1_description": ["Evaluate", float("nan")],
            "name": ["Unit 2", "Unit 1"],
        }
    )  # no m2 … d6 columns at all: empty everywhere
    got = unit_criteria(units)
    assert list(got.columns) == ["unit_id", "code", "band", "order", "description"]
    assert got[["unit_id", "code", "band", "order"]].values.tolist() == [
        ["u1", "P1", "P", 0],
        ["u1", "P2", "P", 1],
        ["u1", "P10", "P", 9],
        ["u2", "P1", "P", 0],
        ["u2", "D1", "D", 19],
    ]
    assert got["description"].tolist() == [
        "Describe a plan",
        "List the risks",
        "Close the loop",
        "Explain the market",
        "Evaluate",
    ]


def test_unit_criteria_of_no_units_is_empty():
    units = pd.DataFrame({"zoho_id": [], **{c.description_column: [] for c in CRITERIA}})
    assert unit_criteria(units).empty


# --- the grade rule at every boundary ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("achieved", "codes", "letter", "reason"),
    [
        (_all(UNIT), UNIT, "D", "all P, M and D criteria met"),
        (_all(UNIT, D2=False), UNIT, "M", "all P and M criteria met; D2 not met"),
        (_all(UNIT, D1=False, D2=False), UNIT, "M", "all P and M criteria met; D1, D2 not met"),
        (_all(UNIT, M2=False), UNIT, "P", "all P criteria met; M2 not met"),
        # A Merit missed caps the grade at P, whatever the Distinction criteria say.
        (_all(UNIT, M3=False), UNIT, "P", "all P criteria met; M3 not met"),
        (_all(UNIT, P3=False), UNIT, "R", "P3 not met"),
        (_all(UNIT, P1=False, P4=False, M1=False), UNIT, "R", "P1, P4 not met"),
        # A unit without Merit criteria: Merit (and so Distinction) is not reachable.
        (_all(PASS_ONLY), PASS_ONLY, "P", "all P criteria met; the unit has no M criteria"),
        (_all(PASS_ONLY, P2=False), PASS_ONLY, "R", "P2 not met"),
        # Merit criteria but no Distinction ones: M at best.
        (
            _all(("P1", "P2", "M1")),
            ("P1", "P2", "M1"),
            "M",
            "all P and M criteria met; the unit has no D criteria",
        ),
        # Distinction criteria but no Merit ones: the ladder stops at P.
        (_all(("P1", "D1")), ("P1", "D1"), "P", "all P criteria met; the unit has no M criteria"),
    ],
    ids=[
        "all-met-D",
        "D-all-but-one-M",
        "no-D-met-M",
        "M-all-but-one-P",
        "M-missed-D-met-P",
        "P-all-but-one-R",
        "several-P-missed",
        "pass-only-unit-P",
        "pass-only-unit-R",
        "no-D-criteria-M",
        "D-but-no-M-criteria-P",
    ],
)
def test_the_grade_at_each_boundary(achieved: dict, codes: tuple[str, ...], letter: str, reason: str):
    outcome = _both(achieved, codes)
    assert (outcome.letter, outcome.grade, outcome.reason, outcome.graded) == (letter, letter, reason, True)


def test_codes_may_come_in_any_order_and_repeated():
    outcome = _both(_all(UNIT, M2=False), (*reversed(UNIT), "P1"))
    assert (outcome.letter, outcome.reason) == ("P", "all P criteria met; M2 not met")


@pytest.mark.parametrize(
    ("achieved", "reason"),
    [
        (_all(UNIT, P3=None), "incomplete: P3 not assessed"),
        ({c: True for c in UNIT if c != "P3"}, "incomplete: P3 not assessed"),  # no row at all
        (_all(UNIT, M1=None, D2=None), "incomplete: M1, D2 not assessed"),
        # Incomplete wins over a Pass missed: the filling is reported, not graded.
        (_all(UNIT, P1=False, P3=None), "incomplete: P3 not assessed"),
        ({}, "incomplete: P1, P2, P3, P4, M1, M2, M3, D1, D2 not assessed"),
        ({**_all(UNIT), "P5": True, "M9": False}, "not graded: P5, M9 not criteria of the unit"),
        ({**_all(UNIT), "P 3": True, "D1": None}, "not graded: P 3 not criteria of the unit"),  # a typo
    ],
    ids=["P3-empty", "P3-absent", "two-empty", "incomplete-and-P-missed", "no-rows", "extra", "typo"],
)
def test_an_incomplete_or_foreign_filling_is_reported_not_graded(achieved: dict, reason: str):
    outcome = _both(achieved, UNIT, attempt=2)
    assert (outcome.letter, outcome.grade, outcome.reason, outcome.graded) == (None, None, reason, False)


def test_a_unit_without_pass_criteria_is_not_graded():
    assert _both({"M1": True}, ("M1",)).reason == "not graded: the unit states no Pass criteria"
    assert _both({}, ()).reason == "not graded: the unit states no Pass criteria"


@pytest.mark.parametrize(
    ("attempt", "last_attempt", "letter", "reason"),
    [
        (1, 2, "R", "P2 not met"),
        (2, 2, "RR", "P2 not met on attempt 2 of 2"),
        (3, 2, "RR", "P2 not met on attempt 3 of 2"),  # beyond the limit: still the last one's letter
        (2, 3, "R", "P2 not met"),
        (1, 1, "RR", "P2 not met on attempt 1 of 1"),
        (5, None, "R", "P2 not met"),  # no limit
    ],
)
def test_a_pass_missed_on_the_last_attempt(attempt: int, last_attempt: int | None, letter: str, reason: str):
    outcome = _both(_all(UNIT, P2=False), UNIT, attempt=attempt, last_attempt=last_attempt)
    assert (outcome.letter, outcome.reason) == (letter, reason)


def test_a_resubmission_that_meets_everything_is_graded_as_any_other():
    assert _both(_all(UNIT), UNIT, attempt=2, last_attempt=2).letter == "D"


def test_the_schools_picklist_values_and_last_attempt_letter_are_written():
    values = GradeValues(D="Distinction", M="Merit", P="Pass", R="Refer", RR="Refer (final)", F="Fail")
    assert _both(_all(UNIT), UNIT, values=values).grade == "Distinction"
    assert _both(_all(UNIT, M1=False), UNIT, values=values).grade == "Pass"
    refer = _both(_all(UNIT, P1=False), UNIT, attempt=2, values=values)
    assert (refer.letter, refer.grade) == ("RR", "Refer (final)")
    fail = _both(_all(UNIT, P1=False), UNIT, attempt=2, values=values, missed_on_last="F")
    assert (fail.letter, fail.grade) == ("F", "Fail")


@pytest.mark.parametrize(
    ("achieved", "codes", "kwargs", "message"),
    [
        ({"P1": True}, ("P1", "X1"), {}, "unknown criterion code 'X1'"),
        ({"P1": True}, ("P1", "P11"), {}, "unknown criterion code 'P11'"),
        ({"P1": "yes"}, ("P1",), {}, "criterion P1: achieved must be true, false or empty, got 'yes'"),
        ({"P1": 1}, ("P1",), {}, "criterion P1: achieved must be true, false or empty"),
        ({"P1": True}, ("P1",), {"attempt": 0}, "attempt must be 1 or more"),
        ({"P1": True}, ("P1",), {"missed_on_last": "X"}, "missed_on_last must be one of R, RR, F"),
    ],
)
def test_bad_arguments_are_refused(achieved: dict, codes: tuple, kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        criteria_grade(achieved, codes, **{"attempt": 1, "last_attempt": 2, **kwargs})


# --- many learners at once -------------------------------------------------------------------------


def test_criteria_grades_grades_many_records_of_many_units():
    criteria = unit_criteria(
        pd.DataFrame(
            {
                "zoho_id": ["full", "pass_only"],
                **{c.description_column: [f"{c.code} text", None] for c in CRITERIA if c.code in UNIT},
                "p1_description": ["P1 text", "P1 text"],
                "p2_description": ["P2 text", "P2 text"],
            }
        )
    )

    def rows(grade_id: str, unit: str, attempt: object, achieved: dict) -> list[dict]:
        return [
            {"grade_id": grade_id, "unit_id": unit, "attempt": attempt, "code": c, "achieved": a}
            for c, a in achieved.items()
        ] or [{"grade_id": grade_id, "unit_id": unit, "attempt": attempt, "code": None, "achieved": None}]

    fillings = pd.DataFrame(
        rows("g1", "full", 1, _all(UNIT))
        + rows("g2", "full", 2, _all(UNIT, P4=False))
        + rows("g3", "pass_only", None, {"P1": True, "P2": True})  # no attempt number: the first
        + rows("g4", "full", 1, {})  # an empty subform
        + rows("g5", "pass_only", 1, {"P1": True, "P2": False})
        + rows("g6", "pass_only", 1, {"P1": True, "P2": True})
        + rows("g6", "pass_only", 1, {"P2": False})  # P2 twice
        + rows("g7", "unknown_unit", 1, {"P1": True})
    )
    got = criteria_grades(fillings.sample(frac=1.0, random_state=3), criteria, last_attempt=2)
    by_id = got.set_index("grade_id")
    assert sorted(got["grade_id"]) == [f"g{i}" for i in range(1, 8)]
    assert by_id.loc["g1", "letter"] == "D"
    assert (by_id.loc["g2", "letter"], by_id.loc["g2", "reason"]) == ("RR", "P4 not met on attempt 2 of 2")
    assert (by_id.loc["g3", "letter"], by_id.loc["g3", "reason"]) == (
        "P",
        "all P criteria met; the unit has no M criteria",
    )
    assert by_id.loc["g4", "reason"] == "incomplete: P1, P2, P3, P4, M1, M2, M3, D1, D2 not assessed"
    assert by_id.loc["g4", "letter"] is None and by_id.loc["g4", "grade"] is None
    assert (by_id.loc["g5", "letter"], by_id.loc["g5", "reason"]) == ("R", "P2 not met")
    assert (by_id.loc["g6", "letter"], by_id.loc["g6", "reason"]) == (None, "not graded: P2 assessed twice")
    assert by_id.loc["g7", "reason"] == "not graded: the unit states no Pass criteria"


def test_criteria_grades_keeps_the_order_of_first_appearance():
    fillings = pd.DataFrame(
        {
            "grade_id": ["b", "a", "b", "c"],
            "unit_id": "u",
            "attempt": 1,
            "code": ["P1", "P1", "P2", "P1"],
            "achieved": [True, False, True, True],
        }
    )
    criteria = pd.DataFrame({"unit_id": ["u", "u"], "code": ["P1", "P2"]})
    got = criteria_grades(fillings, criteria, last_attempt=None)
    assert got["grade_id"].tolist() == ["b", "a", "c"]
    assert got["letter"].tolist() == ["P", None, None]


def test_criteria_grades_refuses_what_criteria_grade_refuses():
    criteria = pd.DataFrame({"unit_id": ["u"], "code": ["P1"]})
    base = {"grade_id": "g", "unit_id": "u", "attempt": 1, "code": "P1", "achieved": True}
    with pytest.raises(ValueError, match="unknown criterion codes"):
        criteria_grades(
            pd.DataFrame([base]), pd.DataFrame({"unit_id": ["u"], "code": ["Q1"]}), last_attempt=2
        )
    with pytest.raises(ValueError, match="rows without a grade_id"):
        criteria_grades(pd.DataFrame([{**base, "grade_id": None}]), criteria, last_attempt=2)
    with pytest.raises(ValueError, match="lack the columns"):
        criteria_grades(pd.DataFrame([base]).drop(columns="achieved"), criteria, last_attempt=2)
    with pytest.raises(ValueError, match="grade g, criterion P1: achieved must be true, false or empty"):
        criteria_grades(pd.DataFrame([{**base, "achieved": "no"}]), criteria, last_attempt=2)
    with pytest.raises(ValueError, match="more than one unit"):
        criteria_grades(
            pd.DataFrame([base, {**base, "unit_id": "v", "code": "P2"}]), criteria, last_attempt=2
        )
    with pytest.raises(ValueError, match="attempt must be 1 or more"):
        criteria_grades(pd.DataFrame([{**base, "attempt": 0}]), criteria, last_attempt=2)


_codes = st.lists(st.sampled_from([c.code for c in CRITERIA]), min_size=0, max_size=12, unique=True)


@settings(max_examples=150, deadline=None)
@given(
    codes=_codes,
    data=st.data(),
    attempt=st.integers(1, 4),
    last_attempt=st.one_of(st.none(), st.integers(1, 3)),
)
def test_the_vectorised_rule_is_the_scalar_rule(
    codes: list[str], data, attempt: int, last_attempt: int | None
):
    known = [c.code for c in CRITERIA]
    filled = data.draw(st.lists(st.sampled_from([*known, "X1", "P0"]), max_size=12, unique=True))
    achieved = {c: data.draw(st.sampled_from([True, True, True, False, None])) for c in filled}
    _both(achieved, tuple(codes), attempt=attempt, last_attempt=last_attempt)


# --- the subform rows -------------------------------------------------------------------------------


def test_filling_rows_and_read_filling_round_trip_with_the_schools_field_names():
    fields = SubformFields(code="Code", title="Criterion_Text", achieved="Met", feedback="Comment")
    criteria = pd.DataFrame({"code": ["P1", "P2", "M1"], "description": ["Explain", "Describe", "Analyse"]})
    rows = filling_rows(criteria, {"P1": True, "P2": False}, {"P2": "See the brief"}, fields)
    assert rows == [
        {"Code": "P1", "Criterion_Text": "Explain", "Met": True, "Comment": None},
        {"Code": "P2", "Criterion_Text": "Describe", "Met": False, "Comment": "See the brief"},
        {"Code": "M1", "Criterion_Text": "Analyse", "Met": None, "Comment": None},
    ]
    assert all("id" not in row for row in rows)  # rows without ids replace the record's rows
    stored = [{"id": str(i), "Parent_Id": {"id": "9"}, **row} for i, row in enumerate(rows)]
    assert read_filling(stored, fields) == {"P1": True, "P2": False, "M1": None}


def test_read_filling_with_the_default_names():
    rows = [
        {"Criterion_Code": "p1 ", "Achieved": True},
        {"Criterion_Code": "", "Achieved": True},  # a row without a code is left out
        {"Criterion_Code": "M1", "Achieved": None},
    ]
    assert read_filling(rows) == {"P1": True, "M1": None}
    with pytest.raises(ValueError, match="criterion P1 is assessed in two rows"):
        read_filling(
            [{"Criterion_Code": "P1", "Achieved": True}, {"Criterion_Code": "P1", "Achieved": False}]
        )
    with pytest.raises(ValueError, match="criterion P1: achieved must be true, false or empty"):
        read_filling([{"Criterion_Code": "P1", "Achieved": "Achieved"}])


# --- the status rule --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "marked", "expected"),
    [
        (None, True, "Marking completed"),
        ("", True, "Marking completed"),
        ("-None-", True, "Marking completed"),
        ("Not Marked", True, "Marking completed"),
        ("In Marking", True, "Marking completed"),
        ("Marking completed", True, None),  # already there: nothing to write
        # Moved forward by staff in Zoho: never moved back.
        ("In review", True, None),
        ("Ready for release", True, None),
        ("Released", True, None),
        ("Released", False, None),
        # Not graded (an incomplete filling): nothing changes.
        ("In Marking", False, None),
        (None, False, None),
        ("Marking completed", False, None),
        # A status the rule does not know may be a step forward: left alone.
        ("Moderated", True, None),
    ],
)
def test_next_status_never_moves_back(current: str | None, marked: bool, expected: str | None):
    assert next_status(current, marked) == expected


def test_next_status_with_the_schools_own_values():
    statuses = StatusValues(marked="Graded", forward=("Verified", "Published"), before=("New",))
    assert next_status("New", True, statuses) == "Graded"
    assert next_status("Published", True, statuses) is None
    assert next_status("In Marking", True, statuses) is None  # not one of this school's values
