"""64-bit peak memory, jsonb params; indexes for the API's trial pages, summaries and retries.

- `as_runs.peak_mem_bytes` was a 32-bit INTEGER on PostgreSQL, so no trial that peaked above
  2 GiB (every ResNet-18 on a GPU) could be stored. SQLite integers are 64-bit already.
- `as_runs.params` becomes jsonb on PostgreSQL: filtering trials on a parameter range reads the
  key from the binary form instead of re-parsing JSON text for every run (10x on 10,000 runs).
- One index (study_id, sort key, id) per sortable trial metric: a page is then a short index
  range scan instead of reading and sorting every run of the study.
- A covering index of what study summaries group and aggregate (family, state, value, ...), so
  PostgreSQL answers them from the index without reading the wide run rows.
- `retry_of`, looked up for every trial's attempts history.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SORT_INDEXES = {
    "ix_as_runs_study_test_acc": "test_acc",
    "ix_as_runs_study_duration": "duration_s",
    "ix_as_runs_study_img_per_s": "img_per_s",
    "ix_as_runs_study_epochs": "epochs_done",
    "ix_as_runs_study_finished": "finished_at",
}
SUMMARY_COLUMNS = [
    "study_id",
    "family",
    "state",
    "value",
    "test_acc",
    "counts_budget",
    "trial_number",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "as_runs", "peak_mem_bytes", type_=sa.BigInteger(), existing_type=sa.Integer()
        )
        op.alter_column(
            "as_runs", "params", type_=JSONB(), existing_type=sa.JSON(),
            postgresql_using="params::jsonb",
        )  # fmt: skip
    for name, column in SORT_INDEXES.items():
        op.create_index(name, "as_runs", ["study_id", column, "id"])
    op.create_index("ix_as_runs_study_summary", "as_runs", SUMMARY_COLUMNS)
    op.create_index("ix_as_runs_retry_of", "as_runs", ["retry_of"])


def downgrade() -> None:
    op.drop_index("ix_as_runs_retry_of", table_name="as_runs")
    op.drop_index("ix_as_runs_study_summary", table_name="as_runs")
    for name in SORT_INDEXES:
        op.drop_index(name, table_name="as_runs")
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "as_runs", "params", type_=sa.JSON(), existing_type=JSONB(),
            postgresql_using="params::json",
        )  # fmt: skip
        # Values above 2^31 - 1 cannot go back into 32 bits: clear them rather than fail.
        op.execute("UPDATE as_runs SET peak_mem_bytes = NULL WHERE peak_mem_bytes > 2147483647")
        op.alter_column(
            "as_runs", "peak_mem_bytes", type_=sa.Integer(), existing_type=sa.BigInteger()
        )
