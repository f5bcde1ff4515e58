"""A run's measured cost, for studies that minimise one beside accuracy (spec `objectives`).

`as_runs.cost` is the value told to Optuna as the second objective, `cost_kind` what it measures
(`params`: the model's parameter count; `step_time`: the mean training step time relative to a
ReLU copy of the same model on the same worker) and `cost_device` where it was measured (a
step-time ratio holds for that device only). All null for single-objective studies.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("as_runs") as batch:
        batch.add_column(sa.Column("cost", sa.Float(), nullable=True))
        batch.add_column(sa.Column("cost_kind", sa.String(16), nullable=True))
        batch.add_column(sa.Column("cost_device", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("as_runs") as batch:
        batch.drop_column("cost_device")
        batch.drop_column("cost_kind")
        batch.drop_column("cost")
