"""The mirror: every module is read in full once more, so that what an earlier version held back
is stored.

Revision ID: 0002_mirror_reread
Revises: 0001_baseline
Create Date: 2026-12-03

Until this revision the warehouse withheld records that broke a validation rule (INVALID) and,
unless they waited in ``sync_pending``, never stored them; an incremental read never returns them
again (they did not change in Zoho). From here on every record is stored with its findings. The
read positions are forgotten, so that the next sync of each module is a first, full read: it
stores every record Zoho holds, gives every row its ``aux_fingerprint`` and findings, and confirms
by id each stored record it does not return before marking it DELETED. Records waiting in
``sync_pending`` are stored by that read too.

Data only: the new columns (``findings``, ``aux_fingerprint``, ``sync_results.change``…) and the
subform tables come from the table-driven part of the upgrade.
"""

from collections.abc import Sequence

from alembic import op

from sync_pipelines.warehouse.migrations.helpers import has_table

# revision identifiers, used by Alembic.
revision: str = "0002_mirror_reread"
down_revision: str | Sequence[str] | None = "0001_baseline"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if has_table("sync_cursors"):
        op.execute("DELETE FROM sync_cursors")


def downgrade() -> None:
    raise NotImplementedError("the warehouse is not downgraded")
