"""A worker stopped with SIGTERM (`docker stop`, a Kubernetes rolling update) finishes or hands back the runs it
holds: none is lost, none ends twice, no event goes missing. Real Daphne, Celery workers, CLI and offline model."""

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

from conversations.models import Conversation
from tests.e2e.harness import TERMINAL, Client, Platform, database_url, serving, tenant_client

GRACE_SECONDS = 2.0
OFFLINE_REPLY = "Offline model (not Claude) reply: "


@pytest.fixture(scope="module")
def shutting(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform of its own whose workers give their runs GRACE_SECONDS on SIGTERM; two workers to begin with."""
    with serving(
        database_url(connection.settings_dict),
        platform.env["REDIS_URL"],
        tmp_path_factory.mktemp("shutdown"),
        RUN_SHUTDOWN_GRACE_SECONDS=str(GRACE_SECONDS),
    ) as own:
        own.start_worker("second", concurrency=6)
        yield own


@pytest.fixture
def hooli(shutting: Platform, transactional_db: None) -> Client:
    return tenant_client(shutting.base_url, "hooli")


def run_events(client: Client, conversation: str, run_id: str) -> list[dict[str, Any]]:
    return [event for event in client.events(conversation) if event["run_id"] == run_id]


def wait_for_event(client: Client, conversation: str, run_id: str, kind: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in run_events(client, conversation, run_id):
            if event["type"] == kind:
                return event
        time.sleep(0.05)
    raise TimeoutError(f"no {kind} for run {run_id} within {timeout}s")


def worker_of(platform: Platform, started: dict[str, Any]) -> subprocess.Popen[bytes]:
    return next(worker for worker in platform.workers if started["data"]["worker"].endswith(f":{worker.pid}"))


def assert_whole(client: Client, conversation: str, run_id: str, prompt: str) -> list[dict[str, Any]]:
    """The run completed once, with the whole reply, and the conversation's log has every seq once, in order."""
    events = client.events(conversation)
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    ours = [event for event in events if event["run_id"] == run_id]
    terminals = [event for event in ours if event["type"] in TERMINAL]
    assert [event["type"] for event in terminals] == ["run.completed"], terminals
    assert terminals[0] == ours[-1]
    assert terminals[0]["data"]["result"] == OFFLINE_REPLY + prompt
    return ours


def test_a_long_run_on_a_worker_sent_sigterm_is_handed_back_and_completes_on_another(
    hooli: Client, shutting: Platform
) -> None:
    conversation = hooli.create_conversation()
    run_id = hooli.send(conversation, "Tell the long story [[slow 6]]")["id"]
    started = wait_for_event(hooli, conversation, run_id, "run.started")
    wait_for_event(hooli, conversation, run_id, "message.delta")
    holder = worker_of(shutting, started)
    replacement = shutting.start_worker("replacement-1", concurrency=6)

    took = shutting.terminate(holder)
    hooli.wait_for_terminal(conversation, run_id, timeout=30)

    events = assert_whole(hooli, conversation, run_id, "Tell the long story")
    kinds = [event["type"] for event in events]
    assert kinds.count("run.started") == 1 and kinds.count("run.handed_back") == 1
    handed_back = next(event for event in events if event["type"] == "run.handed_back")
    resumed = next(event for event in events if event["type"] == "run.resumed")
    assert handed_back["seq"] < resumed["seq"]
    assert handed_back["data"]["reason"] == "worker_shutdown"
    assert handed_back["data"]["worker"] == started["data"]["worker"]
    assert resumed["data"]["after"]["kind"] == "handed_back"
    assert resumed["data"]["worker"] != started["data"]["worker"]
    assert holder.returncode == 0
    # The grace, then the hand-back: well within Docker's 10 s before its SIGKILL.
    print(f"SIGTERM to exit: {took:.2f} s")
    assert GRACE_SECONDS <= took < GRACE_SECONDS + 5, took
    assert replacement.poll() is None


def test_a_short_run_on_a_worker_sent_sigterm_finishes_there_within_the_grace(
    hooli: Client, shutting: Platform
) -> None:
    conversation = hooli.create_conversation()
    run_id = hooli.send(conversation, "Brief [[slow 1]]")["id"]
    started = wait_for_event(hooli, conversation, run_id, "run.started")
    wait_for_event(hooli, conversation, run_id, "message.delta")
    holder = worker_of(shutting, started)
    shutting.start_worker("replacement-2", concurrency=6)

    took = shutting.terminate(holder)
    terminal = hooli.wait_for_terminal(conversation, run_id, timeout=10)

    events = assert_whole(hooli, conversation, run_id, "Brief")
    assert not [event for event in events if event["type"] in ("run.handed_back", "run.resumed")]
    assert terminal["data"]["duration_ms"] < GRACE_SECONDS * 1000 + 1500
    assert took < GRACE_SECONDS, took  # it left as soon as its run had ended


def test_a_rolling_restart_of_every_worker_loses_no_run_and_no_event(hooli: Client, shutting: Platform) -> None:
    runs = []
    for number in range(6):
        conversation = hooli.create_conversation()
        prompt = f"Story {number}"
        runs.append((conversation, hooli.send(conversation, f"{prompt} [[slow 8]]")["id"], prompt))
    for conversation, run_id, _ in runs:
        wait_for_event(hooli, conversation, run_id, "message.delta")

    # Each worker in turn: a new one comes up, the old one is sent SIGTERM and exits.
    for number, old in enumerate(list(shutting.workers)):
        shutting.start_worker(f"rolled-{number}", concurrency=6)
        shutting.terminate(old)
        assert old.returncode == 0
    for conversation, run_id, _ in runs:
        hooli.wait_for_terminal(conversation, run_id, timeout=40)

    handed_back = 0
    for conversation, run_id, prompt in runs:
        events = assert_whole(hooli, conversation, run_id, prompt)
        kinds = [event["type"] for event in events]
        assert kinds.count("run.handed_back") == kinds.count("run.resumed")
        handed_back += kinds.count("run.handed_back")
    print(f"hand-backs in the rolling restart: {handed_back}")
    assert handed_back >= 1  # runs outlast the grace: the restart handed some back (some twice), lost none


def test_a_worker_sent_sigterm_closes_its_warm_sessions_and_the_next_turn_runs_cold_elsewhere(
    hooli: Client, shutting: Platform
) -> None:
    conversation = hooli.create_conversation()
    first_id = hooli.send(conversation, "first")["id"]
    assert hooli.wait_for_terminal(conversation, first_id)["type"] == "run.completed"
    started = wait_for_event(hooli, conversation, first_id, "run.started")
    holder = worker_of(shutting, started)
    assert Conversation.objects.get(pk=conversation).warm_session == started["data"]["session"]["id"]
    shutting.start_worker("replacement-3", concurrency=6)

    took = shutting.terminate(holder)
    # Closed as the worker stopped, and its conversation told: the next turn goes to the others' queue at once.
    assert Conversation.objects.get(pk=conversation).warm_session == ""
    second_id = hooli.send(conversation, "second [[recall]]")["id"]
    terminal = hooli.wait_for_terminal(conversation, second_id, timeout=30)

    assert took < GRACE_SECONDS + 5, took
    assert terminal["type"] == "run.completed" and terminal["data"]["result"] == "Earlier turns: 1) first"
    resumed = wait_for_event(hooli, conversation, second_id, "run.started")
    assert resumed["data"]["session"]["warm"] is False
    assert resumed["data"]["worker"] != started["data"]["worker"]
    assert resumed["data"]["session"]["cli_pid"] != started["data"]["session"]["cli_pid"]
