"""Trying a server without a run: connect as a run would and list its tools (`POST …/mcp-servers/{name}/test`).

`http` and `sse` servers are reached exactly as in a run: through the gateway's relay (the real
headers, the egress check, no redirects), on a loopback port of this process for the length of the
test, guarded by a token of its own. A `stdio` server only ever starts inside a run's sandbox.
"""

import asyncio
import secrets
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx2
from aiohttp import web
from mcp.client.session import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from gateway.mcp import McpRelay, RelayedServer
from mcp_servers.builtin import TOOL_DESCRIPTIONS
from mcp_servers.models import McpServer
from mcp_servers.openapi import operations
from mcp_servers.services import MissingSecret, resolved_headers
from tenants.models import Tenant

# A probe answers an operator's request (REST or admin) that waits for it: long enough for a server's
# connect, initialize and tools/list, short enough that a server that never answers gives a reason
# rather than a hung page.
TIMEOUT_SECONDS = 20


@dataclass
class ProbeResult:
    status: str  # "connected" or "failed"
    tools: list[dict[str, str]] = field(default_factory=list)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "tools": self.tools, **({"reason": self.reason} if self.reason else {})}


def probe(server: McpServer, tenant: Tenant | None, tokens: dict[str, str]) -> ProbeResult:
    """Connect to the server as a run of `tenant` would (with `tokens` as a message's) and list its tools."""
    kind = McpServer.Kind
    if server.kind == kind.STDIO:
        return ProbeResult("failed", reason="A stdio server starts only inside a run's sandbox: try it in a message.")
    if server.kind == kind.BUILTIN:
        return ProbeResult("connected", _allowed(server, list(TOOL_DESCRIPTIONS.items())))
    if server.kind == kind.OPENAPI:
        found = [(operation.name, operation.description) for operation in operations(server.openapi_document or {})]
        return ProbeResult("connected", _allowed(server, found))
    try:
        headers = resolved_headers(server, tenant, tokens)
    except MissingSecret as missing:
        return ProbeResult("failed", reason=str(missing))
    return asyncio.run(_list_remote_tools(server, headers))


async def _list_remote_tools(server: McpServer, headers: dict[str, str]) -> ProbeResult:
    relayed = RelayedServer(server.name, server.kind, server.url, headers, list(server.allowed_tools))
    relay, token = McpRelay([relayed]), secrets.token_urlsafe(24)

    async def guarded(request: web.BaseRequest) -> web.StreamResponse:
        if request.headers.get("X-Run-Token") != token:
            return web.Response(status=403)
        return await relay.serve(request)

    runner = web.ServerRunner(web.Server(guarded, access_log=None), handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/mcp/{server.name}"
        async with asyncio.timeout(TIMEOUT_SECONDS), AsyncExitStack() as stack:
            http = await stack.enter_async_context(httpx2.AsyncClient(headers={"X-Run-Token": token}, timeout=30))
            if server.kind == McpServer.Kind.SSE:
                read, write = await stack.enter_async_context(sse_client(url, headers={"X-Run-Token": token}))
            else:
                read, write = await stack.enter_async_context(streamable_http_client(url, http_client=http))
            session = await stack.enter_async_context(ClientSession(read, write))
            started = await session.initialize()
            if started.server_info.version == "unreachable":  # the relay answered for it (gateway.mcp)
                return ProbeResult("failed", reason=started.instructions or "unreachable")
            listed = await session.list_tools()
        tools = [(tool.name, tool.description or "") for tool in listed.tools]
        return ProbeResult("connected", _allowed(server, tools))
    except Exception as exc:  # any way a server can fail to connect is the answer
        return ProbeResult("failed", reason=_reason(exc))
    finally:
        await relay.close()
        await runner.cleanup()


def _allowed(server: McpServer, tools: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [
        {"name": name, "description": description}
        for name, description in tools
        if not server.allowed_tools or name in server.allowed_tools
    ]


def _reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return f"No answer within {TIMEOUT_SECONDS} s."
    return f"{type(exc).__name__}: {exc}"[:500]
