"""Study page first paint with 10,000 trials, in headless chromium against the real server.

A fresh SQLite database gets one running study with 10,000 trials (bulk-inserted runs, 10
epochs each, mixed states); the app runs under uvicorn; Debian's chromium (Playwright) opens the
study page in a fresh browser context (empty cache) several times. Measured per load:

- first-contentful-paint (Performance API, paint timing),
- when the trial table showed its first page (the page's User Timing mark),
- when the headline/leaderboard and when all charts were drawn (for information),
- every request the page made: exactly one page of trials may be fetched (never all of them).

Target (issue 7): first paint and first table page under 1 s on this machine.

    .venv/bin/python bench/dashboard_paint.py                # 10,000 trials, 5 loads
    .venv/bin/python bench/dashboard_paint.py --trials 2000 --loads 3 --no-save

Results: a table on stdout and JSON under bench/results/ naming the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import optuna  # noqa: E402
from sqlalchemy import insert, update  # noqa: E402

from bench.machine_info import cpu_model  # noqa: E402
from service.db import Epoch, Run, Study, make_engine  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.store import Store  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
BUDGET_MS = 1000.0
PAGE_SIZE = 50  # the table's default page
EPOCHS = 10
SPEC = {
    "version": 1,
    "name": "paint-bench",
    "description": "10,000 trials for the dashboard's first-paint benchmark",
    "dataset": {"name": "cifar10"},
    "model": {"name": "proxy"},
    "training": {"epochs": EPOCHS},
    "activations": {
        "relu": {},
        "smu": {"alpha": {"low": 0.0, "high": 0.5}, "mu": {"low": 0.5, "high": 5.0, "log": True}},
        "pau": {"init_target": {"choices": ["leaky_relu", "gelu"]}},
    },
    "baselines": ["relu"],
    "n_trials": 10_000,
}


# -- data ---------------------------------------------------------------------------------------
def _params(rng: random.Random, family: str) -> dict[str, Any]:
    if family == "smu":
        return {"activation": "smu", "smu.alpha": rng.uniform(0, 0.5),
                "smu.mu": math.exp(rng.uniform(math.log(0.5), math.log(5.0)))}  # fmt: skip
    if family == "pau":
        return {"activation": "pau", "pau.init_target": rng.choice(["leaky_relu", "gelu"])}
    return {"activation": family}


def _value(rng: random.Random, family: str, params: dict[str, Any]) -> float:
    base = {"relu": 0.905, "smu": 0.915, "pau": 0.91}[family]
    penalty = 0.03 * abs(params.get("smu.alpha", 0.2) - 0.2)
    return base - penalty + rng.gauss(0, 0.004)


def _state(i: int, n: int, rng: random.Random) -> str:
    if i >= n - 8:
        return "running"  # the study is live: the page polls while it is open
    roll = rng.random()
    return "pruned" if roll < 0.12 else "failed" if roll < 0.15 else "complete"


def fill(store: Store, n_trials: int, seed: int = 0) -> int:
    """A running study with n_trials bulk-inserted runs and their epochs; its id."""
    admin, _ = store.users.create("bench-owner", is_admin=True)
    spec = {**SPEC, "n_trials": n_trials}
    study, _ = store.studies.create(admin, spec)
    rng = random.Random(seed)
    start = datetime.now(timezone.utc) - timedelta(days=1)
    runs, epochs = [], []
    for i in range(n_trials):
        family = ("relu", "smu", "smu", "pau")[i % 4] if i >= 2 else "relu"
        params = _params(rng, family)
        final = _value(rng, family, params)
        state = _state(i, n_trials, rng)
        done = {"complete": EPOCHS, "pruned": rng.randint(1, 4), "failed": 1}.get(state, 3)
        curve = [final * (1 - 0.55 * math.exp(-0.45 * (e + 1))) for e in range(done)]
        t0 = start + timedelta(seconds=8 * i)
        runs.append({
            "id": i + 1, "study_id": study.id, "trial_number": i, "attempt": 1, "state": state,
            "counts_budget": True, "family": family, "params": params,
            "config": {"activation": {"family": family}}, "worker_id": f"w{i % 16}",
            "created_at": t0, "started_at": t0, "heartbeat_at": t0 + timedelta(seconds=30),
            "finished_at": None if state == "running" else t0 + timedelta(seconds=30),
            "epochs_done": done, "value": final if state == "complete" else None,
            "test_acc": final - 0.004 if state == "complete" else None,
            "duration_s": 30.0, "img_per_s": 40_000 + rng.random() * 2000,
            "failure_reason": "diverged" if state == "failed" else None,
        })  # fmt: skip
        epochs += [
            {"run_id": i + 1, "epoch": e, "train_loss": 2.0 / (e + 1), "val_acc": acc,
             "img_per_s": 40_000.0, "elapsed_s": 3.0 * (e + 1), "created_at": t0}
            for e, acc in enumerate(curve)
        ]  # fmt: skip
    with store.db.session() as session:
        session.execute(insert(Run), runs)
        session.execute(insert(Epoch), epochs)
        session.execute(
            update(Study).where(Study.id == study.id).values(status="running", started_at=start)
        )
    return study.id


# -- server -------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(home: Path, url: str) -> tuple[subprocess.Popen[bytes], str]:
    """uvicorn with the real app on `url`, on a free port; (process, base URL)."""
    port = _free_port()
    env = {**os.environ, "ACTSEARCH_HOME": str(home), "ACTSEARCH_DATABASE_URL": url}
    log = (home / "uvicorn.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "service.app:app_from_env",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((home / "uvicorn.log").read_text()[-3000:])
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("uvicorn did not start within 60 s")


# -- browser ------------------------------------------------------------------------------------
TIMINGS_JS = """() => {
  const mark = (name) => { const e = performance.getEntriesByName(name); return e.length ? e[0].startTime : null; };
  const nav = performance.getEntriesByType('navigation')[0];
  return {
    fcp: mark('first-contentful-paint'),
    table: mark('actsearch:trials-table'),
    summary: mark('actsearch:summary'),
    charts: mark('actsearch:charts'),
    html_ms: nav ? nav.responseEnd : null,
    resources: performance.getEntriesByType('resource').map(r => ({
      url: r.name, start: r.startTime, ms: r.duration, bytes: r.encodedBodySize })),
  };
}"""


def load_once(browser: Any, base: str, token: str, study_id: int) -> dict[str, Any]:
    """One cold load of the study page (fresh context, empty cache) with its timings."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.goto(f"{base}/login?token={token}")  # sign in first: the cookie, not the paint
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{base}/studies/{study_id}")
    try:
        page.wait_for_function(
            "() => performance.getEntriesByName('actsearch:charts').length > 0", timeout=60_000
        )
    except Exception as error:
        raise RuntimeError(
            f"the study page did not finish drawing; console errors: {errors}"
        ) from error
    timings = page.evaluate(TIMINGS_JS)
    context.close()
    timings["requests"] = requests
    timings["errors"] = errors
    return timings


def check_requests(requests: list[str], study_id: int) -> dict[str, Any]:
    """The trial list was asked for exactly one page of PAGE_SIZE; nothing left localhost."""
    listing = [u for u in requests if re.search(rf"/api/v1/studies/{study_id}/trials\?", u)]
    one_page = len(listing) == 1 and f"limit={PAGE_SIZE}" in listing[0]
    local = all(re.match(r"^http://(127\.0\.0\.1|localhost)(:\d+)?/", u) for u in requests
                if not u.startswith("data:"))  # fmt: skip
    return {"trial_list_requests": listing, "one_page_of_trials": one_page, "all_local": local}


def machine(browser_version: str) -> dict[str, Any]:
    """What ran the benchmark (the numbers mean nothing without it)."""
    cpu = cpu_model()
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "optuna": optuna.__version__,
        "chromium": browser_version,
        "database": "sqlite (embedded, WAL)",
        "gpu": None,
        # The machine is shared: a high load average explains slow outliers.
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(n_trials: int, loads: int) -> dict[str, Any]:
    """Fill, serve, load the page `loads` times; the result dict."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="as-paint-") as tmp:
        home = Path(tmp)
        url = f"sqlite:///{home / 'actsearch.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        store = Store.open(url)
        started = time.perf_counter()
        study_id = fill(store, n_trials)
        fill_s = time.perf_counter() - started
        _, token = store.users.create("bench-viewer")
        store.dispose()
        process, base = serve(home, url)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                load_once(browser, base, token, study_id)  # warm the server, not the browser
                samples = [load_once(browser, base, token, study_id) for _ in range(loads)]
                version = browser.version
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=15)
    checks = [check_requests(s["requests"], study_id) for s in samples]
    last = samples[-1]
    return {
        "trials": n_trials,
        "loads": loads,
        "fill_s": round(fill_s, 2),
        "budget_ms": BUDGET_MS,
        "fcp_ms": _stats([s["fcp"] for s in samples]),
        "table_ms": _stats([s["table"] for s in samples]),
        "summary_ms": _stats([s["summary"] for s in samples]),
        "charts_ms": _stats([s["charts"] for s in samples]),
        "html_ms": _stats([s["html_ms"] for s in samples]),
        "one_page_of_trials": all(c["one_page_of_trials"] for c in checks),
        "all_requests_local": all(c["all_local"] for c in checks),
        "trial_list_requests": checks[-1]["trial_list_requests"],
        "console_errors": sorted({e for s in samples for e in s["errors"]}),
        "resources_last_load": [
            {**r, "url": r["url"].split("//", 1)[-1].split("/", 1)[-1]} for r in last["resources"]
        ],
        "machine": machine(version),
    }


def _print(result: dict[str, Any]) -> None:
    m = result["machine"]
    print("\nrequests of the last load (ms from navigation start):")
    print(f"{'start':>7}{'took':>7}{'KiB':>8}  url")
    for r in result["resources_last_load"]:
        print(f"{r['start']:>7.0f}{r['ms']:>7.0f}{r['bytes'] / 1024:>8.1f}  /{r['url'][:90]}")
    print(
        f"\ndashboard first paint — {m['hostname']} ({m['cores']} cores, {m['cpu']}), "
        f"chromium {m['chromium']}, load average {m['load_avg_1m']}, {m['date']}"
    )
    print(f"study page, {result['trials']:,} trials, {result['loads']} cold loads "
          f"(fresh browser context each)\n")  # fmt: skip
    print(f"{'measure':<36}{'median':>9}{'min':>8}{'max':>8}{'budget':>8}  ok")
    rows = [
        ("HTML received (ms)", result["html_ms"], False),
        ("first-contentful-paint (ms)", result["fcp_ms"], True),
        ("trial table first page (ms)", result["table_ms"], True),
        ("headline + leaderboard (ms)", result["summary_ms"], False),
        ("all charts drawn (ms)", result["charts_ms"], False),
    ]
    for label, s, budgeted in rows:
        ok = ("yes" if s["max"] < result["budget_ms"] else "NO") if budgeted else ""
        budget = f"{result['budget_ms']:.0f}" if budgeted else ""
        print(f"{label:<36}{s['median']:>9.0f}{s['min']:>8.0f}{s['max']:>8.0f}{budget:>8}  {ok}")
    print(
        f"{'one page of trials fetched':<36}{'':>33}  {'yes' if result['one_page_of_trials'] else 'NO'}"
    )
    print(
        f"{'every request to localhost':<36}{'':>33}  {'yes' if result['all_requests_local'] else 'NO'}"
    )
    if result["console_errors"]:
        print("console errors:", *result["console_errors"], sep="\n  ")


def passed(result: dict[str, Any]) -> bool:
    """Whether every load met the budget and the request checks."""
    return (
        result["fcp_ms"]["max"] < result["budget_ms"]
        and result["table_ms"]["max"] < result["budget_ms"]
        and result["one_page_of_trials"]
        and result["all_requests_local"]
        and not result["console_errors"]
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print a table, write JSON; exit 1 when the target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=5, help="cold page loads measured")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results JSON")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    result = run(args.trials, args.loads)
    result["passed"] = passed(result)
    _print(result)
    if not args.no_save:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS / f"dashboard_paint-{socket.gethostname()}-{stamp}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwritten: {path.relative_to(ROOT)}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
