"""`actsearch train …` (also `python -m workers train …`): train one configuration locally."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_ACTIVATION = "relu"
# search_space.contract.training.TTA_MODES, spelled out: --help must not wait for torch to import.
TTA_CHOICES = ("none", "flip", "flip_translate")


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog="actsearch train",
        description="Train one model with one activation and print its trial record.",
    )
    parser.add_argument("--model", default="resnet18", help="model name (default resnet18)")
    parser.add_argument(
        "--activation",
        default=DEFAULT_ACTIVATION,
        help='family name (e.g. gelu, smu) or a JSON activation config {"family": …, "params": …}',
    )
    parser.add_argument("--epochs", type=int, help="epochs (default: the model's recipe)")
    parser.add_argument(
        "--data",
        default=os.environ.get("ACTSEARCH_DATA"),
        help="torchvision CIFAR root, image folder or tarball (default $ACTSEARCH_DATA)",
    )
    parser.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "folder"])
    parser.add_argument("--cache-dir", type=Path, help="decoded-data cache (default <home>/cache)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--width", type=float, default=1.0, help="model width multiplier")
    parser.add_argument("--subset", type=int, help="train on this many images (stratified)")
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument(
        "--ema",
        metavar="DECAY|JSON",
        help="evaluate an average of the weights: its per-step decay (e.g. 0.999) or a JSON "
        'object {"decay", "start_epoch", "every"} (default: the net\'s own weights)',
    )
    parser.add_argument(
        "--tta",
        choices=TTA_CHOICES,
        default="none",
        help="flip: evaluate each image and its mirror image; flip_translate: also the image "
        "shifted one pixel, each with its mirror (default none)",
    )
    parser.add_argument(
        "--grad-clip",
        type=float,
        default=None,
        metavar="NORM",
        help="clip the global gradient norm to NORM each step (default off)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=None, help="seconds (default none)")
    parser.add_argument("--json", type=Path, dest="json_out", help="write the record here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def activation_config(text: str) -> dict[str, Any]:
    """A family name or a JSON object, as an activation config."""
    text = text.strip()
    if text.startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict) or "family" not in value:
            raise ValueError('--activation JSON must be an object with a "family" key')
        return value
    return {"family": text}


def ema_config(text: str) -> dict[str, Any]:
    """A decay or a JSON object, as the "ema" training setting."""
    text = text.strip()
    try:
        value = json.loads(text) if text.startswith("{") else {"decay": float(text)}
    except ValueError as exc:  # json.JSONDecodeError is one too
        raise ValueError(
            f'--ema must be a decay such as 0.999 or a JSON object {{"decay", "start_epoch", '
            f'"every"}}, not {text!r} ({exc})'
        ) from None
    return dict(value)


def trial_config(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved trial config these options describe (ValueError names a bad setting)."""
    from search_space.contract import ConfigError, parse_trial_config
    from search_space.recipes import recipe

    training = recipe(args.model)
    overrides = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "grad_clip": args.grad_clip,
    }
    training.update({k: v for k, v in overrides.items() if v is not None})
    training["precision"] = args.precision
    training["compile"] = args.compile
    training["tta"] = args.tta
    if args.ema is not None:
        training["ema"] = ema_config(args.ema)
    config = {
        "dataset": {
            "name": args.dataset,
            "path": args.data if args.dataset == "folder" else None,
            "val_size": args.val_size,
            "train_subset": args.subset,
            "split_seed": 0,
        },
        "model": {"name": args.model, "width": args.width},
        "training": training,
        "activation": activation_config(args.activation),
        "seed": args.seed,
        "seeds": 1,
        "timeout_s": args.timeout,
    }
    try:  # a bad --ema or --grad-clip is reported before the data is loaded
        parse_trial_config(config)
    except ConfigError as error:
        raise ValueError(str(error)) from None
    return config


def _cache_dir(args: argparse.Namespace) -> Path:
    if args.cache_dir is not None:
        return Path(args.cache_dir)
    from service.settings import Settings

    return Settings().resolved_cache_dir


def _progress(quiet: bool) -> tuple[Any, Any]:
    """on_step and on_epoch callbacks that drive one tqdm bar per epoch."""
    from tqdm import tqdm

    bar: dict[str, Any] = {}

    def on_step(epoch: int, step: int, steps: int) -> None:
        if quiet:
            return
        if step == 0:
            bar["bar"] = tqdm(total=steps, desc=f"epoch {epoch + 1}", unit="step", leave=True)
        bar["bar"].update(1)

    def on_epoch(report: Any) -> None:
        if not quiet and "bar" in bar:
            bar["bar"].set_postfix(
                loss=f"{report.train_loss:.3f}",
                val_acc=f"{report.val_acc:.4f}",
                img_s=f"{report.img_per_s:,.0f}",
            )
            bar["bar"].close()

    return on_step, on_epoch


def evaluation_text(record: dict[str, Any]) -> str:
    """What the record's accuracies measured: which weights, and whether with flip TTA."""
    # Records from before "evaluation" existed measured the net's own weights without TTA.
    evaluation = record.get("evaluation") or {}
    if evaluation.get("weights") == "ema":
        ema = (record["manifest"].get("resolved_training") or {}).get("ema") or {}
        decay = f" (decay {ema['decay']:g})" if "decay" in ema else ""
        weights = f"an EMA of the weights{decay}"
    else:
        weights = "the net's own weights (no EMA)"
    tta = evaluation.get("tta", "none")
    return f"evaluated {weights}, " + ("without TTA" if tta == "none" else f"with {tta} TTA")


def summary(record: dict[str, Any]) -> str:
    """A few readable lines about a finished trial."""
    manifest = record["manifest"]
    return "\n".join(
        [
            f"model {manifest['config']['model']['name']}, activation "
            f"{manifest['config']['activation'].get('family')}, device {manifest['device']}"
            + (f" ({manifest['gpu']})" if manifest.get("gpu") else ""),
            f"val_acc {record['val_acc']:.4f} (best {record['best_val_acc']:.4f} at epoch "
            f"{record['best_epoch'] + 1}), test_acc {record['test_acc']:.4f}",
            evaluation_text(record),
            f"train {record['train_s']:.1f} s at {record['img_per_s']:,.0f} img/s, eval "
            f"{record['eval_s']:.1f} s, data {record['data_s']:.1f} s, peak memory "
            f"{record['peak_memory_bytes'] / 2**20:,.0f} MiB ({record['peak_memory_kind']})",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code (2 when the data cannot be found)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = trial_config(args)
    except ValueError as exc:
        print(f"actsearch train: {exc}", file=sys.stderr)
        return 2

    from workers.data import DataUnavailableError, load_dataset
    from workers.device import resolve_device
    from workers.failures import TrialFailure
    from workers.train import train_trial

    try:
        device = resolve_device(args.device)
        data = load_dataset(config["dataset"], args.data, _cache_dir(args))
    except (DataUnavailableError, ValueError) as exc:
        print(f"actsearch train: {exc}", file=sys.stderr)
        return 2
    on_step, on_epoch = _progress(args.quiet)
    try:
        record = train_trial(config, data, device, on_epoch=on_epoch, on_step=on_step).to_json()
    except TrialFailure as exc:
        print(f"actsearch train: trial failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("actsearch train: interrupted", file=sys.stderr)
        return 130
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(record, indent=1))
        print(summary(record))
        print(f"record written to {args.json_out}")
    else:
        print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
