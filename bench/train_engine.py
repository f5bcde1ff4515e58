"""Training-engine benchmark: proxy accuracy/time, ResNet-18 throughput, ResNet-18 30 epochs.

Runs in one process through the real training code (workers.train.train_trial) on data loaded
once. Parts are chosen by flags (default: all three):

  python bench/train_engine.py --data ../shared/data/cifar10-jpg.tar.xz [--proxy] [--throughput]
                               [--resnet30] [--proxy-runs 3] [--out bench/results]

* proxy: the airbench-style proxy network with GELU, its recipe (search_space.recipes.PROXY_RECIPE),
  a warm-up run first; reports validation accuracy (no TTA), test accuracy and the seconds spent
  in training steps (evaluation excluded), per run.
* throughput: ResNet-18 + ReLU, batch 512, bf16 autocast, channels_last, data resident; images/s
  over 80 steps of the second epoch, timed with CUDA events from the trainer's on_step hook.
* resnet30: ResNet-18 + ReLU, 30 epochs of the standard recipe (search_space.recipes.STANDARD_RECIPE)
  with each chosen variant's overrides (list below); val and test accuracy, and what was
  evaluated (raw or EMA weights, TTA or not).

Only the ResNet-18 30-epoch part, every variant that may reach 91 % (about 30-40 s each on an
H100 alone; `--parallel 4` trains four at once on the one GPU, in about twice the time of one):

  python bench/train_engine.py --data ../shared/data/cifar10-jpg.tar.xz --resnet30 --parallel 4 \\
      --resnet30-variants tta2,ema+tta2,ls0.2+tta2,ema+tta2+train49.5k

A CPU smoke run of the same code path (proves it executes; the accuracies mean nothing):

  python bench/train_engine.py --data ../shared/data/cifar10-jpg.tar.xz --device cpu --resnet30 \\
      --resnet30-variants ema+tta --resnet30-epochs 2 --subset 256 --eval-subset 256 --out /tmp

Prints a table last and writes JSON naming the GPU, torch version and date.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from search_space.recipes import STANDARD_RECIPE, recipe  # noqa: E402
from workers.data import DataSplits, load_dataset  # noqa: E402
from workers.device import device_name  # noqa: E402
from workers.train import train_trial  # noqa: E402

log = logging.getLogger("bench.train_engine")
VAL_SIZE = 5000  # images held out of train for validation, as a study's default
THROUGHPUT_WARMUP_STEPS = 4
THROUGHPUT_STEPS = 80


def activation_factory(family: str) -> Any:
    """The registry's factory for a family, or torch's module when search_space lacks build."""
    try:
        from workers.sites import make_act_factory

        return make_act_factory({"family": family})
    except ImportError:
        log.warning("search_space.build not importable: using torch's %s module", family)
        modules = {"gelu": nn.GELU, "relu": nn.ReLU}
        return lambda channels: modules[family]()


def trial_config(
    model: str, training: dict[str, Any], family: str, seed: int, val_size: int = 5000
) -> dict[str, Any]:
    """A resolved trial config for the bench."""
    return {
        "dataset": {"name": "cifar10", "val_size": val_size, "train_subset": None, "split_seed": 0},
        "model": {"name": model, "width": 1.0},
        "training": training,
        "activation": {"family": family},
        "seed": seed,
        "seeds": 1,
        "timeout_s": None,
    }


def bench_proxy(data: DataSplits, device: torch.device, runs: int, variant: dict[str, Any]) -> dict:
    """Warm-up run, then `runs` timed runs of the proxy recipe (with the variant's overrides)."""
    training = {**recipe("proxy"), **variant.get("training", {})}
    family = variant.get("activation", "gelu")
    factory = activation_factory(family)
    warm = {**training, "epochs": 1}
    train_trial(trial_config("proxy", warm, family, 999), data, device, act_factory=factory)
    results: list[dict[str, Any]] = []
    for seed in range(runs):
        cfg = trial_config("proxy", training, family, seed)
        record = train_trial(cfg, data, device, act_factory=factory)
        results.append(
            {
                "seed": seed,
                "val_acc": record.val_acc,
                "test_acc": record.test_acc,
                "train_s": record.train_s,
                "img_per_s": record.img_per_s,
                "val_accs": record.val_accs,
            }
        )
        log.info("proxy %s seed %d: %s", variant["name"], seed, results[-1])
    return {
        "variant": variant["name"],
        "activation": family,
        "training": training,
        "runs": results,
        "val_acc_mean": statistics.fmean(r["val_acc"] for r in results),
        "test_acc_mean": statistics.fmean(r["test_acc"] for r in results),
        "train_s_median": statistics.median(r["train_s"] for r in results),
    }


def bench_throughput(data: DataSplits, device: torch.device, compile_model: bool) -> dict:
    """ResNet-18 ReLU img/s over 80 steps of epoch 2, CUDA events around the trainer's steps."""
    training = {**STANDARD_RECIPE, "epochs": 2, "batch_size": 512, "compile": compile_model}
    events: dict[str, torch.cuda.Event] = {}

    def on_step(epoch: int, step: int, steps: int) -> None:
        # on_step runs after step `step` was queued: the window holds THROUGHPUT_STEPS steps.
        if epoch != 1:
            return
        if step == THROUGHPUT_WARMUP_STEPS - 1:
            events["start"] = torch.cuda.Event(enable_timing=True)
            events["start"].record()
        if step == THROUGHPUT_WARMUP_STEPS + THROUGHPUT_STEPS - 1:
            events["end"] = torch.cuda.Event(enable_timing=True)
            events["end"].record()

    cfg = trial_config("resnet18", training, "relu", 0)
    record = train_trial(cfg, data, device, on_step=on_step, act_factory=activation_factory("relu"))
    torch.cuda.synchronize(device)
    seconds = events["start"].elapsed_time(events["end"]) / 1000
    img_per_s = THROUGHPUT_STEPS * 512 / seconds
    return {
        "compile": compile_model,
        "steps": THROUGHPUT_STEPS,
        "batch_size": 512,
        "img_per_s": img_per_s,
        "ms_per_step": 1000 * seconds / THROUGHPUT_STEPS,
        "epoch_s_50k": 50_000 / img_per_s,
        "trainer_img_per_s_whole_run": record.img_per_s,
        "peak_memory_bytes": record.peak_memory_bytes,
    }


def bench_resnet30(
    data: DataSplits,
    device: torch.device,
    variant: dict[str, Any],
    epochs: int = 30,
    resplit: Callable[[int], DataSplits] | None = None,
) -> dict:
    """ResNet-18 ReLU, 30 epochs of the standard recipe (with the variant's overrides).

    A variant with its own `val_size` trains on the split that leaves (resplit(val_size)).
    """
    training = {**STANDARD_RECIPE, "epochs": epochs, **variant.get("training", {})}
    val_size = variant.get("val_size", VAL_SIZE)
    if val_size != VAL_SIZE:
        if resplit is None:
            raise ValueError(f"variant {variant['name']} needs another split: pass resplit")
        data = resplit(val_size)
    cfg = trial_config("resnet18", training, "relu", 0, val_size)
    record = train_trial(cfg, data, device, act_factory=activation_factory("relu"))
    return {
        "variant": variant["name"],
        "epochs": epochs,
        "train_images": len(data.train_y),
        "val_images": len(data.val_y),
        "training": training,
        "evaluation": record.evaluation,  # raw or EMA weights, TTA or not
        "val_acc": record.val_acc,
        "best_val_acc": record.best_val_acc,
        "test_acc": record.test_acc,
        "train_s": record.train_s,
        "img_per_s": record.img_per_s,
        "val_accs": record.val_accs,
    }


def bench_resnet30_parallel(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """The resnet30 variants split over `args.parallel` processes training at once.

    A 30-epoch ResNet-18 uses about half an H100 (bench/training.py --procs), so several variants
    finish in little more time than one: device time is the scarce thing. The data were decoded
    into the cache by this process, so the children only read it. Returns the variants' entries
    and the children's errors.
    """
    groups = [args.resnet30_variants[i :: args.parallel] for i in range(args.parallel)]
    groups = [g for g in groups if g]
    with tempfile.TemporaryDirectory() as tmp:
        children = []
        for i, names in enumerate(groups):
            cmd = [
                sys.executable, str(Path(__file__).resolve()), "--resnet30",
                "--resnet30-variants", ",".join(names),
                "--resnet30-epochs", str(args.resnet30_epochs),
                "--cache-dir", str(args.cache_dir), "--device", args.device,
                "--out", str(Path(tmp) / str(i)),
            ]  # fmt: skip
            if args.data:
                cmd += ["--data", args.data]
            for flag, value in (("--subset", args.subset), ("--eval-subset", args.eval_subset)):
                if value is not None:
                    cmd += [flag, str(value)]
            children.append(subprocess.Popen(cmd))
        codes = [child.wait() for child in children]
        entries: list[dict[str, Any]] = []
        errors: list[str] = []
        for path in sorted(Path(tmp).glob("*/*.json")):
            child = json.loads(path.read_text())
            entries += child.get("resnet30", [])
            errors += child.get("errors", [])
    for entry in entries:
        entry["concurrent_processes"] = len(groups)
    if errors or any(codes) or len(entries) < len(args.resnet30_variants):
        log.error("resnet30 children exited %s; %d of %d variants came back",
                  codes, len(entries), len(args.resnet30_variants))  # fmt: skip
        if any(codes) and not errors:
            errors.append(f"resnet30: child processes exited {codes}")
    return entries, errors


def _time_loop(model: nn.Module, batches: Any, device: torch.device, steps: int) -> float:
    """Seconds per step of a bare SGD loop (bf16 autocast), CUDA events after 10 warm-up steps."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4, fused=True
    )
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for i in range(10 + steps):
        if i == 10:
            start.record()
        x, y = next(batches)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    end.record()
    torch.cuda.synchronize(device)
    return start.elapsed_time(end) / 1000 / steps


def diagnose(data: DataSplits, device: torch.device) -> list[dict[str, Any]]:
    """Bare ResNet-18 loops: which part (activation module, data path) costs what."""
    from search_space.contract import AugmentConfig
    from workers.augment import Normalizer, TrainBatches
    from workers.models import build_model

    torch.backends.cudnn.benchmark = True
    normalizer = Normalizer.fit(data.train_x).to(device)
    static_x = normalizer(data.train_x[:512]).contiguous(memory_format=torch.channels_last)
    static_y = data.train_y[:512]

    def static() -> Any:
        while True:
            yield static_x, static_y

    def pipeline() -> Any:
        generator = torch.Generator(device=device).manual_seed(0)
        batches = TrainBatches(
            data.train_x, data.train_y, 512, normalizer, AugmentConfig(), generator, True
        )
        while True:
            yield from batches

    factories = {
        "torch relu inplace": lambda c: nn.ReLU(inplace=True),
        "registry relu": activation_factory("relu"),
    }
    rows = []
    for name, factory, source in [
        ("torch relu inplace, static batch", factories["torch relu inplace"], static),
        ("registry relu, static batch", factories["registry relu"], static),
        ("registry relu, on-GPU aug", factories["registry relu"], pipeline),
    ]:
        torch.manual_seed(0)
        model = build_model("resnet18", 10, factory).to(device)
        model = model.to(memory_format=torch.channels_last)
        seconds = _time_loop(model, source(), device, THROUGHPUT_STEPS)
        rows.append({"name": name, "img_per_s": 512 / seconds, "ms_per_step": 1000 * seconds})
        log.info("diagnose %s", rows[-1])
    return rows


RESNET30_VARIANTS: dict[str, dict[str, Any]] = {
    "recipe": {"name": "recipe"},
    "lr0.4": {"name": "lr0.4", "training": {"lr": 0.4}},
    "lr0.8": {"name": "lr0.8", "training": {"lr": 0.8}},
    "cutout": {
        "name": "cutout",
        "training": {"augment": {"crop_padding": 4, "flip": True, "cutout": 8}},
    },
    "bs256": {"name": "bs256", "training": {"batch_size": 256, "lr": 0.2}},
    # Issue 4's candidates for >= 91 % test: evaluation-side tools first, then label smoothing.
    # The EMA horizon (1 / (1 - decay) = 1000 steps) is about 11 of the 30 epochs at batch 512.
    "tta": {"name": "tta", "training": {"tta": "flip"}},
    "ema": {"name": "ema", "training": {"ema": {"decay": 0.999, "start_epoch": 1}}},
    "ema+tta": {
        "name": "ema+tta",
        "training": {"ema": {"decay": 0.999, "start_epoch": 1}, "tta": "flip"},
    },
    # A short horizon (100 steps, about one epoch): averages the annealed end of the schedule only.
    "ema0.99": {"name": "ema0.99", "training": {"ema": {"decay": 0.99, "start_epoch": 20}}},
    "ema0.99+tta": {
        "name": "ema0.99+tta",
        "training": {"ema": {"decay": 0.99, "start_epoch": 20}, "tta": "flip"},
    },
    # airbench's TTA level 2: flip, plus one-pixel shifts with their mirrors (six passes).
    "tta2": {"name": "tta2", "training": {"tta": "flip_translate"}},
    "ema+tta2": {
        "name": "ema+tta2",
        "training": {"ema": {"decay": 0.999, "start_epoch": 1}, "tta": "flip_translate"},
    },
    "ls0.2+tta2": {
        "name": "ls0.2+tta2",
        "training": {"label_smoothing": 0.2, "tta": "flip_translate"},
    },
    # The usual CIFAR protocol for a test accuracy: train on (nearly) all 50,000 training images;
    # a study holds 5,000 out for its objective. 500 stay out so that val_acc still means something.
    "ema+tta2+train49.5k": {
        "name": "ema+tta2+train49.5k",
        "val_size": 500,
        "training": {"ema": {"decay": 0.999, "start_epoch": 1}, "tta": "flip_translate"},
    },
    "ls0.2": {"name": "ls0.2", "training": {"label_smoothing": 0.2}},
    "ls0.2+tta": {"name": "ls0.2+tta", "training": {"label_smoothing": 0.2, "tta": "flip"}},
    "ema+tta+ls0.2": {
        "name": "ema+tta+ls0.2",
        "training": {
            "ema": {"decay": 0.999, "start_epoch": 1},
            "tta": "flip",
            "label_smoothing": 0.2,
        },
    },
}

PROXY_VARIANTS: dict[str, dict[str, Any]] = {
    "recipe": {"name": "recipe"},
    "no_lookahead": {"name": "no_lookahead", "training": {"lookahead": None}},
    "12ep": {"name": "12ep", "training": {"epochs": 12, "warmup_epochs": 2.8}},
    "compiled": {"name": "compiled", "training": {"compile": True}},
    "12ep_compiled": {
        "name": "12ep_compiled",
        "training": {"epochs": 12, "warmup_epochs": 2.8, "compile": True},
    },
}


def machine(device: torch.device) -> dict[str, Any]:
    """What ran the bench."""
    cuda = device.type == "cuda"
    return {
        "gpu": device_name(device) if cuda else None,
        "device": str(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def table(results: dict[str, Any]) -> str:
    """The short table printed last."""
    lines = [f"{'part':<34} {'value':>44}", "-" * 79]
    for proxy in results.get("proxy", []):
        label = f"proxy {proxy['activation']} {proxy['variant']}"
        value = (
            f"val {proxy['val_acc_mean']:.4f} test {proxy['test_acc_mean']:.4f} "
            f"train {proxy['train_s_median']:.2f} s"
        )
        lines.append(f"{label:<34} {value:>44}")
    for item in results.get("throughput", []):
        label = "resnet18 relu img/s" + (" compiled" if item["compile"] else "")
        value = f"{item['img_per_s']:,.0f} img/s ({item['epoch_s_50k']:.2f} s / 50k)"
        lines.append(f"{label:<34} {value:>44}")
    for r in results.get("resnet30", []):
        value = f"test {r['test_acc']:.4f} val {r['val_acc']:.4f} train {r['train_s']:.1f} s"
        label = f"resnet18 relu {r.get('epochs', 30)} ep {r['variant']}"
        if r.get("concurrent_processes", 1) > 1:
            label += f" (x{r['concurrent_processes']})"
        lines.append(f"{label:<34} {value:>44}")
    for d in results.get("diagnose", []):
        value = f"{d['img_per_s']:,.0f} img/s ({d['ms_per_step']:.2f} ms/step)"
        lines.append(f"{'loop ' + d['name']:<34} {value:>44}")
    for error in results.get("errors", []):
        lines.append(f"error: {error}")
    m = results["machine"]
    lines.append(f"on {m['gpu'] or m['device']}, torch {m['torch']}, {m['date']}")
    return "\n".join(lines)


def save(results: dict[str, Any], out_dir: Path, started: float) -> Path:
    """Write the results so far (after every part: a cut-short run keeps what it measured)."""
    results["total_s"] = time.perf_counter() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    path = output_path(out_dir, results["machine"])
    path.write_text(json.dumps(results, indent=1))
    return path


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _variant_names(known: dict[str, Any]) -> Any:
    """argparse type: a comma list of variant names, each one of `known`."""

    def parse(text: str) -> list[str]:
        names = _names(text)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown variant {', '.join(unknown)}; valid: {', '.join(known)}"
            )
        return names

    return parse


def _variants_help(known: dict[str, Any]) -> str:
    lines = []
    for name, variant in known.items():
        overrides = json.dumps(variant.get("training", {}), separators=(",", ":"))
        text = overrides if overrides != "{}" else "(the recipe as is)"
        if "val_size" in variant:
            text += f"; val_size {variant['val_size']}"
        lines.append(f"  {name:<15} {text}")
    return "\n".join(lines)


def eval_subset(data: DataSplits, size: int | None) -> DataSplits:
    """`size` evenly spaced validation and test images (CPU smoke runs); None keeps all."""
    if size is None:
        return data
    # Evenly spaced, not the first ones: the splits are ordered by class.
    val_step = max(1, len(data.val_y) // size)
    test_step = max(1, len(data.test_y) // size)
    return dataclasses.replace(
        data,
        val_x=data.val_x[::val_step][:size],
        val_y=data.val_y[::val_step][:size],
        test_x=data.test_x[::test_step][:size],
        test_y=data.test_y[::test_step][:size],
    )


def output_path(out_dir: Path, info: dict[str, Any]) -> Path:
    """bench/results/train_engine-<gpu>-torch<version>-<date and time>.json"""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", info["gpu"] or "cpu").strip("-").lower()
    version = re.sub(r"[^0-9.]", "", info["torch"].split("+")[0])
    stamp = info["date"][:16].replace(":", "")  # 2026-11-23T0516: one file per run
    return out_dir / f"train_engine-{gpu}-torch{version}-{stamp}.json"


def main(argv: list[str] | None = None) -> int:
    """Run the selected parts and write the results."""
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="resnet30 variants (overrides of STANDARD_RECIPE):\n"
        + _variants_help(RESNET30_VARIANTS)
        + "\n\nproxy variants (overrides of PROXY_RECIPE):\n"
        + _variants_help(PROXY_VARIANTS),
    )
    parser.add_argument("--data", default=os.environ.get("CIFAR10_JPEG_TAR"))
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "var" / "cache")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--proxy", action="store_true")
    parser.add_argument("--throughput", action="store_true")
    parser.add_argument("--resnet30", action="store_true")
    parser.add_argument("--proxy-runs", type=int, default=3)
    parser.add_argument("--subset", type=int, help="train on a subset (CPU smoke runs)")
    parser.add_argument(
        "--eval-subset",
        type=int,
        help="evaluate on N evenly spaced validation and test images (CPU smoke runs)",
    )
    parser.add_argument(
        "--proxy-variants",
        default=["recipe"],
        type=_variant_names(PROXY_VARIANTS),
        help="comma list of proxy variants (below; default: recipe)",
    )
    parser.add_argument("--compile-throughput", action="store_true", help="also time compiled")
    parser.add_argument(
        "--resnet30-variants",
        default=["recipe"],
        type=_variant_names(RESNET30_VARIANTS),
        help="comma list of resnet30 variants (below; default: recipe)",
    )
    parser.add_argument(
        "--resnet30-epochs",
        type=int,
        default=30,
        help="epochs of the resnet30 part (default 30; fewer only for smoke runs)",
    )
    parser.add_argument(
        "--diagnose", action="store_true", help="time bare ResNet-18 loops beside the trainer"
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="train the resnet30 variants in this many processes at once on the GPU (their "
        "accuracies are those of single runs; their train_s is not)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not (args.proxy or args.throughput or args.resnet30 or args.diagnose):
        args.proxy = args.throughput = args.resnet30 = True

    device = torch.device(args.device)
    started = time.perf_counter()

    def load(val_size: int) -> DataSplits:
        dataset = {"name": "cifar10", "val_size": val_size, "train_subset": args.subset}
        loaded = load_dataset({**dataset, "split_seed": 0}, args.data, args.cache_dir)
        return eval_subset(loaded.to(device), args.eval_subset)

    data = load(VAL_SIZE)
    results: dict[str, Any] = {"machine": machine(device), "data_checksum": data.checksum}
    results["data_load_s"] = time.perf_counter() - started
    parts: list[tuple[str, Any]] = []
    if args.throughput:
        parts.append(("throughput", lambda: bench_throughput(data, device, compile_model=False)))
        if args.compile_throughput:
            parts.append(("throughput", lambda: bench_throughput(data, device, compile_model=True)))
    if args.diagnose:
        parts.append(("diagnose", lambda: diagnose(data, device)))
    if args.resnet30 and args.parallel > 1:
        parts.append(("resnet30", lambda: bench_resnet30_parallel(args)))
    elif args.resnet30:
        for name in args.resnet30_variants:
            parts.append(
                (
                    "resnet30",
                    lambda n=name: bench_resnet30(
                        data, device, RESNET30_VARIANTS[n], args.resnet30_epochs, load
                    ),
                )
            )
    # Fast parts first: a run cut short by its time limit still reports them.
    if args.proxy:
        for name in args.proxy_variants:
            parts.append(
                (
                    "proxy",
                    lambda n=name: bench_proxy(data, device, args.proxy_runs, PROXY_VARIANTS[n]),
                )
            )
    for key, run in parts:
        # One failing part (say, a compile error) must not cost the others' device time.
        try:
            value = run()
        except Exception as exc:
            log.exception("%s failed", key)
            results.setdefault("errors", []).append(f"{key}: {type(exc).__name__}: {exc}")
            continue
        if key == "diagnose":
            results[key] = value
        elif isinstance(value, tuple):  # the parallel resnet30 part: (entries, errors)
            results.setdefault(key, []).extend(value[0])
            results.setdefault("errors", []).extend(value[1])
        else:
            results.setdefault(key, []).append(value)
        save(results, args.out, started)
    path = save(results, args.out, started)
    print(f"results written to {path}")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
