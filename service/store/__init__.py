"""The only code that writes our tables: studies, campaigns, runs, trainings, users, workers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.store.base import Conflict, Database, NotFound, StoreError
from service.store.campaigns import CampaignInfo, Campaigns
from service.store.runs import Claim, Cost, Runs, RunStatus
from service.store.studies import Studies, StudyInfo
from service.store.trainings import NewTraining, TrainingRow, Trainings
from service.store.users import TokenInfo, UserInfo, Users
from service.store.workers import Workers


@dataclass
class Store:
    """Everything the API and the workers need from the database."""

    db: Database
    studies: Studies
    runs: Runs
    users: Users
    trainings: Trainings = field(init=False)
    workers: Workers = field(init=False)
    campaigns: Campaigns = field(init=False)

    def __post_init__(self) -> None:
        self.trainings = Trainings(self.db)
        self.workers = Workers(self.db)
        self.campaigns = Campaigns(self.db)

    @classmethod
    def open(
        cls, url: str, *, check: bool = True, max_attempts: int = 3, **engine_options: Any
    ) -> Store:
        """Open the store on a database URL (schema checked unless check=False)."""
        db = Database.open(url, check=check, **engine_options)
        return cls(
            db=db, studies=Studies(db), runs=Runs(db, max_attempts=max_attempts), users=Users(db)
        )

    def dispose(self) -> None:
        """Release connections."""
        self.db.dispose()


__all__ = [
    "CampaignInfo",
    "Campaigns",
    "Claim",
    "Conflict",
    "Cost",
    "Database",
    "NewTraining",
    "NotFound",
    "RunStatus",
    "Store",
    "StoreError",
    "Studies",
    "StudyInfo",
    "TokenInfo",
    "TrainingRow",
    "Trainings",
    "UserInfo",
    "Users",
    "Workers",
]
