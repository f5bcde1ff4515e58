"""Campaigns: ordered stages of studies, each seeded with the previous stage's best.

- `as_campaigns`: the campaign document, owner, status, the current stage's index (moved only by
  a compare-and-set in the transaction that inserts the next stage's studies), whether that
  stage's Optuna studies are set up (`stage_ready`, with the lease `setup_at` of the process
  setting them up), what each stage promoted, timestamps and an Idempotency-Key.
- `as_studies.campaign_id`, `stage`, `stage_model`: a stage's study (one per model of a
  transfer stage).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "as_campaigns",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Integer(), sa.ForeignKey("as_users.id"), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("spec_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("stage_ready", sa.Boolean(), nullable=False),
        sa.Column("setup_at", TS, nullable=True),
        sa.Column("promotions", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.UniqueConstraint("owner_id", "idempotency_key", name="uq_as_campaigns_idem"),
    )
    op.create_index("ix_as_campaigns_owner_id", "as_campaigns", ["owner_id"])
    op.create_index("ix_as_campaigns_status", "as_campaigns", ["status"])
    with op.batch_alter_table("as_studies") as batch:
        batch.add_column(sa.Column("campaign_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("stage", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("stage_model", sa.String(50), nullable=True))
        batch.create_foreign_key(
            "fk_as_studies_campaign", "as_campaigns", ["campaign_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_index("ix_as_studies_campaign_stage", ["campaign_id", "stage"])


def downgrade() -> None:
    with op.batch_alter_table("as_studies") as batch:
        batch.drop_index("ix_as_studies_campaign_stage")
        batch.drop_constraint("fk_as_studies_campaign", type_="foreignkey")
        batch.drop_column("stage_model")
        batch.drop_column("stage")
        batch.drop_column("campaign_id")
    op.drop_index("ix_as_campaigns_status", table_name="as_campaigns")
    op.drop_index("ix_as_campaigns_owner_id", table_name="as_campaigns")
    op.drop_table("as_campaigns")
