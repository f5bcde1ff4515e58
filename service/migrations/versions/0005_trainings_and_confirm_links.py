"""The trainings ledger (no identical training twice), reused runs, confirm studies' links.

- `as_trainings`: one row per training (a canonical configuration and a seed), with the exact
  key that makes two trainings the same and a unique lock that lets racing workers agree on
  one trainer (service.store.trainings).
- `as_runs.reused_from_run`: a run that trained nothing, its result taken from a recorded one.
- `as_studies.confirms_study_id`: a confirm study points at the study whose best configurations
  it re-trains with fresh seeds.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "as_trainings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "study_id",
            sa.Integer(),
            sa.ForeignKey("as_studies.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("config_key", sa.String(64), nullable=False),
        sa.Column("lock_key", sa.String(80), nullable=True, unique=True),
        sa.Column("family", sa.String(50), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("val_acc", sa.Float(), nullable=True),
        sa.Column("test_acc", sa.Float(), nullable=True),
        sa.Column("reused_from", sa.Integer(), nullable=True),
        sa.Column("data_checksum", sa.String(64), nullable=False),
        sa.Column("code_version", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
    )
    op.create_index("ix_as_trainings_key_state", "as_trainings", ["key", "state"])
    op.create_index(
        "ix_as_trainings_study_config", "as_trainings", ["study_id", "config_key", "seed"]
    )
    op.create_index("ix_as_trainings_study_family", "as_trainings", ["study_id", "family", "state"])
    op.create_index("ix_as_trainings_run", "as_trainings", ["run_id"])
    with op.batch_alter_table("as_runs") as batch:
        batch.add_column(sa.Column("reused_from_run", sa.Integer(), nullable=True))
    with op.batch_alter_table("as_studies") as batch:
        batch.add_column(sa.Column("confirms_study_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            "fk_as_studies_confirms", "as_studies", ["confirms_study_id"], ["id"],
            ondelete="SET NULL",
        )  # fmt: skip
        batch.create_index("ix_as_studies_confirms_study_id", ["confirms_study_id"])


def downgrade() -> None:
    with op.batch_alter_table("as_studies") as batch:
        batch.drop_index("ix_as_studies_confirms_study_id")
        batch.drop_constraint("fk_as_studies_confirms", type_="foreignkey")
        batch.drop_column("confirms_study_id")
    with op.batch_alter_table("as_runs") as batch:
        batch.drop_column("reused_from_run")
    op.drop_table("as_trainings")
