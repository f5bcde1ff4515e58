"""PostgreSQL bumps a study's change counter once per transaction, at its commit.

Migration 0008's triggers on as_runs and as_trainings bumped `as_studies.version` by an UPDATE
of the study row right after each statement, so every transaction of a worker (attach, finish,
the training's record) locked its study's row from its first write to its commit, and every
worker of one study queued on that one row: at 16 workers `Lock:transactionid` was the top wait
and trials/s halved (bench/results/claim_scale-notes.md).

Now the triggers on those tables are deferred constraint triggers: the bump runs when the
transaction commits, once per study per transaction (a transaction-local setting remembers
which studies it bumped), so the row is locked only for the commit itself. What counts as a
change is 0008's rule, unchanged; a bulk insert of 100,000 runs still bumps its study once. Two
writers still take their numbers in commit order, in the transaction of the change they count,
so a reader that sees version N sees every change counted up to N.

SQLite is left as it was: its one writer at a time holds the whole database anyway.

Revision ID: 0010
Revises: 0009
"""

import importlib

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

v8 = importlib.import_module("service.migrations.versions.0008_study_versions")

BUMP_ONCE = """
CREATE FUNCTION as_bump_study_version_once(study integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  done text := 'actsearch.version_bumped_' || study;
BEGIN
  -- set_config(..., true) lasts until the transaction ends: one bump per study and transaction.
  IF current_setting(done, true) IS DISTINCT FROM '1' THEN
    PERFORM set_config(done, '1', true);
    UPDATE as_studies SET version = version + 1 WHERE id = study;
  END IF;
END $$"""

AT_COMMIT = """
CREATE FUNCTION as_bump_study_version_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'DELETE' THEN
    PERFORM as_bump_study_version_once(NEW.study_id);
  END IF;
  IF TG_OP <> 'INSERT' THEN
    PERFORM as_bump_study_version_once(OLD.study_id);
  END IF;
  RETURN NULL;
END $$"""

# When a row's change is one a read shows: 0008's rule, as a row trigger's WHEN.
WHEN = {
    ("as_runs", "insert"): "TRUE",
    ("as_runs", "delete"): "TRUE",
    ("as_runs", "update"): (
        f"{v8._changed(v8.RUN_COLUMNS, 'OLD', 'NEW', 'IS DISTINCT FROM')} OR "
        "(NEW.state <> 'running' AND NEW.epochs_done IS DISTINCT FROM OLD.epochs_done)"
    ),
    ("as_trainings", "insert"): "NEW.state = 'complete'",
    ("as_trainings", "delete"): "OLD.state = 'complete'",
    ("as_trainings", "update"): (
        "(OLD.state = 'complete' OR NEW.state = 'complete') AND "
        f"({v8._changed(v8.TRAINING_COLUMNS, 'OLD', 'NEW', 'IS DISTINCT FROM')})"
    ),
}


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def _drop_0008_triggers() -> None:
    for table in v8.TABLES:
        for event in v8.EVENTS:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_version_{event} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {table}_bump_study_version()")


def _create_0008_triggers() -> None:
    op.execute(v8._pg_function("as_runs", v8._pg_runs_changed()))
    op.execute(v8._pg_function("as_trainings", v8._pg_trainings_changed()))
    for table in v8.TABLES:
        for statement in v8._pg_triggers(table):
            op.execute(statement)


def upgrade() -> None:
    if _sqlite():
        return
    _drop_0008_triggers()
    op.execute(BUMP_ONCE)
    op.execute(AT_COMMIT)
    for (table, event), when in WHEN.items():
        op.execute(
            f"CREATE CONSTRAINT TRIGGER {table}_version_{event} AFTER {event.upper()} ON {table} "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ({when}) "
            "EXECUTE FUNCTION as_bump_study_version_at_commit()"
        )


def downgrade() -> None:
    if _sqlite():
        return
    for table, event in WHEN:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_version_{event} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS as_bump_study_version_at_commit()")
    op.execute("DROP FUNCTION IF EXISTS as_bump_study_version_once(integer)")
    _create_0008_triggers()
