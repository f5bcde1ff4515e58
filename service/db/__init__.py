"""Data layer: engine, transactions, our tables and Optuna's storage on the same database."""

from service.db.engine import is_sqlite, make_engine, make_sessionmaker, session_scope
from service.db.models import (
    Base,
    Epoch,
    Meta,
    Run,
    Study,
    Token,
    Training,
    User,
    Worker,
    utcnow,
)
from service.db.optuna_storage import optuna_storage
from service.db.outage import (
    DatabaseWaitStopped,
    db_retry,
    describe_db_error,
    is_db_outage,
    is_permanent_db_error,
)
from service.db.states import (
    ACTIVE_STUDY_STATUSES,
    FINAL_STUDY_STATUSES,
    FINISHED_RUN_STATES,
    LIVE_WORKER_STATUSES,
    RUNNABLE_STUDY_STATUSES,
    RunState,
    StudyStatus,
    TrainingState,
    WorkerStatus,
)
from service.db.types import UTCDateTime, as_utc

__all__ = [
    "ACTIVE_STUDY_STATUSES",
    "FINAL_STUDY_STATUSES",
    "FINISHED_RUN_STATES",
    "LIVE_WORKER_STATUSES",
    "RUNNABLE_STUDY_STATUSES",
    "Base",
    "DatabaseWaitStopped",
    "Epoch",
    "Meta",
    "Run",
    "RunState",
    "Study",
    "StudyStatus",
    "Token",
    "Training",
    "TrainingState",
    "UTCDateTime",
    "User",
    "Worker",
    "WorkerStatus",
    "as_utc",
    "db_retry",
    "describe_db_error",
    "is_db_outage",
    "is_permanent_db_error",
    "is_sqlite",
    "make_engine",
    "make_sessionmaker",
    "optuna_storage",
    "session_scope",
    "utcnow",
]
