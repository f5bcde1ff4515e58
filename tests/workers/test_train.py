"""train_trial on generated data: every model, failures, callbacks, determinism, the record."""

from __future__ import annotations

import copy
import json
import math

import optuna
import pytest
import torch
from torch import nn

from workers.models import MODEL_NAMES
from workers.train import (
    EpochReport,
    TrainingConfig,
    TrialCancelled,
    TrialFailure,
    lr_factor,
    param_groups,
    train_trial,
)

CPU = torch.device("cpu")


def config(model: str = "proxy", width: float = 0.25, **training) -> dict:
    """A resolved trial config (docs/architecture.md) sized for a CPU test."""
    train = {
        "epochs": 1,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "schedule": "onecycle",
        "warmup_epochs": 0.5,
        "label_smoothing": 0.0,
        "augment": {"crop_padding": 4, "flip": True},
        "precision": "auto",
        "compile": False,
        "eval_batch_size": 128,
    }
    train.update(training)
    return {
        "dataset": {"name": "cifar10", "val_size": 64, "train_subset": None, "split_seed": 0},
        "model": {"name": model, "width": width},
        "training": train,
        "activation": {"family": "gelu", "params": {}, "options": {}, "scope": "per_layer"},
        "seed": 0,
        "seeds": 1,
        "timeout_s": 600,
    }


class PerChannelSlope(nn.Module):
    """A learnable per-channel activation (PReLU-like) that only fits its own layer's width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.slope = nn.Parameter(torch.full((channels,), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, x * self.slope.view(1, -1, 1, 1))


def _gelu(channels: int) -> nn.Module:
    return nn.GELU()


PLAIN_FAMILIES = {
    "relu": lambda c: nn.ReLU(),
    "gelu": lambda c: nn.GELU(),
    "per_channel": PerChannelSlope,
}


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_every_model_trains_through_the_real_training_code(model: str, micro_splits) -> None:
    family = list(PLAIN_FAMILIES)[MODEL_NAMES.index(model) % len(PLAIN_FAMILIES)]
    cfg = config(model, width=0.125)
    record = train_trial(cfg, micro_splits, CPU, act_factory=PLAIN_FAMILIES[family])
    assert record.epochs_done == 1
    assert 0.0 <= record.val_acc <= 1.0 and 0.0 <= record.test_acc <= 1.0
    assert math.isfinite(record.train_loss[0]) and record.img_per_s > 0
    assert record.precision == "fp32"


def test_a_short_run_learns_the_generated_task(tiny_splits) -> None:
    record = train_trial(config(epochs=4), tiny_splits, CPU, act_factory=PLAIN_FAMILIES["gelu"])
    assert record.best_val_acc >= 0.6  # four classes: chance is 0.25
    assert record.train_loss[-1] < record.train_loss[0]


def test_same_seed_same_result_on_cpu(tiny_splits) -> None:
    cfg = config("proxy", epochs=2, width=0.25)
    first = train_trial(cfg, tiny_splits, CPU, act_factory=PerChannelSlope)
    second = train_trial(cfg, tiny_splits, CPU, act_factory=PerChannelSlope)
    assert first.val_accs == second.val_accs
    assert first.train_loss == second.train_loss
    other = train_trial({**cfg, "seed": 1}, tiny_splits, CPU, act_factory=PerChannelSlope)
    assert other.train_loss != first.train_loss


def test_on_epoch_reports_every_epoch(tiny_splits) -> None:
    reports: list[EpochReport] = []
    record = train_trial(
        config(epochs=3), tiny_splits, CPU, on_epoch=reports.append, act_factory=_gelu
    )
    assert [r.epoch for r in reports] == [0, 1, 2]
    assert all(r.epochs == 3 and r.img_per_s > 0 for r in reports)
    assert [r.val_acc for r in reports] == record.val_accs
    assert reports[0].elapsed_s < reports[-1].elapsed_s <= record.duration_s


def test_pruning_and_cancellation_pass_through_unchanged(tiny_splits) -> None:
    def prune(report: EpochReport) -> None:
        raise optuna.TrialPruned("pruned by the test")

    with pytest.raises(optuna.TrialPruned, match="by the test"):
        train_trial(config(epochs=2), tiny_splits, CPU, on_epoch=prune, act_factory=_gelu)

    def cancel(report: EpochReport) -> None:
        raise TrialCancelled("study cancelled")

    with pytest.raises(TrialCancelled, match="study cancelled"):
        train_trial(config(epochs=2), tiny_splits, CPU, on_epoch=cancel, act_factory=_gelu)


def test_should_stop_cancels_within_the_epoch(tiny_splits) -> None:
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(TrialCancelled):
        train_trial(config(epochs=3), tiny_splits, CPU, should_stop=should_stop, act_factory=_gelu)
    assert len(calls) == 2  # checked during the first epoch, not after the last


class BlowUp(nn.Module):
    """An activation that turns everything into NaN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float("nan")


def test_nan_loss_is_a_diverged_failure(tiny_splits) -> None:
    with pytest.raises(TrialFailure) as info:
        train_trial(config(epochs=3), tiny_splits, CPU, act_factory=lambda c: BlowUp())
    assert info.value.kind == "diverged" and info.value.epoch == 0


def test_huge_lr_diverges(tiny_splits) -> None:
    cfg = config("lenet", epochs=3, lr=1e8, schedule="constant", warmup_epochs=0)
    with pytest.raises(TrialFailure) as info:
        train_trial(cfg, tiny_splits, CPU, act_factory=_gelu)
    assert info.value.kind == "diverged"


def test_timeout(tiny_splits) -> None:
    cfg = {**config(epochs=3), "timeout_s": 1e-6}
    with pytest.raises(TrialFailure) as info:
        train_trial(cfg, tiny_splits, CPU, act_factory=_gelu)
    assert info.value.kind == "timeout" and info.value.epoch == 0


class OutOfMemory(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory(tiny_splits) -> None:
    with pytest.raises(TrialFailure) as info:
        train_trial(config(), tiny_splits, CPU, act_factory=lambda c: OutOfMemory())
    assert info.value.kind == "oom" and "Tried to allocate" in info.value.message


def test_other_errors_carry_the_traceback(tiny_splits) -> None:
    with pytest.raises(TrialFailure) as info:
        train_trial(config("resnet50"), tiny_splits, CPU, act_factory=_gelu)
    failure = info.value
    assert failure.kind == "error" and "resnet18" in failure.message
    assert failure.details is not None and "Traceback" in failure.details


def test_bad_training_settings_are_errors(tiny_splits) -> None:
    with pytest.raises(TrialFailure, match="unknown optimizer 'lion'; valid: sgd, adamw"):
        train_trial(config(optimizer="lion"), tiny_splits, CPU, act_factory=_gelu)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "linear", "constant"])
def test_schedules_warm_up_then_follow_their_shape(schedule: str) -> None:
    total, warmup = 100, 10
    factors = [lr_factor(s, total, warmup, schedule) for s in range(total)]
    assert all(0 < f <= 1 + 1e-9 for f in factors)
    assert factors[0] < factors[warmup - 1] <= factors[warmup] + 1e-9
    assert max(factors) == pytest.approx(1.0, abs=1e-2)
    if schedule == "constant":
        assert factors[-1] == 1.0
    else:
        assert factors[-1] < 0.05


def test_weight_decay_skips_norm_bias_and_activation_parameters() -> None:
    from workers.models import build_model
    from workers.train import SiteRecorder

    recorder = SiteRecorder(PerChannelSlope)
    model = build_model("resnet18", 10, recorder, width=0.125)
    cfg = TrainingConfig(weight_decay=5e-4, bias_lr_scale=4.0)
    groups = param_groups(model, recorder.parameter_ids(), cfg)
    decayed, norms, activation = groups
    assert decayed["weight_decay"] == 5e-4 and all(p.ndim >= 2 for p in decayed["params"])
    assert norms["weight_decay"] == 0 and norms["lr_scale"] == 4.0
    assert all(p.ndim == 1 for p in norms["params"])
    assert activation["weight_decay"] == 0 and activation["lr_scale"] == 1.0
    slopes = {id(m.slope) for m in model.modules() if isinstance(m, PerChannelSlope)}
    assert {id(p) for p in activation["params"]} == slopes
    every = {id(p) for p in model.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(every)


def test_adamw_and_the_proxy_recipe_options_run(tiny_splits) -> None:
    adamw = config(optimizer="adamw", lr=3e-3, weight_decay=0.05, schedule="cosine")
    assert train_trial(adamw, tiny_splits, CPU, act_factory=_gelu).epochs_done == 1
    recipe = config(
        epochs=4,
        lr=0.2,
        momentum=0.85,
        label_smoothing=0.2,
        schedule="linear",
        bias_lr_scale=8.0,
        lookahead={"start_epoch": 1, "every": 2, "decay": 0.9, "power": 3.0},
        augment={"crop_padding": 2, "flip": True, "pad_mode": "zeros"},
    )
    record = train_trial(recipe, tiny_splits, CPU, act_factory=_gelu)
    assert record.epochs_done == 4 and math.isfinite(record.train_loss[-1])


def test_record_is_json_with_metrics_timings_parameters_and_manifest(tiny_splits) -> None:
    cfg = config(epochs=2, lr=0.2)
    record = train_trial(copy.deepcopy(cfg), tiny_splits, CPU, act_factory=PerChannelSlope)
    blob = json.loads(json.dumps(record.to_json()))
    for key in ("val_acc", "best_val_acc", "test_acc", "train_loss", "val_accs", "img_per_s",
                "peak_memory_bytes", "data_s", "train_s", "eval_s", "duration_s"):  # fmt: skip
        assert key in blob
    assert len(blob["train_loss"]) == len(blob["val_accs"]) == 2
    assert blob["peak_memory_bytes"] > 0 and blob["peak_memory_kind"] == "process_peak_rss"
    manifest = blob["manifest"]
    assert manifest["config"] == cfg and manifest["seed"] == 0
    assert manifest["data_checksum"] == tiny_splits.checksum
    assert set(manifest["packages"]) == {"torch", "torchvision", "optuna", "numpy"}
    assert manifest["git_sha"] is None or len(manifest["git_sha"]) >= 40
    assert manifest["python"] and manifest["hostname"]
    # Learned activation parameters and curves, before and after training, per site.
    initial, final = blob["activation_params"]["initial"], blob["activation_params"]["final"]
    assert initial.keys() == final.keys() and len(initial) == 7  # the proxy's seven sites
    site = next(iter(initial))
    assert initial[site] != final[site]
    curves = blob["activation_curves"]["final"][site]
    assert len(curves["x"]) == len(curves["f"]) == len(curves["df"])
