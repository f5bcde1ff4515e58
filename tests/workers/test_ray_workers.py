"""Worker slots on Ray (`actsearch worker --ray`): the queue's depth, the scaling policy, real
slot actors on a local Ray head started here (logical CPUs stand in for GPUs: the slots train
on the CPU), a killed actor, and the CLI end to end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from sqlalchemy import create_engine, select, text
from worker_helpers import (
    PG_SERVER,
    REPO_ROOT,
    create_pg_database,
    drop_pg_database,
    log_text,
    make_image_folder,
    make_user,
    open_store,
    runs_of,
    stop_process,
    tiny_spec,
    wait_for,
    worker_env,
    workers_of,
)

from service.db import Run
from service.settings import Settings
from service.store import Store, UserInfo
from service.store.queries.queue import QueueDepth, queue_depth
from workers.ray_driver import DriverOptions, RayDriver
from workers.ray_scaling import ScalePolicy, SlotShape

HEARTBEAT_S = 0.5
GRACE_S = 5.0


# -- the queue as the store counts it (no Ray) ----------------------------------------------
@pytest.fixture
def store(url: str) -> Iterator[Store]:
    """The migrated store (SQLite and PostgreSQL)."""
    store = open_store(url)
    yield store
    store.dispose()


@pytest.fixture
def user(store: Store) -> UserInfo:
    """A study owner."""
    return make_user(store)


def _study(store: Store, user: UserInfo, n_trials: int) -> int:
    study, _ = store.studies.create(user, tiny_spec(Path("/nowhere"), n_trials=n_trials))
    return study.id


def test_queue_depth_counts_budget_left_retries_and_running_runs(
    store: Store, user: UserInfo
) -> None:
    first = _study(store, user, 5)
    assert queue_depth(store.db) == QueueDepth(runnable=5, running=0)
    a = store.runs.claim_next("w1")
    b = store.runs.claim_next("w2")
    assert a is not None and b is not None
    assert queue_depth(store.db) == QueueDepth(runnable=3, running=2)

    store.runs.hand_back(a.run_id)  # lost: its unit goes to a queued retry, claimable at once
    assert queue_depth(store.db) == QueueDepth(runnable=4, running=1)
    store.runs.finish(b.run_id, state="complete", value=0.5)
    assert queue_depth(store.db) == QueueDepth(runnable=4, running=0)

    paused = _study(store, user, 3)
    store.studies.transition(paused, "pause")
    other = _study(store, user, 2)
    assert queue_depth(store.db) == QueueDepth(runnable=6, running=0)  # not the paused one
    assert queue_depth(store.db, [other]) == QueueDepth(runnable=2, running=0)
    assert queue_depth(store.db, [paused]) == QueueDepth(runnable=0, running=0)

    store.studies.transition(first, "cancel")
    store.studies.transition(other, "cancel")
    assert queue_depth(store.db) == QueueDepth(runnable=0, running=0)


def test_scale_policy_follows_the_queue_up_at_once_and_down_after_a_while(
    store: Store, user: UserInfo
) -> None:
    policy = ScalePolicy(max_slots=3, release_after_s=30)
    assert policy.target(queue_depth(store.db), now=0) == 0  # nothing queued: no slot
    study = _study(store, user, 5)
    assert policy.target(queue_depth(store.db), now=1) == 3  # 5 runnable, capped at 3
    claims = [store.runs.claim_next(f"w{i}") for i in range(3)]
    assert policy.target(queue_depth(store.db), now=2) == 3  # 2 runnable + 3 running
    for claim in claims:
        assert claim is not None
        store.runs.finish(claim.run_id, state="complete", value=0.5)
    last = [store.runs.claim_next(f"w{i}") for i in range(2)]
    # One slot is idle now, but the queue had work for three within the window: kept.
    assert policy.target(queue_depth(store.db), now=10) == 3
    for claim in last:
        assert claim is not None
        store.runs.finish(claim.run_id, state="complete", value=0.5)
    assert store.studies.get(study).status == "completed"
    assert queue_depth(store.db).demand == 0
    assert policy.target(queue_depth(store.db), now=20) == 3  # empty, but not for long
    assert policy.target(queue_depth(store.db), now=41) == 0  # empty for 30 s: released

    _study(store, user, 1)
    assert policy.target(queue_depth(store.db), now=42) == 1  # a new study: up at once
    kept = ScalePolicy(max_slots=3, min_slots=1, release_after_s=0)
    assert kept.target(QueueDepth(0, 0), now=0) == 1


def test_slot_shapes_ask_ray_and_its_autoscaler_for_the_right_resources() -> None:
    gpu = SlotShape.gpu(per_gpu=2, cpus=2)
    assert gpu.actor_options() == {"num_cpus": 2, "num_gpus": 0.5}
    # Whole GPUs for the autoscaler, with the CPUs of the slots that share each.
    assert gpu.bundles(3) == [{"GPU": 1.0, "CPU": 4}, {"GPU": 1.0, "CPU": 4}]
    assert gpu.bundles(0) == []  # withdraws the request
    assert gpu.fits({"GPU": 3, "CPU": 16}) == 6
    assert gpu.fits({"GPU": 3, "CPU": 4}) == 2  # CPUs run short first
    cpu = SlotShape.cpu(cpus=1.5)
    assert cpu.actor_options() == {"num_cpus": 1.5}
    assert cpu.bundles(2) == [{"CPU": 1.5}, {"CPU": 1.5}]
    assert cpu.fits({"CPU": 4, "GPU": 8}) == 2
    with pytest.raises(ValueError, match="--per-gpu"):
        SlotShape.gpu(per_gpu=0, cpus=1)


# -- the CLI without Ray --------------------------------------------------------------------
def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_worker_help_and_the_ray_modules_do_not_import_ray() -> None:
    done = _python(
        "import sys\n"
        "import workers.ray_driver, workers.ray_slot, workers.ray_scaling\n"
        "from workers.worker_cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as end:\n"
        "    assert end.code == 0\n"
        "print('ray' in sys.modules)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "--ray [ADDRESS|auto]" in done.stdout and "--max-slots" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_ray_flag_without_ray_installed_says_how_to_install_it(tmp_path: Path) -> None:
    done = _python(
        "import sys\n"
        "sys.modules['ray'] = None  # as if not installed: `import ray` raises ImportError\n"
        "from workers.worker_cli import main\n"
        f"sys.exit(main(['--ray', '--gpus', 'cpu', '--database-url', "
        f"'sqlite:///{tmp_path}/db.sqlite']))\n"
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'actsearch[ray]'" in done.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gpus", "0,1"], "Ray assigns the GPUs"),
        (["--max-trials", "3"], "--max-trials does not apply with --ray"),
        (["--max-slots", "0"], "--max-slots must be at least 1"),
        (["--max-slots", "2", "--min-slots", "3"], "--min-slots must be between"),
        (["--ray-cpus-per-slot", "0"], "--ray-cpus-per-slot must be above 0"),
    ],
)
def test_ray_flags_that_cannot_work_are_refused_before_connecting(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from workers.worker_cli import main

    with pytest.raises(SystemExit) as end:
        main(["--ray", "auto", *flags])
    assert end.value.code == 2
    assert message in capsys.readouterr().err


# -- real slot actors on a local Ray head ---------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """One local Ray cluster for the module (start-up takes seconds): a head without CPUs (it
    holds the drivers) and three nodes of one logical CPU each, one slot per node."""
    import ray  # installed with the extra: `make` installs .[dev,ray]
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(3):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=True)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def ray_head(ray_cluster: Any) -> str:
    """The module's Ray cluster address (what `--ray ADDRESS` takes)."""
    return str(ray_cluster.address)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images enough that a full-width lenet epoch takes a few tenths of a second."""
    return make_image_folder(tmp_path_factory.mktemp("folder"), train_per_class=60)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throw-away PostgreSQL database."""
    url = create_pg_database()
    yield url
    drop_pg_database(url)


def _slow_spec(folder: Path, n_trials: int, epochs: int) -> dict[str, Any]:
    lr = {"low": 0.005, "high": 0.02, "log": True}  # these trials must never diverge
    return tiny_spec(folder, n_trials=n_trials, epochs=epochs, width=1.0, lr=lr)


class _DriverThread:
    """A RayDriver run in a thread of the test, on the module's Ray head."""

    def __init__(self, settings: Settings, options: DriverOptions) -> None:
        self.driver = RayDriver(settings, options)
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.driver.run()

    def stop(self, timeout: float = 120) -> int | None:
        self.driver.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the driver did not drain its slots"
        return self.code


def _status(handle: Any, timeout: float = 10) -> dict[str, Any] | None:
    import ray

    try:
        return ray.get(handle.status.remote(), timeout=timeout)
    except ray.exceptions.RayError:
        return None  # restarting


def _connections(app: str) -> int:
    admin = create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = :app"
            return int(connection.execute(text(query), {"app": app}).scalar_one())
    finally:
        admin.dispose()


def _lose_a_slot_mid_trial(
    pg_url: str, home: Path, folder: Path, lose: Callable[[Any, dict[str, Any]], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two slots train a study; `lose(handle, status)` one in mid-trial. Asserts that its run is
    failed as worker_lost, retried with the same parameters and counted once, that the slot
    comes back and that the study ends with exactly n_trials; returns the slot's status before
    and after."""
    store = open_store(pg_url)
    # Enough trials that the queue still wants both slots while the lost one restarts, which
    # took ~12 s in CI (with fewer, the slot left finishes the study first, the driver scales
    # down and stops the restarted slot before it is seen running: 10 trials did, once the
    # worker path got faster).
    n_trials, epochs = 40, 10
    study, _ = store.studies.create(make_user(store), _slow_spec(folder, n_trials, epochs))
    app = "actsearch_ray_test"  # tells the slots' connections from this test's own
    settings = Settings(
        database_url=f"{pg_url}?application_name={app}",
        home=home,
        heartbeat_s=HEARTBEAT_S,
        grace_s=GRACE_S,
    )
    options = DriverOptions(gpus="cpu", max_slots=2, release_after_s=0, poll_s=1)
    driver = _DriverThread(settings, options)
    try:

        def mid_trial() -> tuple[Run, Any, dict[str, Any]] | None:
            for run in runs_of(store, study.id):
                if run.state == "running" and 1 <= run.epochs_done <= epochs - 4:
                    for handle in driver.driver.slots().values():
                        status = _status(handle)
                        if status and status["worker_id"] == run.worker_id:
                            return run, handle, status
            return None

        found = wait_for(mid_trial, 240, "a slot in mid-trial")
        assert found is not None
        victim, handle, before = found
        assert before["run_id"] == victim.id
        # Two slots (4 each: two pools of two) and the driver (1) on the slots' URL.
        assert _connections(app) <= 2 * 4 + 1
        lose(handle, before)

        def lost() -> Run | None:
            run = next(r for r in runs_of(store, study.id) if r.id == victim.id)
            return run if run.state != "running" else None

        lost_run = wait_for(lost, GRACE_S + 60, "the lost slot's run to be reaped")
        assert lost_run is not None

        def restarted() -> dict[str, Any] | None:
            status = _status(handle, 5)
            return status if status and status["pid"] != before["pid"] else None

        back = wait_for(restarted, 120, "the lost slot actor to come back")
        assert back is not None
        wait_for(lambda: store.studies.get(study.id).status == "completed", 300, "completion")
        assert len(driver.driver.slots()) <= 2
        assert driver.stop() == 0
    finally:
        if driver.thread.is_alive():
            driver.stop()

    assert lost_run.state == "failed" and lost_run.failure_reason == "worker_lost"
    assert back["state"] == "running" and back["worker_id"] != before["worker_id"]
    runs = runs_of(store, study.id)
    (retry,) = [r for r in runs if r.retry_of == victim.id]
    assert retry.state == "complete" and retry.attempt == 2
    assert retry.params == lost_run.params and retry.config == lost_run.config
    counted = [r for r in runs if r.counts_budget]
    assert len(counted) == n_trials and all(r.state == "complete" for r in counted)
    optuna_study = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna)
    assert [t.state for t in optuna_study.trials].count(TrialState.COMPLETE) == n_trials
    # Drained: every slot marked its worker stopped, or was the one lost.
    assert {w.status for w in workers_of(store)} <= {"stopped", "lost"}
    assert driver.driver.requested[0] == 2 and driver.driver.requested[-1] == 0
    store.dispose()
    return before, back


@pytest.mark.slow
@pytest.mark.postgres
def test_killed_slot_actor_run_is_lost_retried_identically_and_the_actor_is_back(
    ray_cluster: Any, tmp_path: Path, folder: Path, pg_url: str
) -> None:
    import ray

    def kill(handle: Any, _status: dict[str, Any]) -> None:
        ray.kill(handle, no_restart=False)  # the actor's process dies; Ray starts it anew

    _lose_a_slot_mid_trial(pg_url, tmp_path, folder, kill)


@pytest.mark.slow
@pytest.mark.postgres
def test_slot_lost_with_its_node_is_retried_identically_and_placed_on_another_node(
    ray_cluster: Any, tmp_path: Path, folder: Path, pg_url: str
) -> None:
    def lose_node(_handle: Any, status: dict[str, Any]) -> None:
        (node,) = [n for n in ray_cluster.worker_nodes if n.node_id == status["node_id"]]
        # A node that loses power: its processes stop at once. remove_node alone stops the
        # slot's process only after its raylet, and a fast trial sometimes finished meanwhile.
        os.kill(status["pid"], signal.SIGKILL)
        ray_cluster.remove_node(node, allow_graceful=False)

    try:
        before, back = _lose_a_slot_mid_trial(pg_url, tmp_path, folder, lose_node)
    finally:
        while len(ray_cluster.worker_nodes) < 3:
            ray_cluster.add_node(num_cpus=1)  # three nodes again for the tests after this one
    assert back["node_id"] != before["node_id"]  # Ray placed it on the spare node


@pytest.mark.slow
def test_cli_three_slot_actors_finish_a_study_exactly_and_are_released(
    ray_head: str, tmp_path: Path, folder: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    store = open_store(url)
    n_trials = 7
    spec = tiny_spec(folder, n_trials=n_trials, epochs=2)
    study, _ = store.studies.create(make_user(store), spec)
    log = tmp_path / "driver.log"
    env = worker_env(url, tmp_path, heartbeat_s=HEARTBEAT_S)
    args = ["--ray", ray_head, "--gpus", "cpu", "--max-slots", "3", "--release-after", "2"]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers", "worker", *args],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: store.studies.get(study.id).status == "completed", 300, "completion")
        # The queue empties: after --release-after the driver gives every slot back.
        wait_for(
            lambda: (
                "0 slot(s)" in log_text(log)
                and all(w.status == "stopped" for w in workers_of(store))
            ),
            60,
            "the idle slots to be released",
        )
    finally:
        code = stop_process(process, timeout=120)
    text_ = log_text(log)
    assert code == 0, text_[-5000:]
    assert "queue: 7 runnable, 0 running trial(s): 3 slot(s) (at most 3)" in text_, text_[-5000:]
    assert len(re.findall(r"slot \d released", text_)) == 3
    workers = workers_of(store)
    assert len(workers) == 3 and {w.slot for w in workers} == {0, 1, 2}
    runs = runs_of(store, study.id)
    assert len(runs) == n_trials and all(r.state == "complete" for r in runs)
    optuna_study = optuna.load_study(study_name=study.optuna_name, storage=store.db.optuna)
    assert [t.state for t in optuna_study.trials].count(TrialState.COMPLETE) == n_trials
    with store.db.session() as session:
        assert session.scalar(select(Run.id).where(Run.state == "running")) is None
    store.dispose()


@pytest.mark.slow
def test_cli_sigterm_drains_a_training_slot_its_run_handed_back_for_a_retry(
    ray_head: str, tmp_path: Path, folder: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'actsearch.db'}"
    store = open_store(url)
    epochs = 30
    study, _ = store.studies.create(make_user(store), _slow_spec(folder, 1, epochs))
    log = tmp_path / "driver.log"
    env = worker_env(url, tmp_path, heartbeat_s=HEARTBEAT_S)
    args = ["--ray", ray_head, "--gpus", "cpu", "--max-slots", "1"]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers", "worker", *args],
            env=env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        training = wait_for(
            lambda: next((r for r in runs_of(store, study.id) if r.epochs_done >= 1), None),
            240,
            "the slot to train",
        )
        assert training is not None
        process.send_signal(signal.SIGTERM)  # what systemd, Slurm or Kubernetes sends
        code = process.wait(timeout=120)
    finally:
        stop_process(process)
    text_ = log_text(log)
    assert code == 0, text_[-5000:]
    assert "every slot stopped" in text_, text_[-5000:]
    (handed, retry) = runs_of(store, study.id)
    assert handed.id == training.id and handed.failure_reason == "worker_lost"
    assert handed.epochs_done < epochs  # stopped after its epoch, not trained to the end
    assert retry.retry_of == handed.id and retry.state == "queued"
    assert retry.params == handed.params
    assert [w.status for w in workers_of(store)] == ["stopped"]
    store.dispose()
