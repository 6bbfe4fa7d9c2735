"""deliveries remember when they were handed to the provider; alerts say when grid workers are still to be planned

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import alerting.store.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handed_at", alerting.store.types.UTCDateTime(timezone=True), nullable=True))
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.add_column(sa.Column("planning_pending", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.drop_column("planning_pending")
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        batch_op.drop_column("handed_at")
