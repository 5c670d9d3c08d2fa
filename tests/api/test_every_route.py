"""Every route of the URL conf and of the WebSocket router, asked wrongly: each answer is JSON in the one
error shape (or a refused handshake), never HTML and never a server error."""

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections
from django.http import HttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from agents.services import create_profile
from agents.spec import AgentSpec
from config.asgi import application
from conversations.models import Conversation, Run
from skills.archive import from_files
from skills.services import create_skill
from tenants.auth import make_stream_token
from tests.factories import ApprovalFactory, QuestionFactory

pytestmark = pytest.mark.django_db(transaction=True)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
NESTED = "[" * 100_000 + "]" * 100_000
BODIES: dict[str, tuple[str | bytes, str]] = {
    "none": (b"", "application/json"),
    "malformed": ('{"text": "unterminated', "application/json"),
    "not an object": ("[1, 2, 3]", "application/json"),
    "nested too deep": (NESTED, "application/json"),
    "NUL": (
        '{"text": "a\\u0000b", "title": "a\\u0000b", "name": "a\\u0000b", "default_model": "a\\u0000b"}',
        "application/json",
    ),
    "lone surrogate": ('{"\\ud800": "\\udfff", "text": "\\ud800", "status": "\\ud800"}', "application/json"),
    "wrong types": ('{"text": 42, "title": ["a"], "name": true, "budget": {"calls": 2147483648}}', "application/json"),
    "oversize": (json.dumps({"text": "x" * 3_000_000}), "application/json"),
    "form": ("text=hi", "application/x-www-form-urlencoded"),
    "JSON as text/plain": ('{"text": "hi"}', "text/plain"),
}


def routes(patterns: list[Any] | None = None, prefix: str = "") -> Iterator[str]:
    """Each route of the URL conf as written (`api/^tenants/(?P<tenant>…)/usage/?$`), the admin's aside."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(pattern.pattern)
        if route.startswith(("admin/", "chat/")):
            continue  # pages for people, in HTML by design (a refused chat link gets a page that says so)
        if isinstance(pattern, URLResolver):
            yield from routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route


ROUTES = sorted(set(routes()))


def concrete(route: str, samples: dict[str, str]) -> str:
    """A request path for a route, each parameter filled with the sample of its name."""
    path = route
    while (start := path.find("(?P<")) >= 0:
        name = path[start + 4 : path.index(">", start)]
        path = path[:start] + samples[name] + path[_group_end(path, start) :]
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: samples[m[1]], path)
    return "/" + path.replace("^", "").replace("$", "").replace("/?", "")


def _group_end(pattern: str, start: int) -> int:
    """Where the regex group opening at `start` ends: its `)`, past nested groups and `[…]` classes."""
    depth, at = 0, start
    while True:
        character = pattern[at]
        if character == "\\":
            at += 1
        elif character == "[":
            at = pattern.index("]", at + 2)  # a class's first character may be `]`
        elif character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
            if depth == 0:
                return at + 1
        at += 1


def assert_json_error_or_success(response: HttpResponse, what: str) -> None:
    assert response.status_code < 500, (what, response.status_code, response.content[:300])
    content_type = response.get("Content-Type", "")
    # Only the pages for people are HTML (the front page, the API docs), and only when they are served.
    html_page = response.status_code < 400 and response.request["PATH_INFO"] in ("/", "/api/docs/")
    assert html_page or "html" not in content_type, (what, response.status_code, content_type)
    if response.status_code >= 400:
        assert content_type.startswith("application/json"), (what, response.status_code, content_type)
        if response.request["REQUEST_METHOD"] != "HEAD":
            error = json.loads(response.content)["error"]
            assert error["status"] == response.status_code, (what, error)
            assert isinstance(error["code"], str) and isinstance(error["message"], str), (what, error)


@pytest.fixture
def samples(conversation: Conversation, finished_run: Run, settings: Any, tmp_path: Path) -> dict[str, str]:
    settings.MEDIA_ROOT = tmp_path / "media"
    skill_md = b"---\nname: sample\ndescription: A skill whose routes are walked.\n---\nBe helpful.\n"
    create_skill(conversation.tenant, from_files([("SKILL.md", skill_md)]), "test")
    create_profile(conversation.tenant, "sample", AgentSpec(instructions="An agent whose routes are walked."))
    return {
        "tenant": conversation.tenant_id,
        "conversation_id": str(conversation.pk),
        "run_id": str(finished_run.pk),
        "user_id": conversation.user_id or "alice",
        "name": "sample",
        "number": "1",
        "path": "SKILL.md",
        "approval": str(ApprovalFactory(run=finished_run).pk),
        "question": str(QuestionFactory(run=finished_run).pk),
    }


def pk_for(route: str, samples: dict[str, str]) -> str:
    if "conversations" in route:
        return samples["conversation_id"]
    if "approvals" in route or "questions" in route:
        return samples["approval" if "approvals" in route else "question"]
    return samples["tenant"] if route.startswith("api/^tenants") else "offline"


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_answers_json_to_every_method_and_bad_body(
    route: str, samples: dict[str, str], admin_key: str
) -> None:
    path = concrete(route, {**samples, "pk": pk_for(route, samples)})
    for key in (admin_key, ""):
        client = Client(HTTP_X_API_KEY=key) if key else Client()
        for method in METHODS:
            for name, (body, content_type) in BODIES.items():
                response = client.generic(method, path, body, content_type=content_type)
                assert_json_error_or_success(response, f"{method} {path} ({name}, {'key' if key else 'no key'})")
                response.close()


@pytest.mark.parametrize("route", [route for route in ROUTES if route.startswith("api/^tenants")])
def test_options_on_every_tenant_route_names_its_methods(route: str, samples: dict[str, str], tenant_key: str) -> None:
    path = concrete(route, {**samples, "pk": pk_for(route, samples)})

    response = Client(HTTP_X_API_KEY=tenant_key).options(path)

    assert_json_error_or_success(response, f"OPTIONS {path}")
    if response.status_code != 404:  # an admin-only route, to a tenant key
        assert response.status_code in (200, 405), (path, response.status_code, response.content[:300])
        assert "OPTIONS" in response["Allow"] or response.status_code == 405, (path, response["Allow"])


@pytest.mark.parametrize("suffix", ["/nope", "/%00", "%0A", "/..%2F", "/" + "x" * 5000])
def test_unknown_and_malformed_sub_paths_answer_json(suffix: str, samples: dict[str, str], admin_key: str) -> None:
    client = Client(HTTP_X_API_KEY=admin_key)
    for route in ROUTES:
        path = concrete(route, {**samples, "pk": pk_for(route, samples)}).rstrip("/") + suffix
        for method in ("GET", "POST"):
            response = client.generic(method, path, b"{}", content_type="application/json")
            assert_json_error_or_success(response, f"{method} {path}")


@pytest.mark.parametrize(
    "query",
    [
        "limit=abc",
        "limit=18446744073709551616",
        "offset=-5",
        "offset=18446744073709551616",
        "after=99999999999999999999",
        "nonsense=1",
        "created_after=2026-01-01T00:00:00-20:56",
        "created_after=9999-12-31T23:59:59-20:00",
        "from=2026-01-01T00:00:00-20:56",
        "to=0001-01-01T00:00:00%2B20:00",
        "status=%00",
        "user_id=%ED%A0%80",
    ],
)
def test_bad_query_strings_answer_json_on_every_get(query: str, samples: dict[str, str], admin_key: str) -> None:
    client = Client(HTTP_X_API_KEY=admin_key)
    for route in ROUTES:
        path = concrete(route, {**samples, "pk": pk_for(route, samples)})
        response = client.get(f"{path}?{query}")
        assert_json_error_or_success(response, f"GET {path}?{query}")
        response.close()


# --- the WebSocket router -------------------------------------------------------------------------


@pytest_asyncio.fixture
async def sockets(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    # The ASGI application binds realtime to the test's event loop, which closes with the test.
    monkeypatch.setattr("conversations.realtime._serving_loop", None)
    yield
    # The thread behind the async ORM keeps a connection that would outlive the test database.
    await sync_to_async(connections.close_all)()


async def handshake(path: str, subprotocols: list[str] | None = None) -> tuple[bool, Any, WebsocketCommunicator]:
    socket = WebsocketCommunicator(application, path, subprotocols=subprotocols)
    connected, detail = await socket.connect(timeout=5)
    return connected, detail, socket


@pytest.mark.parametrize(
    "path",
    [
        "/ws/nothing",
        "/ws/",
        "/",
        "/ws/tenants/acme/conversations/not-a-uuid/",
        "/ws/tenants/acme/conversations/{conversation}/extra/",
        "/ws/tenants/acme/conversations/00000000-0000-4000-8000-000000000000/",  # no such conversation
        "/ws/tenants/acme/conversations/{conversation}/",  # no token
        "/ws/tenants/acme/conversations/{conversation}/?token=forged",
        "/ws/tenants/globex/conversations/{conversation}/?token={token}",
    ],
)
@pytest.mark.asyncio
@pytest.mark.usefixtures("sockets")
async def test_unknown_or_unauthorized_socket_paths_are_told_why_then_closed_with_a_44xx_code(
    path: str, conversation: Conversation
) -> None:
    token = make_stream_token(str(conversation.pk), conversation.tenant_id, "")
    connected, _, socket = await handshake(path.format(conversation=conversation.pk, token=token))

    assert connected
    frame = await socket.receive_json_from(timeout=5)
    closed = await socket.receive_output(timeout=5)
    assert frame["type"] == "error" and frame["error"]["code"] and frame["error"]["message"], frame
    assert 4400 <= closed["code"] < 4500 and closed["reason"] == frame["error"]["code"], closed


@pytest.mark.parametrize("slash", ["/", ""])
@pytest.mark.asyncio
@pytest.mark.usefixtures("sockets")
async def test_the_conversation_socket_opens_with_or_without_its_trailing_slash(
    slash: str, conversation: Conversation
) -> None:
    token = make_stream_token(str(conversation.pk), conversation.tenant_id, "")
    connected, _, socket = await handshake(f"/ws/tenants/acme/conversations/{conversation.pk}{slash}?token={token}")

    assert connected
    await socket.disconnect()


@pytest.mark.parametrize("after", ["-5", "abc", "1.5", "%00", "%EF%BC%91"])
@pytest.mark.asyncio
@pytest.mark.usefixtures("sockets")
async def test_a_bad_after_is_refused_with_an_error_frame_like_rest_and_sse(
    after: str, conversation: Conversation
) -> None:
    token = make_stream_token(str(conversation.pk), conversation.tenant_id, "")
    connected, _, socket = await handshake(
        f"/ws/tenants/acme/conversations/{conversation.pk}/?token={token}&after={after}"
    )

    assert connected
    frame = await socket.receive_json_from(timeout=5)
    assert frame == {
        "type": "error",
        "error": {"code": "invalid_after", "message": "`after` must be a whole number of 0 or more."},
    }
    assert await socket.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": 4400,
        "reason": "invalid_after",
    }


@pytest.mark.parametrize(
    "frame",
    [NESTED, '{"type": "message", "text": 42}', '{"type": "message", "text": "a\\u0000b"}', "not json", '"a string"'],
    ids=["nested", "number text", "NUL", "not json", "not an object"],
)
@pytest.mark.asyncio
@pytest.mark.usefixtures("sockets")
async def test_bad_frames_get_an_error_frame_and_the_socket_stays_open(frame: str, conversation: Conversation) -> None:
    token = make_stream_token(str(conversation.pk), conversation.tenant_id, "")
    _, _, socket = await handshake(f"/ws/tenants/acme/conversations/{conversation.pk}/?token={token}")

    await socket.send_to(text_data=frame)
    answer = await socket.receive_json_from(timeout=5)
    await socket.send_to(text_data='{"type": "ping"}')
    pong = await socket.receive_json_from(timeout=5)

    assert answer["type"] == "error" and answer["error"]["code"] in {"invalid_json", "invalid", "unknown_type"}, answer
    assert pong["type"] == "pong"
    await socket.disconnect()
