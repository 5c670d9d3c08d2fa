"""Warm sessions: after a run completes, its conversation's sandboxed CLI stays connected on its worker, and the next
message is sent into it. Real Daphne, Celery worker, CLI in bubblewrap and offline model; PostgreSQL and Redis.

Each turn's `run.started` names its session: warm or not, and the pid of the process the SDK started for the CLI.
"""

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection

from agents.models import AgentProfile
from agents.services import default_profile, update_profile
from conversations.models import Conversation
from runs.sessions import memory_bytes
from tenants.models import Tenant
from tests.e2e.harness import Client, Platform, database_url, serving, tenant_client

MAX_WARM = 20
MEMORY_MB = 150 * MAX_WARM
BRIEF_IDLE_SECONDS = 3.0


@pytest.fixture(scope="module")
def warm(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform of its own: one worker keeping up to MAX_WARM sessions warm, within MEMORY_MB."""
    with serving(
        database_url(connection.settings_dict),
        platform.env["REDIS_URL"],
        tmp_path_factory.mktemp("warm"),
        concurrency=MAX_WARM,  # every conversation's next run finds a free thread on the worker keeping it warm
        WARM_SESSIONS_MAX=str(MAX_WARM),
        WARM_SESSIONS_MEMORY_MB=str(MEMORY_MB),
        RUN_WARM_CLAIM_SECONDS="5",
        DB_POOL_MAX_SIZE=str(2 * MAX_WARM),
    ) as own:
        yield own


@pytest.fixture(scope="module")
def brief(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform whose sessions stay warm BRIEF_IDLE_SECONDS."""
    with serving(
        database_url(connection.settings_dict),
        platform.env["REDIS_URL"],
        tmp_path_factory.mktemp("brief"),
        WARM_SESSION_IDLE_SECONDS=str(BRIEF_IDLE_SECONDS),
    ) as own:
        yield own


@pytest.fixture
def umbrella(warm: Platform, transactional_db: None) -> Client:
    return tenant_client(warm.base_url, "umbrella")


@pytest.fixture
def brief_umbrella(brief: Platform, transactional_db: None) -> Client:
    return tenant_client(brief.base_url, "umbrella")


def turn(client: Client, conversation: str, text: str) -> dict[str, Any]:
    """Send `text`; its run's events once it completed, by type (the last of each)."""
    run = client.send(conversation, text)
    terminal = client.wait_for_terminal(conversation, run["id"], timeout=60)
    assert terminal["type"] == "run.completed", terminal["data"]
    events = {event["type"]: event["data"] for event in client.events(conversation) if event["run_id"] == run["id"]}
    return events


def session(events: dict[str, Any]) -> dict[str, Any]:
    return events["run.started"]["session"]


def recalled(*earlier: str) -> str:
    return "Earlier turns: " + "; ".join(f"{n}) {text}" for n, text in enumerate(earlier, 1))


def test_the_next_turn_goes_into_the_same_cli_and_after_the_idle_window_into_a_new_one(
    brief_umbrella: Client,
) -> None:
    umbrella = brief_umbrella
    conversation = umbrella.create_conversation()

    first = turn(umbrella, conversation, "one [[bash printf kept > /workspace/a.txt]]")
    second = turn(umbrella, conversation, "two [[bash cat /workspace/a.txt]] [[recall]]")
    time.sleep(BRIEF_IDLE_SECONDS + 1.5)
    third = turn(umbrella, conversation, "three [[recall]]")

    assert session(first)["warm"] is False
    assert session(second)["warm"] is True
    assert session(second)["cli_pid"] == session(first)["cli_pid"]
    assert session(second)["runs"] == 2
    assert session(third)["warm"] is False
    assert session(third)["cli_pid"] != session(first)["cli_pid"]
    # Each turn has the whole conversation, and the workspace: the third resumed the stored session.
    assert "kept" in str(second["tool.result"])
    assert second["run.completed"]["result"] == recalled("one [[bash printf kept > /workspace/a.txt]]")
    assert third["run.completed"]["result"].startswith(recalled("one [[bash printf kept > /workspace/a.txt]]")[:-1])
    assert "2) two" in third["run.completed"]["result"]
    assert third["run.started"]["resumed_session_id"]
    # A warm turn is metered, reported and ended like a cold one.
    for events in (first, second, third):
        assert events["run.completed"]["usage"]["model_calls"] >= 1
        assert events["run.started"]["sandbox_report"]["missing_layers"] == []
    assert Conversation.objects.get(pk=conversation).warm_session == session(third)["id"]


def test_a_profile_changed_between_turns_closes_the_warm_session(umbrella: Client) -> None:
    conversation = umbrella.create_conversation()
    first = turn(umbrella, conversation, "before the change")
    update_profile(AgentProfile.objects.get(tenant_id=umbrella.tenant, is_default=True), {"instructions": "Be brief."})
    second = turn(umbrella, conversation, "after the change [[recall]]")

    assert session(second)["warm"] is False
    assert session(second)["cli_pid"] != session(first)["cli_pid"]
    assert second["run.completed"]["result"] == recalled("before the change")
    third = turn(umbrella, conversation, "warm again")
    assert session(third)["warm"] is True and session(third)["cli_pid"] == session(second)["cli_pid"]


def test_a_file_uploaded_between_warm_turns_is_in_the_workspace(umbrella: Client) -> None:
    conversation = umbrella.create_conversation()
    turn(umbrella, conversation, "first")
    stored = umbrella.http.post(
        umbrella.path(conversation, "/files"), files={"file": ("late.txt", b"uploaded between", "text/plain")}
    )
    assert stored.status_code == 201, stored.text
    second = turn(umbrella, conversation, "read it [[bash cat /workspace/late.txt]]")
    assert session(second)["warm"] is True
    assert "uploaded between" in str(second["tool.result"])


def test_twenty_conversations_stay_warm_at_once_on_one_worker_within_its_memory_cap(umbrella: Client) -> None:
    conversations = [umbrella.create_conversation() for _ in range(MAX_WARM)]
    # Five cold launches at a time (twenty at once hold two cores for half a minute), then the warm turns all at once.
    with ThreadPoolExecutor(max_workers=5) as pool:
        firsts = list(pool.map(lambda conversation: turn(umbrella, conversation, "hello"), conversations))
    with ThreadPoolExecutor(max_workers=MAX_WARM) as pool:
        seconds = list(pool.map(lambda conversation: turn(umbrella, conversation, "again [[recall]]"), conversations))
    turns = list(zip(firsts, seconds, strict=True))

    pids = [session(first)["cli_pid"] for first, _ in turns]
    for first, second in turns:
        assert session(second)["warm"] is True, session(second)
        assert session(second)["cli_pid"] == session(first)["cli_pid"]
        assert second["run.completed"]["result"] == recalled("hello")
    assert len(set(pids)) == MAX_WARM
    for pid in pids:
        os.kill(pid, 0)  # all alive at once: none was closed to make room
    used = sum(memory_bytes(pid) for pid in pids)
    assert used <= MEMORY_MB * 1024 * 1024, used


# --- pre-warmed sessions ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ahead(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform whose worker keeps one conversation per agent profile made ahead, its session started."""
    with serving(
        database_url(connection.settings_dict),
        platform.env["REDIS_URL"],
        tmp_path_factory.mktemp("ahead"),
        PREWARMED_SESSIONS="1",
    ) as own:
        yield own


@pytest.fixture
def initech(ahead: Platform, transactional_db: None) -> Client:
    client = tenant_client(ahead.base_url, "initech")
    default_profile(Tenant.objects.get(pk=client.tenant))  # as the API makes it with the tenant
    return client


def made_ahead(client: Client, timeout: float = 30) -> Conversation:
    """The tenant's conversation made ahead, once its session is ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = Conversation.all_objects.filter(tenant_id=client.tenant, reserved=True).exclude(warm_session="")
        if (conversation := ready.first()) is not None:
            return conversation
        time.sleep(0.1)
    raise TimeoutError("no conversation was made ahead")


def test_a_new_conversations_first_turn_goes_into_a_session_started_ahead(initech: Client) -> None:
    ready = made_ahead(initech)
    assert initech.http.get(initech.path()).json()["count"] == 0  # nobody's: listed nowhere

    conversation = initech.create_conversation(title="Quarterly numbers")
    stored = initech.http.post(
        initech.path(conversation, "/files"), files={"file": ("q3.txt", b"revenue 42", "text/plain")}
    )
    assert stored.status_code == 201, stored.text
    first = turn(initech, conversation, "first [[bash cat /workspace/q3.txt]] [[recall]]")
    second = turn(initech, conversation, "second [[recall]]")

    assert conversation == str(ready.pk)
    assert session(first)["warm"] is True and session(first)["prewarmed"] is True
    assert session(first)["runs"] == 1 and session(first)["id"] == ready.warm_session
    assert "revenue 42" in str(first["tool.result"])
    assert first["run.completed"]["result"] == "Earlier turns: none"
    assert session(second)["cli_pid"] == session(first)["cli_pid"]
    assert second["run.completed"]["result"] == recalled("first [[bash cat /workspace/q3.txt]] [[recall]]")
    listed = initech.http.get(initech.path()).json()
    assert [item["id"] for item in listed["results"]] == [conversation]
    assert listed["results"][0]["title"] == "Quarterly numbers"
    # Another is made ahead in its place.
    assert made_ahead(initech).pk != ready.pk


def test_a_conversation_asking_for_its_own_model_or_skills_is_made_new_and_its_first_turn_is_cold(
    initech: Client,
) -> None:
    ready = made_ahead(initech)
    conversation = initech.create_conversation(skills=[])
    first = turn(initech, conversation, "hello")

    assert conversation != str(ready.pk)
    assert session(first)["warm"] is False and session(first)["prewarmed"] is False


def test_a_profile_changed_after_its_session_was_made_ahead_gets_a_fresh_one(initech: Client) -> None:
    ready = made_ahead(initech)
    update_profile(AgentProfile.objects.get(tenant_id=initech.tenant, is_default=True), {"instructions": "Be terse."})

    deadline = time.monotonic() + 30
    while Conversation.all_objects.filter(pk=ready.pk).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    fresh = made_ahead(initech)
    conversation = initech.create_conversation()
    first = turn(initech, conversation, "hello")

    assert not Conversation.all_objects.filter(pk=ready.pk).exists()
    assert conversation == str(fresh.pk)
    assert session(first)["prewarmed"] is True
