import pandas as pd
import pytest

from sync_pipelines.btec import btec_grade, btec_grades, percentage


@pytest.mark.parametrize(
    ("pct", "expected"),
    [
        (100.0, ("Distinction", "D")),
        (70.0, ("Distinction", "D")),
        (69.99, ("Merit", "M")),
        (60.0, ("Merit", "M")),
        (59.5, ("Pass", "P")),
        (40.0, ("Pass", "P")),
        (39.99, ("Refer", "R")),
        (0.0, ("Refer", "R")),
        (104.0, ("Distinction", "D")),
        (None, None),
        (float("nan"), None),
    ],
)
def test_btec_bands(pct: float | None, expected: tuple[str, str] | None):
    assert btec_grade(pct) == expected
    got = btec_grades(pd.Series([pct], dtype=float)).iloc[0]
    assert (None if got["btec_grade"] is None else (got["btec_grade"], got["letter"])) == expected


def test_percentage_is_of_grademax_not_the_raw_grade():
    pct = percentage(pd.Series([36.0, 19.5, 5.0, 3.0]), pd.Series([50.0, 50.0, 0.0, None]))
    assert pct.iloc[0] == 72.0 and pct.iloc[1] == 39.0
    assert pct.iloc[2:].isna().all()  # no grademax: no percentage, no grade
