"""an alert's audit events indexed by (alert_id, seq): its latest event, which keys its cached report, in one probe

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 01:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # the new index serves every lookup by alert_id the old one did, so the old one goes (one index less to write
    # on every audit append)
    op.create_index("ix_audit_event_alert_seq", "audit_event", ["alert_id", "seq"], unique=False)
    op.drop_index("ix_audit_event_alert_id", table_name="audit_event")


def downgrade() -> None:
    op.create_index("ix_audit_event_alert_id", "audit_event", ["alert_id"], unique=False)
    op.drop_index("ix_audit_event_alert_seq", table_name="audit_event")
