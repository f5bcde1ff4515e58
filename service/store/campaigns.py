"""Campaigns: ordered stages of studies, each seeded with the last stage's best (docs/campaigns.md).

A campaign row (as_campaigns) holds the document, its status and the current stage's index;
every stage is one ordinary study per model (as_studies.campaign_id, stage, stage_model), which
workers claim like any other.

Stage transitions happen exactly once, whoever calls `advance()` (every worker's heartbeat
thread, the API's background loop) and however many at once:

1. When every study of the current stage has ended, one transaction locks the campaign row,
   plans the promotion (service.store.promotion) and moves the stage index by a
   compare-and-set (`UPDATE … WHERE stage = N AND status = running AND stage_ready`) in the
   same transaction that inserts the next stage's study rows. Of racing callers one matches;
   the others change nothing. The new studies are inserted paused (workers do not claim them)
   and `stage_ready` false.
2. Their Optuna studies are created with the configurations enqueued (load_if_exists,
   skip_if_exists: idempotent) by whoever holds the setup lease (`setup_at`, taken by a
   conditional UPDATE; enqueueing is check-then-insert, so only one process at a time may do
   it). Then one transaction sets `stage_ready` and queues the studies (unless the campaign was
   paused or cancelled meanwhile).

A process killed between 1 and 2 (or in 2) leaves a campaign whose stage is not ready: the next
`advance()` anywhere, once the lease has expired, sets the same studies up again, each
configuration once. Nothing is created twice and nothing is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, and_, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from search_space.spec import SpecError, parse_spec
from search_space.spec.campaign import CampaignSpec, model_name, parse_campaign
from service.db import (
    ACTIVE_CAMPAIGN_STATUSES,
    ACTIVE_STUDY_STATUSES,
    FINAL_STUDY_STATUSES,
    RUNNABLE_STUDY_STATUSES,
    Campaign,
    CampaignStatus,
    Study,
    StudyStatus,
    User,
    is_db_outage,
    utcnow,
)
from service.db.optuna_storage import optuna_study_name
from service.store.base import Conflict, Database, NotFound
from service.store.confirm import fresh_seed_of
from service.store.promotion import promote
from service.store.studies import (
    Studies,
    cancel_queued_runs,
    create_optuna_study,
    new_study_row,
)
from service.store.users import UserInfo

log = logging.getLogger(__name__)

SETUP_LEASE_S = 60.0  # a stage's setup (Optuna studies) takes well under a second
PENDING_NOTE = "being set up by its campaign (its Optuna study and enqueued configurations)"

# action -> (statuses it is allowed from, status it leads to)
TRANSITIONS: dict[str, tuple[tuple[CampaignStatus, ...], CampaignStatus]] = {
    "cancel": (ACTIVE_CAMPAIGN_STATUSES, CampaignStatus.CANCELLED),
    "pause": ((CampaignStatus.RUNNING,), CampaignStatus.PAUSED),
    "resume": ((CampaignStatus.PAUSED,), CampaignStatus.RUNNING),
}


@dataclass(frozen=True)
class CampaignInfo:
    """A campaign as the rest of the code sees it."""

    id: int
    name: str
    description: str
    owner_id: int
    owner: str
    status: str
    stage: int  # the current stage's index (0 = the first)
    stages: int  # how many stages the campaign has
    stage_ready: bool  # the current stage's studies are set up
    spec: dict[str, Any]
    promotions: list[dict[str, Any]]  # one record per stage that promoted (service.store.promotion)
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


def campaign_info(row: Campaign, owner: str) -> CampaignInfo:
    """The domain view of a campaign row."""
    stages = row.spec.get("stages") if isinstance(row.spec, Mapping) else None
    return CampaignInfo(
        id=row.id,
        name=row.name,
        description=row.description,
        owner_id=row.owner_id,
        owner=owner,
        status=row.status,
        stage=row.stage,
        stages=len(stages) if isinstance(stages, list) else 0,
        stage_ready=row.stage_ready,
        spec=dict(row.spec),
        promotions=list(row.promotions or []),
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
    )


class Campaigns:
    """Create campaigns, move them through their lifecycle and their stages."""

    def __init__(self, db: Database, *, setup_lease_s: float = SETUP_LEASE_S) -> None:
        self.db = db
        self.setup_lease_s = setup_lease_s

    # -- creation -----------------------------------------------------------------------------
    def create(
        self,
        owner: UserInfo,
        source: str | bytes | Mapping[str, Any],
        idempotency_key: str | None = None,
    ) -> tuple[CampaignInfo, bool]:
        """Validate the campaign, store it with its first stage's studies and set them up.

        Returns (campaign, created); created is False when `idempotency_key` named an earlier
        one. Raises SpecError for an invalid campaign, naming each field.
        """
        campaign = parse_campaign(source, submission=True)
        document = campaign.document()
        if idempotency_key:
            earlier = self._by_key(owner.id, idempotency_key, document)
            if earlier is not None:
                return earlier, False
        try:
            with self.db.session(immediate=True) as session:
                campaign_id = self._insert(session, owner, campaign, document, idempotency_key)
        except IntegrityError:
            earlier = self._by_key(owner.id, idempotency_key or "", document)
            if earlier is None:
                raise
            return earlier, False
        try:
            self._set_up(campaign_id, 0)
        except Exception:  # stored: the next advance() anywhere sets it up (docstring)
            log.warning("campaign %s: setting up its first stage failed; advance() retries it",
                        campaign_id, exc_info=True)  # fmt: skip
        return self.get(campaign_id), True

    def _insert(
        self,
        session: Session,
        owner: UserInfo,
        campaign: CampaignSpec,
        document: dict[str, Any],
        key: str | None,
    ) -> int:
        now = utcnow()
        row = Campaign(
            name=campaign.name,
            description=campaign.description,
            owner_id=owner.id,
            spec=document,
            spec_version=campaign.version,
            status=CampaignStatus.RUNNING,
            stage=0,
            stage_ready=False,
            promotions=[],
            idempotency_key=key,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        _insert_stage(session, row.id, owner.id, campaign, 0, submission=True)
        return row.id

    def _by_key(self, owner_id: int, key: str, document: dict[str, Any]) -> CampaignInfo | None:
        with self.db.session() as session:
            row = session.scalars(
                select(Campaign).where(
                    Campaign.owner_id == owner_id, Campaign.idempotency_key == key
                )
            ).first()
            if row is None:
                return None
            if row.spec != document:
                raise Conflict(
                    f"Idempotency-Key {key!r} was already used for campaign {row.id} with "
                    "another document"
                )
            campaign_id = row.id
        return self.get(campaign_id)

    # -- reading ------------------------------------------------------------------------------
    def get(self, campaign_id: int) -> CampaignInfo:
        """A campaign; NotFound when there is none."""
        with self.db.session() as session:
            found = session.execute(
                select(Campaign, User.name)
                .join(User, User.id == Campaign.owner_id)
                .where(Campaign.id == campaign_id)
            ).first()
            if found is None:
                raise NotFound(f"campaign {campaign_id} does not exist")
            return campaign_info(found[0], found[1])

    def list_all(
        self,
        *,
        statuses: Sequence[str] = (),
        owner: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[CampaignInfo], int]:
        """Campaigns, newest first, one page; and how many match in all."""
        query = select(Campaign, User.name).join(User, User.id == Campaign.owner_id)
        if statuses:
            query = query.where(Campaign.status.in_(list(statuses)))
        if owner:
            query = query.where(User.name == owner)
        with self.db.session() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.execute(
                query.order_by(Campaign.id.desc()).limit(limit).offset(offset)
            ).all()
            return [campaign_info(row, name) for row, name in rows], int(total)

    def study_ids(self, campaign_id: int) -> list[int]:
        """The campaign's studies, stage by stage (each stage's in model order)."""
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(Study.id)
                    .where(Study.campaign_id == campaign_id)
                    .order_by(Study.stage, Study.id)
                )
            )

    # -- lifecycle ----------------------------------------------------------------------------
    def transition(self, campaign_id: int, action: str) -> CampaignInfo:
        """cancel / pause / resume the whole campaign (its current stage's studies)."""
        if action not in TRANSITIONS:
            raise ValueError(f"unknown action {action!r}; valid: {', '.join(TRANSITIONS)}")
        allowed, target = TRANSITIONS[action]
        with self.db.session(immediate=True) as session:
            row = self._locked(session, campaign_id)
            if row is None:
                raise NotFound(f"campaign {campaign_id} does not exist")
            if row.status not in allowed:
                raise Conflict(f"cannot {action} campaign {campaign_id}: it is {row.status}")
            now = utcnow()
            row.status = target
            row.updated_at = now
            if target == CampaignStatus.CANCELLED:
                row.finished_at = now
                self._cancel_studies(session, campaign_id)
            elif target == CampaignStatus.PAUSED:
                self._set_stage_status(session, row, RUNNABLE_STUDY_STATUSES, StudyStatus.PAUSED)
            elif row.stage_ready:  # resume; a stage being set up is queued once it is ready
                self._resume_stage(session, row)
        return self.get(campaign_id)

    def _locked(self, session: Session, campaign_id: int) -> Campaign | None:
        """The campaign row, locked until commit (SQLite: the session's immediate lock)."""
        return session.get(Campaign, campaign_id, with_for_update=not self.db.sqlite)

    @staticmethod
    def _cancel_studies(session: Session, campaign_id: int) -> None:
        now = utcnow()
        for study in session.scalars(
            select(Study).where(
                Study.campaign_id == campaign_id, Study.status.in_(ACTIVE_STUDY_STATUSES)
            )
        ):
            study.status = StudyStatus.CANCELLED
            study.finished_at = study.updated_at = now
            if study.error == PENDING_NOTE:
                study.error = None
            cancel_queued_runs(session, study.id)

    @staticmethod
    def _set_stage_status(
        session: Session, row: Campaign, source: Sequence[str], target: StudyStatus
    ) -> None:
        session.execute(
            update(Study)
            .where(
                Study.campaign_id == row.id,
                Study.stage == row.stage,
                Study.status.in_(list(source)),
            )
            .values(status=target, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )

    @staticmethod
    def _resume_stage(session: Session, row: Campaign) -> None:
        for study in session.scalars(
            select(Study).where(
                Study.campaign_id == row.id,
                Study.stage == row.stage,
                Study.status == StudyStatus.PAUSED,
            )
        ):
            study.status = StudyStatus.RUNNING if study.started_at else StudyStatus.QUEUED
            study.updated_at = utcnow()
            if study.error == PENDING_NOTE:
                study.error = None

    def delete(self, campaign_id: int, studies: Studies) -> None:
        """Delete a campaign with every stage's studies (their runs and Optuna studies)."""
        with self.db.session(immediate=True) as session:
            # Cancelled first: no stage is created while its studies are being deleted.
            done = session.execute(
                update(Campaign)
                .where(Campaign.id == campaign_id)
                .values(status=CampaignStatus.CANCELLED, updated_at=utcnow())
            )
            if not cast(CursorResult[Any], done).rowcount:
                raise NotFound(f"campaign {campaign_id} does not exist")
        for study_id in self.study_ids(campaign_id):
            try:
                studies.delete(study_id, with_campaign=True)
            except NotFound:
                continue  # a concurrent delete took it
        with self.db.session(immediate=True) as session:
            gone = session.execute(delete(Campaign).where(Campaign.id == campaign_id))
            if not cast(CursorResult[Any], gone).rowcount:
                raise NotFound(f"campaign {campaign_id} does not exist")

    # -- stage transitions --------------------------------------------------------------------
    def advance(self) -> list[int]:
        """Move every campaign that can move: set up a stage not ready yet (its lease free), or
        create the next stage of one whose current stage has ended. Exactly once (see the
        module docstring); cheap when nothing is due (one indexed query). Returns the campaigns
        moved."""
        moved = []
        for campaign_id, stage, ready in self._due():
            try:
                done = self._next(campaign_id, stage) if ready else self._set_up(campaign_id, stage)
            except Exception as error:
                if is_db_outage(error):
                    raise
                log.exception("campaign %s: stage %s could not move on", campaign_id, stage + 1)
                continue
            if done:
                moved.append(campaign_id)
        return moved

    def _due(self) -> list[tuple[int, int, bool]]:
        ended = ~exists().where(
            Study.campaign_id == Campaign.id,
            Study.stage == Campaign.stage,
            Study.status.not_in(FINAL_STUDY_STATUSES),
        )
        setup = and_(
            Campaign.status.in_(ACTIVE_CAMPAIGN_STATUSES),
            Campaign.stage_ready.is_(False),
            or_(Campaign.setup_at.is_(None), Campaign.setup_at < self._lease_cutoff()),
        )
        moving = and_(
            Campaign.status == CampaignStatus.RUNNING, Campaign.stage_ready.is_(True), ended
        )
        with self.db.session() as session:
            rows = session.execute(
                select(Campaign.id, Campaign.stage, Campaign.stage_ready)
                .where(or_(setup, moving))
                .order_by(Campaign.id)
            ).all()
        return [(int(i), int(s), bool(r)) for i, s, r in rows]

    def _lease_cutoff(self) -> Any:
        return self.db.silent_since(self.setup_lease_s)

    def _set_up(self, campaign_id: int, stage: int) -> bool:
        """Create the Optuna studies of a stage not ready yet, then queue its studies; False
        when another process holds the lease or did it already."""
        with self.db.session(immediate=True) as session:
            claimed = session.execute(
                update(Campaign)
                .where(
                    Campaign.id == campaign_id,
                    Campaign.stage == stage,
                    Campaign.stage_ready.is_(False),
                    Campaign.status.in_(ACTIVE_CAMPAIGN_STATUSES),
                    or_(Campaign.setup_at.is_(None), Campaign.setup_at < self._lease_cutoff()),
                )
                .values(setup_at=self.db.clock())
            )
            if cast(CursorResult[Any], claimed).rowcount != 1:
                return False
            studies = session.execute(
                select(Study.id, Study.spec)
                .where(Study.campaign_id == campaign_id, Study.stage == stage)
                .order_by(Study.id)
            ).all()
        for study_id, spec in studies:
            create_optuna_study(self.db, study_id, parse_spec(spec))
        with self.db.session(immediate=True) as session:
            row = self._locked(session, campaign_id)
            if row is None or row.stage != stage or row.stage_ready:
                return False
            row.stage_ready = True
            row.setup_at = None
            row.updated_at = utcnow()
            if row.status == CampaignStatus.RUNNING:
                self._resume_stage(session, row)
        log.info(
            "campaign %s: stage %s is set up (%d studies)", campaign_id, stage + 1, len(studies)
        )
        return True

    def _next(self, campaign_id: int, stage: int) -> bool:
        """The stage after an ended one (or the campaign's end): exactly once."""
        with self.db.session(immediate=True) as session:
            row = self._locked(session, campaign_id)
            if row is None or row.status != CampaignStatus.RUNNING or row.stage != stage:
                return False
            if not row.stage_ready:
                return False
            studies = list(
                session.scalars(
                    select(Study)
                    .where(Study.campaign_id == campaign_id, Study.stage == stage)
                    .order_by(Study.id)
                )
            )
            if any(study.status not in FINAL_STUDY_STATUSES for study in studies):
                return False
            ended = self._ended(session, row, studies)
            if ended is not None:
                return ended
            opened = self._open_next(session, row, studies)
        if opened:  # committed: its studies exist; now their Optuna studies
            self._set_up(campaign_id, stage + 1)
        return opened

    def _ended(self, session: Session, row: Campaign, studies: list[Study]) -> bool | None:
        """Finish the campaign when its stage leaves nothing to go on with; None: go on."""
        campaign = parse_campaign(row.spec)
        completed = [study for study in studies if study.status == StudyStatus.COMPLETED]
        note = _not_completed(studies)
        if not completed:
            cancelled = all(study.status == StudyStatus.CANCELLED for study in studies)
            status = CampaignStatus.CANCELLED if cancelled else CampaignStatus.FAILED
            why = f"stage {row.stage + 1} ended with no completed study" + (
                f": {note}" if note else ""
            )
            return self._finish(session, row, status, why)
        if row.stage == campaign.stage_count - 1:
            return self._finish(session, row, CampaignStatus.COMPLETED, note or row.error)
        return None

    def _finish(
        self, session: Session, row: Campaign, status: CampaignStatus, note: str | None
    ) -> bool:
        now = utcnow()
        done = session.execute(
            update(Campaign)
            .where(
                Campaign.id == row.id,
                Campaign.stage == row.stage,
                Campaign.status == CampaignStatus.RUNNING,
            )
            .values(status=status, error=note, finished_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return cast(CursorResult[Any], done).rowcount == 1

    def _open_next(self, session: Session, row: Campaign, studies: list[Study]) -> bool:
        campaign = parse_campaign(row.spec)
        stage = row.stage
        completed = [study for study in studies if study.status == StudyStatus.COMPLETED]
        try:
            promotion = promote(session, campaign, stage, completed)
        except SpecError as error:  # a stored campaign the code can no longer build
            return self._finish(session, row, CampaignStatus.FAILED, str(error))
        record = {**promotion.record, "not_completed": _not_completed(studies)}
        promotions = [*(row.promotions or []), record]
        if not promotion.carried:
            why = (
                f"stage {stage + 1} promoted no configuration (its rule: "
                f"{record['rule']}; dropped: {record['dropped'] or 'none'}); "
                f"stages {stage + 2}.. did not run"
            )
            self._record(session, row, promotions)
            return self._finish(session, row, CampaignStatus.COMPLETED, why)
        campaign_studies = list(
            session.scalars(select(Study.id).where(Study.campaign_id == row.id))
        )
        seed = fresh_seed_of(session, campaign_studies)
        now = utcnow()
        moved = session.execute(
            update(Campaign)
            .where(
                Campaign.id == row.id,
                Campaign.stage == stage,
                Campaign.status == CampaignStatus.RUNNING,
                Campaign.stage_ready.is_(True),
            )
            .values(
                stage=stage + 1,
                stage_ready=False,
                setup_at=None,
                promotions=promotions,
                error=record["not_completed"] or row.error,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if cast(CursorResult[Any], moved).rowcount != 1:
            return False  # another caller moved it first
        _insert_stage(
            session, row.id, row.owner_id, campaign, stage + 1,
            enqueue=promotion.carried, seed=seed,
        )  # fmt: skip
        log.info(
            "campaign %s: stage %s promoted %d configurations into stage %s",
            row.id, stage + 1, len(promotion.carried), stage + 2,
        )  # fmt: skip
        return True

    @staticmethod
    def _record(session: Session, row: Campaign, promotions: list[dict[str, Any]]) -> None:
        session.execute(
            update(Campaign)
            .where(Campaign.id == row.id)
            .values(promotions=promotions)
            .execution_options(synchronize_session=False)
        )


def _not_completed(studies: list[Study]) -> str:
    """The studies of a stage that ended without completing, for the campaign's note."""
    parts = [
        f"study {study.id} {study.status}" + (f" ({study.error})" if study.error else "")
        for study in studies
        if study.status != StudyStatus.COMPLETED
    ]
    return "; ".join(parts)


def _insert_stage(
    session: Session,
    campaign_id: int,
    owner_id: int,
    campaign: CampaignSpec,
    index: int,
    *,
    enqueue: Sequence[Mapping[str, Any]] = (),
    seed: int | None = None,
    submission: bool = False,
) -> list[int]:
    """A stage's study rows, one per model: paused (no worker claims them) until set up."""
    ids = []
    for model in campaign.models(index):
        spec = parse_spec(
            campaign.study_spec(index, model, enqueue=enqueue, seed=seed, campaign_id=campaign_id),
            submission=submission,
        )
        row = new_study_row(owner_id, spec, status=StudyStatus.PAUSED)
        row.campaign_id, row.stage = campaign_id, index
        row.stage_model = model_name(model) or (
            spec.model.name if isinstance(spec.model.name, str) else None
        )
        row.error = PENDING_NOTE
        session.add(row)
        session.flush()
        row.optuna_name = optuna_study_name(row.id)
        ids.append(row.id)
    return ids
