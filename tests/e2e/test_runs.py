"""A run's whole path through real processes: REST → Celery → the real CLI → offline model → events."""

import json
import threading
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from conversations.models import Run
from tests.e2e.harness import TERMINAL, Client, Platform, read_ws_until_terminal


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [event["seq"] for event in events]


def test_a_runs_events_arrive_over_websocket_and_sse_in_seq_order_without_gaps(acme: Client) -> None:
    conversation = acme.create_conversation(title="order")
    sse_events: list[dict[str, Any]] = []

    with acme.websocket(conversation) as ws, acme.sse(conversation) as sse:
        run = acme.send(conversation, "Write a file [[write notes.txt hello]] then [[bash cat notes.txt]]")
        reader = threading.Thread(target=lambda: sse_events.extend(take_until_terminal(sse, run["id"])))
        reader.start()
        ws_events = read_ws_until_terminal(ws, run["id"])
        reader.join(60)

    stored = acme.events(conversation)
    assert seqs(ws_events) == list(range(1, len(stored) + 1))
    assert seqs(sse_events) == seqs(ws_events)
    assert ws_events == stored == sse_events
    types = [event["type"] for event in stored]
    assert types[:3] == ["run.queued", "run.started", "session.init"]
    assert types[-1] == "run.completed"
    assert "message.delta" in types and "tool.result" in types
    assert "[Bash result] hello" in stored[-1]["data"]["result"]


def take_until_terminal(events: Any, run_id: str) -> list[dict[str, Any]]:
    taken = []
    for event in events:
        taken.append(event)
        if event["run_id"] == run_id and event["type"] in TERMINAL:
            return taken
    return taken


def test_reconnecting_with_after_replays_missing_events_exactly_once(acme: Client) -> None:
    conversation = acme.create_conversation()
    run = acme.send(conversation, "[[words 120]] [[slow 2]]")

    with acme.websocket(conversation) as ws:
        first = [json.loads(ws.recv(timeout=30)) for _ in range(8)]
    time.sleep(0.5)  # events keep coming while the client is away
    with acme.websocket(conversation, after=first[-1]["seq"]) as ws:
        second = read_ws_until_terminal(ws, run["id"])
    with acme.sse(conversation, last_event_id=first[-1]["seq"]) as sse:
        over_sse = take_until_terminal(sse, run["id"])

    received = seqs(first) + seqs(second)
    assert received == list(range(1, len(received) + 1))
    assert seqs(over_sse) == seqs(second)
    assert second[-1]["type"] == "run.completed"


def test_the_second_message_continues_the_sdk_session(acme: Client) -> None:
    conversation = acme.create_conversation()
    first = acme.send(conversation, "My name is Ada.")
    acme.wait_for_terminal(conversation, first["id"])

    second = acme.send(conversation, "What did I say? [[recall]]")
    done = acme.wait_for_terminal(conversation, second["id"])

    assert done["type"] == "run.completed", done
    assert done["data"]["result"] == "Earlier turns: 1) My name is Ada."
    started = [e for e in acme.events(conversation) if e["type"] == "run.started"]
    assert started[1]["data"]["resumed_session_id"] == first_session_id(acme, conversation)


def first_session_id(client: Client, conversation: str) -> str:
    return next(e["data"]["session_id"] for e in client.events(conversation) if e["type"] == "session.init")


@pytest.mark.parametrize("via", ["rest", "websocket"])
def test_interrupt_ends_a_slow_run_with_run_interrupted_within_two_seconds(acme: Client, via: str) -> None:
    conversation = acme.create_conversation()

    with acme.websocket(conversation) as ws:
        run = acme.send(conversation, "[[slow 30]]")
        while json.loads(ws.recv(timeout=30)).get("type") != "message.delta":
            pass
        asked_at = time.monotonic()
        if via == "rest":
            assert acme.interrupt(conversation).status_code == 202
        else:
            ws.send(json.dumps({"type": "interrupt"}))
        events = read_ws_until_terminal(ws, run["id"], timeout=10)
        elapsed = time.monotonic() - asked_at

    assert events[-1]["type"] == "run.interrupted"
    assert elapsed < 2.0, f"interrupt took {elapsed:.2f}s"
    assert Run.objects.get(pk=run["id"]).status == Run.Status.INTERRUPTED


def test_killing_the_worker_mid_run_ends_the_run_with_run_failed(acme: Client, platform: Platform) -> None:
    conversation = acme.create_conversation()
    run = acme.send(conversation, "[[slow 30]]")
    deadline = time.monotonic() + 30
    while not any(e["type"] == "message.delta" for e in acme.events(conversation)):
        assert time.monotonic() < deadline, "the run never started streaming"
        time.sleep(0.1)

    platform.kill(platform.workers[0])
    platform.start_worker("replacement")
    terminal = acme.wait_for_terminal(conversation, run["id"], timeout=30)

    assert terminal["type"] == "run.failed"
    assert terminal["data"]["error"]["reason"] == "worker_lost"
    terminals = [e for e in acme.events(conversation) if e["type"] in TERMINAL]
    assert len(terminals) == 1
    # The conversation is usable again.
    follow_up = acme.send(conversation, "still there?")
    assert acme.wait_for_terminal(conversation, follow_up["id"])["type"] == "run.completed"


def test_another_tenants_socket_and_stream_are_refused(acme: Client, globex: Client) -> None:
    conversation = acme.create_conversation()
    globex_token = globex.stream_token(globex.create_conversation())

    with globex.websocket(conversation, token=globex_token) as socket_:
        told = json.loads(socket_.recv(timeout=10))
        with pytest.raises(ConnectionClosed) as closed:
            socket_.recv(timeout=10)
    assert told["type"] == "error" and told["error"]["code"] == "invalid_token", told
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    foreign = globex.http.get(f"/api/tenants/acme/conversations/{conversation}/events/stream")
    assert foreign.status_code == 404
    own_path_foreign_id = globex.http.get(globex.path(conversation, "/events/stream"))
    assert own_path_foreign_id.status_code == 404
