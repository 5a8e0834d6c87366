"""Units are read in full once more, so that their criteria descriptions are stored.

Revision ID: 0003_units_criteria_reread
Revises: 0002_mirror_reread
Create Date: 2026-12-07

The unit module (``BTEC``) now mirrors ``P1_description`` … ``D6_description``, the unit's BTEC
criteria. A unit that did not change in Zoho is never returned by an incremental read, so its new
columns would stay empty: the units' read position is forgotten, and the next sync of the module is
a first, full read (each unit shows as UPDATED once, with its criteria).

Data only: the new columns come from the table-driven part of the upgrade.
"""

from collections.abc import Sequence

from alembic import op

from sync_pipelines.warehouse.migrations.helpers import has_table

# revision identifiers, used by Alembic.
revision: str = "0003_units_criteria_reread"
down_revision: str | Sequence[str] | None = "0002_mirror_reread"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if has_table("sync_cursors"):
        op.execute("DELETE FROM sync_cursors WHERE module = 'units'")


def downgrade() -> None:
    raise NotImplementedError("the warehouse is not downgraded")
