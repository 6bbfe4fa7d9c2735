"""issue_request: Idempotency-Keys and the console's one-time form tokens, one alert per (caller, key)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 03:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import alerting.store.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "issue_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("caller", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.Column("issued", sa.JSON(), nullable=True),
        sa.Column("created_at", alerting.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", alerting.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["alert_id"], ["alert.id"]),
        sa.PrimaryKeyConstraint("id"),
        # what makes two requests with one key issue one alert, on SQLite and PostgreSQL alike
        sa.UniqueConstraint("caller", "key", name="uq_issue_request_caller_key"),
    )
    op.create_index("ix_issue_request_expires_at", "issue_request", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_issue_request_expires_at", table_name="issue_request")
    op.drop_table("issue_request")
