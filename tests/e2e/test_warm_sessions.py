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
from agents.services import update_profile
from conversations.models import Conversation
from runs.sessions import memory_bytes
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
    with ThreadPoolExecutor(max_workers=MAX_WARM) as pool:
        firsts = list(pool.map(lambda conversation: turn(umbrella, conversation, "hello"), conversations))
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
