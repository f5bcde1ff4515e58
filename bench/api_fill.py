"""Data for the API and dashboard benchmarks: big studies, a big database, and a study that lives.

- fill(): one study of N attempts (runs, their epochs and their trainings ledger rows, as the
  workers write them; bulk-inserted as multi-row statements) with a realistic mix of families,
  states, parameters, values and records; at most `running` trials run at once (as many as there
  are GPUs).
- replicate(): copies of that study's rows into other studies, server-side (INSERT … SELECT), so
  that the database holds 1,000,000 trials while one study has 100,000.
- LiveStudy: simulated workers that heartbeat their running trials with live progress and finish
  one trial every few seconds (claiming the next), as a study under way does.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from sqlalchemy import CursorResult, insert, select, text

from service.db import Epoch, Run, RunState, Training, TrainingState
from service.store import Store

SPEC: dict[str, Any] = {
    "version": 1,
    "name": "latency-bench",
    "description": "trials for the API latency benchmark",
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
# complete 80 %, pruned 10 %, failed 5 %, running 2 % (capped), cancelled 2 %, queued retries 1 %
STATES = (
    ["complete"] * 80
    + ["pruned"] * 10
    + ["failed"] * 5
    + ["running"] * 2
    + ["cancelled"] * 2
    + ["queued"]
)
FAILURES = ("diverged", "oom", "timeout", "worker_lost", "error")
RUN_CHUNK = 1000  # rows per INSERT statement (one statement: one bump of the study's version)
EPOCH_CHUNK = 5000


def params_of(rng: random.Random, family: str) -> dict[str, Any]:
    """A trial's Optuna parameters."""
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


def record_of(rng: random.Random, family: str, value: float, epochs: int) -> dict[str, Any]:
    """A complete trial's record: learned parameters and curves, manifest."""
    grid = [round(-4 + 8 * i / 32, 3) for i in range(33)]
    sites = {
        f"layer{i}.act": {"x": grid, "f": [round(max(x, 0) + rng.gauss(0, 0.01), 4) for x in grid],
                          "df": [1.0 if x > 0 else 0.0 for x in grid]}
        for i in range(4)
    }  # fmt: skip
    learned = {f"layer{i}.act": {"alpha": [rng.random()]} for i in range(4)}
    return {
        "val_acc": value,
        "best_val_acc": value,
        "epochs_done": epochs,
        "img_per_s": rng.uniform(20_000, 40_000),
        "peak_memory_bytes": rng.randint(2, 8) * 1_000_000_000,
        "activation_params": {"final": learned} if family in ("smu", "pau", "swish", "opau") else {},
        "activation_curves": {"final": sites},
        "manifest": {"git_sha": "0" * 40, "packages": {"torch": "2.14.1"}, "gpu": "NVIDIA H100",
                     "seed": 0},
    }  # fmt: skip


def _state(rng: random.Random, running: int, cap: int) -> str:
    state = rng.choice(STATES)
    if state == "running" and running >= cap:
        return "complete"
    return state


def _run_row(
    rng: random.Random, i: int, run_id: int, study_id: int, state: str, epochs: int, start: datetime
) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    family = FAMILIES[i % len(FAMILIES)] if i >= 3 else "relu"
    done = epochs if state == "complete" else rng.randint(1, epochs) if state != "queued" else 0
    value = (
        round(rng.gauss(0.90 if family != "relu" else 0.89, 0.02), 5)
        if state == "complete"
        else None
    )
    began = start + timedelta(seconds=30 * i)
    finished = began + timedelta(seconds=25) if state not in ("running", "queued") else None
    return {
        "id": run_id, "study_id": study_id,
        "trial_number": i if state != "queued" else None, "optuna_trial_id": None,
        "attempt": 2 if state == "queued" else 1, "retry_of": None, "state": state,
        "counts_budget": True,
        "failure_reason": rng.choice(FAILURES) if state == "failed" else None,
        "failure_message": "loss became NaN at step 301" if state == "failed" else None,
        "failure_epoch": done - 1 if state == "failed" else None,
        "family": family, "params": params_of(rng, family),
        "config": {"activation": {"family": family}, "training": {"epochs": epochs}, "seed": i},
        "worker_id": f"gpu-{i % 8}", "created_at": began,
        "started_at": began if state != "queued" else None,
        # Running trials heartbeat now (the benchmark's LiveStudy keeps them alive).
        "heartbeat_at": now if state == "running" else began + timedelta(seconds=20) if state != "queued" else None,
        "finished_at": finished, "epochs_done": done, "value": value,
        "test_acc": value - 0.004 if value is not None else None, "value_std": None,
        "duration_s": 25.0 + rng.random() * 10 if finished else None,
        "img_per_s": rng.uniform(20_000, 40_000) if done else None,
        "peak_mem_bytes": rng.randint(2, 8) * 1_000_000_000 if done else None,
        "record": record_of(rng, family, value, done) if value is not None else None,
        "log_tail": None,
    }  # fmt: skip


def _training_row(run: dict[str, Any]) -> dict[str, Any]:
    """The ledger row a worker leaves for a trial's one seed: complete with its accuracies,
    running (holding its lock) while the trial runs, failed when it ended otherwise."""
    key = hashlib.sha256(repr(sorted(run["config"].items())).encode()).hexdigest()
    state = {"complete": TrainingState.COMPLETE, "running": TrainingState.RUNNING}.get(
        run["state"], TrainingState.FAILED
    )
    return {
        "study_id": run["study_id"], "run_id": run["id"], "key": key, "config_key": key,
        "lock_key": f"{run['study_id']}:{key}" if state == TrainingState.RUNNING else None,
        "family": run["family"], "seed": run["config"]["seed"], "state": state,
        "val_acc": run["value"], "test_acc": run["test_acc"], "reused_from": None,
        "data_checksum": "0" * 64, "code_version": "bench", "created_at": run["created_at"],
        "finished_at": run["finished_at"],
    }  # fmt: skip


def _next_id(store: Store) -> int:
    with store.db.session() as session:
        return int(session.scalar(text("SELECT COALESCE(MAX(id), 0) FROM as_runs")) or 0) + 1


def fill(
    store: Store, study_id: int, n_trials: int, epochs: int, *, seed: int = 0, running: int = 16
) -> None:
    """Bulk-insert n_trials runs (attempts) with their epochs into one study."""
    rng = random.Random(seed)
    start = datetime.now(timezone.utc) - timedelta(days=3)
    first_id = _next_id(store)
    live = 0
    for chunk in range(0, n_trials, RUN_CHUNK):
        runs, epoch_rows = [], []
        for i in range(chunk, min(chunk + RUN_CHUNK, n_trials)):
            state = _state(rng, live, running)
            live += state == "running"
            row = _run_row(rng, i, first_id + i, study_id, state, epochs, start)
            runs.append(row)
            epoch_rows += [
                {"run_id": row["id"], "epoch": e, "train_loss": 2.0 / (e + 1),
                 "val_acc": 0.5 + 0.04 * e, "img_per_s": 30_000.0, "elapsed_s": 2.5 * (e + 1),
                 "created_at": row["created_at"]}
                for e in range(row["epochs_done"])
            ]  # fmt: skip
        trainings = [_training_row(row) for row in runs if row["state"] != "queued"]
        with store.db.session() as session:
            session.execute(insert(Run).values(runs))
            session.execute(insert(Training).values(trainings))
            for at in range(0, len(epoch_rows), EPOCH_CHUNK):
                session.execute(insert(Epoch).values(epoch_rows[at : at + EPOCH_CHUNK]))
    _sync_sequence(store)


RUN_COLUMNS = [c.name for c in Run.__table__.columns if c.name not in ("id", "study_id")]
EPOCH_COLUMNS = [c.name for c in Epoch.__table__.columns if c.name != "run_id"]
TRAINING_COLUMNS = [
    c.name for c in Training.__table__.columns if c.name not in ("id", "study_id", "run_id")
]


def replicate(store: Store, source_id: int, target_id: int, *, epochs: bool = True) -> int:
    """Copy every run (with `epochs`, and its epochs and ended trainings) of one study into
    another, in the database; rows copied."""
    offset = _next_id(store) - 1
    run_columns, epoch_columns = ", ".join(RUN_COLUMNS), ", ".join(EPOCH_COLUMNS)
    training_columns = ", ".join(TRAINING_COLUMNS)
    with store.db.session() as session:
        result = session.execute(
            text(
                f"INSERT INTO as_runs (id, study_id, {run_columns}) "
                f"SELECT id + :offset, :target, {run_columns} FROM as_runs WHERE study_id = :source"
            ),
            {"offset": offset, "target": target_id, "source": source_id},
        )
        copied = cast("CursorResult[Any]", result).rowcount
        if epochs:
            session.execute(
                text(
                    f"INSERT INTO as_epochs (run_id, {epoch_columns}) SELECT e.run_id + :offset, "
                    + ", ".join(f"e.{c}" for c in EPOCH_COLUMNS)
                    + " FROM as_epochs e JOIN as_runs r ON r.id = e.run_id"
                    " WHERE r.study_id = :source"
                ),
                {"offset": offset, "source": source_id},
            )
            # Its ended trainings too (a running one's lock is its study's alone).
            session.execute(
                text(
                    f"INSERT INTO as_trainings (study_id, run_id, {training_columns}) "
                    f"SELECT :target, run_id + :offset, {training_columns} FROM as_trainings "
                    "WHERE study_id = :source AND lock_key IS NULL"
                ),
                {"offset": offset, "target": target_id, "source": source_id},
            )
    _sync_sequence(store)
    return int(copied)


def _sync_sequence(store: Store) -> None:
    if store.db.sqlite:
        return
    with store.db.session() as session:
        session.execute(text("SELECT setval('as_runs_id_seq', (SELECT MAX(id) FROM as_runs))"))


def settle(store: Store) -> None:
    """The state autovacuum keeps tables in: statistics fresh, visibility map set."""
    with store.db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE" if store.db.sqlite else "VACUUM ANALYZE"))


# -- a study under way ---------------------------------------------------------------------------
class LiveStudy:
    """Simulated workers on one study: each heartbeats its running trial with live progress every
    `heartbeat_s`; every `finish_every_s` one of them finishes its trial and claims the next.

    The study's budget must leave room for the claims (n_trials above the filled count).
    """

    def __init__(
        self, store: Store, study_id: int, *, heartbeat_s: float = 5.0, finish_every_s: float = 2.0
    ) -> None:
        self.store = store
        self.study_id = study_id
        self.heartbeat_s = heartbeat_s
        self.finish_every_s = finish_every_s
        self.rng = random.Random(1)
        self.stop_event = threading.Event()
        self.finished = 0
        self.heartbeats = 0
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True, name="live-study")
        with store.db.session() as session:
            self.running = list(
                session.scalars(
                    select(Run.id).where(Run.study_id == study_id, Run.state == RunState.RUNNING)
                )
            )
        self.workers = [f"bench-w{i}" for i in range(len(self.running))]
        for worker in self.workers:
            store.workers.register(worker, hostname="bench", pid=0, device="cuda:0 (bench)")

    def start(self) -> LiveStudy:
        """Start the simulated workers."""
        self.thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        """Stop them; what they did."""
        self.stop_event.set()
        self.thread.join(timeout=30)
        return {"heartbeats": self.heartbeats, "trials_finished": self.finished,
                "errors": self.errors[:5]}  # fmt: skip

    def _run(self) -> None:
        next_finish = time.monotonic() + self.finish_every_s
        beat = 0
        while not self.stop_event.is_set():
            pause = self.heartbeat_s / max(len(self.workers), 1)
            if self.stop_event.wait(pause):
                return
            try:
                if self.workers:
                    self._heartbeat(beat % len(self.workers))
                    beat += 1
                if time.monotonic() >= next_finish and self.workers:
                    self._finish_one(self.rng.randrange(len(self.workers)))
                    next_finish += self.finish_every_s
            except Exception as error:  # recorded: a benchmark reports, it does not stop
                self.errors.append(repr(error))

    def _heartbeat(self, slot: int) -> None:
        step = self.rng.randrange(782)
        progress = {"phase": "training", "epoch": 3, "epochs": 10, "step": step, "steps": 782,
                    "img_per_s": 30_000.0, "eta_s": 120.0}  # fmt: skip
        self.store.workers.heartbeat(self.workers[slot], self.running[slot], progress)
        self.heartbeats += 1

    def _finish_one(self, slot: int) -> None:
        value = round(self.rng.gauss(0.9, 0.02), 5)
        self.store.runs.finish(self.running[slot], state="complete", value=value, test_acc=value)
        self.finished += 1
        claim = self.store.runs.claim_next(self.workers[slot], [self.study_id])
        if claim is None:
            return
        number = 10_000_000 + claim.run_id
        family = FAMILIES[number % len(FAMILIES)]
        self.store.runs.attach_trial(
            claim.run_id, trial_id=number, number=number, params=params_of(self.rng, family),
            family=family, config={"activation": {"family": family}},
        )  # fmt: skip
        self.running[slot] = claim.run_id
