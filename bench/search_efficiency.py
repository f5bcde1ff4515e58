"""Search efficiency: wasted trainings, the right winner, and false "better" verdicts.

A landscape with a known truth (EVIDENCE.md, "worth checking in a benchmark"): activation
families with true mean accuracies and per-seed noise, parameter-free ones among them, some
exactly as good as the baseline. Each replication runs, on a fresh SQLite database:

- actsearch: the study spec through the real code (spec, TPE sampler, worker loop with its claims,
  the trainings ledger and `repeats: reseed`, the reconciler), then a confirm study
  (service.store.confirm) of each family's best configuration with fresh seeds, then the
  leaderboard's verdicts (service.store.queries.leaderboard: Welch + Holm on test accuracy).
  The "training" is trivial: the landscape's value for the configuration plus the seed's noise,
  deterministic in (configuration, seed), so a repeat would give the same number again.
- plain Optuna TPE on the same landscape and search space (search_space.suggest), with the same
  number of trainings in all, each trial trained with the study's one seed, as Optuna users do;
  its answers are the best trial's family and, per family, "better" when its best value beats
  the baseline's best (the headline a search prints).

- a campaign (service.store.campaigns) on the same landscape with a cheap fidelity: a first
  stage screens on the "proxy" model, whose values are the true means compressed and shifted
  (PROXY_SCALE, PROXY_BASE) with more noise (PROXY_NOISE) and whose trainings cost a tenth of a
  full one; the campaign promotes each family's best configurations (`--top`) into a second
  stage at full fidelity with fresh seeds (`--seeds`), whose comparisons are the verdicts. It
  runs through the real code too: the campaign spec, its stages' studies, the promotion and the
  exactly-once stage transition (`Campaigns.advance`).

Reported against each other, in the same run: trainings wasted on a configuration and seed
trained before, the simulated cost (in full trainings), how often the truly best family is
ranked first, and how often a family exactly as good as the baseline is called better
(actsearch's must stay ≤ α after correction).

    .venv/bin/python bench/search_efficiency.py [--replications 20] [--trials 30] [--seeds 5]
        [--screen-trials 60] [--top 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine_info import cpu_model  # noqa: E402
from search_space.contract import DatasetConfig, TrialConfig  # noqa: E402
from search_space.spec import parse_spec  # noqa: E402
from search_space.suggest import suggest_trial  # noqa: E402
from service.db import make_engine  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import Store  # noqa: E402
from service.store.confirm import create_confirm_study  # noqa: E402
from service.store.queries.leaderboard import leaderboard  # noqa: E402
from workers.options import SlotOptions  # noqa: E402
from workers.training import Training  # noqa: E402
from workers.worker import SlotWorker  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BASE = 0.800  # the baseline family's true accuracy
NOISE = 0.004  # per-seed standard deviation: ±0.4 points, as measured on the proxy network
ALPHA = 0.05
# True accuracy of each family as a function of its parameters (a scale-free shape, so that
# the sampler has something to find). gelu and silu are exactly as good as relu (the nulls).
LANDSCAPE: dict[str, Callable[[dict[str, float]], float]] = {
    "relu": lambda p: BASE,
    "gelu": lambda p: BASE,
    "silu": lambda p: BASE,
    "elu": lambda p: BASE - 0.006,
    "smu": lambda p: BASE + 0.010 * max(0.0, 1.0 - ((p["alpha"] - 0.25) / 0.25) ** 2),
    "swish": lambda p: BASE + 0.004 * math.exp(-(math.log(p["beta"] / 1.7) ** 2)),
}
BEST_FAMILY = "smu"
NULL_FAMILIES = ("gelu", "silu")
# The cheap fidelity (model "proxy"): differences compressed, more noise, a tenth of the cost.
PROXY_MODEL = "proxy"
PROXY_BASE = 0.700
PROXY_SCALE = 0.7
PROXY_NOISE = 0.006
PROXY_COST = 0.1


def spec(trials: int, sampler_seed: int) -> dict[str, Any]:
    """The study: every family, relu the baseline, TPE, each repeat a fresh seed."""
    return {
        "name": "search-efficiency",
        "dataset": {"name": "cifar10"},  # never loaded: the landscape has no data
        "model": {"name": "lenet", "width": 0.25},
        "training": {"epochs": 1},
        "activations": {
            "relu": {},
            "gelu": {},
            "silu": {},
            "elu": {},
            "smu": {"alpha": {"low": 0.0, "high": 0.5}},
            "swish": {"beta": {"low": 0.25, "high": 4.0, "log": True}},
        },
        "baselines": ["relu"],
        "sampler": {"name": "tpe", "seed": sampler_seed, "n_startup_trials": 8},
        "pruner": {"name": "none"},
        "n_trials": trials,
        "repeats": "reseed",
    }


def true_mean(config: TrialConfig) -> float:
    """The landscape at a configuration (the proxy's: compressed and shifted)."""
    activation = config.activation
    value = LANDSCAPE[activation.family](dict(activation.resolved.params))
    if config.model.name == PROXY_MODEL:
        return PROXY_BASE + PROXY_SCALE * (value - BASE)
    return value


def cost(config: TrialConfig) -> float:
    """One training's simulated cost, in full trainings."""
    return PROXY_COST if config.model.name == PROXY_MODEL else 1.0


def noisy(config: TrialConfig, seed: int, metric: str, replication: int) -> float:
    """The landscape plus the seed's noise: deterministic in (configuration, seed)."""
    identity = config.configuration_key("landscape", f"rep{replication}")
    digest = hashlib.sha256(f"{identity}|{seed}|{metric}".encode()).digest()
    sigma = PROXY_NOISE if config.model.name == PROXY_MODEL else NOISE
    draw = random.Random(int.from_bytes(digest[:8], "big")).gauss(0.0, sigma)
    return true_mean(config) + draw


# -- the trivial training, through the real worker loop --------------------------------------
@dataclass
class _Record:
    val_acc: float
    best_val_acc: float
    test_acc: float
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "img_per_s": 0.0, "peak_memory_bytes": 0}


@dataclass
class _Epoch:
    epoch: int
    epochs: int
    train_loss: float
    val_acc: float
    img_per_s: float
    elapsed_s: float
    lr: float


class LandscapeTraining(Training):
    """One "training" = the landscape's value plus the seed's noise; counts what it trains."""

    def __init__(self, replication: int) -> None:
        self.replication = replication
        self.trained: Counter[tuple[str, int]] = Counter()
        self.cost = 0.0

    def device_description(self, gpu_label: str) -> str:
        return "cpu (landscape)"

    def load_data(self, dataset: DatasetConfig) -> Any:
        return None

    def identity(self, data: Any) -> tuple[str, str]:
        return "landscape", f"rep{self.replication}"

    def prescreen(self, config: TrialConfig) -> tuple[bool, str | None]:
        return True, None

    def train(self, config, data, on_epoch, should_stop, on_step=None):  # type: ignore[no-untyped-def]
        self.trained[(config.configuration_key("", ""), config.seed)] += 1
        self.cost += cost(config)
        val = noisy(config, config.seed, "val", self.replication)
        test = noisy(config, config.seed, "test", self.replication)
        on_epoch(_Epoch(0, 1, 1.0, val, 1.0, 0.0, 0.1))
        return _Record(val, val, test, 0.0)


def _run_study(store: Store, study_id: int, training: LandscapeTraining) -> None:
    settings = Settings(database_url=store.db.url, heartbeat_s=30.0, grace_s=600.0)
    worker = SlotWorker(settings, SlotOptions(studies=(study_id,)), training=training, store=store)

    def watch() -> None:
        while not worker.stopping.wait(0.05):
            if store.studies.get(study_id).status not in ("queued", "running"):
                worker.request_stop()

    threading.Thread(target=watch, daemon=True).start()
    worker.run()


# -- one replication ----------------------------------------------------------------------------
@dataclass
class Outcome:
    """What one method answered in one replication."""

    trainings: int
    wasted: int  # trainings of a (configuration, seed) trained before
    ranked_first: str | None
    called_better: list[str]
    cost: float = 0.0  # simulated, in full trainings (a proxy training costs PROXY_COST)


def run_actsearch(replication: int, trials: int, seeds: int) -> Outcome:
    """The study, its confirm study and the leaderboard's verdicts, through the real code."""
    with tempfile.TemporaryDirectory() as home:
        url = f"sqlite:///{Path(home) / 'bench.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        store = Store.open(url)
        try:
            owner, _ = store.users.create("bench")
            study, _ = store.studies.create(owner, spec(trials, replication))
            training = LandscapeTraining(replication)
            _run_study(store, study.id, training)
            confirm = create_confirm_study(store.studies, owner, study.id, top=1, seeds=seeds)
            _run_study(store, confirm.id, training)
            board = leaderboard(store.db, study.id)
        finally:
            store.dispose()
    return _answer(board, training)


def _answer(board: Any, training: LandscapeTraining) -> Outcome:
    """What a leaderboard with confirmations answers: the family with the best confirmed mean,
    and the families it calls better."""
    confirmed = [row for row in board.rows if row.confirmation is not None]
    first = max(
        confirmed,
        key=lambda row: row.confirmation.mean if row.confirmation.mean is not None else -1.0,
        default=None,
    )
    return Outcome(
        trainings=sum(training.trained.values()),
        wasted=sum(count - 1 for count in training.trained.values()),
        ranked_first=first.family if first else None,
        called_better=[row.family for row in board.rows if row.verdict == "better"],
        cost=training.cost,
    )


def campaign_spec(screen_trials: int, top: int, seeds: int, sampler_seed: int) -> dict[str, Any]:
    """The campaign: the same families, screened on the proxy, the best `top` of each family
    confirmed at full fidelity with `seeds` fresh seeds."""
    base = spec(screen_trials, sampler_seed)
    base["name"] = "search-efficiency campaign"
    base["stages"] = [
        {
            "name": "screen",
            "model": {"name": PROXY_MODEL},
            "training": {"epochs": 1},
            "promote": {"top": top, "per": "family"},
        },
        {"name": "confirm", "seeds": seeds},
    ]
    return base


def run_campaign(replication: int, screen_trials: int, top: int, seeds: int) -> Outcome:
    """The campaign through the real code: each stage's study run, then advance()."""
    with tempfile.TemporaryDirectory() as home:
        url = f"sqlite:///{Path(home) / 'bench.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        store = Store.open(url)
        try:
            owner, _ = store.users.create("bench")
            document = campaign_spec(screen_trials, top, seeds, replication)
            campaign, _ = store.campaigns.create(owner, document)
            training = LandscapeTraining(replication)
            seen: set[int] = set()
            while store.campaigns.get(campaign.id).status == "running":
                for study_id in store.campaigns.study_ids(campaign.id):
                    if study_id not in seen:
                        seen.add(study_id)
                        _run_study(store, study_id, training)
                store.campaigns.advance()
            board = leaderboard(store.db, max(seen))  # the confirming stage's study
        finally:
            store.dispose()
    return _answer(board, training)


def run_plain_optuna(replication: int, budget: int) -> Outcome:
    """Plain TPE on the same space: every trial trained with the study's one seed."""
    study_spec = parse_spec(spec(budget, replication))
    trained: Counter[str] = Counter()

    def objective(trial: optuna.Trial) -> float:
        config = suggest_trial(trial, study_spec)
        trained[config.configuration_key("", "")] += 1
        trial.set_user_attr("family", config.activation.family)
        return noisy(config, config.seed, "val", replication)

    sampler = optuna.samplers.TPESampler(seed=replication, n_startup_trials=8)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"activation": "relu"})  # the baseline first, as the spec says
    study.optimize(objective, n_trials=budget)
    best_by_family: dict[str, float] = {}
    for trial in study.trials:
        family = trial.user_attrs["family"]
        best_by_family[family] = max(best_by_family.get(family, -1.0), float(trial.value or 0))
    baseline = best_by_family.get("relu", -1.0)
    return Outcome(
        trainings=budget,
        cost=float(budget),
        wasted=sum(count - 1 for count in trained.values()),
        ranked_first=str(study.best_trial.user_attrs["family"]),
        called_better=[f for f, v in best_by_family.items() if f != "relu" and v > baseline],
    )


# -- the benchmark --------------------------------------------------------------------------------
def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    """Totals and rates over the replications."""
    nulls = len(outcomes) * len(NULL_FAMILIES)
    false_better = sum(1 for o in outcomes for family in NULL_FAMILIES if family in o.called_better)
    return {
        "trainings": sum(o.trainings for o in outcomes),
        "wasted_trainings": sum(o.wasted for o in outcomes),
        "best_family_ranked_first": sum(o.ranked_first == BEST_FAMILY for o in outcomes)
        / len(outcomes),
        "false_better_rate": false_better / nulls,
        "false_better": false_better,
        "null_comparisons": nulls,
        "simulated_cost": round(sum(o.cost for o in outcomes), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replications", type=int, default=20)
    parser.add_argument("--trials", type=int, default=30, help="search trials per study")
    parser.add_argument("--seeds", type=int, default=5, help="fresh seeds per confirmed config")
    parser.add_argument("--screen-trials", type=int, default=60, help="campaign: proxy trials")
    parser.add_argument("--top", type=int, default=2, help="campaign: configs promoted per family")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ours: list[Outcome] = []
    plain: list[Outcome] = []
    campaigns: list[Outcome] = []
    started = time.perf_counter()
    for replication in range(args.replications):
        mine = run_actsearch(replication, args.trials, args.seeds)
        ours.append(mine)
        plain.append(run_plain_optuna(replication, mine.trainings))
        campaigns.append(run_campaign(replication, args.screen_trials, args.top, args.seeds))
        print(
            f"replication {replication + 1}/{args.replications}: "
            f"actsearch first={mine.ranked_first} better={mine.called_better} "
            f"wasted={mine.wasted} | optuna first={plain[-1].ranked_first} "
            f"better={plain[-1].called_better} wasted={plain[-1].wasted} | campaign "
            f"first={campaigns[-1].ranked_first} better={campaigns[-1].called_better} "
            f"cost={campaigns[-1].cost:.1f}",
            flush=True,
        )
    result = {
        "benchmark": "search_efficiency",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "note": "trivial objective: the machine does not matter"},
        "landscape": {
            "baseline": "relu",
            "base_accuracy": BASE,
            "noise_per_seed": NOISE,
            "best_family": BEST_FAMILY,
            "null_families": list(NULL_FAMILIES),
            "true_peaks": {"smu": BASE + 0.010, "swish": BASE + 0.004, "elu": BASE - 0.006},
            "proxy": {
                "model": PROXY_MODEL,
                "value": f"{PROXY_BASE} + {PROXY_SCALE} × (true − {BASE})",
                "noise_per_seed": PROXY_NOISE,
                "cost_per_training": PROXY_COST,
            },
        },
        "settings": vars(args) | {"out": str(args.out), "alpha": ALPHA},
        "actsearch": summarize(ours),
        "plain_optuna_tpe": summarize(plain),
        "campaign": summarize(campaigns),
        "seconds": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"search_efficiency-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"written: {path}")
    worst = max(result["actsearch"]["false_better_rate"], result["campaign"]["false_better_rate"])
    return 0 if worst <= ALPHA else 1


def table(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table."""
    rows = [
        ("trainings", "trainings", str),
        ("simulated cost (full trainings)", "simulated_cost", lambda v: f"{v:,.0f}"),
        ("trainings wasted on a repeat", "wasted_trainings", str),
        ("truly best family ranked first", "best_family_ranked_first", lambda v: f"{v:.0%}"),
        (
            f"false 'better' for an equal family (α = {ALPHA})",
            "false_better_rate",
            lambda v: f"{v:.1%}",
        ),
    ]
    methods = ("actsearch", "plain_optuna_tpe", "campaign")
    lines = ["| | actsearch | plain Optuna TPE | campaign |", "|---|---:|---:|---:|"]
    for label, key, cell in rows:
        cells = " | ".join(cell(result[method][key]) for method in methods)
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
