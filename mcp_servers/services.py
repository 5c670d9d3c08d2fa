"""Checking a tenant's MCP servers when they are saved, choosing a run's, and filling in their secrets."""

import asyncio
import json
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
from django.conf import settings

from gateway.egress import EgressRefused, check_url, guarded_connector
from mcp_servers.models import SECRET_REFERENCE, McpServer, Secret
from mcp_servers.openapi import MAX_BYTES, OpenApiProblem, load_document, operations
from mcp_servers.vault import reveal
from tenants.models import Tenant

BUILTIN_TOOLS = ("list_files", "present_files")  # mcp_servers.builtin


class ServerProblem(ValueError):
    """What is wrong with a server's settings, in words for whoever saves it: {field: message}."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class MissingSecret(Exception):
    """A header names a secret that neither the vault nor the message has."""


def check_server(server: McpServer) -> None:
    """Refuse settings that cannot work or would open a door; the URL check happens here for literal addresses."""
    kind = McpServer.Kind
    wanted = {
        kind.HTTP: {"url"},
        kind.SSE: {"url"},
        kind.STDIO: {"command"},
        kind.BUILTIN: set(),
        kind.OPENAPI: {"base_url", "openapi_document"},
    }[McpServer.Kind(server.kind)]
    for field in sorted(wanted):
        if not getattr(server, field):
            raise ServerProblem(field, f"A {server.kind} server needs `{field}`.")
    unused = {
        "url": server.url and server.kind not in (kind.HTTP, kind.SSE),
        "headers": server.headers and server.kind not in (kind.HTTP, kind.SSE, kind.OPENAPI),
        "command": server.command and server.kind != kind.STDIO,
        "args": server.args and server.kind != kind.STDIO,
        "base_url": server.base_url and server.kind != kind.OPENAPI,
    }
    for field, present in unused.items():
        if present:
            raise ServerProblem(field, f"A {server.kind} server takes no `{field}`.")
    for field in ("url", "base_url"):
        if getattr(server, field):
            try:
                check_url(getattr(server, field))
            except (EgressRefused, ValueError) as exc:
                raise ServerProblem(field, str(exc)) from None
    if server.kind == kind.STDIO and server.command not in settings.MCP_STDIO_COMMANDS:
        allowed = ", ".join(sorted(settings.MCP_STDIO_COMMANDS)) or "none (the operator sets MCP_STDIO_COMMANDS)"
        raise ServerProblem("command", f"{server.command!r} is not an allowed program. Allowed: {allowed}.")
    if server.kind == kind.OPENAPI:
        try:
            found = operations(load_document(json.dumps(server.openapi_document)))
        except OpenApiProblem as problem:
            raise ServerProblem("openapi_document", str(problem)) from None
        unknown = sorted(set(server.allowed_tools) - {operation.name for operation in found})
        if unknown:
            raise ServerProblem("allowed_tools", f"The document has no operation {unknown[0]!r}.")
    if server.kind == kind.BUILTIN:
        unknown = sorted(set(server.allowed_tools) - set(BUILTIN_TOOLS))
        if unknown:
            raise ServerProblem(
                "allowed_tools", f"No builtin tool is named {unknown[0]!r}: {', '.join(BUILTIN_TOOLS)}."
            )


def fetch_openapi_document(url: str) -> dict[str, Any]:
    """An OpenAPI document fetched once (when a server is saved), through the egress check, no redirects."""
    try:
        check_url(url)
        return asyncio.run(_fetch(url))
    except (EgressRefused, ValueError) as exc:
        raise ServerProblem("openapi_url", str(exc)) from None
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise ServerProblem("openapi_url", f"The document could not be fetched: {type(exc).__name__}: {exc}") from None


async def _fetch(url: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=20, connect=10)
    async with (
        aiohttp.ClientSession(connector=guarded_connector(), timeout=timeout) as session,
        session.get(url, allow_redirects=False) as response,
    ):
        if response.status != 200:
            raise ServerProblem(
                "openapi_url", f"{url} answered {response.status}; it must answer 200 with the document."
            )
        # The same cap as an upload's, read past by one byte to tell a document that is over it.
        raw = await response.content.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ServerProblem("openapi_url", f"The document is over {MAX_BYTES:,} bytes.")
    try:
        return load_document(raw)
    except OpenApiProblem as problem:
        raise ServerProblem("openapi_url", str(problem)) from None


def enabled_servers(tenant: Tenant) -> dict[str, McpServer]:
    """The tenant's usable servers by name; its own win a name shared with a granted platform server."""
    return {name: server for name, server in McpServer.objects.by_name(tenant).items() if server.enabled}


def check_choice(tenant: Tenant, names: Iterable[str]) -> list[str]:
    available = enabled_servers(tenant)
    chosen = list(dict.fromkeys(names))
    for name in chosen:
        if name not in available:
            choices = ", ".join(sorted(available)) or "none"
            raise ServerProblem("mcp_servers", f"No enabled MCP server is named {name!r}. Choose from: {choices}.")
    return chosen


def run_servers(
    tenant: Tenant, conversation_choice: list[str] | None, message_choice: list[str] | None
) -> list[McpServer]:
    """The servers a run gets: the message's choice, else the conversation's, else every enabled one."""
    available = enabled_servers(tenant)
    choice = message_choice if message_choice is not None else conversation_choice
    return [server for name, server in sorted(available.items()) if choice is None or name in choice]


def resolved_headers(server: McpServer, tenant: Tenant | None, run_tokens: Mapping[str, str]) -> dict[str, str]:
    """The server's headers with every `${name}` filled in: from the message's tokens, else the tenant's vault,
    else (for a platform server) the platform's."""
    names = server.secret_names()
    secrets: dict[str, str] = {name: run_tokens[name] for name in names if name in run_tokens}
    missing = names - set(secrets)
    if missing:
        stored = Secret.objects.filter(name__in=missing, tenant=tenant)
        if server.is_platform:
            stored = stored | Secret.objects.filter(name__in=missing, tenant__isnull=True)
        for secret in sorted(stored, key=lambda s: s.tenant_id is None):  # the tenant's own first
            secrets.setdefault(secret.name, reveal(secret))
    if missing := names - set(secrets):
        raise MissingSecret(
            f"MCP server {server.name!r} needs the secret(s) {', '.join(sorted(missing))}: "
            "store them in the tenant's secrets, or send them with the message as mcp_tokens."
        )
    return {key: SECRET_REFERENCE.sub(lambda m: secrets[m[1]], str(value)) for key, value in server.headers.items()}


def describe(server: McpServer) -> dict[str, Any]:
    """What a run's `run.started` says of a server: never a header value."""
    return {"name": server.name, "kind": server.kind, "platform": server.is_platform}
