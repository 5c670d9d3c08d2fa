"""What intercepting an HTTPS tunnel to add a tenant's secret headers costs, against a plain CONNECT tunnel and
against no proxy at all.

An HTTPS upstream (aiohttp, its certificate from a bench CA) runs on 127.0.0.1 in a thread of its own. A
minimal CONNECT front on loopback either pipes the tunnel's bytes untouched (what the egress proxy does for
every host without secret headers) or hands it to `gateway.intercept.intercept` (hosts with them). Measured,
each way: a new connection (CONNECT, TLS, one small GET), a small GET on a kept-alive connection (p50/p99,
interleaved), and throughput up and down with curl as the client. Also the cost of issuing a host's certificate.

Run alone: `python -m benchmarks.egress_tls` (BENCH_QUICK=1 for a smoke run).
"""

import asyncio
import contextlib
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.measure import percentile, size

REQUESTS = size(300, 5)
CONNECTIONS = size(50, 3)
WARM_UP = size(20, 1)
TRANSFER_MB = size(100, 2)
HOST = "api.bench.test"
SECRET = "Bearer bench-secret"


class Meter:
    def __init__(self) -> None:
        self.up = self.down = 0

    def sent(self, count: int) -> None:
        self.up += count

    def received(self, count: int) -> None:
        self.down += count


def figures(work: Path) -> dict[str, float]:
    """Runs against a RUN_ROOT under `work`, so that the deployment CA it makes is the bench's own."""
    from django.test import override_settings

    from gateway import tls

    ca = tls.CertificateAuthority(*tls._new_ca())
    (work / "bench-upstream-ca.pem").write_bytes(ca.certificate_pem)
    with override_settings(
        RUN_ROOT=work / "egress-bench",
        EGRESS_CA_CERT_FILE="",
        EGRESS_CA_KEY_FILE="",
        EGRESS_UPSTREAM_CA_FILE=str(work / "bench-upstream-ca.pem"),
    ):
        upstream_port, stop_upstream = _start_upstream(ca, work)
        try:
            trust = work / "bench-client-trust.pem"
            trust.write_bytes(tls.sandbox_ca_bundle().read_bytes() + ca.certificate_pem)
            result = asyncio.run(_measure(upstream_port, trust))
        finally:
            stop_upstream()
        started = time.perf_counter()
        count = size(200, 5)
        deployment = tls.deployment_ca()
        for number in range(count):
            tls._server_context(*tls.issue_leaf(deployment, f"host-{number}.bench.test"))
        result["issue_ms"] = (time.perf_counter() - started) / count * 1000
    return result


def _start_upstream(ca: Any, work: Path) -> tuple[int, Callable[[], None]]:
    """An HTTPS server in a thread of its own: GET /small, GET /bytes/N, POST /sink (counts and discards)."""
    from aiohttp import web

    from gateway.tls import issue_leaf

    chain, key = issue_leaf(ca, HOST)
    (work / "bench-upstream.pem").write_bytes(chain + key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(work / "bench-upstream.pem")
    ready: dict[str, Any] = {}
    started = threading.Event()

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        if request.path.startswith("/bytes/"):
            total = int(request.path.rsplit("/", 1)[1])
            response = web.StreamResponse(headers={"Content-Length": str(total)})
            await response.prepare(request)
            block = b"x" * (256 * 1024)
            for offset in range(0, total, len(block)):
                await response.write(block[: total - offset])
            return response
        if request.method == "POST":
            if request.headers.get("Expect", "").lower() == "100-continue":
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            received = 0
            async for data in request.content.iter_chunked(256 * 1024):
                received += len(data)
            return web.Response(text=str(received))
        return web.Response(text="ok")

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(web.Server(answer, access_log=None), "127.0.0.1", 0, ssl=context)
        ready["port"] = server.sockets[0].getsockname()[1]
        ready["stop"] = stop = asyncio.Event()
        ready["loop"] = loop
        started.set()
        await stop.wait()
        server.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    started.wait(10)

    def stop() -> None:
        ready["loop"].call_soon_threadsafe(ready["stop"].set)
        thread.join(5)

    return ready["port"], stop


async def _measure(upstream_port: int, trust: Path) -> dict[str, float]:
    from gateway.intercept import intercept

    async def front(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, intercepted: bool) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        host, port = head.split(b" ")[1].decode().rsplit(":", 1)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        meter = Meter()
        try:
            if intercepted:
                await intercept(
                    reader,
                    writer,
                    host=host,
                    port=int(port),
                    address="127.0.0.1",
                    headers={"Authorization": SECRET},
                    traffic=meter,
                    connect_timeout=5.0,
                )
            else:
                await _tunnel(reader, writer, int(port), meter)
        finally:
            writer.close()

    plain_server = await asyncio.start_server(lambda r, w: front(r, w, intercepted=False), "127.0.0.1", 0)
    intercepting_server = await asyncio.start_server(lambda r, w: front(r, w, intercepted=True), "127.0.0.1", 0)
    proxies: dict[str, int | None] = {
        "direct": None,
        "tunnel": plain_server.sockets[0].getsockname()[1],
        "intercepted": intercepting_server.sockets[0].getsockname()[1],
    }
    context = ssl.create_default_context(cafile=str(trust))
    result: dict[str, float] = {}
    async with plain_server, intercepting_server:
        # New connections, interleaved.
        connects: dict[str, list[float]] = {name: [] for name in proxies}
        for n in range(WARM_UP + CONNECTIONS):
            for name, proxy in proxies.items():
                started = time.perf_counter()
                reader, writer = await _connect(proxy, upstream_port, context)
                await _get(reader, writer, upstream_port)
                if n >= WARM_UP:
                    connects[name].append((time.perf_counter() - started) * 1000)
                writer.close()
        # Requests on kept-alive connections, interleaved.
        connections = {name: await _connect(proxy, upstream_port, context) for name, proxy in proxies.items()}
        requests: dict[str, list[float]] = {name: [] for name in proxies}
        for n in range(WARM_UP + REQUESTS):
            for name, (reader, writer) in connections.items():
                started = time.perf_counter()
                await _get(reader, writer, upstream_port)
                if n >= WARM_UP:
                    requests[name].append((time.perf_counter() - started) * 1000)
        for _, writer in connections.values():
            writer.close()
        for name in proxies:
            result[f"{name}_connect_p50"] = percentile(connects[name], 0.5)
            result[f"{name}_request_p50"] = percentile(requests[name], 0.5)
            result[f"{name}_request_p99"] = percentile(requests[name], 0.99)
        for name, proxy in proxies.items():
            result[f"{name}_down_mbps"], result[f"{name}_up_mbps"] = await _throughput(proxy, upstream_port, trust)
    return result


async def _tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int, meter: Meter) -> None:
    upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)

    async def pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter, count: Callable[[int], None]) -> None:
        while data := await source.read(64 * 1024):
            count(len(data))
            target.write(data)
            await target.drain()

    tasks = [
        asyncio.create_task(pipe(reader, upstream_writer, meter.sent)),
        asyncio.create_task(pipe(upstream_reader, writer, meter.received)),
    ]
    with contextlib.suppress(Exception):
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    upstream_writer.close()


async def _connect(
    proxy: int | None, upstream_port: int, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if proxy is None:
        return await asyncio.open_connection("127.0.0.1", upstream_port, ssl=context, server_hostname=HOST)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
    writer.write(f"CONNECT {HOST}:{upstream_port} HTTP/1.1\r\nHost: {HOST}:{upstream_port}\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    await writer.start_tls(context, server_hostname=HOST)
    return reader, writer


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
    writer.write(f"GET /small HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)


async def _throughput(proxy: int | None, port: int, trust: Path) -> tuple[float, float]:
    """MB/s down and up for TRANSFER_MB with curl (a process of its own, as a sandboxed tool is)."""
    total = TRANSFER_MB * 1024 * 1024
    via = ["--proxy", f"http://127.0.0.1:{proxy}"] if proxy else []
    common = ["curl", "-sS", "--fail", "--cacert", str(trust), *via, "--resolve", f"{HOST}:{port}:127.0.0.1"]
    body = Path(tempfile.mkstemp(prefix="egress-bench-")[1])
    body.write_bytes(os.urandom(1024 * 1024) * TRANSFER_MB)
    try:
        down = await _timed([*common, "-o", "/dev/null", f"https://{HOST}:{port}/bytes/{total}"])
        up = await _timed([*common, "--data-binary", f"@{body}", "-o", "/dev/null", f"https://{HOST}:{port}/sink"])
    finally:
        body.unlink()
    return TRANSFER_MB / down, TRANSFER_MB / up


async def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(*command, stderr=subprocess.PIPE)
    _, stderr = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"{command[0]} failed: {stderr.decode()[:300]}")
    return time.perf_counter() - started


def rows(figures: dict[str, float]) -> list[tuple[str, str]]:
    if not figures:
        return []
    f = figures
    return [
        (
            "HTTPS request, kept-alive connection",
            f"intercepted {f['intercepted_request_p50'] - f['tunnel_request_p50']:+.2f} ms p50 over a plain tunnel"
            f"   (direct {f['direct_request_p50']:.2f}, tunnel {f['tunnel_request_p50']:.2f}, "
            f"intercepted {f['intercepted_request_p50']:.2f} ms; p99 {f['intercepted_request_p99']:.2f} ms)",
        ),
        (
            "  new connection + first request",
            f"intercepted {f['intercepted_connect_p50'] - f['tunnel_connect_p50']:+.2f} ms p50 over a plain tunnel"
            f"   (direct {f['direct_connect_p50']:.2f}, tunnel {f['tunnel_connect_p50']:.2f}, "
            f"intercepted {f['intercepted_connect_p50']:.2f} ms)",
        ),
        (
            "  throughput down / up (curl)",
            f"direct {f['direct_down_mbps']:.0f}/{f['direct_up_mbps']:.0f}, tunnel {f['tunnel_down_mbps']:.0f}/"
            f"{f['tunnel_up_mbps']:.0f}, intercepted {f['intercepted_down_mbps']:.0f}/{f['intercepted_up_mbps']:.0f}"
            f" MB/s   ({TRANSFER_MB} MB each)",
        ),
        ("  a host's certificate, first use", f"{f['issue_ms']:.2f} ms (then cached per host)"),
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    with tempfile.TemporaryDirectory(prefix="egress-bench-") as directory:
        for label, value in rows(figures(Path(directory))):
            print(f"  {label.ljust(40)}  {value}")
