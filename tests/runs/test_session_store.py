"""The database session store keeps the SDK's contract, per conversation, under concurrent appends."""

import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from claude_agent_sdk.testing import run_session_store_conformance
from claude_agent_sdk.types import SessionKey
from django.db import connection, connections

from conversations.models import Conversation, SessionEntry
from runs.session_store import DatabaseSessionStore
from tenants.models import Tenant

# The store works from threads of its own, which see only committed data.
pytestmark = pytest.mark.django_db(transaction=True)

KEY: SessionKey = {"project_key": "-workspace", "session_id": "5f0c6a53-3c1e-4a43-9a43-0d1c3f3e9b11"}
SUBAGENT_KEY: SessionKey = {**KEY, "subpath": "subagents/agent-1"}


def entry(n: int, **fields: Any) -> dict[str, Any]:
    return {"type": "user", "n": n, **fields}


@pytest.fixture
def new_store(tenant: Tenant) -> Callable[[], Coroutine[Any, Any, DatabaseSessionStore]]:
    """Makes a store for a fresh conversation of `tenant`."""

    async def make() -> DatabaseSessionStore:
        conversation = await sync_to_async(Conversation.objects.create)(tenant=tenant, model=tenant.default_model)
        return DatabaseSessionStore(conversation.pk)

    return make


@pytest.mark.asyncio
async def test_store_passes_the_sdks_conformance_suite(new_store: Callable[..., Any]) -> None:
    await run_session_store_conformance(new_store)


@pytest.mark.asyncio
async def test_another_conversations_store_sees_nothing_of_this_one(
    conversation: Conversation, other_conversation: Conversation
) -> None:
    store, other_store = DatabaseSessionStore(conversation.pk), DatabaseSessionStore(other_conversation.pk)
    await store.append(KEY, [entry(1, uuid="a")])
    await store.append(SUBAGENT_KEY, [entry(2, uuid="b")])

    await other_store.delete(KEY)

    assert await other_store.load(KEY) is None
    assert await other_store.load(SUBAGENT_KEY) is None
    assert await other_store.list_sessions(KEY["project_key"]) == []
    assert await other_store.list_subkeys(KEY) == []
    assert await store.load(KEY) == [entry(1, uuid="a")]
    assert await store.load(SUBAGENT_KEY) == [entry(2, uuid="b")]


@pytest.mark.asyncio
async def test_a_repeated_uuid_is_ignored_and_entries_without_uuid_are_always_appended(
    conversation: Conversation,
) -> None:
    store = DatabaseSessionStore(conversation.pk)

    await store.append(KEY, [entry(1, uuid="a"), entry(2), entry(3, uuid="b"), entry(4, uuid="a")])
    await store.append(KEY, [entry(5, uuid="b"), entry(2), entry(6, uuid="c")])

    assert await store.load(KEY) == [entry(1, uuid="a"), entry(2), entry(3, uuid="b"), entry(2), entry(6, uuid="c")]


@pytest.mark.asyncio
async def test_the_same_uuid_may_appear_in_another_session_or_subagent_transcript(conversation: Conversation) -> None:
    store = DatabaseSessionStore(conversation.pk)
    other_session: SessionKey = {**KEY, "session_id": "another"}

    for key in (KEY, SUBAGENT_KEY, other_session):
        await store.append(key, [entry(1, uuid="a")])

    assert [await store.load(key) for key in (KEY, SUBAGENT_KEY, other_session)] == [[entry(1, uuid="a")]] * 3


@pytest.mark.asyncio
async def test_entries_with_nul_characters_and_lone_surrogates_round_trip(conversation: Conversation) -> None:
    # Tool output puts NULs into transcripts (PostgreSQL's jsonb refuses them); a string cut off
    # in the middle of a UTF-16 pair leaves a lone surrogate.
    store = DatabaseSessionStore(conversation.pk)
    odd = entry(1, uuid="a", content="a\x00b", cut="\ud83d", nested={"emoji": "🙂", "list": [1.5, None, True]})

    await store.append(KEY, [odd])

    assert await store.load(KEY) == [odd]


def test_an_append_batch_is_one_insert(conversation: Conversation, django_assert_num_queries: Any) -> None:
    store = DatabaseSessionStore(conversation.pk)

    # BEGIN, lock the conversation, read the last position and the known uuids, one INSERT, COMMIT.
    with django_assert_num_queries(6):
        async_to_sync(store.append)(KEY, [entry(n, uuid=str(n)) for n in range(100)])

    assert SessionEntry.objects.filter(conversation=conversation).count() == 100


@pytest.mark.skipif(
    connection.vendor == "sqlite",
    reason="SQLite's shared-cache test database fails concurrent writers at once instead of waiting for them",
)
def test_concurrent_appends_keep_each_batch_whole_and_in_order(conversation: Conversation) -> None:
    store = DatabaseSessionStore(conversation.pk)
    writers = 8
    start_together = threading.Barrier(writers)

    def append_batch(batch: int) -> None:
        try:
            start_together.wait()
            # Each thread has its own database connection, as separate workers would.
            async_to_sync(store.append)(KEY, [entry(n, uuid=f"{batch}-{n}", batch=batch) for n in range(5)])
        finally:
            connections.close_all()

    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(append_batch, range(writers)))

    loaded = async_to_sync(store.load)(KEY)
    assert loaded is not None and len(loaded) == writers * 5
    batches = [loaded[i : i + 5] for i in range(0, len(loaded), 5)]
    assert all([e["n"] for e in b] == [0, 1, 2, 3, 4] and len({e["batch"] for e in b}) == 1 for b in batches)
    assert sorted(b[0]["batch"] for b in batches) == list(range(writers))


@pytest.mark.asyncio
async def test_sessions_are_listed_with_the_time_of_their_last_main_transcript_write(
    conversation: Conversation,
) -> None:
    store = DatabaseSessionStore(conversation.pk)
    await store.append(KEY, [entry(1)])
    await store.append(KEY, [entry(2)])
    await store.append({**KEY, "project_key": "-elsewhere"}, [entry(3)])

    sessions = await store.list_sessions(KEY["project_key"])

    last_write = await SessionEntry.objects.filter(conversation=conversation, project_key=KEY["project_key"]).alatest(
        "created_at"
    )
    assert sessions == [{"session_id": KEY["session_id"], "mtime": int(last_write.created_at.timestamp() * 1000)}]


@pytest.mark.asyncio
async def test_deleting_the_conversation_deletes_its_transcripts(conversation: Conversation) -> None:
    store = DatabaseSessionStore(conversation.pk)
    await store.append(KEY, [entry(1)])

    await conversation.adelete()

    assert await SessionEntry.objects.acount() == 0
