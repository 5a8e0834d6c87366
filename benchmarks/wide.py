"""A 40-field ``BTEC_Students``-like module and its records, for the end-to-end benchmark only.

The project's ``students`` module syncs 26 fields of ``BTEC_Students`` (22 business fields, one
formula and 3 bookkeeping ones). The issue asks for 40, so this benchmark widens it with 14 more
fields the org's ``BTEC_Students`` really has (names, addresses, documents, a date, a number and
three picklists), read from the same field metadata. The wider module gets its own warehouse
table, built by the same table factory as the nine real ones, registered only inside the
benchmark process; nothing of the project's module table changes.
"""

import random
from dataclasses import replace
from datetime import datetime, timedelta

from sync_pipelines.sandbox.zoho_sim import ORG_TZ, format_time
from sync_pipelines.warehouse import schema
from sync_pipelines.zoho.modules import PROGRAMMES, STUDENTS, ModuleSpec, _f

API = "BTEC_Students"
EXTRA_FIELDS = (
    "Mother_Name",
    "Father_Name",
    "Birth_Place",
    "Emergency_Contact_Name",
    "Emergency_Phone_Number",
    "Address",
    "Passport_Number",
    "National_Number",
    "Scholarship_Percentage",
    "Placement_Test_Date",
    "English_Preparation",
    "Last_Educational_Level",
    "University_Name",
    "Intake",
)

#: The project's students module with 14 more real fields: 40 fields in all.
WIDE_STUDENTS: ModuleSpec = replace(
    STUDENTS,
    name="students_wide",
    label="one student, 40 fields (benchmark only)",
    fields=(*STUDENTS.fields, *(_f(API, name) for name in EXTRA_FIELDS)),
)


def register() -> ModuleSpec:
    """Give the wide module a warehouse table (in this process only) and return it."""
    if WIDE_STUDENTS.name not in schema.MODULE_TABLES:
        schema.MODULE_TABLES[WIDE_STUDENTS.name] = schema._module_table(WIDE_STUDENTS)
    return WIDE_STUDENTS


_FIRST = (
    "Amal",
    "Omar",
    "Lina",
    "Yusuf",
    "Sara",
    "Ayşe",
    "Mehmet",
    "John",
    "Emily",
    "Zeynep",
    "Khaled",
    "Noor",
)
_LAST = ("Haddad", "Nasser", "Saleh", "Kaya", "Demir", "Smith", "Jones", "Al-Khatib", "Yılmaz", "Öztürk")
_NATIVE_FIRST = ("أمل", "عمر", "لينا", "يوسف", "سارة", "نور")
_NATIVE_LAST = ("حداد", "ناصر", "صالح", "الخطيب")
_CITY = ("Amman", "Istanbul", "London", "Irbid", "Ankara", "Zarqa", "Manchester", "Izmir")


def _picklist(api_name: str) -> list[str]:
    return [v for v in next(f for f in WIDE_STUDENTS.fields if f.api_name == api_name).picklist]


def programmes(n: int = 12) -> list[dict]:
    """A few Products (programmes): the students' ``Program`` lookup points at them."""
    statuses = next(f for f in PROGRAMMES.fields if f.api_name == "Status").picklist
    return [
        {
            "id": f"5843017000000{100001 + i}",
            "Product_Name": f"Programme {i + 1:02d}",
            "Program_ID": f"P{i + 1:03d}",
            "Status": statuses[0] if statuses else None,
        }
        for i in range(n)
    ]


def students(n: int, programme_ids: list[str], seed: int = 2026) -> list[dict]:
    """``n`` valid students in API shape, every one of the 40 fields filled (some left empty)."""
    rng = random.Random(seed)
    pick = {
        name: _picklist(name)
        for name in (
            "Gender",
            "Nationality",
            "Country",
            "Status",
            "Study_Mode",
            "Study_Language",
            "Academic_Program",
            "Major",
            "Sub_Major",
            "English_Preparation",
            "Last_Educational_Level",
            "University_Name",
        )
    }
    base = datetime(2026, 1, 5, 9, 0, tzinfo=ORG_TZ)
    out = []
    for i in range(n):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        modified = base + timedelta(seconds=i * 7 + rng.randint(0, 6))
        rec = {
            "id": f"5843017{200_000_000_000 + i:012d}",
            "Name": f"ST-{i + 1:07d}",
            "First_Name": first,
            "Last_Name": last,
            "Frist_Name_Native": rng.choice(_NATIVE_FIRST),
            "Last_Name_Native": rng.choice(_NATIVE_LAST),
            "Email": f"{first.lower()}.{i}@mail.example",
            "Academic_Email": f"s{i:07d}@school.example",
            "Phone_Number": f"+9627{rng.randint(0, 99_999_999):08d}",
            "Birth_Date": (datetime(1985, 1, 1) + timedelta(days=rng.randint(0, 9000))).date().isoformat(),
            "City": rng.choice(_CITY),
            "Registration_Date": (datetime(2020, 9, 1) + timedelta(days=rng.randint(0, 2000)))
            .date()
            .isoformat(),
            "BTEC_Registration_Number": f"BTEC{rng.randint(0, 10**8):08d}",
            "Program": {"id": rng.choice(programme_ids)},
            "Student_Moodle_ID": None,
            "Synced_to_Moodle": False,
            "Last_Sync_Date": None,
            "Mother_Name": rng.choice(_FIRST),
            "Father_Name": rng.choice(_FIRST),
            "Birth_Place": rng.choice(_CITY),
            "Emergency_Contact_Name": f"{rng.choice(_FIRST)} {last}",
            "Emergency_Phone_Number": f"+9627{rng.randint(0, 99_999_999):08d}",
            "Address": f"{rng.randint(1, 400)} {rng.choice(('King Abdullah St', 'Atatürk Cd', 'High St'))}, "
            f"{rng.choice(_CITY)}",
            "Passport_Number": f"P{rng.randint(0, 10**8):08d}",
            "National_Number": f"{rng.randint(10**9, 10**10 - 1)}",
            "Scholarship_Percentage": rng.choice((None, 10.0, 25.0, 50.0, 12.5)),
            "Placement_Test_Date": (datetime(2020, 8, 1) + timedelta(days=rng.randint(0, 2000)))
            .date()
            .isoformat(),
            "Registration_Fees": rng.choice((100.0, 150.0, 250.5)),
            "Intake": rng.choice(("Fall 2025", "Spring 2026", "Fall 2026")),
            "Created_Time": format_time(modified),
            "Modified_Time": format_time(modified),
        }
        for name, values in pick.items():
            rec[name] = rng.choice(values) if values and rng.random() > 0.03 else None
        out.append(rec)
    return out
