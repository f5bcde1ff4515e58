"""Our SQL tables. Every name starts with `as_` so it never meets Optuna's tables."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from service.db.states import CampaignStatus, RunState, StudyStatus, TrainingState, WorkerStatus
from service.db.types import UTCDateTime


def utcnow() -> datetime:
    """Timezone-aware now; all timestamps are stored in UTC."""
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base of our tables (Optuna's live in their own metadata)."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: UTCDateTime}


class User(Base):
    """A person or robot with tokens; admins may act on every study."""

    __tablename__ = "as_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    tokens: Mapped[list[Token]] = relationship(back_populates="user", cascade="all, delete-orphan")


class Token(Base):
    """A bearer token, stored only as its SHA-256 digest."""

    __tablename__ = "as_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("as_users.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))  # first characters, to recognise it in lists
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    user: Mapped[User] = relationship(back_populates="tokens")


class Study(Base):
    """A submitted study: its spec, owner, budget and lifecycle status."""

    __tablename__ = "as_studies"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_as_studies_idem"),
        Index("ix_as_studies_runnable", "status", "priority"),
        Index("ix_as_studies_campaign_stage", "campaign_id", "stage"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[int] = mapped_column(ForeignKey("as_users.id"), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default=StudyStatus.QUEUED, index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    n_trials: Mapped[int] = mapped_column(Integer)
    optuna_name: Mapped[str] = mapped_column(String(100), unique=True)
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_claim_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A confirm study re-trains another's best configurations with fresh seeds (0005).
    confirms_study_id: Mapped[int | None] = mapped_column(
        ForeignKey("as_studies.id", ondelete="SET NULL"), index=True
    )
    # A campaign's stage is one study per model (0007): its campaign, stage index and model.
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("as_campaigns.id", ondelete="CASCADE")
    )
    stage: Mapped[int | None] = mapped_column(Integer)
    stage_model: Mapped[str | None] = mapped_column(String(50))
    # Bumped by triggers on every change a read of the study shows (0008): the API's ETags.
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    owner: Mapped[User] = relationship()


class Worker(Base):
    """A worker process (one GPU slot) and its latest heartbeat."""

    __tablename__ = "as_workers"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(100))  # "cuda:0 (NVIDIA H100)" or "cpu"
    slot: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default=WorkerStatus.IDLE)
    version: Mapped[str] = mapped_column(String(64), default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    current_run_id: Mapped[int | None] = mapped_column(Integer)
    current_epoch: Mapped[int | None] = mapped_column(Integer)
    img_per_s: Mapped[float | None] = mapped_column(Float)
    trials_done: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # its run's, live (0006)


RUN_SUMMARY_COLUMNS = (
    "study_id",
    "family",
    "state",
    "value",
    "test_acc",
    "counts_budget",
    "trial_number",
)


# Complete, scored runs of a family that reused nothing: the partial index of 0011.
UNREUSED_RUNS = (
    "state = 'complete' AND value IS NOT NULL AND family IS NOT NULL AND reused_from_run IS NULL"
)


class Run(Base):
    """One attempt at one trial: who ran it, how it ended, and everything it measured."""

    __tablename__ = "as_runs"
    __table_args__ = (
        Index("ix_as_runs_study_state", "study_id", "state"),
        Index("ix_as_runs_study_value", "study_id", "value"),
        Index("ix_as_runs_study_number", "study_id", "trial_number"),
        Index("ix_as_runs_state_heartbeat", "state", "heartbeat_at"),
        # 0003: one index per sortable metric of the API's trial pages, and a covering index of
        # what study summaries aggregate (answered from the index on PostgreSQL).
        Index("ix_as_runs_study_test_acc", "study_id", "test_acc", "id"),
        Index("ix_as_runs_study_duration", "study_id", "duration_s", "id"),
        Index("ix_as_runs_study_img_per_s", "study_id", "img_per_s", "id"),
        Index("ix_as_runs_study_epochs", "study_id", "epochs_done", "id"),
        Index("ix_as_runs_study_finished", "study_id", "finished_at", "id"),
        Index("ix_as_runs_study_summary", *RUN_SUMMARY_COLUMNS),
        # 0004: the few ended runs whose Optuna trial may not agree yet (service.store.reconcile).
        Index(
            "ix_as_runs_unsynced",
            "id",
            postgresql_where=text("NOT optuna_synced"),
            sqlite_where=text("NOT optuna_synced"),
        ),
        Index("ix_as_runs_study_changed", "study_id", "changed_xid"),  # 0012
        # 0011: the complete runs that may stand for trainings of their own (the evidence).
        Index(
            "ix_as_runs_study_unreused",
            "study_id",
            "id",
            postgresql_include=["family", "value", "test_acc", "value_std"],
            postgresql_where=text(UNREUSED_RUNS),
            sqlite_where=text(UNREUSED_RUNS),
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("as_studies.id", ondelete="CASCADE"))
    trial_number: Mapped[int | None] = mapped_column(Integer)
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    retry_of: Mapped[int | None] = mapped_column(Integer, index=True)  # migration 0003
    state: Mapped[str] = mapped_column(String(16), default=RunState.RUNNING)
    # Whether this row uses one unit of the study's n_trials (a lost attempt hands it to its retry).
    counts_budget: Mapped[bool] = mapped_column(Boolean, default=True)
    # diverged | oom | timeout | worker_lost | rejected | error | cancelled | data_unavailable
    failure_reason: Mapped[str | None] = mapped_column(String(32))
    failure_message: Mapped[str | None] = mapped_column(Text)
    failure_epoch: Mapped[int | None] = mapped_column(Integer)
    family: Mapped[str | None] = mapped_column(String(50), index=True)
    # jsonb on PostgreSQL (0003): trial filters on parameter ranges read keys without re-parsing.
    params: Mapped[dict[str, Any] | None] = mapped_column(
        JSON().with_variant(JSONB(), "postgresql")
    )
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    value: Mapped[float | None] = mapped_column(Float)  # objective: validation accuracy
    test_acc: Mapped[float | None] = mapped_column(Float)
    value_std: Mapped[float | None] = mapped_column(Float)  # over seeds, where seeds > 1
    duration_s: Mapped[float | None] = mapped_column(Float)
    img_per_s: Mapped[float | None] = mapped_column(Float)
    peak_mem_bytes: Mapped[int | None] = mapped_column(BigInteger)  # > 2 GiB: 64 bits (0003)
    record: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # TrialRecord.to_json()
    log_tail: Mapped[str | None] = mapped_column(Text)
    # False from the moment a run ends until its Optuna trial is known to agree (0004).
    optuna_synced: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Set when the run trained nothing: every seed's result was a recorded training (0005).
    reused_from_run: Mapped[int | None] = mapped_column(Integer)
    # Step, rate and ETA inside the epoch as the worker last saw it, with each heartbeat (0006).
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A multi-objective study's second value: what it measures and on which device (0009).
    cost: Mapped[float | None] = mapped_column(Float)
    cost_kind: Mapped[str | None] = mapped_column(String(16))
    cost_device: Mapped[str | None] = mapped_column(String(200))
    # PostgreSQL: the transaction that last changed what a leaderboard reads (0012, a trigger).
    changed_xid: Mapped[int | None] = mapped_column(BigInteger)
    epochs: Mapped[list[Epoch]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="Epoch.epoch"
    )


class Epoch(Base):
    """One epoch's report of a run, written as it happens (live progress, learning curves)."""

    __tablename__ = "as_epochs"
    run_id: Mapped[int] = mapped_column(
        ForeignKey("as_runs.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_loss: Mapped[float | None] = mapped_column(Float)
    val_acc: Mapped[float | None] = mapped_column(Float)
    img_per_s: Mapped[float | None] = mapped_column(Float)
    elapsed_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    run: Mapped[Run] = relationship(back_populates="epochs")


class Training(Base):
    """One training: a canonical configuration and a seed (EVIDENCE.md's unit), trained once.

    `key` is exact: the trial config with every default filled in and this seed, the data's
    checksum and the training code's version (workers.code_version). `lock_key` makes racing
    workers agree on one trainer: "<study id>:<key>" within a study, the bare key for a study
    that shares results with the team; cleared when a training fails so it may be trained again.
    A row of another study's result taken by a team study has `reused_from` and no lock.
    """

    __tablename__ = "as_trainings"
    __table_args__ = (
        Index("ix_as_trainings_key_state", "key", "state"),
        Index("ix_as_trainings_study_config", "study_id", "config_key", "seed"),
        Index("ix_as_trainings_study_family", "study_id", "family", "state"),
        Index("ix_as_trainings_run", "run_id"),
        Index("ix_as_trainings_study_changed", "study_id", "changed_xid"),  # 0012
        # 0011: complete trainings in key order, with what the evidence sums (covering).
        Index(
            "ix_as_trainings_study_key",
            "study_id",
            "state",
            "key",
            "id",
            postgresql_include=["family", "val_acc", "test_acc"],
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("as_studies.id", ondelete="CASCADE"))
    run_id: Mapped[int | None] = mapped_column(Integer)  # the run that trained (or reused) it
    key: Mapped[str] = mapped_column(String(64))
    config_key: Mapped[str] = mapped_column(String(64))  # the configuration, any seed
    lock_key: Mapped[str | None] = mapped_column(String(80), unique=True)
    family: Mapped[str] = mapped_column(String(50))
    seed: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default=TrainingState.RUNNING)
    val_acc: Mapped[float | None] = mapped_column(Float)
    test_acc: Mapped[float | None] = mapped_column(Float)
    reused_from: Mapped[int | None] = mapped_column(Integer)  # another study's as_trainings.id
    data_checksum: Mapped[str] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # PostgreSQL: the transaction that last changed what a leaderboard reads (0012, a trigger).
    changed_xid: Mapped[int | None] = mapped_column(BigInteger)


class Meta(Base):
    """Small key/value facts shared by every process (e.g. the dashboard's cookie secret)."""

    __tablename__ = "as_meta"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")


class Campaign(Base):
    """A campaign (0007): ordered stages of studies, each seeded with the last one's best.

    `stage` is the current stage's index; it moves only by a compare-and-set in the transaction
    that inserts the next stage's study rows (service.store.campaigns), so a stage is created
    exactly once. `stage_ready` is false from then until every study of the stage has its
    Optuna study with its enqueued trials; `setup_at` is the lease of the process doing that.
    """

    __tablename__ = "as_campaigns"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_as_campaigns_idem"),
        Index("ix_as_campaigns_status", "status"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[int] = mapped_column(ForeignKey("as_users.id"), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # the campaign document as written
    spec_version: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default=CampaignStatus.RUNNING)
    stage: Mapped[int] = mapped_column(Integer, default=0)
    stage_ready: Mapped[bool] = mapped_column(Boolean, default=False)
    setup_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # One entry per stage that promoted: what went on, what was dropped and why.
    promotions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
