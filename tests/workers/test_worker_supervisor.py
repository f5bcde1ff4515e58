"""The supervisor: slot planning, GPU pinning, restarts, signal forwarding (real OS processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from worker_helpers import REPO_ROOT, wait_for

from workers.supervisor import EXIT_FATAL, Slot, cpu_threads, plan_slots

# A stand-in for a worker slot: records how it was started, then behaves as CHILD_MODE says.
CHILD = textwrap.dedent(
    """
    import json, os, pathlib, signal, sys, time
    out = pathlib.Path(sys.argv[1])
    args = sys.argv[2:]
    slot = args[args.index("--slot") + 1]
    record = {"slot": slot, "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "args": args,
              "omp": os.environ.get("OMP_NUM_THREADS")}
    (out / f"start-{slot}-{os.getpid()}.json").write_text(json.dumps(record))
    mode = os.environ["CHILD_MODE"]
    if mode == "crash_once":
        marker = out / f"crashed-{slot}"
        if not marker.exists():
            marker.touch()
            sys.exit(1)
        sys.exit(0)
    if mode == "fatal" and slot == "0":
        sys.exit(3)
    if mode == "crash_always":
        sys.exit(1)
    def stop(signum, frame):
        (out / f"stopped-{slot}").write_text(signal.Signals(signum).name)
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    while True:
        time.sleep(0.1)
    """
)

SUPERVISE = textwrap.dedent(
    """
    import logging, os, sys
    from service.lifetime import die_with_parent
    from workers.supervisor import Slot, Supervisor
    logging.basicConfig(level=logging.INFO)
    parent = int(os.environ.get("PARENT_PID", "0")) or None
    if os.environ.get("PDEATHSIG") == "1":
        die_with_parent(parent)
    slots = [Slot(0, "3"), Slot(1, "3"), Slot(2, None)]
    command = [sys.executable, sys.argv[1], sys.argv[2]]
    crashes = int(os.environ.get("MAX_CRASHES", "10"))
    supervisor = Supervisor(
        slots, command, threads=2, parent_pid=parent, max_quick_crashes=crashes
    )
    sys.exit(supervisor.run())
    """
)

# A stand-in for `actsearch up`: starts the supervisor with its own pid as the parent, then waits.
LAUNCH = textwrap.dedent(
    """
    import os, pathlib, subprocess, sys, time
    out = pathlib.Path(sys.argv[3])
    env = dict(os.environ, PARENT_PID=str(os.getpid()))
    supervisor = subprocess.Popen(
        [sys.executable, "-c", sys.argv[1], *sys.argv[2:]], env=env, start_new_session=True
    )
    (out / "supervisor.pid").write_text(str(supervisor.pid))
    time.sleep(600)
    """
)


def _env(mode: str, **extra: str) -> dict[str, str]:
    env = {"CHILD_MODE": mode, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    return {**env, **extra}


def _supervisor(tmp_path: Path, mode: str, **env: str) -> subprocess.Popen[bytes]:
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    return subprocess.Popen(
        [sys.executable, "-c", SUPERVISE, str(child), str(tmp_path)],
        env=_env(mode, **env),
        cwd=REPO_ROOT,
    )


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _starts(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("start-*.json"))]


def test_plan_slots_parses_gpus_and_per_gpu() -> None:
    assert plan_slots("cpu", 1) == [Slot(0, None)]
    assert plan_slots("cpu", 3) == [Slot(0, None), Slot(1, None), Slot(2, None)]
    assert plan_slots("0,2", 2) == [Slot(0, "0"), Slot(1, "0"), Slot(2, "2"), Slot(3, "2")]
    with pytest.raises(ValueError, match="not a GPU number"):
        plan_slots("0,x", 1)
    with pytest.raises(ValueError, match="at least 1"):
        plan_slots("cpu", 0)


def test_auto_falls_back_to_one_cpu_slot_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible, whatever the machine has
    assert plan_slots(None, 1) == [Slot(0, None)]
    with pytest.raises(ValueError, match="no CUDA GPU"):
        plan_slots("all", 1)


def test_cpu_threads_split_the_cores() -> None:
    import os

    cores = os.cpu_count() or 1
    assert cpu_threads([Slot(0, None)]) == cores
    assert cpu_threads([Slot(i, None) for i in range(cores * 2)]) == 1


def test_children_are_pinned_and_stopped_by_one_sigterm(tmp_path: Path) -> None:
    process = _supervisor(tmp_path, "wait_term")
    try:
        starts = wait_for(lambda: len(_starts(tmp_path)) == 3 and _starts(tmp_path), 30, "3 slots")
        by_slot = {s["slot"]: s for s in starts}
        assert by_slot["0"]["cvd"] == "3" and by_slot["1"]["cvd"] == "3"
        assert by_slot["2"]["cvd"] == ""  # the CPU slot sees no GPU at all
        assert by_slot["2"]["omp"] == "2"
        assert by_slot["0"]["args"][by_slot["0"]["args"].index("--device") + 1] == "cuda"
        assert by_slot["2"]["args"][by_slot["2"]["args"].index("--device") + 1] == "cpu"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        # Each child got exactly one SIGTERM (a second would mean "stop now").
        assert sorted(p.name for p in tmp_path.glob("stopped-*")) == [
            "stopped-0",
            "stopped-1",
            "stopped-2",
        ]
        assert {p.read_text() for p in tmp_path.glob("stopped-*")} == {"SIGTERM"}
    finally:
        if process.poll() is None:
            process.kill()


def test_crashed_child_is_restarted_and_finished_children_are_not(tmp_path: Path) -> None:
    process = _supervisor(tmp_path, "crash_once")
    try:
        assert process.wait(timeout=60) == 0  # every slot crashed once, then finished
    finally:
        if process.poll() is None:
            process.kill()
    starts = _starts(tmp_path)
    assert sorted(s["slot"] for s in starts) == ["0", "0", "1", "1", "2", "2"]


def test_fatal_child_stops_every_slot(tmp_path: Path) -> None:
    process = _supervisor(tmp_path, "fatal")
    started = time.monotonic()
    try:
        assert process.wait(timeout=60) == EXIT_FATAL
    finally:
        if process.poll() is None:
            process.kill()
    assert time.monotonic() - started < 30
    assert sorted(p.name for p in tmp_path.glob("stopped-*")) == ["stopped-1", "stopped-2"]


def test_a_slot_that_keeps_crashing_is_given_up(tmp_path: Path) -> None:
    process = _supervisor(tmp_path, "crash_always", MAX_CRASHES="3")
    try:
        assert process.wait(timeout=60) == 1  # 1 s + 2 s of back-off, then no more restarts
    finally:
        if process.poll() is None:
            process.kill()
    starts = _starts(tmp_path)
    assert sorted(s["slot"] for s in starts) == ["0"] * 3 + ["1"] * 3 + ["2"] * 3


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("pdeathsig", ["1", "0"], ids=["prctl", "pid-watch"])
def test_a_supervisor_whose_parent_dies_stops_every_slot_at_once(
    tmp_path: Path, pdeathsig: str
) -> None:
    """`kill -9` of `actsearch up`: its supervisor tells each slot to hand back now, then exits."""
    child = tmp_path / "child.py"
    child.write_text(CHILD)
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, SUPERVISE, str(child), str(tmp_path)],
        env=_env("wait_term", PDEATHSIG=pdeathsig),
        cwd=REPO_ROOT,
    )
    supervisor = 0
    try:
        wait_for(lambda: len(_starts(tmp_path)) == 3, 30, "3 slots")
        supervisor = int((tmp_path / "supervisor.pid").read_text())
        launcher.kill()
        launcher.wait()
        wait_for(lambda: not _alive(supervisor), 30, "the supervisor to exit")
        assert {p.name: p.read_text() for p in tmp_path.glob("stopped-*")} == {
            "stopped-0": "SIGHUP",
            "stopped-1": "SIGHUP",
            "stopped-2": "SIGHUP",
        }
    finally:
        if launcher.poll() is None:
            launcher.kill()
        if supervisor and _alive(supervisor):
            os.kill(supervisor, signal.SIGKILL)
