"""CAP messages taken in, kept verbatim, one per (sender, identifier), linked to the alert they issued

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 03:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import alerting.store.types

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cap_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sender", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("identifier", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("sent", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("msg_type", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", alerting.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_by", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alert.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sender", "identifier", name="uq_cap_message_sender_identifier"),
    )
    op.create_index(op.f("ix_cap_message_alert_id"), "cap_message", ["alert_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_cap_message_alert_id"), table_name="cap_message")
    op.drop_table("cap_message")
