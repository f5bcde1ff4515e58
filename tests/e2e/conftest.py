"""Run the real `actsearch up` as a user would, and talk to it over HTTP and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
ACTSEARCH = [sys.executable, "-m", "service.cli"]
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@dataclass
class Service:
    """A running `actsearch up` and how to reach it."""

    url: str
    home: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def token(self) -> str:
        """The admin login token `actsearch up` saved for the CLI."""
        return str(json.loads((self.home / "client.json").read_text())["token"])

    def api(self) -> httpx.Client:
        """An authenticated client of /api/v1."""
        return httpx.Client(
            base_url=f"{self.url}/api/v1",
            timeout=30,
            headers={"Authorization": f"Bearer {self.token}"},
        )

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """Run an `actsearch` command against this service, as a user in another terminal."""
        return subprocess.run(
            [*ACTSEARCH, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def start_service(
    home: Path,
    *,
    database_url: str | None,
    data: str | None,
    extra_env: dict[str, str] | None = None,
) -> Service:
    """Start `actsearch up` in its own process group and wait until it answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTSEARCH_")}
    env.update(
        {
            "ACTSEARCH_HOME": str(home),
            "ACTSEARCH_PORT": str(port),
            "ACTSEARCH_HEARTBEAT_S": "2",
            "ACTSEARCH_GRACE_S": "60",
        }
    )
    if database_url:
        env["ACTSEARCH_DATABASE_URL"] = database_url
    env.update(extra_env or {})
    args = [*ACTSEARCH, "up", "--gpus", "cpu"] + (["--data", data] if data else [])
    log = home / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    service = Service(url=f"http://127.0.0.1:{port}", home=home, env=env, process=process, log=log)
    try:
        wait_healthy(service.url, process, log, timeout_s=120)
    except RuntimeError as error:
        stop_service(service)
        raise AssertionError(f"actsearch up did not start: {error}") from error
    return service


def stop_service(service: Service) -> None:
    """Ctrl-C, as a user would; the worker hands back its trial and exits."""
    if service.process.poll() is None:
        os.killpg(service.process.pid, signal.SIGINT)
        try:
            service.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(service.process.pid, signal.SIGKILL)
            service.process.wait()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    name = f"as_e2e_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
