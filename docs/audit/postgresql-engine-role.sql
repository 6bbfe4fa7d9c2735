-- The engine's PostgreSQL role: everything it needs, and no way to change the audit behind the chain's back.
--
-- Run as the role that owns the tables (the one `jiaoying init` ran the migrations as), in the county's database,
-- after `jiaoying init` and again after every upgrade that adds tables:
--     psql "$OWNER_URL" -v ON_ERROR_STOP=1 -f docs/audit/postgresql-engine-role.sql
-- Create the role itself once, beforehand:  CREATE ROLE jiaoying_engine LOGIN PASSWORD '...';
-- Then run `jiaoying serve` and `jiaoying engine run` with JIAOYING_DATABASE_URL naming jiaoying_engine.
--
-- Not owning the tables, the engine cannot drop or disable the audit's triggers (DROP TRIGGER and
-- ALTER TABLE ... DISABLE TRIGGER need the owner); without these grants it cannot UPDATE, DELETE or TRUNCATE
-- the audit even if someone did. The head (audit_head) must still move on every append, so the engine may update
-- its two columns, and the trigger lets it move only forward, to the hash of a row that is there.
-- Both are tested in tests/alerting/audit/test_postgresql_role.py.

GRANT USAGE ON SCHEMA public TO jiaoying_engine;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO jiaoying_engine;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO jiaoying_engine;

-- the audit's rows are only ever added
REVOKE UPDATE, DELETE, TRUNCATE ON audit_event FROM jiaoying_engine;
-- the chain's end: moved forward on every append, never added to or removed
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_head FROM jiaoying_engine;
GRANT UPDATE (seq, hash) ON audit_head TO jiaoying_engine;
-- which migrations ran is the owner's to say; the engine's start-up upgrade only reads it
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM jiaoying_engine;
