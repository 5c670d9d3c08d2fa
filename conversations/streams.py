"""Live event delivery: the cursor shared by SSE and WebSockets, and the SSE views.

A cursor delivers each event exactly once and in seq order. Live channel-layer messages carry
copies of new events; when one is missing (a gap in seq) or too large to carry, the cursor reads
the database, which always has them.
"""

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from rest_framework import exceptions

from api.errors import (
    DATABASE_ERRORS,
    ServiceError,
    allow_methods,
    api_exception_response,
    database_unavailable,
    flatten_errors,
    json_error,
    unsupported_media_type,
)
from api.parsers import is_json, load_json, read_bounded
from conversations import realtime
from conversations.events import TERMINAL_TYPES
from conversations.models import Conversation, Event
from conversations.serializers import MessageCreateSerializer
from runs import services
from tenants.auth import Principal, authenticate_headers, read_stream_token

logger = logging.getLogger(__name__)

Frame = tuple[int, str]
# Events read per query when a cursor catches up from the database: however long the conversation,
# each query (and the sync thread it occupies) stays short, while the usual catch-up (a reconnect
# after a few missed events, a gap in a broadcast) is one query.
CATCH_UP_BATCH = 1000


def stored_frames(conversation_id: UUID, after: int, limit: int = CATCH_UP_BATCH) -> list[Frame]:
    events = Event.objects.filter(conversation_id=conversation_id, seq__gt=after).order_by("seq")[:limit]
    return [(event.seq, realtime.encode_event(event)) for event in events]


def latest_seq(conversation_id: UUID) -> int:
    return Conversation.objects.filter(pk=conversation_id).values_list("last_seq", flat=True).first() or 0


def frame_type(frame: str) -> str:
    # The envelope's first string is its type (`{"seq":42,"type":"…"`); quotes inside data are escaped.
    start = frame.index('"type":"') + 8
    return frame[start : frame.index('"', start)]


class EventCursor:
    def __init__(self, conversation_id: UUID, after: int) -> None:
        self.conversation_id = conversation_id
        self.last_seq = after
        # True once the last event delivered ended its run: nothing more is due until a new run's
        # events arrive, and a lost broadcast of those shows as a gap in the next one.
        self.at_rest = True

    async def catch_up(self) -> list[Frame]:
        """Every stored event after the cursor."""
        frames: list[Frame] = []
        while True:
            batch = await database_sync_to_async(stored_frames)(self.conversation_id, self.last_seq)
            frames += batch
            if batch:
                self._delivered(batch)
            if len(batch) < CATCH_UP_BATCH:
                return frames

    async def receive(self, message: dict[str, Any]) -> list[Frame]:
        """The events of a live message not yet delivered, repairing any gap from the database."""
        if message["last_seq"] <= self.last_seq:
            return []
        frames = message.get("frames")
        if frames is None or message["first_seq"] > self.last_seq + 1:
            return await self.catch_up()
        first = message["first_seq"]
        fresh = [(first + i, frame) for i, frame in enumerate(frames) if first + i > self.last_seq]
        self._delivered(fresh)
        return fresh

    def _delivered(self, frames: list[Frame]) -> None:
        self.last_seq = frames[-1][0]
        self.at_rest = frame_type(frames[-1][1]) in TERMINAL_TYPES


def sse_frame(seq: int, frame: str) -> bytes:
    return f"id: {seq}\ndata: {frame}\n\n".encode()


def is_terminal_frame(frame: str, run_id: str) -> bool:
    if '"type":"run.' not in frame:
        return False
    envelope = json.loads(frame)
    return envelope["type"] in TERMINAL_TYPES and envelope["run_id"] == run_id


class MessageAnswered:
    """Whether an event ends the answer to a message: its run's terminal event; for a message sent to steer a
    running run, that run's terminal event once it took the message in (`message.steered` names it), else (the
    run ended first, and the message ran on its own after it) its own run's."""

    def __init__(self, message_id: str, steered_into: str | None = None) -> None:
        self.message_id = message_id
        self.steered_into = steered_into
        self.run_id = message_id

    def __call__(self, frame: str) -> bool:
        steered = self.steered_into and '"type":"message.steered"' in frame
        if steered and json.loads(frame)["data"].get("message_id") == self.message_id:
            self.run_id = str(self.steered_into)
        return is_terminal_frame(frame, self.run_id)


async def follow(conversation_id: UUID, after: int, until: Callable[[str], bool] | None = None) -> AsyncIterator[bytes]:
    """SSE bytes for every event after `after`, live, with heartbeats; ends after the event `until` says ends it.

    A failing channel layer does not end or stall the stream: it keeps its heartbeats and reads the
    database until the layer is back (see GroupListener).
    """
    # Subscribe before reading the database, so nothing committed in between is missed.
    listener = await realtime.GroupListener.open(realtime.conversation_group(conversation_id))
    cursor = EventCursor(conversation_id, after)
    heartbeat = settings.SSE_HEARTBEAT_SECONDS
    try:
        yield b"retry: 2000\n\n"
        frames = await cursor.catch_up()
        written_at = time.monotonic()
        while True:
            for seq, frame in frames:
                yield sse_frame(seq, frame)
                written_at = time.monotonic()
                if until is not None and until(frame):
                    return
            frames = []
            try:
                message = await asyncio.wait_for(listener.receive(), heartbeat - (time.monotonic() - written_at))
            except TimeoutError:
                yield b": heartbeat\n\n"
                written_at = time.monotonic()
                # A quiet stream also rechecks the database, in case the last broadcast was lost.
                message = {"type": realtime.LAYER_POLL_MESSAGE_TYPE}
            try:
                if message.get("type") == realtime.EVENTS_MESSAGE_TYPE:
                    frames = await cursor.receive(message)
                elif message.get("type") == realtime.LAYER_POLL_MESSAGE_TYPE:
                    frames = await cursor.catch_up()
            except DatabaseError as exc:  # the next heartbeat or poll tries again
                logger.warning("Conversation %s: reading its events failed (%s)", conversation_id, exc)
    finally:
        await listener.leave()


def sse_response(stream: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx must not buffer a live stream
    return response


def _find_conversation(
    request: HttpRequest, tenant: str, conversation_id: UUID
) -> tuple[Principal | None, Conversation]:
    """The conversation, for an API key or a stream token (EventSource cannot send headers)."""
    caller = authenticate_headers(request.headers)
    conversations = Conversation.objects.filter(pk=conversation_id, tenant_id=tenant)
    if caller is not None:
        caller.tenant(tenant)
        conversations = caller.narrow(conversations)
    else:
        claims = read_stream_token(request.GET.get("token", ""))
        if claims is None:
            raise exceptions.NotAuthenticated("Send an API key (X-API-Key or Authorization: Bearer) or a stream token.")
        if claims["c"] != str(conversation_id) or claims["t"] != tenant:
            raise Conversation.DoesNotExist
    return caller, conversations.get()


async def _authorize(
    request: HttpRequest, tenant: str, conversation_id: UUID
) -> tuple[Principal | None, Conversation] | HttpResponse:
    try:
        return await sync_to_async(_find_conversation)(request, tenant, conversation_id)
    except exceptions.APIException as exc:
        return api_exception_response(exc)
    except (Conversation.DoesNotExist, Http404):
        return json_error(404, "not_found", "Not found.")
    except DATABASE_ERRORS as exc:
        return database_unavailable(exc)


def _parse_after(request: HttpRequest) -> int:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0"
    try:
        after = int(raw)
    except ValueError:
        after = -1
    if after < 0:
        raise ServiceError("`after` and Last-Event-ID must be a whole number of 0 or more.")
    return after


@allow_methods("GET")
async def event_stream(request: HttpRequest, tenant: str, conversation_id: UUID) -> HttpResponseBase:
    """SSE of the conversation's events after `?after=` or `Last-Event-ID`, live; `id:` is the seq."""
    found = await _authorize(request, tenant, conversation_id)
    if isinstance(found, HttpResponse):
        return found
    _, conversation = found
    try:
        after = _parse_after(request)
    except ServiceError as exc:
        return exc.response()
    return sse_response(follow(conversation.pk, after))


@allow_methods("POST")
async def stream_message(request: HttpRequest, tenant: str, conversation_id: UUID) -> HttpResponseBase:
    """Send a message with `{"text": …}` and stream the conversation's events as SSE until the answer's run ends.

    While a run is active, the message is what its agent's busy policy makes it (`runs.services.send_message`):
    refused (409, no stream), or queued or interrupting (the stream runs through the active run's remaining events
    to the message's own run's terminal event), or steered (to the running run's terminal event)."""
    found = await _authorize(request, tenant, conversation_id)
    if isinstance(found, HttpResponse):
        return found
    caller, conversation = found
    if not is_json(request.content_type or ""):
        # Also what keeps a cross-site form (text/plain) from starting runs with a stream token.
        return api_exception_response(unsupported_media_type(request))
    try:
        body = load_json(read_bounded(request))
    except exceptions.APIException as exc:
        return api_exception_response(exc)
    serializer = MessageCreateSerializer(data=body)
    if not await sync_to_async(serializer.is_valid)():
        message = "; ".join(flatten_errors(serializer.errors))
        return json_error(400, "invalid", message, serializer.errors)
    try:
        sent = await sync_to_async(services.send_message)(
            conversation, serializer.run_options(caller.user_id if caller else "")
        )
    except ServiceError as exc:
        return exc.response()
    except DATABASE_ERRORS as exc:
        return database_unavailable(exc)
    steered_into = str(sent.run.pk) if sent.disposition == services.Disposition.STEERED else None
    return sse_response(
        follow(conversation.pk, sent.after_seq, until=MessageAnswered(str(sent.message_id), steered_into))
    )
