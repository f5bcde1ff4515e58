"""Submitted studies: creation (with their Optuna study and baselines) and lifecycle."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import optuna
from sqlalchemy import CursorResult, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from search_space.spec import MAX_DESCRIPTION_CHARS, StudySpec, parse_spec
from search_space.suggest import baseline_params, trial_budget
from service.db import (
    ACTIVE_STUDY_STATUSES,
    FINAL_STUDY_STATUSES,
    LIVE_WORKER_STATUSES,
    RUNNABLE_STUDY_STATUSES,
    Run,
    RunState,
    Study,
    StudyStatus,
    User,
    Worker,
    utcnow,
)
from service.db.optuna_storage import optuna_study_name
from service.store.base import Conflict, Database, NotFound
from service.store.users import UserInfo

log = logging.getLogger(__name__)

CANNOT_RUN_ATTR = "actsearch_cannot_run:"  # + hostname: an Optuna study system attribute

# action -> (statuses it is allowed from, status it leads to)
TRANSITIONS: dict[str, tuple[tuple[StudyStatus, ...], StudyStatus]] = {
    "cancel": (ACTIVE_STUDY_STATUSES, StudyStatus.CANCELLED),
    "pause": (RUNNABLE_STUDY_STATUSES, StudyStatus.PAUSED),
    "resume": ((StudyStatus.PAUSED,), StudyStatus.RUNNING),
}


@dataclass(frozen=True)
class StudyInfo:
    """A study as the rest of the code sees it."""

    id: int
    name: str
    description: str
    owner_id: int
    owner: str
    status: str
    priority: int
    n_trials: int
    spec: dict[str, Any]
    optuna_name: str
    error: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, int] = field(default_factory=dict)  # runs by state (budget-counting ones)
    confirms_study_id: int | None = None  # the study whose configurations this one confirms
    campaign_id: int | None = None  # the campaign whose stage this study is
    stage: int | None = None  # that stage's index (0 = the first)
    stage_model: str | None = None  # the model of a stage's study (one per model: transfer)


def study_info(row: Study, owner: str, counts: Mapping[str, int] | None = None) -> StudyInfo:
    """The domain view of a study row."""
    return StudyInfo(
        id=row.id,
        name=row.name,
        description=row.description,
        owner_id=row.owner_id,
        owner=owner,
        status=row.status,
        priority=row.priority,
        n_trials=row.n_trials,
        spec=row.spec,
        optuna_name=row.optuna_name,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        counts=dict(counts or {}),
        confirms_study_id=row.confirms_study_id,
        campaign_id=row.campaign_id,
        stage=row.stage,
        stage_model=row.stage_model,
    )


def new_study_row(
    owner_id: int,
    spec: StudySpec,
    *,
    key: str | None = None,
    confirms: int | None = None,
    status: StudyStatus = StudyStatus.QUEUED,
) -> Study:
    """A new as_studies row for a parsed spec (its optuna_name is set once it has an id)."""
    now = utcnow()
    return Study(
        name=spec.name,
        description=spec.description or "",
        owner_id=owner_id,
        spec=spec.model_dump(mode="json"),
        spec_version=spec.version,
        status=status,
        priority=spec.priority,
        # The budget: n_trials, or a smaller grid's size (a grid study ends when searched).
        n_trials=trial_budget(spec),
        optuna_name=f"pending-{uuid.uuid4().hex}",
        idempotency_key=key,
        confirms_study_id=confirms,
        created_at=now,
        updated_at=now,
    )


def create_optuna_study(db: Database, study_id: int, spec: StudySpec) -> None:
    """A study's Optuna study with its baselines, then the spec's `enqueue`, enqueued.

    Idempotent (load_if_exists, skip_if_exists): a campaign's stage set up again after a crash
    in the middle gets each configuration once. Not safe for two callers at once: enqueueing
    is check-then-insert, so callers serialise (Studies.create owns its new study; campaigns
    hold a lease).
    """
    study = optuna.create_study(
        storage=db.optuna,
        study_name=optuna_study_name(study_id),
        directions=spec.directions(),  # [maximize] or [maximize, minimize] (a cost)
        load_if_exists=True,
    )
    study.set_user_attr("actsearch_study_id", study_id)
    for params in baseline_params(spec):
        study.enqueue_trial(params, skip_if_exists=True)
    for params in spec.enqueue:  # after the baselines: confirm studies, campaign stages
        study.enqueue_trial(dict(params), skip_if_exists=True)


def cancel_queued_runs(session: Session, study_id: int) -> None:
    """Retries of a study waiting for a worker will never run: cancelled."""
    for run in session.scalars(
        select(Run).where(Run.study_id == study_id, Run.state == RunState.QUEUED)
    ):
        run.state = RunState.CANCELLED
        run.failure_reason = "cancelled"
        run.finished_at = utcnow()


def run_counts(session: Session, study_id: int) -> dict[str, int]:
    """Runs of a study by state, counting only those that use budget (retried losses do not)."""
    rows = session.execute(
        select(Run.state, func.count())
        .where(Run.study_id == study_id, Run.counts_budget.is_(True))
        .group_by(Run.state)
    ).all()
    counts = {state.value: 0 for state in RunState}
    counts.update({state: n for state, n in rows})
    return counts


RETRYABLE = (StudyStatus.FAILED, StudyStatus.CANCELLED)
RETRY_SUFFIX = " (retry)"
MAX_NAME = 200  # as_studies.name


def transition_hint(action: str, status: str, study_id: int) -> str:
    """What to do instead of an action a study's state refuses ("" when nothing to add)."""
    if action == "resume" and status in RETRYABLE:
        return (
            f"; a {status} study does not resume: `actsearch retry {study_id}` (POST "
            f"/api/v1/studies/{study_id}/retry) runs its spec again as a new study"
        )
    if action == "resume" and status == StudyStatus.COMPLETED:
        return f"; to run it again: `actsearch clone {study_id}`"
    return ""


def retry_refusal(info: StudyInfo) -> str | None:
    """Why a study cannot be retried (None: it can): only a failed or cancelled one is."""
    sid = info.id
    if info.confirms_study_id is not None:
        return (
            f"study {sid} is a confirm study: make a new one with `actsearch confirm "
            f"{info.confirms_study_id}` (it picks fresh seeds)"
        )
    if info.status in RETRYABLE:
        return None
    if info.status == StudyStatus.PAUSED:
        return f"study {sid} is paused, not over: resume it (`actsearch resume {sid}`)"
    if info.status == StudyStatus.COMPLETED:
        return f"study {sid} completed: to run it again, clone it (`actsearch clone {sid}`)"
    return (
        f"study {sid} is {info.status}, not over: only a failed or cancelled study is retried "
        f"(cancel it first to start it over)"
    )


def retry_spec(info: StudyInfo) -> dict[str, Any]:
    """A retry's spec: the source's, named "<name> (retry)", its description saying so."""
    name = info.name if info.name.endswith(RETRY_SUFFIX) else info.name + RETRY_SUFFIX
    if len(name) > MAX_NAME:
        name = info.name[: MAX_NAME - len(RETRY_SUFFIX)] + RETRY_SUFFIX
    note = f"retry of study {info.id}"
    description = f"{note}: {info.description}" if info.description else note
    return {
        **info.spec,
        "name": name,
        "description": description[:MAX_DESCRIPTION_CHARS],
    }


class Studies:
    """Create studies and move them through their lifecycle."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        owner: UserInfo,
        spec_input: str | Mapping[str, Any],
        idempotency_key: str | None = None,
        *,
        confirms_study_id: int | None = None,
        check: Callable[[Session], None] | None = None,
    ) -> tuple[StudyInfo, bool]:
        """Validate the spec, store it, create its Optuna study and enqueue its baselines and
        the spec's `enqueue` configurations.

        Returns (study, created); created is False when `idempotency_key` named an earlier one.
        Raises search_space.spec.SpecError for an invalid spec. `confirms_study_id`: the study
        a confirm study re-trains (see `confirm`). `check` runs in the insert's transaction,
        before the insert (a confirm study's seeds are checked there); what it raises stops it.
        """
        # A new spec: the submission-only checks too (stored specs are spared them). Its bounds
        # keep priority and n_trials storable.
        spec = parse_spec(spec_input, submission=True)
        if idempotency_key:
            earlier = self._by_key(owner.id, idempotency_key, spec)
            if earlier is not None:
                return earlier, False
        try:
            study_id = self._insert(owner, spec, idempotency_key, confirms_study_id, check)
        except IntegrityError:
            # A concurrent request with the same key won the race: answer with its study.
            earlier = self._by_key(owner.id, idempotency_key or "", spec)
            if earlier is None:
                raise
            return earlier, False
        try:
            create_optuna_study(self.db, study_id, spec)
        except Exception:
            self._delete_rows(study_id)
            raise
        return self.get(study_id), True

    def _by_key(self, owner_id: int, key: str, spec: StudySpec) -> StudyInfo | None:
        with self.db.session() as session:
            row = session.scalars(
                select(Study).where(Study.owner_id == owner_id, Study.idempotency_key == key)
            ).first()
            if row is None:
                return None
            if row.spec != spec.model_dump(mode="json"):
                raise Conflict(
                    f"Idempotency-Key {key!r} was already used for study {row.id} with another spec"
                )
            study_id = row.id
        return self.get(study_id)

    def _insert(
        self,
        owner: UserInfo,
        spec: StudySpec,
        key: str | None,
        confirms: int | None = None,
        check: Callable[[Session], None] | None = None,
    ) -> int:
        # immediate: on SQLite the check and the insert are one writer's, as the row lock a
        # check takes makes them on PostgreSQL.
        with self.db.session(immediate=check is not None) as session:
            if check is not None:
                check(session)
            row = new_study_row(owner.id, spec, key=key, confirms=confirms)
            session.add(row)
            session.flush()
            row.optuna_name = optuna_study_name(row.id)
            return row.id

    def _delete_rows(self, study_id: int) -> bool:
        # One conditional DELETE (its runs go by ON DELETE CASCADE): of racing deletes, exactly
        # one sees the row; the others match nothing (PostgreSQL re-checks a row it waited on).
        with self.db.session(immediate=True) as session:
            done = session.execute(delete(Study).where(Study.id == study_id))
            return bool(cast(CursorResult[Any], done).rowcount)

    def retry(
        self, owner: UserInfo, study_id: int, idempotency_key: str | None = None
    ) -> tuple[StudyInfo, bool]:
        """A new study with a failed or cancelled study's spec (retry_spec); Conflict with what
        to do instead for any other study. Returns (study, created) as `create`."""
        source = self.get(study_id)
        why = retry_refusal(source)
        if why is not None:
            raise Conflict(why)
        return self.create(owner, retry_spec(source), idempotency_key)

    def get(self, study_id: int) -> StudyInfo:
        """A study with its run counts."""
        with self.db.session() as session:
            row = session.get(Study, study_id)
            if row is None:
                raise NotFound(f"study {study_id} does not exist")
            owner = session.get(User, row.owner_id)
            return study_info(row, owner.name if owner else "?", run_counts(session, study_id))

    def transition(self, study_id: int, action: str) -> StudyInfo:
        """cancel / pause / resume; Conflict when the study's state does not allow it."""
        if action not in TRANSITIONS:
            raise ValueError(f"unknown action {action!r}; valid: {', '.join(TRANSITIONS)}")
        allowed, target = TRANSITIONS[action]
        with self.db.session(immediate=True) as session:
            row = session.get(Study, study_id, with_for_update=not self.db.sqlite)
            if row is None:
                raise NotFound(f"study {study_id} does not exist")
            if row.status not in allowed:
                raise Conflict(
                    f"cannot {action} study {study_id}: it is {row.status}"
                    + transition_hint(action, row.status, study_id)
                )
            now = utcnow()
            if action == "resume" and row.started_at is None:
                target = StudyStatus.QUEUED
            row.status = target
            row.updated_at = now
            if target == StudyStatus.CANCELLED:
                row.finished_at = now
                # Running ones stop within one epoch.
                cancel_queued_runs(session, study_id)
        return self.get(study_id)

    def delete(self, study_id: int, *, with_campaign: bool = False) -> None:
        """Delete a study, its runs and its Optuna study; NotFound if it is gone (or going).

        A campaign's stage study goes with its campaign only (`with_campaign`): alone, its
        stage would silently lose it (Conflict saying what to do instead).
        """
        info = self.get(study_id)
        if info.campaign_id is not None and not with_campaign:
            raise Conflict(
                f"study {study_id} is stage {(info.stage or 0) + 1} of campaign "
                f"{info.campaign_id}: delete the campaign (DELETE /api/v1/campaigns/"
                f"{info.campaign_id}), or cancel this study"
            )
        if not self._delete_rows(study_id):  # a concurrent delete won
            raise NotFound(f"study {study_id} does not exist")
        try:
            optuna.delete_study(study_name=info.optuna_name, storage=self.db.optuna)
        except KeyError:
            log.warning("optuna study %s was already gone", info.optuna_name)

    def cannot_run_on(self, study_id: int, hostname: str, message: str, grace_s: float) -> bool:
        """A worker on `hostname` cannot run this study (e.g. no data there); True if failed.

        Data and packages belong to a machine, so one machine that lacks them must not fail a
        study other machines can run. The refusal is recorded per host (an Optuna study system
        attribute, so racing workers never overwrite each other); the study fails only once
        every host with a live worker has refused it, else it carries a note and waits for them.
        """
        info = self.get(study_id)
        storage = self.db.optuna
        optuna_id = storage.get_study_id_from_name(info.optuna_name)
        storage.set_study_system_attr(optuna_id, CANNOT_RUN_ATTR + hostname, message)
        refused = {
            key[len(CANNOT_RUN_ATTR) :]: str(value)
            for key, value in storage.get_study_system_attrs(optuna_id).items()
            if key.startswith(CANNOT_RUN_ATTR)
        }
        able = self._live_hosts(grace_s) - refused.keys()
        if not able:
            hosts = ", ".join(f"{host}: {why}" for host, why in sorted(refused.items()))
            self.fail(
                study_id, message if len(refused) == 1 else f"no machine can run it ({hosts})"
            )
            return True
        self._note(study_id, f"{hostname} cannot run this study ({message}); "
                   f"left to the workers on {', '.join(sorted(able))}")  # fmt: skip
        return False

    def _live_hosts(self, grace_s: float) -> set[str]:
        with self.db.session() as session:
            return set(
                session.scalars(
                    select(Worker.hostname).where(
                        Worker.status.in_(LIVE_WORKER_STATUSES),
                        Worker.heartbeat_at >= self.db.silent_since(grace_s),
                    )
                )
            )

    def _note(self, study_id: int, message: str) -> None:
        with self.db.session() as session:
            row = session.get(Study, study_id)
            if row is not None and row.status not in FINAL_STUDY_STATUSES:
                row.error = message

    def fail(self, study_id: int, message: str) -> None:
        """Mark a study failed with a message for its owner (e.g. its data cannot be found)."""
        with self.db.session() as session:
            row = session.get(Study, study_id)
            if row is None or row.status in FINAL_STUDY_STATUSES:
                return
            row.status = StudyStatus.FAILED
            row.error = message
            row.updated_at = row.finished_at = utcnow()
            cancel_queued_runs(session, study_id)
