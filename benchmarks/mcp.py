"""What the gateway's MCP relay adds to a tool call: the same `tools/call`, directly and through a run's gateway.

A real MCP server (the `mcp` package's own, over streamable HTTP, answering only with its secret
header) listens on 127.0.0.2, as in tests/mcp_servers/test_runs.py. A real MCP client (`ClientSession`
over `streamable_http_client`) opens two sessions before any timing: one straight to the server with
the secret, one through a `ModelGateway` on a loopback port whose `McpRelay` adds the secret and
relays through the egress-checked connector, the client sending only the run's token (as the
sandboxed CLI does). Then 200 calls of the `echo` tool each way, interleaved, after 20 warm-ups;
only the calls are timed (goal: under 2 ms added at p50).
"""

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from benchmarks.measure import percentile, size

CALLS = size(200, 5)
WARM_UP = size(20, 1)
HOST = "127.0.0.2"
SECRET = "bench-mcp-secret"
RELAYED_NAME = "echo"


class ClientResets(logging.Filter):
    """Counts, and keeps out of the bench's output, aiohttp's error log of a relayed answer whose client
    had already closed it (the MCP client closes an SSE answer once it holds the reply, which may be
    before the relay writes its end)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ConnectionResetError):
            self.count += 1
            return False
        return True


@contextlib.contextmanager
def quiet(resets: ClientResets) -> Iterator[None]:
    """No per-request log lines (the MCP client's httpx, uvicorn's) between the bench's own output."""
    loggers = [logging.getLogger(name) for name in ("httpx", "httpx2", "mcp", "uvicorn", "uvicorn.error")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    logging.getLogger("aiohttp.server").addFilter(resets)
    try:
        yield
    finally:
        logging.getLogger("aiohttp.server").removeFilter(resets)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class ToolServer:
    """A real MCP server over streamable HTTP, in a thread of its own, that answers only with the secret header."""

    def __init__(self) -> None:
        import uvicorn
        from mcp.server.mcpserver import MCPServer

        server = MCPServer("bench-tools")

        @server.tool()
        def echo(text: str) -> str:
            """Say the text back."""
            return f"echo: {text}"

        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = probe.getsockname()[1]
        self.url = f"http://{HOST}:{port}/mcp"
        app = self._guarded(server.streamable_http_app(host=HOST))
        self.server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="bench-mcp-server")

    @staticmethod
    def _guarded(app: Any) -> Any:
        async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http" and (b"authorization", f"Bearer {SECRET}".encode()) not in scope["headers"]:
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"no"})
                return
            await app(scope, receive, send)

        return guarded

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the bench's MCP server did not start on {HOST}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def figures(tenant: Any, work: Path) -> dict[str, float]:
    from django.test import override_settings

    from benchmarks.sandbox import bench_run
    from runs.services import create_conversation

    server = ToolServer()
    resets = ClientResets()
    with quiet(resets), override_settings(EGRESS_ALLOWED_NETWORKS=[f"{HOST}/32"]):
        server.start()
        try:
            conversation = create_conversation(tenant, title="bench: MCP relay")
            run = bench_run(conversation, "bench: MCP relay")
            direct, relayed = asyncio.run(_calls(run, server.url))
        finally:
            server.stop()
    return {
        "calls": len(direct),
        "direct_p50": percentile(direct, 0.5),
        "direct_p99": percentile(direct, 0.99),
        "relayed_p50": percentile(relayed, 0.5),
        "relayed_p99": percentile(relayed, 0.99),
        "client_resets": resets.count,
    }


async def _calls(run: Any, url: str) -> tuple[list[float], list[float]]:
    """Milliseconds per `tools/call`, directly and through the run's gateway, interleaved."""
    from gateway.mcp import McpRelay, RelayedServer
    from gateway.server import ModelGateway

    relay = McpRelay(
        [
            RelayedServer(
                name=RELAYED_NAME,
                kind="http",
                url=url,
                headers={"Authorization": f"Bearer {SECRET}"},
                allowed_tools=["echo"],  # so the relay also checks each call's tool, its costlier path
            )
        ]
    )
    async with ModelGateway(run, mcp=relay) as gateway, AsyncExitStack() as stack:
        # Both sessions established (initialize, initialized) before anything is timed.
        direct = await _session(stack, url, {"Authorization": f"Bearer {SECRET}"})
        relayed = await _session(stack, f"{gateway.base_url}/mcp/{RELAYED_NAME}", {"X-Run-Token": gateway.token})
        timings: dict[Any, list[float]] = {direct: [], relayed: []}
        for n in range(WARM_UP + CALLS):
            # Interleaved, alternating which goes first, so that machine noise hits both alike.
            for session in (direct, relayed) if n % 2 else (relayed, direct):
                started = time.perf_counter()
                result = await session.call_tool("echo", {"text": f"call {n}"})
                elapsed = (time.perf_counter() - started) * 1000
                if result.is_error or getattr(result.content[0], "text", None) != f"echo: call {n}":
                    raise RuntimeError(f"the echo tool answered {result!r}")
                if n >= WARM_UP:
                    timings[session].append(elapsed)
    return timings[direct], timings[relayed]


async def _session(stack: AsyncExitStack, url: str, headers: dict[str, str]) -> Any:
    import httpx2  # the mcp package's HTTP client, which it documents as the way to send headers
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)))
    read, write = await stack.enter_async_context(streamable_http_client(url, http_client=http))
    session = await stack.enter_async_context(ClientSession(read, write))
    await session.initialize()
    return session


def rows(figures: dict[str, float]) -> list[tuple[str, str]]:
    if not figures:
        return []
    added_p50 = figures["relayed_p50"] - figures["direct_p50"]
    added_p99 = figures["relayed_p99"] - figures["direct_p99"]
    return [
        (
            "MCP tool call through the gateway",
            f"{added_p50:+.2f} ms p50   (direct {figures['direct_p50']:.2f} ms, relayed {figures['relayed_p50']:.2f} ms;"
            f" p99 {added_p99:+.2f} ms; goal < 2 ms)",
        ),
        (
            "  MCP tool call p99",
            f"direct {figures['direct_p99']:.2f} ms, relayed {figures['relayed_p99']:.2f} ms"
            f"   ({figures['calls']:.0f} calls each way, interleaved)",
        ),
        (
            "  relayed answers cut short",
            f"{figures['client_resets']:.0f}   (the client had closed the answer when the relay wrote its end;"
            " aiohttp logs each as an error)",
        ),
    ]
