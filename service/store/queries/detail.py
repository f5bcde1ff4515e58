"""One study's page: its progress, best trial, per-family summary and confirm links.

On PostgreSQL the counts and family statistics come from the facts this process keeps of the
study (service.store.queries.board_facts: the rows changed since its last read), elsewhere from
one grouped scan (service.store.queries.summaries.study_aggregates).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.db import Study, User
from service.store.base import Database, NotFound
from service.store.queries.board_facts import board_facts
from service.store.queries.summaries import (
    BestRun,
    FamilyStats,
    StudyAggregates,
    best_run,
    study_aggregates,
)
from service.store.studies import StudyInfo, study_info


@dataclass(frozen=True)
class StudyLink:
    """Another study, by id, name and status (a confirm link)."""

    id: int
    name: str
    status: str


@dataclass(frozen=True)
class StudyDetailView:
    """A study with its progress, best trial, per-family summary and confirm links."""

    study: StudyInfo
    best: BestRun | None
    families: list[FamilyStats]
    confirms: StudyLink | None = None  # the study this confirm study re-trains
    confirmed_by: list[StudyLink] = field(default_factory=list)  # its confirm studies


def study_detail(db: Database, study_id: int) -> StudyDetailView:
    """A study with progress, best trial and per-family summary (a handful of indexed queries)."""
    with db.reading() as session:
        row = session.execute(
            select(Study, User.name)
            .join(User, User.id == Study.owner_id)
            .where(Study.id == study_id)
        ).first()
        if row is None:
            raise NotFound(f"study {study_id} does not exist")
        aggregates = _aggregates(db, session, study_id)
        info = study_info(row[0], row[1], aggregates.counts)
        links = _links(session, study_id, info.confirms_study_id)
        return StudyDetailView(
            study=info,
            best=best_run(session, study_id),
            families=aggregates.families,
            confirms=next((link for link in links if link.id == info.confirms_study_id), None),
            confirmed_by=[link for link in links if link.id != info.confirms_study_id],
        )


def _aggregates(db: Database, session: Session, study_id: int) -> StudyAggregates:
    """Counts and family statistics: from the facts this process keeps of the study on
    PostgreSQL (service.store.queries.board_facts), else one grouped scan."""
    if not db.sqlite:
        answers = board_facts(db.caches).answers(session, study_id)
        if answers is not None:
            return StudyAggregates(answers.counts, answers.stats)
    return study_aggregates(session, study_id)


def _links(session: Session, study_id: int, confirms: int | None) -> list[StudyLink]:
    """The study a study confirms and the studies confirming it, by id."""
    related = or_(Study.confirms_study_id == study_id, Study.id == (confirms or -1))
    rows = session.execute(
        select(Study.id, Study.name, Study.status).where(related).order_by(Study.id)
    )
    return [StudyLink(ref, name, status) for ref, name, status in rows]
