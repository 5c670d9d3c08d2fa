"""MCP servers in real runs: the real CLI in bubblewrap, through the offline model and the run's gateway.

The tests' MCP servers (the `mcp` package's own) listen on 127.0.0.2, which the platform allows
(EGRESS_ALLOWED_NETWORKS in tests.e2e.harness); nothing here dials beyond this machine's loopback.
"""

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from mcp.server.mcpserver import MCPServer

from tests.e2e.harness import Client

SECRET = "sk-mcp-7f3a9c-secret"
# Matches the secret without containing it, so a grep's own command line is not a hit.
SECRET_PATTERN = "sk-mcp-7f3a9[c]-secret"
HOST = "127.0.0.2"


class ToolServer:
    """A real MCP server over streamable HTTP or SSE that answers only with the secret header."""

    def __init__(self, kind: str) -> None:
        self.seen: list[dict[str, str]] = []
        server = MCPServer("tools")

        @server.tool()
        def echo(text: str) -> str:
            """Say the text back."""
            return f"echo: {text}"

        app = server.streamable_http_app(host=HOST) if kind == "http" else server.sse_app(host=HOST)
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://{HOST}:{self.port}" + ("/mcp" if kind == "http" else "/sse")
        self.server = uvicorn.Server(
            uvicorn.Config(self._guarded(app), host=HOST, port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def _guarded(self, app: Any) -> Any:
        async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                headers = {key.decode(): value.decode() for key, value in scope["headers"]}
                self.seen.append(headers)
                if headers.get("authorization") != f"Bearer {SECRET}":
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b"no"})
                    return
            await app(scope, receive, send)

        return guarded

    def __enter__(self) -> "ToolServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the MCP server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    try:
        with ToolServer("http") as server:
            yield server
    except OSError as exc:  # pragma: no cover - a machine without 127.0.0.2
        pytest.skip(f"cannot listen on {HOST}: {exc}")


def create(client: Client, **server: Any) -> dict[str, Any]:
    response = client.http.post(f"/api/tenants/{client.tenant}/mcp-servers", json=server)
    assert response.status_code == 201, response.text
    return response.json()


def run(client: Client, conversation: str, text: str, **body: Any) -> list[dict[str, Any]]:
    response = client.http.post(client.path(conversation, "/messages"), json={"text": text, **body})
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    terminal = client.wait_for_terminal(conversation, run_id)
    assert terminal["type"] == "run.completed", terminal
    return [event for event in client.events(conversation) if event["run_id"] == run_id]


def of_type(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event["data"] for event in events if event["type"] == kind]


def results(events: list[dict[str, Any]]) -> list[str]:
    return [str(result["content"]) for result in of_type(events, "tool.result")]


def test_an_http_server_gets_the_real_secret_which_the_sandbox_never_sees(
    acme: Client, tool_server: ToolServer
) -> None:
    assert acme.http.put(f"/api/tenants/{acme.tenant}/secrets/tools_token", json={"value": SECRET}).status_code == 200
    create(acme, name="tools", kind="http", url=tool_server.url, headers={"Authorization": "Bearer ${tools_token}"})
    conversation = acme.create_conversation()

    events = run(acme, conversation, '[[mcp tools echo {"text": "hi"}]]')

    assert "echo: hi" in results(events)[0]
    assert of_type(events, "run.started")[0]["mcp_servers"] == [{"name": "tools", "kind": "http", "platform": False}]
    assert {"name": "tools", "status": "connected"} in of_type(events, "session.init")[0]["mcp_servers"]
    assert all(seen.get("authorization") == f"Bearer {SECRET}" for seen in tool_server.seen)

    probe = (
        f"[[bash env | grep -c '{SECRET_PATTERN}'; "
        f"grep -rlE '{SECRET_PATTERN}' /proc/[0-9]*/environ /proc/[0-9]*/cmdline $CLAUDE_CONFIG_DIR /tmp /workspace "
        "/home 2>/dev/null | wc -l; ps -eo args | grep -c mcp-config]]"
    )
    env_hits, file_hits, cli_with_config = results(run(acme, conversation, probe))[0].split()
    assert (env_hits, file_hits) == ("0", "0")
    assert int(cli_with_config) >= 1  # the probe did see the CLI's MCP configuration: without the secret


def test_a_stdio_server_runs_inside_the_sandbox(acme: Client) -> None:
    create(acme, name="local", kind="stdio", command="python3", args=["-c", STDIO_SERVER])
    conversation = acme.create_conversation()

    events = run(acme, conversation, "[[mcp local whoami {}]]")

    (answer,) = results(events)
    uid, cwd = (part.split("=")[1] for part in answer.split())
    assert int(uid) != 0 and cwd == "/workspace", answer  # the sandbox's unprivileged user, in its workspace


def test_present_files_hands_a_file_to_the_user(acme: Client) -> None:
    create(acme, name="platform", kind="builtin")
    conversation = acme.create_conversation()

    events = run(
        acme,
        conversation,
        '[[write report.txt the figures]] [[mcp platform present_files {"paths": ["report.txt"]}]]',
    )

    assert results(events)[-1] == "Presented to the user: report.txt"
    assert [event["path"] for event in of_type(events, "file.presented")] == ["report.txt"]
    files = acme.http.get(acme.path(conversation, "/files")).json()
    assert [(f["path"], f["presented"]) for f in files] == [("report.txt", True)]


def test_a_server_that_resolves_to_a_refused_address_is_a_tool_error_that_says_why(
    acme: Client, globex: Client
) -> None:
    # `localhost` is a name (accepted when saved) that resolves to loopback outside the allowed 127.0.0.2.
    create(acme, name="private", kind="http", url="http://localhost:9/mcp", allowed_tools=["lookup"])
    create(acme, name="private-sse", kind="sse", url="http://localhost:9/sse")
    create(globex, name="theirs", kind="builtin")
    conversation = acme.create_conversation()

    events = run(
        acme,
        conversation,
        '[[mcp private lookup {"q": "x"}]] [[mcp private-sse unavailable {}]] [[mcp theirs list_files {}]]',
    )

    refused, refused_sse, foreign = results(events)
    assert "MCP server 'private' is unreachable" in refused and "loopback" in refused
    assert "MCP server 'private-sse' is unreachable" in refused_sse and "loopback" in refused_sse
    assert "theirs" in foreign and "No such tool" in foreign
    assert [server["name"] for server in of_type(events, "run.started")[0]["mcp_servers"]] == ["private", "private-sse"]


STDIO_SERVER = r"""
import json, os, sys
def answer(message, result):
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}) + "\n")
    sys.stdout.flush()
for line in sys.stdin:
    message = json.loads(line)
    method = message.get("method")
    if "id" not in message:
        continue
    if method == "initialize":
        answer(message, {"protocolVersion": message["params"]["protocolVersion"], "capabilities": {"tools": {}},
                         "serverInfo": {"name": "local", "version": "1"}})
    elif method == "tools/list":
        answer(message, {"tools": [{"name": "whoami", "description": "Who runs this server.",
                                    "inputSchema": {"type": "object"}}]})
    elif method == "tools/call":
        text = f"uid={os.getuid()} cwd={os.getcwd()}"
        answer(message, {"content": [{"type": "text", "text": text}]})
    else:
        sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601,
                                     "message": "unknown"}}) + "\n")
        sys.stdout.flush()
"""


def test_an_sse_server_is_relayed_too(acme: Client) -> None:
    acme.http.put(f"/api/tenants/{acme.tenant}/secrets/tools_token", json={"value": SECRET})
    try:
        with ToolServer("sse") as sse:
            create(acme, name="streamed", kind="sse", url=sse.url, headers={"Authorization": "Bearer ${tools_token}"})
            events = run(acme, acme.create_conversation(), '[[mcp streamed echo {"text": "over sse"}]]')
    except OSError as exc:  # pragma: no cover - a machine without 127.0.0.2
        pytest.skip(f"cannot listen on {HOST}: {exc}")

    assert "echo: over sse" in results(events)[0]
    assert {"name": "streamed", "status": "connected"} in of_type(events, "session.init")[0]["mcp_servers"]


ORDERS_API = {
    "openapi": "3.0.3",
    "info": {"title": "Orders", "version": "1"},
    "paths": {
        "/orders/{order_id}/notes": {
            "post": {
                "operationId": "add_note",
                "summary": "Add a note to an order.",
                "parameters": [
                    {"name": "order_id", "in": "path", "required": True, "schema": {"type": "integer"}},
                    {"name": "notify", "in": "query", "schema": {"type": "boolean"}},
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"text": {"type": "string"}},
                                "required": ["text"],
                            }
                        }
                    },
                },
                "responses": {"201": {"description": "Added."}},
            }
        }
    },
}


class OrdersApi:
    """A local HTTP API on 127.0.0.2 that records what reaches it."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host=HOST, port=self.port, log_level="warning", interface="asgi3")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/openapi.json":
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": json.dumps(ORDERS_API).encode()})
            return
        headers = {key.decode(): value.decode() for key, value in scope["headers"]}
        self.seen.append(
            {"path": scope["path"], "query": scope["query_string"].decode(), "headers": headers, "body": body}
        )
        await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"note": "added"}'})

    def __enter__(self) -> "OrdersApi":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_an_openapi_operation_is_a_tool_the_worker_calls_with_the_messages_token(acme: Client) -> None:
    try:
        api = OrdersApi().__enter__()
    except OSError as exc:  # pragma: no cover - a machine without 127.0.0.2
        pytest.skip(f"cannot listen on {HOST}: {exc}")
    try:
        create(
            acme,
            name="orders",
            kind="openapi",
            openapi_url=f"http://{HOST}:{api.port}/openapi.json",  # fetched once, now
            base_url=f"http://{HOST}:{api.port}/v1",
            headers={"X-Api-Key": "${orders_key}"},
        )
        conversation = acme.create_conversation()
        call = '[[mcp orders add_note {"order_id": 42, "notify": true, "text": "ship it"}]]'

        events = run(acme, conversation, call, mcp_tokens={"orders_key": SECRET})

        assert results(events) == ['{"note": "added"}']
        (seen,) = api.seen
        assert (seen["path"], seen["query"]) == ("/v1/orders/42/notes", "notify=true")
        assert seen["headers"]["x-api-key"] == SECRET and json.loads(seen["body"]) == {"text": "ship it"}
        queued = of_type(events, "run.queued")
        assert queued == [] or SECRET not in json.dumps(queued)
        assert SECRET not in json.dumps(acme.events(conversation))

        # The token was the message's: the next run does not have it.
        events = run(acme, conversation, call)
        assert "needs the secret(s) orders_key" in results(events)[0]
        assert len(api.seen) == 1
    finally:
        api.__exit__()


def test_a_server_is_tried_without_a_run(acme: Client, tool_server: ToolServer) -> None:
    servers = f"/api/tenants/{acme.tenant}/mcp-servers"
    create(acme, name="tools", kind="http", url=tool_server.url, headers={"Authorization": "Bearer ${tools_token}"})
    create(acme, name="private", kind="http", url="http://localhost:9/mcp")
    create(acme, name="platform", kind="builtin", allowed_tools=["present_files"])

    missing = acme.http.post(f"{servers}/tools/test").json()
    with_token = acme.http.post(f"{servers}/tools/test", json={"mcp_tokens": {"tools_token": SECRET}}).json()
    refused = acme.http.post(f"{servers}/private/test").json()
    builtin = acme.http.post(f"{servers}/platform/test").json()

    assert missing["status"] == "failed" and "needs the secret(s) tools_token" in missing["reason"]
    assert with_token["status"] == "connected" and [t["name"] for t in with_token["tools"]] == ["echo"]
    assert refused["status"] == "failed" and "loopback" in refused["reason"]
    assert [t["name"] for t in builtin["tools"]] == ["present_files"]
    assert SECRET not in json.dumps([missing, with_token, refused, builtin])
