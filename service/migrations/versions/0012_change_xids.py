"""Which transaction last changed what a leaderboard reads of a run or a training (PostgreSQL).

A study's leaderboard at 100,000 trials read every run and training on each change (~120 ms of
SQL on the 2-core VM, bench/results/api_latency-notes.md). A server process now keeps each
study's facts in memory (service.store.queries.board_facts) and, on the next change, reads only
the rows changed since: `changed_xid` is the 64-bit id of the transaction that inserted the row
or last changed one of the columns it reads (a BEFORE trigger sets it: no writer can forget
it, and the row is written once as before), indexed by study. Rows stored before this revision
keep NULL: a process reads every row of a study once, before it reads changes.

Why transaction ids and not a sequence or a clock: a reader takes the oldest transaction still
running (`pg_snapshot_xmin`) before it reads; every transaction it could not see yet has an id
at least that, so the next read of `changed_xid >= that` misses nothing, whatever order the
writers commit in. SQLite gets the columns (unused: its leaderboard reads in full; one writer).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# What the facts hold of each row: a change to any of these is re-read.
WATCHED = {
    "as_runs": (
        "study_id", "family", "state", "value", "test_acc", "counts_budget", "value_std",
        "reused_from_run", "trial_number",
    ),
    "as_trainings": ("study_id", "run_id", "key", "family", "state", "val_acc", "test_acc"),
}  # fmt: skip

STAMP = """
CREATE FUNCTION as_stamp_change_xid() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.changed_xid := txid_current();
  RETURN NEW;
END $$"""


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    for table in WATCHED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("changed_xid", sa.BigInteger(), nullable=True))
        op.create_index(f"ix_{table}_study_changed", table, ["study_id", "changed_xid"])
    if _sqlite():
        return
    op.execute(STAMP)
    for table, columns in WATCHED.items():
        changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in columns)
        op.execute(
            f"CREATE TRIGGER {table}_stamp_insert BEFORE INSERT ON {table} FOR EACH ROW "
            "EXECUTE FUNCTION as_stamp_change_xid()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_stamp_update BEFORE UPDATE ON {table} FOR EACH ROW "
            f"WHEN ({changed}) EXECUTE FUNCTION as_stamp_change_xid()"
        )


def downgrade() -> None:
    if not _sqlite():
        for table in WATCHED:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_stamp_update ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_stamp_insert ON {table}")
        op.execute("DROP FUNCTION IF EXISTS as_stamp_change_xid()")
    for table in WATCHED:
        op.drop_index(f"ix_{table}_study_changed", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("changed_xid")
