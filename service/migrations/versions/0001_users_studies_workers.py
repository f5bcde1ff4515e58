"""Users, hashed tokens, submitted studies and workers.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "as_users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "as_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("as_users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(12), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS),
        sa.Column("revoked_at", TS),
    )
    op.create_index("ix_as_tokens_user_id", "as_tokens", ["user_id"])
    op.create_table(
        "as_studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("owner_id", sa.Integer, sa.ForeignKey("as_users.id"), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("spec_version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("n_trials", sa.Integer, nullable=False),
        sa.Column("optuna_name", sa.String(100), nullable=False, unique=True),
        sa.Column("error", sa.Text),
        sa.Column("idempotency_key", sa.String(200)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
        sa.Column("last_claim_at", TS),
        sa.UniqueConstraint("owner_id", "idempotency_key", name="uq_as_studies_idem"),
    )
    op.create_index("ix_as_studies_owner_id", "as_studies", ["owner_id"])
    op.create_index("ix_as_studies_status", "as_studies", ["status"])
    op.create_index("ix_as_studies_runnable", "as_studies", ["status", "priority"])
    op.create_table(
        "as_workers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("device", sa.String(100), nullable=False),
        sa.Column("slot", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("heartbeat_at", TS, nullable=False),
        sa.Column("current_run_id", sa.Integer),
        sa.Column("current_epoch", sa.Integer),
        sa.Column("img_per_s", sa.Float),
        sa.Column("trials_done", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("as_workers")
    op.drop_table("as_studies")
    op.drop_table("as_tokens")
    op.drop_table("as_users")
