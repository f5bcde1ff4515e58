"""`actsearch worker` at startup: what waiting cannot fix stops it at once, with what to do."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from worker_helpers import (
    PG_SERVER,
    REPO_ROOT,
    log_text,
    open_store,
    wait_for,
    worker_env,
    worker_processes,
)

from workers.supervisor import EXIT_FATAL


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        (PG_SERVER.replace("postgres@", "no_such_role@") + "/test", 'role "no_such_role"'),
        (PG_SERVER + "/no_such_database", 'database "no_such_database" does not exist'),
    ],
)
def test_a_refused_login_stops_the_worker_with_what_to_check(
    tmp_path: Path, url: str, refusal: str
) -> None:
    log = tmp_path / "worker.log"
    with worker_processes(["--gpus", "cpu"], worker_env(url, tmp_path), log) as process:
        code = process.wait(timeout=120)
    text = log_text(log)
    assert code == EXIT_FATAL, text
    assert refusal in text and "check the user, password and database name" in text
    assert "retrying" not in text


def test_a_gpu_that_is_not_there_is_refused_before_any_slot_starts(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    env = worker_env(f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path)
    with worker_processes(["--gpus", "97"], env, log) as process:
        code = process.wait(timeout=120)
    text = log_text(log)
    assert code == 2, text
    assert "--gpus 97: no GPU 97 on this machine" in text and "started as pid" not in text


def test_sigterm_while_waiting_for_the_database_exits_cleanly(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    unreachable = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # refused: an outage
    with worker_processes(["--gpus", "cpu"], worker_env(unreachable, tmp_path), log) as process:
        wait_for(lambda: "database unreachable" in log_text(log), 120, "a retry logged")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    text = log_text(log)
    assert code == 0, text
    assert "stopped while waiting for the database" in text and "Traceback" not in text


def test_a_cuda_slot_that_sees_no_gpu_stops_the_worker(tmp_path: Path) -> None:
    # What the supervisor starts for GPU 97; on this machine (GPU or not) CUDA sees no device.
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    open_store(url).dispose()  # a migrated database: the GPU is the only thing wrong
    env = worker_env(url, tmp_path)
    env["CUDA_VISIBLE_DEVICES"] = "97"
    done = subprocess.run(
        [sys.executable, "-m", "workers", "worker", "--slot", "0", "--device", "cuda",
         "--gpu-label", "97"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == EXIT_FATAL, done.stderr  # the supervisor's "stop every slot"
    assert "GPU 97 is not usable here" in done.stderr and "--gpus cpu" in done.stderr
    assert "Traceback" not in done.stderr
