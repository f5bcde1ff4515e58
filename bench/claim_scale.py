"""Claim scale: trials/s and claim latency of N simulated workers, ours against plain Optuna.

For each step (1, 4, 16, 64, 256 simulated workers by default) and each path (PostgreSQL
directly, and through a transaction-pooling PgBouncer), two systems push one study each through
the same server, one after the other, on a fresh database each:

- ours: the real worker slot (`workers.worker.SlotWorker`: claim → ask → suggest → attach →
  per-epoch store + Optuna report + pruner → finish → tell → synced, and its heartbeat thread
  with reaping and the reconciler) with only the training replaced by an instant one
  (bench.storage_throughput.TrivialTraining), `--epochs` epoch reports per trial;
- optuna: plain Optuna, `study.optimize` on an RDBStorage, the same search space (family, lr, a
  family parameter), the same sampler and pruner, the same epoch reports (report, then
  should_prune, each epoch: Optuna's documented pattern), each worker `total / N` trials.

Workers are processes up to `--max-processes` (16), beyond that processes × threads (64 = 16 × 4,
256 = 16 × 16): 256 Python processes do not fit this 2-core, 24 GiB machine. Each simulated
worker has its own stores and pools (its own connections), as a real slot has.

The server is a private PostgreSQL started for the run (bench.local_pg: this machine's binaries,
pg_stat_statements loaded, 1,500 connections), so the database's own statistics say where time
goes: statements per trial and the costliest ones (pg_stat_statements), rows written per trial
and table (pg_stat_user_tables), commits (pg_stat_database), what backends wait on
(pg_stat_activity sampled every 0.1 s) and, through PgBouncer, its pool (SHOW POOLS).

    .venv/bin/python bench/claim_scale.py                          # the whole plan (~30 min)
    .venv/bin/python bench/claim_scale.py --steps 1,4 --trials 200 --no-save   # a quick look

Results: a table on stdout, JSON and a Markdown table under bench/results/ naming the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import random
import socket
import statistics
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
from sqlalchemy import select  # noqa: E402

from bench.local_pg import (  # noqa: E402
    Sampler,
    Server,
    pgbouncer,
    private_postgres,
    reset_statistics,
    scratch_database,
    statement_stats,
    write_stats,
)
from bench.machine_info import cpu_model  # noqa: E402
from bench.storage_throughput import TrivialTraining, bench_spec  # noqa: E402
from service.db import Run, Study, make_engine  # noqa: E402
from service.db.engine import driver_url  # noqa: E402
from service.db.outage import db_retry  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import Store  # noqa: E402
from workers.options import SlotOptions  # noqa: E402
from workers.worker import SlotWorker, open_worker_store  # noqa: E402

RESULTS = ROOT / "bench" / "results"


# -- latencies, per thread, merged per process ------------------------------------------------
class Latencies:
    """Seconds per call of named steps, recorded by any thread of a process."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self._lock = threading.Lock()

    def add(self, label: str, seconds: float) -> None:
        with self._lock:
            self.seconds[label].append(seconds)

    def wrap(self, owner: Any, name: str, label: str, keep: Callable[[Any], bool] | None = None):
        """Time `owner.name` (an instance's bound method, or a class's function)."""
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = original(*args, **kwargs)
            if keep is None or keep(result):
                self.add(label, time.perf_counter() - started)
            return result

        setattr(owner, name, timed)


# -- ours: real worker slots ------------------------------------------------------------------
def _study_status(store: Store, study_id: int) -> str:
    with store.db.session() as session:
        return str(session.scalar(select(Study.status).where(Study.id == study_id)))


def _wait_for_study(url: str, study_id: int) -> None:
    """Until the study is no longer queued or running (one connection, the parent's)."""
    store = Store.open(url)
    try:
        while db_retry(lambda: _study_status(store, study_id), "poll") in ("queued", "running"):
            time.sleep(0.2)
    finally:
        store.dispose()


def _ours_child(
    url: str,
    study_id: int,
    first_slot: int,
    threads: int,
    ready: Any,
    go: Any,
    done: Any,
    results: Any,
) -> None:
    logging.basicConfig(level=logging.WARNING)
    settings = Settings(database_url=url, heartbeat_s=5.0, grace_s=60.0)  # production defaults
    latencies = Latencies()
    workers, stores = [], []
    for index in range(threads):
        store = open_worker_store(url)
        stores.append(store)
        latencies.wrap(store.runs, "claim_next", "claim", keep=lambda claim: claim is not None)
        latencies.wrap(store.runs, "report_epoch", "report")
        latencies.wrap(store.runs, "finish", "finish")
        options = SlotOptions(slot=first_slot + index, studies=(study_id,))
        workers.append(SlotWorker(settings, options, training=TrivialTraining(), store=store))
    ready.put(os.getpid())
    go.wait()
    running = [threading.Thread(target=worker.run) for worker in workers]
    for thread in running:
        thread.start()
    done.wait()  # the parent saw the study end: stop (idle slots would poll for ever)
    for worker in workers:
        worker.request_stop()
    for thread in running:
        thread.join()
    results.put({"trials": sum(w.trials for w in workers), "seconds": dict(latencies.seconds)})
    for store in stores:
        store.dispose()


def _prepare_ours(url: str, trials: int, epochs: int) -> int:
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    store = Store.open(url)
    owner, _ = store.users.create("bench")
    study, _ = store.studies.create(owner, bench_spec(trials, "random", epochs))
    store.dispose()
    return study.id


def _finished_ours(url: str, study_id: int) -> list[tuple[datetime, datetime]]:
    store = Store.open(url)
    with store.db.session() as session:
        rows = session.execute(
            select(Run.started_at, Run.finished_at).where(
                Run.study_id == study_id, Run.state.in_(("complete", "pruned"))
            )
        ).all()
    store.dispose()
    return [(r[0], r[1]) for r in rows if r[0] is not None and r[1] is not None]


# -- plain Optuna -----------------------------------------------------------------------------
def _peer_objective(epochs: int) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        family = trial.suggest_categorical("activation", ["relu", "swish"])
        trial.suggest_float("training.lr", 0.01, 0.5, log=True)
        if family == "swish":
            trial.suggest_float("swish.beta", 0.5, 2.0)
        value = random.random()
        for epoch in range(epochs):
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    return objective


def _peer_storage(url: str) -> optuna.storages.RDBStorage:
    """What a plain Optuna user passes: the URL, plus prepare_threshold=None behind PgBouncer."""
    target, connect_args = driver_url(url)
    kwargs = {"connect_args": connect_args} if connect_args else None
    return optuna.storages.RDBStorage(target.render_as_string(False), engine_kwargs=kwargs)


def _peer_child(
    url: str, name: str, quotas: list[int], epochs: int, ready: Any, go: Any, results: Any
) -> None:
    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    latencies = Latencies()
    latencies.wrap(optuna.Study, "ask", "claim")
    latencies.wrap(optuna.Trial, "report", "report")
    latencies.wrap(optuna.Study, "tell", "finish")
    studies = [
        optuna.load_study(
            study_name=name,
            storage=_peer_storage(url),
            sampler=optuna.samplers.RandomSampler(),
            pruner=optuna.pruners.MedianPruner(),
        )
        for _ in quotas
    ]
    ready.put(os.getpid())
    go.wait()
    objective = _peer_objective(epochs)
    running = [
        threading.Thread(target=study.optimize, args=(objective,), kwargs={"n_trials": quota})
        for study, quota in zip(studies, quotas, strict=True)
    ]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    results.put({"trials": sum(quotas), "seconds": dict(latencies.seconds)})
    for study in studies:
        study._storage._backend.engine.dispose()  # type: ignore[attr-defined]


def _prepare_peer(url: str) -> str:
    storage = _peer_storage(url)
    optuna.create_study(study_name="peer", storage=storage, direction="maximize")
    storage.engine.dispose()
    return "peer"


def _finished_peer(url: str) -> list[tuple[datetime, datetime]]:
    storage = _peer_storage(url)
    trials = optuna.load_study(study_name="peer", storage=storage).get_trials(deepcopy=False)
    storage.engine.dispose()
    return [
        (t.datetime_start, t.datetime_complete)
        for t in trials
        if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        and t.datetime_start is not None
        and t.datetime_complete is not None
    ]


# -- diagnosis -------------------------------------------------------------------------------
def _drop_version_triggers(server: Server, database: str) -> None:
    """Diagnosis only (--without-version-triggers): what the study-version triggers cost."""
    with server.connect(database) as connection:
        for table in ("as_runs", "as_trainings"):
            for event in ("insert", "update", "delete"):
                connection.execute(f"DROP TRIGGER IF EXISTS {table}_version_{event} ON {table}")
        connection.execute("DROP TRIGGER IF EXISTS as_studies_version ON as_studies")


# -- one measured run -------------------------------------------------------------------------
def layout(workers: int, max_processes: int) -> tuple[int, int]:
    """(processes, threads per process) for `workers` simulated workers."""
    processes = min(workers, max_processes)
    if workers % processes:
        raise ValueError(f"{workers} workers do not split evenly over {processes} processes")
    return processes, workers // processes


def _rate(spans: list[tuple[datetime, datetime]]) -> dict[str, float]:
    """Trials/s over the whole run and over its middle (10th to 90th percentile of finishes)."""
    if len(spans) < 10:
        return {"trials_per_s": float("nan"), "trials_per_s_steady": float("nan")}
    starts = min(s for s, _ in spans)
    ends = sorted(e for _, e in spans)
    whole = (ends[-1] - starts).total_seconds()
    low, high = ends[len(ends) // 10], ends[(9 * len(ends)) // 10]
    middle = (high - low).total_seconds()
    inside = sum(1 for e in ends if low < e <= high)
    return {
        "trials_per_s": len(spans) / whole if whole > 0 else float("nan"),
        "trials_per_s_steady": inside / middle if middle > 0 else float("nan"),
        "span_s": whole,
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "calls": len(values)}


def measure(
    system: str,
    server: Server,
    target: Server,
    workers: int,
    trials: int,
    epochs: int,
    max_processes: int,
    version_triggers: bool = True,
) -> dict[str, Any]:
    """One study of `trials` trials pushed by `workers` simulated workers of `system`."""
    processes, threads = layout(workers, max_processes)
    with scratch_database(server) as database:
        url = target.url(database)
        context = mp.get_context("spawn")
        ready, results, go, done = (context.Queue(), context.Queue(), context.Event(),
                                    context.Event())  # fmt: skip
        jobs: list[tuple[Callable[..., None], tuple[Any, ...]]]
        if system == "ours":
            study_id = _prepare_ours(server.url(database), trials, epochs)
            if not version_triggers:
                _drop_version_triggers(server, database)
            jobs = [
                (_ours_child, (url, study_id, p * threads, threads, ready, go, done, results))
                for p in range(processes)
            ]
        else:
            name = _prepare_peer(server.url(database))
            quotas = [
                trials // workers + (1 if i < trials % workers else 0) for i in range(workers)
            ]
            jobs = [
                (
                    _peer_child,
                    (
                        url,
                        name,
                        quotas[p * threads : (p + 1) * threads],
                        epochs,
                        ready,
                        go,
                        results,
                    ),
                )
                for p in range(processes)
            ]
        children = [context.Process(target=fn, args=args) for fn, args in jobs]
        for child in children:
            child.start()
        for _ in children:
            ready.get(timeout=900)
        reset_statistics(server)
        bouncer = target if target.pooled else None
        with Sampler(server, database, bouncer) as sampler:
            started = time.perf_counter()
            go.set()
            if system == "ours":
                _wait_for_study(server.url(database), study_id)
                done.set()
            parts = [results.get(timeout=3600) for _ in children]
            wall_s = time.perf_counter() - started
        for child in children:
            child.join(timeout=120)
        spans = (
            _finished_ours(server.url(database), study_id)
            if system == "ours"
            else _finished_peer(server.url(database))
        )
        finished = max(1, len(spans))
        result: dict[str, Any] = {
            "system": system,
            "path": "pgbouncer" if target.pooled else "direct",
            "workers": workers,
            "processes": processes,
            "threads_per_process": threads,
            "trials": trials,
            "finished": len(spans),
            "wall_s": wall_s,
            **_rate(spans),
        }
        merged: dict[str, list[float]] = defaultdict(list)
        for part in parts:
            for label, values in part["seconds"].items():
                merged[label].extend(values)
        result["latency"] = {label: _percentiles(v) for label, v in sorted(merged.items())}
        result["database"] = {
            **statement_stats(server, database, finished),
            **write_stats(server, database, finished),
            **sampler.summary(),
        }
    return result


# -- the plan ---------------------------------------------------------------------------------
def trials_for(workers: int, args: argparse.Namespace) -> int:
    """Enough trials for every worker to do several: `--trials`, or per_worker × workers."""
    return max(args.trials, args.per_worker * workers)


def machine(server: Server) -> dict[str, Any]:
    """What ran the benchmark."""
    with server.connect() as connection:
        version = connection.execute("SHOW server_version").fetchone()
    cores = os.cpu_count() or 0
    return {
        "name": f"vm-{cores}cores" if cores <= 4 else None,  # a small VM: no stable host name
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cores": cores,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "optuna": optuna.__version__,
        "postgresql": version[0] if version else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_plan(args: argparse.Namespace) -> dict[str, Any]:
    """Every step, path and system; the private server and PgBouncer live for the whole run."""
    steps = [int(s) for s in args.steps.split(",")]
    paths = args.paths.split(",")
    systems = args.systems.split(",")
    runs: list[dict[str, Any]] = []
    with private_postgres(args.max_connections) as server:
        info = machine(server)
        with pgbouncer(server, pool_size=args.pool_size) as bouncer:
            for workers in steps:
                for path in paths:
                    target = bouncer if path == "pgbouncer" else server
                    for repeat in range(args.repeats):
                        for system in order_of(systems, repeat):
                            trials = trials_for(workers, args)
                            run = measure(
                                system, server, target, workers, trials, args.epochs,
                                args.max_processes, not args.without_version_triggers,
                            )  # fmt: skip
                            run["repeat"] = repeat
                            runs.append(run)
                            _print_run(run)
                            if args.partial:  # a run cut short by a time limit keeps its figures
                                with open(args.partial, "a") as out:
                                    out.write(json.dumps(run, default=str) + "\n")
    return {
        "machine": info,
        "settings": {
            "epochs": args.epochs,
            "sampler": "random",
            "pruner": "median",
            "pgbouncer_pool_size": args.pool_size,
            "max_connections": args.max_connections,
            "max_processes": args.max_processes,
            "repeats": args.repeats,
            "version_triggers": not args.without_version_triggers,
        },
        "runs": runs,
        "ratios": ratios(runs),
    }


def order_of(systems: list[str], repeat: int) -> list[str]:
    """Which system goes first alternates between repeats, so a drift in the machine's load
    (another job starting, the page cache warming) does not always favour the same one."""
    return systems if repeat % 2 == 0 else systems[::-1]


def ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ours / plain Optuna trials/s for each (workers, path) measured for both: the median of
    the repeats' ratios (each repeat's pair ran back to back), with every repeat's ratio."""
    by_key = {(r["workers"], r["path"], r.get("repeat", 0), r["system"]): r for r in runs}
    pairs: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for (workers, path, repeat, system), ours in sorted(by_key.items()):
        peer = by_key.get((workers, path, repeat, "optuna"))
        if system != "ours" or peer is None:
            continue
        pairs[(workers, path)].append(
            (
                ours["trials_per_s"] / peer["trials_per_s"],
                ours["trials_per_s_steady"] / peer["trials_per_s_steady"],
            )
        )
    return [
        {
            "workers": workers,
            "path": path,
            "repeats": len(found),
            "ours_over_optuna": statistics.median(whole for whole, _ in found),
            "ours_over_optuna_steady": statistics.median(steady for _, steady in found),
            "ours_over_optuna_each": [round(whole, 3) for whole, _ in found],
        }
        for (workers, path), found in sorted(pairs.items())
    ]


# -- output -----------------------------------------------------------------------------------
HEADER = (
    "| workers (proc × thr) | path | system | trials/s | steady | claim p50 / p99 ms | "
    "stmts/trial | rows/trial | commits/trial | server conns | top wait |"
)


def table_row(run: dict[str, Any]) -> str:
    """One Markdown row of a run."""
    db = run["database"]
    claim = run["latency"].get("claim", {})
    waits = db.get("waits_per_sample", {})
    top = next(iter(waits.items()), ("—", 0))
    conns = f"{db['server_connections_peak']}"
    if "pgbouncer" in db:
        conns += f" (clients {db['pgbouncer']['client_connections_peak']})"
    return (
        f"| {run['workers']} ({run['processes']} × {run['threads_per_process']}) "
        f"| {run['path']} | {run['system']} | {run['trials_per_s']:.1f} "
        f"| {run['trials_per_s_steady']:.1f} "
        f"| {claim.get('p50_ms', float('nan')):.1f} / {claim.get('p99_ms', float('nan')):.1f} "
        f"| {db['statements_per_trial']:.1f} | {db['rows_written_per_trial']:.1f} "
        f"| {db['commits_per_trial']:.1f} | {conns} | {top[0]} ({top[1]:.2f}) |"
    )


def markdown(result: dict[str, Any]) -> str:
    """The whole result as a Markdown table with the machine named."""
    m = result["machine"]
    lines = [
        f"# claim_scale — {m['name'] or m['hostname']}: {m['cores']} cores ({m['cpu']}), "
        f"{m['memory_gib']} GiB, PostgreSQL {m['postgresql']}, optuna {m['optuna']}, {m['date']}",
        "",
        f"Trivial objective, {result['settings']['epochs']} epoch reports per trial, random "
        f"sampler, median pruner; PgBouncer pool {result['settings']['pgbouncer_pool_size']} "
        "server connections. trials/s: finished trials / (last finish − first start); steady: "
        "between the 10th and 90th percentile of finishes.",
        "",
        HEADER,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
        *[table_row(run) for run in result["runs"]],
        "",
        "| workers | path | ours / plain Optuna (trials/s), median | steady, median | each repeat |",
        "|---|---|---:|---:|---|",
        *[
            f"| {r['workers']} | {r['path']} | {r['ours_over_optuna']:.2f} "
            f"| {r['ours_over_optuna_steady']:.2f} "
            f"| {' / '.join(f'{x:.2f}' for x in r.get('ours_over_optuna_each', []))} |"
            for r in result["ratios"]
        ],
        "",
    ]
    return "\n".join(lines)


def _print_run(run: dict[str, Any]) -> None:
    print(table_row(run), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the plan, print the table, write JSON and Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="1,4,16,64,256", help="simulated workers per step")
    parser.add_argument("--paths", default="direct,pgbouncer")
    parser.add_argument("--systems", default="ours,optuna")
    parser.add_argument("--epochs", type=int, default=3, help="epoch reports per trial")
    parser.add_argument("--trials", type=int, default=400, help="at least this many per run")
    parser.add_argument("--per-worker", type=int, default=4, help="at least this many per worker")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per point; the ratio is their median"
    )
    parser.add_argument("--max-processes", type=int, default=16, help="beyond: threads")
    parser.add_argument("--pool-size", type=int, default=20, help="PgBouncer server connections")
    parser.add_argument("--max-connections", type=int, default=1500, help="the private server's")
    parser.add_argument(
        "--without-version-triggers",
        action="store_true",
        help="diagnosis: drop migration 0008's study-version triggers in the measured databases",
    )
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results")
    parser.add_argument("--partial", help="append each run as one JSON line to this file")
    args = parser.parse_args(argv)
    print(HEADER, flush=True)
    result = run_plan(args)
    text = markdown(result)
    print("\n" + text)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        label = result["machine"]["name"] or result["machine"]["hostname"]
        base = RESULTS / f"claim_scale-{label}-{stamp}"
        base.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        base.with_suffix(".md").write_text(text)
        print(f"written: {base.relative_to(ROOT)}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
