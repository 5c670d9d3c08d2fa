"""GroupListener: a channel-layer subscription that outlives the layer failing under it."""

import asyncio
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from conversations.realtime import LAYER_POLL_MESSAGE_TYPE, GroupListener

pytestmark = pytest.mark.asyncio


class FlakyLayer(InMemoryChannelLayer):
    """The in-memory layer, made to fail like a channel layer whose Redis is down, and to forget
    every group membership when it comes back, as a restarted Redis without persistence does."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def fail(self) -> None:
        self.down = True
        self.groups.clear()

    async def receive(self, channel: str) -> dict[str, Any]:
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return await super().receive(channel)

    async def group_add(self, group: str, channel: str) -> None:
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        await super().group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        await super().group_discard(group, channel)


@pytest.fixture
def layer() -> FlakyLayer:
    return FlakyLayer()


async def test_messages_sent_to_the_group_are_received(layer: FlakyLayer) -> None:
    listener = GroupListener(layer, await layer.new_channel())
    assert await listener.join("conversation.a")

    await layer.group_send("conversation.a", {"type": "conversation.events", "n": 1})

    assert await asyncio.wait_for(listener.receive(), 1) == {"type": "conversation.events", "n": 1}


async def test_a_failing_layer_yields_polls_instead_of_raising(layer: FlakyLayer) -> None:
    listener = GroupListener(layer, await layer.new_channel())
    await listener.join("conversation.a")
    layer.fail()

    polls = [await asyncio.wait_for(listener.receive(), 5) for _ in range(3)]

    assert polls == [{"type": LAYER_POLL_MESSAGE_TYPE}] * 3


async def test_when_the_layer_is_back_the_listener_rejoins_its_groups_and_polls_once_more(layer: FlakyLayer) -> None:
    listener = GroupListener(layer, await layer.new_channel())
    await listener.join("conversation.a")
    layer.fail()
    assert (await asyncio.wait_for(listener.receive(), 5))["type"] == LAYER_POLL_MESSAGE_TYPE

    layer.down = False
    repair = await asyncio.wait_for(listener.receive(), 5)
    await layer.group_send("conversation.a", {"type": "conversation.events", "n": 2})

    assert repair == {"type": LAYER_POLL_MESSAGE_TYPE}
    assert await asyncio.wait_for(listener.receive(), 1) == {"type": "conversation.events", "n": 2}


async def test_a_group_joined_while_the_layer_is_down_is_joined_once_it_is_back(layer: FlakyLayer) -> None:
    listener = GroupListener(layer, await layer.new_channel())
    layer.fail()

    assert not await listener.join("conversation.a")
    layer.down = False
    assert (await asyncio.wait_for(listener.receive(), 5))["type"] == LAYER_POLL_MESSAGE_TYPE
    await layer.group_send("conversation.a", {"type": "conversation.events", "n": 3})

    assert await asyncio.wait_for(listener.receive(), 1) == {"type": "conversation.events", "n": 3}


async def test_leaving_while_the_layer_is_down_does_not_raise(layer: FlakyLayer) -> None:
    listener = GroupListener(layer, await layer.new_channel())
    await listener.join("conversation.a")
    layer.fail()

    await listener.leave()

    assert listener.groups == set()
