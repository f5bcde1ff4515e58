"""The only code that writes our tables: studies, runs, users and workers."""

from __future__ import annotations

from dataclasses import dataclass

from service.store.base import Conflict, Database, NotFound, StoreError
from service.store.runs import Claim, Runs, RunStatus
from service.store.studies import Studies, StudyInfo
from service.store.users import TokenInfo, UserInfo, Users


@dataclass
class Store:
    """Everything the API and the workers need from the database."""

    db: Database
    studies: Studies
    runs: Runs
    users: Users

    @classmethod
    def open(cls, url: str, *, check: bool = True, max_attempts: int = 3) -> Store:
        """Open the store on a database URL (schema checked unless check=False)."""
        db = Database.open(url, check=check)
        return cls(
            db=db, studies=Studies(db), runs=Runs(db, max_attempts=max_attempts), users=Users(db)
        )

    def dispose(self) -> None:
        """Release connections."""
        self.db.dispose()


__all__ = [
    "Claim",
    "Conflict",
    "Database",
    "NotFound",
    "RunStatus",
    "Store",
    "StoreError",
    "Studies",
    "StudyInfo",
    "TokenInfo",
    "UserInfo",
    "Users",
]
