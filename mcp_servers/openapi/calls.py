"""An `openapi` server's operations as tools, served in the worker: the worker makes each call, with the
server's headers (secrets filled in), to its base URL only, after the egress check, never following a
redirect. What went wrong reaches the agent as a tool error that says why.
"""

import json
from typing import Any

import aiohttp
from claude_agent_sdk import McpSdkServerConfig, SdkMcpTool, create_sdk_mcp_server

from gateway.egress import EgressRefused
from mcp_servers.models import McpServer
from mcp_servers.openapi.operations import Operation, operations
from mcp_servers.openapi.problems import OpenApiProblem
from mcp_servers.openapi.request import build_request

# An answer reaches the model as a tool result: past this it would crowd the context, so the rest is cut.
# Reading stops at four times as many bytes, the most UTF-8 needs for that many characters.
MAX_ANSWER_CHARS = 100_000
# A call holds the agent's turn: slow APIs get two minutes, then the agent hears that it did not answer.
TIMEOUT = aiohttp.ClientTimeout(total=120, connect=10)


def openapi_server(
    server: McpServer, headers: dict[str, str], session: aiohttp.ClientSession, unavailable: str | None = None
) -> McpSdkServerConfig:
    """An in-process MCP server with one tool per operation of the server's document (its allowed ones).

    With `unavailable` (a secret it needs is missing), every tool answers that, so the agent learns why."""
    tools = [
        SdkMcpTool(
            operation.name,
            operation.description,
            operation.input_schema,
            _refuser(unavailable) if unavailable else _caller(server, operation, headers, session),
        )
        for operation in operations(server.openapi_document or {})
        if not server.allowed_tools or operation.name in server.allowed_tools
    ]
    return create_sdk_mcp_server(server.name, tools=tools)


def _caller(server: McpServer, operation: Operation, headers: dict[str, str], session: aiohttp.ClientSession) -> Any:
    async def call(arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            request = build_request(operation, server.base_url, arguments, headers=headers)
            async with session.request(
                request.method,
                request.url,
                params=request.query,
                headers=request.headers,
                data=None if request.json is None else json.dumps(request.json),
                allow_redirects=False,
                timeout=TIMEOUT,
            ) as response:
                text = (await response.content.read(MAX_ANSWER_CHARS * 4)).decode("utf-8", "replace")
        except OpenApiProblem as problem:
            return _answer(str(problem), error=True)
        except EgressRefused as refused:
            return _answer(
                f"{server.name} cannot be reached: {refused} Do not try to reach it another way.", error=True
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return _answer(f"{server.name} did not answer: {type(exc).__name__}: {exc}", error=True)
        text = text[:MAX_ANSWER_CHARS]
        if response.status >= 300:
            return _answer(f"{request.method} {operation.path} answered {response.status}: {text}", error=True)
        return _answer(text)

    return call


def _refuser(reason: str) -> Any:
    async def refuse(arguments: dict[str, Any]) -> dict[str, Any]:
        return _answer(reason, error=True)

    return refuse


def _answer(text: str, *, error: bool = False) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], **({"is_error": True} if error else {})}
