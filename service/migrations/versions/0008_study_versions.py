"""A change counter per study (`as_studies.version`), kept by the database itself.

Every write that changes what a read of a study shows bumps its study's `version`: the study
row's own fields, its runs' results and states, its complete trainings. The API builds its
ETags from it (service.api.etag), so a poll of an unchanged study costs one indexed read and
answers 304 without a body. Triggers, not the store's code, keep the counter, so no writer (a
worker, the API, a campaign, a manual fix in psql) can forget it.

What does not bump it: heartbeats (a running trial's `heartbeat_at` and live `progress`) and a
running trial's epoch count. They change every few seconds per worker; the routes that show
them add the running trials' heartbeats to their ETag instead (one index range scan).

The bump is an UPDATE of the study row inside the writing transaction, so it commits with the
change it counts and two writers of one study take their numbers in commit order: a reader that
sees version N sees every change counted up to N. On PostgreSQL the triggers on runs and
trainings are statement-level, with transition tables: a bulk insert of 100,000 runs bumps its
study once, not 100,000 times. SQLite has only row triggers.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Run columns a read shows (record, config and log_tail change only with state or trial_number).
RUN_COLUMNS = (
    "study_id", "trial_number", "attempt", "retry_of", "state", "counts_budget",
    "failure_reason", "failure_message", "failure_epoch", "family", "params", "worker_id",
    "started_at", "finished_at", "value", "test_acc", "value_std", "duration_s", "img_per_s",
    "peak_mem_bytes", "reused_from_run",
)  # fmt: skip
TRAINING_COLUMNS = ("study_id", "key", "family", "state", "val_acc", "test_acc")
STUDY_COLUMNS = (
    "name", "description", "owner_id", "status", "priority", "n_trials", "error", "updated_at",
    "started_at", "finished_at", "confirms_study_id", "campaign_id", "stage", "stage_model",
)  # fmt: skip
TABLES = ("as_runs", "as_trainings")
EVENTS = ("insert", "update", "delete")


def _changed(columns: tuple[str, ...], old: str, new: str, distinct: str) -> str:
    return " OR ".join(f"{new}.{c} {distinct} {old}.{c}" for c in columns)


# -- PostgreSQL ---------------------------------------------------------------------------------
def _pg_runs_changed() -> str:
    # epochs_done of a running trial is live progress (its heartbeat shows it); of an ended one
    # (a late report after a reap) it is a result.
    return (
        f"{_changed(RUN_COLUMNS, 'o', 'n', 'IS DISTINCT FROM')} OR "
        "(n.state <> 'running' AND n.epochs_done IS DISTINCT FROM o.epochs_done)"
    )


def _pg_trainings_changed() -> str:
    columns = _changed(TRAINING_COLUMNS, "o", "n", "IS DISTINCT FROM")
    return f"(o.state = 'complete' OR n.state = 'complete') AND ({columns})"


PG_ROWS_WHERE = {"as_runs": "TRUE", "as_trainings": "state = 'complete'"}


def _pg_function(table: str, changed: str) -> str:
    rows_where = PG_ROWS_WHERE[table]
    return f"""
CREATE FUNCTION {table}_bump_study_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    UPDATE as_studies SET version = version + 1
     WHERE id IN (SELECT study_id FROM new_rows WHERE {rows_where});
  ELSIF TG_OP = 'DELETE' THEN
    UPDATE as_studies SET version = version + 1
     WHERE id IN (SELECT study_id FROM old_rows WHERE {rows_where});
  ELSE
    UPDATE as_studies SET version = version + 1
     WHERE id IN (SELECT n.study_id FROM new_rows n JOIN old_rows o ON o.id = n.id
                   WHERE {changed}
                  UNION SELECT o.study_id FROM new_rows n JOIN old_rows o ON o.id = n.id
                   WHERE n.study_id IS DISTINCT FROM o.study_id);
  END IF;
  RETURN NULL;
END $$"""


PG_STUDY_FUNCTION = f"""
CREATE FUNCTION as_studies_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.version = OLD.version AND (
      {_changed(STUDY_COLUMNS, "OLD", "NEW", "IS DISTINCT FROM")}
      OR NEW.spec::text IS DISTINCT FROM OLD.spec::text) THEN
    NEW.version := OLD.version + 1;
  END IF;
  RETURN NEW;
END $$"""


def _pg_triggers(table: str) -> list[str]:
    referencing = {
        "insert": "REFERENCING NEW TABLE AS new_rows",
        "update": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "delete": "REFERENCING OLD TABLE AS old_rows",
    }
    return [
        f"CREATE TRIGGER {table}_version_{event} AFTER {event.upper()} ON {table} "
        f"{referencing[event]} FOR EACH STATEMENT EXECUTE FUNCTION {table}_bump_study_version()"
        for event in EVENTS
    ]


def _pg_upgrade() -> None:
    op.execute(_pg_function("as_runs", _pg_runs_changed()))
    op.execute(_pg_function("as_trainings", _pg_trainings_changed()))
    op.execute(PG_STUDY_FUNCTION)
    for table in TABLES:
        for statement in _pg_triggers(table):
            op.execute(statement)
    # Only a change a read shows: a claim's last_claim_at alone (idle workers asking a study
    # whose budget is spent, every few seconds) leaves the version as it is.
    op.execute(
        "CREATE TRIGGER as_studies_version BEFORE UPDATE ON as_studies "
        "FOR EACH ROW EXECUTE FUNCTION as_studies_bump_version()"
    )


def _pg_downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS as_studies_version ON as_studies")
    for table in TABLES:
        for event in EVENTS:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_version_{event} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {table}_bump_study_version()")
    op.execute("DROP FUNCTION IF EXISTS as_studies_bump_version()")


# -- SQLite -------------------------------------------------------------------------------------
SQLITE_WHEN = {
    "as_runs": (
        f"{_changed(RUN_COLUMNS, 'OLD', 'NEW', 'IS NOT')} OR "
        "(NEW.state <> 'running' AND NEW.epochs_done IS NOT OLD.epochs_done)"
    ),
    "as_trainings": (
        "(OLD.state = 'complete' OR NEW.state = 'complete') AND "
        f"({_changed(TRAINING_COLUMNS, 'OLD', 'NEW', 'IS NOT')})"
    ),
}
SQLITE_ROW_WHEN = {"as_runs": "", "as_trainings": "WHEN {row}.state = 'complete'"}


def _sqlite_triggers(table: str) -> list[str]:
    bump = "UPDATE as_studies SET version = version + 1 WHERE id IN ({ids});"
    row_when = SQLITE_ROW_WHEN[table]
    return [
        f"CREATE TRIGGER {table}_version_insert AFTER INSERT ON {table} "
        f"{row_when.format(row='NEW')} BEGIN {bump.format(ids='NEW.study_id')} END",
        f"CREATE TRIGGER {table}_version_delete AFTER DELETE ON {table} "
        f"{row_when.format(row='OLD')} BEGIN {bump.format(ids='OLD.study_id')} END",
        f"CREATE TRIGGER {table}_version_update AFTER UPDATE ON {table} "
        f"WHEN {SQLITE_WHEN[table]} BEGIN {bump.format(ids='OLD.study_id, NEW.study_id')} END",
    ]


SQLITE_STUDY_TRIGGER = f"""
CREATE TRIGGER as_studies_version AFTER UPDATE ON as_studies
WHEN NEW.version IS OLD.version AND (
  {_changed(STUDY_COLUMNS, "OLD", "NEW", "IS NOT")} OR NEW.spec IS NOT OLD.spec)
BEGIN UPDATE as_studies SET version = version + 1 WHERE id = NEW.id; END"""


def _sqlite_upgrade() -> None:
    for table in TABLES:
        for statement in _sqlite_triggers(table):
            op.execute(statement)
    op.execute(SQLITE_STUDY_TRIGGER)


def _sqlite_downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS as_studies_version")
    for table in TABLES:
        for event in EVENTS:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_version_{event}")


# -- both ---------------------------------------------------------------------------------------
def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    op.add_column(
        "as_studies",
        sa.Column("version", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )
    if _sqlite():
        _sqlite_upgrade()
    else:
        _pg_upgrade()


def downgrade() -> None:
    if _sqlite():
        _sqlite_downgrade()
    else:
        _pg_downgrade()
    with op.batch_alter_table("as_studies") as batch:
        batch.drop_column("version")
