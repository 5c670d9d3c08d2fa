"""A run's events on their way out: stored in order, then broadcast."""

import asyncio
import logging
from typing import Any

from conversations import events, realtime
from conversations.events import EventItem
from conversations.models import Event, Run
from conversations.reconnect import call_database

logger = logging.getLogger(__name__)

# The most events one transaction stores. A burst (deltas piling up while a write is in flight) is
# written as several short transactions, not one long one that would hold the conversation's row lock
# (events.append_events) and keep the burst's first events from listeners until the last is stored.
# Deltas are a few hundred bytes, so a batch this size also stays under realtime.MAX_INLINE_BYTES and
# its broadcast carries the events instead of sending every listener to the database.
MAX_EVENTS_PER_WRITE = 200
# How long a closing writer waits for its last broadcasts before leaving them to the listeners'
# database reads (the channel layer may be down).
BROADCAST_DRAIN_SECONDS = 3.0


class EventWriter:
    """Stores a run's events in order, then broadcasts each stored batch.

    Events that arrive while a write is in flight are written together in the next one, so a fast
    stream costs one transaction per batch, not per token. Broadcasting runs beside storing: a slow
    or failing channel layer never holds up the database, which listeners repair from.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.last_seq = 0  # of the last event this writer stored
        self._queue: asyncio.Queue[EventItem | asyncio.Future[None] | None] = asyncio.Queue()
        self._stored: asyncio.Queue[list[Event] | None] = asyncio.Queue()
        self._broadcast_failures = 0
        self._writing = asyncio.create_task(self._write_forever())
        self._broadcasting = asyncio.create_task(self._broadcast_forever())

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self._queue.put_nowait((kind, data))

    async def flush(self) -> None:
        """Return once everything emitted so far is stored (not necessarily broadcast)."""
        stored = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(stored)
        await stored

    async def close(self) -> None:
        """Store everything emitted so far, broadcast it where the layer allows, then stop."""
        self._queue.put_nowait(None)
        await self._writing
        self._stored.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._broadcasting), BROADCAST_DRAIN_SECONDS)
        except TimeoutError:
            self._broadcasting.cancel()
            logger.warning("Run %s: its last broadcasts did not go out in time; its events are stored", self.run.pk)

    async def _write_forever(self) -> None:
        closing = False
        while not closing:
            item = await self._queue.get()
            batch: list[EventItem] = []
            flushed: list[asyncio.Future[None]] = []
            while item is not None:
                if isinstance(item, asyncio.Future):
                    flushed.append(item)
                else:
                    batch.append(item)
                if self._queue.empty() or len(batch) >= MAX_EVENTS_PER_WRITE:
                    break
                item = self._queue.get_nowait()
            closing = item is None
            if batch:
                await self._write(batch)
            for waiter in flushed:
                if not waiter.done():
                    waiter.set_result(None)

    async def _write(self, batch: list[EventItem]) -> None:
        try:
            events = await self._store(batch)
        except Exception:
            logger.exception("Storing %d events of run %s failed; they are lost", len(batch), self.run.pk)
            return
        if events:
            self.last_seq = events[-1].seq
            self._stored.put_nowait(events)

    async def _store(self, batch: list[EventItem]) -> list[Event]:
        attempts = 0

        def store() -> list[Event]:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                # The last try may have lost its connection during COMMIT, after the batch was
                # stored: only this writer adds events to a running run, so any after its last are it.
                stored = events.events_of_run_after(self.run.pk, self.last_seq)
                if stored:
                    return stored
            return events.append_events(self.run.conversation_id, self.run.pk, batch, while_running=True)

        return await call_database(f"Storing {len(batch)} events of run {self.run.pk}", store)

    async def _broadcast_forever(self) -> None:
        closing = False
        while not closing:
            events = await self._stored.get()
            closing = events is None
            batches = [] if events is None else [events]
            while not self._stored.empty():  # fell behind: one message for everything stored since
                more = self._stored.get_nowait()
                if more is None:
                    closing = True
                else:
                    batches.append(more)
            if batches:
                await self._broadcast([event for batch in batches for event in batch])

    async def _broadcast(self, events: list[Event]) -> None:
        try:
            await realtime.publish_events(self.run.conversation_id, events)
        except Exception as exc:
            # Logged once per outage: listeners read the database until the layer is back.
            if not self._broadcast_failures:
                logger.warning(
                    "Broadcasting events %d-%d of run %s failed (%s: %s); they are stored, and listeners "
                    "read them from the database",
                    events[0].seq,
                    events[-1].seq,
                    self.run.pk,
                    type(exc).__name__,
                    exc,
                )
            self._broadcast_failures += 1
            return
        if self._broadcast_failures:
            logger.warning(
                "Broadcasting events of run %s works again after %d failed broadcasts",
                self.run.pk,
                self._broadcast_failures,
            )
            self._broadcast_failures = 0
