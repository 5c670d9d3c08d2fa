"""The conversation WebSocket: who may open it, replay after `after=N`, live events, gap repair, bad frames."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core import signing
from django.db import connections
from pytest_django.fixtures import Settings

from agents.services import create_profile
from agents.spec import AgentSpec
from config.asgi import application
from conversations.consumers import SUBPROTOCOL
from conversations.events import append_events
from conversations.models import Conversation, Event, Run
from conversations.realtime import publish_events
from tenants.auth import STREAM_TOKEN_SALT, make_stream_token

# Commits are real here (the consumer reads from other threads). Runs are created straight through
# the ORM rather than with start_run, whose on_commit would start a real agent.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


def ws_path(tenant_id: str, conversation_id: Any, query: str = "") -> str:
    return f"/ws/tenants/{tenant_id}/conversations/{conversation_id}/{query}"


def token_for(conversation: Conversation, user_id: str = "alice") -> str:
    return make_stream_token(str(conversation.pk), conversation.tenant_id, user_id)


@asynccontextmanager
async def opened(path: str, **kwargs: Any) -> AsyncIterator[WebsocketCommunicator]:
    """A connected socket, closed again at the end of the block."""
    socket = WebsocketCommunicator(application, path, **kwargs)
    connected, close_code = await socket.connect()
    assert connected, f"refused with {close_code}"
    try:
        yield socket
    finally:
        await socket.disconnect()


async def refusal(path: str, **kwargs: Any) -> tuple[int, str]:
    """How a refused socket is told why: accepted, one error frame, then a 44xx close (its close code and
    the frame's error code). Nothing of the conversation is sent."""
    socket = WebsocketCommunicator(application, path, **kwargs)
    connected, _ = await socket.connect()
    assert connected, "refused at the handshake, without a reason"
    frame = await socket.receive_json_from(timeout=2)
    closed = await socket.receive_output(timeout=2)
    assert frame["type"] == "error" and frame["error"]["message"], frame
    assert closed["type"] == "websocket.close" and closed["reason"] == frame["error"]["code"], closed
    return closed["code"], frame["error"]["code"]


async def received_seqs(socket: WebsocketCommunicator, count: int) -> list[int]:
    return [(await socket.receive_json_from(timeout=2))["seq"] for _ in range(count)]


@pytest_asyncio.fixture(autouse=True)
async def clean_up_after_the_socket(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    # The ASGI application binds realtime to this test's event loop, which closes with the test;
    # later synchronous broadcasts must not try to deliver to it.
    monkeypatch.setattr("conversations.realtime._serving_loop", None)
    yield
    # The async ORM and sync_to_async share one worker thread, whose connection would otherwise
    # outlive the test database and keep it from being dropped.
    await sync_to_async(connections.close_all)()


@pytest.fixture
def run(conversation: Conversation) -> Run:
    return Run.objects.create(conversation=conversation, model=conversation.model, user_id="alice", input="Hi")


@pytest.fixture
def stored_events(conversation: Conversation, run: Run) -> list[Event]:
    return append_events(conversation.pk, run.pk, [("message.delta", {"text": str(n)}) for n in range(1, 6)])


# --- who may connect ----------------------------------------------------------------------------------


async def test_a_valid_token_connects_and_replays_the_stored_events_after_n_in_order(
    conversation: Conversation, stored_events: list[Event]
) -> None:
    path = ws_path("acme", conversation.pk, f"?token={token_for(conversation)}&after=2")

    async with opened(path) as socket:
        replayed = [await socket.receive_json_from(timeout=2) for _ in range(3)]

        assert [frame["seq"] for frame in replayed] == [3, 4, 5]
        assert replayed[0] == stored_events[2].as_envelope()
        assert await socket.receive_nothing()


async def test_without_after_every_stored_event_is_replayed(
    conversation: Conversation, stored_events: list[Event]
) -> None:
    async with opened(ws_path("acme", conversation.pk, f"?token={token_for(conversation)}")) as socket:
        seqs = await received_seqs(socket, 5)

        assert seqs == [1, 2, 3, 4, 5]
        assert await socket.receive_nothing()


async def test_the_token_works_as_a_subprotocol(conversation: Conversation, stored_events: list[Event]) -> None:
    subprotocols = [SUBPROTOCOL, f"token.{token_for(conversation)}"]

    socket = WebsocketCommunicator(application, ws_path("acme", conversation.pk, "?after=4"), subprotocols=subprotocols)
    connected, subprotocol = await socket.connect()

    assert connected
    assert subprotocol == SUBPROTOCOL
    assert await received_seqs(socket, 1) == [5]
    await socket.disconnect()


async def test_the_token_alone_as_a_subprotocol_connects(conversation: Conversation) -> None:
    subprotocols = [f"token.{token_for(conversation)}"]

    async with opened(ws_path("acme", conversation.pk), subprotocols=subprotocols) as socket:
        assert await socket.receive_nothing()


async def test_an_allowed_origin_connects(conversation: Conversation) -> None:
    headers = [(b"origin", b"http://testserver")]

    async with opened(ws_path("acme", conversation.pk, f"?token={token_for(conversation)}"), headers=headers) as socket:
        assert await socket.receive_nothing()


async def test_my_token_cannot_open_another_tenants_conversation(
    conversation: Conversation, other_conversation: Conversation
) -> None:
    token = token_for(conversation)

    theirs = await refusal(ws_path("globex", other_conversation.pk, f"?token={token}"))
    theirs_under_my_tenant = await refusal(ws_path("acme", other_conversation.pk, f"?token={token}"))
    mine_under_their_tenant = await refusal(ws_path("globex", conversation.pk, f"?token={token}"))

    assert theirs == theirs_under_my_tenant == mine_under_their_tenant == (4403, "invalid_token")


async def test_a_token_for_a_deleted_conversation_is_told_not_found(conversation: Conversation) -> None:
    token = token_for(conversation)
    await sync_to_async(Conversation.objects.filter(pk=conversation.pk).delete)()

    assert await refusal(ws_path("acme", conversation.pk, f"?token={token}")) == (4404, "not_found")


async def test_a_forged_token_is_refused(conversation: Conversation) -> None:
    claims = {"c": str(conversation.pk), "t": "acme", "u": "alice"}
    other_key = signing.TimestampSigner(key="not-our-secret", salt=STREAM_TOKEN_SALT, sep=".").sign_object(claims)
    valid = token_for(conversation)
    tampered = valid[:-4] + ("AAAA" if not valid.endswith("AAAA") else "BBBB")

    refusals = [
        await refusal(ws_path("acme", conversation.pk, f"?token={token}")) for token in (other_key, tampered, "garbage")
    ]

    assert refusals == [(4403, "invalid_token")] * 3


async def test_an_expired_token_is_refused(conversation: Conversation, settings: Settings) -> None:
    token = token_for(conversation)
    settings.STREAM_TOKEN_MAX_AGE_SECONDS = -1  # every token is now too old

    assert await refusal(ws_path("acme", conversation.pk, f"?token={token}")) == (4403, "invalid_token")


async def test_no_token_is_refused_saying_where_to_get_one(conversation: Conversation) -> None:
    bare = await refusal(ws_path("acme", conversation.pk))
    same_origin = await refusal(ws_path("acme", conversation.pk), headers=[(b"origin", b"http://testserver")])

    assert bare == same_origin == (4401, "not_authenticated")


async def test_a_disallowed_origin_is_refused_even_with_a_valid_token(conversation: Conversation) -> None:
    headers = [(b"origin", b"https://evil.example")]

    refused = await refusal(ws_path("acme", conversation.pk, f"?token={token_for(conversation)}"), headers=headers)

    assert refused == (4403, "origin_refused")


# --- frames from the client ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        (json.dumps({"type": "dance"}), "unknown_type"),
        (json.dumps(["message"]), "unknown_type"),
        (json.dumps({"type": "message"}), "invalid"),
        (json.dumps({"type": "message", "text": "   "}), "invalid"),
        (json.dumps({"type": "message", "text": "Hi", "extra": 1}), "invalid"),
        (json.dumps({"type": "interrupt"}), "no_active_run"),
    ],
    ids=["not-json", "unknown-type", "not-an-object", "no-text", "blank-text", "unknown-field", "nothing-to-interrupt"],
)
async def test_a_bad_frame_gets_an_error_frame_and_the_socket_stays_open(
    conversation: Conversation, frame: str, code: str
) -> None:
    async with opened(ws_path("acme", conversation.pk, f"?token={token_for(conversation)}")) as socket:
        await socket.send_to(text_data=frame)

        error = await socket.receive_json_from(timeout=2)
        await socket.send_json_to({"type": "ping"})
        pong = await socket.receive_json_from(timeout=2)

        assert error["type"] == "error"
        assert error["error"]["code"] == code and error["error"]["message"]
        assert pong == {"type": "pong", "last_seq": 0}
        assert await Run.objects.acount() == 0


@pytest.mark.parametrize("reference", ["hidden", "shown@1", "nosuch"], ids=["hidden", "pinned", "missing"])
async def test_an_end_users_chat_session_names_no_agent_its_page_does_not_offer(
    conversation: Conversation, reference: str
) -> None:
    tenant = await sync_to_async(lambda: conversation.tenant)()
    await sync_to_async(create_profile)(tenant, "hidden", AgentSpec(instructions="Not for end users."))
    await sync_to_async(create_profile)(tenant, "shown", AgentSpec(), choosable=True)
    end_user_token = make_stream_token(str(conversation.pk), "acme", "alice", end_user=True)

    async with opened(ws_path("acme", conversation.pk, f"?token={end_user_token}")) as socket:
        await socket.send_json_to({"type": "message", "text": "Hello", "agent": reference})

        error = await socket.receive_json_from(timeout=2)

    # Refused as a missing agent is, listing only what the chat page offers; no run started.
    assert error["type"] == "error" and error["error"]["code"] == "unknown_agent", error
    offered = error["error"]["message"].partition("Choose one of:")[2]
    assert "hidden" not in offered
    assert await Run.objects.acount() == 0


async def test_a_message_to_an_archived_conversation_gets_an_error_frame(conversation: Conversation) -> None:
    await Conversation.objects.filter(pk=conversation.pk).aupdate(status=Conversation.Status.ARCHIVED)

    async with opened(ws_path("acme", conversation.pk, f"?token={token_for(conversation)}")) as socket:
        await socket.send_json_to({"type": "message", "text": "Hello?"})

        error = await socket.receive_json_from(timeout=2)

        assert (error["type"], error["error"]["code"]) == ("error", "archived")
        assert await Run.objects.acount() == 0


# --- live events --------------------------------------------------------------------------------------


async def test_a_live_broadcast_arrives(conversation: Conversation, run: Run) -> None:
    async with opened(ws_path("acme", conversation.pk, f"?token={token_for(conversation)}")) as socket:
        events = await sync_to_async(append_events)(
            conversation.pk, run.pk, [("message.delta", {"text": "Hel"}), ("message.delta", {"text": "lo"})]
        )

        await publish_events(conversation.pk, events)

        frames = [await socket.receive_json_from(timeout=2) for _ in range(2)]
        assert frames == [event.as_envelope() for event in events]
        assert await socket.receive_nothing()


async def test_a_broadcast_that_skips_ahead_is_repaired_from_the_database_exactly_once(
    conversation: Conversation, run: Run
) -> None:
    async with opened(ws_path("acme", conversation.pk, f"?token={token_for(conversation)}")) as socket:
        first, second = await sync_to_async(append_events)(
            conversation.pk, run.pk, [("message.delta", {"text": "dropped"}), ("message.delta", {"text": "delivered"})]
        )

        await publish_events(conversation.pk, [second])  # the broadcast of `first` was lost
        frames = [await socket.receive_json_from(timeout=2) for _ in range(2)]
        await publish_events(conversation.pk, [first])  # late or duplicate copies change nothing
        await publish_events(conversation.pk, [second])

        assert frames == [first.as_envelope(), second.as_envelope()]
        assert await socket.receive_nothing()


async def test_replay_and_live_events_join_without_duplicates(
    conversation: Conversation, run: Run, stored_events: list[Event]
) -> None:
    async with opened(ws_path("acme", conversation.pk, f"?token={token_for(conversation)}&after=3")) as socket:
        replayed = await received_seqs(socket, 2)
        (live,) = await sync_to_async(append_events)(conversation.pk, run.pk, [("message", {"text": "new"})])

        # A broadcast overlapping what the socket already replayed delivers only the new event.
        await publish_events(conversation.pk, [*stored_events[3:], live])

        assert replayed == [4, 5]
        assert await received_seqs(socket, 1) == [6]
        assert await socket.receive_nothing()
