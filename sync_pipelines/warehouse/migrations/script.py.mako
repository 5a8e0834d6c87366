"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Guard every step (see sync_pipelines/warehouse/migrations/__init__.py): this runs on warehouses of
every age, each with the tables of the code that last upgraded it.
"""

from collections.abc import Sequence

import sqlalchemy as sa  # noqa: F401
from alembic import op

from sync_pipelines.warehouse.migrations.helpers import has_column, has_index, has_table  # noqa: F401
${imports if imports else ""}

# revision identifiers, used by Alembic.
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else 'raise NotImplementedError("the warehouse is not downgraded")'}
