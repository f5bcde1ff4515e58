"""Training-step throughput per model x activation family: fused kernels vs reference, 1..N procs.

A bare SGD loop (bf16 autocast, channels_last, batch resident on the GPU, synthetic data: the
activation's cost does not depend on the pixels) through the project's own builders
(`workers.models.build_model`, `search_space.build.ActivationFactory`). For each family it times
the step with the fused kernels (the modules' default on CUDA) and with the PyTorch reference
(`allow_fused = False` on every activation module), and reports the ratio to ReLU's step time
in the same run (issue 8 acceptance 2: <= 1.10x). With `--procs 2,4` it also starts that many
processes training at once and reports the aggregate images/s (acceptance 4: >= 2.5x single).

Usage (GPU):  python bench/training.py [--model resnet18] [--batch 512] [--steps 60]
                                       [--families relu,smu,pau,opau] [--procs 1,2,4]
CPU check of the script itself:  python bench/training.py --dry-run
Writes bench/results/training-<gpu>-<date>.json (and a copy under $OUT when set).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_FAMILIES = ["relu", "smu", "smu1", "swish", "pau", "opau"]


def build(model_name: str, family: str, device: torch.device, fused: bool) -> nn.Module:
    """The model with every activation site made by the registry's factory for `family`."""
    from search_space.build import ActivationFactory, activation_sites
    from workers.models import build_model

    model = build_model(model_name, 10, ActivationFactory({"family": family}))
    for module in activation_sites(model).values():
        module.allow_fused = fused
    return model.to(device).to(memory_format=torch.channels_last)


def step_seconds(model: nn.Module, batch: int, steps: int, device: torch.device) -> float:
    """Seconds per SGD step after 10 warm-up steps (CUDA events; wall clock on the CPU)."""
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    dtype = torch.bfloat16
    cuda = device.type == "cuda"
    start_event = torch.cuda.Event(enable_timing=True) if cuda else None
    end_event = torch.cuda.Event(enable_timing=True) if cuda else None
    warm = 10 if cuda else 1
    t0 = 0.0
    for i in range(warm + steps):
        if i == warm:
            if start_event is not None:
                start_event.record()
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype):
            loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if start_event is not None and end_event is not None:
        end_event.record()
        torch.cuda.synchronize(device)
        return start_event.elapsed_time(end_event) / 1000 / steps
    return (time.perf_counter() - t0) / steps


def single(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """One process: every family, fused and reference."""
    rows = []
    for family in args.families:
        for fused in [True, False] if family != "relu" else [True]:
            torch.manual_seed(0)
            model = build(args.model, family, device, fused)
            sec = step_seconds(model, args.batch, args.steps, device)
            rows.append(
                {
                    "family": family,
                    "path": "fused" if fused else "reference",
                    "step_ms": sec * 1e3,
                    "img_s": args.batch / sec,
                }
            )
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    relu = next((r["step_ms"] for r in rows if r["family"] == "relu"), None)
    for r in rows:
        r["x_relu"] = r["step_ms"] / relu if relu else None
    return rows


def concurrent(args: argparse.Namespace, procs: int, family: str) -> dict[str, Any]:
    """`procs` processes training `family` at once; aggregate and per-process images/s."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--model",
        args.model,
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--families",
        family,
    ]
    if args.dry_run:
        cmd.append("--dry-run")
    children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    rates = []
    for child in children:
        out, _ = child.communicate(timeout=1800)
        rates.append(json.loads(out.strip().splitlines()[-1])["img_s"])
    return {
        "family": family,
        "procs": procs,
        "per_process_img_s": rates,
        "aggregate_img_s": sum(rates),
    }


def worker(args: argparse.Namespace, device: torch.device) -> int:
    """Child of `concurrent`: print one JSON line with this process's images/s."""
    model = build(args.model, args.families[0], device, fused=True)
    sec = step_seconds(model, args.batch, args.steps, device)
    print(json.dumps({"img_s": args.batch / sec}), flush=True)
    return 0


def table(result: dict[str, Any]) -> str:
    """The short table printed last."""
    lines = [
        f"{result['gpu']}  torch {result['torch']}  {result['model']} batch {result['batch']}",
        f"{'family':8s} {'path':10s} {'ms/step':>8s} {'img/s':>8s} {'x ReLU':>7s}",
    ]
    for r in result["single"]:
        ratio = f"{r['x_relu']:7.2f}" if r["x_relu"] else ""
        lines.append(
            f"{r['family']:8s} {r['path']:10s} {r['step_ms']:8.2f} {r['img_s']:8.0f} {ratio}"
        )
    for c in result["concurrent"]:
        single_rate = c["per_process_img_s"][0] if c["procs"] == 1 else None
        lines.append(
            f"{c['family']} x{c['procs']} processes: aggregate "
            f"{c['aggregate_img_s']:.0f} img/s, per process "
            + ", ".join(f"{v:.0f}" for v in c["per_process_img_s"])
            + (f" (single {single_rate:.0f})" if single_rate else "")
        )
    return "\n".join(lines)


def main() -> int:
    """Measure, write JSON, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--families", default=",".join(DEFAULT_FAMILIES))
    parser.add_argument("--procs", default="1,2,4", help="process counts for the concurrent run")
    parser.add_argument("--concurrent-family", default="relu")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny batch, no JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.families = [f for f in args.families.split(",") if f]
    if args.dry_run:
        device = torch.device("cpu")
        args.batch, args.steps = 4, 1
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("needs a CUDA GPU (or --dry-run)", file=sys.stderr)
        return 2
    if args.worker:
        return worker(args, device)
    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "cpu-dry-run",
        "torch": torch.__version__,
        "model": args.model,
        "batch": args.batch,
        "steps": args.steps,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "single": single(args, device),
        "concurrent": [],
    }
    for procs in [int(p) for p in args.procs.split(",") if p]:
        result["concurrent"].append(concurrent(args, procs, args.concurrent_family))
    if not args.dry_run:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", result["gpu"]).strip("-").lower()
        out = ROOT / "bench" / "results" / f"training-{slug}-{dt.date.today().isoformat()}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        if os.environ.get("OUT"):
            shutil.copy(out, Path(os.environ["OUT"]) / out.name)
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
