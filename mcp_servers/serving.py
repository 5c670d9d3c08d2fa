"""A run's MCP servers: chosen for it, their secrets filled in outside the sandbox, each served its way.

- `http`, `sse`: through the run's gateway (`gateway.mcp.McpRelay`), which adds the real headers;
  the CLI's configuration holds only the gateway's address and the run's token.
- `stdio`: the allow-listed program, started by the CLI inside the sandbox, with no secret at all.
- `builtin`: the platform's tools, in the worker (`mcp_servers.builtin`).
- `openapi`: each operation a tool, called by the worker (`mcp_servers.openapi.calls`).

Secrets come from the message's `mcp_tokens` (kept, encrypted, on the run until it ends), else the
vault.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from django.conf import settings

from conversations.events import EventItem
from conversations.models import Run
from gateway.egress import guarded_connector
from gateway.mcp import McpRelay, RelayedServer
from mcp_servers.builtin import builtin_server
from mcp_servers.models import McpServer
from mcp_servers.openapi.calls import openapi_server
from mcp_servers.services import MissingSecret, describe, resolved_headers, run_servers
from mcp_servers.vault import unseal
from workspaces.services import RunWorkspace

RELAYED = (McpServer.Kind.HTTP, McpServer.Kind.SSE)
WITH_HEADERS = (*RELAYED, McpServer.Kind.OPENAPI)


@dataclass
class RunMcp:
    servers: list[McpServer]
    relay: McpRelay
    in_sandbox: dict[str, Any] = field(default_factory=dict)  # stdio servers, as the CLI starts them
    in_worker: dict[str, Any] = field(default_factory=dict)  # builtin servers, served in-process
    problems: dict[str, str] = field(default_factory=dict)  # server name → why it is not available
    session: aiohttp.ClientSession | None = None  # the worker's calls of openapi servers

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    def summary(self) -> list[dict[str, Any]]:
        return [
            {**describe(server), **({"problem": self.problems[server.name]} if server.name in self.problems else {})}
            for server in self.servers
        ]

    def cli_config(self, gateway_config: dict[str, Any]) -> dict[str, Any]:
        return {**gateway_config, **self.in_sandbox, **self.in_worker}


def servers_of(
    run: Run, agent_choice: list[str] | None = None
) -> tuple[list[McpServer], dict[str, dict[str, str]], dict[str, str]]:
    """The run's servers, the headers of those the gateway relays (secrets filled in), and what is missing.

    `agent_choice` is its agent profile's servers (None: all), which the conversation's choice overrides."""
    conversation = run.conversation
    choice = conversation.mcp_servers if conversation.mcp_servers is not None else agent_choice
    servers = run_servers(conversation.tenant, choice, run.mcp_servers)
    tokens = unseal(bytes(run.mcp_tokens)) if run.mcp_tokens else {}
    headers, problems = {}, {}
    for server in servers:
        if server.kind in WITH_HEADERS:
            try:
                headers[server.name] = resolved_headers(server, conversation.tenant, tokens)
            except MissingSecret as missing:
                problems[server.name] = str(missing)
    return servers, headers, problems


def prepare_mcp(
    servers: list[McpServer],
    headers: dict[str, dict[str, str]],
    problems: dict[str, str],
    workspace: RunWorkspace,
    emit: Callable[[EventItem], None],
) -> RunMcp:
    relayed = [
        RelayedServer(
            name=server.name,
            kind=server.kind,
            url=server.url,
            headers=headers.get(server.name, {}),
            allowed_tools=list(server.allowed_tools),
            unavailable=problems.get(server.name),
        )
        for server in servers
        if server.kind in RELAYED
    ]
    mcp = RunMcp(servers, McpRelay(relayed), problems=dict(problems))
    for server in servers:
        if server.kind == McpServer.Kind.STDIO:
            program = settings.MCP_STDIO_COMMANDS.get(server.command)
            if program is None:
                mcp.problems[server.name] = f"{server.command!r} is no longer an allowed program (MCP_STDIO_COMMANDS)."
                continue
            mcp.in_sandbox[server.name] = {"type": "stdio", "command": program, "args": list(server.args), "env": {}}
        elif server.kind == McpServer.Kind.BUILTIN:
            mcp.in_worker[server.name] = builtin_server(server.name, workspace, emit, list(server.allowed_tools))
        elif server.kind == McpServer.Kind.OPENAPI:
            if mcp.session is None:
                mcp.session = aiohttp.ClientSession(connector=guarded_connector())
            mcp.in_worker[server.name] = openapi_server(
                server, headers.get(server.name, {}), mcp.session, unavailable=problems.get(server.name)
            )
    return mcp
