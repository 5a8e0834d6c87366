"""The ``grading:`` section of a tenant: defaults, a school with its own names, and bad configs."""

import pytest

from sync_pipelines.btec import GradeValues, StatusValues, SubformFields
from sync_pipelines.tenants import (
    AttemptPolicy,
    GradingConfig,
    OrgMapping,
    TenantConfigError,
    load_tenants,
    parse_tenant_set,
    parse_tenants,
)
from sync_pipelines.zoho.modules import metadata_for

ZOHO = {
    "data_centre": "eu",
    "client_id_env": "A_ID",
    "client_secret_env": "A_SECRET",
    "refresh_token_env": "A_R",
}
UNIT = ("P1", "P2", "M1", "D1")


def _tenant(grading: object = None, **zoho: object) -> dict:
    entry: dict = {"id": "school_g", "zoho": {**ZOHO, **zoho}}
    if grading is not None:
        entry["grading"] = grading
    return entry


def _grading(grading: object = None, **zoho: object) -> GradingConfig:
    return parse_tenants({"tenants": [_tenant(grading, **zoho)]})["school_g"].grading


def _picklist(field: str) -> list[str]:
    return metadata_for("BTEC_Grades")[field]["pick_list_values"]


def test_no_grading_section_is_the_shipped_orgs_names():
    grading = _grading()
    assert grading == GradingConfig()
    assert grading.subform == "Learning_Outcomes_Assessm"
    assert grading.subform_fields == SubformFields("Criterion_Code", "Criterion", "Achieved", "Feedback")
    assert grading.grades == GradeValues() and grading.grades.value("RR") == "RR"
    assert grading.statuses.marked == "Marking completed"
    assert grading.statuses.forward == ("In review", "Ready for release", "Released")
    assert grading.attempts == AttemptPolicy(last=2, missed_on_last="RR")
    assert _grading({}) == GradingConfig()
    assert load_tenants("tenants.yaml")["demo_school"].grading == GradingConfig()


def test_the_defaults_fit_the_shipped_orgs_picklists():
    assert GradingConfig().org_problems(_picklist("Grade"), _picklist("Grade_Status")) == ()


def test_the_issues_example_is_the_defaults_written_out():
    grading = _grading(
        {
            "subform": "Learning_Outcomes_Assessm",
            "subform_fields": {
                "code": "Criterion_Code",
                "title": "Criterion",
                "achieved": "Achieved",
                "feedback": "Feedback",
            },
            "grades": {"D": "D", "M": "M", "P": "P", "R": "R", "RR": "RR"},
            "statuses": {
                "marked": "Marking completed",
                "forward": ["In review", "Ready for release", "Released"],
            },
            "attempts": {"last": 2, "missed_on_last": "RR"},
        }
    )
    assert grading == GradingConfig()


def test_a_school_with_its_own_subform_names_and_picklist_values():
    tenant = parse_tenants(
        {
            "tenants": [
                _tenant(
                    {
                        "subform": "Criteria_Assessment",
                        "subform_fields": {
                            "code": "Code",
                            "title": "Title",
                            "achieved": "Met",
                            "feedback": "Notes",
                        },
                        "grades": {
                            "D": "Distinction",
                            "M": "Merit",
                            "P": "Pass",
                            "R": "Refer",
                            "F": "Fail",
                        },
                        "statuses": {
                            "marked": "Graded",
                            "forward": ["Verified", "Published"],
                            "before": ["New"],
                        },
                        "attempts": {"last": 3, "missed_on_last": "F"},
                    }
                )
            ]
        }
    )["school_g"]
    grading = tenant.grading
    assert grading.subform == "Criteria_Assessment"
    assert grading.subform_fields == SubformFields(
        code="Code", title="Title", achieved="Met", feedback="Notes"
    )
    assert grading.statuses == StatusValues(
        marked="Graded", forward=("Verified", "Published"), before=("New",)
    )
    assert grading.letters_used == ("D", "M", "P", "R", "F")
    # The grades module reads the subform under the school's name too.
    assert tenant.zoho.mapping.field_api_name("grades", "Learning_Outcomes_Assessm") == "Criteria_Assessment"

    met = {"P1": True, "P2": True, "M1": True, "D1": True}
    assert grading.grade(met, UNIT, attempt=1).grade == "Distinction"
    assert grading.grade({**met, "M1": False}, UNIT, attempt=1).grade == "Pass"
    assert grading.grade({**met, "P2": False}, UNIT, attempt=2).grade == "Refer"
    failed = grading.grade({**met, "P2": False}, UNIT, attempt=3)
    assert (failed.letter, failed.grade, failed.reason) == ("F", "Fail", "P2 not met on attempt 3 of 3")
    assert grading.next_status("New", marked=True) == "Graded"
    assert grading.next_status("Published", marked=True) is None

    # Checked against the shipped org, every value of the school's own is named.
    problems = grading.org_problems(_picklist("Grade"), _picklist("Grade_Status"))
    assert "grading.grades.D: 'Distinction' is not a value of the Grade picklist" in problems
    assert "grading.statuses.marked: 'Graded' is not a value of the Grade_Status picklist" in problems
    assert len(problems) == 5 + 4


def test_zoho_fields_names_the_subform_for_grading_too():
    fields = {"grades": {"Learning_Outcomes_Assessm": "Criteria"}}
    assert _grading(fields=fields).subform == "Criteria"
    assert _grading({"subform": "Criteria"}, fields=fields).subform == "Criteria"  # the same name twice
    assert _grading(fields={"grades": {"Learning_Outcomes_Assessm": None}}).subform is None


def test_a_null_subform_means_the_org_has_none():
    tenant = parse_tenants({"tenants": [_tenant({"subform": None})]})["school_g"]
    assert tenant.grading.subform is None
    assert tenant.zoho.mapping == OrgMapping(fields=(("grades", "Learning_Outcomes_Assessm", None),))


def test_the_default_subform_leaves_the_mapping_alone():
    tenant = parse_tenants({"tenants": [_tenant({"subform": "Learning_Outcomes_Assessm"})]})["school_g"]
    assert tenant.zoho.mapping == OrgMapping()


def test_no_attempt_limit():
    grading = _grading({"attempts": {"last": None}})
    assert grading.attempts == AttemptPolicy(last=None, missed_on_last="RR")
    assert grading.letters_used == ("D", "M", "P", "R")
    assert grading.grade({"P1": False, "P2": True, "M1": True, "D1": True}, UNIT, attempt=9).letter == "R"


def test_a_school_without_rr_writes_r_on_the_last_attempt():
    grading = _grading({"grades": {"RR": "R"}, "attempts": {"missed_on_last": "R"}})
    assert grading.grade({"P1": False, "P2": True, "M1": True, "D1": True}, UNIT, attempt=2).grade == "R"


@pytest.mark.parametrize(
    ("grading", "zoho", "message"),
    [
        (
            "RR",
            {},
            "grading must be a mapping (subform, subform_fields, grades, statuses, attempts, assessment_prefix)",
        ),
        ({"grade": {"P": "Pass"}}, {}, "grading has unknown keys 'grade': expected subform, subform_fields"),
        ({"subform": "Learning Outcomes"}, {}, "grading.subform must be a Zoho API name"),
        ({"subform": ""}, {}, "grading.subform must be a Zoho API name"),
        (
            {"subform": 7},
            {},
            "grading.subform must be a Zoho API name (letters, digits and '_', starting with",
        ),
        (
            {"subform": "Criteria"},
            {"fields": {"grades": {"Learning_Outcomes_Assessm": "Assessments"}}},
            "grading.subform is 'Criteria' but zoho.fields.grades.Learning_Outcomes_Assessm is 'Assessments'",
        ),
        (
            {"subform": None},
            {"fields": {"grades": {"Learning_Outcomes_Assessm": "Assessments"}}},
            "grading.subform is None but zoho.fields.grades.Learning_Outcomes_Assessm is 'Assessments'",
        ),
        (
            {"subform": "Feedback"},
            {},
            "grading.subform is 'Feedback', the org's name of BTEC_Grades.Feedback too",
        ),
        ({"subform_fields": ["Code"]}, {}, "grading.subform_fields must be a mapping (code, title, achieved"),
        ({"subform_fields": {"score": "Score"}}, {}, "grading.subform_fields has unknown keys 'score'"),
        (
            {"subform_fields": {"code": "Criterion code"}},
            {},
            "grading.subform_fields.code must be a Zoho API name",
        ),
        (
            {"subform_fields": {"feedback": "Criterion"}},
            {},
            "grading.subform_fields: title and feedback are both",
        ),
        ({"grades": {"X": "X"}}, {}, "grading.grades has unknown keys 'X': expected D, M, P, R, RR, F"),
        ({"grades": {"D": ""}}, {}, "grading.grades.D must be a picklist value (a non-empty string), got ''"),
        ({"grades": {"P": 1}}, {}, "grading.grades.P must be a picklist value"),
        ({"grades": {"M": "D"}}, {}, "grading.grades: D and M are both 'D'"),
        (
            {"grades": {"RR": "R"}},
            {},
            "grading.grades: R and RR are both 'R' (to write R on the last attempt, set "
            "grading.attempts.missed_on_last: R)",
        ),
        (
            {"statuses": {"forward": "Released"}},
            {},
            "grading.statuses.forward must be a list of picklist values",
        ),
        (
            {"statuses": {"forward": ["Released", ""]}},
            {},
            "grading.statuses.forward[1] must be a picklist value",
        ),
        (
            {"statuses": {"forward": ["Released", "Released"]}},
            {},
            "grading.statuses.forward lists 'Released' twice",
        ),
        ({"statuses": {"marked": None}}, {}, "grading.statuses.marked must be a picklist value"),
        (
            {"statuses": {"marked": "Released"}},
            {},
            "marked 'Released' must not be listed in forward or before",
        ),
        (
            {"statuses": {"before": ["In review"]}},
            {},
            "grading.statuses: 'In review' in both forward and before",
        ),
        ({"statuses": {"done": "Released"}}, {}, "grading.statuses has unknown keys 'done'"),
        ({"attempts": {"last": 0}}, {}, "grading.attempts.last must be a whole number, 1 or more"),
        ({"attempts": {"last": "2"}}, {}, "grading.attempts.last must be a whole number, 1 or more"),
        ({"attempts": {"last": True}}, {}, "grading.attempts.last must be a whole number, 1 or more"),
        ({"attempts": {"last": 1.5}}, {}, "or null for no limit, got 1.5"),
        (
            {"attempts": {"missed_on_last": "P"}},
            {},
            "grading.attempts.missed_on_last must be one of R, RR, F",
        ),
        (
            {"attempts": {"missed_on_last": "Fail"}},
            {},
            "(a letter: its picklist value is under grading.grades)",
        ),
        (
            {"attempts": {"limit": 2}},
            {},
            "grading.attempts has unknown keys 'limit': expected last, missed_on_last",
        ),
    ],
)
def test_a_bad_grading_config_is_refused_with_the_tenant_and_the_key(
    grading: object, zoho: dict, message: str
):
    with pytest.raises(TenantConfigError) as info:
        parse_tenants({"tenants": [_tenant(grading, **zoho)]})
    assert "tenant school_g" in str(info.value)
    assert message in str(info.value)


def test_a_bad_grading_section_breaks_only_its_school_and_is_named_with_its_other_problems():
    tenant_set = parse_tenant_set(
        {
            "tenants": [
                {"id": "good", "zoho": ZOHO},
                {
                    "id": "bad",
                    "zoho": {**ZOHO, "client_id_env": "1nvalid"},
                    "grading": {"attempts": {"last": 0}},
                },
            ]
        }
    )
    assert set(tenant_set.tenants) == {"good"}
    error = tenant_set.broken["bad"]
    assert "zoho.client_id_env is not an environment variable name" in error
    assert "grading.attempts.last must be a whole number" in error
