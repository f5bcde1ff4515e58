"""API latency and throughput: one client per route, and many clients at once, on big studies.

Fills a fresh database with one study of `--trials` attempts (runs and epochs, bulk-inserted: a
realistic mix of families, states, parameters, values and records; bench/api_fill.py) and, with
`--total-trials`, copies of it in other studies until the database holds that many (their
epochs too unless `--background-runs-only`); VACUUM
ANALYZEs it (the state autovacuum keeps); starts the real `actsearch serve` (`--processes`
server processes; or the app in a thread of this process) and measures over HTTP:

- sequential: each route alone, warm-up then `--requests` requests one after another (httpx),
  p50/p90/p99. Three times: as an unchanged study is read (answers kept per tag); `cold`: the
  study's change counter bumped before every request, so that every answer is computed; and
  `polled`: the same changes, asked as the dashboard polls (Cache-Control: max-stale=10: the
  server answers with what it has and computes the current answer in the background).
- concurrent: `--clients` clients at once for `--duration` seconds over the hot routes (study
  list, study detail, trials page, leaderboard, summary, workers; bench/http_load.py), in
  scenarios: `static` (nothing changes), `live` (simulated workers heartbeat their running
  trials with live progress every 5 s and a trial finishes every 2 s), each with and without
  If-None-Match and max-stale=10 (`-conditional`: as the dashboard and `--follow` poll).

Targets (issue 21; the 2-core machine, PostgreSQL): one client, 100,000 trials in a
study and 1,000,000 in the database: p99 < 50 ms on every route; 50 clients on a 10,000-trial
study for 30 s: ≥ 400 requests/s, p99 < 150 ms, no errors. The machine is shared: its load
average is recorded with the figures.

    .venv/bin/python bench/api_latency.py --mode concurrent                 # 10,000 trials, 50 clients
    .venv/bin/python bench/api_latency.py --mode sequential --trials 100000 --total-trials 1000000
    .venv/bin/python bench/api_latency.py --backend sqlite --requests 300 --mode sequential

Results: a table on stdout and JSON under bench/results/ naming the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from bench.api_fill import SPEC, LiveStudy, fill, replicate, settle  # noqa: E402
from bench.http_load import Route, percentile, run_load  # noqa: E402
from bench.machine_info import cpu_model  # noqa: E402
from service.db import make_engine  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store import Store  # noqa: E402

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
RESULTS = ROOT / "bench" / "results"
TARGET_P99_MS = 50.0  # one client, every route
TARGET_RPS, TARGET_CONCURRENT_P99_MS = 400.0, 150.0  # 50 clients
SCENARIOS = ("static", "static-conditional", "live", "live-conditional")
NO_REAPING_S = "864000"  # the server's grace: the fill's running trials are not reaped meanwhile
log = logging.getLogger("bench.api_latency")


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
    """`actsearch serve` in a subprocess (as deployed), or the app in a thread of this one."""

    def __init__(self, url: str, home: Path, mode: str, processes: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.server: Any = None
        env = {**os.environ, "ACTSEARCH_DATABASE_URL": url, "ACTSEARCH_HOME": str(home),
               "ACTSEARCH_GRACE_S": NO_REAPING_S, "ACTSEARCH_LOG_LEVEL": "WARNING"}  # fmt: skip
        if mode == "subprocess":
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port),
                 "--processes", str(processes)],
                cwd=ROOT, env=env,
            )  # fmt: skip
        else:
            import uvicorn

            from service.app import create_app

            settings = Settings(database_url=url, home=home, grace_s=float(NO_REAPING_S))
            config = uvicorn.Config(
                create_app(settings), host="127.0.0.1", port=self.port, log_level="warning",
                access_log=False,
            )  # fmt: skip
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


# -- routes ----------------------------------------------------------------------------------------
def hot_routes(study_id: int) -> list[Route]:
    """What a dashboard with the study page open polls, and the study list and workers pages."""
    study = f"/api/v1/studies/{study_id}"
    return [
        Route("study list", "/api/v1/studies?limit=50&offset=0&sort=-created"),
        Route("study detail", study),
        Route("trials page", f"{study}/trials?limit=50&offset=0&sort=number"),
        Route("leaderboard", f"{study}/leaderboard"),
        Route("summary", f"/dashboard/data/studies/{study_id}/summary"),
        Route("workers", "/api/v1/workers"),
    ]


def endpoints(study_id: int, best_number: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, path, params) of the sequentially timed requests."""
    trials = f"/api/v1/studies/{study_id}/trials"
    return [
        ("study list", "/api/v1/studies", {}),
        ("study detail", f"/api/v1/studies/{study_id}", {}),
        ("trials by number", trials, {}),
        ("trials by -value", trials, {"sort": "-value"}),
        ("trials by test_acc", trials, {"sort": "test_acc"}),
        ("trials by -duration_s", trials, {"sort": "-duration_s"}),
        ("trials by -img_per_s", trials, {"sort": "-img_per_s"}),
        ("trials by -epochs_done", trials, {"sort": "-epochs_done"}),
        ("running trials", trials, {"state": "running", "limit": 1}),
        ("complete, by -value", trials, {"state": "complete", "sort": "-value"}),
        ("family smu, by -value", trials, {"family": "smu", "sort": "-value"}),
        ("param smu.alpha range", trials, {"param": "smu.alpha:0.1:0.3", "sort": "-value"}),
        ("value range", trials, {"value_min": 0.9, "value_max": 0.92, "sort": "-value"}),
        ("page at offset 9,000", trials, {"offset": 9000, "sort": "number"}),
        ("trials limit 200", trials, {"limit": 200, "sort": "-value"}),
        ("trial detail", f"{trials}/{best_number}", {}),
        ("leaderboard", f"/api/v1/studies/{study_id}/leaderboard", {}),
        ("summary", f"/dashboard/data/studies/{study_id}/summary", {}),
        ("workers", "/api/v1/workers", {}),
    ]


# -- sequential ------------------------------------------------------------------------------------
def _bump(store: Store, study_id: int) -> None:
    """A change to the study as far as ETags and kept answers go (nothing a read shows)."""
    with store.db.session() as session:
        session.execute(
            text("UPDATE as_studies SET version = version + 1 WHERE id = :s"), {"s": study_id}
        )


def time_endpoint(
    client: httpx.Client,
    path: str,
    params: dict[str, Any],
    n: int,
    warmup: int,
    cold: Any,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Latency samples (ms) of n sequential requests after warm-up; `cold()` before each."""
    for _ in range(warmup):
        client.get(path, params=params, headers=headers).raise_for_status()
    samples = []
    for _ in range(n):
        if cold is not None:
            cold()
        began = time.perf_counter()
        response = client.get(path, params=params, headers=headers)
        samples.append((time.perf_counter() - began) * 1000)
        response.raise_for_status()
    return {"n": n, "p50_ms": statistics.median(samples), "p90_ms": percentile(samples, 90),
            "p99_ms": percentile(samples, 99), "max_ms": max(samples),
            "bytes": len(response.content)}  # fmt: skip


def sequential(
    base: str, token: str, store: Store, study_id: int, best: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Each route alone: kept answers; cold (a change before every request: each answer
    computed); polled (the same changes, asked as the dashboard polls: an older answer up to
    10 s old accepted while the current one is computed in the background)."""
    out: dict[str, Any] = {}
    bump = lambda: _bump(store, study_id)  # noqa: E731
    polls = {"Cache-Control": "max-stale=10"}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        for label, path, params in endpoints(study_id, best):
            kept = time_endpoint(c, path, params, args.requests, args.warmup, None)
            cold = time_endpoint(c, path, params, args.cold_requests, 2, bump)
            polled = time_endpoint(c, path, params, args.cold_requests, 2, bump, polls)
            request = {"path": path.replace(str(study_id), "{id}"), "params": params}
            out[label] = {"kept": kept, "cold": cold, "polled": polled, "request": request}
            log.info("%-24s kept p99 %6.1f ms, cold p99 %6.1f ms, polled p99 %6.1f ms", label,
                     kept["p99_ms"], cold["p99_ms"], polled["p99_ms"])  # fmt: skip
    return out


# -- concurrent ------------------------------------------------------------------------------------
def concurrent(
    server: Server, token: str, store: Store, study_id: int, args: argparse.Namespace
) -> dict[str, Any]:
    """The hot routes under `clients` clients, scenario by scenario."""
    out: dict[str, Any] = {}
    routes = hot_routes(study_id)
    for scenario in args.scenarios:
        live = LiveStudy(store, study_id).start() if scenario.startswith("live") else None
        try:
            result = run_load(
                "127.0.0.1", server.port, token, routes, clients=args.clients,
                duration_s=args.duration, conditional=scenario.endswith("conditional"),
            )  # fmt: skip
        finally:
            result_live = live.stop() if live is not None else None
        result["load_avg_1m_after"] = os.getloadavg()[0]
        result["live_study"] = result_live
        overall = result["all"]
        result["meets_target"] = (
            overall.get("per_s", 0) >= TARGET_RPS
            and overall.get("p99_ms", 1e9) < TARGET_CONCURRENT_P99_MS
            and overall["errors"] == 0
        )
        out[scenario] = result
        log.info("%-20s %6.0f req/s, p50 %5.1f ms, p99 %6.1f ms, errors %d, statuses %s",
                 scenario, overall.get("per_s", 0), overall.get("p50_ms", 0),
                 overall.get("p99_ms", 0), overall["errors"], overall["statuses"])  # fmt: skip
    return out


# -- machine -------------------------------------------------------------------------------------
def machine(url: str) -> dict[str, Any]:
    """What this ran on."""
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
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


def prepare(store: Store, args: argparse.Namespace) -> tuple[int, str, int, float]:
    """Fill the database; (study id, token, best trial number, seconds it took)."""
    admin, token = store.users.create("bench", is_admin=True)
    # Budget beyond the filled trials (the spec allows 100,000): live workers claim more.
    budget = min(args.trials + 10_000, 100_000)
    study, _ = store.studies.create(admin, {**SPEC, "n_trials": budget})
    began = time.perf_counter()
    fill(store, study.id, args.trials, args.epochs, running=args.running)
    copies = max(0, args.total_trials - args.trials) // max(args.trials, 1)
    for k in range(copies):
        other, _ = store.studies.create(admin, {**SPEC, "name": f"background-{k}"})
        replicate(store, study.id, other.id, epochs=not args.background_runs_only)
        log.info("background study %d of %d filled", k + 1, copies)
    settle(store)
    with store.db.session() as session:
        best = session.scalar(
            text("SELECT trial_number FROM as_runs WHERE study_id = :s AND state = 'complete' "
                 "ORDER BY value DESC LIMIT 1"), {"s": study.id},
        )  # fmt: skip
        total = session.scalar(text("SELECT count(*) FROM as_runs"))
    log.info("%d trials in the study, %d in the database, in %.0f s", args.trials, total,
             time.perf_counter() - began)  # fmt: skip
    return study.id, token, int(best), time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--mode", choices=("sequential", "concurrent", "both"), default="both")
    parser.add_argument("--trials", type=int, default=10_000, help="trials in the measured study")
    parser.add_argument("--total-trials", type=int, default=0, help="trials in the database")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per complete trial")
    parser.add_argument("--running", type=int, default=16, help="trials running (GPUs)")
    parser.add_argument(
        "--background-runs-only", action="store_true",
        help="the other studies' copies get runs but no epochs (a faster 1M fill)",
    )  # fmt: skip
    parser.add_argument("--requests", type=int, default=300, help="sequential, per route")
    parser.add_argument("--cold-requests", type=int, default=50, help="sequential, cold")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per scenario")
    parser.add_argument("--scenarios", type=lambda s: s.split(","), default=list(SCENARIOS))
    parser.add_argument("--processes", type=int, default=Settings().resolved_processes)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument(
        "--server", choices=("subprocess", "thread"), default="subprocess",
        help="`actsearch serve` in its own processes (as deployed) or the app in a thread here",
    )  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    load_at_start = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="api-latency-"))
    url = create_database(args.backend, workdir)
    log.info("database %s", url)
    server: Server | None = None
    try:
        upgrade(make_engine(url))
        store = Store.open(url)
        study_id, token, best, fill_s = prepare(store, args)
        processes = args.processes if args.server == "subprocess" else 1
        server = Server(url, workdir, args.server, processes)
        report: dict[str, Any] = {
            "benchmark": "api_latency",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "backend": args.backend,
            "trials_in_study": args.trials,
            "trials_in_database": max(args.total_trials, args.trials),
            "epochs_per_complete_trial": args.epochs,
            "running_trials": args.running,
            "background_epochs": not args.background_runs_only,
            "server": f"actsearch serve, {processes} process(es), in a {args.server}",
            "fill_seconds": round(fill_s, 1),
            "load_avg_1m_at_start": load_at_start,
        }
        if args.mode in ("sequential", "both"):
            seq = sequential(server.base, token, store, study_id, best, args)
            worst = {kind: max(r[kind]["p99_ms"] for r in seq.values())
                     for kind in ("kept", "cold", "polled")}  # fmt: skip
            report |= {"target_p99_ms": TARGET_P99_MS, "worst_p99_ms": worst,
                       "meets_target": {k: v < TARGET_P99_MS for k, v in worst.items()},
                       "endpoints": seq}  # fmt: skip
        if args.mode in ("concurrent", "both"):
            report["concurrent"] = concurrent(server, token, store, study_id, args)
            report["concurrent_target"] = {"requests_per_s": TARGET_RPS,
                                           "p99_ms": TARGET_CONCURRENT_P99_MS, "errors": 0}  # fmt: skip
        report["machine"] = machine(url)
        store.dispose()
        out = write(report, args)
        print_report(report, out)
        return 0
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            drop_database(url)
            shutil.rmtree(workdir, ignore_errors=True)


def write(report: dict[str, Any], args: argparse.Namespace) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    size = f"{args.trials // 1000}k" + (
        f"-of-{args.total_trials // 1000}k" if args.total_trials else ""
    )
    stamp = f"{datetime.now(timezone.utc):%Y-%m-%dT%H%MZ}-{args.backend}-{args.mode}-{size}"
    out = RESULTS / f"api_latency-{socket.gethostname()}-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    return out


def print_report(report: dict[str, Any], out: Path) -> None:
    m = report["machine"]
    print(f"\nAPI on {m['hostname']} ({m['cpu_count']} CPUs, {m['cpu']}), {report['backend']}, "
          f"{report['server']}; {report['trials_in_study']:,} trials in the study, "
          f"{report['trials_in_database']:,} in the database; load {report['load_avg_1m_at_start']:.1f} "
          f"at start, {m['load_avg_1m']:.1f} at end")  # fmt: skip
    if "endpoints" in report:
        print(f"\none client, sequential ({'kept'} answers / cold: every answer computed)")
        print(f"{'route':<26}{'p50':>8}{'p99':>8}{'cold p50':>10}{'cold p99':>10}"
              f"{'polled p50':>12}{'polled p99':>12}{'bytes':>9}")  # fmt: skip
        for label, r in report["endpoints"].items():
            k, c, p = r["kept"], r["cold"], r["polled"]
            print(f"{label:<26}{k['p50_ms']:>8.1f}{k['p99_ms']:>8.1f}{c['p50_ms']:>10.1f}"
                  f"{c['p99_ms']:>10.1f}{p['p50_ms']:>12.1f}{p['p99_ms']:>12.1f}"
                  f"{k['bytes']:>9}")  # fmt: skip
        for kind, worst in report["worst_p99_ms"].items():
            verdict = "meets" if report["meets_target"][kind] else "MISSES"
            print(f"{kind}: worst p99 {worst:.1f} ms: {verdict} the {TARGET_P99_MS:.0f} ms target")
    for scenario, r in report.get("concurrent", {}).items():
        a = r["all"]
        print(f"\n{r['clients']} clients, {r['duration_s']:.0f} s, {scenario}: "
              f"{a.get('per_s', 0):.0f} req/s, p50 {a.get('p50_ms', 0):.1f} ms, "
              f"p99 {a.get('p99_ms', 0):.1f} ms, errors {a['errors']}, statuses {a['statuses']}; "
              f"{'meets' if r['meets_target'] else 'MISSES'} ≥ {TARGET_RPS:.0f} req/s, "
              f"p99 < {TARGET_CONCURRENT_P99_MS:.0f} ms")  # fmt: skip
        for label, s in r["routes"].items():
            print(f"    {label:<14}{s.get('per_s', 0):>7.0f}/s  p50 {s.get('p50_ms', 0):6.1f}  "
                  f"p99 {s.get('p99_ms', 0):6.1f}  {s['statuses']}")  # fmt: skip
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
