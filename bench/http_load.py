"""A bounded HTTP load: N clients, each on its own keep-alive connection, for a fixed time.

Each client walks the routes in turn (client i starts at route i) as fast as answers come (a
closed loop: throughput is what the server sustains), optionally sending back each route's last
ETag as If-None-Match and accepting an answer up to 10 s old (Cache-Control: max-stale=10),
as the dashboard's polls do. The client is a few lines of asyncio over raw
HTTP/1.1, not httpx: on a 2-core machine the load generator's own CPU is taken from the server,
and this one costs a few tens of microseconds a request.

Bounded: `clients` connections, `duration_s` seconds, `timeout_s` per answer; it stops by itself.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

DASHBOARD_POLL = "Cache-Control: max-stale=10\r\n"  # what the dashboard's polls send


@dataclass(frozen=True)
class Route:
    """One polled URL (path with its query) and its label in the results."""

    label: str
    path: str


@dataclass
class Samples:
    """Latencies (ms) and statuses of one route."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    body_bytes: int = 0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summary(samples: Samples, seconds: float) -> dict[str, Any]:
    """Count, rate, percentiles and statuses of some samples."""
    values = samples.latencies
    if not values:
        return {"n": 0, "errors": samples.errors, "statuses": samples.statuses}
    return {
        "n": len(values),
        "per_s": len(values) / seconds,
        "p50_ms": statistics.median(values),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values),
        "statuses": {str(k): v for k, v in sorted(samples.statuses.items())},
        "errors": samples.errors,
        "mean_body_bytes": samples.body_bytes / len(values),
    }


class _Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await self.reader.readexactly(length) if length else b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _client(
    index: int,
    host: str,
    port: int,
    token: str,
    routes: list[Route],
    conditional: bool,
    stop_at: float,
    timeout_s: float,
    results: dict[str, Samples],
) -> None:
    connection = _Connection(host, port)
    tags: dict[str, str] = {}
    turn = index
    while time.monotonic() < stop_at:
        route = routes[turn % len(routes)]
        turn += 1
        extra = (
            f"If-None-Match: {tags[route.path]}\r\n" if conditional and route.path in tags else ""
        ) + (DASHBOARD_POLL if conditional else "")
        request = (
            f"GET {route.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: application/json\r\n{extra}\r\n"
        ).encode()
        samples = results[route.label]
        began = time.perf_counter()
        try:
            status, headers, body = await asyncio.wait_for(connection.get(request), timeout_s)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
            samples.errors += 1
            connection.close()
            continue
        samples.latencies.append((time.perf_counter() - began) * 1000)
        samples.statuses[status] = samples.statuses.get(status, 0) + 1
        samples.body_bytes += len(body)
        if status not in (200, 304):  # the benchmark's requests are all valid: anything else fails
            samples.errors += 1
        if "etag" in headers:
            tags[route.path] = headers["etag"]
    connection.close()


async def _load(
    host: str,
    port: int,
    token: str,
    routes: list[Route],
    clients: int,
    duration_s: float,
    conditional: bool,
    timeout_s: float,
) -> tuple[dict[str, Samples], float]:
    results = {route.label: Samples() for route in routes}
    began = time.monotonic()
    stop_at = began + duration_s
    await asyncio.gather(
        *(
            _client(i, host, port, token, routes, conditional, stop_at, timeout_s, results)
            for i in range(clients)
        )
    )
    return results, time.monotonic() - began


def run_load(
    host: str,
    port: int,
    token: str,
    routes: list[Route],
    *,
    clients: int,
    duration_s: float,
    conditional: bool,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Run the load; throughput, latency percentiles and statuses, overall and per route."""
    results, seconds = asyncio.run(
        _load(host, port, token, routes, clients, duration_s, conditional, timeout_s)
    )
    everything = Samples()
    for samples in results.values():
        everything.latencies += samples.latencies
        everything.errors += samples.errors
        everything.body_bytes += samples.body_bytes
        for status, n in samples.statuses.items():
            everything.statuses[status] = everything.statuses.get(status, 0) + n
    return {
        "clients": clients,
        "duration_s": round(seconds, 2),
        "conditional": conditional,
        "all": summary(everything, seconds),
        "routes": {label: summary(samples, seconds) for label, samples in results.items()},
    }
