"""Helpers shared by the tests that start real servers (API, dashboard, `actsearch up`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0
) -> None:
    """Wait until `url`/api/v1/health answers 200; fail with the log if the process dies first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}:\n"
                f"{log.read_text(errors='replace')[-4000:]}"
            )
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(
        f"server did not answer within {timeout_s:.0f} s:\n"
        f"{log.read_text(errors='replace')[-4000:]}"
    )


# The API and dashboard tests that start a real server run it with this many processes
# (`uvicorn --workers`): sessions, CSRF tokens and ETags must hold across processes.
SERVER_PROCESSES_ENV = "ACTSEARCH_TEST_SERVER_PROCESSES"


def server_processes() -> int:
    """Processes of the test servers: $ACTSEARCH_TEST_SERVER_PROCESSES, default 2."""
    return int(os.environ.get(SERVER_PROCESSES_ENV, "2"))


def uvicorn_command(port: int, *, log_level: str = "warning") -> list[str]:
    """The app under uvicorn as the tests run it: from the environment, server_processes() of it."""
    return [
        sys.executable, "-m", "uvicorn", "--factory", "service.app:app_from_env",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", log_level,
        "--workers", str(server_processes()),
    ]  # fmt: skip
