"""Live progress inside an epoch: the run's and its worker's, written with each heartbeat.

`as_runs.progress` and `as_workers.progress`: `{"phase", "epoch", "epochs", "step", "steps",
"img_per_s", "eta_s", "seed_index", "seeds"}` as the worker last saw it, so that a long epoch
shows its steps and rate moving instead of looking like a hang.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("as_runs") as batch:
        batch.add_column(sa.Column("progress", sa.JSON(), nullable=True))
    with op.batch_alter_table("as_workers") as batch:
        batch.add_column(sa.Column("progress", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("as_workers") as batch:
        batch.drop_column("progress")
    with op.batch_alter_table("as_runs") as batch:
        batch.drop_column("progress")
