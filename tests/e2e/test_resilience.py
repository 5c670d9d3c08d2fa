"""What users meet when time passes and services restart: quiet streams, late interrupts, a Redis that
dies and comes back, a PostgreSQL that drops every connection. Real Daphne, Celery, CLI and databases."""

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection

from conversations.models import Run
from tests.e2e.harness import (
    TERMINAL,
    Client,
    Platform,
    RedisServer,
    database_url,
    read_ws_until_terminal,
    serving,
    tenant_client,
)

QUIET_SECONDS = 30


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [event["seq"] for event in events]


def terminals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] in TERMINAL]


def take_sse_until_terminal(events: Iterator[dict[str, Any]], run_id: str, into: list[dict[str, Any]]) -> None:
    for event in events:
        into.append(event)
        if event["run_id"] == run_id and event["type"] in TERMINAL:
            return


def wait_for_delta(client: Client, conversation: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not any(event["type"] == "message.delta" for event in client.events(conversation)):
        assert time.monotonic() < deadline, "the run never started streaming"
        time.sleep(0.1)


def test_a_websocket_and_an_sse_stream_left_quiet_for_30_seconds_deliver_the_next_runs_events(
    acme: Client, platform: Platform
) -> None:
    conversation = acme.create_conversation()
    over_sse: list[dict[str, Any]] = []

    with acme.websocket(conversation) as ws, acme.sse(conversation) as sse:
        time.sleep(QUIET_SECONDS)
        run = acme.send(conversation, "Still there after the quiet? [[bash echo awake]]")
        reader = threading.Thread(target=take_sse_until_terminal, args=(sse, run["id"], over_sse))
        reader.start()
        over_ws = read_ws_until_terminal(ws, run["id"], timeout=30)
        reader.join(30)

    stored = acme.events(conversation)
    assert over_ws == stored == over_sse
    assert stored[-1]["type"] == "run.completed"
    assert "Timeout reading from" not in platform.logs()  # what redis-py 8 raised after 5 quiet seconds


def test_an_interrupt_sent_15_seconds_into_a_long_run_ends_it_within_2_seconds(acme: Client) -> None:
    conversation = acme.create_conversation()
    run = acme.send(conversation, "[[slow 60]]")
    wait_for_delta(acme, conversation)
    time.sleep(15)

    with acme.websocket(conversation) as ws:
        asked_at = time.monotonic()
        assert acme.interrupt(conversation).status_code == 202
        events = read_ws_until_terminal(ws, run["id"], timeout=10)
        elapsed = time.monotonic() - asked_at

    assert events[-1]["type"] == "run.interrupted"
    assert elapsed < 2.0, f"the interrupt took {elapsed:.2f}s"


def test_every_postgresql_connection_terminated_mid_run_leaves_the_platform_serving(acme: Client) -> None:
    conversation = acme.create_conversation()
    run = acme.send(conversation, "[[slow 4]]")
    wait_for_delta(acme, conversation)
    # A burst of requests first, so that the web process's pool holds many connections to lose.
    key = acme.http.headers["X-API-Key"]
    with ThreadPoolExecutor(max_workers=16) as burst:
        statuses = list(
            burst.map(lambda _: Client(acme.base_url, acme.tenant, key).http.get(acme.path()).status_code, range(48))
        )
    assert set(statuses) == {200}

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        (terminated,) = cursor.fetchone()
    assert terminated > 0

    for _ in range(5):  # each request may meet a pooled connection that the database dropped
        started = time.monotonic()
        assert acme.http.get(acme.path(conversation)).status_code == 200
        assert time.monotonic() - started < 3  # not one growing wait per dead connection
    terminal = acme.wait_for_terminal(conversation, run["id"], timeout=40)
    follow_up = acme.send(conversation, "and now?")
    done = acme.wait_for_terminal(conversation, follow_up["id"], timeout=30)

    events = acme.events(conversation)
    assert seqs(events) == list(range(1, len(events) + 1))
    assert [event["run_id"] for event in terminals(events)] == [run["id"], follow_up["id"]]
    assert terminal["type"] == "run.completed", terminal
    assert done["type"] == "run.completed", done


# --- A Redis of our own, killed and started again mid-run ------------------------------------------


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def on_private_redis(
    platform: Platform, private_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """Daphne and a Celery worker whose channel layer and broker are the private Redis."""
    # Runs whose task a Redis restart lost are dispatched again after 4 s instead of 120 s.
    with serving(
        database_url(connection.settings_dict),
        private_redis.url,
        tmp_path_factory.mktemp("private-redis"),
        RUN_REDISPATCH_SECONDS="4",
    ) as own:
        yield own


@pytest.fixture
def initech(on_private_redis: Platform, transactional_db: None) -> Client:
    return tenant_client(on_private_redis.base_url, "initech")


def restart(redis_server: RedisServer, down_for: float = 3) -> None:
    redis_server.kill()
    time.sleep(down_for)
    redis_server.start()


def test_redis_killed_and_restarted_mid_run_loses_no_event_for_clients_that_stay_connected(
    initech: Client, private_redis: RedisServer, on_private_redis: Platform
) -> None:
    conversation = initech.create_conversation()
    over_sse: list[dict[str, Any]] = []

    with initech.websocket(conversation) as ws, initech.sse(conversation) as sse:
        run = initech.send(conversation, "[[words 80]] [[slow 8]]")
        received = [json.loads(ws.recv(timeout=30))]
        while received[-1]["type"] != "message.delta":
            received.append(json.loads(ws.recv(timeout=30)))
        restart(private_redis)
        received += read_ws_until_terminal(ws, run["id"], timeout=60)
        sent_at = time.monotonic()
        follow_up = initech.send(conversation, "after the restart [[reply back]]")
        received += read_ws_until_terminal(ws, follow_up["id"], timeout=10)
        took = time.monotonic() - sent_at
        take_sse_until_terminal(sse, follow_up["id"], over_sse)

    stored = initech.events(conversation)
    assert seqs(received) == list(range(1, len(stored) + 1))
    assert received == stored == over_sse
    assert [event["run_id"] for event in terminals(stored)] == [run["id"], follow_up["id"]]
    assert stored[-1]["type"] == "run.completed" and stored[-1]["data"]["result"] == "back"
    assert took < 10, f"the next message took {took:.1f}s"
    logs = on_private_redis.logs()
    assert "Unrecoverable error" not in logs
    assert "failed; they are lost" not in logs


def test_redis_killed_and_restarted_mid_run_leaves_a_reconnecting_sse_client_whole(
    initech: Client, private_redis: RedisServer
) -> None:
    conversation = initech.create_conversation()
    run = initech.send(conversation, "[[words 60]] [[slow 6]]")
    first: list[dict[str, Any]] = []
    with initech.sse(conversation) as sse:
        for event in sse:
            first.append(event)
            if event["type"] == "message.delta":
                break

    restart(private_redis)
    with initech.sse(conversation, last_event_id=first[-1]["seq"]) as sse:
        rest: list[dict[str, Any]] = []
        take_sse_until_terminal(sse, run["id"], rest)

    stored = initech.events(conversation)
    assert first + rest == stored
    assert len(terminals(stored)) == 1
    assert Run.objects.get(pk=run["id"]).status == Run.Status.COMPLETED


def test_a_message_posted_while_redis_is_down_is_accepted_and_runs_once_redis_is_back(
    initech: Client, private_redis: RedisServer
) -> None:
    conversation = initech.create_conversation()
    private_redis.kill()
    try:
        with initech.websocket(conversation) as ws:  # opens without a channel layer, reading the database
            posted_at = time.monotonic()
            run = initech.send(conversation, "sent in the dark [[reply seen]]")
            took = time.monotonic() - posted_at
            private_redis.start()
            events = read_ws_until_terminal(ws, run["id"], timeout=60)
    finally:
        if private_redis.process is None:
            private_redis.start()

    assert took < 15, f"POST /messages took {took:.1f}s while Redis was down"
    assert events == initech.events(conversation)
    assert events[-1]["type"] == "run.completed" and events[-1]["data"]["result"] == "seen"
