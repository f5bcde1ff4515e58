"""Covering indexes for a study's trainings, so the leaderboard's evidence reads no wide rows.

The leaderboard counts a study's distinct complete trainings (service.store.queries.evidence):
the ledger's first complete row of each key, and the complete runs no ledger row speaks for.
At 100,000 trials both were read from the tables' rows (280 ms and 135 ms on the 2-core VM,
bench/results/api_latency-notes.md):

- `ix_as_trainings_study_key` (study, state, key, id) holds the complete trainings in key order
  with what is summed (family and both accuracies, INCLUDEd on PostgreSQL): the first row of
  each key is found in one ordered pass of the index;
- `ix_as_runs_study_unreused` (study, id) holds only complete, scored runs of a family that
  reused nothing (the candidates for ledger-less trainings), with the columns the evidence reads:
  an anti-join on run id with `ix_as_trainings_run` walks two indexes in the same order.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

UNREUSED = (
    "state = 'complete' AND value IS NOT NULL AND family IS NOT NULL AND reused_from_run IS NULL"
)


def upgrade() -> None:
    op.create_index(
        "ix_as_trainings_study_key",
        "as_trainings",
        ["study_id", "state", "key", "id"],
        postgresql_include=["family", "val_acc", "test_acc"],
    )
    op.create_index(
        "ix_as_runs_study_unreused",
        "as_runs",
        ["study_id", "id"],
        postgresql_include=["family", "value", "test_acc", "value_std"],
        postgresql_where=sa.text(UNREUSED),
        sqlite_where=sa.text(UNREUSED),
    )


def downgrade() -> None:
    op.drop_index("ix_as_runs_study_unreused", table_name="as_runs")
    op.drop_index("ix_as_trainings_study_key", table_name="as_trainings")
