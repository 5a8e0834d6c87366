"""The demo school: a deterministic, realistic Zoho CRM org for tests and ``make demo``.

``generate_school(seed)`` answers records in API shape (what ``GET /crm/v8/{module}`` would hold) for
the nine modules of :data:`sync_pipelines.zoho.modules.MODULES`: a BTEC school with Arabic, Turkish
and English names, programmes, units, classes over the four terms of 2026, enrolments, registrations,
instalment payments and grades. Picklist values are drawn from the org's real picklists
(``FieldSpec.picklist``); lookups are ``{"name", "id"}`` and resolve, except in the deliberately
dirty records listed in :data:`DIRTY_RECORDS`.

Everything comes from ``random.Random(seed)`` and fixed base dates in 2026: the same seed (and scale)
always gives identical records and ids.
"""

import random
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, NamedTuple

from sync_pipelines.btec import CRITERIA
from sync_pipelines.sandbox.zoho_sim import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_ID_PREFIX,
    DEFAULT_REFRESH_TOKEN,
    ORG_TZ,
    ZohoSimulator,
    format_time,
    make_record_id,
)
from sync_pipelines.zoho.modules import MODULES_BY_API_NAME

#: The seed ``make demo`` uses.
DEMO_SEED = 2026
#: Academic e-mail domain of the demo school.
SCHOOL_DOMAIN = "school.example"

#: Record counts at ``scale=1.0``.
BASE_COUNTS: dict[str, int] = {
    "Products": 12,
    "BTEC_Teachers": 40,
    "BTEC_Students": 500,
    "BTEC": 80,
    "BTEC_Classes": 120,
    "BTEC_Enrollments": 3000,
    "BTEC_Registrations": 600,
    "BTEC_Payments": 1200,
    "BTEC_Grades": 2000,
}

_ID_START = 100_000  # ids end in 100001, 100002, … (as the simulator assigns them)
_GHOST_START = 990_000  # ids of records that do not exist (dangling lookups)
_YEAR_START = datetime(2026, 1, 5, 9, 0, tzinfo=ORG_TZ)
_LAST_MODIFIED = datetime(2026, 10, 31, 18, 0, tzinfo=ORG_TZ)
_TERM_STARTS = {
    "T1": date(2026, 1, 12),
    "T2": date(2026, 4, 6),
    "T3": date(2026, 6, 29),
    "T4": date(2026, 9, 21),
}
_TERM_STATUS = {
    "T1": ("End",),
    "T2": ("End",),
    "T3": ("Final Evaluation", "Waiting Resubmission", "End"),
    "T4": ("Active", "Initial Evaluation"),
}

Problem = Literal[
    "bad_email",
    "missing_required",
    "missing_lookup",
    "none_picklist",
    "unknown_picklist",
    "bad_date",
    "bad_date_order",
]
Outcome = Literal["VALID", "INVALID", "SKIPPED"]


@dataclass(frozen=True)
class DirtyRecord:
    """One deliberately dirty record of the demo school.

    Attributes:
        module: module API name.
        position: index of the record in ``generate_school(...)[module]`` (records are in id
            order). At scales below 1.0 a position past the end means the record is not generated.
        field: API name of the dirty field.
        problem: what is wrong with it.
        value: the value written into the field.
        outcome: what a correct sync does with the record: ``INVALID`` (fails validation),
            ``SKIPPED`` (a lookup target that never arrives) or ``VALID`` (``-None-`` is an
            allowed way to say "empty").
    """

    module: str
    position: int
    field: str
    problem: Problem
    value: Any
    outcome: Outcome


def _ghost(number: int, name: str) -> dict[str, str]:
    return {"name": name, "id": make_record_id(DEFAULT_ID_PREFIX, _GHOST_START + number)}


def _dirty(module: str, position: int, field: str, problem: Problem, value: Any) -> DirtyRecord:
    outcome: Outcome = "INVALID"
    if problem == "none_picklist":
        outcome = "VALID"
    elif problem == "missing_lookup":
        outcome = "SKIPPED"
    return DirtyRecord(module, position, field, problem, value, outcome)


#: The deliberately dirty records, a few percent of each module (positions are for scale 1.0).
DIRTY_RECORDS: tuple[DirtyRecord, ...] = (
    _dirty("BTEC_Students", 7, "Academic_Email", "bad_email", "ahmed.at.school"),
    _dirty("BTEC_Students", 23, "Academic_Email", "bad_email", "x@"),
    _dirty("BTEC_Students", 41, "Email", "bad_email", "omar@@mail.example"),
    _dirty("BTEC_Students", 58, "First_Name", "missing_required", None),
    _dirty("BTEC_Students", 77, "Academic_Email", "missing_required", None),
    _dirty("BTEC_Students", 90, "Gender", "none_picklist", "-None-"),
    _dirty("BTEC_Students", 104, "Nationality", "none_picklist", "-None-"),
    _dirty("BTEC_Students", 131, "Status", "unknown_picklist", "Enrolled"),
    _dirty("BTEC_Students", 150, "Study_Mode", "unknown_picklist", "Hybrid"),
    _dirty("BTEC_Students", 177, "Birth_Date", "bad_date", "2003-02-30"),
    _dirty("BTEC_Students", 199, "Registration_Date", "bad_date", "31/12/2025"),
    _dirty("BTEC_Teachers", 33, "Academic_Email", "bad_email", "teacher.at.school"),
    _dirty("Products", 11, "Product_Sub_Category", "none_picklist", "-None-"),
    _dirty("BTEC", 45, "Unit_Level", "unknown_picklist", "Level 4"),
    _dirty("BTEC", 61, "Program", "missing_lookup", _ghost(1, "Retired Programme")),
    _dirty("BTEC_Classes", 17, "End_Date", "bad_date_order", "2025-12-01"),
    _dirty("BTEC_Classes", 88, "Class_Short_Name", "missing_required", None),
    _dirty("BTEC_Classes", 102, "Teacher", "missing_lookup", _ghost(2, "Former Teacher")),
    _dirty("BTEC_Enrollments", 100, "Enrolled_Students", "missing_lookup", _ghost(3, "STU-09903")),
    _dirty("BTEC_Enrollments", 700, "Enrolled_Students", "missing_lookup", _ghost(4, "STU-09904")),
    _dirty("BTEC_Enrollments", 1500, "Enrolled_Students", "missing_lookup", _ghost(5, "STU-09905")),
    _dirty("BTEC_Enrollments", 2200, "Enrolled_Students", "missing_lookup", _ghost(6, "STU-09906")),
    _dirty("BTEC_Enrollments", 2900, "Enrolled_Students", "missing_lookup", _ghost(7, "STU-09907")),
    _dirty("BTEC_Enrollments", 1234, "Classes", "missing_lookup", _ghost(8, "CLS-0998")),
    _dirty("BTEC_Enrollments", 2345, "Classes", "missing_lookup", _ghost(9, "CLS-0999")),
    _dirty("BTEC_Enrollments", 2950, "Classes", "missing_required", None),
    _dirty("BTEC_Enrollments", 300, "Enrollment_Type", "none_picklist", "-None-"),
    _dirty("BTEC_Enrollments", 1800, "Enrollment_Type", "none_picklist", "-None-"),
    _dirty("BTEC_Enrollments", 2600, "Enrollment_Type", "unknown_picklist", "Auditing"),
    _dirty("BTEC_Enrollments", 2750, "Start_Date", "bad_date", "2026-02-29"),
    _dirty("BTEC_Registrations", 40, "Student_ID", "missing_lookup", _ghost(10, "STU-09910")),
    _dirty("BTEC_Registrations", 222, "Currency", "unknown_picklist", "SAR"),
    _dirty("BTEC_Registrations", 333, "Program", "missing_required", None),
    _dirty("BTEC_Payments", 77, "Payment_Amount", "missing_required", None),
    _dirty("BTEC_Payments", 555, "Registration_ID", "missing_lookup", _ghost(11, "REG-09911")),
    _dirty("BTEC_Payments", 999, "Payment_Date", "bad_date", "2026-13-01"),
    _dirty("BTEC_Grades", 12, "Grade", "unknown_picklist", "A"),
    _dirty("BTEC_Grades", 1200, "Grade", "unknown_picklist", "Pass"),
    _dirty("BTEC_Grades", 250, "Grade", "none_picklist", "-None-"),
    _dirty("BTEC_Grades", 800, "Grade", "none_picklist", "-None-"),
    _dirty("BTEC_Grades", 1600, "Grade", "none_picklist", "-None-"),
    _dirty("BTEC_Grades", 444, "Student", "missing_lookup", _ghost(12, "STU-09912")),
    _dirty("BTEC_Grades", 1444, "Class", "missing_lookup", _ghost(13, "CLS-0913")),
    _dirty("BTEC_Grades", 1777, "Attempt_Date", "bad_date", "yesterday"),
)


class DemoCredentials(NamedTuple):
    """The demo connected app, as the simulator's token endpoint accepts it."""

    client_id: str
    client_secret: str
    refresh_token: str


def demo_credentials() -> DemoCredentials:
    """Client id, client secret and refresh token of the demo school's connected app."""
    return DemoCredentials(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_REFRESH_TOKEN)


def demo_simulator(seed: int = DEMO_SEED, *, scale: float = 1.0, **options: Any) -> ZohoSimulator:
    """A (not yet started) simulator holding the demo school.

    Args:
        seed: the school's seed.
        scale: multiplies every record count.
        **options: passed on to :class:`ZohoSimulator` (limits, clock, …).
    """
    return ZohoSimulator(data=generate_school(seed, scale=scale), **options)


# --- names --------------------------------------------------------------------------------------------

# (transliteration, Arabic script, gender)
_ARABIC_FIRST: tuple[tuple[str, str, str], ...] = (
    ("Ahmed", "أحمد", "Male"),
    ("Mohammed", "محمد", "Male"),
    ("Omar", "عمر", "Male"),
    ("Ali", "علي", "Male"),
    ("Yousef", "يوسف", "Male"),
    ("Khaled", "خالد", "Male"),
    ("Hassan", "حسن", "Male"),
    ("Hussein", "حسين", "Male"),
    ("Ibrahim", "إبراهيم", "Male"),
    ("Mahmoud", "محمود", "Male"),
    ("Mustafa", "مصطفى", "Male"),
    ("Abdullah", "عبدالله", "Male"),
    ("Tariq", "طارق", "Male"),
    ("Bilal", "بلال", "Male"),
    ("Hamza", "حمزة", "Male"),
    ("Anas", "أنس", "Male"),
    ("Samer", "سامر", "Male"),
    ("Rami", "رامي", "Male"),
    ("Fatima", "فاطمة", "Female"),
    ("Aisha", "عائشة", "Female"),
    ("Maryam", "مريم", "Female"),
    ("Noor", "نور", "Female"),
    ("Layla", "ليلى", "Female"),
    ("Sara", "سارة", "Female"),
    ("Huda", "هدى", "Female"),
    ("Rana", "رنا", "Female"),
    ("Zainab", "زينب", "Female"),
    ("Amal", "أمل", "Female"),
    ("Lina", "لينا", "Female"),
    ("Hala", "هالة", "Female"),
    ("Reem", "ريم", "Female"),
    ("Salma", "سلمى", "Female"),
    ("Dana", "دانة", "Female"),
)
_ARABIC_LAST: tuple[tuple[str, str], ...] = (
    ("Al-Hashimi", "الهاشمي"),
    ("Al-Khatib", "الخطيب"),
    ("Haddad", "حداد"),
    ("Nasser", "ناصر"),
    ("Al-Sayed", "السيد"),
    ("Mansour", "منصور"),
    ("Khalil", "خليل"),
    ("Darwish", "درويش"),
    ("Saleh", "صالح"),
    ("Al-Masri", "المصري"),
    ("Al-Halabi", "الحلبي"),
    ("Othman", "عثمان"),
    ("Yassin", "ياسين"),
    ("Hamdan", "حمدان"),
    ("Barakat", "بركات"),
    ("Qasim", "قاسم"),
    ("Al-Zoubi", "الزعبي"),
    ("Abboud", "عبود"),
    ("Jaber", "جابر"),
    ("Al-Shami", "الشامي"),
)
_TURKISH_FIRST: tuple[tuple[str, str], ...] = (
    ("Mehmet", "Male"),
    ("Mustafa", "Male"),
    ("Emre", "Male"),
    ("Burak", "Male"),
    ("Can", "Male"),
    ("Çağrı", "Male"),
    ("Gökhan", "Male"),
    ("Oğuz", "Male"),
    ("Ayşe", "Female"),
    ("Zeynep", "Female"),
    ("Elif", "Female"),
    ("Selin", "Female"),
    ("Özge", "Female"),
    ("İrem", "Female"),
    ("Şule", "Female"),
)
_TURKISH_LAST = (
    "Yılmaz",
    "Kaya",
    "Demir",
    "Şahin",
    "Çelik",
    "Yıldız",
    "Öztürk",
    "Aydın",
    "Arslan",
    "Doğan",
    "Koç",
    "Kurt",
)
_ENGLISH_FIRST: tuple[tuple[str, str], ...] = (
    ("James", "Male"),
    ("Oliver", "Male"),
    ("Daniel", "Male"),
    ("Thomas", "Male"),
    ("Emily", "Female"),
    ("Sophie", "Female"),
    ("Charlotte", "Female"),
    ("Grace", "Female"),
)
_ENGLISH_LAST = ("Smith", "Jones", "Taylor", "Brown", "Wilson", "Evans", "Walker", "Hughes")

# origin: (nationality choices, cities, phone prefix)
_ORIGINS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "arab": (
        ("Syria", "Jordan", "Iraq", "Lebanon", "Egypt", "Palestine", "Libya", "Yemen", "Saudi Arabia"),
        ("Istanbul", "Gaziantep", "Amman", "Damascus", "Baghdad", "Beirut", "Cairo", "Erbil"),
        "+90 5",
    ),
    "turkish": (("Turkey",), ("Istanbul", "Ankara", "Izmir", "Bursa", "Gaziantep"), "+90 5"),
    "english": (("United Kingdom",), ("London", "Manchester", "Istanbul"), "+44 7"),
}

_TURKISH_ASCII = str.maketrans({"ı": "i", "İ": "I", "ş": "s", "Ş": "S", "ğ": "g", "Ğ": "G"})


def _slug(text: str) -> str:
    """ASCII, lowercase, letters only: the local part of an e-mail address."""
    folded = unicodedata.normalize("NFKD", text.translate(_TURKISH_ASCII))
    return "".join(c for c in folded.lower() if "a" <= c <= "z")


@dataclass(frozen=True)
class _Person:
    first: str
    last: str
    first_native: str | None
    last_native: str | None
    gender: str
    origin: str

    @property
    def full_name(self) -> str:
        return f"{self.first} {self.last}"


def _person(rng: random.Random) -> _Person:
    origin = rng.choices(("arab", "turkish", "english"), weights=(70, 20, 10))[0]
    if origin == "arab":
        first, first_native, gender = rng.choice(_ARABIC_FIRST)
        last, last_native = rng.choice(_ARABIC_LAST)
        return _Person(first, last, first_native, last_native, gender, origin)
    if origin == "turkish":
        first, gender = rng.choice(_TURKISH_FIRST)
        return _Person(first, rng.choice(_TURKISH_LAST), None, None, gender, origin)
    first, gender = rng.choice(_ENGLISH_FIRST)
    return _Person(first, rng.choice(_ENGLISH_LAST), None, None, gender, origin)


def _phone(rng: random.Random, prefix: str) -> str:
    return (
        f"{prefix}{rng.randint(10, 59)} {rng.randint(100, 999)} {rng.randint(10, 99)} {rng.randint(10, 99)}"
    )


# --- programmes and units -------------------------------------------------------------------------------

# (name, Program_Type, Program_Major, Program_Sub_Major, Product_Sub_Category, unit level, unit major)
_PROGRAMMES: tuple[tuple[str, str, str, str, str, str, str], ...] = (
    (
        "Pearson BTEC Level 5 HND in Business (Accounting & Finance)",
        "fds",
        "Business",
        "Accounting & Finance",
        "None",
        "Level 5",
        "BUS",
    ),
    (
        "Pearson BTEC Level 5 HND in Business (Marketing)",
        "fds",
        "Business",
        "Marketing",
        "None",
        "Level 5",
        "BUS",
    ),
    (
        "Pearson BTEC Level 5 HND in Computing (Software Engineering)",
        "fds",
        "IT",
        "Software Engineering",
        "None",
        "Level 5",
        "IT",
    ),
    (
        "Pearson BTEC Level 5 HND in Art and Design (Graphic Design)",
        "fds",
        "Art & Design",
        "Graphic Design Diploma",
        "None",
        "Level 5",
        "AD",
    ),
    (
        "Pearson BTEC Level 5 HND in Business (Human Resource Management)",
        "fds",
        "Business",
        "Human Resources Management",
        "None",
        "Level 5",
        "BUS",
    ),
    (
        "Pearson BTEC Level 5 HND in Computing (Cyber Security)",
        "fds",
        "IT",
        "Cyber Security",
        "None",
        "Level 5",
        "IT",
    ),
    (
        "Qualifi Level 7 Diploma in Strategic Management and Leadership",
        "Level 7",
        "Business",
        "Strategic leadership & Management",
        "Qualifi",
        "Level 7",
        "Strategic Management and Leadership",
    ),
    (
        "BA (Hons) Business Administration (Top-Up)",
        "Bachelor's Degree",
        "Business",
        "Business Administrations",
        "Advanced",
        "Level 7",
        "BUS",
    ),
    (
        "Pearson BTEC Level 5 HND in Computing (Data Analytics)",
        "fds",
        "IT",
        "Data Analytics",
        "None",
        "Level 5",
        "IT",
    ),
    (
        "Master of Business Administration (MBA)",
        "MBA",
        "Business",
        "Business Management",
        "Advanced",
        "Level 7",
        "BUS",
    ),
    (
        "Pearson BTEC Level 3 National Extended Diploma in Computing",
        "Option 2",
        "Extended Diploma",
        "Computer Science",
        "None",
        "Level 3",
        "L3",
    ),
    (
        "Pearson BTEC Level 5 HND in Business (Entrepreneurship)",
        "fds",
        "Business",
        "Entrepreneurship and Small Business Administration",
        "None",
        "Level 5",
        "BUS",
    ),
)

_UNIT_TITLES: dict[str, tuple[str, ...]] = {
    "BUS": (
        "Business and the Business Environment",
        "Marketing Essentials",
        "Human Resource Management",
        "Management and Operations",
        "Management Accounting",
        "Managing a Successful Business Project",
        "Business Law",
        "Innovation and Commercialisation",
        "Financial Reporting",
        "Entrepreneurship and Small Business Management",
        "Organisational Behaviour",
        "Financial Management",
        "Digital Marketing",
        "Global Business Environment",
    ),
    "IT": (
        "Programming",
        "Networking",
        "Professional Practice",
        "Database Design & Development",
        "Security",
        "Planning a Computing Project",
        "Software Development Lifecycles",
        "Website Design & Development",
        "Data Structures & Algorithms",
        "Cyber Security",
        "Applied Programming and Design Principles",
        "Cloud Computing",
        "Data Analytics",
        "Machine Learning",
        "Forensics",
    ),
    "AD": (
        "Professional Practice in Art and Design",
        "Contextual Studies",
        "Individual Project",
        "Techniques and Processes",
        "Communication in Art and Design",
        "Typography",
        "Digital Image Creation",
        "Branding and Identity",
    ),
    "Strategic Management and Leadership": (
        "Strategic Leadership",
        "Strategic Human Resource Management",
        "Finance for Strategic Managers",
        "Research Methods for Strategic Managers",
        "Developing Corporate Culture",
        "Strategic Marketing",
    ),
    "L3": (
        "Information Technology Systems",
        "Creating Systems to Manage Information",
        "Using Social Media in Business",
        "Programming",
        "IT Project Management",
        "Cyber Security and Incident Management",
    ),
}

_GRADE_NAMES = {
    "D": "Distinction",
    "M": "Merit",
    "P": "Pass",
    "R": "Refer",
    "RR": "Re-Refer",
    "F": "Fail",
    "Mapped": "Mapped",
}
_FEEDBACK = {
    "D": "Excellent critical analysis, well evidenced and referenced.",
    "M": "Good work; evaluation could go deeper to reach Distinction.",
    "P": "All Pass criteria met. Strengthen the analysis for Merit.",
    "R": "Some Pass criteria not met; please resubmit the missing tasks.",
    "RR": "Resubmission still incomplete; a repeat of the unit is needed.",
    "F": "No valid submission received.",
    "Mapped": "Credit mapped from prior learning.",
}


# --- the generator ----------------------------------------------------------------------------------------


class _Ids:
    """Hands out record ids in creation order, the way Zoho does."""

    def __init__(self) -> None:
        self.counter = _ID_START

    def next(self) -> str:
        self.counter += 1
        return make_record_id(DEFAULT_ID_PREFIX, self.counter)


def _count(module: str, scale: float) -> int:
    return max(1, round(BASE_COUNTS[module] * scale))


def _non_valid_positions(module: str) -> set[int]:
    return {d.position for d in DIRTY_RECORDS if d.module == module and d.outcome != "VALID"}


def _eligible(module: str, records: Sequence[dict]) -> list[dict]:
    """Records other records may point at: the dirty ones that a sync rejects are left alone."""
    excluded = _non_valid_positions(module)
    return [r for i, r in enumerate(records) if i not in excluded]


def _lookup(rec: dict, name_field: str = "Name") -> dict[str, str]:
    return {"name": rec[name_field], "id": rec["id"]}


def _times(rng: random.Random, n: int, start: datetime, end: datetime) -> list[datetime]:
    """``n`` sorted creation times between ``start`` and ``end``, on whole minutes."""
    span = int((end - start).total_seconds() // 60)
    return sorted(start + timedelta(minutes=rng.randint(0, span)) for _ in range(n))


def _cap(rng: random.Random, when: datetime) -> datetime:
    """``when``, or a moment in the month before ``_LAST_MODIFIED`` if it falls later.

    Clamping to the cap itself would pile hundreds of records onto one instant, which no real
    org shows (and which an inclusive ``If-Modified-Since`` would re-read every time).
    """
    if when <= _LAST_MODIFIED:
        return when
    return _LAST_MODIFIED - timedelta(minutes=rng.randint(1, 60 * 24 * 30))


def _stamp(rng: random.Random, rec: dict, created: datetime) -> None:
    modified = _cap(rng, created + timedelta(minutes=rng.randint(0, 60 * 24 * 40)))
    rec["Created_Time"] = format_time(created)
    rec["Modified_Time"] = format_time(max(modified, created))


def _pick(rng: random.Random, values: Sequence[str], weights: Sequence[float] | None = None) -> str:
    return rng.choices(list(values), weights=weights)[0] if weights else rng.choice(list(values))


def _picklist(module: str, api_name: str) -> tuple[str, ...]:
    for spec_field in MODULES_BY_API_NAME[module].fields:
        if spec_field.api_name == api_name:
            return spec_field.picklist
    raise KeyError(f"{module}.{api_name} is not in the module table")


def _in_picklist(module: str, api_name: str, value: str) -> str:
    if value not in _picklist(module, api_name):
        raise ValueError(f"{value!r} is not in the picklist of {module}.{api_name}")
    return value


def generate_school(seed: int = 2026, *, scale: float = 1.0) -> dict[str, list[dict]]:
    """Generate the demo school's Zoho records.

    Args:
        seed: the seed of ``random.Random``; the same seed and scale give identical output.
        scale: multiplies every count of :data:`BASE_COUNTS` (each module keeps at least one record).

    Returns:
        Module API name → records in API shape, in id (creation) order, for the nine modules of
        ``MODULES``. Modules without ``Modified_Time`` in the org (``Products``,
        ``BTEC_Enrollments``) carry neither ``Created_Time`` nor ``Modified_Time``.
    """
    if scale <= 0:
        raise ValueError("scale must be positive")
    rng = random.Random(seed)
    ids = _Ids()
    school: dict[str, list[dict]] = {}
    builders: tuple[tuple[str, Callable[..., list[dict]]], ...] = (
        ("Products", _programmes),
        ("BTEC_Teachers", _teachers),
        ("BTEC_Students", _students),
        ("BTEC", _units),
        ("BTEC_Classes", _classes),
        ("BTEC_Enrollments", _enrolments),
        ("BTEC_Registrations", _registrations),
        ("BTEC_Payments", _payments),
        ("BTEC_Grades", _grades),
    )
    for module, build in builders:
        school[module] = build(rng, ids, _count(module, scale), school)
        _apply_dirt(module, school[module])
    _add_subforms_and_formulas(random.Random(f"{seed}/subforms"), ids, school)
    return school


_CRITERION_TEXT = {
    "P": "describe the key concepts of the unit",
    "M": "analyse how the concepts apply in a work setting",
    "D": "evaluate the approaches and justify a recommendation",
}


def _add_subforms_and_formulas(rng: random.Random, ids: _Ids, school: dict[str, list[dict]]) -> None:
    """Give every record its subform rows and formula values, after all records exist.

    Row ids continue the record ids (Zoho gives subform rows ids from the same sequence), and the
    rows draw from their own ``rng``: the records and ids generated before are unchanged.

    * ``BTEC_Registrations.Payment_Schedule``: one row per instalment paid (``BTEC_Payments``) and,
      while money is still due, one row for the rest.
    * ``BTEC_Grades.Learning_Outcomes_Assessm``: one row per learning outcome of the unit, with the
      outcome reached; none for a grade mapped from prior learning.
    * ``BTEC.BTEC_Grading_Template_P1``: the unit's assessment criteria (P, M, D; Pass only for
      Qualifi units).
    * ``BTEC_Students.Total_Amount`` (a formula): what the student has paid, or null.
    """
    paid: dict[str, list[dict]] = {}
    for payment in school["BTEC_Payments"]:
        if payment.get("Registration_ID"):
            paid.setdefault(payment["Registration_ID"]["id"], []).append(payment)
    for reg in school["BTEC_Registrations"]:
        rows = []
        for payment in sorted(paid.get(reg["id"], []), key=lambda p: (p["Installment_No"], p["id"])):
            rows.append(
                {
                    "id": ids.next(),
                    "Installment_No": payment["Installment_No"],
                    "Due_Date": payment["Payment_Date"],
                    "Installment_Amount": payment["Payment_Amount"],
                    "Status": "Paid",
                }
            )
        remaining = float(reg["Remaining_Amount"] or 0)
        if remaining > 0:
            due = date.fromisoformat(reg["Registration_Date"]) + timedelta(days=30 * (len(rows) + 1))
            rows.append(
                {
                    "id": ids.next(),
                    "Installment_No": len(rows) + 1,
                    "Due_Date": due.isoformat(),
                    "Installment_Amount": remaining,
                    "Status": "Due",
                }
            )
        reg["Payment_Schedule"] = rows
    for grade in school["BTEC_Grades"]:
        rows = []
        if grade["Grade"] != "Mapped":
            reached = _GRADE_NAMES.get(grade["Grade"], "Refer")
            for number in range(1, 5):
                outcome = reached
                if reached in ("Merit", "Distinction") and rng.random() < 0.3:
                    outcome = "Pass" if reached == "Merit" else "Merit"  # not every outcome at the top
                rows.append({"id": ids.next(), "Learning_Outcome": f"LO{number}", "Outcome": outcome})
        grade["Learning_Outcomes_Assessm"] = rows
    for unit in school["BTEC"]:
        qualifi = unit["Service_Type"] == "Qualifi"
        criteria = [f"P{n}" for n in range(1, 5 if qualifi else 7)]
        if not qualifi:
            criteria += ["M1", "M2", "M3", "D1", "D2"]
        unit["BTEC_Grading_Template_P1"] = [
            {"id": ids.next(), "Criterion": criterion, "Learning_Outcome": f"LO{min(4, i // 3 + 1)}"}
            for i, criterion in enumerate(criteria)
        ]
        # The criteria's descriptions, as the unit module holds them (P1_description ...; empty
        # where the unit has fewer criteria). No random draw: the rest of the school stays the same.
        for c in CRITERIA:
            unit[c.description_field] = (
                f"{_CRITERION_TEXT[c.band]} ({unit['Name']})" if c.code in criteria else None
            )
    totals: dict[str, float] = {}
    for payment in school["BTEC_Payments"]:
        if payment.get("Student_ID") and isinstance(payment.get("Payment_Amount"), int | float):
            sid = payment["Student_ID"]["id"]
            totals[sid] = totals.get(sid, 0.0) + payment["Payment_Amount"]
    for student in school["BTEC_Students"]:
        total = totals.get(student["id"])
        student["Total_Amount"] = round(total, 2) if total is not None else None


def _apply_dirt(module: str, records: list[dict]) -> None:
    for dirt in DIRTY_RECORDS:
        if dirt.module == module and dirt.position < len(records):
            value = dict(dirt.value) if isinstance(dirt.value, dict) else dirt.value
            records[dirt.position][dirt.field] = value


def _programmes(rng: random.Random, ids: _Ids, n: int, school: dict[str, list[dict]]) -> list[dict]:
    out = []
    for i in range(n):
        name, kind, major, sub_major, category, _, _ = _PROGRAMMES[i % len(_PROGRAMMES)]
        if i >= len(_PROGRAMMES):
            name = f"{name} - Cohort {i // len(_PROGRAMMES) + 1}"
        price = float(rng.choice((2800, 3200, 3500, 4200, 5500, 7800)))
        out.append(
            {
                "id": ids.next(),
                "Product_Name": name,
                "Program_ID": f"PRG-{i + 1:04d}",
                "Status": _in_picklist("Products", "Status", "Approved" if rng.random() < 0.9 else "Draft"),
                "Program_Type": _in_picklist("Products", "Program_Type", kind),
                "Program_Major": _in_picklist("Products", "Program_Major", major),
                "Program_Sub_Major": _in_picklist("Products", "Program_Sub_Major", sub_major),
                "Product_Sub_Category": _in_picklist("Products", "Product_Sub_Category", category),
                "Unit_Price": round(price / 8, 2),
                "Program_Price": price,
                "Description": f"{name}. Taught in English and Arabic, onsite and online.",
                "MoodleID": None,
            }
        )
    return out


def _teachers(rng: random.Random, ids: _Ids, n: int, school: dict[str, list[dict]]) -> list[dict]:
    out = []
    for i, created in enumerate(_times(rng, n, _YEAR_START, _YEAR_START + timedelta(days=20))):
        person = _person(rng)
        title = rng.choice(("Dr. ", "", "", ""))
        rec = {
            "id": ids.next(),
            "Name": f"{title}{person.full_name}",
            "Email": f"{_slug(person.first)}.{_slug(person.last)}@mail.example",
            "Academic_Email": f"{_slug(person.first)}.{_slug(person.last)}{i + 1}@{SCHOOL_DOMAIN}",
            "Phone_Number": _phone(rng, _ORIGINS[person.origin][2]),
            "Teacher_Moodle_ID": None,
        }
        _stamp(rng, rec, created)
        out.append(rec)
    return out


def _students(rng: random.Random, ids: _Ids, n: int, school: dict[str, list[dict]]) -> list[dict]:
    programmes = school["Products"]
    statuses = ("Active", "Graduated", "Pending", "Freezed", "Withdraw", "Registered")
    out = []
    for i, created in enumerate(_times(rng, n, _YEAR_START, datetime(2026, 10, 20, tzinfo=ORG_TZ))):
        person = _person(rng)
        nationalities, cities, phone_prefix = _ORIGINS[person.origin]
        nationality = _in_picklist("BTEC_Students", "Nationality", rng.choice(nationalities))
        programme_index = rng.randrange(len(programmes))
        spec = _PROGRAMMES[programme_index % len(_PROGRAMMES)]
        level = spec[5]
        major = {"Business": "Business", "IT": "Computing", "Art & Design": "Art & Design"}.get(
            spec[2], "Business" if level == "Level 7" else "Computing"
        )
        academic_program = {"Level 3": "Level 3", "Level 5": "Level 5"}.get(level, "Level 7")
        if spec[1] in ("Bachelor's Degree", "MBA"):
            academic_program = spec[1]
        rec = {
            "id": ids.next(),
            "Name": f"STU-{i + 1:05d}",
            "First_Name": person.first,
            "Last_Name": person.last,
            "Frist_Name_Native": person.first_native,
            "Last_Name_Native": person.last_native,
            "Email": f"{_slug(person.first)}{rng.randint(10, 99)}@mail.example",
            "Academic_Email": f"{_slug(person.first)}.{_slug(person.last)}{i + 1}@{SCHOOL_DOMAIN}",
            "Phone_Number": _phone(rng, phone_prefix),
            "Birth_Date": date(rng.randint(1985, 2007), rng.randint(1, 12), rng.randint(1, 28)).isoformat(),
            "Gender": _in_picklist("BTEC_Students", "Gender", person.gender),
            "Nationality": nationality,
            "Country": _in_picklist("BTEC_Students", "Country", rng.choice(("Turkey", nationality))),
            "City": rng.choice(cities),
            "Status": _in_picklist("BTEC_Students", "Status", _pick(rng, statuses, (80, 6, 5, 3, 3, 3))),
            "Study_Mode": _in_picklist(
                "BTEC_Students", "Study_Mode", _pick(rng, ("Onsite", "Online", "Blended"))
            ),
            "Study_Language": _in_picklist(
                "BTEC_Students",
                "Study_Language",
                "Arabic" if person.origin == "arab" and rng.random() < 0.5 else "English",
            ),
            "Academic_Program": _in_picklist("BTEC_Students", "Academic_Program", academic_program),
            "Major": _in_picklist("BTEC_Students", "Major", major),
            "Sub_Major": _in_picklist("BTEC_Students", "Sub_Major", spec[3]),
            "Registration_Date": created.date().isoformat(),
            "BTEC_Registration_Number": f"BTEC-26-{rng.randint(100000, 999999)}",
            "Program": _lookup(programmes[programme_index], "Product_Name"),
            "Student_Moodle_ID": None,
            "Synced_to_Moodle": False,
            "Last_Sync_Date": None,
        }
        _stamp(rng, rec, created)
        out.append(rec)
    return out


def _units(rng: random.Random, ids: _Ids, n: int, school: dict[str, list[dict]]) -> list[dict]:
    programmes = school["Products"]
    used: dict[str, int] = {}
    out = []
    for i, created in enumerate(_times(rng, n, _YEAR_START, _YEAR_START + timedelta(days=6))):
        programme = programmes[i % len(programmes)]
        spec = _PROGRAMMES[(i % len(programmes)) % len(_PROGRAMMES)]
        level, unit_major = spec[5], spec[6]
        titles = _UNIT_TITLES[unit_major]
        number = used.get(unit_major, 0)
        used[unit_major] = number + 1
        title = titles[number % len(titles)]
        qualifi = spec[4] == "Qualifi"
        rec = {
            "id": ids.next(),
            "Name": f"Unit {number + 1}: {title}",
            "Unit_Code": f"{rng.choice('ADFHJKLMRTY')}/{rng.randint(500, 618)}/{rng.randint(1000, 9999)}",
            "Unit_Number": str(number + 1),
            "Unit_Credit": "30" if "Project" in title else "15",
            "Unit_Level": _in_picklist("BTEC", "Unit_Level", level),
            "Unit_Major": _in_picklist("BTEC", "Unit_Major", unit_major),
            "Service_Type": _in_picklist("BTEC", "Service_Type", "Qualifi" if qualifi else "BTEC"),
            "Moodle_Grading_Template": "Qualifi Pass/Fail" if qualifi else "BTEC Pass/Merit/Distinction",
            "Program": _lookup(programme, "Product_Name"),
            "Last_Sync_with_Moodle": None,
        }
        _stamp(rng, rec, created)
        out.append(rec)
    return out


def _classes(rng: random.Random, ids: _Ids, n: int, school: dict[str, list[dict]]) -> list[dict]:
    units = _eligible("BTEC", school["BTEC"])
    teachers = _eligible("BTEC_Teachers", school["BTEC_Teachers"])
    programmes = {p["id"]: p for p in school["Products"]}
    terms = tuple(_TERM_STARTS)
    planned = []
    for i in range(n):
        term = terms[i * len(terms) // n]
        unit = units[rng.randrange(len(units))]
        planned.append((_TERM_STARTS[term] + timedelta(days=rng.randint(0, 13)), term, unit))
    planned.sort(key=lambda p: p[0])
    out = []
    for i, (start, term, unit) in enumerate(planned):
        teacher = rng.choice(teachers)
        programme = programmes[unit["Program"]["id"]]
        group = i % 3 + 1
        title = unit["Name"].split(": ", 1)[1]
        created = datetime(start.year, start.month, start.day, 10, 0, tzinfo=ORG_TZ) - timedelta(
            days=rng.randint(7, 21), minutes=rng.randint(0, 600)
        )
        rec = {
            "id": ids.next(),
            "Name": f"CLS-{i + 1:04d}",
            "Class_Name": f"{title} ({term} 2026, Group {group})",
            "Class_Short_Name": f"{unit['Unit_Major'][:3].upper()}-U{unit['Unit_Number']}-{term}-{i + 1:03d}",
            "BTEC_Program": _lookup(programme, "Product_Name"),
            "Unit": _lookup(unit),
            "Teacher": _lookup(teacher),
            "Year": "2026",
            "Term": _in_picklist("BTEC_Classes", "Term", term),
            "Class_Status": _in_picklist("BTEC_Classes", "Class_Status", rng.choice(_TERM_STATUS[term])),
            "Start_Date": start.isoformat(),
            "End_Date": (start + timedelta(weeks=11)).isoformat(),
            "Class_Study_Mode": _in_picklist(
                "BTEC_Classes", "Class_Study_Mode", _pick(rng, ("Onsite", "Online", "Blended"), (5, 3, 2))
            ),
            "English_Teaching": rng.random() < 0.7,
            "MS_Teams_ID": f"19:{rng.getrandbits(128):032x}@thread.tacv2",
            "Moodle_Class_ID": None,
        }
        _stamp(rng, rec, max(created, _YEAR_START))
        out.append(rec)
    return out


def _enrolments(rng: random.Random, ids: _Ids, n: int, school: dict[str, list[dict]]) -> list[dict]:
    classes = _eligible("BTEC_Classes", school["BTEC_Classes"])
    students = _eligible("BTEC_Students", school["BTEC_Students"])
    teachers = {t["id"]: t for t in school["BTEC_Teachers"]}
    by_programme: dict[str, list[dict]] = {}
    for student in students:
        by_programme.setdefault(student["Program"]["id"], []).append(student)
    position = {c["id"]: i for i, c in enumerate(school["BTEC_Classes"])}
    capacity = len(classes) * len(students)
    pairs: set[tuple[str, str]] = set()
    chosen: list[tuple[dict, dict]] = []
    while len(chosen) < min(n, capacity):
        klass = classes[rng.randrange(len(classes))]
        pool = by_programme.get(klass["BTEC_Program"]["id"]) or students
        if rng.random() < 0.1:
            pool = students  # a few students take a unit outside their programme
        student = pool[rng.randrange(len(pool))]
        if (student["id"], klass["id"]) in pairs:
            continue
        pairs.add((student["id"], klass["id"]))
        chosen.append((klass, student))
    chosen.sort(key=lambda cs: (cs[0]["Start_Date"], position[cs[0]["id"]], int(cs[1]["id"])))
    out = []
    for i, (klass, student) in enumerate(chosen):
        out.append(
            {
                "id": ids.next(),
                "Name": f"ENR-{i + 1:06d}",
                "Enrolled_Students": _lookup(student),
                "Classes": _lookup(klass),
                "Start_Date": klass["Start_Date"],
                "End_Date": klass["End_Date"],
                "Enrollment_Type": _in_picklist(
                    "BTEC_Enrollments",
                    "Enrollment_Type",
                    _pick(rng, ("Normal", "Recording", "Self-Study", "Not Graded"), (90, 5, 3, 2)),
                ),
                "Student_Name": f"{student['First_Name']} {student['Last_Name']}",
                "Class_Name": klass["Class_Name"],
                "Class_Teacher": teachers[klass["Teacher"]["id"]]["Name"],
                "Enrolled_Program": klass["BTEC_Program"]["name"],
                "Moodle_Course_ID": None,
                "Synced_to_Moodle": False,
                "Last_Sync_Date": None,
            }
        )
    return out


def _registrations(rng: random.Random, ids: _Ids, n: int, school: dict[str, list[dict]]) -> list[dict]:
    students = _eligible("BTEC_Students", school["BTEC_Students"])
    programmes = school["Products"]
    planned: list[tuple[dict, dict, datetime]] = []
    for student in students[:n]:
        programme = next(p for p in programmes if p["id"] == student["Program"]["id"])
        planned.append((student, programme, datetime.fromisoformat(student["Created_Time"])))
    while len(planned) < n:
        student = students[rng.randrange(len(students))]
        programme = programmes[rng.randrange(len(programmes))]
        created = datetime.fromisoformat(student["Created_Time"]) + timedelta(days=rng.randint(20, 120))
        planned.append((student, programme, _cap(rng, created)))
    planned.sort(key=lambda p: (p[2], int(p[0]["id"])))
    out = []
    for i, (student, programme, created) in enumerate(planned):
        price = programme["Program_Price"]
        discount = rng.random() < 0.25
        percentage = rng.choice((10, 15, 20)) if discount else 0
        due = price * (100 - percentage) / 100
        rec = {
            "id": ids.next(),
            "Name": f"REG-{i + 1:05d}",
            "Student_ID": _lookup(student),
            "Program": _lookup(programme, "Product_Name"),
            "Registration_Date": created.date().isoformat(),
            "Registration_Status": _in_picklist(
                "BTEC_Registrations",
                "Registration_Status",
                _pick(rng, ("Active", "New", "Graduated", "Freeze", "Withdraw"), (75, 10, 6, 5, 4)),
            ),
            "Study_Mode": _in_picklist(
                "BTEC_Registrations", "Study_Mode", _pick(rng, ("Onsite", "Online", "Blended"))
            ),
            "Study_Language": _in_picklist(
                "BTEC_Registrations",
                "Study_Language",
                _pick(rng, ("English", "Arabic", "Turkish"), (6, 3, 1)),
            ),
            "Intake": f"2026 {'T1' if created.month < 4 else 'T2' if created.month < 7 else 'T3' if created.month < 9 else 'T4'}",
            "Currency": _in_picklist(
                "BTEC_Registrations", "Currency", _pick(rng, ("USD", "TRY", "EUR"), (7, 2, 1))
            ),
            "Program_Price": f"{price:.0f}",
            "Discount": discount,
            "Discount_Percentage": str(percentage) if discount else None,
            "Remaining_Amount": f"{due * rng.choice((0, 0.25, 0.5)):.0f}",
            "BTEC_Reg_No": f"BTEC-{created.year}-{rng.randint(100000, 999999)}",
            "Synced_to_Moodle": False,
            "Last_Sync_Date": None,
        }
        _stamp(rng, rec, created)
        out.append(rec)
    return out


def _payments(rng: random.Random, ids: _Ids, n: int, school: dict[str, list[dict]]) -> list[dict]:
    registrations = _eligible("BTEC_Registrations", school["BTEC_Registrations"])
    instalments = {r["id"]: 1 for r in registrations[:n]}
    while sum(instalments.values()) < min(n, 4 * len(registrations)):
        reg = registrations[rng.randrange(len(registrations))]
        if instalments.get(reg["id"], 0) < 4:
            instalments[reg["id"]] = instalments.get(reg["id"], 0) + 1
    planned: list[tuple[datetime, dict, int, int]] = []
    for reg in registrations:
        count = instalments.get(reg["id"], 0)
        registered = datetime.fromisoformat(reg["Created_Time"])
        for k in range(count):
            paid = _cap(rng, registered + timedelta(days=30 * k, minutes=rng.randint(0, 60 * 24 * 5)))
            planned.append((paid, reg, k + 1, count))
    planned.sort(key=lambda p: (p[0], int(p[1]["id"]), p[2]))
    out = []
    for i, (paid, reg, number, count) in enumerate(planned):
        price = float(reg["Program_Price"])
        rec = {
            "id": ids.next(),
            "Name": f"PAY-{i + 1:05d}",
            "Student_ID": dict(reg["Student_ID"]),
            "Registration_ID": _lookup(reg),
            "Payment_Amount": round(price / count, 2) if number > 1 else 250.0,
            "Currency": _in_picklist("BTEC_Payments", "Currency", reg["Currency"]),
            "Payment_Date": paid.date().isoformat(),
            "Payment_Method": _in_picklist(
                "BTEC_Payments", "Payment_Method", _pick(rng, ("Bank Transfer", "Cash"), (7, 3))
            ),
            "Payment_Type": _in_picklist(
                "BTEC_Payments", "Payment_Type", "Registration Fees" if number == 1 else "Study Fees"
            ),
            "Installment_No": number,
            "SRM_Voucher_Number": f"V-2026-{i + 1:06d}",
        }
        _stamp(rng, rec, paid)
        out.append(rec)
    return out


def _grades(rng: random.Random, ids: _Ids, n: int, school: dict[str, list[dict]]) -> list[dict]:
    classes = {c["id"]: c for c in _eligible("BTEC_Classes", school["BTEC_Classes"])}
    teachers = _eligible("BTEC_Teachers", school["BTEC_Teachers"])
    units = {u["id"]: u for u in school["BTEC"]}
    graded = [
        e
        for e in _eligible("BTEC_Enrollments", school["BTEC_Enrollments"])
        if e["Classes"]["id"] in classes and classes[e["Classes"]["id"]]["Term"] != "T4"
    ]
    picked = sorted(rng.sample(range(len(graded)), min(n, len(graded))))
    attempts = [(graded[i], 1) for i in picked]
    resits = [(e, 2) for e, _ in attempts if rng.random() < 0.04]
    attempts = (attempts + resits)[:n]
    attempts.sort(key=lambda ea: (classes[ea[0]["Classes"]["id"]]["End_Date"], ea[1], int(ea[0]["id"])))
    out = []
    for i, (enrolment, attempt) in enumerate(attempts):
        klass = classes[enrolment["Classes"]["id"]]
        end = date.fromisoformat(klass["End_Date"]) + timedelta(days=7 + 28 * (attempt - 1))
        grade = _pick(rng, ("P", "M", "D", "R", "RR", "F", "Mapped"), (40, 30, 15, 8, 3, 2, 2))
        graded_at = datetime(end.year, end.month, end.day, 12, 0, tzinfo=ORG_TZ) + timedelta(
            minutes=rng.randint(0, 60 * 24 * 10)
        )
        rec = {
            "id": ids.next(),
            "Name": f"GRD-{i + 1:05d}",
            "Student": dict(enrolment["Enrolled_Students"]),
            "Class": _lookup(klass),
            "Grade": _in_picklist("BTEC_Grades", "Grade", grade),
            "Grade_Status": _in_picklist(
                "BTEC_Grades",
                "Grade_Status",
                _pick(rng, ("Released", "Marking completed", "In review"), (8, 1, 1)),
            ),
            "BTEC_Grade_Name": _GRADE_NAMES[grade],
            "BTEC_Unit": units[klass["Unit"]["id"]]["Name"],
            "Attempt_Number": attempt,
            "Attempt_Date": end.isoformat(),
            "Feedback": _FEEDBACK[grade],
            "Grader_Name": klass["Teacher"]["name"],
            "IV_Name": rng.choice(teachers)["Name"],
            "Moodle_Grade_ID": None,
            "Moodle_Grade_Composite_Key": f"{enrolment['Enrolled_Students']['id']}-{klass['id']}-{attempt}",
        }
        _stamp(rng, rec, _cap(rng, graded_at))
        out.append(rec)
    return out


__all__ = [
    "BASE_COUNTS",
    "DEMO_SEED",
    "DIRTY_RECORDS",
    "SCHOOL_DOMAIN",
    "DemoCredentials",
    "DirtyRecord",
    "demo_credentials",
    "demo_simulator",
    "generate_school",
]
