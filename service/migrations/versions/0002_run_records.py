"""Per-trial run records, per-epoch reports and shared key/value facts.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "as_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "study_id",
            sa.Integer,
            sa.ForeignKey("as_studies.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("trial_number", sa.Integer),
        sa.Column("optuna_trial_id", sa.Integer),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("retry_of", sa.Integer),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("counts_budget", sa.Boolean, nullable=False),
        sa.Column("failure_reason", sa.String(32)),
        sa.Column("failure_message", sa.Text),
        sa.Column("failure_epoch", sa.Integer),
        sa.Column("family", sa.String(50)),
        sa.Column("params", sa.JSON),
        sa.Column("config", sa.JSON),
        sa.Column("worker_id", sa.String(64)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("heartbeat_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("epochs_done", sa.Integer, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("test_acc", sa.Float),
        sa.Column("value_std", sa.Float),
        sa.Column("duration_s", sa.Float),
        sa.Column("img_per_s", sa.Float),
        sa.Column("peak_mem_bytes", sa.Integer),
        sa.Column("record", sa.JSON),
        sa.Column("log_tail", sa.Text),
    )
    op.create_index("ix_as_runs_family", "as_runs", ["family"])
    op.create_index("ix_as_runs_study_state", "as_runs", ["study_id", "state"])
    op.create_index("ix_as_runs_study_value", "as_runs", ["study_id", "value"])
    op.create_index("ix_as_runs_study_number", "as_runs", ["study_id", "trial_number"])
    op.create_index("ix_as_runs_state_heartbeat", "as_runs", ["state", "heartbeat_at"])
    op.create_table(
        "as_epochs",
        sa.Column(
            "run_id", sa.Integer, sa.ForeignKey("as_runs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("epoch", sa.Integer, primary_key=True),
        sa.Column("train_loss", sa.Float),
        sa.Column("val_acc", sa.Float),
        sa.Column("img_per_s", sa.Float),
        sa.Column("elapsed_s", sa.Float),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "as_meta",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("as_meta")
    op.drop_table("as_epochs")
    op.drop_table("as_runs")
