"""EventCursor: each event once, in seq order, and whether the conversation is at rest."""

import pytest
from asgiref.sync import sync_to_async

from conversations.events import EventItem, append_events
from conversations.models import Conversation, Event, Run
from conversations.realtime import events_message
from conversations.streams import EventCursor

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def run(conversation: Conversation) -> Run:
    return Run.objects.create(conversation=conversation, model=conversation.model, input="Hi")


async def test_a_cursor_is_not_at_rest_while_the_last_event_it_delivered_is_not_terminal(
    conversation: Conversation, run: Run
) -> None:
    cursor = EventCursor(conversation.pk, 0)
    started = await append_events_async(conversation, run, [("run.queued", {}), ("message.delta", {"text": "Hi"})])

    frames = await cursor.receive(events_message(started))

    assert [seq for seq, _ in frames] == [1, 2]
    assert not cursor.at_rest


async def test_a_terminal_event_puts_the_cursor_at_rest(conversation: Conversation, run: Run) -> None:
    cursor = EventCursor(conversation.pk, 0)
    await append_events_async(conversation, run, [("run.queued", {}), ("message.delta", {"text": 'a "type":"x"'})])
    ended = await append_events_async(conversation, run, [("run.completed", {"result": "done"})])

    frames = await cursor.receive(events_message(ended))  # a gap: the first two are read from the database

    assert [seq for seq, _ in frames] == [1, 2, 3]
    assert cursor.at_rest


async def append_events_async(conversation: Conversation, run: Run, items: list[EventItem]) -> list[Event]:
    return await sync_to_async(append_events)(conversation.pk, run.pk, items)
