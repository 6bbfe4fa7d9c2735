"""the audit is append-only in the database itself: triggers refuse UPDATE and DELETE, and rows name their key

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 03:05:00

Rows already written keep key_id NULL: they were hashed with plain SHA-256 and verify reports them as such. The
first row written after the upgrade is keyed and links to the last of them, so from then on the whole chain before
it is sealed by the key too. audit_head is still updated on every append (it serialises writers and says where
the chain ends), so its trigger lets it move only forward, and only to the hash of a row that is there.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HEAD_MOVES_BACK = """
    NEW.id <> OLD.id
    OR NEW.seq < OLD.seq
    OR (NEW.seq = OLD.seq AND NEW.hash IS {distinct} OLD.hash)
    OR (NEW.seq > OLD.seq AND NEW.hash IS {distinct} (SELECT hash FROM audit_event WHERE seq = NEW.seq))
"""
_HEAD_MESSAGE = "audit_head only moves forward, to the hash of a row in audit_event"

SQLITE = [
    """CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event
       BEGIN SELECT RAISE(ABORT, 'the audit is append-only: UPDATE on audit_event refused'); END""",
    """CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event
       BEGIN SELECT RAISE(ABORT, 'the audit is append-only: DELETE on audit_event refused'); END""",
    f"""CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head
       WHEN {_HEAD_MOVES_BACK.format(distinct="NOT")}
       BEGIN SELECT RAISE(ABORT, '{_HEAD_MESSAGE}'); END""",
    """CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
       BEGIN SELECT RAISE(ABORT, 'the audit is append-only: DELETE on audit_head refused'); END""",
]
SQLITE_DROP = ["audit_event_no_update", "audit_event_no_delete", "audit_head_forward_only", "audit_head_no_delete"]

# no % in the messages and no :name anywhere: the statements go through SQLAlchemy's text() on every driver
POSTGRESQL = [
    """CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $body$
       BEGIN
         RAISE EXCEPTION USING MESSAGE = 'the audit is append-only: ' || TG_OP || ' on ' || TG_TABLE_NAME || ' refused';
       END
       $body$""",
    f"""CREATE FUNCTION audit_head_forward_only() RETURNS trigger LANGUAGE plpgsql AS $body$
       BEGIN
         IF {_HEAD_MOVES_BACK.format(distinct="DISTINCT FROM")} THEN
           RAISE EXCEPTION USING MESSAGE = '{_HEAD_MESSAGE}';
         END IF;
         RETURN NEW;
       END
       $body$""",
    """CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event
       FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()""",
    """CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
       FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()""",
    """CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head
       FOR EACH ROW EXECUTE FUNCTION audit_head_forward_only()""",
    """CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
       FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()""",
    """CREATE TRIGGER audit_head_no_truncate BEFORE TRUNCATE ON audit_head
       FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()""",
]
POSTGRESQL_DROP = [
    "DROP TRIGGER audit_event_append_only ON audit_event",
    "DROP TRIGGER audit_event_no_truncate ON audit_event",
    "DROP TRIGGER audit_head_forward_only ON audit_head",
    "DROP TRIGGER audit_head_no_delete ON audit_head",
    "DROP TRIGGER audit_head_no_truncate ON audit_head",
    "DROP FUNCTION audit_head_forward_only()",
    "DROP FUNCTION audit_refuse_change()",
]


def upgrade() -> None:
    op.add_column("audit_event", sa.Column("key_id", sa.String(length=16), nullable=True))
    for statement in SQLITE if op.get_bind().dialect.name == "sqlite" else POSTGRESQL:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in SQLITE_DROP:
            op.execute(f"DROP TRIGGER {name}")
    else:
        for statement in POSTGRESQL_DROP:
            op.execute(statement)
    with op.batch_alter_table("audit_event") as batch_op:
        batch_op.drop_column("key_id")
