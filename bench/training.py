"""Training-step throughput per model x activation family: fused kernels vs reference, 1..N procs.

A bare SGD loop (bf16 autocast, channels_last, batch resident on the GPU, synthetic data: the
activation's cost does not depend on the pixels) through the project's own builders
(`workers.models.build_model`, `search_space.build.ActivationFactory`) and with the trainer's own
settings (`workers.device.configure_backends`: cuDNN autotuning, TF32; fused SGD on CUDA). For each
family it times the step with the fused kernels (the modules' default on CUDA) and with the
PyTorch reference (`allow_fused = False` on every activation module), and reports the ratio to
ReLU's step time in the same run (issue 8 acceptance 2: <= 1.10x). `--compile-families` also times
those families under torch.compile (the fused ops are registered for it).

With `--procs 1,2,4` it starts that many processes training at once and reports the aggregate
images/s (acceptance 4: >= 2.5x a single trial's). The processes build and warm up first, then
start together on a signal and each counts the steps it finishes in the same wall-clock window, so
the per-process rates are measured over overlapping time (summing rates measured at different
times would flatter the aggregate). `procs=1` in that list is the single-trial reference.

Usage (GPU):  python bench/training.py [--model resnet18] [--batch 512] [--steps 60]
                                       [--families relu,smu,pau,opau] [--no-reference]
                                       [--compile-families relu,pau] [--procs 1,2,4]
CPU check of the script itself:  python bench/training.py --dry-run
Writes bench/results/training-<gpu>-<date>[-<model>].json (and a copy under $OUT when set).
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_FAMILIES = ["relu", "smu", "smu1", "swish", "pau", "opau"]
WARMUP_STEPS = 10  # cuDNN autotuning, Triton compiles and plans happen here


def build(model_name: str, family: str, device: torch.device, fused: bool) -> nn.Module:
    """The model with every activation site made by the registry's factory for `family`."""
    from search_space.build import ActivationFactory, activation_sites
    from workers.models import build_model

    model = build_model(model_name, 10, ActivationFactory({"family": family}))
    for module in activation_sites(model).values():
        module.allow_fused = fused
    return model.to(device).to(memory_format=torch.channels_last)


def make_step(
    model: nn.Module, batch: int, device: torch.device, compiled: bool = False
) -> Callable[[], None]:
    """One SGD step on a resident batch, set up as the trainer sets up its steps."""
    from workers import device as dev

    dev.configure_backends(device)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=0.05,
        momentum=0.9,
        nesterov=True,
        weight_decay=5e-4,
        fused=device.type == "cuda",
    )
    runner = torch.compile(model) if compiled else model
    dtype = dev.autocast_dtype("auto", device)

    def step() -> None:
        with dev.autocast(device, dtype):
            loss = nn.functional.cross_entropy(runner(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_seconds(step: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds per step after the warm-up steps (CUDA events; wall clock on the CPU)."""
    for _ in range(WARMUP_STEPS if device.type == "cuda" else 1):
        step()
    _sync(device)
    if device.type != "cuda":
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - t0) / steps
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step()
    end.record()
    torch.cuda.synchronize(device)
    return start.elapsed_time(end) / 1000 / steps


def single(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """One process: every family fused (and reference unless --no-reference), then compiled."""
    runs = []
    for family in args.families:
        runs.append((family, "fused", True, False))
        if family != "relu" and not args.no_reference:
            runs.append((family, "reference", False, False))
    runs += [(family, "compiled", True, True) for family in args.compile_families]
    rows = []
    for family, path, fused, compiled in runs:
        torch.manual_seed(0)
        if compiled:
            torch._dynamo.reset()
        model = build(args.model, family, device, fused)
        started = time.perf_counter()
        sec = step_seconds(make_step(model, args.batch, device, compiled), args.steps, device)
        rows.append(
            {
                "family": family,
                "path": path,
                "step_ms": sec * 1e3,
                "img_s": args.batch / sec,
                "wall_s": time.perf_counter() - started,  # includes warm-up and compiles
            }
        )
        print(f"  {family} {path}: {sec * 1e3:.2f} ms/step", file=sys.stderr, flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for r in rows:
        # Compiled rows against compiled ReLU where it was timed, else against eager ReLU.
        base = _relu_ms(rows, "compiled" if r["path"] == "compiled" else "fused")
        r["x_relu"] = r["step_ms"] / base if base else None
    return rows


def _relu_ms(rows: list[dict[str, Any]], path: str) -> float | None:
    found = [r["step_ms"] for r in rows if r["family"] == "relu" and r["path"] == path]
    if found:
        return float(found[0])
    return None if path == "fused" else _relu_ms(rows, "fused")


def concurrent(args: argparse.Namespace, procs: int, family: str) -> dict[str, Any]:
    """`procs` processes training `family` at once, started together; images/s of each."""
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker",
        "--model", args.model, "--batch", str(args.batch), "--families", family,
        "--window-s", str(args.window_s),
    ]  # fmt: skip
    if args.dry_run:
        cmd.append("--dry-run")
    children = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(procs)
    ]
    try:
        for child in children:  # each prints one line once built and warmed up
            line = child.stdout.readline() if child.stdout else ""
            if not line.startswith("ready"):
                raise RuntimeError(f"a worker process did not get ready: {line!r}")
        for child in children:  # then all start their window at once
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        reports = []
        for child in children:
            out, _ = child.communicate(timeout=600)
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    rates = [r["img_s"] for r in reports]
    return {
        "family": family,
        "procs": procs,
        "window_s": args.window_s,
        "per_process_img_s": rates,
        "aggregate_img_s": sum(rates),
        "per_process_peak_mem_gib": [r["peak_mem_gib"] for r in reports],
    }


def worker(args: argparse.Namespace, device: torch.device) -> int:
    """Child of `concurrent`: warm up, say ready, wait for go, train for the window, report."""
    model = build(args.model, args.families[0], device, fused=True)
    step = make_step(model, args.batch, device)
    for _ in range(WARMUP_STEPS if device.type == "cuda" else 1):
        step()
    _sync(device)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < args.window_s:
        step()
        steps += 1
    _sync(device)  # the queued steps are part of the window
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    print(json.dumps({"img_s": steps * args.batch / elapsed, "peak_mem_gib": peak}), flush=True)
    return 0


def add_speedups(result: dict[str, Any]) -> None:
    """Aggregate images/s of each concurrent run over the single process's (procs=1)."""
    base = next((c for c in result["concurrent"] if c["procs"] == 1), None)
    for c in result["concurrent"]:
        c["x_single"] = c["aggregate_img_s"] / base["aggregate_img_s"] if base else None


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
        speedup = f" = {c['x_single']:.2f}x single" if c.get("x_single") else ""
        lines.append(
            f"{c['family']} x{c['procs']} processes ({c['window_s']:g} s together): aggregate "
            f"{c['aggregate_img_s']:.0f} img/s{speedup}; per process "
            + ", ".join(f"{v:.0f}" for v in c["per_process_img_s"])
        )
    return "\n".join(lines)


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per family")
    parser.add_argument("--families", type=_names, default=DEFAULT_FAMILIES)
    parser.add_argument("--no-reference", action="store_true", help="skip the PyTorch path")
    parser.add_argument(
        "--compile-families", type=_names, default=[], help="also time these under torch.compile"
    )
    parser.add_argument("--procs", default="1,2,4", help="process counts for the concurrent run")
    parser.add_argument("--concurrent-family", default="relu")
    parser.add_argument(
        "--window-s", type=float, default=10.0, help="seconds the concurrent processes train"
    )
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny batch, no JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.batch, args.steps = 4, 1
        args.window_s = min(args.window_s, 0.5)
    return args


def save(result: dict[str, Any]) -> Path:
    """Write the JSON under bench/results (and copy it to $OUT when set)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", result["gpu"]).strip("-").lower()
    suffix = "" if result["model"] == "resnet18" else f"-{result['model']}"
    name = f"training-{slug}-{dt.date.today().isoformat()}{suffix}.json"
    out = ROOT / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if os.environ.get("OUT"):
        shutil.copy(out, Path(os.environ["OUT"]) / out.name)
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure, write JSON, print the table."""
    args = parse_args(argv)
    if args.dry_run:
        device = torch.device("cpu")
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
    if not args.dry_run:
        save(result)  # a run cut short keeps the single-process table
    for procs in [int(p) for p in args.procs.split(",") if p]:
        result["concurrent"].append(concurrent(args, procs, args.concurrent_family))
        add_speedups(result)
        if not args.dry_run:
            save(result)
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
