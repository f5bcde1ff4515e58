"""Campaign test helpers: a three-stage campaign and a worker stand-in on a known landscape.

`train_stage` trains every trial of a study the way a worker does it through the store
(claim, Optuna ask with the spec's suggestions, attach, report, tell, finish), with a value
that is a deterministic function of the family, its parameters, the model and the seed, so that
tests know which configurations must be promoted. Several seeds are stored the way a worker
stores them (the mean, its spread and one entry per seed in the record).
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import time
from typing import Any

import optuna
from sqlalchemy import select

from search_space.samplers import make_sampler
from search_space.spec import parse_spec
from search_space.suggest import suggest_trial
from service.db import Run, Study
from service.store import Store

CAMPAIGN: dict[str, Any] = {
    "version": 1,
    "name": "campaign",
    "dataset": {"name": "cifar10"},
    "model": "lenet",
    "training": {"epochs": 1, "lr": {"low": 0.01, "high": 0.1, "log": True}},
    "activations": {
        "relu": {},
        "gelu": {},
        "smu": {"alpha": {"low": 0.0, "high": 0.5}},
        "leaky_relu": {"negative_slope": {"low": 0.01, "high": 0.3}},
    },
    "baselines": ["relu"],
    "sampler": {"name": "random", "seed": 3},
    "pruner": {"name": "none"},
    "n_trials": 14,
    "stages": [
        {"name": "screen", "promote": {"top": 2, "per": "family"}},
        {"name": "promote", "model": "resnet18", "training": {"lr": 0.05}, "promote": {"top": 1}},
        {"name": "confirm", "model": ["resnet18", "mobilenet_v2"], "seeds": 3},
    ],
}


def campaign(**changes: Any) -> dict[str, Any]:
    """The three-stage campaign with top-level fields changed."""
    return json.loads(json.dumps({**CAMPAIGN, **changes}))


PEAKS = {"relu": 0.0, "gelu": 0.0, "smu": 0.02, "leaky_relu": 0.01}


def landscape(family: str, params: dict[str, Any], model: str, seed: int, metric: str) -> float:
    """A family's accuracy: its peak near the middle of its range, the model's level, noise."""
    shape = 1.0
    for name, value in params.items():
        if name.startswith(f"{family}.") and isinstance(value, float):
            shape -= abs(value - 0.15)
    level = {"lenet": 0.6, "resnet18": 0.8, "mobilenet_v2": 0.75}.get(model, 0.7)
    key = f"{family}|{json.dumps(params, sort_keys=True)}|{model}|{seed}|{metric}"
    noise = random.Random(hashlib.sha256(key.encode()).digest()).gauss(0.0, 0.002)
    return level + PEAKS[family] * shape + noise


def train_trial(store: Store, study_id: int, worker_id: str = "w-test") -> bool:
    """Train the next trial of a study as a worker would; False when the study has none left."""
    claim = store.runs.claim_next(worker_id, [study_id])
    if claim is None:
        return False
    spec = parse_spec(claim.spec)
    study = optuna.load_study(
        study_name=claim.optuna_name, storage=store.db.optuna, sampler=make_sampler(spec)
    )
    trial = study.ask()
    config = suggest_trial(trial, spec)
    family, model = config.activation.family, str(config.model.name)
    params = dict(trial.params)
    seeds = [config.seed + i for i in range(config.seeds)]
    vals = [landscape(family, params, model, seed, "val") for seed in seeds]
    tests = [landscape(family, params, model, seed, "test") for seed in seeds]
    store.runs.attach_trial(
        claim.run_id,
        trial_id=trial._trial_id,
        number=trial.number,
        params=params,
        family=family,
        config=config.canonical(),
    )
    value = statistics.fmean(vals)
    store.runs.report_epoch(
        claim.run_id, 0, train_loss=1.0, val_acc=value, img_per_s=1.0, elapsed_s=1.0
    )
    study.tell(trial, value)
    several = len(seeds) > 1
    record = {
        "seeds": [
            {"seed": s, "val_acc": v, "test_acc": t}
            for s, v, t in zip(seeds, vals, tests, strict=True)
        ]
    }
    store.runs.finish(
        claim.run_id,
        state="complete",
        value=value,
        value_std=statistics.stdev(vals) if several else None,
        test_acc=statistics.fmean(tests),
        record=record if several else None,
    )
    store.runs.mark_synced(claim.run_id)
    return True


def train_study(store: Store, study_id: int) -> int:
    """Train every trial of a study; how many."""
    done = 0
    while train_trial(store, study_id):
        done += 1
    return done


def at_stage(store: Store, campaign_id: int, stage: int, timeout_s: float = 60.0) -> None:
    """Advance until `stage` is set up, or the campaign has gone past it or ended.

    One `advance()` is not enough where a server runs on the same database: its background
    loop may hold the set-up lease of the stage this call just opened, and then it sets the stage
    up itself (either does it, once), a moment later."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        store.campaigns.advance()
        info = store.campaigns.get(campaign_id)
        if info.status != "running" or info.stage > stage:
            return
        if info.stage == stage and info.stage_ready:
            return
        time.sleep(0.1)
    raise AssertionError(f"campaign {campaign_id} never reached stage {stage + 1}")


def stage_studies(store: Store, campaign_id: int, stage: int) -> list[Study]:
    """The study rows of one stage, in model order."""
    with store.db.session() as session:
        return list(
            session.scalars(
                select(Study)
                .where(Study.campaign_id == campaign_id, Study.stage == stage)
                .order_by(Study.id)
            )
        )


def expected_top(
    store: Store, study_ids: list[int], top: int, per: str, exclude: set[str]
) -> list[dict[str, Any]]:
    """The top configurations of the studies, computed here from their runs (not the store's
    selection code): distinct (family, params) by their best value, best first; of equal
    values, the one whose best run came first (tiny models on easy data often tie at 1.0)."""
    with store.db.session() as session:
        rows = session.execute(
            select(Run.family, Run.params, Run.value, Run.id).where(
                Run.study_id.in_(study_ids), Run.state == "complete"
            )
        ).all()
    best: dict[tuple[str, str], tuple[float, int]] = {}  # (-value, run id): smaller is better
    for family, params, value, run_id in rows:
        key = (family, json.dumps(params, sort_keys=True))
        best[key] = min(best.get(key, (-value, run_id)), (-value, run_id))
    ranked = sorted(best.items(), key=lambda item: item[1])
    picked: list[dict[str, Any]] = []
    taken: dict[str, int] = {}
    for (family, params), _ in ranked:
        group = family if per == "family" else ""
        if family in exclude or taken.get(group, 0) >= top:
            continue
        taken[group] = taken.get(group, 0) + 1
        picked.append(json.loads(params))
    return picked


def waiting_params(store: Store, optuna_name: str) -> list[dict[str, Any]]:
    """The fixed params of an Optuna study's enqueued trials, in order."""
    study = optuna.load_study(study_name=optuna_name, storage=store.db.optuna)
    return [dict(t.system_attrs.get("fixed_params", {})) for t in study.trials]
