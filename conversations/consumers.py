"""The conversation WebSocket: replay, then live events, plus `message`, `interrupt`, `approve` and `answer` from
the client."""

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlparse

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.conf import settings
from django.db import DatabaseError
from django.http.request import validate_host
from rest_framework import exceptions

from agents.services import choose_agent_as_end_user
from api.errors import ServiceError, flatten_errors
from api.parsers import load_json
from approvals.deciders import operator_decider, stream_token_decider
from approvals.models import Approval, Question
from approvals.serializers import (
    ApprovalDecisionFrameSerializer,
    ApprovalSerializer,
    QuestionAnswerFrameSerializer,
    QuestionSerializer,
)
from approvals.services import Who
from conversations import realtime
from conversations.models import Conversation
from conversations.serializers import MessageAcceptedSerializer, MessageCreateSerializer
from conversations.streams import EventCursor, Frame, latest_seq
from runs import services
from tenants.auth import read_stream_token

logger = logging.getLogger(__name__)

SUBPROTOCOL = "agent-events.v1"
TOKEN_SUBPROTOCOL_PREFIX = "token."  # noqa: S105 - a protocol prefix, not a secret
# Close codes (4000-4999 are the application's), after HTTP's: a refused socket is accepted only to be
# told why in an error frame (a refused handshake reaches clients as a bare 403, and Daphne drops close
# reasons), then closed with one of these.
CLOSE_INVALID = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_REFUSED = 4403
CLOSE_NOT_FOUND = 4404
RESYNC_SECONDS = 5.0


# A staff socket decides as its operator with the permission to change approvals (or questions), as in the admin.
DECIDING_PERMISSIONS = {"approve": "approvals.change_approval", "answer": "approvals.change_question"}


class Refused(Exception):
    """Why a socket may not open: its close code, and the error frame's code and message."""

    def __init__(self, close_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.close_code, self.code, self.message = close_code, code, message


def origin_allowed(origin: str) -> bool:
    if origin in settings.WEBSOCKET_ALLOWED_ORIGINS:
        return True
    host = urlparse(origin).hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return bool(host) and validate_host(host, settings.ALLOWED_HOSTS)


class ConversationConsumer(AsyncWebsocketConsumer):
    conversation: Conversation
    cursor: EventCursor
    user_id: str
    can_steer: bool
    # An end user's own chat session (its stream token says so): it may name only the agents its page offers.
    end_user_session: bool = False
    # Who the socket's approvals and answers name (read at its first decision: most sockets never decide); a staff
    # socket's operator also needs the model permission.
    token_claims: dict[str, str] | None = None
    decider: Who | None = None
    staff: Any = None
    listener: realtime.GroupListener

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # AsyncConsumer.__call__, except that the channel layer is read through a GroupListener:
        # Channels' own loop lets a layer error (Redis restarting) end the socket with 1011, while
        # the listener waits the layer out and has the socket read the database meanwhile.
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.listener = realtime.GroupListener(self.channel_layer, self.channel_name)
        self.base_send = send
        with contextlib.suppress(StopConsumer):
            await await_many_dispatch([receive, self.listener.receive], self.dispatch)

    async def connect(self) -> None:
        try:
            self.conversation, self.user_id, self.can_steer = await self._authorize()
        except Refused as refused:
            await refuse(self, refused)
            return
        after = parse_after(self.scope)
        if after is None:
            # As REST and SSE answer 400 for the same mistake.
            await refuse(self, Refused(CLOSE_INVALID, "invalid_after", "`after` must be a whole number of 0 or more."))
            return
        self.cursor = EventCursor(self.conversation.pk, after)
        self.cursor.at_rest = self.conversation.active_run_id is None
        self.send_lock = asyncio.Lock()
        # Join the group before replaying so no event committed in between is missed. If the layer
        # is down, the socket still opens and reads the database until it is back.
        await self.listener.join(realtime.conversation_group(self.conversation.pk))
        await self.accept(subprotocol=chosen_subprotocol(self.scope))
        await self._catch_up()
        self.resync = asyncio.create_task(self._resync_forever())

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "resync"):
            self.resync.cancel()
        await self.listener.leave()

    async def _authorize(self) -> tuple[Conversation, str, bool]:
        """The conversation this socket may watch, the end user it speaks for, and whether it may
        send and interrupt; Refused says why not."""
        kwargs = self.scope["url_route"]["kwargs"]
        tenant_id, conversation_id = kwargs["tenant"], kwargs["conversation_id"]
        headers = dict(self.scope.get("headers", []))
        origin = headers.get(b"origin", b"").decode(errors="replace")
        if origin and not origin_allowed(origin):
            raise Refused(
                CLOSE_REFUSED,
                "origin_refused",
                "This page's origin may not open the socket: it must match ALLOWED_HOSTS or WEBSOCKET_ALLOWED_ORIGINS.",
            )
        token = parse_qs(self.scope.get("query_string", b"").decode()).get("token", [""])[0]
        for subprotocol in self.scope.get("subprotocols", []):
            if subprotocol.startswith(TOKEN_SUBPROTOCOL_PREFIX):
                token = subprotocol.removeprefix(TOKEN_SUBPROTOCOL_PREFIX)
        if token:
            claims = read_stream_token(token)
            if claims is None or claims["c"] != str(conversation_id) or claims["t"] != tenant_id:
                raise Refused(
                    CLOSE_REFUSED,
                    "invalid_token",
                    "The stream token is invalid, expired or for another conversation; "
                    "get a new one from POST /api/tenants/{tenant}/conversations/{id}/stream-token.",
                )
            user_id, can_steer = claims.get("u", ""), True
            self.end_user_session = claims.get("e") == "1"
            self.token_claims = claims
        else:
            # Staff watch any conversation with their admin session; a cookie is sent cross-site,
            # so this path requires a same-origin browser.
            user = self.scope.get("user")
            if not (origin and user is not None and user.is_active and user.is_staff):
                raise Refused(
                    CLOSE_UNAUTHENTICATED,
                    "not_authenticated",
                    "Send a stream token from POST /api/tenants/{tenant}/conversations/{id}/stream-token, "
                    "as ?token= or as the subprotocol token.<token>.",
                )
            # Watching needs staff; steering someone's run needs the permission to change runs.
            user_id, can_steer = "", await sync_to_async(user.has_perm)("conversations.change_run")
            self.staff, self.decider = user, operator_decider(user.get_username())
        conversation = await Conversation.objects.filter(pk=conversation_id, tenant_id=tenant_id).afirst()
        if conversation is None:  # or another tenant's: both answer alike
            raise Refused(CLOSE_NOT_FOUND, "not_found", "Not found.")
        return conversation, user_id, can_steer

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            request = load_json((text_data or "").encode())
        except exceptions.ParseError as exc:
            await self._send_error(
                "invalid_json", f'{exc.detail} Send JSON text frames, e.g. {{"type": "message", "text": "…"}}.'
            )
            return
        kind = request.get("type") if isinstance(request, dict) else None
        if kind in ("message", "interrupt") and not self.can_steer:
            await self._send_error(
                "forbidden", "This account may watch but not steer runs (it needs conversations.change_run)."
            )
            return
        if kind in DECIDING_PERMISSIONS and not await self._may_decide(DECIDING_PERMISSIONS[kind]):
            await self._send_error(
                "forbidden",
                f"This account may watch but not decide for runs (it needs {DECIDING_PERMISSIONS[kind]}).",
            )
            return
        try:
            if kind == "message":
                await self._start_run(request)
            elif kind == "interrupt":
                run = await sync_to_async(services.interrupt_run)(self.conversation)
                await self._send_json({"type": "ack", "request": "interrupt", "run_id": str(run.pk)})
            elif kind == "approve":
                await self._approve(request)
            elif kind == "answer":
                await self._answer(request)
            elif kind == "ping":
                await self._send_json({"type": "pong", "last_seq": self.cursor.last_seq})
            else:
                await self._send_error(
                    "unknown_type", 'Unknown frame type; use "message", "interrupt", "approve", "answer" or "ping".'
                )
        except ServiceError as exc:
            await self._send_error(exc.code, exc.message, exc.retry_after)

    async def _start_run(self, request: dict[str, Any]) -> None:
        body = MessageCreateSerializer(data={k: v for k, v in request.items() if k != "type"})
        if not await sync_to_async(body.is_valid)():
            await self._send_error("invalid", "; ".join(flatten_errors(body.errors)))
            return
        if body.validated_data.get("agent") and self.end_user_session:
            # As the chat session's REST requests: only the agents its chat page offers, never a pinned version.
            agent = body.validated_data["agent"]
            await sync_to_async(lambda: choose_agent_as_end_user(self.conversation.tenant, agent))()
        sent = await sync_to_async(services.send_message)(self.conversation, body.run_options(self.user_id))
        # Serialized where the database may be read: the run names its agent version's profile.
        data = await sync_to_async(lambda: MessageAcceptedSerializer.of(sent))()
        await self._send_json({"type": "ack", "request": "message", "disposition": sent.disposition.value, "run": data})

    async def _may_decide(self, permission: str) -> bool:
        """A stream token's socket decides as its key or end user; a staff socket needs the model permission."""
        if self.staff is None:
            return True
        return bool(await sync_to_async(self.staff.has_perm)(permission))

    def _decider(self) -> Who:
        """Who the socket decides as (call where the database may be read)."""
        if self.decider is None:
            assert self.token_claims is not None  # a staff socket has its operator from the start
            self.decider = stream_token_decider(self.token_claims)
        return self.decider

    async def _approve(self, request: dict[str, Any]) -> None:
        def decide(approval: Approval, who: Who, body: ApprovalDecisionFrameSerializer) -> dict[str, Any]:
            return dict(ApprovalSerializer(services.decide_approval(approval, who, **body.as_decision())).data)

        await self._settle(request, ApprovalDecisionFrameSerializer(data=frame_body(request)), Approval, decide)

    async def _answer(self, request: dict[str, Any]) -> None:
        def answer(question: Question, who: Who, body: QuestionAnswerFrameSerializer) -> dict[str, Any]:
            answers = body.validated_data["answers"]
            return dict(QuestionSerializer(services.answer_question(question, who, answers)).data)

        await self._settle(request, QuestionAnswerFrameSerializer(data=frame_body(request)), Question, answer)

    async def _settle(
        self,
        request: dict[str, Any],
        body: Any,
        model: type[Approval] | type[Question],
        settle: Callable[[Any, Who, Any], dict[str, Any]],
    ) -> None:
        """`approve` and `answer`: the frame checked, its request found as REST finds it, settled (once: a second
        time is `already_decided`), and acknowledged with the request as REST shows it."""
        name = "approval" if model is Approval else "question"
        if not body.is_valid():
            await self._send_error("invalid", "; ".join(flatten_errors(body.errors)))
            return
        found = await self._own_request(model, body.validated_data[f"{name}_id"])

        def settled() -> dict[str, Any] | None:
            if found is None:
                return None
            try:
                return settle(found, self._decider(), body)
            except model.DoesNotExist:  # its conversation was deleted meanwhile
                return None

        data = await sync_to_async(settled)()
        if data is None:
            await self._send_error("not_found", f"No such {name} in this conversation.")
            return
        await self._send_json({"type": "ack", "request": request["type"], name: data})

    async def _own_request(self, model: type[Approval] | type[Question], pk: Any) -> Any:
        """The socket's conversation's request, seen as REST sees it: with an end user, only theirs (another
        conversation's, another end user's and a missing one alike are None)."""
        rows = model.objects.filter(pk=pk, conversation_id=self.conversation.pk)
        if self.user_id:
            rows = rows.filter(user_id=self.user_id)
        return await rows.afirst()

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Live events are the hot path: Channels' dispatch first runs close_old_connections on the
        # thread-sensitive executor, which queues each frame behind any sync work in the process
        # (tens of ms under load). Event copies need no database; repairs open their own.
        if message["type"] == realtime.EVENTS_MESSAGE_TYPE:
            await self.conversation_events(message)
        elif message["type"] == realtime.LAYER_POLL_MESSAGE_TYPE:
            if hasattr(self, "cursor"):  # polls can come before connect() has authorized the socket
                await self._catch_up()
        else:
            await super().dispatch(message)

    async def conversation_events(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            try:
                frames = await self.cursor.receive(message)
            except DatabaseError as exc:  # a gap to repair, and the database is away: the resync retries
                logger.warning("Conversation %s: repairing a gap failed (%s)", self.conversation.pk, exc)
                return
            await self._send_frames(frames)

    async def _catch_up(self) -> None:
        """Send every stored event the client has not had; the next resync retries if the database is away."""
        async with self.send_lock:
            try:
                frames = await self.cursor.catch_up()
            except DatabaseError as exc:
                logger.warning("Conversation %s: reading its events failed (%s)", self.conversation.pk, exc)
                return
            await self._send_frames(frames)

    async def _resync_forever(self) -> None:
        # A lost broadcast is repaired at the next one; this covers the last broadcast of a run.
        # Sockets whose conversation is at rest ask nothing, so a thousand idle ones cost no queries.
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            if self.cursor.at_rest:
                continue
            with contextlib.suppress(DatabaseError):
                if await database_sync_to_async(latest_seq)(self.conversation.pk) > self.cursor.last_seq:
                    await self._catch_up()

    async def _send_frames(self, frames: list[Frame]) -> None:
        for _, frame in frames:
            await self.send(text_data=frame)

    async def _send_json(self, payload: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(payload, default=str))

    async def _send_error(self, code: str, message: str, retry_after: int | None = None) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if retry_after is not None:
            error["retry_after"] = retry_after
        await self._send_json({"type": "error", "error": error})


def frame_body(request: dict[str, Any]) -> dict[str, Any]:
    """A client frame's fields besides its type."""
    return {name: value for name, value in request.items() if name != "type"}


def chosen_subprotocol(scope: dict[str, Any]) -> str | None:
    # Browsers fail a handshake that offered subprotocols but got none back: answer ours, or
    # else echo the token one.
    offered = scope.get("subprotocols", [])
    return SUBPROTOCOL if SUBPROTOCOL in offered else next(iter(offered), None)


async def refuse(consumer: AsyncWebsocketConsumer, refused: Refused) -> None:
    """Accept only to say why in an error frame, then close with the refusal's code (and the reason, for
    servers that pass one on). Nothing of the conversation is sent."""
    await consumer.accept(subprotocol=chosen_subprotocol(consumer.scope))
    frame = {"type": "error", "error": {"code": refused.code, "message": refused.message}}
    await consumer.send(text_data=json.dumps(frame))
    # A close reason is at most 123 bytes; the frame carries the whole message.
    await consumer.close(code=refused.close_code, reason=refused.code)


def parse_after(scope: dict[str, Any]) -> int | None:
    """The socket's `?after=` (0 when absent), or None when it is not a whole number of 0 or more."""
    raw = parse_qs(scope.get("query_string", b"").decode()).get("after", ["0"])[0]
    return int(raw) if raw.isascii() and raw.isdigit() else None


class NoSuchSocket(AsyncWebsocketConsumer):
    """Any other WebSocket path: refused as an unknown conversation's is, saying where sockets are."""

    channel_layer_alias = "none"  # no layer: nothing to listen to

    async def connect(self) -> None:
        message = "No WebSocket at this path; a conversation's is /ws/tenants/{tenant}/conversations/{id}/."
        await refuse(self, Refused(CLOSE_NOT_FOUND, "not_found", message))
