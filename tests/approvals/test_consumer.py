"""Approving and answering over the conversation WebSocket: the socket decides for its own conversation only, as
the key, end user or operator it was opened by, once."""

import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.db import connections
from django.test import Client

from approvals.models import Approval, Question
from audit.models import AuditRecord
from conversations.models import Conversation, Run
from tenants.auth import make_stream_token
from tenants.models import ApiKey
from tests.conversations.test_consumer import opened
from tests.factories import ApprovalFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest_asyncio.fixture(autouse=True)
async def clean_up_after_the_socket(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    # As in tests/conversations/test_consumer.py: realtime must not deliver to this test's closed loop later,
    # and the async ORM's thread must not keep a connection to the test database.
    monkeypatch.setattr("conversations.realtime._serving_loop", None)
    yield
    await sync_to_async(connections.close_all)()


def ws_path(conversation: Conversation, token: str) -> str:
    return f"/ws/tenants/{conversation.tenant_id}/conversations/{conversation.pk}/?token={token}"


@pytest.fixture
def key_token(conversation: Conversation, tenant_key: str) -> str:
    """A stream token as the tenant's backend gets it for alice (X-User-ID), over REST."""
    response = Client(HTTP_X_API_KEY=tenant_key, HTTP_X_USER_ID="alice").post(
        f"/api/tenants/acme/conversations/{conversation.pk}/stream-token"
    )
    assert response.status_code == 201, response.content
    return str(response.json()["token"])


async def reply_to(socket: WebsocketCommunicator, frame: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send a frame; the ack or error it gets, and the events that came meanwhile (replays, the decision's)."""
    await socket.send_json_to(frame)
    events = []
    while True:
        received = await socket.receive_json_from(timeout=5)
        if "seq" in received:
            events.append(received)
            continue
        return received, events


async def approval_row(approval: Approval) -> dict[str, Any]:
    return await Approval.objects.values().aget(pk=approval.pk)


# --- approve ------------------------------------------------------------------------------------------


async def test_approve_allows_acks_with_the_approval_and_the_decision_event_follows(
    conversation: Conversation, approval: Approval, key_token: str, dispatched: list[UUID]
) -> None:
    key = await ApiKey.objects.aget(tenant_id="acme")

    async with opened(ws_path(conversation, key_token)) as socket:
        ack, events = await reply_to(
            socket,
            {"type": "approve", "approval_id": str(approval.pk), "decision": "allow", "remember": True},
        )
        if not any(event["type"] == "permission.decision" for event in events):
            events.append(await socket.receive_json_from(timeout=5))

    assert (ack["type"], ack["request"]) == ("ack", "approve")
    assert ack["approval"]["id"] == str(approval.pk) and ack["approval"]["status"] == "allowed"
    assert ack["approval"]["remember"] is True
    assert ack["approval"]["decided_by"] == {"kind": "api_key", "name": f"acme key ({key.prefix}…) for alice"}
    decision = next(event for event in events if event["type"] == "permission.decision")
    assert decision["data"]["approval_id"] == str(approval.pk) and decision["run_id"] == str(approval.run_id)
    assert (await Run.objects.aget(pk=approval.run_id)).status == Run.Status.QUEUED
    assert dispatched == [approval.run_id]


async def test_deny_with_a_message_and_an_edited_input_on_allow_reach_the_row(
    conversation: Conversation, approval: Approval, key_token: str, dispatched: list[UUID]
) -> None:
    other = await sync_to_async(ApprovalFactory)(run=await Run.objects.aget(pk=approval.run_id))

    async with opened(ws_path(conversation, key_token)) as socket:
        denied, _ = await reply_to(
            socket, {"type": "approve", "approval_id": str(approval.pk), "decision": "deny", "message": "Not now."}
        )
        edited, _ = await reply_to(
            socket,
            {
                "type": "approve",
                "approval_id": str(other.pk),
                "decision": "allow",
                "updated_input": {"command": "echo three"},
            },
        )

    assert (denied["approval"]["status"], denied["approval"]["message"]) == ("denied", "Not now.")
    assert edited["approval"]["updated_input"] == {"command": "echo three"}
    assert (await approval_row(other))["updated_input"] == {"command": "echo three"}


async def test_an_end_users_chat_session_approves_as_that_end_user(
    conversation: Conversation, approval: Approval, dispatched: list[UUID]
) -> None:
    token = make_stream_token(str(conversation.pk), "acme", "alice", end_user=True)

    async with opened(ws_path(conversation, token)) as socket:
        ack, _ = await reply_to(socket, {"type": "approve", "approval_id": str(approval.pk), "decision": "allow"})

    assert ack["approval"]["decided_by"] == {"kind": "end_user", "name": "alice"}
    record = await AuditRecord.objects.aget()
    assert (record.actor_kind, record.actor, record.action) == ("end_user", "alice", "approval.allowed")


async def test_a_second_decision_gets_an_already_decided_error_and_the_first_stands(
    conversation: Conversation, approval: Approval, key_token: str, dispatched: list[UUID]
) -> None:
    async with opened(ws_path(conversation, key_token)) as socket:
        await reply_to(socket, {"type": "approve", "approval_id": str(approval.pk), "decision": "allow"})
        after_first = await approval_row(approval)
        error, _ = await reply_to(socket, {"type": "approve", "approval_id": str(approval.pk), "decision": "deny"})

    assert (error["type"], error["error"]["code"]) == ("error", "already_decided")
    assert await approval_row(approval) == after_first


@pytest.mark.parametrize(
    "whose",
    ["another conversation's", "another tenant's", "missing", "another end user's in this conversation"],
)
async def test_a_request_the_socket_does_not_own_is_not_found_and_stays_undecided(
    conversation: Conversation,
    approval: Approval,
    bobs_approval: Approval,
    their_approval: Approval,
    key_token: str,
    whose: str,
) -> None:
    if whose == "another end user's in this conversation":
        # A run of bob's in alice's conversation: alice's socket sees only hers, as REST does with X-User-ID.
        await Approval.objects.filter(pk=bobs_approval.pk).aupdate(conversation=conversation)
    target = {
        "another conversation's": bobs_approval.pk,
        "another tenant's": their_approval.pk,
        "missing": uuid4(),
        "another end user's in this conversation": bobs_approval.pk,
    }[whose]
    before = [await approval_row(row) for row in (approval, bobs_approval, their_approval)]

    async with opened(ws_path(conversation, key_token)) as socket:
        error, _ = await reply_to(socket, {"type": "approve", "approval_id": str(target), "decision": "allow"})
        pong, _ = await reply_to(socket, {"type": "ping"})

    assert error == {
        "type": "error",
        "error": {"code": "not_found", "message": "No such approval in this conversation."},
    }
    assert pong["type"] == "pong"  # the socket stays open
    assert [await approval_row(row) for row in (approval, bobs_approval, their_approval)] == before


MINE = "the socket's approval"


@pytest.mark.parametrize(
    ("frame", "says"),
    [
        ({"type": "approve", "decision": "allow"}, "approval_id"),
        ({"type": "approve", "approval_id": "nope", "decision": "allow"}, "approval_id"),
        ({"type": "approve", "approval_id": MINE, "decision": "maybe"}, "decision"),
        ({"type": "approve", "approval_id": MINE, "decision": "deny", "remember": True}, "remember"),
        ({"type": "approve", "approval_id": MINE, "decision": "allow", "updated_input": "echo"}, "updated_input"),
        ({"type": "approve", "approval_id": MINE, "decision": "allow", "extra": 1}, "extra"),
    ],
    ids=["no-id", "bad-id", "unknown-decision", "remember-with-deny", "input-not-an-object", "unknown-field"],
)
async def test_a_bad_approve_frame_gets_an_invalid_error_naming_the_field(
    conversation: Conversation, approval: Approval, key_token: str, frame: dict[str, Any], says: str
) -> None:
    if frame.get("approval_id") == MINE:
        frame = {**frame, "approval_id": str(approval.pk)}
    before = await approval_row(approval)

    async with opened(ws_path(conversation, key_token)) as socket:
        error, _ = await reply_to(socket, frame)

    assert error["type"] == "error" and error["error"]["code"] == "invalid", error
    assert says in error["error"]["message"]
    assert await approval_row(approval) == before


# --- answer -------------------------------------------------------------------------------------------


async def test_answer_acks_with_the_answered_question(
    conversation: Conversation, question: Question, key_token: str, dispatched: list[UUID]
) -> None:
    async with opened(ws_path(conversation, key_token)) as socket:
        ack, _ = await reply_to(
            socket, {"type": "answer", "question_id": str(question.pk), "answers": {"Which format?": "CSV"}}
        )

    assert (ack["type"], ack["request"]) == ("ack", "answer")
    assert ack["question"]["status"] == "answered" and ack["question"]["answers"] == {"Which format?": "CSV"}
    assert dispatched == [question.run_id]


@pytest.mark.parametrize(
    ("answers", "code"),
    [({"Which colour?": "Red"}, "invalid_answers"), ({}, "invalid_answers"), ("CSV", "invalid")],
    ids=["unknown-question", "missing-answer", "not-an-object"],
)
async def test_a_bad_answer_gets_an_error_and_the_question_still_waits(
    conversation: Conversation, question: Question, key_token: str, answers: Any, code: str
) -> None:
    async with opened(ws_path(conversation, key_token)) as socket:
        error, _ = await reply_to(socket, {"type": "answer", "question_id": str(question.pk), "answers": answers})

    assert (error["type"], error["error"]["code"]) == ("error", code), error
    assert (await Question.objects.aget(pk=question.pk)).is_pending


async def test_another_conversations_question_is_not_found(
    conversation: Conversation, bobs_question: Question, key_token: str
) -> None:
    async with opened(ws_path(conversation, key_token)) as socket:
        error, _ = await reply_to(
            socket, {"type": "answer", "question_id": str(bobs_question.pk), "answers": {"Which format?": "CSV"}}
        )

    assert error["error"] == {"code": "not_found", "message": "No such question in this conversation."}
    assert (await Question.objects.aget(pk=bobs_question.pk)).is_pending


# --- staff in the admin ---------------------------------------------------------------------------------


def staff_cookie(*permissions: str) -> bytes:
    user = User.objects.create_user("olga", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    browser = Client()
    browser.force_login(user)
    return f"sessionid={browser.cookies['sessionid'].value}".encode()


async def test_staff_decide_as_operators_with_the_permission_to_change_approvals(
    conversation: Conversation, approval: Approval, dispatched: list[UUID]
) -> None:
    cookie = await sync_to_async(staff_cookie)("change_approval")
    headers = [(b"origin", b"http://testserver"), (b"cookie", cookie)]

    path = f"/ws/tenants/acme/conversations/{conversation.pk}/"
    async with opened(path, headers=headers) as socket:
        ack, _ = await reply_to(socket, {"type": "approve", "approval_id": str(approval.pk), "decision": "allow"})

    assert ack["approval"]["decided_by"] == {"kind": "operator", "name": "olga"}


async def test_staff_without_the_permission_may_watch_but_not_decide(
    conversation: Conversation, approval: Approval, question: Question
) -> None:
    cookie = await sync_to_async(staff_cookie)()
    headers = [(b"origin", b"http://testserver"), (b"cookie", cookie)]

    path = f"/ws/tenants/acme/conversations/{conversation.pk}/"
    async with opened(path, headers=headers) as socket:
        approving, _ = await reply_to(socket, {"type": "approve", "approval_id": str(approval.pk), "decision": "allow"})
        answering, _ = await reply_to(
            socket, {"type": "answer", "question_id": str(question.pk), "answers": {"Which format?": "CSV"}}
        )

    assert approving["error"]["code"] == answering["error"]["code"] == "forbidden"
    assert "approvals.change_approval" in approving["error"]["message"]
    assert (await approval_row(approval))["status"] == "pending"


async def test_a_frame_of_json_that_is_not_an_approve_is_still_told_the_frame_types(
    conversation: Conversation, key_token: str
) -> None:
    async with opened(ws_path(conversation, key_token)) as socket:
        await socket.send_to(text_data=json.dumps({"type": "approval"}))
        error = await socket.receive_json_from(timeout=5)

    assert error["error"]["code"] == "unknown_type" and '"approve"' in error["error"]["message"]
