"""Helpers shared by the tests that start real servers (API, dashboard, `actsearch up`)."""

from __future__ import annotations

import socket
import subprocess
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
