"""The one path from stored events to live listeners, and from interrupt requests to running runs.

The database is the source of truth; the channel layer only carries copies for speed. A listener
that sees a gap in seq reads the database, so a dropped channel-layer message never loses an event.
"""

import asyncio
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer

from conversations.models import Event

EVENTS_MESSAGE_TYPE = "conversation.events"
INTERRUPT_MESSAGE_TYPE = "run.interrupt"
# Larger batches travel as a seq range only; listeners read them from the database.
MAX_INLINE_BYTES = 256 * 1024


def conversation_group(conversation_id: UUID | str) -> str:
    return f"conversation.{conversation_id}"


def run_control_group(run_id: UUID | str) -> str:
    return f"run.{run_id}"


def encode_event(event: Event) -> str:
    # Plain json.dumps on purpose: a UUID or datetime that slipped into data fails here, in tests.
    return json.dumps(event.as_envelope(), separators=(",", ":"))


def events_message(events: Sequence[Event]) -> dict[str, Any]:
    frames = [encode_event(event) for event in events]
    message: dict[str, Any] = {
        "type": EVENTS_MESSAGE_TYPE,
        "first_seq": events[0].seq,
        "last_seq": events[-1].seq,
    }
    if sum(len(frame) for frame in frames) <= MAX_INLINE_BYTES:
        message["frames"] = frames
    return message


_serving_loop: asyncio.AbstractEventLoop | None = None


def bind_serving_loop() -> None:
    """Remember the web server's event loop (called by the ASGI application)."""
    global _serving_loop
    _serving_loop = asyncio.get_running_loop()


async def group_send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    loop = _serving_loop
    if (
        isinstance(layer, InMemoryChannelLayer)
        and loop is not None
        and not loop.is_closed()
        and loop is not asyncio.get_running_loop()
    ):
        # The in-memory layer's queues belong to the web server's loop; a run executing on a
        # background thread of the web process must deliver there, or listeners never wake.
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop))
    else:
        await layer.group_send(group, message)


async def publish_events(conversation_id: UUID, events: Sequence[Event]) -> None:
    """Tell live listeners about committed events. Call only after the transaction committed."""
    if events:
        await group_send(conversation_group(conversation_id), events_message(events))


def publish_events_sync(conversation_id: UUID, events: Sequence[Event]) -> None:
    async_to_sync(publish_events)(conversation_id, events)


_interrupt_callbacks: dict[UUID, Callable[[], None]] = {}
_interrupt_callbacks_lock = threading.Lock()


@contextmanager
def interrupt_callback(run_id: UUID, callback: Callable[[], None]) -> Iterator[None]:
    """While the block runs, interrupts of this run signalled in this process call `callback` directly."""
    with _interrupt_callbacks_lock:
        _interrupt_callbacks[run_id] = callback
    try:
        yield
    finally:
        with _interrupt_callbacks_lock:
            _interrupt_callbacks.pop(run_id, None)


def signal_interrupt(run_id: UUID) -> None:
    """Tell the process running `run_id` to interrupt it (the heartbeat also notices, more slowly)."""
    with _interrupt_callbacks_lock:
        callback = _interrupt_callbacks.get(run_id)
    if callback is not None:
        callback()
        return
    async_to_sync(group_send)(run_control_group(run_id), {"type": INTERRUPT_MESSAGE_TYPE})
