"""The states a run, a study and a worker can be in: every spelling of them is defined here.

They are `str` enums (Python 3.10 has no `StrEnum`): a member equals its value, so rows read
back as plain strings compare equal to members, members bind as strings in SQL, and the API's
JSON carries the same values as before. The database columns stay strings.
"""

from __future__ import annotations

import enum


class _State(str, enum.Enum):
    """A state whose str() and format() are its value ("complete", not "RunState.COMPLETE")."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class RunState(_State):
    """One attempt at one trial (a row of as_runs)."""

    QUEUED = "queued"  # a retry waiting for a worker
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StudyStatus(_State):
    """A study's lifecycle (a row of as_studies)."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class CampaignStatus(_State):
    """A campaign's lifecycle (a row of as_campaigns): its stages' studies do the work."""

    RUNNING = "running"  # a stage's studies run, or the next stage is being set up
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


class TrainingState(_State):
    """One training: a configuration and a seed (a row of as_trainings)."""

    RUNNING = "running"  # reserved by a run that is training it
    COMPLETE = "complete"
    FAILED = "failed"  # cut short (failed, pruned, cancelled, lost): may be trained again


class WorkerStatus(_State):
    """A worker process (a row of as_workers)."""

    IDLE = "idle"
    BUSY = "busy"
    STOPPED = "stopped"
    LOST = "lost"


# A run in one of these states is over: finish() accepts only these.
FINISHED_RUN_STATES = (RunState.COMPLETE, RunState.PRUNED, RunState.FAILED, RunState.CANCELLED)
# Studies that may still run trials (a paused one resumes); cancel is allowed from these.
ACTIVE_STUDY_STATUSES = (StudyStatus.QUEUED, StudyStatus.RUNNING, StudyStatus.PAUSED)
# Studies workers claim trials of.
RUNNABLE_STUDY_STATUSES = (StudyStatus.QUEUED, StudyStatus.RUNNING)
# Studies that are over: nothing moves them any more.
FINAL_STUDY_STATUSES = (StudyStatus.COMPLETED, StudyStatus.CANCELLED, StudyStatus.FAILED)
# Campaigns that may still move (cancel is allowed from these).
ACTIVE_CAMPAIGN_STATUSES = (CampaignStatus.RUNNING, CampaignStatus.PAUSED)
# Workers that heartbeat and may hold a run.
LIVE_WORKER_STATUSES = (WorkerStatus.IDLE, WorkerStatus.BUSY)


def described(states: type[enum.Enum]) -> str:
    """'a | b | c': the values of an enum, for API field descriptions."""
    return " | ".join(str(member.value) for member in states)
