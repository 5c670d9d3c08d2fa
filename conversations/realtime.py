"""The one path from stored events to live listeners, and from interrupt requests to running runs.

The database is the source of truth; the channel layer only carries copies for speed. A listener
that sees a gap in seq reads the database, so a dropped channel-layer message never loses an event,
and a listener whose channel layer fails (Redis restarting) reads the database until it is back.
"""

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer

from conversations.models import Event

logger = logging.getLogger(__name__)

EVENTS_MESSAGE_TYPE = "conversation.events"
INTERRUPT_MESSAGE_TYPE = "run.interrupt"
# A person decided one of the run's approvals or answered its question; or a message was sent to steer it.
DECIDED_MESSAGE_TYPE = "run.decided"
STEER_MESSAGE_TYPE = "run.steer"
# Made up by a GroupListener, never sent: "the layer may have lost messages; read the database".
LAYER_POLL_MESSAGE_TYPE = "layer.poll"
# A listener whose channel layer fails retries after this, doubling up to the maximum (GroupListener):
# a blip is repaired within a fraction of a second, and during an outage (Redis restarting) each socket
# asks at most every few seconds instead of hammering the layer it is waiting for. Every retry also
# reads the database, so events keep flowing at that pace meanwhile.
LAYER_RETRY_FIRST_SECONDS = 0.25
LAYER_RETRY_MAX_SECONDS = 5.0
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
    """`publish_events` for sync code; a failing layer is logged, since the events are stored anyway."""
    try:
        async_to_sync(publish_events)(conversation_id, events)
    except Exception as exc:
        logger.warning(
            "Broadcasting events %d-%d of conversation %s failed (%s: %s); they are stored, and listeners "
            "read them from the database",
            events[0].seq,
            events[-1].seq,
            conversation_id,
            type(exc).__name__,
            exc,
        )


_control_callbacks: dict[UUID, Callable[[dict[str, Any]], object]] = {}
_control_callbacks_lock = threading.Lock()


@contextmanager
def control_callback(run_id: UUID, callback: Callable[[dict[str, Any]], object]) -> Iterator[None]:
    """While the block runs, control messages for this run signalled in this process call `callback` directly."""
    with _control_callbacks_lock:
        _control_callbacks[run_id] = callback
    try:
        yield
    finally:
        with _control_callbacks_lock:
            _control_callbacks.pop(run_id, None)


def signal_run(run_id: UUID, message: dict[str, Any]) -> None:
    """Tell the process running `run_id` something (an interrupt, a decision, a message to steer with).

    Best effort: a lost signal is found by the run's own database checks (its heartbeat, its waits), later."""
    with _control_callbacks_lock:
        callback = _control_callbacks.get(run_id)
    if callback is not None:
        callback(message)
        return
    try:
        async_to_sync(group_send)(run_control_group(run_id), message)
    except Exception as exc:
        logger.warning(
            "Signalling %s to run %s failed (%s: %s); its worker finds out from the database",
            message.get("type"),
            run_id,
            type(exc).__name__,
            exc,
        )


def signal_interrupt(run_id: UUID) -> None:
    """Tell the process running `run_id` to interrupt it (the heartbeat also notices, more slowly)."""
    signal_run(run_id, {"type": INTERRUPT_MESSAGE_TYPE})


class LayerHealth:
    """This process's view of its channel layer, so an outage is logged once, not once per listener."""

    def __init__(self) -> None:
        self.down_since: float | None = None
        self._lock = threading.Lock()

    def failed(self, what: str, exc: BaseException) -> None:
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
        logger.warning(
            "The channel layer failed while %s (%s: %s); live listeners read the database until it is back",
            what,
            type(exc).__name__,
            exc,
        )

    def recovered(self) -> None:
        with self._lock:
            if self.down_since is None:
                return
            down_for, self.down_since = time.monotonic() - self.down_since, None
        logger.warning("The channel layer is back after %.1f s; live listeners resume", down_for)


layer_health = LayerHealth()


class GroupListener:
    """One channel of the layer, subscribed to groups, that outlives channel-layer failures.

    `receive()` never raises because of the layer. While the layer fails it retries with backoff
    and returns a `layer.poll` message after each try, so its owner keeps reading the database; once
    the layer answers again it joins its groups anew (a restarted Redis has forgotten them) and
    returns one more `layer.poll` for what the outage hid.
    """

    def __init__(self, layer: BaseChannelLayer, channel: str) -> None:
        self.layer = layer
        self.channel = channel
        self.groups: set[str] = set()
        self.joined = True
        self.retry_delay = LAYER_RETRY_FIRST_SECONDS

    @classmethod
    async def open(cls, *groups: str) -> "GroupListener":
        """A listener on a new channel of the default layer, joined to `groups` where the layer allows."""
        layer = get_channel_layer()
        assert layer is not None, "CHANNEL_LAYERS has no default layer"
        listener = cls(layer, await layer.new_channel())
        for group in groups:
            await listener.join(group)
        return listener

    async def join(self, group: str) -> bool:
        """Subscribe to `group`; when the layer fails, the next `receive()` tries again."""
        self.groups.add(group)
        try:
            await self.layer.group_add(group, self.channel)
        except Exception as exc:
            layer_health.failed("joining a group", exc)
            self.joined = False
            return False
        return True

    async def leave(self) -> None:
        for group in self.groups:
            try:
                await self.layer.group_discard(group, self.channel)
            except Exception:  # the layer is down: the membership expires with its group_expiry
                break
        self.groups.clear()

    async def receive(self) -> dict[str, Any]:
        if not self.joined:
            return await self._rejoin()
        try:
            message = await self.layer.receive(self.channel)
        except Exception as exc:
            layer_health.failed("receiving", exc)
            self.joined = False
            await self._back_off()
            return {"type": LAYER_POLL_MESSAGE_TYPE}
        self.retry_delay = LAYER_RETRY_FIRST_SECONDS
        return message

    async def _rejoin(self) -> dict[str, Any]:
        try:
            for group in self.groups:
                await self.layer.group_add(group, self.channel)
        except Exception as exc:
            layer_health.failed("joining a group", exc)
            await self._back_off()
        else:
            self.joined = True
            self.retry_delay = LAYER_RETRY_FIRST_SECONDS
            layer_health.recovered()
        return {"type": LAYER_POLL_MESSAGE_TYPE}

    async def _back_off(self) -> None:
        # Jitter, so a thousand sockets of one process do not retry in step.
        await asyncio.sleep(self.retry_delay * random.uniform(0.5, 1.0))  # noqa: S311 - not for security
        self.retry_delay = min(self.retry_delay * 2, LAYER_RETRY_MAX_SECONDS)
