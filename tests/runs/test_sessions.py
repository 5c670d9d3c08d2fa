"""A worker's warm sessions: which one may serve a conversation's next run, the caps that close them (count, memory,
idle), what the conversation is told, and how its next run is routed. Through real runs: tests/e2e/test_warm_sessions.py.

The sessions here have no CLI: a stand-in process says whether it still lives, and the memory it uses is set."""

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone
from pytest_django.fixtures import Settings

from agents.services import run_agent, update_profile
from conversations.models import Conversation, Run
from runs import lease
from runs.dispatch import reap_stale_runs, sweep_run_leftovers, warm_queue_of
from runs.prepare import session_terms
from runs.services import RunOptions, start_run
from runs.sessions import AgentSession, WarmSessions
from tenants.models import Tenant

MB = 1024 * 1024


@dataclass
class Process:
    pid: int
    returncode: int | None = None


@dataclass
class Transport:
    _process: Process


@dataclass
class Client:
    _transport: Transport


def live_session(conversation: Conversation, fingerprint: str = "terms", pid: int = 4242) -> AgentSession:
    session = AgentSession(conversation.pk, fingerprint)
    session.client = Client(Transport(Process(pid)))  # type: ignore[assignment]
    return session


def conversations(tenant: Tenant, count: int) -> list[Conversation]:
    return [Conversation.objects.create(tenant=tenant, model=tenant.default_model) for _ in range(count)]


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """Each stand-in pid's memory (PSS, bytes): 100 MB unless set."""
    used: dict[int, int] = {}
    monkeypatch.setattr("runs.sessions.memory_bytes", lambda pid: used.get(pid, 100 * MB))
    return used


async def settle() -> None:
    """Let the pool's background work (closing, measuring) run."""
    for _ in range(5):
        await asyncio.sleep(0.01)


async def fresh(conversation: Conversation) -> Conversation:
    return await Conversation.objects.aget(pk=conversation.pk)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_kept_session_serves_its_conversations_next_run_and_the_conversation_knows_where(
    conversation: Conversation, memory: dict[int, int]
) -> None:
    pool, session = WarmSessions(), live_session(conversation)

    assert await pool.keep(session)
    told = await fresh(conversation)
    assert (told.warm_worker, told.warm_session) == (lease.warm_worker(), session.id)
    assert told.warm_until is not None and told.warm_until > timezone.now()

    assert pool.take(told, "terms") is session
    assert len(pool) == 0 and not session.closed


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("why", ["other terms", "a run went elsewhere", "its CLI exited"])
async def test_a_session_that_may_not_serve_the_next_run_is_closed_and_the_conversation_told(
    conversation: Conversation, memory: dict[int, int], why: str
) -> None:
    pool, session = WarmSessions(), live_session(conversation)
    await pool.keep(session)
    told = await fresh(conversation)
    fingerprint = "terms"
    if why == "other terms":
        fingerprint = "changed"
    elif why == "a run went elsewhere":
        told.warm_session = "another"
    else:
        session.client._transport._process.returncode = 0  # type: ignore[union-attr]

    assert pool.take(told, fingerprint) is None
    await settle()
    assert session.closed
    if why != "a run went elsewhere":
        assert (await fresh(conversation)).warm_session == ""


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_past_the_count_the_least_recently_used_closes_first(
    tenant: Tenant, settings: Settings, memory: dict[int, int]
) -> None:
    settings.WARM_SESSIONS_MAX = 2
    first, second, third = await sync_to_async(conversations)(tenant, 3)
    pool = WarmSessions()
    sessions = {c.pk: live_session(c, pid=n) for n, c in enumerate((first, second, third), 1)}
    await pool.keep(sessions[first.pk])
    await pool.keep(sessions[second.pk])
    # The first is used again: the second is now the least recently used.
    again = pool.take(await fresh(first), "terms")
    assert again is sessions[first.pk]
    await pool.keep(again)

    await pool.keep(sessions[third.pk])
    await settle()

    assert sessions[second.pk].closed and not sessions[first.pk].closed and not sessions[third.pk].closed
    assert len(pool) == 2
    assert (await fresh(second)).warm_session == ""
    assert (await fresh(third)).warm_session == sessions[third.pk].id


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_past_the_memory_cap_the_least_recently_used_close_until_the_rest_fit(
    tenant: Tenant, settings: Settings, memory: dict[int, int]
) -> None:
    settings.WARM_SESSIONS_MEMORY_MB = 250
    kept = [live_session(c, pid=n) for n, c in enumerate(await sync_to_async(conversations)(tenant, 3), 1)]
    pool = WarmSessions()
    for session in kept:
        await pool.keep(session)
        await settle()

    assert [session.closed for session in kept] == [True, False, False]
    assert sum((await pool.memory()).values()) == 200 * MB

    memory[3] = 240 * MB  # the newest grows
    await pool.keep(pool.take(await fresh(Conversation(pk=kept[2].conversation_id)), "terms") or kept[2])
    await settle()
    assert [session.closed for session in kept] == [True, True, False]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_an_idle_session_closes_by_itself(
    conversation: Conversation, settings: Settings, memory: dict[int, int]
) -> None:
    settings.WARM_SESSION_IDLE_SECONDS = 0.05
    pool, session = WarmSessions(), live_session(conversation)
    await pool.keep(session)

    await asyncio.sleep(0.2)
    await settle()

    assert session.closed and len(pool) == 0
    assert (await fresh(conversation)).warm_session == ""


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_closing_all_at_shutdown_tells_every_conversation(tenant: Tenant, memory: dict[int, int]) -> None:
    kept = [live_session(c, pid=n) for n, c in enumerate(await sync_to_async(conversations)(tenant, 3), 1)]
    pool = WarmSessions()
    for session in kept:
        await pool.keep(session)

    assert await pool.close_all() == 3

    assert all(session.closed for session in kept)
    assert not await Conversation.objects.filter(tenant=tenant).exclude(warm_session="").aexists()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_no_session_is_kept_when_warm_sessions_are_off(
    conversation: Conversation, settings: Settings, memory: dict[int, int]
) -> None:
    settings.WARM_SESSIONS_MAX = 0
    pool, session = WarmSessions(), live_session(conversation)

    assert not await pool.keep(session)
    assert session.closed and (await fresh(conversation)).warm_session == ""


def test_the_terms_change_with_the_agent_profile_and_the_budgets_not_with_the_message(
    conversation: Conversation,
) -> None:
    def terms(text: str) -> str:
        run = start_run(conversation, RunOptions(text))
        Run.objects.filter(pk=run.pk).update(status=Run.Status.COMPLETED)
        Conversation.objects.filter(pk=conversation.pk).update(active_run=None)
        run = Run.objects.select_related("conversation__tenant", "model").get(pk=run.pk)
        return session_terms(run, run_agent(run)).fingerprint

    first = terms("one")
    assert terms("two") == first
    update_profile(Run.objects.latest("created_at").agent_version.profile, {"instructions": "Be brief."})
    changed = terms("three")
    assert changed != first
    Tenant.objects.filter(pk=conversation.tenant_id).update(monthly_budget_calls=5)
    conversation.tenant.refresh_from_db()
    assert terms("four") != changed


# --- routing ------------------------------------------------------------------------------------------


def test_a_run_goes_to_the_queue_of_the_worker_keeping_its_conversation_warm_until_the_window_ends(
    conversation: Conversation,
) -> None:
    run = start_run(conversation, RunOptions("Hi"))
    assert warm_queue_of(run.pk) is None

    until = timezone.now() + timedelta(seconds=60)
    Conversation.objects.filter(pk=conversation.pk).update(warm_worker="host:1", warm_session="s", warm_until=until)
    assert warm_queue_of(run.pk) == lease.warm_queue("host:1")

    Conversation.objects.filter(pk=conversation.pk).update(warm_until=timezone.now() - timedelta(seconds=1))
    assert warm_queue_of(run.pk) is None


def test_a_run_the_warm_worker_does_not_take_in_time_goes_to_any_worker_and_the_session_is_stale(
    conversation: Conversation, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatched: list[Any] = []
    monkeypatch.setattr("runs.dispatch.dispatch_run", dispatched.append)
    until = timezone.now() + timedelta(seconds=60)
    ours = f"{settings.CELERY_TASK_DEFAULT_QUEUE}/host:1"
    Conversation.objects.filter(pk=conversation.pk).update(warm_worker=ours, warm_session="s", warm_until=until)
    run = start_run(conversation, RunOptions("Hi"))

    reap_stale_runs()
    assert dispatched == []  # just sent

    long_ago = timezone.now() - timedelta(seconds=settings.RUN_WARM_CLAIM_SECONDS + 1)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=long_ago)
    reap_stale_runs()

    assert dispatched == [run.pk]
    conversation.refresh_from_db()
    assert (conversation.warm_worker, conversation.warm_session, conversation.warm_until) == ("", "", None)


def test_a_run_kept_warm_by_a_worker_of_another_run_queue_is_left_to_that_queues_workers(
    conversation: Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatched: list[Any] = []
    monkeypatch.setattr("runs.dispatch.dispatch_run", dispatched.append)
    until = timezone.now() + timedelta(seconds=60)
    Conversation.objects.filter(pk=conversation.pk).update(
        warm_worker="other/host:1", warm_session="s", warm_until=until
    )
    run = start_run(conversation, RunOptions("Hi"))
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=30))

    reap_stale_runs()

    assert dispatched == []
    assert Conversation.objects.get(pk=conversation.pk).warm_session == "s"


def test_the_leftovers_sweep_spares_the_place_of_a_session_kept_warm_and_removes_the_others(
    tenant: Tenant, settings: Settings, tmp_path: Path
) -> None:
    settings.RUN_ROOT = tmp_path
    warm, cold = conversations(tenant, 2)
    places = {}
    for conversation in (warm, cold):
        run = start_run(conversation, RunOptions("Hi"))
        Run.objects.filter(pk=run.pk).update(status=Run.Status.COMPLETED)
        places[conversation.pk] = tmp_path / "runs" / str(run.pk)
        places[conversation.pk].mkdir(parents=True)
    Conversation.objects.filter(pk=warm.pk).update(
        warm_worker="host:1", warm_session="s", warm_until=timezone.now() + timedelta(seconds=60)
    )

    assert sweep_run_leftovers(min_age_seconds=0) == 1

    assert places[warm.pk].exists() and not places[cold.pk].exists()
