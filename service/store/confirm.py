"""Confirm studies: a study's best configurations re-trained with fresh seeds (docs/evidence.md).

A search picks each family's best configuration on validation accuracy out of many: its own
numbers are optimistic. A confirm study re-trains the chosen configurations with seeds no
training of the source used, so that their test accuracy can say "better" or "worse".

Its spec is the source's, with:
- `enqueue`: the top K complete configurations of every family (their Optuna params, best
  validation value first, identical configurations once), the baseline family's first;
- `baselines`: none when the baseline family has a complete configuration (its best ones are
  enqueued like any family's); else the baseline, so that its defaults are trained;
- `n_trials`: exactly the configurations enqueued (every trial is one of them);
- `seeds` N and `seed` one past every seed the source and its earlier confirm studies used or
  reserved, so that no training repeats one of theirs;
- `repeats: reseed`, `reuse: study`, the random sampler (every trial is enqueued, it draws
  nothing) and no pruner (pruning would keep the lucky seeds only);
- `name` "<source name> — confirm", a description saying what it is.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from search_space.spec.limits import INT32_MAX, MAX_SEEDS
from service.db import Run, Study, Training
from service.store.base import Conflict, NotFound
from service.store.queries.leaderboard import baseline_family
from service.store.queries.summaries import SCORED
from service.store.studies import Studies, StudyInfo
from service.store.users import UserInfo

MAX_CONFIRM_TOP = 20  # configurations per family
NAME_SUFFIX = " — confirm"
MAX_NAME = 200  # as_studies.name


@dataclass(frozen=True)
class ConfirmPlan:
    """The spec of a confirm study, and what it trains."""

    spec: dict[str, Any]
    configurations: int
    first_seed: int


@dataclass(frozen=True)
class Candidate:
    """One distinct complete configuration and its best validation value."""

    family: str
    params: dict[str, Any]  # its Optuna params
    value: float


def top_configurations(
    session: Session,
    study_ids: Sequence[int],
    top: int,
    *,
    per: Literal["family", "overall"] = "family",
    exclude: Collection[str] = (),
) -> list[Candidate]:
    """The `top` best distinct complete configurations of the studies, best first: per family
    (each family's `top`), or overall (the `top` of all families together).

    A configuration is a family and its Optuna params; its value is its best complete run's in
    any of the studies (a configuration trained again, or on several models). Families in
    `exclude` (a campaign's baselines) are left out. Confirm studies and campaign promotions
    both choose with this.
    """
    rows = session.execute(
        select(Run.family, Run.params, Run.value)
        .where(
            Run.study_id.in_(list(study_ids)),
            SCORED,
            Run.family.is_not(None),
            Run.params.is_not(None),
        )
        .order_by(Run.value.desc(), Run.id)
    )
    chosen: list[Candidate] = []
    taken: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    for family, params, value in rows:
        key = (family, json.dumps(params, sort_keys=True))
        if family in exclude or key in seen:
            continue
        seen.add(key)
        if taken[family if per == "family" else ""] < top:
            taken[family if per == "family" else ""] += 1
            chosen.append(Candidate(str(family), dict(params), float(value)))
    return chosen


def best_configurations(
    session: Session, study_id: int, top: int
) -> dict[str, list[dict[str, Any]]]:
    """Each family's `top` best distinct complete configurations (Optuna params), best first."""
    chosen: dict[str, list[dict[str, Any]]] = {}
    for candidate in top_configurations(session, [study_id], top):
        chosen.setdefault(candidate.family, []).append(candidate.params)
    return chosen


def _last_seed(spec: dict[str, Any]) -> int:
    """The last seed a study's trials start from: seed + seeds − 1."""
    return int(spec.get("seed") or 0) + max(int(spec.get("seeds") or 1), 1) - 1


def _config_seeds(configs: Iterable[dict[str, Any] | None]) -> int:
    """The last seed any run's resolved config names (runs stored before the ledger)."""
    last = -1
    for config in configs:
        if config and isinstance(config.get("seed"), int):
            last = max(last, int(config["seed"]) + max(int(config.get("seeds") or 1), 1) - 1)
    return last


def fresh_seed(session: Session, source: Study) -> int:
    """One past every seed the source and its confirm studies trained, train or will train."""
    studies = [source.id, *session.scalars(
        select(Study.id).where(Study.confirms_study_id == source.id)
    )]  # fmt: skip
    return fresh_seed_of(session, studies)


def fresh_seed_of(session: Session, studies: Sequence[int]) -> int:
    """One past every seed these studies trained, train or will train (a campaign's stages)."""
    specs = session.scalars(select(Study.spec).where(Study.id.in_(studies)))
    last = max((_last_seed(dict(spec)) for spec in specs), default=-1)
    trained = session.scalar(select(func.max(Training.seed)).where(Training.study_id.in_(studies)))
    if trained is not None:
        last = max(last, int(trained))
    configs = session.scalars(select(Run.config).where(Run.study_id.in_(studies)))
    return max(last, _config_seeds(configs)) + 1


def _name(source_name: str) -> str:
    room = MAX_NAME - len(NAME_SUFFIX)
    stem = source_name if len(source_name) <= room else source_name[: room - 1] + "…"
    return stem + NAME_SUFFIX


def plan_confirm(session: Session, source: Study, top: int, seeds: int) -> ConfirmPlan:
    """The confirm study of `source` (Conflict when there is nothing to confirm)."""
    if not 1 <= top <= MAX_CONFIRM_TOP or not 2 <= seeds <= MAX_SEEDS:
        raise ValueError(f"top must be 1..{MAX_CONFIRM_TOP} and seeds 2..{MAX_SEEDS}")
    if source.confirms_study_id is not None:
        raise Conflict(
            f"study {source.id} is itself a confirm study (of study "
            f"{source.confirms_study_id}): confirm study {source.confirms_study_id} instead"
        )
    spec = dict(source.spec)
    baseline = baseline_family(spec)
    chosen = best_configurations(session, source.id, top)
    if not chosen:
        raise Conflict(
            f"study {source.id} has no complete trial to confirm yet: wait until some trials "
            f"complete (`actsearch status {source.id}`), then confirm"
        )
    order = sorted(chosen, key=lambda family: family != baseline)  # the baseline's first
    enqueue = [params for family in order for params in chosen[family]]
    baselines = [] if baseline in chosen else [baseline]
    first = fresh_seed(session, source)
    if first + seeds - 1 > INT32_MAX:
        raise Conflict(f"study {source.id} has used every seed up to {INT32_MAX}: none is fresh")
    n_trials = len(enqueue) + len(baselines)
    spec.update(
        name=_name(source.name),
        description=(
            f"Confirms study {source.id} ({source.name}): the best {top} configuration(s) of "
            f"each family and the {baseline} baseline re-trained with {seeds} fresh seeds "
            f"({first}..{first + seeds - 1}); verdicts on test accuracy."
        ),
        baselines=baselines,
        enqueue=enqueue,
        n_trials=n_trials,
        seeds=seeds,
        seed=first,
        repeats="reseed",
        reuse="study",
        sampler={"name": "random"},
        pruner={"name": "none"},
    )
    return ConfirmPlan(spec=spec, configurations=n_trials, first_seed=first)


PLAN_TRIES = 5  # a confirm request re-plans when a racing one took its seeds first


class _SeedsTaken(Exception):
    """Another confirm study of the source took these seeds between the plan and the insert."""


def _seeds_still_fresh(study_id: int, first_seed: int) -> Callable[[Session], None]:
    """The check a confirm study's insert runs: the source row locked (racing confirm requests
    queue on it), its seeds counted again; _SeedsTaken when one took them meanwhile."""

    def check(session: Session) -> None:
        source = session.scalars(
            select(Study).where(Study.id == study_id).with_for_update(key_share=True)
        ).one_or_none()
        if source is None:
            raise NotFound(f"study {study_id} does not exist")
        if fresh_seed(session, source) > first_seed:
            raise _SeedsTaken()

    return check


def create_confirm_study(
    studies: Studies, owner: UserInfo, study_id: int, *, top: int, seeds: int
) -> StudyInfo:
    """A confirm study of `study_id`, owned by `owner`: each family's `top` best complete
    configurations and the baseline re-trained with `seeds` fresh seeds. NotFound, or Conflict
    when there is nothing to confirm; ValueError for top or seeds out of bounds.

    Two requests at once get disjoint seeds: the plan is checked again in the insert's
    transaction, under the source row's lock, and made again when a racing request won."""
    for _ in range(PLAN_TRIES):
        with studies.db.session() as session:
            source = session.get(Study, study_id)
            if source is None:
                raise NotFound(f"study {study_id} does not exist")
            plan = plan_confirm(session, source, top, seeds)
        check = _seeds_still_fresh(study_id, plan.first_seed)
        try:
            study, _ = studies.create(owner, plan.spec, confirms_study_id=study_id, check=check)
        except _SeedsTaken:
            continue
        return study
    raise Conflict(f"study {study_id}: other confirm requests kept taking its fresh seeds; retry")
