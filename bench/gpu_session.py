"""One command for a device session: the open GPU checks, most valuable first, within a budget.

A session gets 15 minutes of device time, the machine's start included, and one command may run
10 minutes. This runs the checks still open on issues 4, 6 and 8 in the order that closes the
most per device-second (bench/GPU_CHECKS.md says why), each only when enough of the budget is
left, each under a time limit of what is left. After every step it packs what the step produced
(its log, new files under bench/results, the CUDA tests' JUnit XML) into
$OUT/gpu_session.tar.gz and rewrites $OUT/gpu_session.json (the summary) and
$OUT/gpu_session.log: three files, whatever happens (the device tool returns at most eight, and
returns $OUT even when the command is killed). A step that fails or runs out of time is recorded
and the next one runs.

On the device (after ../shared/tools/device-bundle here; carry .device):
    source .device/activate && python bench/gpu_session.py --budget-s 540
Here:
    python bench/gpu_session.py --list                   # the steps, what each closes, estimates
    python bench/gpu_session.py --dry-run --out /tmp/gs  # every step's CPU smoke version
Select with --only storage,train-engine or --skip cuda-tests; --budget-s sets the total seconds.
Then unpack the tarball at the repository root (its paths are bench/results/...,
bench/results/gpu_session/...) and commit the results.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
PACK_RESERVE_S = 15  # kept back from every step's limit for packing and the summary


@dataclass(frozen=True)
class Step:
    """One check: what it closes, how long it takes, its command on the device and on the CPU."""

    name: str
    closes: str  # issue and acceptance point
    estimate_s: int  # on an H100/H200, first run on a fresh machine (compiles included)
    min_s: int  # not started with less than this left (it could not finish)
    command: Callable[[argparse.Namespace], list[str]]
    dry_command: Callable[[argparse.Namespace], list[str]]
    needs: tuple[str, ...] = ()  # importable modules; missing ones skip the step
    dry_env: tuple[tuple[str, str], ...] = ()  # extra environment of the CPU smoke version


def _pytest_cuda(args: argparse.Namespace) -> list[str]:
    cmd = [PY, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-rf"]
    cmd += ["--junitxml", str(args.stage / "cuda-tests.xml")]
    # Most of these tests are one Triton compile each (CPU-bound): spread them over the cores.
    if importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", str(max(1, min(16, (os.cpu_count() or 2) - 1)))]
    return [*cmd, "tests/search_space", "tests/workers"]


def _data(args: argparse.Namespace) -> list[str]:
    return ["--data", args.data] if args.data else []


RESNET_VARIANTS = "tta2,ema+tta2,ls0.2+tta2,ema+tta2+train49.5k"

STEPS: tuple[Step, ...] = (
    Step(
        "storage",
        "issue 6, acceptance 5: >= 200 trials/s, 16 workers on PostgreSQL (16-core host)",
        estimate_s=75,
        min_s=45,
        command=lambda a: [
            PY,
            "bench/storage_throughput.py",
            "--pgserver",
            str(a.stage / "pg"),
            "--workers",
            "16",
            "--trials",
            "3000",
        ],
        dry_command=lambda a: [
            PY,
            "bench/storage_throughput.py",
            "--workers",
            "2",
            "--trials",
            "12",
            "--no-save",
        ],
        needs=("psycopg", "pgserver"),
    ),
    Step(
        "train-engine",
        "issue 4, acceptance 3: proxy >= 89 % val in <= 4 s; ResNet-18 >= 40k img/s; "
        "ResNet-18 >= 91 % test in 30 epochs (4 variants at once)",
        estimate_s=210,
        min_s=150,
        command=lambda a: [
            PY,
            "bench/train_engine.py",
            *_data(a),
            "--throughput",
            "--resnet30",
            "--parallel",
            "4",
            "--resnet30-variants",
            RESNET_VARIANTS,
            "--proxy",
            "--proxy-runs",
            "3",
        ],
        dry_command=lambda a: [
            PY,
            "bench/train_engine.py",
            *_data(a),
            "--device",
            "cpu",
            "--resnet30",
            "--proxy",
            "--proxy-runs",
            "1",
            "--parallel",
            "2",
            "--resnet30-variants",
            "tta2,ema+tta2+train49.5k",
            "--resnet30-epochs",
            "2",
            "--subset",
            "128",
            "--eval-subset",
            "128",
            "--out",
            str(a.stage / "dry"),
        ],
    ),
    Step(
        "cuda-tests",
        "issue 8, acceptance 1: every kernel matches the reference (and the trainer's CUDA tests)",
        estimate_s=200,
        min_s=120,
        command=_pytest_cuda,
        dry_command=lambda a: [
            PY,
            "-m",
            "pytest",
            "-q",
            "-m",
            "cuda",
            "--collect-only",
            "-p",
            "no:cacheprovider",
            "tests/search_space",
            "tests/workers",
        ],
    ),
    Step(
        "training",
        "issue 8, acceptances 2 and 4: step time vs ReLU; aggregate img/s of 1-4 trials per GPU",
        estimate_s=150,
        min_s=90,
        command=lambda a: [PY, "bench/training.py", "--no-reference", "--procs", "1,2,3,4"],
        dry_command=lambda a: [
            PY,
            "bench/training.py",
            "--dry-run",
            "--families",
            "relu,smu",
            "--procs",
            "1,2",
        ],
    ),
    Step(
        "kernels",
        "issue 8, acceptance 3: fwd+bwd of one bf16 tensor <= 2x the five-tensor floor",
        estimate_s=150,
        min_s=90,
        command=lambda a: [PY, "bench/activations.py", "--sweep", "none"],
        dry_command=lambda a: [PY, "bench/activations.py", "--dry-run", "--sweep", "none"],
        dry_env=(("TRITON_INTERPRET", "1"),),
    ),
    Step(
        "training-compiled",
        "issue 8, acceptance 2 under torch.compile (if eager misses 1.10x)",
        estimate_s=240,
        min_s=150,
        command=lambda a: [
            PY,
            "bench/training.py",
            "--families",
            "relu",
            "--no-reference",
            "--procs",
            "",
            "--compile-families",
            "relu,smu,pau,opau",
            "--model",
            "resnet18",
        ],
        dry_command=lambda a: [
            PY,
            "bench/training.py",
            "--dry-run",
            "--families",
            "relu",
            "--procs",
            "",
            "--compile-families",
            "relu",
        ],
    ),
)
STEP_NAMES = tuple(s.name for s in STEPS)


def choose(only: list[str], skip: list[str]) -> list[Step]:
    """The steps to run, in the fixed order; unknown names are an error."""
    unknown = sorted(set(only + skip) - set(STEP_NAMES))
    if unknown:
        raise SystemExit(f"unknown step {', '.join(unknown)}; valid: {', '.join(STEP_NAMES)}")
    return [s for s in STEPS if (not only or s.name in only) and s.name not in skip]


def plan_text(steps: list[Step], budget_s: float, args: argparse.Namespace | None = None) -> str:
    """The steps with their estimates, which fit the budget if each took its estimate, and (with
    args) the command each runs."""
    lines, left = [], budget_s
    for s in steps:
        fits = "fits" if left >= s.min_s else "would be skipped"
        lines.append(f"{s.name:<18} ~{s.estimate_s:>3d} s  ({fits})  {s.closes}")
        if args is not None:
            lines.append(f"{'':<18} $ {shlex.join(_relative(s.command(args)))}")
        left -= s.estimate_s
    return "\n".join(lines)


def _relative(cmd: list[str]) -> list[str]:
    return ["python" if c == PY else c.replace(str(ROOT) + "/", "") for c in cmd]


class Session:
    """Runs the steps, logs, packs after each one."""

    def __init__(self, args: argparse.Namespace, steps: list[Step]) -> None:
        self.args = args
        self.steps = steps
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.out = args.out
        self.stage = args.stage
        self.log = io.StringIO()
        self.summary: dict[str, Any] = {
            "machine": machine(),
            "budget_s": args.budget_s,
            "dry_run": args.dry_run,
            "steps": [],
        }

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.started)

    def say(self, text: str) -> None:
        stamped = f"[{time.monotonic() - self.started:6.1f} s] {text}"
        print(stamped, flush=True)
        self.log.write(stamped + "\n")

    def run(self) -> int:
        self.say(f"machine: {json.dumps(self.summary['machine'])}")
        for step in self.steps:
            self.summary["steps"].append(self.run_step(step))
            self.pack()
        self.say("summary:\n" + summary_table(self.summary["steps"]))
        self.pack()
        return 0 if all(s["status"] in ("ok", "skipped") for s in self.summary["steps"]) else 1

    def run_step(self, step: Step) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": step.name, "closes": step.closes}
        missing = [m for m in step.needs if importlib.util.find_spec(m) is None]
        if missing and not self.args.dry_run:
            self.say(f"{step.name}: skipped, missing {', '.join(missing)} (device-bundle?)")
            return {**entry, "status": "skipped", "why": f"missing {', '.join(missing)}"}
        left = self.left()
        if left < step.min_s:
            self.say(f"{step.name}: skipped, {left:.0f} s left of the budget (needs {step.min_s})")
            return {**entry, "status": "skipped", "why": f"{left:.0f} s left"}
        limit = max(10.0, left - PACK_RESERVE_S)
        cmd = (step.dry_command if self.args.dry_run else step.command)(self.args)
        env = {k: v for k, v in os.environ.items() if k != "OUT"}  # results are packed here
        if self.args.dry_run:
            env.update(step.dry_env)
        self.say(f"{step.name}: {shlex.join(_relative(cmd))}  (limit {limit:.0f} s)")
        t0 = time.monotonic()
        status, code = self.execute(cmd, env, limit, self.stage / f"{step.name}.log")
        seconds = time.monotonic() - t0
        self.say(f"{step.name}: {status} (exit {code}) in {seconds:.0f} s")
        return {**entry, "status": status, "exit": code, "seconds": round(seconds, 1)}

    def execute(
        self, cmd: list[str], env: dict[str, str], limit: float, log_path: Path
    ) -> tuple[str, int | None]:
        """Run one command, its output to the console and its log; (status, exit code)."""
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, errors="replace", start_new_session=True,
            )  # fmt: skip
            copier = threading.Thread(target=_copy_lines, args=(proc, log), daemon=True)
            copier.start()
            try:
                proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                # the whole process group: pytest-xdist workers, bench children, PostgreSQL
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                copier.join(timeout=5)
                return "timeout", None
            copier.join(timeout=5)
        return ("ok" if proc.returncode == 0 else "failed"), proc.returncode

    def pack(self) -> None:
        """$OUT/gpu_session.tar.gz (new results + step logs), .json and .log; atomic writes."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.summary["elapsed_s"] = round(time.monotonic() - self.started, 1)
        _write(self.out / "gpu_session.json", json.dumps(self.summary, indent=1))
        _write(self.out / "gpu_session.log", self.log.getvalue())
        tmp = self.out / ".gpu_session.tar.gz"
        with tarfile.open(tmp, "w:gz") as tar:
            for path in self.new_results():
                tar.add(path, arcname=str(path.relative_to(ROOT)))
            for path in sorted(self.stage.glob("*")):
                if path.is_file():
                    tar.add(path, arcname=f"bench/results/gpu_session/{path.name}")
            tar.add(self.out / "gpu_session.json", arcname="bench/results/gpu_session/summary.json")
        tmp.replace(self.out / "gpu_session.tar.gz")

    def new_results(self) -> list[Path]:
        if self.args.dry_run:
            return []
        return sorted(
            p
            for p in RESULTS.glob("*")
            if p.is_file() and p.stat().st_mtime >= self.started_wall - 1
        )


def _copy_lines(proc: subprocess.Popen[str], log: Any) -> None:
    """A step's output, line by line, to the console and to its log."""
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        log.write(line)
        log.flush()


def _write(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name)
    tmp.write_text(text)
    tmp.replace(path)


def summary_table(entries: list[dict[str, Any]]) -> str:
    """One line per step: status, seconds, what it closes."""
    lines = []
    for e in entries:
        seconds = f"{e['seconds']:.0f} s" if "seconds" in e else "-"
        why = f" ({e['why']})" if e.get("why") else ""
        lines.append(f"  {e['name']:<18} {e['status']:<8}{why} {seconds:>6}  {e['closes']}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """What the session ran on (GPU, versions, cores)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""

    def names(text: str) -> list[str]:
        return [n.strip() for n in text.split(",") if n.strip()]

    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="steps, in order:\n" + plan_text(list(STEPS), 540),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--budget-s", type=float, default=540, help="total seconds (default 540)")
    parser.add_argument("--only", type=names, default=[], help="comma list of steps to run")
    parser.add_argument("--skip", type=names, default=[], help="comma list of steps to leave out")
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    parser.add_argument("--dry-run", action="store_true", help="each step's CPU smoke version")
    parser.add_argument("--data", default=os.environ.get("CIFAR10_JPEG_TAR"))
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "var" / "gpu_session")
    )
    args = parser.parse_args(argv)
    args.stage = ROOT / "var" / "gpu_session-stage"
    return args


def main(argv: list[str] | None = None) -> int:
    """Plan, then run the chosen steps."""
    args = parse_args(argv)
    steps = choose(args.only, args.skip)
    if args.list:
        print(plan_text(steps, args.budget_s, args))
        return 0
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA GPU here: run on the device, or use --dry-run", file=sys.stderr)
            return 2
    shutil.rmtree(args.stage, ignore_errors=True)
    args.stage.mkdir(parents=True)
    return Session(args, steps).run()


if __name__ == "__main__":
    sys.exit(main())
