"""The gateway's MCP relay, as a unit: it forwards a run's calls to the server's own URL with the real
headers and streams the answer back, refuses tools the server does not allow, keeps to the endpoints an sse
server announced, and answers for a server it may not or cannot reach with the reason.

Only loopback is dialed: the upstream servers listen on 127.0.0.2 (allowed by EGRESS_ALLOWED_NETWORKS) and
127.0.0.1 (refused), and the relay itself on 127.0.0.1."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import RawTestServer, TestClient
from multidict import CIMultiDict
from pytest_django.fixtures import Settings

from conversations.models import Run
from gateway.mcp import MAX_REQUEST_BYTES, McpRelay, RelayedServer
from gateway.server import ModelGateway
from tenants.models import Tenant
from tests.factories import RunFactory

pytestmark = pytest.mark.asyncio

SSE_ANNOUNCEMENT = b"event: endpoint\ndata: /messages/?session_id=abc\n\n"


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class Upstream:
    """An MCP-ish server on one loopback address that records every connection and request it gets."""

    host: str
    port: int = 0
    connections: int = 0
    requests: list[Seen] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    announcement: bytes = SSE_ANNOUNCEMENT
    split_announcement: int = 0  # > 0: the announcement goes out in two writes, cut there

    def url(self, path: str = "/mcp") -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.content.read()  # to the end, without request.read()'s 1 MiB limit
        self.requests.append(Seen(request.method, request.path_qs, CIMultiDict(request.headers), body))
        if request.method == "GET" and request.path == "/sse":
            return await self.stream(request, [self.announcement], split=self.split_announcement)
        if request.path.startswith("/messages/"):
            return web.Response(status=202, text="Accepted")
        # Leniently, as a server that decodes its body with replacement characters would.
        message = json.loads(body.decode("utf-8", "replace"))
        if isinstance(message, dict) and message.get("method") == "stream":
            return await self.stream(request, [b"event: message\ndata: first\n\n", b"event: message\ndata: second\n\n"])
        answer = {"jsonrpc": "2.0", "id": None, "result": {"received_bytes": len(body)}}
        return web.json_response(answer, headers={"Mcp-Session-Id": "session-1", "Set-Cookie": "upstream=1"})

    async def stream(self, request: web.BaseRequest, events: list[bytes], split: int = 0) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        if split:
            await response.write(events[0][:split])
            await asyncio.sleep(0.1)  # the relay reads the first piece alone
            events = [events[0][split:], *events[1:]]
        for index, event in enumerate(events):
            if index:  # the rest waits until the test has read the first event through the relay
                await asyncio.wait_for(self.gate.wait(), 5)
            await response.write(event)
        await response.write_eof()
        return response


StartUpstream = Callable[[str], Awaitable[Upstream]]
Relay = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest_asyncio.fixture
async def start_upstream() -> AsyncIterator[StartUpstream]:
    started: list[tuple[asyncio.Server, web.Server]] = []

    async def start(host: str) -> Upstream:
        upstream = Upstream(host)
        handler = web.Server(upstream.answer)

        def accept() -> asyncio.Protocol:
            upstream.connections += 1
            return handler()

        try:
            server = await asyncio.get_running_loop().create_server(accept, host, 0)
        except OSError as error:
            pytest.skip(f"cannot bind a test server to {host}: {error}")
        upstream.port = server.sockets[0].getsockname()[1]
        started.append((server, handler))
        return upstream

    yield start

    for server, handler in started:
        server.close()
        await handler.shutdown(timeout=1)
        await server.wait_closed()


@pytest_asyncio.fixture
async def relay() -> AsyncIterator[Relay]:
    """Serves an McpRelay of the given servers on 127.0.0.1, as the run's gateway does under /mcp/<name>."""
    running: list[tuple[TestClient[Any, Any], McpRelay]] = []

    async def serve(*servers: RelayedServer) -> TestClient[Any, Any]:
        mcp = McpRelay(list(servers))
        client: TestClient[Any, Any] = TestClient(RawTestServer(mcp.serve, host="127.0.0.1"))
        await client.start_server()
        running.append((client, mcp))
        return client

    yield serve

    for client, mcp in running:
        await mcp.close()
        await client.close()


@pytest.fixture(autouse=True)
def only_127_0_0_2(settings: Settings) -> None:
    settings.EGRESS_ALLOWED_NETWORKS = ["127.0.0.2/32"]


@pytest_asyncio.fixture
async def upstream(start_upstream: StartUpstream) -> Upstream:
    return await start_upstream("127.0.0.2")


def tools(upstream: Upstream, **fields: Any) -> RelayedServer:
    settings: dict[str, Any] = {
        "name": "tools",
        "kind": "http",
        "url": upstream.url("/mcp"),
        "headers": {"Authorization": "Bearer real"},
        "allowed_tools": ["echo"],
        **fields,
    }
    return RelayedServer(**settings)


def call(tool: str, request_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": tool, "arguments": {}}}


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "cli", "version": "1"}},
}


# --- Forwarding --------------------------------------------------------------------------------------------


async def test_a_call_reaches_the_server_with_its_real_headers_and_the_body_intact(
    relay: Relay, upstream: Upstream
) -> None:
    client = await relay(tools(upstream))
    body = json.dumps(call("echo", 7)).encode()

    response = await client.post(
        "/mcp/tools?probe=1",
        data=body,
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Mcp-Session-Id": "session-1",
            "Authorization": "Bearer from-the-sandbox",
            "X-Run-Token": "run_token",
            "Cookie": "a=b",
        },
    )

    assert response.status == 200
    assert await response.json() == {"jsonrpc": "2.0", "id": None, "result": {"received_bytes": len(body)}}
    assert response.headers["Mcp-Session-Id"] == "session-1"
    assert "Set-Cookie" not in response.headers
    [seen] = upstream.requests
    assert (seen.method, seen.path_qs, seen.body) == ("POST", "/mcp?probe=1", body)
    assert seen.headers.getall("Authorization") == ["Bearer real"]
    assert seen.headers["Mcp-Session-Id"] == "session-1"
    assert seen.headers["Accept"] == "application/json, text/event-stream"
    assert "X-Run-Token" not in seen.headers and "Cookie" not in seen.headers


async def test_a_large_body_reaches_the_server_whole(relay: Relay, upstream: Upstream) -> None:
    client = await relay(tools(upstream))
    message = call("echo")
    message["params"]["arguments"] = {"text": "x" * (3 * 1024 * 1024)}
    body = json.dumps(message).encode()

    response = await client.post("/mcp/tools", data=body, headers={"Content-Type": "application/json"})

    assert response.status == 200
    assert (await response.json())["result"] == {"received_bytes": len(body)}
    assert upstream.requests[0].body == body


async def test_a_body_over_the_limit_is_refused_and_not_forwarded(relay: Relay, upstream: Upstream) -> None:
    client = await relay(tools(upstream))

    response = await client.post("/mcp/tools", data=b"[" + b" " * MAX_REQUEST_BYTES + b"]")

    assert response.status == 413
    assert upstream.requests == []


async def test_the_answer_streams_back_as_it_comes(relay: Relay, upstream: Upstream) -> None:
    client = await relay(tools(upstream))

    response = await client.post("/mcp/tools", json={"jsonrpc": "2.0", "id": 1, "method": "stream"})
    first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)  # before the server sends the rest
    upstream.gate.set()
    rest = await asyncio.wait_for(response.content.read(), 5)

    assert response.headers["Content-Type"] == "text/event-stream"
    assert first == b"event: message\ndata: first\n\n"
    assert rest == b"event: message\ndata: second\n\n"


async def test_a_server_that_is_not_the_runs_is_404(relay: Relay, upstream: Upstream) -> None:
    client = await relay(tools(upstream))

    response = await client.post("/mcp/other", json=call("echo"))

    assert response.status == 404
    assert "no MCP server named 'other'" in (await response.json())["error"]["message"]
    assert upstream.requests == []


# --- Allowed tools -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        json.dumps(call("other", 5)).encode(),
        json.dumps([call("echo", 4), call("other", 5)]).encode(),
        json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": ["other"]}).encode(),
    ],
    ids=["single", "in a batch", "params not an object"],
)
async def test_a_tool_the_server_does_not_allow_is_answered_by_the_relay(
    relay: Relay, upstream: Upstream, body: bytes
) -> None:
    client = await relay(tools(upstream))

    response = await client.post("/mcp/tools", data=body, headers={"Content-Type": "application/json"})

    assert response.status == 200
    answer = await response.json()
    assert answer == {
        "jsonrpc": "2.0",
        "id": 5,
        "result": {
            "isError": True,
            "content": [{"type": "text", "text": "This server allows only these tools: echo."}],
        },
    }
    assert upstream.requests == []
    assert upstream.connections == 0


@pytest.mark.parametrize(
    "body",
    [
        # Invalid UTF-8, which a lenient server reads as U+FFFD and then runs the tool.
        b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"other","arguments":{"x":"\xff"}}}',
        b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"other"},}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["invalid utf-8", "trailing comma", "too deep"],
)
async def test_a_body_the_relay_cannot_read_is_not_forwarded_to_a_server_limited_to_some_tools(
    relay: Relay, upstream: Upstream, body: bytes
) -> None:
    client = await relay(tools(upstream))

    response = await client.post("/mcp/tools", data=body, headers={"Content-Type": "application/json"})

    assert response.status == 400
    answer = await response.json()
    assert (answer["id"], answer["error"]["code"]) == (None, -32700)
    assert answer["error"]["message"].endswith("limited to these tools: echo.")
    assert upstream.requests == []
    assert upstream.connections == 0


async def test_an_allowed_tool_and_other_methods_are_forwarded(relay: Relay, upstream: Upstream) -> None:
    client = await relay(tools(upstream))

    for message in (INITIALIZE, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, call("echo", 3)):
        response = await client.post("/mcp/tools", json=message)
        assert response.status == 200, await response.text()

    assert [json.loads(seen.body)["method"] for seen in upstream.requests] == ["initialize", "tools/list", "tools/call"]


async def test_every_tool_is_forwarded_when_none_is_singled_out(relay: Relay, upstream: Upstream) -> None:
    client = await relay(tools(upstream, allowed_tools=[]))

    response = await client.post("/mcp/tools", json=call("anything"))

    assert response.status == 200
    assert json.loads(upstream.requests[0].body)["params"]["name"] == "anything"


# --- sse servers -------------------------------------------------------------------------------------------


def events_server(upstream: Upstream, **fields: Any) -> RelayedServer:
    return tools(upstream, name="events", kind="sse", url=upstream.url("/sse"), **fields)


@pytest.mark.parametrize(
    "announcement",
    [SSE_ANNOUNCEMENT, b"event: endpoint\r\ndata: /messages/?session_id=abc\r\n\r\n"],
    ids=["lf", "crlf"],
)
async def test_an_sse_servers_message_endpoint_is_rewritten_to_the_relay(
    relay: Relay, upstream: Upstream, announcement: bytes
) -> None:
    upstream.announcement = announcement
    client = await relay(events_server(upstream))

    before = await client.post("/mcp/events/messages/?session_id=abc", json=call("echo"))
    stream = await client.get("/mcp/events", headers={"Accept": "text/event-stream"})
    announced = await stream.read()
    message = await client.post("/mcp/events/messages/?session_id=abc", json=call("echo", 9))

    assert before.status == 404  # not announced yet
    lines = announced.decode().splitlines()
    assert lines[:2] == ["event: endpoint", "data: /mcp/events/messages/?session_id=abc"]
    assert message.status == 202
    assert [(seen.method, seen.path_qs) for seen in upstream.requests] == [
        ("GET", "/sse"),
        ("POST", "/messages/?session_id=abc"),
    ]
    assert all(seen.headers["Authorization"] == "Bearer real" for seen in upstream.requests)
    assert json.loads(upstream.requests[1].body) == call("echo", 9)


@pytest.mark.parametrize("cut", [len(b"event: endp"), len(b"event: endpoint\ndata: /messa"), len(SSE_ANNOUNCEMENT) - 1])
async def test_an_announcement_that_comes_in_pieces_is_rewritten_whole(
    relay: Relay, upstream: Upstream, cut: int
) -> None:
    upstream.announcement = SSE_ANNOUNCEMENT + b": keep-alive\n\n"
    upstream.split_announcement = cut
    client = await relay(events_server(upstream))

    announced = await (await client.get("/mcp/events")).read()
    message = await client.post("/mcp/events/messages/?session_id=abc", json=call("echo"))

    assert announced == b"event: endpoint\ndata: /mcp/events/messages/?session_id=abc\n\n: keep-alive\n\n"
    assert message.status == 202


async def test_only_announced_sse_endpoints_are_forwarded(relay: Relay, upstream: Upstream) -> None:
    client = await relay(events_server(upstream))
    await (await client.get("/mcp/events")).read()

    refused = [
        await client.post("/mcp/events/other", json=call("echo")),
        await client.post("/mcp/events/messages/?session_id=other", json=call("echo")),
        await client.post("/mcp/events/messages/", json=call("echo")),
        await client.get("/mcp/events/sse/../admin"),
    ]

    for response in refused:
        assert response.status == 404, await response.text()
    assert [seen.path_qs for seen in upstream.requests] == ["/sse"]


async def test_an_sse_endpoint_on_another_host_stays_on_the_servers(relay: Relay, upstream: Upstream) -> None:
    upstream.announcement = b"event: endpoint\ndata: http://169.254.169.254/messages/?session_id=abc\n\n"
    client = await relay(events_server(upstream))

    announced = await (await client.get("/mcp/events")).read()
    message = await client.post("/mcp/events/messages/?session_id=abc", json=call("echo"))

    assert b"data: /mcp/events/messages/?session_id=abc" in announced
    assert message.status == 202
    assert [seen.path_qs for seen in upstream.requests] == ["/sse", "/messages/?session_id=abc"]


async def test_an_sse_servers_messages_also_keep_to_the_allowed_tools(relay: Relay, upstream: Upstream) -> None:
    client = await relay(events_server(upstream))
    await (await client.get("/mcp/events")).read()

    response = await client.post("/mcp/events/messages/?session_id=abc", json=call("other"))

    assert (await response.json())["result"]["isError"] is True
    assert [seen.path_qs for seen in upstream.requests] == ["/sse"]


# --- Servers the relay may not or cannot reach ---------------------------------------------------------------


async def test_a_refused_address_is_answered_by_the_relay_with_the_reason_and_never_dialed(
    relay: Relay, start_upstream: StartUpstream
) -> None:
    local = await start_upstream("127.0.0.1")
    client = await relay(tools(local, name="local", url=local.url("/mcp"), allowed_tools=[]))

    initialized = await (await client.post("/mcp/local", json=INITIALIZE)).json()
    called = await (await client.post("/mcp/local", json=call("echo", 2))).json()
    pinged = await (await client.post("/mcp/local", json={"jsonrpc": "2.0", "id": 3, "method": "ping"})).json()
    notified = await client.post("/mcp/local", json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    batch = await (await client.post("/mcp/local", json=[call("echo", 4), call("echo", 5)])).json()

    reason = "127.0.0.1 is a loopback address"
    assert initialized["id"] == 0
    result = initialized["result"]
    assert result["protocolVersion"] == "2025-03-26"
    assert result["serverInfo"] == {"name": "local", "version": "unreachable"}
    assert result["instructions"].startswith("MCP server 'local' is unreachable: ")
    assert reason in result["instructions"] and "Do not try to reach it another way." in result["instructions"]
    assert called["id"] == 2 and called["result"]["isError"] is True
    assert reason in called["result"]["content"][0]["text"]
    assert pinged["id"] == 3 and reason in pinged["error"]["message"]
    assert notified.status == 202
    assert [answer["id"] for answer in batch] == [4, 5]
    assert local.connections == 0 and local.requests == []


async def test_an_unavailable_server_is_answered_like_a_refused_one(relay: Relay, upstream: Upstream) -> None:
    why = "it needs the secret api_token, which neither the vault nor the message has."
    client = await relay(tools(upstream, unavailable=why))

    initialized = await (await client.post("/mcp/tools", json=INITIALIZE)).json()
    called = await (await client.post("/mcp/tools", json=call("echo", 2))).json()
    stream = await client.get("/mcp/tools")

    assert why in initialized["result"]["instructions"]
    assert called["result"]["isError"] is True and why in called["result"]["content"][0]["text"]
    assert stream.status == 202
    assert upstream.connections == 0 and upstream.requests == []


async def test_a_server_that_does_not_answer_is_answered_with_the_error(relay: Relay, upstream: Upstream) -> None:
    with socket.socket() as probe:  # a port on 127.0.0.2 that nothing listens on
        probe.bind(("127.0.0.2", 0))
        closed_port = probe.getsockname()[1]
    client = await relay(tools(upstream, name="gone", url=f"http://127.0.0.2:{closed_port}/mcp"))

    called = await (await client.post("/mcp/gone", json=call("echo", 2))).json()

    assert called["result"]["isError"] is True
    assert "is unreachable: ClientConnectorError" in called["result"]["content"][0]["text"]


async def test_the_cli_configuration_holds_the_gateway_and_token_never_a_secret(upstream: Upstream) -> None:
    mcp = McpRelay([tools(upstream), events_server(upstream)])

    config = mcp.cli_config("http://127.0.0.1:4000", "run_token")

    assert config == {
        "tools": {"type": "http", "url": "http://127.0.0.1:4000/mcp/tools", "headers": {"X-Run-Token": "run_token"}},
        "events": {"type": "sse", "url": "http://127.0.0.1:4000/mcp/events", "headers": {"X-Run-Token": "run_token"}},
    }
    assert "real" not in json.dumps(config)


# --- Through the run's gateway ---------------------------------------------------------------------------


@pytest.fixture
def run(tenant: Tenant) -> Run:
    return RunFactory(conversation__tenant=tenant)


@pytest.mark.django_db(transaction=True)
async def test_the_gateway_relays_only_with_the_runs_token(run: Run, upstream: Upstream, tmp_path: Path) -> None:
    async def post(gateway: ModelGateway, headers: dict[str, str]) -> int:
        connector = aiohttp.UnixConnector(path=str(gateway.socket_path))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post("http://gateway/mcp/tools", json=call("echo"), headers=headers) as response,
        ):
            return response.status

    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock", mcp=McpRelay([tools(upstream)])) as gateway:
        token = gateway.token
        refused = [
            await post(gateway, {}),
            await post(gateway, {"X-Run-Token": "run_guessed"}),
            await post(gateway, {"x-api-key": token, "Authorization": f"Bearer {token}"}),  # the model API's ways
        ]
        assert upstream.requests == []
        relayed = await post(gateway, {"X-Run-Token": token})
        gateway.revoke()
        revoked = await post(gateway, {"X-Run-Token": token})

    assert refused == [403, 403, 403]
    assert (relayed, revoked) == (200, 403)
    [seen] = upstream.requests
    assert seen.headers["Authorization"] == "Bearer real" and "X-Run-Token" not in seen.headers
