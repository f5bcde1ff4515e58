"""Helpers of the dashboard tests: a worker played through the real store API, and trial records.

No GPU and no training: `FakeWorker` does what `workers.trial_runner` does around training (claim,
create the Optuna trial with the study's sampler, attach it, report epochs to the store and to
Optuna, finish, tell Optuna) with made-up accuracies and learned activation curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from search_space.contract import TrainingConfig
from search_space.samplers import make_sampler
from search_space.spec import parse_spec
from search_space.suggest import config_family, suggest_config
from service.store import Store

CURVE_X = [round(-4.0 + 0.1 * i, 4) for i in range(81)]
SITES = ("stem.act", "layer1.0.act", "layer2.0.act")


def smu(x: float, alpha: float, mu: float) -> float:
    """SMU (ACTIVATIONS.md §1): ½[(1+α)x + (1−α)·x·erf(μ(1−α)x)]."""
    return 0.5 * ((1 + alpha) * x + (1 - alpha) * x * math.erf(mu * (1 - alpha) * x))


def curve(alpha: float, mu: float, per_channel: bool = False) -> dict[str, list[float]]:
    """{"x", "f", "df"} of SMU on the grid (df by central differences), as search_space.curves
    writes it; a per-channel site also gets the envelope over channels (f_min … df_max)."""
    h = 1e-4
    f = [smu(x, alpha, mu) for x in CURVE_X]
    df = [(smu(x + h, alpha, mu) - smu(x - h, alpha, mu)) / (2 * h) for x in CURVE_X]
    entry = {"x": CURVE_X, "f": f, "df": df}
    if per_channel:
        entry |= {"f_min": [v - 0.2 for v in f], "f_max": [v + 0.2 for v in f],
                  "df_min": [v - 0.1 for v in df], "df_max": [v + 0.1 for v in df]}  # fmt: skip
    return entry


def record(value: float, test_acc: float, epochs: list[float], trained_mu: float) -> dict[str, Any]:
    """A TrialRecord.to_json()-shaped record with learned curves per site."""
    # The last site is per-channel: its curves carry an envelope.
    last = len(SITES) - 1
    initial = {site: curve(0.25, 1.0, i == last) for i, site in enumerate(SITES)}
    final = {
        site: curve(0.25 - 0.05 * i, trained_mu * (1 + 0.5 * i), i == last)
        for i, site in enumerate(SITES)
    }
    return {
        "val_acc": value,
        "best_val_acc": max(epochs),
        "best_epoch": epochs.index(max(epochs)),
        "test_acc": test_acc,
        "epochs_done": len(epochs),
        "train_loss": [2.0 / (e + 1) for e in range(len(epochs))],
        "val_accs": epochs,
        "img_per_s": 41234.5,
        "data_load_s": 16.4,  # decoding the data set: the first trial on this machine
        "data_s": 0.8,
        "train_s": 9.5,
        "eval_s": 0.7,
        "duration_s": 11.2,
        "peak_memory_bytes": 3 * 2**30,
        "peak_memory_kind": "cuda_max_allocated",
        "precision": "bf16",
        "activation_params": {
            "initial": {site: {"alpha": [0.25], "mu": [1.0]} for site in SITES},
            "final": {
                site: {"alpha": [0.25 - 0.05 * i], "mu": [trained_mu * (1 + 0.5 * i)]}
                for i, site in enumerate(SITES)
            },
        },
        "activation_curves": {"initial": initial, "final": final},
        "manifest": {
            "git_sha": "0123456789abcdef",
            "packages": {"torch": "2.14.1", "optuna": optuna.__version__},
            "cuda": "13.0",
            "cudnn": 91000,
            "device": "cuda:0",
            "gpu": "NVIDIA H100 80GB HBM3",
            "seed": 0,
            "data_checksum": "sha256:feedbeef",
            "hostname": "gpu-node-1",
            "python": "3.13.5",
            "platform": "Linux-6.12.48+deb13-amd64-x86_64-with-glibc2.41",
            # As the trainer writes it: every training option, one JSON object (issue 18: it
            # made every trial page 2,081 px wide as one unwrapped line).
            "resolved_training": TrainingConfig().resolved(),
        },
    }


@dataclass
class Started:
    """A claimed run with its Optuna trial."""

    run_id: int
    study: optuna.Study
    trial: optuna.Trial
    family: str
    params: dict[str, Any]


class FakeWorker:
    """A worker without torch: the store and Optuna calls of workers.trial_runner, made-up numbers."""

    def __init__(self, store: Store, worker_id: str = "w-gpu-node-1-0") -> None:
        self.store = store
        self.worker_id = worker_id
        self._studies: dict[str, optuna.Study] = {}
        store.workers.register(
            worker_id,
            hostname="gpu-node-1",
            pid=4242,
            device="cuda:0 (NVIDIA H100 80GB HBM3)",
            slot=0,
            version="test",
        )

    def start(self, study_id: int) -> Started | None:
        """Claim the study's next trial and create it in Optuna (None when its budget is used)."""
        claim = self.store.runs.claim_next(self.worker_id, [study_id])
        if claim is None:
            return None
        spec = parse_spec(claim.spec)
        study = self._studies.get(claim.optuna_name)
        if study is None:
            study = optuna.load_study(
                study_name=claim.optuna_name,
                storage=self.store.db.optuna,
                sampler=make_sampler(spec),
            )
            self._studies[claim.optuna_name] = study
        trial = study.ask()
        config = suggest_config(trial, spec)
        params = dict(trial.params)
        family = config_family(params)
        self.store.runs.attach_trial(
            claim.run_id,
            trial_id=trial._trial_id,
            number=trial.number,
            params=params,
            family=family,
            config=config,
        )
        self.store.workers.heartbeat(self.worker_id, claim.run_id)
        return Started(claim.run_id, study, trial, family, params)

    def epoch(self, run: Started, epoch: int, val_acc: float) -> None:
        """One epoch's report, to the store (live pages) and to Optuna (pruning)."""
        self.store.runs.report_epoch(
            run.run_id,
            epoch,
            train_loss=2.0 / (epoch + 1),
            val_acc=val_acc,
            img_per_s=40000.0 + 100 * epoch,
            elapsed_s=1.5 * (epoch + 1),
            worker_id=self.worker_id,
        )
        run.trial.report(val_acc, epoch)

    def beat(
        self,
        run: Started,
        *,
        epoch: int,
        step: int,
        steps: int = 782,
        epochs: int = 10,
        img_per_s: float = 1250.0,
        batch: int = 64,
        phase: str = "training",
    ) -> dict[str, Any]:
        """A heartbeat carrying live progress, as workers.progress.LiveProgress.snapshot() makes
        it (ETA: the steps left in the trial at that rate), through the worker's own store call."""
        left = (epochs - epoch) * steps - step
        progress: dict[str, Any] = {
            "phase": phase, "seed_index": 0, "seeds": 1, "epochs": epochs, "epoch": epoch,
            "step": step, "steps": steps, "img_per_s": img_per_s,
            "eta_s": left * batch / img_per_s,
        }  # fmt: skip
        if phase == "data":
            progress = {"phase": "data"}
        self.store.workers.heartbeat(self.worker_id, run.run_id, progress)
        return progress

    def cancel(self, run: Started, epochs: list[float]) -> None:
        """Report some epochs, then stop as a cancelled study's trial does (finished epochs kept)."""
        for epoch, acc in enumerate(epochs):
            self.epoch(run, epoch, acc)
        self.store.runs.finish(
            run.run_id,
            state="cancelled",
            value=epochs[-1] if epochs else None,
            failure_reason="cancelled",
            failure_message="the study was cancelled",
            failure_epoch=len(epochs) - 1 if epochs else None,
        )
        run.study.tell(run.trial, state=TrialState.FAIL)

    def complete(self, run: Started, epochs: list[float], test_acc: float | None = None) -> None:
        """Report every epoch and finish with the last epoch's accuracy and a full record."""
        for epoch, acc in enumerate(epochs):
            self.epoch(run, epoch, acc)
        value = epochs[-1]
        test = value - 0.01 if test_acc is None else test_acc
        mu = float(run.params.get("smu.mu", run.params.get("mu", 1.5)))
        self.store.runs.finish(
            run.run_id,
            state="complete",
            value=value,
            test_acc=test,
            record=record(value, test, epochs, mu),
            log_tail=f"epoch {len(epochs)}: val_acc={value:.4f}\ndone\n",
        )
        run.study.tell(run.trial, value)

    def prune(self, run: Started, epochs: list[float]) -> None:
        """Report some epochs, then end the trial as pruned."""
        for epoch, acc in enumerate(epochs):
            self.epoch(run, epoch, acc)
        self.store.runs.finish(run.run_id, state="pruned", value=None)
        run.study.tell(run.trial, state=TrialState.PRUNED)

    def fail(self, run: Started, reason: str, message: str, log_tail: str) -> None:
        """End the trial as failed (e.g. diverged) with its message and log tail."""
        self.epoch(run, 0, 0.1)
        self.store.runs.finish(
            run.run_id,
            state="failed",
            failure_reason=reason,
            failure_message=message,
            failure_epoch=0,
            log_tail=log_tail,
        )
        run.study.tell(run.trial, state=TrialState.FAIL)


def made_up_accuracy(family: str, params: dict[str, Any], epoch: int) -> float:
    """A plausible learning curve: families differ, parameters matter, later epochs are better."""
    base = {"relu": 0.86, "gelu": 0.87, "smu": 0.885, "pau": 0.875}.get(family, 0.86)
    numeric = [float(v) for v in params.values() if isinstance(v, int | float)]
    ceiling = base - 0.02 * min(1.0, abs(sum(numeric)) / 10)
    return round(ceiling * (1 - 0.6 * math.exp(-0.8 * (epoch + 1))), 4)


def curve_of(family: str, params: dict[str, Any], epochs: int) -> list[float]:
    """made_up_accuracy for every epoch."""
    return [made_up_accuracy(family, params, e) for e in range(epochs)]
