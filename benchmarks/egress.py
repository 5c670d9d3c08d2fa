"""What the sandbox's egress proxy adds: the same request straight to a server and through a run's `EgressProxy`.

A minimal HTTP server on 127.0.0.1 answers a small body, or a large one for throughput; the proxy allows it (the
operator's range setting opens loopback for the bench only) and names resolve through a table (no DNS server in
the way: the figure is the proxy's own). Timed from the client's connect to the last byte of the answer, each
request on a new connection (as curl and pip make them), direct and proxied interleaved after warm-ups:

- a plain http:// request (the proxy reads the head, decides, dials, forwards);
- a CONNECT tunnel and one request through it (the decision, then bytes untouched);
- throughput of one large download through a tunnel against direct.
"""

import asyncio
import time
from typing import Any

from django.test import override_settings

from benchmarks.measure import percentile, size
from gateway.allowlist import EgressPolicy, parse_rules
from gateway.proxy import EgressProxy

REQUESTS = size(300, 5)
WARM_UP = size(20, 1)
BIG_BYTES = size(256 * 1024 * 1024, 4 * 1024 * 1024)
SMALL = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    if b" /big " in head.split(b"\r\n", 1)[0]:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {BIG_BYTES}\r\nConnection: close\r\n\r\n".encode())
        chunk = b"x" * (1024 * 1024)
        for _ in range(BIG_BYTES // len(chunk)):
            writer.write(chunk)
            await writer.drain()
    else:
        writer.write(SMALL)
    await writer.drain()
    writer.close()


async def _request(port: int, head: bytes, tunnel: bytes = b"") -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1024 * 1024)
    if tunnel:
        writer.write(tunnel)
        await reader.readuntil(b"\r\n\r\n")
    writer.write(head)
    received = 0
    while chunk := await reader.read(1024 * 1024):
        received += len(chunk)
    writer.close()
    return received


async def _timed(port: int, head: bytes, tunnel: bytes = b"") -> float:
    started = time.perf_counter()
    await _request(port, head, tunnel)
    return (time.perf_counter() - started) * 1000


async def _measure() -> dict[str, float]:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    upstream = server.sockets[0].getsockname()[1]

    async def names(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    policy = EgressPolicy(tenant=parse_rules([f"bench.example.com:{upstream}"]))
    figures: dict[str, float] = {}
    async with EgressProxy(policy, on_egress=lambda data: None, resolver=names) as proxy:
        proxy.traffic.max_connections = 10**9
        proxy.traffic.max_bytes = 10**15
        port = int(proxy.url.rsplit(":", 1)[1])
        direct_head = b"GET /small HTTP/1.1\r\nHost: bench\r\n\r\n"
        proxied_head = f"GET http://bench.example.com:{upstream}/small HTTP/1.1\r\nHost: b\r\n\r\n".encode()
        connect = f"CONNECT bench.example.com:{upstream} HTTP/1.1\r\n\r\n".encode()
        samples: dict[str, list[float]] = {"direct": [], "proxied": [], "tunnelled": []}
        for index in range(WARM_UP + REQUESTS):
            timings = {
                "direct": await _timed(upstream, direct_head),
                "proxied": await _timed(port, proxied_head),
                "tunnelled": await _timed(port, direct_head, connect),
            }
            if index >= WARM_UP:
                for name, value in timings.items():
                    samples[name].append(value)
        for name, values in samples.items():
            figures[f"{name}_p50"] = percentile(values, 0.5)
            figures[f"{name}_p99"] = percentile(values, 0.99)
        big = b"GET /big HTTP/1.1\r\nHost: bench\r\n\r\n"
        for name, tunnel in (("direct", b""), ("tunnelled", connect)):
            started = time.perf_counter()
            await _request(upstream if not tunnel else port, big, tunnel)
            figures[f"{name}_mb_s"] = BIG_BYTES / (1024 * 1024) / (time.perf_counter() - started)
    server.close()
    figures["requests"] = REQUESTS
    return figures


def figures() -> dict[str, float]:
    with override_settings(EGRESS_ALLOWED_NETWORKS=["127.0.0.1/32"]):
        return asyncio.run(_measure())


def rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    if not figures:
        return []
    return [
        (
            "egress: http:// request through the proxy",
            f"{figures['proxied_p50'] - figures['direct_p50']:+.2f} ms p50   (direct {figures['direct_p50']:.2f} ms,"
            f" proxied {figures['proxied_p50']:.2f} ms; p99 {figures['direct_p99']:.2f} / {figures['proxied_p99']:.2f} ms)",
        ),
        (
            "egress: CONNECT tunnel + request",
            f"{figures['tunnelled_p50'] - figures['direct_p50']:+.2f} ms p50   (tunnelled {figures['tunnelled_p50']:.2f} ms,"
            f" p99 {figures['tunnelled_p99']:.2f} ms; {figures['requests']:.0f} requests each, new connection each)",
        ),
        (
            "egress: throughput through a tunnel",
            f"{figures['tunnelled_mb_s']:,.0f} MB/s   (direct {figures['direct_mb_s']:,.0f} MB/s, one download of"
            f" {BIG_BYTES // (1024 * 1024)} MB)",
        ),
    ]
