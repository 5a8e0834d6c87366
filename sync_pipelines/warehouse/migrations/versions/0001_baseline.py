"""Baseline: the warehouse schema of commit 5d5b30b, before Alembic.

Revision ID: 0001_baseline
Revises:
Create Date: 2026-12-03

Frozen: every table, column, type, comment and index that ``metadata.create_all`` made at commit
5d5b30bf1b501a6077b70af0aa942e47592696ad (``sync_pipelines/warehouse/schema.py``, the module table
of ``sync_pipelines/zoho/modules.py`` with ``zoho_fields.json``, and ``sync_pipelines/warehouse/moodle.py``),
written out here so that it never changes with the code. Never edit it: a change is a new revision,
or the table-driven part of the upgrade.

A warehouse made by ``create_all`` before Alembic has exactly these tables; the upgrade stamps it
at this revision instead of running it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0001_baseline"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The tables this revision creates (a database holding any of them predates Alembic).
TABLES = (
    "moodle_enrolment_map",
    "moodle_grades",
    "moodle_id_map",
    "moodle_push_results",
    "sync_cursors",
    "sync_pending",
    "sync_results",
    "sync_runs",
    "zoho_classes",
    "zoho_enrolments",
    "zoho_grades",
    "zoho_payments",
    "zoho_programmes",
    "zoho_registrations",
    "zoho_students",
    "zoho_teachers",
    "zoho_units",
    "zoho_writeback_state",
)


def upgrade() -> None:
    op.create_table(
        "moodle_enrolment_map",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column(
            "key", sa.String(length=96), nullable=False, comment="enrolment:<zoho id> or teacher:<class id>"
        ),
        sa.Column("moodle_user_id", sa.BigInteger(), nullable=False),
        sa.Column("moodle_course_id", sa.BigInteger(), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "key"),
        comment="Enrolments this pipeline made in Moodle and still holds.",
    )
    op.create_table(
        "moodle_grades",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column(
            "composite_key", sa.String(length=64), nullable=False, comment="<moodle user id>_<grade item id>"
        ),
        sa.Column("moodle_user_id", sa.BigInteger(), nullable=False),
        sa.Column("moodle_course_id", sa.BigInteger(), nullable=False),
        sa.Column("grade_item_id", sa.BigInteger(), nullable=False),
        sa.Column("item_name", sa.Text(), nullable=True),
        sa.Column("student_zoho_id", sa.String(length=32), nullable=True),
        sa.Column("class_zoho_id", sa.String(length=32), nullable=True),
        sa.Column("grade_raw", sa.Float(), nullable=True),
        sa.Column("grade_max", sa.Float(), nullable=True),
        sa.Column("percentage", sa.Float(), nullable=True),
        sa.Column(
            "btec_grade", sa.String(length=16), nullable=True, comment="Distinction, Merit, Pass or Refer"
        ),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column(
            "written_fingerprint",
            sa.String(length=64),
            nullable=True,
            comment="fingerprint last written to Zoho BTEC_Grades",
        ),
        sa.Column(
            "zoho_grade_id", sa.String(length=32), nullable=True, comment="the BTEC_Grades record written"
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "composite_key"),
        comment="Grades read from Moodle gradebooks, with their BTEC conversion.",
    )
    op.create_table(
        "moodle_id_map",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False, comment="user, course or category"),
        sa.Column(
            "zoho_id",
            sa.String(length=64),
            nullable=False,
            comment="the Zoho record the Moodle object mirrors",
        ),
        sa.Column("zoho_module", sa.String(length=32), nullable=False),
        sa.Column("moodle_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "pushed_fingerprint",
            sa.String(length=64),
            nullable=True,
            comment="SHA-256 of the payload last written to Moodle",
        ),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "entity", "zoho_id"),
        comment="Zoho id ↔ Moodle id, per tenant and entity.",
    )
    op.create_index(
        "ix_moodle_id_map_moodle", "moodle_id_map", ["tenant_id", "entity", "moodle_id"], unique=True
    )
    op.create_table(
        "moodle_push_results",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=True),
        sa.Column("target", sa.String(length=16), nullable=False, comment="moodle or zoho"),
        sa.Column("entity", sa.String(length=32), nullable=False),
        sa.Column(
            "key", sa.String(length=96), nullable=False, comment="the Zoho id (or enrolment key) written for"
        ),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False, comment="success or error"),
        sa.Column("remote_id", sa.String(length=64), nullable=True, comment="Moodle id or Zoho id written"),
        sa.Column("errorcode", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        comment="Every write to Moodle or back to Zoho, per record, with the service's error on failure.",
    )
    op.create_index(
        "ix_moodle_push_results_key", "moodle_push_results", ["tenant_id", "entity", "key"], unique=False
    )
    op.create_table(
        "sync_cursors",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("module", sa.String(length=64), nullable=False),
        sa.Column(
            "modified_since",
            sa.String(length=32),
            nullable=True,
            comment="If-Modified-Since for the next incremental read",
        ),
        sa.Column(
            "deleted_since",
            sa.String(length=32),
            nullable=True,
            comment="If-Modified-Since for the next /deleted read",
        ),
        sa.Column(
            "max_id",
            sa.String(length=32),
            nullable=True,
            comment="highest record id seen (modules without Modified_Time)",
        ),
        sa.Column(
            "last_full_at", sa.DateTime(timezone=True), nullable=True, comment="last full reconciliation"
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "module"),
        comment="Incremental-read position per tenant and module.",
    )
    op.create_table(
        "sync_pending",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("module", sa.String(length=64), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "payload",
            sa.Text(),
            nullable=False,
            comment="JSON canonical record, re-applied when its lookup arrives",
        ),
        sa.Column("first_skipped_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "module", "zoho_id"),
        comment="SKIPPED records waiting for the record they point at.",
    )
    op.create_table(
        "sync_results",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("sync_run_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("module", sa.String(length=64), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "changes", sa.Text(), nullable=True, comment="JSON {field: [old, new]} for UPDATED records"
        ),
        sa.PrimaryKeyConstraint("id"),
        comment="What each sync run did with each record it saw, and why.",
    )
    op.create_index(
        "ix_sync_results_record", "sync_results", ["tenant_id", "module", "zoho_id"], unique=False
    )
    op.create_index("ix_sync_results_run", "sync_results", ["sync_run_id"], unique=False)
    op.create_table(
        "sync_runs",
        sa.Column("sync_run_id", sa.String(length=36), nullable=False),
        sa.Column("dagster_run_id", sa.String(length=64), nullable=True),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("module", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False, comment="success or failed"),
        sa.Column("mode", sa.String(length=16), nullable=False, comment="incremental or full"),
        sa.Column("counts", sa.Text(), nullable=True, comment="JSON: records per status"),
        sa.Column("api_calls", sa.Integer(), nullable=True),
        sa.Column("api_credits", sa.Integer(), nullable=True),
        sa.Column(
            "watermark", sa.String(length=32), nullable=True, comment="Modified_Time watermark after the run"
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("sync_run_id"),
        comment="One row per module sync of one tenant.",
    )
    op.create_index(
        "ix_sync_runs_tenant_module", "sync_runs", ["tenant_id", "module", "started_at"], unique=False
    )
    op.create_table(
        "zoho_classes",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("class_number", sa.String(length=255), nullable=True, comment="Zoho BTEC_Classes.Name"),
        sa.Column("class_name", sa.String(length=255), nullable=True, comment="Zoho BTEC_Classes.Class_Name"),
        sa.Column(
            "class_short_name",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Classes.Class_Short_Name",
        ),
        sa.Column(
            "program_id", sa.String(length=32), nullable=True, comment="Zoho BTEC_Classes.BTEC_Program"
        ),
        sa.Column("unit_id", sa.String(length=32), nullable=True, comment="Zoho BTEC_Classes.Unit"),
        sa.Column("teacher_id", sa.String(length=32), nullable=True, comment="Zoho BTEC_Classes.Teacher"),
        sa.Column("year", sa.String(length=255), nullable=True, comment="Zoho BTEC_Classes.Year"),
        sa.Column("term", sa.String(length=255), nullable=True, comment="Zoho BTEC_Classes.Term"),
        sa.Column(
            "class_status", sa.String(length=255), nullable=True, comment="Zoho BTEC_Classes.Class_Status"
        ),
        sa.Column("start_date", sa.Date(), nullable=True, comment="Zoho BTEC_Classes.Start_Date"),
        sa.Column("end_date", sa.Date(), nullable=True, comment="Zoho BTEC_Classes.End_Date"),
        sa.Column(
            "class_study_mode",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Classes.Class_Study_Mode",
        ),
        sa.Column(
            "english_teaching", sa.Boolean(), nullable=True, comment="Zoho BTEC_Classes.English_Teaching"
        ),
        sa.Column(
            "ms_teams_id", sa.String(length=255), nullable=True, comment="Zoho BTEC_Classes.MS_Teams_ID"
        ),
        sa.Column(
            "moodle_class_id",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Classes.Moodle_Class_ID",
        ),
        sa.Column(
            "zoho_modified_time",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Zoho Modified_Time, when the module has it",
        ),
        sa.Column(
            "fingerprint",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the business fields (format sp1)",
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="set when Zoho reports the record deleted",
        ),
        sa.Column(
            "sync_run_id",
            sa.String(length=36),
            nullable=False,
            comment="the sync run that last wrote this row",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "zoho_id"),
        comment="One row per one class: a unit taught by a teacher in a term (a BTEC_Classes record), per tenant.",
    )
    op.create_index("ix_zoho_classes_program_id", "zoho_classes", ["tenant_id", "program_id"], unique=False)
    op.create_index("ix_zoho_classes_teacher_id", "zoho_classes", ["tenant_id", "teacher_id"], unique=False)
    op.create_index("ix_zoho_classes_unit_id", "zoho_classes", ["tenant_id", "unit_id"], unique=False)
    op.create_table(
        "zoho_enrolments",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column(
            "enrolment_number", sa.String(length=255), nullable=True, comment="Zoho BTEC_Enrollments.Name"
        ),
        sa.Column(
            "student_id",
            sa.String(length=32),
            nullable=True,
            comment="Zoho BTEC_Enrollments.Enrolled_Students",
        ),
        sa.Column("class_id", sa.String(length=32), nullable=True, comment="Zoho BTEC_Enrollments.Classes"),
        sa.Column("start_date", sa.Date(), nullable=True, comment="Zoho BTEC_Enrollments.Start_Date"),
        sa.Column("end_date", sa.Date(), nullable=True, comment="Zoho BTEC_Enrollments.End_Date"),
        sa.Column(
            "enrolment_type",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Enrollments.Enrollment_Type",
        ),
        sa.Column(
            "student_name", sa.String(length=255), nullable=True, comment="Zoho BTEC_Enrollments.Student_Name"
        ),
        sa.Column(
            "class_name", sa.String(length=255), nullable=True, comment="Zoho BTEC_Enrollments.Class_Name"
        ),
        sa.Column(
            "class_teacher",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Enrollments.Class_Teacher",
        ),
        sa.Column(
            "enrolled_programme",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Enrollments.Enrolled_Program",
        ),
        sa.Column(
            "moodle_course_id",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Enrollments.Moodle_Course_ID",
        ),
        sa.Column(
            "synced_to_moodle", sa.Boolean(), nullable=True, comment="Zoho BTEC_Enrollments.Synced_to_Moodle"
        ),
        sa.Column(
            "last_sync_date",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Zoho BTEC_Enrollments.Last_Sync_Date",
        ),
        sa.Column(
            "zoho_modified_time",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Zoho Modified_Time, when the module has it",
        ),
        sa.Column(
            "fingerprint",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the business fields (format sp1)",
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="set when Zoho reports the record deleted",
        ),
        sa.Column(
            "sync_run_id",
            sa.String(length=36),
            nullable=False,
            comment="the sync run that last wrote this row",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "zoho_id"),
        comment="One row per one student enrolled in one class (a BTEC_Enrollments record), per tenant.",
    )
    op.create_index("ix_zoho_enrolments_class_id", "zoho_enrolments", ["tenant_id", "class_id"], unique=False)
    op.create_index(
        "ix_zoho_enrolments_student_id", "zoho_enrolments", ["tenant_id", "student_id"], unique=False
    )
    op.create_table(
        "zoho_grades",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("grade_number", sa.String(length=255), nullable=True, comment="Zoho BTEC_Grades.Name"),
        sa.Column("student_id", sa.String(length=32), nullable=True, comment="Zoho BTEC_Grades.Student"),
        sa.Column("class_id", sa.String(length=32), nullable=True, comment="Zoho BTEC_Grades.Class"),
        sa.Column("grade", sa.String(length=255), nullable=True, comment="Zoho BTEC_Grades.Grade"),
        sa.Column(
            "grade_status", sa.String(length=255), nullable=True, comment="Zoho BTEC_Grades.Grade_Status"
        ),
        sa.Column(
            "btec_grade_name",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Grades.BTEC_Grade_Name",
        ),
        sa.Column("btec_unit", sa.String(length=255), nullable=True, comment="Zoho BTEC_Grades.BTEC_Unit"),
        sa.Column(
            "attempt_number", sa.BigInteger(), nullable=True, comment="Zoho BTEC_Grades.Attempt_Number"
        ),
        sa.Column("attempt_date", sa.Date(), nullable=True, comment="Zoho BTEC_Grades.Attempt_Date"),
        sa.Column("feedback", sa.Text(), nullable=True, comment="Zoho BTEC_Grades.Feedback"),
        sa.Column(
            "grader_name", sa.String(length=255), nullable=True, comment="Zoho BTEC_Grades.Grader_Name"
        ),
        sa.Column("iv_name", sa.String(length=255), nullable=True, comment="Zoho BTEC_Grades.IV_Name"),
        sa.Column(
            "moodle_grade_id",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Grades.Moodle_Grade_ID",
        ),
        sa.Column(
            "moodle_grade_composite_key",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Grades.Moodle_Grade_Composite_Key",
        ),
        sa.Column(
            "zoho_modified_time",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Zoho Modified_Time, when the module has it",
        ),
        sa.Column(
            "fingerprint",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the business fields (format sp1)",
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="set when Zoho reports the record deleted",
        ),
        sa.Column(
            "sync_run_id",
            sa.String(length=36),
            nullable=False,
            comment="the sync run that last wrote this row",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "zoho_id"),
        comment="One row per one BTEC grade of a student in a class (a BTEC_Grades record), per tenant.",
    )
    op.create_index("ix_zoho_grades_class_id", "zoho_grades", ["tenant_id", "class_id"], unique=False)
    op.create_index("ix_zoho_grades_student_id", "zoho_grades", ["tenant_id", "student_id"], unique=False)
    op.create_table(
        "zoho_payments",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("payment_number", sa.String(length=255), nullable=True, comment="Zoho BTEC_Payments.Name"),
        sa.Column("student_id", sa.String(length=32), nullable=True, comment="Zoho BTEC_Payments.Student_ID"),
        sa.Column(
            "registration_id",
            sa.String(length=32),
            nullable=True,
            comment="Zoho BTEC_Payments.Registration_ID",
        ),
        sa.Column("payment_amount", sa.Float(), nullable=True, comment="Zoho BTEC_Payments.Payment_Amount"),
        sa.Column("currency", sa.String(length=255), nullable=True, comment="Zoho BTEC_Payments.Currency"),
        sa.Column("payment_date", sa.Date(), nullable=True, comment="Zoho BTEC_Payments.Payment_Date"),
        sa.Column(
            "payment_method",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Payments.Payment_Method",
        ),
        sa.Column(
            "payment_type", sa.String(length=255), nullable=True, comment="Zoho BTEC_Payments.Payment_Type"
        ),
        sa.Column(
            "instalment_no", sa.BigInteger(), nullable=True, comment="Zoho BTEC_Payments.Installment_No"
        ),
        sa.Column(
            "voucher_number",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Payments.SRM_Voucher_Number",
        ),
        sa.Column(
            "zoho_modified_time",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Zoho Modified_Time, when the module has it",
        ),
        sa.Column(
            "fingerprint",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the business fields (format sp1)",
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="set when Zoho reports the record deleted",
        ),
        sa.Column(
            "sync_run_id",
            sa.String(length=36),
            nullable=False,
            comment="the sync run that last wrote this row",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "zoho_id"),
        comment="One row per one payment, or instalment, against a registration (a BTEC_Payments record), per tenant.",
    )
    op.create_index(
        "ix_zoho_payments_registration_id", "zoho_payments", ["tenant_id", "registration_id"], unique=False
    )
    op.create_index("ix_zoho_payments_student_id", "zoho_payments", ["tenant_id", "student_id"], unique=False)
    op.create_table(
        "zoho_programmes",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("product_name", sa.String(length=255), nullable=True, comment="Zoho Products.Product_Name"),
        sa.Column("program_id", sa.String(length=255), nullable=True, comment="Zoho Products.Program_ID"),
        sa.Column("status", sa.String(length=255), nullable=True, comment="Zoho Products.Status"),
        sa.Column("program_type", sa.String(length=255), nullable=True, comment="Zoho Products.Program_Type"),
        sa.Column(
            "program_major", sa.String(length=255), nullable=True, comment="Zoho Products.Program_Major"
        ),
        sa.Column(
            "program_sub_major",
            sa.String(length=255),
            nullable=True,
            comment="Zoho Products.Program_Sub_Major",
        ),
        sa.Column(
            "product_sub_category",
            sa.String(length=255),
            nullable=True,
            comment="Zoho Products.Product_Sub_Category",
        ),
        sa.Column("unit_price", sa.Float(), nullable=True, comment="Zoho Products.Unit_Price"),
        sa.Column("program_price", sa.Float(), nullable=True, comment="Zoho Products.Program_Price"),
        sa.Column("description", sa.Text(), nullable=True, comment="Zoho Products.Description"),
        sa.Column("moodleid", sa.String(length=255), nullable=True, comment="Zoho Products.MoodleID"),
        sa.Column(
            "zoho_modified_time",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Zoho Modified_Time, when the module has it",
        ),
        sa.Column(
            "fingerprint",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the business fields (format sp1)",
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="set when Zoho reports the record deleted",
        ),
        sa.Column(
            "sync_run_id",
            sa.String(length=36),
            nullable=False,
            comment="the sync run that last wrote this row",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "zoho_id"),
        comment="One row per one programme of study (a record of the standard Products module), per tenant.",
    )
    op.create_table(
        "zoho_registrations",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column(
            "registration_number",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Registrations.Name",
        ),
        sa.Column(
            "student_id", sa.String(length=32), nullable=True, comment="Zoho BTEC_Registrations.Student_ID"
        ),
        sa.Column(
            "program_id", sa.String(length=32), nullable=True, comment="Zoho BTEC_Registrations.Program"
        ),
        sa.Column(
            "registration_date", sa.Date(), nullable=True, comment="Zoho BTEC_Registrations.Registration_Date"
        ),
        sa.Column(
            "registration_status",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Registrations.Registration_Status",
        ),
        sa.Column(
            "study_mode", sa.String(length=255), nullable=True, comment="Zoho BTEC_Registrations.Study_Mode"
        ),
        sa.Column(
            "study_language",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Registrations.Study_Language",
        ),
        sa.Column("intake", sa.String(length=255), nullable=True, comment="Zoho BTEC_Registrations.Intake"),
        sa.Column(
            "currency", sa.String(length=255), nullable=True, comment="Zoho BTEC_Registrations.Currency"
        ),
        sa.Column(
            "program_price",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Registrations.Program_Price",
        ),
        sa.Column("discount", sa.Boolean(), nullable=True, comment="Zoho BTEC_Registrations.Discount"),
        sa.Column(
            "discount_percentage",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Registrations.Discount_Percentage",
        ),
        sa.Column(
            "remaining_amount",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Registrations.Remaining_Amount",
        ),
        sa.Column(
            "btec_reg_no", sa.String(length=255), nullable=True, comment="Zoho BTEC_Registrations.BTEC_Reg_No"
        ),
        sa.Column(
            "synced_to_moodle",
            sa.Boolean(),
            nullable=True,
            comment="Zoho BTEC_Registrations.Synced_to_Moodle",
        ),
        sa.Column(
            "last_sync_date",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Zoho BTEC_Registrations.Last_Sync_Date",
        ),
        sa.Column(
            "zoho_modified_time",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Zoho Modified_Time, when the module has it",
        ),
        sa.Column(
            "fingerprint",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the business fields (format sp1)",
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="set when Zoho reports the record deleted",
        ),
        sa.Column(
            "sync_run_id",
            sa.String(length=36),
            nullable=False,
            comment="the sync run that last wrote this row",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "zoho_id"),
        comment="One row per one student's registration on a programme (a BTEC_Registrations record), per tenant.",
    )
    op.create_index(
        "ix_zoho_registrations_program_id", "zoho_registrations", ["tenant_id", "program_id"], unique=False
    )
    op.create_index(
        "ix_zoho_registrations_student_id", "zoho_registrations", ["tenant_id", "student_id"], unique=False
    )
    op.create_table(
        "zoho_students",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("student_number", sa.String(length=255), nullable=True, comment="Zoho BTEC_Students.Name"),
        sa.Column(
            "first_name", sa.String(length=255), nullable=True, comment="Zoho BTEC_Students.First_Name"
        ),
        sa.Column("last_name", sa.String(length=255), nullable=True, comment="Zoho BTEC_Students.Last_Name"),
        sa.Column(
            "first_name_native",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Students.Frist_Name_Native",
        ),
        sa.Column(
            "last_name_native",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Students.Last_Name_Native",
        ),
        sa.Column("email", sa.String(length=255), nullable=True, comment="Zoho BTEC_Students.Email"),
        sa.Column(
            "academic_email",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Students.Academic_Email",
        ),
        sa.Column(
            "phone_number", sa.String(length=255), nullable=True, comment="Zoho BTEC_Students.Phone_Number"
        ),
        sa.Column("birth_date", sa.Date(), nullable=True, comment="Zoho BTEC_Students.Birth_Date"),
        sa.Column("gender", sa.String(length=255), nullable=True, comment="Zoho BTEC_Students.Gender"),
        sa.Column(
            "nationality", sa.String(length=255), nullable=True, comment="Zoho BTEC_Students.Nationality"
        ),
        sa.Column("country", sa.String(length=255), nullable=True, comment="Zoho BTEC_Students.Country"),
        sa.Column("city", sa.String(length=255), nullable=True, comment="Zoho BTEC_Students.City"),
        sa.Column("status", sa.String(length=255), nullable=True, comment="Zoho BTEC_Students.Status"),
        sa.Column(
            "study_mode", sa.String(length=255), nullable=True, comment="Zoho BTEC_Students.Study_Mode"
        ),
        sa.Column(
            "study_language",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Students.Study_Language",
        ),
        sa.Column(
            "academic_program",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Students.Academic_Program",
        ),
        sa.Column("major", sa.String(length=255), nullable=True, comment="Zoho BTEC_Students.Major"),
        sa.Column("sub_major", sa.String(length=255), nullable=True, comment="Zoho BTEC_Students.Sub_Major"),
        sa.Column(
            "registration_date", sa.Date(), nullable=True, comment="Zoho BTEC_Students.Registration_Date"
        ),
        sa.Column(
            "btec_registration_number",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Students.BTEC_Registration_Number",
        ),
        sa.Column("program_id", sa.String(length=32), nullable=True, comment="Zoho BTEC_Students.Program"),
        sa.Column(
            "student_moodle_id",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Students.Student_Moodle_ID",
        ),
        sa.Column(
            "synced_to_moodle", sa.Boolean(), nullable=True, comment="Zoho BTEC_Students.Synced_to_Moodle"
        ),
        sa.Column(
            "last_sync_date",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Zoho BTEC_Students.Last_Sync_Date",
        ),
        sa.Column(
            "zoho_modified_time",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Zoho Modified_Time, when the module has it",
        ),
        sa.Column(
            "fingerprint",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the business fields (format sp1)",
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="set when Zoho reports the record deleted",
        ),
        sa.Column(
            "sync_run_id",
            sa.String(length=36),
            nullable=False,
            comment="the sync run that last wrote this row",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "zoho_id"),
        comment="One row per one student of the school (a BTEC_Students record), per tenant.",
    )
    op.create_index("ix_zoho_students_program_id", "zoho_students", ["tenant_id", "program_id"], unique=False)
    op.create_table(
        "zoho_teachers",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True, comment="Zoho BTEC_Teachers.Name"),
        sa.Column("email", sa.String(length=255), nullable=True, comment="Zoho BTEC_Teachers.Email"),
        sa.Column(
            "academic_email",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Teachers.Academic_Email",
        ),
        sa.Column(
            "phone_number", sa.String(length=255), nullable=True, comment="Zoho BTEC_Teachers.Phone_Number"
        ),
        sa.Column(
            "teacher_moodle_id",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC_Teachers.Teacher_Moodle_ID",
        ),
        sa.Column(
            "zoho_modified_time",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Zoho Modified_Time, when the module has it",
        ),
        sa.Column(
            "fingerprint",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the business fields (format sp1)",
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="set when Zoho reports the record deleted",
        ),
        sa.Column(
            "sync_run_id",
            sa.String(length=36),
            nullable=False,
            comment="the sync run that last wrote this row",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "zoho_id"),
        comment="One row per one teacher (a BTEC_Teachers record), per tenant.",
    )
    op.create_table(
        "zoho_units",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True, comment="Zoho BTEC.Name"),
        sa.Column("unit_code", sa.String(length=255), nullable=True, comment="Zoho BTEC.Unit_Code"),
        sa.Column("unit_number", sa.String(length=255), nullable=True, comment="Zoho BTEC.Unit_Number"),
        sa.Column("unit_credit", sa.String(length=255), nullable=True, comment="Zoho BTEC.Unit_Credit"),
        sa.Column("unit_level", sa.String(length=255), nullable=True, comment="Zoho BTEC.Unit_Level"),
        sa.Column("unit_major", sa.String(length=255), nullable=True, comment="Zoho BTEC.Unit_Major"),
        sa.Column("service_type", sa.String(length=255), nullable=True, comment="Zoho BTEC.Service_Type"),
        sa.Column(
            "moodle_grading_template",
            sa.String(length=255),
            nullable=True,
            comment="Zoho BTEC.Moodle_Grading_Template",
        ),
        sa.Column("program_id", sa.String(length=32), nullable=True, comment="Zoho BTEC.Program"),
        sa.Column(
            "last_sync_with_moodle",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Zoho BTEC.Last_Sync_with_Moodle",
        ),
        sa.Column(
            "zoho_modified_time",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="Zoho Modified_Time, when the module has it",
        ),
        sa.Column(
            "fingerprint",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the business fields (format sp1)",
        ),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="set when Zoho reports the record deleted",
        ),
        sa.Column(
            "sync_run_id",
            sa.String(length=36),
            nullable=False,
            comment="the sync run that last wrote this row",
        ),
        sa.PrimaryKeyConstraint("tenant_id", "zoho_id"),
        comment="One row per one BTEC unit (a record of the custom module BTEC), per tenant.",
    )
    op.create_index("ix_zoho_units_program_id", "zoho_units", ["tenant_id", "program_id"], unique=False)
    op.create_table(
        "zoho_writeback_state",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("module", sa.String(length=64), nullable=False),
        sa.Column("zoho_id", sa.String(length=32), nullable=False),
        sa.Column(
            "fingerprint", sa.String(length=64), nullable=False, comment="SHA-256 of the fields last written"
        ),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "module", "zoho_id"),
        comment="Sync bookkeeping last written back to each Zoho record.",
    )


def downgrade() -> None:
    raise NotImplementedError("the baseline is not reversible: drop the database instead")
