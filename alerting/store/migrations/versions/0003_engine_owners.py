"""engine owners with heartbeats and slots; inbound reports already seen

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import alerting.store.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "engine_owner",
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("node", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("live_slot", sa.Integer(), nullable=True),
        sa.Column("host", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("pid_started", sa.BigInteger(), nullable=True),
        sa.Column("started_at", alerting.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("beat_at", alerting.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", alerting.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("owner"),
        sa.UniqueConstraint("node", "live_slot", name="uq_engine_owner_live_slot"),
    )
    op.create_table(
        "inbound_seen",
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("at", alerting.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("inbound_seen")
    op.drop_table("engine_owner")
