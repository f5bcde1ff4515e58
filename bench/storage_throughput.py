"""Storage bookkeeping throughput: trials/s that N worker processes push through the database.

Each trial is the real worker path with a trivial objective: claim (budgeted, locked) → load the
Optuna study (once per process) → ask (or a retry trial) → suggest the spec's parameters → attach
→ one epoch report (stored + Optuna report + pruning check) → finish → tell. Only the training
itself is replaced (by an instant "epoch"). Target (docs PERF.md): ≥ 200 trials/s with 16 worker
processes on PostgreSQL.

    .venv/bin/python bench/storage_throughput.py                 # 16 workers, 2000 trials
    .venv/bin/python bench/storage_throughput.py --workers 4 --trials 500 --sampler tpe

A fresh database is created on the local PostgreSQL (dropped afterwards) unless --database-url
names one. Results: a table on stdout and JSON under bench/results/ naming the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
from sqlalchemy import create_engine, func, make_url, select, text  # noqa: E402

from bench.machine_info import cpu_model  # noqa: E402
from search_space.contract import DatasetConfig, TrialConfig  # noqa: E402
from service.db import Run, Study, make_engine  # noqa: E402
from service.db.outage import db_retry  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import Store  # noqa: E402
from workers import trial_runner  # noqa: E402
from workers.options import SlotOptions  # noqa: E402
from workers.training import Training  # noqa: E402
from workers.worker import SlotWorker, open_worker_store  # noqa: E402

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"  # --server overrides
RESULTS = ROOT / "bench" / "results"
TARGET_TRIALS_PER_S = 200.0


# -- the trivial objective ------------------------------------------------------------------
@dataclass
class _Epoch:
    epoch: int
    epochs: int
    train_loss: float
    val_acc: float
    img_per_s: float
    elapsed_s: float
    lr: float


@dataclass
class _Record:
    val_acc: float
    best_val_acc: float
    test_acc: float
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "val_acc": self.val_acc,
            "best_val_acc": self.best_val_acc,
            "test_acc": self.test_acc,
            "duration_s": self.duration_s,
            "img_per_s": 1.0,
            "peak_memory_bytes": 0,
        }


class TrivialTraining(Training):
    """An instant one-epoch "training": everything but the bookkeeping costs nothing."""

    def device_description(self, gpu_label: str) -> str:
        return "cpu (trivial objective)"

    def load_data(self, dataset: DatasetConfig) -> Any:
        return None

    def identity(self, data: Any) -> tuple[str, str]:
        return "trivial-data", "trivial-code"

    def prescreen(self, config: TrialConfig) -> tuple[bool, str | None]:
        return True, None

    def train(self, config, data, on_epoch, should_stop, on_step=None):  # type: ignore[no-untyped-def]
        value = random.random()
        epochs = config.training.epochs
        for epoch in range(epochs):
            on_epoch(_Epoch(epoch, epochs, 1.0, value, 1.0, 0.0, 0.1))
        return _Record(val_acc=value, best_val_acc=value, test_acc=value, duration_s=0.0)


def bench_spec(n_trials: int, sampler: str, epochs: int) -> dict[str, Any]:
    """A spec with a realistic handful of searched parameters (family, lr, a family parameter)."""
    return {
        "version": 1,
        "name": "storage-throughput",
        "dataset": {"name": "cifar10"},  # never loaded: the trivial objective has no data
        "model": {"name": "lenet", "width": 0.25},
        "training": {"epochs": epochs, "lr": {"low": 0.01, "high": 0.5, "log": True}},
        "activations": {"relu": {}, "swish": {"beta": {"low": 0.5, "high": 2.0}}},
        "sampler": {"name": sampler},
        "pruner": {"name": "median"},
        "n_trials": n_trials,
    }


# -- timing of each step ---------------------------------------------------------------------
class Timings:
    """Wall time per bookkeeping step, per process (wrapping the real methods)."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def wrap(self, owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label].append(time.perf_counter() - started)

        setattr(owner, name, timed)


def _instrument(store: Store, timings: Timings) -> None:
    for name in ("claim_next", "attach_trial", "report_epoch", "finish"):
        timings.wrap(store.runs, name, name)
    timings.wrap(optuna.Study, "ask", "optuna ask")
    timings.wrap(optuna.Study, "tell", "optuna tell")
    timings.wrap(optuna.Trial, "report", "optuna report")
    timings.wrap(optuna.Trial, "should_prune", "optuna should_prune")
    timings.wrap(trial_runner, "suggest_trial", "suggest_trial")


def _status(store: Store, study_id: int) -> str:
    with store.db.session() as session:
        return str(session.scalar(select(Study.status).where(Study.id == study_id)))


# -- one worker process ---------------------------------------------------------------------
def _child(
    url: str, study_id: int, slot: int, ready: Any, go: Any, results: Any, profile: bool
) -> None:
    logging.basicConfig(level=logging.WARNING)
    settings = Settings(database_url=url, heartbeat_s=5.0, grace_s=120.0)
    store = open_worker_store(url)  # what `actsearch worker` uses
    timings = Timings()
    if profile:
        _instrument(store, timings)
    worker = SlotWorker(
        settings,
        SlotOptions(slot=slot, studies=(study_id,)),
        training=TrivialTraining(),
        store=store,
    )

    def watch() -> None:
        while not worker.stopping.wait(0.5):
            if db_retry(lambda: _status(store, study_id), "poll") not in ("queued", "running"):
                worker.request_stop()

    ready.put(slot)
    go.wait()
    threading.Thread(target=watch, daemon=True).start()
    worker.run()
    results.put({"slot": slot, "trials": worker.trials, "timings": dict(timings.seconds)})
    store.dispose()


# -- the benchmark --------------------------------------------------------------------------
def _on(server: str, database: str) -> str:
    """The server's URL naming `database` (query strings such as a socket ?host= kept)."""
    return make_url(server).set(database=database).render_as_string(hide_password=False)


def _create_database(server: str) -> str:
    name = f"as_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(_on(server, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return _on(server, name)


def _drop_database(server: str, url: str) -> None:
    name = make_url(url).database
    admin = create_engine(_on(server, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def run_once(url: str, workers: int, trials: int, sampler: str, epochs: int, profile: bool) -> dict:
    """One measured study; returns its numbers."""
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    store = Store.open(url)
    owner = (
        store.users.get_by_name("bench")
        if any(u.name == "bench" for u in store.users.list())
        else store.users.create("bench")[0]
    )
    study, _ = store.studies.create(owner, bench_spec(trials, sampler, epochs))
    context = mp.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(target=_child, args=(url, study.id, i, ready, go, results, profile))
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=300)
    started = time.perf_counter()
    go.set()
    while db_retry(lambda: _status(store, study.id), "poll") in ("queued", "running"):
        time.sleep(0.2)
    wall_s = time.perf_counter() - started
    per_process = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    with store.db.session() as session:
        first, last, finished = session.execute(
            select(func.min(Run.started_at), func.max(Run.finished_at), func.count()).where(
                Run.study_id == study.id, Run.finished_at.is_not(None)
            )
        ).one()
        states = dict(
            session.execute(
                select(Run.state, func.count()).where(Run.study_id == study.id).group_by(Run.state)
            ).all()
        )
    optuna_study = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna)
    told = len([t for t in optuna_study.get_trials() if t.state.is_finished()])
    store.dispose()
    span_s = (last - first).total_seconds()
    merged: dict[str, list[float]] = defaultdict(list)
    for part in per_process:
        for label, values in part["timings"].items():
            merged[label].extend(values)
    return {
        "workers": workers,
        "trials": trials,
        "sampler": sampler,
        "epochs_per_trial": epochs,
        "finished_runs": finished,  # complete + pruned (the median pruner prunes about half)
        "runs_by_state": states,
        "optuna_finished_trials": told,
        "wall_s": wall_s,
        "span_s": span_s,  # first claim to last finish, from the runs' own timestamps
        "trials_per_s": finished / span_s if span_s > 0 else float("nan"),
        "trials_per_s_wall": finished / wall_s,
        "per_process_trials": sorted(p["trials"] for p in per_process),
        "step_ms": {
            label: {
                "mean": 1000 * statistics.fmean(values),
                "p50": 1000 * statistics.median(values),
                "p95": 1000 * sorted(values)[int(0.95 * (len(values) - 1))],
                "calls": len(values),
            }
            for label, values in sorted(merged.items())
        },
    }


def _start_pgserver(pgdata: Path) -> str:
    """A PostgreSQL server of our own from the pgserver wheel (stopped at exit); its URL."""
    import pgserver  # an optional, bench-only package

    server = pgserver.get_server(pgdata.resolve(), cleanup_mode="stop")
    url = make_url(server.get_uri()).set(drivername="postgresql+psycopg", database="postgres")
    return url.render_as_string(hide_password=False)


def _gpu() -> str | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


def machine(server: str) -> dict[str, Any]:
    """What ran the benchmark (the numbers mean nothing without it)."""
    cpu = cpu_model()
    engine = create_engine(_on(server, "postgres"))
    with engine.connect() as connection:
        server = connection.execute(text("SHOW server_version")).scalar()
    engine.dispose()
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "optuna": optuna.__version__,
        "postgresql": server,
        "gpu": _gpu(),  # the storage path never touches it; named to identify the machine
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--sampler", default="random", help="random (default), tpe, qmc, …")
    parser.add_argument("--epochs", type=int, default=1, help="epoch reports per trial")
    parser.add_argument("--server", default=PG_SERVER, help="PostgreSQL server URL (no database)")
    parser.add_argument("--database-url", default=None, help="default: a fresh database there")
    parser.add_argument(
        "--pgserver",
        type=Path,
        metavar="DIR",
        help="start a private PostgreSQL in DIR from the pgserver wheel and use it (a machine "
        "without a PostgreSQL service, e.g. the GPU machine: see bench/GPU_CHECKS.md)",
    )
    parser.add_argument("--profile", action="store_true", help="time each bookkeeping step")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results JSON")
    args = parser.parse_args(argv)
    if args.pgserver:
        args.server = _start_pgserver(args.pgserver)
    url = args.database_url or _create_database(args.server)
    try:
        result = run_once(url, args.workers, args.trials, args.sampler, args.epochs, args.profile)
    finally:
        if not args.database_url:
            _drop_database(args.server, url)
    result["machine"] = machine(args.server)
    result["target_trials_per_s"] = TARGET_TRIALS_PER_S
    _print(result)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        m = result["machine"]
        label = re.sub(r"[^a-z0-9]+", "-", (m["gpu"] or m["hostname"]).lower()).strip("-")
        path = RESULTS / f"storage_throughput-{label}-{m['cores']}cores-{stamp}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwritten: {path.relative_to(ROOT)}")
    return 0


def _print(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(
        f"\nstorage throughput — {m['hostname']} ({m['cores']} cores, {m['cpu']}), "
        f"PostgreSQL {m['postgresql']}, optuna {m['optuna']}, {m['date']}"
    )
    if result["step_ms"]:
        print(f"\n{'step':<22}{'calls':>8}{'mean ms':>10}{'p50 ms':>9}{'p95 ms':>9}")
        for label, row in result["step_ms"].items():
            print(
                f"{label:<22}{row['calls']:>8}{row['mean']:>10.2f}{row['p50']:>9.2f}"
                f"{row['p95']:>9.2f}"
            )
    print(
        f"\n{'workers':>8}{'sampler':>9}{'trials':>8}{'finished':>10}{'span s':>9}"
        f"{'trials/s':>10}{'target':>8}"
    )
    print(
        f"{result['workers']:>8}{result['sampler']:>9}{result['trials']:>8}"
        f"{result['finished_runs']:>10}{result['span_s']:>9.1f}{result['trials_per_s']:>10.1f}"
        f"{result['target_trials_per_s']:>8.0f}"
    )


if __name__ == "__main__":
    sys.exit(main())
