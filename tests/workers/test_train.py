"""train_trial on generated data: every model, failures, callbacks, determinism, the record."""

from __future__ import annotations

import copy
import json
import math

import optuna
import pytest
import torch
from torch import nn

from search_space.contract import (
    EmaConfig,
    LookaheadConfig,
    TrainingConfig,
    TrialConfig,
    parse_trial_config,
)
from search_space.recipes import recipe
from workers.failures import TrialCancelled, TrialFailure
from workers.models import MODEL_NAMES
from workers.optim import lr_factor, param_groups
from workers.record import EpochReport
from workers.train import eval_logits, train_trial


def parse(value: dict) -> TrialConfig:
    """A trial config as the trainer reads it (ValueError names a bad field)."""
    return parse_trial_config(value)


CPU = torch.device("cpu")


def config(model: str = "proxy", width: float = 0.25, activation=None, **training) -> dict:
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
        "activation": activation or GELU,
        "seed": 0,
        "seeds": 1,
        "timeout_s": 600,
    }


GELU = {
    "family": "gelu",
    "params": {},
    "options": {},
    "scope": None,
    "trainable": {},
    "preset": None,
    "init_target": None,
    "init_interval": None,
    "clamp": None,
}
# The families the issue names, as activation configs (registry defaults otherwise).
FAMILIES = {
    "relu": {"family": "relu"},
    "gelu": GELU,
    "smu": {"family": "smu"},
    "pau": {"family": "pau"},
    "opau": {"family": "opau"},
    "swish": {"family": "swish"},
    "prelu_per_channel": {"family": "prelu", "scope": "per_channel"},
    "frelu": {"family": "frelu"},
    "acon_c": {"family": "acon_c"},
}


def _family_sample(model_index: int) -> list[str]:
    # Three families per model, rotating, so that every family runs on three or more models.
    names = list(FAMILIES)
    return [names[(model_index + 3 * j) % len(names)] for j in range(3)]


MODEL_FAMILY_PAIRS = [
    (model, family) for i, model in enumerate(MODEL_NAMES) for family in _family_sample(i)
]


@pytest.mark.parametrize(("model", "family"), MODEL_FAMILY_PAIRS)
def test_every_model_trains_with_registry_activations(model: str, family: str, nano_splits) -> None:
    cfg = config(model, width=0.125, activation=FAMILIES[family], batch_size=16)
    record = train_trial(cfg, nano_splits, CPU)
    assert record.epochs_done == 1
    assert 0.0 <= record.val_acc <= 1.0 and 0.0 <= record.test_acc <= 1.0
    assert math.isfinite(record.train_loss[0]) and record.img_per_s > 0
    assert record.precision == "fp32"
    sites = record.activation_curves["final"]
    assert sites and all(len(c["f"]) == len(c["x"]) for c in sites.values())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_trains_the_proxy(family: str, nano_splits) -> None:
    record = train_trial(config(activation=FAMILIES[family], batch_size=16), nano_splits, CPU)
    assert math.isfinite(record.train_loss[0])
    assert len(record.activation_params["final"]) == 7  # the proxy's seven sites


def test_maxout_widens_lenet_and_is_refused_elsewhere(nano_splits) -> None:
    maxout = {"family": "maxout", "options": {"k": 2}}
    record = train_trial(config("lenet", activation=maxout, batch_size=16), nano_splits, CPU)
    assert math.isfinite(record.train_loss[0])
    with pytest.raises(TrialFailure, match="Maxout"):
        train_trial(config("resnet18", activation=maxout), nano_splits, CPU)


class PerChannelSlope(nn.Module):
    """A plain learnable per-channel module (PReLU-like), for act_factory injection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.slope = nn.Parameter(torch.full((channels,), 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, x * self.slope.view(1, -1, 1, 1))


def test_a_short_run_learns_the_generated_task(tiny_splits) -> None:
    record = train_trial(config(epochs=4), tiny_splits, CPU)
    assert record.best_val_acc >= 0.6  # four classes: chance is 0.25
    assert record.train_loss[-1] < record.train_loss[0]


def test_same_seed_same_result_on_cpu(tiny_splits) -> None:
    cfg = config("proxy", epochs=2, activation=FAMILIES["prelu_per_channel"])
    first = train_trial(cfg, tiny_splits, CPU)
    second = train_trial(cfg, tiny_splits, CPU)
    assert first.val_accs == second.val_accs
    assert first.train_loss == second.train_loss
    assert first.activation_params == second.activation_params
    other = train_trial({**cfg, "seed": 1}, tiny_splits, CPU)
    assert other.train_loss != first.train_loss


def test_on_epoch_reports_every_epoch(tiny_splits) -> None:
    reports: list[EpochReport] = []
    record = train_trial(config(epochs=3), tiny_splits, CPU, on_epoch=reports.append)
    assert [r.epoch for r in reports] == [0, 1, 2]
    assert all(r.epochs == 3 and r.img_per_s > 0 for r in reports)
    assert [r.val_acc for r in reports] == record.val_accs
    assert reports[0].elapsed_s < reports[-1].elapsed_s <= record.duration_s


def test_pruning_and_cancellation_pass_through_unchanged(tiny_splits) -> None:
    def prune(report: EpochReport) -> None:
        raise optuna.TrialPruned("pruned by the test")

    with pytest.raises(optuna.TrialPruned, match="by the test"):
        train_trial(config(epochs=2), tiny_splits, CPU, on_epoch=prune)

    def cancel(report: EpochReport) -> None:
        raise TrialCancelled("study cancelled")

    with pytest.raises(TrialCancelled, match="study cancelled"):
        train_trial(config(epochs=2), tiny_splits, CPU, on_epoch=cancel)


def test_should_stop_cancels_within_the_epoch(tiny_splits) -> None:
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(TrialCancelled):
        train_trial(config(epochs=3), tiny_splits, CPU, should_stop=should_stop)
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
        train_trial(cfg, tiny_splits, CPU)
    assert info.value.kind == "diverged"


def test_timeout(tiny_splits) -> None:
    cfg = {**config(epochs=3), "timeout_s": 1e-6}
    with pytest.raises(TrialFailure) as info:
        train_trial(cfg, tiny_splits, CPU)
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
        train_trial(config("resnet50"), tiny_splits, CPU)
    failure = info.value
    assert failure.kind == "error" and "resnet18" in failure.message
    assert failure.details is not None and "Traceback" in failure.details


def test_bad_training_settings_are_errors(tiny_splits) -> None:
    with pytest.raises(TrialFailure, match=r"training\.optimizer: 'lion' is not one of sgd, adamw"):
        train_trial(config(optimizer="lion"), tiny_splits, CPU)


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
    from search_space.build import no_weight_decay_parameters
    from workers.models import build_model
    from workers.sites import SiteRecorder, make_act_factory

    recorder = SiteRecorder(make_act_factory(FAMILIES["prelu_per_channel"]))
    model = build_model("resnet18", 10, recorder, width=0.125)
    cfg = TrainingConfig(weight_decay=5e-4, bias_lr_scale=4.0)
    groups = param_groups(model, recorder.parameter_ids(), cfg)
    decayed, norms, activation = groups
    assert decayed["weight_decay"] == 5e-4 and all(p.ndim >= 2 for p in decayed["params"])
    assert norms["weight_decay"] == 0 and norms["lr_scale"] == 4.0
    assert all(p.ndim == 1 for p in norms["params"])
    assert activation["weight_decay"] == 0 and activation["lr_scale"] == 1.0
    expected = {id(p) for p in no_weight_decay_parameters(model)}
    assert {id(p) for p in activation["params"]} == expected and len(expected) == 17
    every = {id(p) for p in model.parameters()}
    assert sum(len(g["params"]) for g in groups) == len(every)


def test_plain_module_factories_can_be_injected(tiny_splits) -> None:
    record = train_trial(
        config("resnet18", width=0.125), tiny_splits, CPU, act_factory=PerChannelSlope
    )
    assert record.epochs_done == 1 and record.activation_params["final"] == {}


def test_adamw_and_the_proxy_recipe_options_run(tiny_splits) -> None:
    adamw = config(optimizer="adamw", lr=3e-3, weight_decay=0.05, schedule="cosine")
    assert train_trial(adamw, tiny_splits, CPU).epochs_done == 1
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
    record = train_trial(recipe, tiny_splits, CPU)
    assert record.epochs_done == 4 and math.isfinite(record.train_loss[-1])


def test_record_is_json_with_metrics_timings_parameters_and_manifest(tiny_splits) -> None:
    cfg = config(epochs=2, lr=0.2, activation=FAMILIES["prelu_per_channel"])
    record = train_trial(copy.deepcopy(cfg), tiny_splits, CPU)
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
    assert len(initial[site]["a"]) == 24  # per channel: the whitening layer's 24 channels
    assert initial[site] != final[site]
    curves = blob["activation_curves"]["final"][site]
    assert len(curves["x"]) == len(curves["f"]) == len(curves["df"])


PRELU = FAMILIES["prelu_per_channel"]


def _final_params_equal(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_ema_with_decay_0_is_the_net_itself(tiny_splits) -> None:
    plain = train_trial(config(epochs=3, activation=PRELU), tiny_splits, CPU)
    ema = train_trial(
        config(epochs=3, activation=PRELU, ema={"decay": 0.0, "start_epoch": 0}), tiny_splits, CPU
    )
    # Swapping the average in for evaluation and back leaves training untouched, bit for bit.
    assert ema.train_loss == plain.train_loss
    assert ema.val_accs == plain.val_accs and ema.test_acc == plain.test_acc
    assert _final_params_equal(ema.activation_params, plain.activation_params)
    assert ema.evaluation == {"weights": "ema", "tta": "none"}
    assert plain.evaluation == {"weights": "raw", "tta": "none"}


def test_ema_is_what_gets_evaluated_and_recorded(tiny_splits) -> None:
    plain = train_trial(config(epochs=4, activation=PRELU), tiny_splits, CPU)
    averaged = train_trial(
        config(epochs=4, activation=PRELU, ema={"decay": 0.9, "start_epoch": 1, "every": 2}),
        tiny_splits,
        CPU,
    )
    assert averaged.train_loss == plain.train_loss  # the average never feeds back into training
    assert averaged.val_accs[0] == plain.val_accs[0]  # before start_epoch the EMA is the net
    final, raw = averaged.activation_params["final"], plain.activation_params["final"]
    assert final.keys() == raw.keys() and not _final_params_equal(final, raw)

    # An average that barely moves keeps the untrained net: evaluation and record show it.
    frozen = train_trial(
        config(epochs=4, activation=PRELU, ema={"decay": 1 - 1e-9, "start_epoch": 0}),
        tiny_splits,
        CPU,
    )
    assert frozen.train_loss == plain.train_loss
    assert len(set(frozen.val_accs)) == 1  # the same (initial) weights at every epoch
    assert max(plain.val_accs) >= 0.6 > max(frozen.val_accs)
    initial, last = frozen.activation_params["initial"], frozen.activation_params["final"]
    for site, params in initial.items():
        for name, value in params.items():
            assert torch.tensor(last[site][name]) == pytest.approx(torch.tensor(value), abs=1e-5)


def test_same_seed_same_result_with_ema_and_tta(tiny_splits) -> None:
    cfg = config(epochs=3, activation=PRELU, ema={"decay": 0.8, "start_epoch": 0}, tta="flip")
    first = train_trial(cfg, tiny_splits, CPU)
    second = train_trial(copy.deepcopy(cfg), tiny_splits, CPU)
    assert first.val_accs == second.val_accs and first.test_acc == second.test_acc
    assert first.train_loss == second.train_loss
    assert first.activation_params == second.activation_params
    assert first.evaluation == {"weights": "ema", "tta": "flip"}


def test_ema_works_beside_lookahead(tiny_splits) -> None:
    cfg = config(
        epochs=3,
        lookahead={"start_epoch": 1, "every": 2, "decay": 0.9, "power": 3.0},
        ema={"decay": 0.9},
    )
    record = train_trial(cfg, tiny_splits, CPU)
    assert record.epochs_done == 3 and math.isfinite(record.train_loss[-1])


class Asymmetric(nn.Module):
    """Logits that depend on left-right orientation, so that flip TTA changes them."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(3 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))


def test_flip_tta_is_the_mean_of_image_and_mirror_logits() -> None:
    model = Asymmetric().eval()
    x = torch.randn(6, 3, 8, 8)
    with torch.no_grad():
        expected = (model(x) + model(x.flip(-1))) / 2
        assert torch.equal(eval_logits(model, x, "flip"), expected)
        assert torch.equal(eval_logits(model, x, "none"), model(x))
        assert not torch.allclose(expected, model(x))
    channels_last = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(eval_logits(model, channels_last, "flip"), expected, atol=1e-6)
    with pytest.raises(ValueError, match="unknown tta 'hflip'; valid: none, flip, flip_translate"):
        eval_logits(model, x, "hflip")


def test_flip_translate_tta_adds_the_shifted_images_and_their_mirrors() -> None:
    model = Asymmetric().eval()
    x = torch.randn(5, 3, 8, 8)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[..., :8, :8], padded[..., 2:, 2:]
    # Reflect padding: the shift up-left repeats row/column 1 where row/column 0 moved in.
    assert torch.equal(up_left[..., 1:, 1:], x[..., :7, :7])
    assert torch.equal(up_left[..., 0, 1:], x[..., 1, :7])
    assert torch.equal(down_right[..., :7, :7], x[..., 1:, 1:])

    def mirror(images: torch.Tensor) -> torch.Tensor:
        return (model(images) + model(images.flip(-1))) / 2

    with torch.no_grad():
        expected = mirror(x) / 2 + (mirror(up_left) + mirror(down_right)) / 4
        got = eval_logits(model, x, "flip_translate")
        assert torch.allclose(got, expected, atol=1e-6)
        assert not torch.allclose(got, eval_logits(model, x, "flip"), atol=1e-3)
        channels_last = x.contiguous(memory_format=torch.channels_last)
        assert torch.allclose(
            eval_logits(model, channels_last, "flip_translate"), expected, atol=1e-6
        )


@pytest.mark.parametrize("mode", ["flip", "flip_translate"])
def test_tta_changes_evaluation_only(tiny_splits, mode: str) -> None:
    plain = train_trial(config(epochs=2), tiny_splits, CPU)
    tta = train_trial(config(epochs=2, tta=mode), tiny_splits, CPU)
    assert tta.train_loss == plain.train_loss
    assert tta.evaluation == {"weights": "raw", "tta": mode}
    assert tta.manifest["resolved_training"]["tta"] == mode
    assert plain.manifest["resolved_training"]["tta"] == "none"
    assert plain.manifest["resolved_training"]["ema"] is None


def test_the_recipes_evaluate_without_tta_or_ema() -> None:
    # The proxy's accuracy target is without TTA; the recipes are measured results.
    for model in ("proxy", "resnet18"):
        resolved = TrainingConfig.model_validate(recipe(model))
        assert resolved.tta == "none" and resolved.ema is None


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"tta": "hflip"}, "training.tta: 'hflip' is not one of none, flip, flip_translate"),
        ({"ema": {"decay": 1.0}}, r"training.ema.decay: 1.0 is outside the domain \[0, 1\)"),
        ({"ema": {"decay": -0.1}}, r"training.ema.decay: -0.1 is outside the domain \[0, 1\)"),
        ({"ema": {"decay": "0.99"}}, r"training.ema.decay: expected a number"),
        ({"ema": {"every": 0}}, r"training.ema.every: 0 is outside the domain \[1, inf\)"),
        ({"ema": {"start_epoch": -1}}, "training.ema.start_epoch: -1 is outside the domain"),
        ({"ema": {"start_epoch": 3}}, r"ema.start_epoch \(3\) must be below epochs \(3\)"),
        ({"ema": {"decay": 0.9, "beta": 1}}, "training.ema: unknown keys beta; valid: decay"),
        ({"ema": 0.999}, "training.ema: Input should be a valid dictionary"),
        ({"lookahead": {"every": 0}}, r"training.lookahead.every: 0 is outside the domain"),
        ({"lookahead": {"decay": 0.9, "gamma": 2}}, "training.lookahead: unknown keys gamma"),
        ({"grad_clip": 0}, r"training.grad_clip: 0 is outside the domain \(0, inf\)"),
        ({"grad_clip": -1.0}, "training.grad_clip: -1.0 is outside the domain"),
        ({"grad_clip": "1"}, "training.grad_clip: expected a number"),
        ({"grad_clip": True}, "training.grad_clip: expected a number"),
        ({"grad_clip": math.inf}, "training.grad_clip: expected a finite number"),
        ({"epochs": 3, "flux": 1}, "training: unknown keys flux; valid: epochs"),
    ],
)
def test_bad_ema_tta_and_lookahead_options_are_value_errors(training: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse({"training": {"epochs": 3, **training}})


def test_ema_defaults_and_off_switches() -> None:
    assert TrainingConfig.model_validate({"ema": {}}).ema == EmaConfig(decay=0.999, start_epoch=1)
    assert TrainingConfig.model_validate({"ema": None}).ema is None
    # {} means the defaults for both averages (the trainer once read an empty lookahead as off).
    assert TrainingConfig.model_validate({"lookahead": {}}).lookahead == LookaheadConfig()


def test_bad_ema_in_a_trial_is_a_failure_that_says_what_to_fix(tiny_splits) -> None:
    with pytest.raises(TrialFailure, match=r"training\.ema\.every: 0 is outside the domain"):
        train_trial(config(ema={"every": 0}), tiny_splits, CPU)


def _first_step_distance(splits, monkeypatch, **training) -> float:
    """How far the first SGD step moves all trainable parameters (global L2 norm)."""
    import workers.train as train_module

    made = {}
    build_optimizer = train_module.build_optimizer

    def recording_build_optimizer(groups, cfg, device):
        optimizer = build_optimizer(groups, cfg, device)
        made["params"] = [p for group in optimizer.param_groups for p in group["params"]]
        made["before"] = [p.detach().clone() for p in made["params"]]
        return optimizer

    def after_first_step(epoch: int, step: int, steps: int) -> None:
        pairs = zip(made["params"], made["before"], strict=True)
        moved = [(p.detach() - b).pow(2).sum() for p, b in pairs]
        made["distance"] = float(torch.stack(moved).sum().sqrt())
        raise TrialCancelled("one step is enough")

    monkeypatch.setattr(train_module, "build_optimizer", recording_build_optimizer)
    # Plain SGD at a constant lr: a step is exactly -lr × gradient.
    cfg = config(
        momentum=0.0, nesterov=False, weight_decay=0.0, schedule="constant", warmup_epochs=0,
        **training,
    )  # fmt: skip
    with pytest.raises(TrialCancelled):
        train_trial(cfg, splits, CPU, on_step=after_first_step)
    return made["distance"]


def test_grad_clip_bounds_the_first_step(tiny_splits, monkeypatch) -> None:
    lr, clip = 0.1, 1e-3
    clipped = _first_step_distance(tiny_splits, monkeypatch, lr=lr, grad_clip=clip)
    free = _first_step_distance(tiny_splits, monkeypatch, lr=lr)
    assert clipped <= lr * clip * (1 + 1e-4)
    assert clipped == pytest.approx(lr * clip, rel=1e-3)  # the gradient's norm is far above clip
    assert free > 100 * lr * clip  # unclipped, the same step moves much further


def test_same_seed_same_result_with_grad_clip(tiny_splits) -> None:
    cfg = config(epochs=2, lr=0.2, grad_clip=0.05, activation=FAMILIES["prelu_per_channel"])
    first = train_trial(cfg, tiny_splits, CPU)
    second = train_trial(copy.deepcopy(cfg), tiny_splits, CPU)
    assert first.train_loss == second.train_loss and first.val_accs == second.val_accs
    assert first.activation_params == second.activation_params
    assert first.manifest["resolved_training"]["grad_clip"] == 0.05
    unclipped = train_trial(config(epochs=2, lr=0.2, activation=FAMILIES["prelu_per_channel"]),
                            tiny_splits, CPU)  # fmt: skip
    assert unclipped.train_loss != first.train_loss  # the clip was active
    assert unclipped.manifest["resolved_training"]["grad_clip"] is None


@pytest.mark.realdata
def test_proxy_learns_real_cifar10_in_one_epoch_on_cpu(cifar10_tarball, tmp_path_factory) -> None:
    import dataclasses
    import os
    import time
    from pathlib import Path

    from workers.data import load_dataset

    # ACTSEARCH_CACHE_DIR keeps the decoded tensors between sessions; else decode once here.
    cache = Path(os.environ.get("ACTSEARCH_CACHE_DIR") or tmp_path_factory.mktemp("cache"))
    dataset = {"name": "cifar10", "val_size": 5000, "train_subset": 5000, "split_seed": 0}
    data = load_dataset(dataset, str(cifar10_tarball), cache)
    started = time.perf_counter()
    again = load_dataset(dataset, str(cifar10_tarball), cache)
    assert time.perf_counter() - started < 5.0  # read from the cache, not decoded again
    assert (
        data.checksum
        == again.checksum
        == ("18ee257832403cf6f3f79ff7db1e971124c3f510d031eb5c9213eee4dab66e51")
    )
    assert len(data.train_y) == 5000 and len(data.val_y) == 5000 and len(data.test_y) == 10000
    assert torch.bincount(data.train_y).tolist() == [500] * 10
    # 2,000 test images keep the final evaluation short on two cores: 200 of each class, since
    # the test split is ordered by class (its first 2,000 are airplanes and automobiles only).
    keep = torch.cat([torch.nonzero(data.test_y == c).flatten()[:200] for c in range(10)])
    data = dataclasses.replace(data, test_x=data.test_x[keep], test_y=data.test_y[keep])
    assert torch.bincount(data.test_y).tolist() == [200] * 10
    training = recipe("proxy")
    training.update(
        epochs=1, batch_size=128, lr=0.2, warmup_epochs=0.3, label_smoothing=0.0, lookahead=None
    )
    cfg = config("proxy", width=0.5)
    cfg["training"] = training
    record = train_trial(cfg, data, CPU)
    assert record.val_acc >= 0.35, record.val_accs
    assert record.test_acc >= 0.35


@pytest.mark.cuda
@pytest.mark.parametrize(
    ("model", "family"),
    [("proxy", "smu"), ("proxy", "opau"), ("resnet18", "pau"), ("efficientnet_b0", "acon_c")],
)
def test_cuda_training_uses_bf16_and_reports_gpu_memory(
    model: str, family: str, tiny_splits
) -> None:
    device = torch.device("cuda")
    cfg = config(model, epochs=2, activation=FAMILIES[family])
    record = train_trial(cfg, tiny_splits, device)
    assert record.precision == "bf16" and record.peak_memory_kind == "cuda_max_allocated"
    assert record.manifest["gpu"] and record.manifest["cuda"]
    assert all(math.isfinite(loss) for loss in record.train_loss)
    assert record.activation_curves["final"]
    fp32 = train_trial({**cfg, "training": {**cfg["training"], "precision": "fp32"}},
                       tiny_splits, device)  # fmt: skip
    assert fp32.precision == "fp32"


@pytest.mark.cuda
@pytest.mark.parametrize("tta", ["flip", "flip_translate"])
@pytest.mark.parametrize("compile_model", [False, True])
def test_cuda_ema_and_tta_with_channels_last_and_compile(
    compile_model: bool, tta: str, tiny_splits
) -> None:
    device = torch.device("cuda")
    cfg = config(
        "resnet18",
        width=0.25,
        epochs=3,
        activation=PRELU,
        ema={"decay": 0.9, "start_epoch": 1},
        tta=tta,
        compile=compile_model,
    )
    first = train_trial(cfg, tiny_splits, device)
    assert first.evaluation == {"weights": "ema", "tta": tta}
    assert all(math.isfinite(loss) for loss in first.train_loss)
    plain_cfg = config("resnet18", width=0.25, epochs=3, activation=PRELU, compile=compile_model)
    plain = train_trial(plain_cfg, tiny_splits, device)
    final, raw = first.activation_params["final"], plain.activation_params["final"]
    assert final.keys() == raw.keys() and not _final_params_equal(final, raw)


def test_activation_lr_scale_sets_the_activation_group_lr() -> None:
    from workers.models import build_model
    from workers.sites import SiteRecorder, make_act_factory

    recorder = SiteRecorder(make_act_factory({"family": "pau"}))
    model = build_model("lenet", 10, recorder, width=0.25)
    config = parse({"training": {"activation_lr_scale": 0.1}}).training
    groups = param_groups(model, recorder.parameter_ids(), config)
    assert [g["lr_scale"] for g in groups] == [1.0, 1.0, 0.1]
    assert {id(p) for p in groups[-1]["params"]} == recorder.parameter_ids()
