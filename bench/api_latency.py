"""API latency with 10,000 trials in one study: trial list pages and study detail, p50/p99.

Fills a fresh database with one study of 10,000 attempts (bulk inserts of as_runs and as_epochs:
a realistic mix of families, states, parameters, values and records), VACUUM ANALYZEs it (the
state autovacuum keeps), starts the real app under uvicorn (one worker; in a subprocess as
`actsearch serve` runs it, or with --server thread in this process) and times each endpoint from
this process with httpx over HTTP: warm-up, then ≥ 200 sequential requests each. Target
(docs PERF.md): p99 < 50 ms on the 2-core machine, PostgreSQL. The machine is shared: the load
average is recorded with the figures.

    .venv/bin/python bench/api_latency.py                        # PostgreSQL, 10,000 trials
    .venv/bin/python bench/api_latency.py --backend sqlite --requests 300
    .venv/bin/python bench/api_latency.py --server thread

Results: a table on stdout and JSON under bench/results/ naming the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import create_engine, insert, text  # noqa: E402

from bench.machine_info import cpu_model  # noqa: E402
from service.db import Epoch, Run, make_engine  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.store import Store  # noqa: E402

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
RESULTS = ROOT / "bench" / "results"
TARGET_P99_MS = 50.0
log = logging.getLogger("bench.api_latency")

SPEC = {
    "version": 1,
    "name": "latency-bench",
    "description": "10,000 trials for the API latency benchmark",
    "dataset": {"name": "cifar10"},
    "model": "resnet18",
    "training": {"epochs": 10},
    "activations": {
        "relu": {},
        "gelu": {},
        "silu": {},
        "smu": {"alpha": {"low": 0.0, "high": 0.5}, "mu": {"low": 0.5, "high": 5.0, "log": True}},
        "pau": {},
    },
    "baselines": ["relu"],
    "n_trials": 10_000,
}
FAMILIES = ("relu", "gelu", "silu", "smu", "pau", "swish", "opau")
# complete 80 %, pruned 10 %, failed 5 %, running 2 %, cancelled 2 %, queued retries 1 %
STATES = (
    ["complete"] * 80
    + ["pruned"] * 10
    + ["failed"] * 5
    + ["running"] * 2
    + ["cancelled"] * 2
    + ["queued"]
)
FAILURES = ("diverged", "oom", "timeout", "worker_lost", "error")


# -- data ------------------------------------------------------------------------------------------
def _params(rng: random.Random, family: str) -> dict[str, Any]:
    params: dict[str, Any] = {"activation": family}
    if family == "smu":
        params |= {
            "smu.alpha": round(rng.uniform(0, 0.5), 4),
            "smu.mu": round(rng.uniform(0.5, 5), 4),
        }
    elif family == "pau":
        params |= {"pau.init_target": rng.choice(["leaky_relu", "gelu"]), "pau.m": 5, "pau.n": 4}
    elif family == "swish":
        params |= {"swish.beta": round(rng.uniform(0.5, 2.0), 4)}
    elif family == "opau":
        params |= {"opau.basis": rng.choice(["hermite", "chebyshev", "legendre"])}
    params["lr"] = round(10 ** rng.uniform(-2, -0.5), 5)
    return params


def _record(rng: random.Random, family: str, value: float, epochs: int) -> dict[str, Any]:
    grid = [round(-4 + 8 * i / 32, 3) for i in range(33)]
    sites = {
        f"layer{i}.act": {"x": grid, "f": [round(max(x, 0) + rng.gauss(0, 0.01), 4) for x in grid],
                          "df": [1.0 if x > 0 else 0.0 for x in grid]}
        for i in range(4)
    }  # fmt: skip
    return {
        "val_acc": value,
        "best_val_acc": value,
        "epochs_done": epochs,
        "img_per_s": rng.uniform(20_000, 40_000),
        "peak_memory_bytes": rng.randint(2, 8) * 1_000_000_000,
        "activation_params": {
            "final": {f"layer{i}.act": {"alpha": [rng.random()]} for i in range(4)}
        }
        if family in ("smu", "pau", "swish", "opau")
        else {},
        "activation_curves": {"final": sites},
        "manifest": {
            "git_sha": "0" * 40,
            "packages": {"torch": "2.14.1"},
            "gpu": "NVIDIA H100",
            "seed": 0,
        },
    }


def fill(store: Store, study_id: int, n_trials: int, epochs: int, seed: int = 0) -> None:
    """Bulk-insert n_trials runs (attempts) with their epochs into one study."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    start = now - timedelta(days=3)
    runs, epoch_rows = [], []
    with store.db.session() as session:
        first_id = (
            int(session.execute(text("SELECT COALESCE(MAX(id), 0) FROM as_runs")).scalar() or 0) + 1
        )
    for i in range(n_trials):
        run_id = first_id + i
        family = FAMILIES[i % len(FAMILIES)] if i >= 3 else "relu"
        state = rng.choice(STATES)
        done = epochs if state == "complete" else rng.randint(1, epochs) if state != "queued" else 0
        value = (
            round(rng.gauss(0.90 if family != "relu" else 0.89, 0.02), 5)
            if state == "complete"
            else None
        )
        began = start + timedelta(seconds=30 * i)
        finished = began + timedelta(seconds=25) if state not in ("running", "queued") else None
        runs.append(
            {
                "id": run_id, "study_id": study_id,
                "trial_number": i if state != "queued" else None, "optuna_trial_id": None,
                "attempt": 2 if state == "queued" else 1, "retry_of": None, "state": state,
                "counts_budget": True,
                "failure_reason": rng.choice(FAILURES) if state == "failed" else None,
                "failure_message": "loss became NaN at step 301" if state == "failed" else None,
                "failure_epoch": done - 1 if state == "failed" else None,
                "family": family, "params": _params(rng, family),
                "config": {"activation": {"family": family}, "training": {"epochs": epochs}, "seed": i},
                "worker_id": f"gpu-{i % 8}", "created_at": began,
                "started_at": began if state != "queued" else None,
                # Running trials heartbeat now (else the API's reaper would fail them mid-run).
                "heartbeat_at": now if state == "running" else began + timedelta(seconds=20) if state != "queued" else None,
                "finished_at": finished, "epochs_done": done, "value": value,
                "test_acc": value - 0.004 if value is not None else None, "value_std": None,
                "duration_s": 25.0 + rng.random() * 10 if finished else None,
                "img_per_s": rng.uniform(20_000, 40_000) if done else None,
                "peak_mem_bytes": rng.randint(2, 8) * 1_000_000_000 if done else None,
                "record": _record(rng, family, value, done) if state == "complete" else None,
                "log_tail": None,
            }
        )  # fmt: skip
        for epoch in range(done):
            epoch_rows.append(
                {"run_id": run_id, "epoch": epoch, "train_loss": 2.0 / (epoch + 1),
                 "val_acc": 0.5 + 0.04 * epoch, "img_per_s": 30_000.0,
                 "elapsed_s": 2.5 * (epoch + 1), "created_at": began}
            )  # fmt: skip
    with store.db.session() as session:
        for chunk in range(0, len(runs), 2000):
            session.execute(insert(Run), runs[chunk : chunk + 2000])
        for chunk in range(0, len(epoch_rows), 10_000):
            session.execute(insert(Epoch), epoch_rows[chunk : chunk + 10_000])
        if not store.db.sqlite:
            session.execute(text("SELECT setval('as_runs_id_seq', (SELECT MAX(id) FROM as_runs))"))
    # The state autovacuum keeps a table in: statistics fresh, visibility map set.
    with store.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE" if store.db.sqlite else "VACUUM ANALYZE"))


# -- database and server ---------------------------------------------------------------------
def create_database(backend: str, workdir: Path) -> str:
    """A fresh database for this run."""
    if backend == "sqlite":
        return f"sqlite:///{workdir / 'bench.db'}"
    name = f"as_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{PG_SERVER}/{name}"


def drop_database(url: str) -> None:
    """Drop the run's PostgreSQL database."""
    if url.startswith("sqlite"):
        return
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def free_port() -> int:
    """A port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """The app under uvicorn: a subprocess (as `actsearch serve` runs) or a thread of this one."""

    def __init__(self, url: str, home: Path, mode: str) -> None:
        self.mode = mode
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.server: Any = None
        if mode == "subprocess":
            env = {**os.environ, "ACTSEARCH_DATABASE_URL": url, "ACTSEARCH_HOME": str(home)}
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "service.app:app_from_env",
                 "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
                 "--no-access-log"],
                cwd=ROOT, env=env,
            )  # fmt: skip
        else:
            import uvicorn

            from service.app import create_app
            from service.settings import Settings

            app = create_app(Settings(database_url=url, home=home))
            config = uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
            )
            self.server = uvicorn.Server(config)
            threading.Thread(target=self.server.run, daemon=True).start()
        self._wait_ready()

    def _wait_ready(self) -> None:
        for _ in range(300):
            try:
                if httpx.get(f"{self.base}/api/v1/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("the server did not become ready within 60 s")

    def stop(self) -> None:
        """Shut the server down."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
        if self.server is not None:
            self.server.should_exit = True
            time.sleep(1)


# -- timing ----------------------------------------------------------------------------------------
def endpoints(study_id: int, best_number: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, path, params) of the timed requests."""
    trials = f"/api/v1/studies/{study_id}/trials"
    return [
        ("study detail", f"/api/v1/studies/{study_id}", {}),
        ("trials by number", trials, {}),
        ("trials by -value", trials, {"sort": "-value"}),
        ("trials by test_acc", trials, {"sort": "test_acc"}),
        ("trials by -duration_s", trials, {"sort": "-duration_s"}),
        ("trials by -img_per_s", trials, {"sort": "-img_per_s"}),
        ("trials by -epochs_done", trials, {"sort": "-epochs_done"}),
        ("complete, by -value", trials, {"state": "complete", "sort": "-value"}),
        ("family smu, by -value", trials, {"family": "smu", "sort": "-value"}),
        ("param smu.alpha range", trials, {"param": "smu.alpha:0.1:0.3", "sort": "-value"}),
        ("value range", trials, {"value_min": 0.9, "value_max": 0.92, "sort": "-value"}),
        ("page at offset 9,000", trials, {"offset": 9000, "sort": "number"}),
        ("trials limit 200", trials, {"limit": 200, "sort": "-value"}),
        ("trial detail", f"{trials}/{best_number}", {}),
        ("leaderboard", f"/api/v1/studies/{study_id}/leaderboard", {}),
        ("study list", "/api/v1/studies", {}),
    ]


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def time_endpoint(
    client: httpx.Client, path: str, params: dict[str, Any], n: int, warmup: int
) -> dict[str, Any]:
    """Latency samples (ms) of n sequential requests after warm-up."""
    for _ in range(warmup):
        client.get(path, params=params).raise_for_status()
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        response = client.get(path, params=params)
        samples.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
    return {
        "n": n,
        "p50_ms": statistics.median(samples),
        "p90_ms": percentile(samples, 90),
        "p99_ms": percentile(samples, 99),
        "max_ms": max(samples),
        "bytes": len(response.content),
    }


def cursor_walk(client: httpx.Client, path: str, n: int) -> dict[str, Any]:
    """Latency of following next_cursor pages (sort -value), n requests."""
    samples, cursor = [], None
    for _ in range(n):
        params: dict[str, Any] = {"sort": "-value", "limit": 50}
        if cursor:
            params["cursor"] = cursor
        began = time.perf_counter()
        response = client.get(path, params=params)
        samples.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
        cursor = response.json()["next_cursor"]
    return {"n": n, "p50_ms": statistics.median(samples), "p90_ms": percentile(samples, 90),
            "p99_ms": percentile(samples, 99), "max_ms": max(samples), "bytes": len(response.content)}  # fmt: skip


# -- machine -------------------------------------------------------------------------------------
def machine(url: str) -> dict[str, Any]:
    """What this ran on."""
    cpu = cpu_model()
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    engine = make_engine(url)
    with engine.connect() as connection:
        info["database"] = connection.execute(
            text("SELECT sqlite_version()" if url.startswith("sqlite") else "SELECT version()")
        ).scalar()
    engine.dispose()
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=10, help="epochs per complete trial")
    parser.add_argument("--requests", type=int, default=300, help="timed requests per endpoint")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument(
        "--server",
        choices=("subprocess", "thread"),
        default="subprocess",
        help="uvicorn in its own process (as deployed) or in a thread of this process",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    load_at_start = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="api-latency-"))
    url = create_database(args.backend, workdir)
    server: Server | None = None
    try:
        upgrade(make_engine(url))
        store = Store.open(url)
        admin, token = store.users.create("bench", is_admin=True)
        study, _ = store.studies.create(admin, SPEC)
        began = time.perf_counter()
        fill(store, study.id, args.trials, args.epochs)
        fill_s = time.perf_counter() - began
        log.info("inserted %d trials in %.1f s", args.trials, fill_s)
        best = (
            store.db.engine.connect()
            .execute(
                text(
                    "SELECT trial_number FROM as_runs WHERE study_id = :s AND state = 'complete' ORDER BY value DESC LIMIT 1"
                ),
                {"s": study.id},
            )
            .scalar()
        )
        store.dispose()

        server = Server(url, workdir, args.server)
        base = server.base
        results: dict[str, dict[str, Any]] = {}
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client:
            for label, path, params in endpoints(study.id, int(best)):
                results[label] = time_endpoint(client, path, params, args.requests, args.warmup)
                results[label]["request"] = {
                    "path": path.replace(str(study.id), "{id}"),
                    "params": params,
                }
            results["cursor pages (-value)"] = cursor_walk(
                client, f"/api/v1/studies/{study.id}/trials", args.requests
            )
        worst = max(r["p99_ms"] for r in results.values())
        report = {
            "benchmark": "api_latency",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "backend": args.backend,
            "trials_in_study": args.trials,
            "epochs_per_complete_trial": args.epochs,
            "requests_per_endpoint": args.requests,
            "server": f"uvicorn, one worker, in a {args.server}; httpx client, keep-alive, sequential",
            "fill_seconds": round(fill_s, 2),
            "target_p99_ms": TARGET_P99_MS,
            "worst_p99_ms": round(worst, 2),
            "meets_target": worst < TARGET_P99_MS,
            "load_avg_1m_at_start": load_at_start,
            "machine": machine(url),
            "endpoints": results,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = f"{datetime.now(timezone.utc):%Y-%m-%dT%H%MZ}-{args.backend}-{args.server}"
        out = RESULTS / f"api_latency-{stamp}.json"
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nAPI latency, {args.trials:,} trials in one study, {args.backend}, "
              f"{args.requests} requests each ({report['machine']['cpu_count']} CPUs, "
              f"load {load_at_start:.1f} at start, {report['machine']['load_avg_1m']:.1f} at end)")  # fmt: skip
        print(f"{'endpoint':<26}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'bytes':>9}")
        for label, r in results.items():
            print(
                f"{label:<26}{r['p50_ms']:>9.1f}{r['p90_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}{r['bytes']:>9}"
            )
        verdict = "meets" if worst < TARGET_P99_MS else "MISSES"
        print(
            f"worst p99 {worst:.1f} ms: {verdict} the {TARGET_P99_MS:.0f} ms target; wrote {out.relative_to(ROOT)}"
        )
        return 0
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            drop_database(url)
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
