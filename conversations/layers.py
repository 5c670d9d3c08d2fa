"""The channel layer: channels-redis' own, with a group send in two Redis round trips instead of four.

Every stored batch of events is one group send (conversations.realtime.publish_events), on the path
from the worker to each WebSocket. channels-redis 4.3 spends four round trips on it: expire the
group's old members, read the members, expire each member channel's old messages, push the message.
Here the first two are one script and the last two another, on the same keys, with the same expiry,
capacity and message format, so receivers (channels-redis' own `receive`) see no difference.
"""

import asyncio
import logging
import time
from typing import Any

from channels_redis.core import RedisChannelLayer

logger = logging.getLogger(__name__)

# Expire the group's members that have not re-joined within the group expiry, then name the rest.
MEMBERS_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

# channels-redis' group-send script, which also first drops each channel's expired messages (its
# separate pipeline). ARGV: one message per key, one capacity per key, now, expiry, expired-before.
PUSH_LUA = """
local over_capacity = 0
local current_time = ARGV[#ARGV - 2]
local expiry = ARGV[#ARGV - 1]
local expired_before = ARGV[#ARGV]
for i=1,#KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, expired_before)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[i + #KEYS]) then
        redis.call('ZADD', KEYS[i], current_time, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        over_capacity = over_capacity + 1
    end
end
return over_capacity
"""


class EventsChannelLayer(RedisChannelLayer):
    """`channels_redis.core.RedisChannelLayer` with a group send of two round trips (scripts cached by Redis)."""

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert self.require_valid_group_name(group), "Group name not valid"
        key = self._group_key(group)
        connection = self.connection(self.consistent_hash(group))
        now = time.time()
        members = await connection.eval(MEMBERS_LUA, 1, key, int(now) - self.group_expiry)
        channel_names = [name.decode("utf8") for name in members]
        if not channel_names:
            return
        by_connection, messages, capacities = self._map_channel_keys_to_connection(channel_names, message)

        async def push(index: int, channel_keys: list[Any]) -> int:
            args = [messages[channel_key] for channel_key in channel_keys]
            args += [capacities[channel_key] for channel_key in channel_keys]
            args += [now, self.expiry, int(now) - int(self.expiry)]
            return int(await self.connection(index).eval(PUSH_LUA, len(channel_keys), *channel_keys, *args))

        over_capacity = await asyncio.gather(*(push(index, keys) for index, keys in by_connection.items()))
        if sum(over_capacity):
            logger.info("%s of %s channels over capacity in group %s", sum(over_capacity), len(channel_names), group)
