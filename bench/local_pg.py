"""A private PostgreSQL server and a PgBouncer in front of it, for benchmarks.

The server is this machine's PostgreSQL binaries on a fresh data directory (initdb), on a free
port, with `pg_stat_statements` loaded and as many connections as the benchmark needs: the
shared server's settings (100 connections, no pg_stat_statements) stay untouched, and other
people's tests on it are not disturbed. Run as root, both run as the `postgres` user (PostgreSQL
refuses root, PgBouncer drops to the user it is told).
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pg_bin(name: str) -> str:
    """A PostgreSQL server binary: the newest /usr/lib/postgresql/<version>/bin, else PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True
    )
    for folder in versions:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"PostgreSQL's {name} is not installed (apt-get install postgresql)"
        )
    return found


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {port} within 60 s")


@dataclass(frozen=True)
class Server:
    """Where a PostgreSQL server (or PgBouncer) listens; URLs name user postgres, no password."""

    port: int
    pooled: bool = False  # a transaction-pooling PgBouncer: URLs carry ?pgbouncer=true

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of `database` through this server."""
        flag = "?pgbouncer=true" if self.pooled else ""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}{flag}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[Any]:
        """A plain autocommit connection (psycopg, no SQLAlchemy)."""
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=database, autocommit=True
        )


@contextmanager
def private_postgres(max_connections: int = 1500) -> Iterator[Server]:
    """A throw-away PostgreSQL server with pg_stat_statements; stopped and deleted at exit."""
    root = Path(tempfile.mkdtemp(prefix="as-bench-pg-"))
    root.chmod(0o777)
    data, log = root / "data", root / "postgres.log"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    subprocess.run(
        _as_postgres([_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]),
        check=True,
        capture_output=True,
    )
    port = free_port()
    options = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(root),
        "max_connections": str(max_connections),
        "shared_preload_libraries": "pg_stat_statements",
        "pg_stat_statements.max": "2000",
        "track_activity_query_size": "2048",
    }
    command = [_pg_bin("postgres"), "-D", str(data)]
    for key, value in options.items():
        command += ["-c", f"{key}={value}"]
    with open(log, "ab") as output:
        process = subprocess.Popen(_as_postgres(command), stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, process, log, "postgres")
        server = Server(port)
        for _ in range(50):  # listening comes a moment before accepting logins
            try:
                with server.connect() as connection:
                    connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                break
            except psycopg.OperationalError:
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()  # SIGTERM to postgres: a smart shutdown once clients are gone
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def pgbouncer(server: Server, *, pool_size: int, max_clients: int = 6000) -> Iterator[Server]:
    """PgBouncer in transaction pooling mode in front of `server` (every database, user postgres).

    Its admin console is the database `pgbouncer` (SHOW POOLS, SHOW STATS), open to postgres.
    """
    binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")
    if binary is None:
        raise FileNotFoundError("pgbouncer is not installed (apt-get install pgbouncer)")
    root = Path(tempfile.mkdtemp(prefix="as-bench-pgbouncer-"))
    root.chmod(0o755)
    port = free_port()
    ini = root / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
* = host=127.0.0.1 port={server.port} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
admin_users = postgres
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = {max_clients}
max_db_connections = {pool_size}
ignore_startup_parameters = extra_float_digits,options
log_connections = 0
log_disconnections = 0
{"user = postgres" if os.geteuid() == 0 else ""}
"""
    )
    ini.chmod(0o644)
    log = root / "pgbouncer.log"
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [binary, str(ini)], stdout=output, stderr=subprocess.STDOUT, cwd=root
        )
    try:
        _wait_listening(port, process, log, "pgbouncer")
        yield Server(port, pooled=True)
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def admin_show(bouncer: Server, what: str) -> list[dict[str, Any]]:
    """Rows of PgBouncer's `SHOW <what>` (its console speaks only the simple query protocol)."""
    with bouncer.connect("pgbouncer") as connection:
        result = connection.pgconn.exec_(f"SHOW {what}".encode())
        names = [result.fname(i).decode() for i in range(result.nfields)]  # type: ignore[union-attr]
        rows = []
        for row in range(result.ntuples):
            values = [result.get_value(row, col) for col in range(result.nfields)]
            rows.append(
                {
                    n: (v.decode() if v is not None else None)
                    for n, v in zip(names, values, strict=True)
                }
            )
        return rows


# -- the database's own statistics ------------------------------------------------------------
SAMPLE_S = 0.1  # pg_stat_activity / SHOW POOLS sampling period


class Sampler:
    """pg_stat_activity (and PgBouncer's pools) every SAMPLE_S seconds while a run goes on."""

    def __init__(self, server: Server, database: str, bouncer: Server | None) -> None:
        self.server, self.database, self.bouncer = server, database, bouncer
        self.waits: Counter[str] = Counter()
        self.lock_waits: Counter[str] = Counter()  # the statements that wait for a lock
        self.connections: list[int] = []
        self.active: list[int] = []
        self.pool: list[dict[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with self.server.connect() as connection:
            while not self._stop.wait(SAMPLE_S):
                rows = connection.execute(
                    "SELECT state, wait_event_type, wait_event, left(query, 200) "
                    "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.database,),
                ).fetchall()
                self.connections.append(len(rows))
                active = [r for r in rows if r[0] == "active"]
                self.active.append(len(active))
                for _, kind, event, query in active:
                    self.waits[f"{kind}:{event}" if kind else "CPU (no wait event)"] += 1
                    if kind == "Lock":
                        self.lock_waits[" ".join(query.split())[:90]] += 1
                if self.bouncer is not None:
                    self._sample_pool()

    def _sample_pool(self) -> None:
        assert self.bouncer is not None
        for row in admin_show(self.bouncer, "POOLS"):
            if row["database"] == self.database:
                keys = ("cl_active", "cl_waiting", "sv_active", "sv_idle", "maxwait_us")
                self.pool.append({k: int(row.get(k) or 0) for k in keys})

    def summary(self) -> dict[str, Any]:
        samples = max(1, len(self.active))
        out: dict[str, Any] = {
            "samples": len(self.active),
            "server_connections_peak": max(self.connections, default=0),
            "active_backends_mean": statistics.fmean(self.active) if self.active else 0.0,
            "active_backends_peak": max(self.active, default=0),
            # Per sample, how many backends were busy with each wait (or on the CPU).
            "waits_per_sample": {k: round(v / samples, 3) for k, v in self.waits.most_common(12)},
            "lock_waits_per_sample_by_statement": {
                k: round(v / samples, 3) for k, v in self.lock_waits.most_common(6)
            },
        }
        if self.pool:
            out["pgbouncer"] = {
                "client_connections_peak": max(p["cl_active"] + p["cl_waiting"] for p in self.pool),
                "clients_waiting_mean": statistics.fmean(p["cl_waiting"] for p in self.pool),
                "clients_waiting_peak": max(p["cl_waiting"] for p in self.pool),
                "server_active_mean": statistics.fmean(p["sv_active"] for p in self.pool),
                "max_wait_ms_peak": max(p["maxwait_us"] for p in self.pool) / 1000,
            }
        return out


def reset_statistics(server: Server) -> None:
    with server.connect() as connection:
        connection.execute("SELECT pg_stat_statements_reset()")


def statement_stats(server: Server, database: str, trials: int) -> dict[str, Any]:
    """Statements per trial and the costliest ones, from pg_stat_statements."""
    with server.connect() as connection:
        rows = connection.execute(
            "SELECT query, calls, total_exec_time, rows FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s "
            "ORDER BY total_exec_time DESC",
            (database,),
        ).fetchall()
    # BEGIN / COMMIT / ROLLBACK are counted apart: the commits say how many transactions.
    control = ("BEGIN", "COMMIT", "ROLLBACK")
    rows = [r for r in rows if r[0].split()[0].upper() not in control]
    calls = sum(r[1] for r in rows)
    total_ms = sum(r[2] for r in rows)
    top = [
        {
            "query": " ".join(r[0].split())[:160],
            "calls_per_trial": round(r[1] / trials, 3),
            "ms_per_call": round(r[2] / r[1], 4) if r[1] else 0.0,
            "share_of_exec_time": round(r[2] / total_ms, 3) if total_ms else 0.0,
        }
        for r in rows[:10]
    ]
    return {
        "statements_per_trial": round(calls / trials, 2),
        "exec_ms_per_trial": round(total_ms / trials, 3),
        "top_by_exec_time": top,
    }


def write_stats(server: Server, database: str, trials: int) -> dict[str, Any]:
    """Rows inserted, updated and deleted per trial and table; commits per trial."""
    time.sleep(1.5)  # backends flush their table statistics within a second of going idle
    with server.connect(database) as connection:
        tables = connection.execute(
            "SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables "
            "ORDER BY 2 DESC"
        ).fetchall()
        (commits,) = connection.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone() or (0,)
    rows = {name: round(count / trials, 2) for name, count in tables if count}
    return {
        "rows_written_per_trial": round(sum(c for _, c in tables) / trials, 2),
        "rows_by_table": rows,
        "commits_per_trial": round((commits or 0) / trials, 2),
    }


@contextmanager
def scratch_database(server: Server) -> Iterator[str]:
    name = f"bench_{os.getpid()}_{int(time.time() * 1000) % 10**9}"
    with server.connect() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with server.connect() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
