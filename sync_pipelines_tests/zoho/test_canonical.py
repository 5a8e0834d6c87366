import pytest

from sync_pipelines.zoho.canonical import canonicalise, frame_from_records
from sync_pipelines.zoho.modules import module

STUDENTS = module("students")
PAYMENTS = module("payments")
CLASSES = module("classes")


def _one(spec, **fields):
    base = {"id": "5843017000000000001"}
    if spec is STUDENTS:
        base |= {"First_Name": "Amal", "Last_Name": "Haddad", "Academic_Email": "amal@school.example"}
    if spec is PAYMENTS:
        base |= {"Student_ID": {"id": "11"}, "Registration_ID": {"id": "12"}, "Payment_Amount": 10}
    if spec is CLASSES:
        base |= {"Class_Name": "Networking T1", "Class_Short_Name": "NET-T1"}
    return canonicalise(spec, frame_from_records(spec, [base | fields])).iloc[0]


@pytest.mark.parametrize(
    ("spec", "field", "raw", "column", "expected"),
    [
        (
            STUDENTS,
            "Academic_Email",
            "  Amal.Haddad@School.EXAMPLE ",
            "academic_email",
            "amal.haddad@school.example",
        ),
        (STUDENTS, "Gender", "-None-", "gender", None),
        (STUDENTS, "First_Name", " \u0639\u0645\u0631\u0000 ", "first_name", "عمر"),
        (STUDENTS, "First_Name", "Cafe\u0301", "first_name", "Café"),  # NFC
        (STUDENTS, "City", "", "city", None),
        (STUDENTS, "Birth_Date", "2004-02-29", "birth_date", "2004-02-29"),
        (
            STUDENTS,
            "Program",
            {"name": "Level 5 IT", "id": "5843017000000000777"},
            "program_id",
            "5843017000000000777",
        ),
        (STUDENTS, "Program", None, "program_id", None),
        (STUDENTS, "Synced_to_Moodle", True, "synced_to_moodle", "true"),
        (STUDENTS, "Last_Sync_Date", "2026-11-01T10:00:00+03:00", "last_sync_date", "2026-11-01T07:00:00Z"),
        (PAYMENTS, "Payment_Amount", 1500.0, "payment_amount", "1500"),
        (PAYMENTS, "Payment_Amount", "12.50", "payment_amount", "12.5"),
        (PAYMENTS, "Installment_No", 3, "instalment_no", "3"),
    ],
)
def test_canonical_values(spec, field, raw, column, expected):
    row = _one(spec, **{field: raw})
    assert row[column] == expected
    assert row["invalid_reason"] is None


@pytest.mark.parametrize(
    ("spec", "fields", "reason"),
    [
        (STUDENTS, {"Academic_Email": "ahmed.at.school"}, "Academic_Email: invalid email"),
        (STUDENTS, {"Academic_Email": "x@"}, "Academic_Email: invalid email"),
        (STUDENTS, {"Academic_Email": None}, "Academic_Email: required"),
        (STUDENTS, {"Gender": "Robot"}, "Gender: invalid picklist"),
        (STUDENTS, {"Birth_Date": "2001-02-30"}, "Birth_Date: invalid date"),
        (STUDENTS, {"Birth_Date": "01/02/2001"}, "Birth_Date: invalid date"),
        (STUDENTS, {"First_Name": "  "}, "First_Name: required"),
        (PAYMENTS, {"Payment_Amount": "lots"}, "Payment_Amount: invalid currency"),
        (PAYMENTS, {"Installment_No": "2.5"}, "Installment_No: invalid integer"),
        (PAYMENTS, {"Student_ID": {"id": "'; DROP TABLE x; --"}}, "Student_ID: invalid lookup"),
        (CLASSES, {"Start_Date": "2026-09-01", "End_Date": "2026-06-01"}, "End_Date: before Start_Date"),
    ],
)
def test_invalid_values_are_reported_with_their_reason(spec, fields, reason):
    row = _one(spec, **fields)
    assert reason in row["invalid_reason"]


def test_every_failing_rule_is_named_and_valid_rows_in_the_batch_are_untouched():
    records = [
        {"id": "1", "First_Name": None, "Last_Name": "A", "Academic_Email": "bad"},
        {"id": "2", "First_Name": "Lina", "Last_Name": "Saleh", "Academic_Email": "lina@school.example"},
    ]
    frame = canonicalise(STUDENTS, frame_from_records(STUDENTS, records))
    assert frame.loc[0, "invalid_reason"] == "First_Name: required; Academic_Email: invalid email"
    assert frame.loc[1, "invalid_reason"] is None


def test_fields_outside_the_module_table_are_dropped():
    frame = canonicalise(
        STUDENTS, frame_from_records(STUDENTS, [{"id": "1", "Academic_Password": "hunter2"}])
    )
    assert "Academic_Password" not in frame.columns
    assert "hunter2" not in frame.to_string()
