"""Whether an ended run's Optuna trial is known to agree with it (the reconciler's work list).

A run's outcome is committed in our tables, then told to Optuna in a second transaction. Each
run that ends is stored with `optuna_synced = false` until that second step (or the reconciler,
service.store.reconcile) has made the Optuna trial agree. Runs stored before this revision count
as synced. A partial index holds only the unsynced rows: a handful, read at every heartbeat.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("as_runs") as batch:
        batch.add_column(
            sa.Column("optuna_synced", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.create_index(
        "ix_as_runs_unsynced",
        "as_runs",
        ["id"],
        postgresql_where=sa.text("NOT optuna_synced"),
        sqlite_where=sa.text("NOT optuna_synced"),
    )


def downgrade() -> None:
    op.drop_index("ix_as_runs_unsynced", table_name="as_runs")
    with op.batch_alter_table("as_runs") as batch:
        batch.drop_column("optuna_synced")
