"""The module table: the nine Zoho CRM modules a BTEC school keeps, described once.

Assets, warehouse tables, validation and the sandbox simulator are all built from ``MODULES``.
Field types and picklist values are not typed in here: they are read from ``zoho_fields.json``
(the ``/settings/fields`` metadata of a real school's org, shipped with the package), so the table
cannot drift from what Zoho actually holds. A test pins every API name below to that metadata.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as _field  # ModuleSpec has a method named field
from functools import cache
from importlib import resources
from typing import Any, Literal

from sync_pipelines.btec import CRITERIA

Kind = Literal[
    "text",
    "email",
    "phone",
    "website",
    "textarea",
    "autonumber",
    "picklist",
    "date",
    "datetime",
    "boolean",
    "integer",
    "double",
    "currency",
    "lookup",
    "subform",
]

#: Zoho ``data_type`` values this project understands, mapped to the canonical kind.
_ZOHO_KINDS: dict[str, Kind] = {
    "text": "text",
    "textarea": "textarea",
    "email": "email",
    "phone": "phone",
    "website": "website",
    "autonumber": "autonumber",
    "picklist": "picklist",
    "date": "date",
    "datetime": "datetime",
    "boolean": "boolean",
    "integer": "integer",
    "double": "double",
    "currency": "currency",
    "lookup": "lookup",
    # A subform: a list of rows, each with its own id; mirrored as JSON in the parent's column and
    # as a child table (one row per subform row).
    "subform": "subform",
    # A formula: computed by Zoho, read-only; its value changes without Modified_Time changing.
    # The shipped metadata does not give its return type, so it is kept as text (a number reads
    # as its shortest decimal).
    "formula": "text",
}


#: The columns every module table has besides its fields (the warehouse's and the diff's names).
ID = "zoho_id"
MODIFIED = "zoho_modified_time"
INVALID_REASON = "invalid_reason"
#: JSON list of the rules a record breaks: ``[{"rule", "field", "value"}]``; missing when valid.
FINDINGS = "findings"


@dataclass(frozen=True)
class FieldSpec:
    """One Zoho field as the sync sees it.

    Attributes:
        api_name: Zoho's API name, exactly as the REST API spells it.
        column: the canonical column name in dataframes and the warehouse.
        kind: canonical kind, taken from the org's field metadata.
        required: a record without a value here is INVALID.
        fingerprinted: part of the business fields hashed into the fingerprint. Sync bookkeeping
            fields (written back by this project) are stored but not fingerprinted, so writing them
            never makes a record look UPDATED.
        picklist: allowed values (``-None-`` excluded: it canonicalises to empty).
        lookup_module: for lookups, the API name of the module pointed at.
        absent: the tenant's org has no such field (``null`` in its ``zoho.fields`` mapping):
            it is never requested and its column stays empty. Never set in ``MODULES``.
    """

    api_name: str
    column: str
    kind: Kind
    required: bool = False
    fingerprinted: bool = True
    picklist: tuple[str, ...] = ()
    lookup_module: str | None = None
    absent: bool = False


@dataclass(frozen=True)
class Dependency:
    """A lookup to another module: the module's asset runs after its target's.

    The record is stored whatever its lookup holds (the warehouse mirrors Zoho). A target the
    warehouse does not hold is asked of Zoho by id: one Zoho does not hold either is a finding
    (``lookup_missing``); one it holds arrives with its module's next sync. ``reason`` names the
    wait for the steps downstream that need the target.
    """

    column: str
    target: str  # module API name
    reason: str


@dataclass(frozen=True)
class ModuleSpec:
    """One Zoho module: everything the assets, the warehouse and the simulator need to know.

    The specs in ``MODULES`` describe the shipped org. A tenant whose org names things otherwise
    gets its own (:func:`sync_pipelines.zoho.org.tenant_spec`): same ``name``, columns and table,
    its org's API names and field metadata, held in ``org_fields``.
    """

    api_name: str
    name: str  # asset key ["zoho", name]; warehouse table "zoho_" + name
    label: str  # what one row is, for descriptions
    fields: tuple[FieldSpec, ...]
    natural_key: tuple[str, ...] = ()
    dependencies: tuple[Dependency, ...] = ()  # targets: module API names of MODULES, in every spec
    date_order: tuple[str, str] | None = None  # (start, end) columns: end may not precede start
    #: The seed backend's name of the module on its route ``/v1/sync/{seed_name}`` (US spelling).
    seed_name: str | None = None
    #: The org's field metadata for this module (API name → ``/settings/fields`` entry), or
    #: ``None`` for the shipped metadata. Not compared: specs are equal when they read and
    #: validate the same fields the same way.
    org_fields: Mapping[str, Mapping[str, Any]] | None = _field(default=None, compare=False, repr=False)

    @property
    def table(self) -> str:
        return f"zoho_{self.name}"

    @property
    def field_metadata(self) -> Mapping[str, Mapping[str, Any]]:
        """The org's field metadata of this module: ``org_fields``, else the shipped metadata."""
        return self.org_fields if self.org_fields is not None else metadata_for(self.api_name)

    @property
    def has_modified_time(self) -> bool:
        """Whether the module exposes ``Modified_Time`` (and so supports incremental reads)."""
        return "Modified_Time" in self.field_metadata

    @property
    def api_fields(self) -> tuple[str, ...]:
        """API names to request (``fields=`` parameter); ``id`` is always returned by Zoho.
        Fields the org does not have (``absent``) are not requested."""
        names = [f.api_name for f in self.fields if not f.absent]
        if self.has_modified_time:
            names.append("Modified_Time")
        return tuple(names)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.column for f in self.fields)

    @property
    def fingerprint_columns(self) -> tuple[str, ...]:
        """Columns hashed into the fingerprint, in sorted order (the order is part of the format)."""
        return tuple(sorted(f.column for f in self.fields if f.fingerprinted))

    def field(self, column: str) -> FieldSpec:
        for f in self.fields:
            if f.column == column:
                return f
        raise KeyError(f"{self.api_name} has no column {column!r}")

    @property
    def upstream(self) -> tuple[str, ...]:
        """Module API names this module depends on, in table order, without repeats."""
        return tuple(dict.fromkeys(d.target for d in self.dependencies))


# --- field metadata -------------------------------------------------------------------------------


@cache
def _metadata() -> dict[str, dict[str, dict]]:
    text = resources.files("sync_pipelines.zoho").joinpath("zoho_fields.json").read_text("utf-8")
    raw = json.loads(text)["modules"]
    return {module: {f["api_name"]: f for f in fields} for module, fields in raw.items()}


def metadata_for(module: str) -> dict[str, dict]:
    """The org's field metadata for ``module``: API name → field description."""
    return _metadata()[module]


def shipped_modules() -> tuple[str, ...]:
    """API names of every module in the shipped metadata (the nine synced ones and others)."""
    return tuple(_metadata())


def _f(
    module: str,
    api_name: str,
    column: str | None = None,
    *,
    required: bool = False,
    fingerprinted: bool = True,
) -> FieldSpec:
    meta = metadata_for(module)[api_name]
    kind = _ZOHO_KINDS[meta["data_type"]]
    picklist = tuple(v for v in meta.get("pick_list_values", ()) if v != "-None-")
    return FieldSpec(
        api_name=api_name,
        column=column or api_name.lower(),
        kind=kind,
        required=required or bool(meta.get("required")),
        fingerprinted=fingerprinted,
        picklist=picklist,
        lookup_module=meta.get("lookup_module"),
    )


def _bookkeeping(module: str, *api_names: str) -> tuple[FieldSpec, ...]:
    return tuple(_f(module, n, fingerprinted=False) for n in api_names)


# --- the nine modules -----------------------------------------------------------------------------

_S = "BTEC_Students"
STUDENTS = ModuleSpec(
    api_name=_S,
    name="students",
    seed_name="students",
    label="one student of the school (a BTEC_Students record)",
    natural_key=("academic_email",),
    fields=(
        _f(_S, "Name", "student_number"),
        _f(_S, "First_Name", required=True),
        _f(_S, "Last_Name", required=True),
        _f(_S, "Frist_Name_Native", "first_name_native"),
        _f(_S, "Last_Name_Native"),
        _f(_S, "Email"),
        _f(_S, "Academic_Email", required=True),
        _f(_S, "Phone_Number"),
        _f(_S, "Birth_Date"),
        _f(_S, "Gender"),
        _f(_S, "Nationality"),
        _f(_S, "Country"),
        _f(_S, "City"),
        _f(_S, "Status"),
        _f(_S, "Study_Mode"),
        _f(_S, "Study_Language"),
        _f(_S, "Academic_Program"),
        _f(_S, "Major"),
        _f(_S, "Sub_Major"),
        _f(_S, "Registration_Date"),
        _f(_S, "BTEC_Registration_Number"),
        _f(_S, "Program", "program_id"),
        # Refreshed, not fingerprinted: Zoho recomputes it without touching Modified_Time, so
        # only a full read (the nightly reconciliation) sees it change.
        _f(_S, "Total_Amount", fingerprinted=False),
        *_bookkeeping(_S, "Student_Moodle_ID", "Synced_to_Moodle", "Last_Sync_Date"),
    ),
)

_T = "BTEC_Teachers"
TEACHERS = ModuleSpec(
    api_name=_T,
    name="teachers",
    seed_name="teachers",
    label="one teacher (a BTEC_Teachers record)",
    natural_key=("academic_email",),
    fields=(
        _f(_T, "Name"),
        _f(_T, "Email"),
        _f(_T, "Academic_Email", required=True),
        _f(_T, "Phone_Number"),
        *_bookkeeping(_T, "Teacher_Moodle_ID"),
    ),
)

_P = "Products"
PROGRAMMES = ModuleSpec(
    api_name=_P,
    name="programmes",
    seed_name="programs",
    label="one programme of study (a record of the standard Products module)",
    natural_key=("product_name",),
    fields=(
        _f(_P, "Product_Name"),
        _f(_P, "Program_ID"),
        _f(_P, "Status"),
        _f(_P, "Program_Type"),
        _f(_P, "Program_Major"),
        _f(_P, "Program_Sub_Major"),
        _f(_P, "Product_Sub_Category"),
        _f(_P, "Unit_Price"),
        _f(_P, "Program_Price"),
        _f(_P, "Description"),
        *_bookkeeping(_P, "MoodleID"),
    ),
)

_U = "BTEC"
UNITS = ModuleSpec(
    api_name=_U,
    name="units",
    seed_name="units",
    label="one BTEC unit (a record of the custom module BTEC)",
    dependencies=(Dependency("program_id", _P, "programme_not_synced_yet"),),
    fields=(
        _f(_U, "Name"),
        _f(_U, "Unit_Code"),
        _f(_U, "Unit_Number"),
        _f(_U, "Unit_Credit"),
        _f(_U, "Unit_Level"),
        _f(_U, "Unit_Major"),
        _f(_U, "Service_Type"),
        _f(_U, "Moodle_Grading_Template"),
        _f(_U, "Program", "program_id"),
        _f(_U, "BTEC_Grading_Template_P1", "grading_template"),
        # The unit's assessment criteria, P1 … P10, M1 … M9, D1 … D6 (empty where the unit has
        # fewer): what its grades are given by (sync_pipelines.btec.unit_criteria).
        *(_f(_U, c.description_field, c.description_column) for c in CRITERIA),
        *_bookkeeping(_U, "Last_Sync_with_Moodle"),
    ),
)

_C = "BTEC_Classes"
CLASSES = ModuleSpec(
    api_name=_C,
    name="classes",
    seed_name="classes",
    label="one class: a unit taught by a teacher in a term (a BTEC_Classes record)",
    natural_key=("class_short_name",),
    dependencies=(
        Dependency("program_id", _P, "programme_not_synced_yet"),
        Dependency("unit_id", _U, "unit_not_synced_yet"),
        Dependency("teacher_id", _T, "teacher_not_synced_yet"),
    ),
    date_order=("start_date", "end_date"),
    fields=(
        _f(_C, "Name", "class_number"),
        _f(_C, "Class_Name", required=True),
        _f(_C, "Class_Short_Name", required=True),
        _f(_C, "BTEC_Program", "program_id"),
        _f(_C, "Unit", "unit_id"),
        _f(_C, "Teacher", "teacher_id"),
        _f(_C, "Year"),
        _f(_C, "Term"),
        _f(_C, "Class_Status"),
        _f(_C, "Start_Date"),
        _f(_C, "End_Date"),
        _f(_C, "Class_Study_Mode"),
        _f(_C, "English_Teaching"),
        _f(_C, "MS_Teams_ID"),
        *_bookkeeping(_C, "Moodle_Class_ID"),
    ),
)

_E = "BTEC_Enrollments"
ENROLMENTS = ModuleSpec(
    api_name=_E,
    name="enrolments",
    seed_name="enrollments",
    label="one student enrolled in one class (a BTEC_Enrollments record)",
    natural_key=("student_id", "class_id"),
    dependencies=(
        Dependency("student_id", _S, "student_not_synced_yet"),
        Dependency("class_id", _C, "class_not_synced_yet"),
    ),
    date_order=("start_date", "end_date"),
    fields=(
        _f(_E, "Name", "enrolment_number"),
        _f(_E, "Enrolled_Students", "student_id"),
        _f(_E, "Classes", "class_id"),
        _f(_E, "Start_Date"),
        _f(_E, "End_Date"),
        _f(_E, "Enrollment_Type", "enrolment_type"),
        _f(_E, "Student_Name"),
        _f(_E, "Class_Name"),
        _f(_E, "Class_Teacher"),
        _f(_E, "Enrolled_Program", "enrolled_programme"),
        *_bookkeeping(_E, "Moodle_Course_ID", "Synced_to_Moodle", "Last_Sync_Date"),
    ),
)

_R = "BTEC_Registrations"
REGISTRATIONS = ModuleSpec(
    api_name=_R,
    name="registrations",
    seed_name="registrations",
    label="one student's registration on a programme (a BTEC_Registrations record)",
    dependencies=(
        Dependency("student_id", _S, "student_not_synced_yet"),
        Dependency("program_id", _P, "programme_not_synced_yet"),
    ),
    fields=(
        _f(_R, "Name", "registration_number"),
        _f(_R, "Student_ID", "student_id", required=True),
        _f(_R, "Program", "program_id", required=True),
        _f(_R, "Registration_Date"),
        _f(_R, "Registration_Status"),
        _f(_R, "Study_Mode"),
        _f(_R, "Study_Language"),
        _f(_R, "Intake"),
        _f(_R, "Currency"),
        _f(_R, "Program_Price"),
        _f(_R, "Discount"),
        _f(_R, "Discount_Percentage"),
        _f(_R, "Remaining_Amount"),
        _f(_R, "BTEC_Reg_No"),
        _f(_R, "Payment_Schedule"),
        *_bookkeeping(_R, "Synced_to_Moodle", "Last_Sync_Date"),
    ),
)

_Y = "BTEC_Payments"
PAYMENTS = ModuleSpec(
    api_name=_Y,
    name="payments",
    seed_name="payments",
    label="one payment, or instalment, against a registration (a BTEC_Payments record)",
    dependencies=(
        Dependency("student_id", _S, "student_not_synced_yet"),
        Dependency("registration_id", _R, "registration_not_synced_yet"),
    ),
    fields=(
        _f(_Y, "Name", "payment_number"),
        _f(_Y, "Student_ID", "student_id", required=True),
        _f(_Y, "Registration_ID", "registration_id", required=True),
        _f(_Y, "Payment_Amount", required=True),
        _f(_Y, "Currency"),
        _f(_Y, "Payment_Date"),
        _f(_Y, "Payment_Method"),
        _f(_Y, "Payment_Type"),
        _f(_Y, "Installment_No", "instalment_no"),
        _f(_Y, "SRM_Voucher_Number", "voucher_number"),
    ),
)

_G = "BTEC_Grades"
GRADES = ModuleSpec(
    api_name=_G,
    name="grades",
    seed_name="grades",
    label="one BTEC grade of a student in a class (a BTEC_Grades record)",
    natural_key=("moodle_grade_composite_key",),
    dependencies=(
        Dependency("student_id", _S, "student_not_synced_yet"),
        Dependency("class_id", _C, "class_not_synced_yet"),
    ),
    fields=(
        _f(_G, "Name", "grade_number"),
        _f(_G, "Student", "student_id", required=True),
        _f(_G, "Class", "class_id", required=True),
        _f(_G, "Grade"),
        _f(_G, "Grade_Status"),
        _f(_G, "BTEC_Grade_Name"),
        _f(_G, "BTEC_Unit"),
        _f(_G, "Attempt_Number"),
        _f(_G, "Attempt_Date"),
        _f(_G, "Feedback"),
        _f(_G, "Grader_Name"),
        _f(_G, "IV_Name"),
        _f(_G, "Moodle_Grade_ID"),
        _f(_G, "Moodle_Grade_Composite_Key"),
        _f(_G, "Learning_Outcomes_Assessm", "learning_outcomes"),
    ),
)

#: The nine modules, in an order where every module comes after those it depends on.
MODULES: tuple[ModuleSpec, ...] = (
    PROGRAMMES,
    TEACHERS,
    STUDENTS,
    UNITS,
    CLASSES,
    ENROLMENTS,
    REGISTRATIONS,
    PAYMENTS,
    GRADES,
)

#: Columns the pipeline adds beside a module's own; no field may take one of these names.
RESERVED_COLUMNS = frozenset(
    {
        "tenant_id",
        "zoho_id",
        "zoho_modified_time",
        "fingerprint",
        "first_seen_at",
        "updated_at",
        "deleted_at",
        "sync_run_id",
        "sync_status",
        "sync_reason",
        "invalid_reason",
        "aux_fingerprint",
        "findings",
        "change",
        "sync_note",
    }
)

MODULES_BY_API_NAME: dict[str, ModuleSpec] = {m.api_name: m for m in MODULES}
MODULES_BY_NAME: dict[str, ModuleSpec] = {m.name: m for m in MODULES}


def module(name_or_api_name: str) -> ModuleSpec:
    """Look a module up by asset name (``students``) or API name (``BTEC_Students``)."""
    spec = MODULES_BY_NAME.get(name_or_api_name) or MODULES_BY_API_NAME.get(name_or_api_name)
    if spec is None:
        raise KeyError(f"unknown Zoho module {name_or_api_name!r}")
    return spec


__all__ = [
    "MODULES",
    "MODULES_BY_API_NAME",
    "MODULES_BY_NAME",
    "RESERVED_COLUMNS",
    "Dependency",
    "FieldSpec",
    "Kind",
    "ModuleSpec",
    "metadata_for",
    "module",
    "shipped_modules",
]
