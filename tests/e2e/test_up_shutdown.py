"""Stopping `actsearch up` with a signal stops its worker too: nothing is left running after it.

uvicorn re-raises the SIGTERM it caught once the server has shut down; `up` must not die of it
before it has stopped the worker supervisor and its slot (they would run on, re-parented to 1).
A `kill -9` of `up` gives it no chance at all: the supervisor and its slot notice by themselves.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import start_service, stop_service

STOP_BOUND_S = 90.0  # an idle worker stops at once; generous for a loaded 2-core machine
KILLED_BOUND_S = 30.0  # `up` killed: its idle worker notices at once (SIGHUP) and stops


def _descendants(root: int) -> set[tuple[int, str]]:
    """(pid, start time) of every live process below `root`, read from /proc."""
    parents: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # The command name (field 2) may hold spaces: the fields after it follow the last ")".
        fields = stat.rsplit(")", 1)[1].split()
        pid = int(entry.name)
        parents.setdefault(int(fields[1]), []).append(pid)
        started[pid] = fields[19]
    found: set[tuple[int, str]] = set()
    todo = [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add((child, started[child]))
            todo.append(child)
    return found


def _alive(process: tuple[int, str]) -> bool:
    """Whether this very process (not a later one given the same pid) still runs."""
    pid, start = process
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] == start and fields[0] != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree in /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_up_stops_its_worker_and_slot(tmp_path: Path, signum: signal.Signals) -> None:
    service = start_service(tmp_path, database_url=None, data=None)
    children: set[tuple[int, str]] = set()
    try:
        deadline = time.monotonic() + 120
        while "ready on cpu" not in service.log.read_text(errors="replace"):
            assert service.process.poll() is None, service.log.read_text(errors="replace")
            assert time.monotonic() < deadline, "the worker slot never got ready"
            time.sleep(0.5)
        children = _descendants(service.process.pid)
        assert len(children) >= 2, children  # the worker supervisor and its slot

        os.kill(service.process.pid, signum)  # `up` alone, as systemd or `kill` would
        try:
            code = service.process.wait(timeout=STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(service.log.read_text(errors="replace")[-4000:]) from None
        log = service.log.read_text(errors="replace")
        assert code == 0, log[-4000:]
        left = [child for child in children if _alive(child)]
        assert not left, f"still running after `up` exited: {left}\n{log[-4000:]}"
        # Stopped, not killed: the slot unregistered itself and no traceback was printed.
        assert "stopped after 0 trial(s)" in log, log[-4000:]
        assert "Traceback" not in log, log[-4000:]
    finally:
        stop_service(service)
        for child in children:  # only after a failure: what `up` left behind
            if _alive(child):
                os.kill(child[0], signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree in /proc")
def test_kill_9_of_up_leaves_no_worker_behind(tmp_path: Path) -> None:
    """SIGKILL gives `up` no chance to stop anything: its supervisor and slot end by themselves."""
    service = start_service(tmp_path, database_url=None, data=None)
    children: set[tuple[int, str]] = set()
    try:
        deadline = time.monotonic() + 120
        while "ready on cpu" not in service.log.read_text(errors="replace"):
            assert service.process.poll() is None, service.log.read_text(errors="replace")
            assert time.monotonic() < deadline, "the worker slot never got ready"
            time.sleep(0.5)
        children = _descendants(service.process.pid)
        assert len(children) >= 2, children  # the worker supervisor and its slot

        service.process.kill()
        service.process.wait()
        deadline = time.monotonic() + KILLED_BOUND_S
        while any(_alive(child) for child in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        log = service.log.read_text(errors="replace")
        left = [child for child in children if _alive(child)]
        assert not left, (
            f"still running {KILLED_BOUND_S:.0f} s after `up` died: {left}\n{log[-4000:]}"
        )
        assert "stopping every slot now" in log and "stopped after 0 trial(s)" in log, log[-4000:]
    finally:
        stop_service(service)
        for child in children:  # only after a failure: what `up` left behind
            if _alive(child):
                os.kill(child[0], signal.SIGKILL)
