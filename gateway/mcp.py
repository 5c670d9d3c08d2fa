"""The gateway's MCP relay: how a sandboxed CLI reaches its run's `http` and `sse` MCP servers.

The CLI has no network. Its MCP configuration points each such server at the run's gateway
(`/mcp/<name>`, with the run's token); the relay checks the token, forwards the request to the
server's own URL with the server's real headers (secrets filled in outside the sandbox), and streams
the answer back as it comes. It connects only to the address the server names, after the egress
check (`gateway.egress`), never follows a redirect, and refuses calls of tools the server does
not allow. When the server cannot be reached, the relay answers as the server would with the reason
(its `instructions`, and an error for every tool call), so the agent learns why instead of trying
another way.
"""

import asyncio
import json
import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp import web

from gateway.egress import EgressRefused, guarded_connector

logger = logging.getLogger(__name__)

PREFIX = "/mcp/"
STAND_IN_ENDPOINT = "unreachable-messages"
MAX_REQUEST_BYTES = 4 * 1024 * 1024
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Accept", "Mcp-Session-Id", "Mcp-Protocol-Version", "Last-Event-ID")
FORWARDED_RESPONSE_HEADERS = ("Content-Type", "Mcp-Session-Id", "Cache-Control")
TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=300)


@dataclass
class RelayedServer:
    """One `http` or `sse` server of the run, as the relay sees it (headers already hold their secrets)."""

    name: str
    kind: str
    url: str
    headers: dict[str, str]
    allowed_tools: list[str]
    unavailable: str | None = None  # why the run cannot use it (a secret it needs is missing)
    endpoints: set[str] = field(default_factory=set)  # sse: the message paths the server announced


class McpRelay:
    def __init__(self, servers: list[RelayedServer]) -> None:
        self.servers = {server.name: server for server in servers}
        self._session: aiohttp.ClientSession | None = None
        # An unreachable sse server's stand-in sessions: their answers wait here for its event stream.
        self._stand_ins: dict[str, tuple[asyncio.Queue[dict[str, Any]], str]] = {}

    def cli_config(self, base_url: str, token: str) -> dict[str, Any]:
        """The CLI's MCP configuration for these servers: the gateway's address and the run's token, no secret."""
        return {
            name: {"type": server.kind, "url": f"{base_url}{PREFIX}{name}", "headers": {"X-Run-Token": token}}
            for name, server in self.servers.items()
        }

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=guarded_connector(), timeout=TIMEOUT, auto_decompress=False)
        return self._session

    async def serve(self, request: web.BaseRequest) -> web.StreamResponse:
        name, _, rest = request.path.removeprefix(PREFIX).partition("/")
        server = self.servers.get(name)
        if server is None:
            return _json_error(404, f"This run has no MCP server named {name!r}.")
        if rest == STAND_IN_ENDPOINT:
            return await self._stand_in_message(request, server)
        target = self._target(server, rest, request.query_string)
        if target is None:
            return _json_error(404, f"MCP server {name!r} has no such endpoint.")
        body = await _read_body(request)
        if len(body) > MAX_REQUEST_BYTES:
            return _json_error(413, "The MCP request is too large.")
        if server.unavailable:
            return await self._refuse(request, server, body, server.unavailable)
        refused = _refused_tool_call(server, body)
        if refused is not None:
            return refused
        headers = {key: request.headers[key] for key in FORWARDED_REQUEST_HEADERS if key in request.headers}
        headers.update(server.headers)
        try:
            upstream = await self.session().request(
                request.method, target, data=body or None, headers=headers, allow_redirects=False
            )
        except (EgressRefused, aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = str(exc) if isinstance(exc, EgressRefused) else f"{type(exc).__name__}: {exc}"
            logger.warning("MCP server %s of a run cannot be reached: %s", server.name, reason)
            return await self._refuse(request, server, body, reason)
        try:
            response = web.StreamResponse(status=upstream.status)
            for key in FORWARDED_RESPONSE_HEADERS:
                if key in upstream.headers:
                    response.headers[key] = upstream.headers[key]
            await response.prepare(request)
            sse = upstream.headers.get("Content-Type", "").startswith("text/event-stream") and server.kind == "sse"
            announcement = EndpointAnnouncement(server) if sse else None
            async for chunk in upstream.content.iter_any():
                if announcement is not None and not announcement.done:
                    chunk = announcement.feed(chunk)
                if chunk:
                    await response.write(chunk)
            if announcement is not None and not announcement.done:
                await response.write(announcement.rest())
            await response.write_eof()
        except ConnectionResetError:
            # The CLI stops reading an answer as soon as it has its reply: nothing is lost.
            logger.debug("The CLI closed its MCP stream of %s first", server.name)
        except (aiohttp.ClientError, TimeoutError) as exc:  # the server (or the run's end) closed its stream
            logger.debug("MCP stream of %s ended: %s", server.name, exc)
        finally:
            upstream.release()
        return response

    async def _refuse(
        self, request: web.BaseRequest, server: RelayedServer, body: bytes, reason: str
    ) -> web.StreamResponse:
        """Stand in for a server the run cannot reach, in its own transport, saying why."""
        if not (server.kind == "sse" and request.method == "GET"):
            return _unreachable(server, body, reason)
        # An sse client opens the event stream first and posts its messages where the stream says:
        # the stand-in's endpoint, whose answers (with the reason) come back on this stream.
        session_id = secrets.token_urlsafe(16)
        answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._stand_ins[session_id] = (answers, reason)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        try:
            await response.prepare(request)
            endpoint = f"{PREFIX}{server.name}/{STAND_IN_ENDPOINT}?session_id={session_id}"
            await response.write(f"event: endpoint\ndata: {endpoint}\n\n".encode())
            while True:
                answer = await answers.get()
                await response.write(f"event: message\ndata: {json.dumps(answer)}\n\n".encode())
        except ConnectionResetError:
            pass  # the CLI is gone
        finally:
            self._stand_ins.pop(session_id, None)
        return response

    async def _stand_in_message(self, request: web.BaseRequest, server: RelayedServer) -> web.Response:
        stand_in = self._stand_ins.get(request.query.get("session_id", ""))
        if stand_in is None:
            return _json_error(404, "No such session.")
        answers, reason = stand_in
        body = await _read_body(request)
        for answer in _unreachable_answers(server, body[:MAX_REQUEST_BYTES], reason):
            answers.put_nowait(answer)
        return web.Response(status=202)

    def _target(self, server: RelayedServer, rest: str, query: str) -> str | None:
        """The server's own URL, or (sse) a message endpoint it announced; nothing else of its host."""
        if not rest:
            return server.url + (("&" if "?" in server.url else "?") + query if query else "")
        path = "/" + rest + ("?" + query if query else "")
        return urljoin(server.url, path) if path in server.endpoints else None


class EndpointAnnouncement:
    """An sse server's stream begins by announcing where to post messages (`event: endpoint`); the CLI
    must post them to the relay instead. The stream's start is held back until that event is whole
    (it may come in pieces), rewritten, and from then on the stream passes as it comes."""

    EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
    LINE_END = re.compile(r"\r\n|\n|\r")
    MAX_HELD = 64 * 1024  # a stream that announces nothing by then is passed on as it is

    def __init__(self, server: RelayedServer) -> None:
        self.server = server
        self.held = bytearray()
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """What of the stream can go to the CLI now: nothing until the announcement is whole."""
        self.held += chunk
        passed = bytearray()
        while not self.done and (end := self.EVENT_END.search(self.held)):
            event, self.held = bytes(self.held[: end.end()]), self.held[end.end() :]
            passed += self._rewritten(event)
        if not self.done and len(self.held) > self.MAX_HELD:
            self.done = True
        if self.done:
            passed += self.held
            self.held = bytearray()
        return bytes(passed)

    def rest(self) -> bytes:
        """What was held when the stream ended."""
        self.done = True
        rest, self.held = bytes(self.held), bytearray()
        return rest

    def _rewritten(self, event: bytes) -> bytes:
        text = event.decode("utf-8", "replace")
        lines = self.LINE_END.split(text)
        if not any(_field(line, "event") == "endpoint" for line in lines):
            return event
        self.done = True
        newline = self.LINE_END.search(text)
        for index, line in enumerate(lines):
            data = _field(line, "data")
            if data is not None:
                announced = urlsplit(urljoin(self.server.url, data.strip()))
                path = announced.path + ("?" + announced.query if announced.query else "")
                self.server.endpoints.add(path)
                lines[index] = f"data: {PREFIX}{self.server.name}{path}"
        return (newline.group() if newline else "\n").join(lines).encode()


def _field(line: str, name: str) -> str | None:
    """The value of an event stream's `name:` line (one space after the colon is not part of it)."""
    if not line.startswith(name + ":"):
        return None
    value = line[len(name) + 1 :]
    return value[1:] if value.startswith(" ") else value


async def _read_body(request: web.BaseRequest) -> bytes:
    """The request's body, up to one byte past the limit. (`content.read(n)` alone returns only what has
    arrived so far: a large body would be cut short, and an oversized one would pass the limit.)"""
    body = bytearray()
    while len(body) <= MAX_REQUEST_BYTES:
        chunk = await request.content.read(MAX_REQUEST_BYTES + 1 - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _parsed(body: bytes) -> list[dict[str, Any]]:
    """The body's JSON-RPC messages; ValueError (invalid UTF-8 included) or RecursionError when it is not JSON."""
    parsed = json.loads(body) if body else []
    items = parsed if isinstance(parsed, list) else [parsed]
    return [item for item in items if isinstance(item, dict)]


def _messages(body: bytes) -> list[dict[str, Any]]:
    try:
        return _parsed(body)
    except (ValueError, RecursionError):
        return []


def _refused_tool_call(server: RelayedServer, body: bytes) -> web.Response | None:
    if not server.allowed_tools:
        return None
    allowed = ", ".join(server.allowed_tools)
    try:
        messages = _parsed(body)
    except (ValueError, RecursionError):
        # What the relay cannot read it cannot check, and a server may read it more leniently (invalid
        # UTF-8 as U+FFFD, a trailing comma) and run a tool it does not allow: refuse it unforwarded.
        told = f"Parse error: the relay forwards only valid JSON to a server limited to these tools: {allowed}."
        return web.json_response({"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": told}}, status=400)
    for message in messages:
        params = message.get("params")
        name = params.get("name") if isinstance(params, dict) else None
        if message.get("method") == "tools/call" and name not in server.allowed_tools:
            return web.json_response(
                {
                    "jsonrpc": "2.0",
                    "id": message.get("id"),
                    "result": {
                        "isError": True,
                        "content": [{"type": "text", "text": f"This server allows only these tools: {allowed}."}],
                    },
                }
            )
    return None


def _unreachable(server: RelayedServer, body: bytes, reason: str) -> web.Response:
    """Answer as the server would, so that the agent reads why it is unreachable and does not work around it."""
    answers = _unreachable_answers(server, body, reason)
    if not answers:
        return web.Response(status=202)
    return web.json_response(answers[0] if len(answers) == 1 else answers)


def _unreachable_answers(server: RelayedServer, body: bytes, reason: str) -> list[dict[str, Any]]:
    told = f"MCP server {server.name!r} is unreachable: {reason} Do not try to reach it another way."
    answers: list[dict[str, Any]] = []
    for message in _messages(body):
        if "id" not in message:
            continue  # a notification: nothing to answer
        method = message.get("method")
        if method == "initialize":
            result: dict[str, Any] = {
                "protocolVersion": (message.get("params") or {}).get("protocolVersion", "2025-06-18"),
                "capabilities": {"tools": {}},
                "serverInfo": {"name": server.name, "version": "unreachable"},
                "instructions": told,
            }
        elif method == "tools/list":
            # The tools it would have had (its allowed ones, when known), each answering with the reason.
            names = server.allowed_tools or ["unavailable"]
            result = {
                "tools": [{"name": name, "description": told, "inputSchema": {"type": "object"}} for name in names]
            }
        elif method == "tools/call":
            result = {"isError": True, "content": [{"type": "text", "text": told}]}
        else:
            answers.append({"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32603, "message": told}})
            continue
        answers.append({"jsonrpc": "2.0", "id": message["id"], "result": result})
    return answers


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"status": status, "message": message}}, status=status)
