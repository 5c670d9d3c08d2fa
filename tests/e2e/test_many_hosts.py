"""One conversation across hosts: two web processes and two workers, each worker with a run root of its own (as
on separate machines), sharing only PostgreSQL, Redis and S3 (moto in server mode). Real Daphne, Celery, CLI and
sandboxes.

A client posts its messages to the second web process while its WebSocket stays on the first; each turn runs on
the worker the test lets take it (Celery's remote control pauses the other one's consuming, nothing else
changes), so consecutive turns land on both workers and each must find the conversation's session and files
where every host finds them: the session store in PostgreSQL, the workspace in S3.
"""

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from websockets.sync.client import ClientConnection

from conversations.models import Run
from tests.e2e.fixtures import NEEDS_POSTGRESQL
from tests.e2e.harness import (
    Client,
    Platform,
    S3Server,
    database_url,
    read_ws_until_terminal,
    sandbox_reachable_dir,
    tenant_client,
    wait_for_quiet_database,
)
from workspaces.storage import conversation_prefix

WORKERS = ("host-a", "host-b")


@dataclass
class Hosts:
    """The platform's processes: web 1 is `platform.base_url`, web 2 is `second_web`; workers by name."""

    platform: Platform
    s3: S3Server
    second_web: str
    workers: dict[str, "Popen[bytes]"]
    run_roots: dict[str, Path]
    consuming: set[str] = field(default_factory=lambda: set(WORKERS))

    def only(self, name: str) -> None:
        """Let worker `name` alone take the next run: from the shared queue and from its own (its warm sessions')."""
        for other in sorted(self.consuming - {name}):
            self.platform.consume(other, on=False)
            self.platform.consume(other, on=False, queue=self.platform.warm_queue(self.workers[other]))
            self.consuming.discard(other)
        if name not in self.consuming:
            self.platform.consume(name, on=True)
            self.platform.consume(name, on=True, queue=self.platform.warm_queue(self.workers[name]))
            self.consuming.add(name)

    def kill(self, name: str) -> None:
        self.platform.kill(self.workers.pop(name))
        self.consuming.discard(name)


@pytest.fixture(scope="module")
def hosts(
    django_db_setup: None, django_db_blocker: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hosts]:
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        pytest.skip(NEEDS_POSTGRESQL)
    work = tmp_path_factory.mktemp("many-hosts")
    s3 = S3Server(work)
    s3.start()
    platform = Platform(database_url(connection.settings_dict), settings.REDIS_URL, work, **s3.env)
    try:
        run_roots = {name: Path(sandbox_reachable_dir()) for name in WORKERS}
        with ThreadPoolExecutor(max_workers=4) as starting:
            web_1 = starting.submit(platform.start_web)
            web_2 = starting.submit(platform.start_another_web, "daphne-2")
            workers = {
                name: starting.submit(platform.start_worker, name, RUN_ROOT=str(run_roots[name])) for name in WORKERS
            }
            web_1.result()
            yield Hosts(
                platform, s3, web_2.result(), {name: future.result() for name, future in workers.items()}, run_roots
            )
    finally:
        platform.stop()
        s3.stop()


@dataclass
class Clients:
    poster: Client  # on web process 2: posts the messages
    watcher: Client  # on web process 1: holds the WebSocket


@pytest.fixture
def acme(hosts: Hosts, transactional_db: None) -> Iterator[Clients]:
    poster = tenant_client(hosts.second_web, "acme")
    yield Clients(poster, Client(hosts.platform.base_url, poster.tenant, poster.http.headers["X-API-Key"]))
    wait_for_quiet_database(database_url(connection.settings_dict))


@dataclass
class Turn:
    text: str
    events: list[dict[str, Any]]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]

    @property
    def worker(self) -> str:
        (started,) = self.of_type("run.started")
        return started["data"]["worker"]

    @property
    def result(self) -> str:
        return self.events[-1]["data"]["result"]

    @property
    def session(self) -> dict[str, Any]:
        (started,) = self.of_type("run.started")
        return started["data"]["session"]


def take_turn(hosts: Hosts, clients: Clients, ws: ClientConnection, conversation: str, text: str, on: str) -> Turn:
    """Post `text` on web 2 with only worker `on` taking runs; the run's events as web 1's WebSocket streams them."""
    hosts.only(on)
    run = clients.poster.send(conversation, text)
    turn = Turn(text, read_ws_until_terminal(ws, run["id"], timeout=30))
    assert turn.events[-1]["type"] == "run.completed", turn.events[-1]
    assert turn.worker == Platform.lease_name(hosts.workers[on])
    return turn


def recalled(*earlier: Turn) -> str:
    return "Earlier turns: " + "; ".join(f"{n}) {turn.text}" for n, turn in enumerate(earlier, 1))


def assert_streamed_exactly_once(received: list[dict[str, Any]], clients: Clients, conversation: str) -> None:
    stored = clients.poster.events(conversation)
    assert [event["seq"] for event in received] == list(range(1, len(stored) + 1))
    assert received == stored


def test_turns_alternate_between_workers_with_the_whole_conversation_streamed_on_the_other_web_process(
    hosts: Hosts, acme: Clients
) -> None:
    conversation = acme.poster.create_conversation()
    token = acme.poster.stream_token(conversation)  # issued by web 2, honoured by web 1: one SECRET_KEY

    with acme.watcher.websocket(conversation, token=token) as ws:
        first = take_turn(
            hosts, acme, ws, conversation, "first [[bash printf written-on-a > /workspace/notes.txt]]", on="host-a"
        )
        second = take_turn(
            hosts, acme, ws, conversation, "second [[bash cat /workspace/notes.txt]] [[recall]]", on="host-b"
        )
        third = take_turn(hosts, acme, ws, conversation, "third [[recall]]", on="host-a")
        # Warm on host-a now: the next turn goes into the CLI of the third.
        fourth = take_turn(hosts, acme, ws, conversation, "fourth [[recall]]", on="host-a")
        # host-a is busy (it takes nothing): the turn goes cold to host-b, where the second's session is stale.
        fifth = take_turn(hosts, acme, ws, conversation, "fifth [[recall]]", on="host-b")

    turns = [first, second, third, fourth, fifth]
    assert_streamed_exactly_once([event for turn in turns for event in turn.events], acme, conversation)
    assert first.worker != second.worker != third.worker
    assert [turn.session["warm"] for turn in turns] == [False, False, False, True, False]
    assert fourth.session["cli_pid"] == third.session["cli_pid"]
    assert fourth.result == recalled(first, second, third)
    assert fifth.result == recalled(first, second, third, fourth)
    # Turn 2's host never saw turn 1: its session came from the database, its file from S3.
    (started,) = second.of_type("run.started")
    assert started["data"]["resumed_session_id"]
    (cat,) = second.of_type("tool.result")
    assert "written-on-a" in str(cat["data"]), cat
    assert second.result == recalled(first)
    assert third.result == recalled(first, second)
    for name in WORKERS:
        copy = hosts.run_roots[name] / "workspaces" / conversation / "notes.txt"
        assert copy.read_text() == "written-on-a", name
    written = hashlib.sha256(b"written-on-a").hexdigest()
    assert hosts.s3.objects(conversation_prefix("acme", conversation)) == [
        f"{conversation_prefix('acme', conversation)}blobs/{written}"
    ]
    assert set(Run.objects.filter(conversation_id=conversation).values_list("worker", flat=True)) == {
        Platform.lease_name(hosts.workers[name]) for name in WORKERS
    }


def test_a_worker_killed_between_turns_leaves_the_next_turn_to_the_other_with_the_whole_conversation(
    hosts: Hosts, acme: Clients
) -> None:
    """Last in this module: it leaves one worker."""
    conversation = acme.poster.create_conversation()

    with acme.watcher.websocket(conversation, token=acme.poster.stream_token(conversation)) as ws:
        first = take_turn(
            hosts, acme, ws, conversation, "before [[bash printf from-b > /workspace/b.txt]]", on="host-b"
        )
        hosts.kill("host-b")
        hosts.only("host-a")
        run = acme.poster.send(conversation, "after the crash [[bash cat /workspace/b.txt]] [[recall]]")
        after = Turn("after the crash", read_ws_until_terminal(ws, run["id"], timeout=30))

    assert_streamed_exactly_once(first.events + after.events, acme, conversation)
    assert after.events[-1]["type"] == "run.completed", after.events[-1]
    assert after.worker == Platform.lease_name(hosts.workers["host-a"])
    (cat,) = after.of_type("tool.result")
    assert "from-b" in str(cat["data"]), cat
    assert after.result == recalled(first)
    assert set(Run.objects.filter(conversation_id=conversation).values_list("status", flat=True)) == {
        Run.Status.COMPLETED
    }
    assert "stopped responding" not in hosts.platform.logs()
