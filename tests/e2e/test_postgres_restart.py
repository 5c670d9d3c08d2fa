"""A PostgreSQL of our own stopped at once mid-run and started again, as a crash or a failover does,
under real Daphne, Celery, Redis and the CLI."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from tests.e2e.harness import (
    ROOT,
    TERMINAL,
    Client,
    PostgresServer,
    read_ws_until_terminal,
    serving,
)

NEW_TENANT = """
from tenants.models import ApiKey, Tenant
from tenants.services import ensure_offline_model
tenant = Tenant.objects.create(id="umbrella", name="Umbrella", default_model=ensure_offline_model())
print(ApiKey.issue("e2e", tenant=tenant)[1])
"""


def manage(database: PostgresServer, *args: str) -> str:
    env = {**os.environ, "DATABASE_URL": database.url, "DB_POOL_MIN_SIZE": "0"}
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PostgresServer]:
    if not settings.REDIS_URL or not PostgresServer.available():
        pytest.skip("needs REDIS_URL and PostgreSQL's server binaries (Debian's postgresql package)")
    server = PostgresServer()
    try:
        server.create()
        manage(server, "migrate", "--noinput", "-v0")
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="module")
def umbrella(private_postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A tenant's client of Daphne and a Celery worker whose database is the private PostgreSQL."""
    key = manage(private_postgres, "shell", "-v", "0", "-c", NEW_TENANT).strip()
    # Requests give up on an unreachable database after 2 s instead of the default 10 s.
    work_dir = tmp_path_factory.mktemp("private-postgres")
    with serving(private_postgres.url, settings.REDIS_URL, work_dir, DB_POOL_TIMEOUT="2") as own:
        yield Client(own.base_url, "umbrella", key)


def test_postgresql_restarted_mid_run_answers_503_meanwhile_and_then_serves_with_no_event_lost(
    umbrella: Client, private_postgres: PostgresServer
) -> None:
    conversation = umbrella.create_conversation()

    with umbrella.websocket(conversation) as ws:
        run = umbrella.send(conversation, "[[words 60]] [[slow 6]]")
        received = [json.loads(ws.recv(timeout=30))]
        while received[-1]["type"] != "message.delta":
            received.append(json.loads(ws.recv(timeout=30)))
        private_postgres.stop()
        during = umbrella.http.get(umbrella.path(conversation))
        private_postgres.start()
        after = [umbrella.http.get(umbrella.path(conversation)).status_code for _ in range(5)]
        received += read_ws_until_terminal(ws, run["id"], timeout=60)
        follow_up = umbrella.send(conversation, "still here? [[reply yes]]")
        received += read_ws_until_terminal(ws, follow_up["id"], timeout=30)

    stored = umbrella.events(conversation)
    assert during.status_code == 503, during.text
    assert during.json()["error"]["code"] == "database_unavailable"
    assert during.headers["Retry-After"] == "5"
    assert after == [200] * 5
    assert [event["seq"] for event in stored] == list(range(1, len(stored) + 1))
    assert received == stored
    assert [event["run_id"] for event in terminals(stored)] == [run["id"], follow_up["id"]]
    assert terminals(stored)[0]["type"] == "run.completed", terminals(stored)[0]
    assert stored[-1]["data"]["result"] == "yes"


def terminals(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] in TERMINAL]


def test_every_request_while_postgresql_is_down_gets_json_not_a_500(
    umbrella: Client, private_postgres: PostgresServer
) -> None:
    conversation = umbrella.create_conversation()
    private_postgres.stop()
    try:
        answers = [
            umbrella.http.get(umbrella.path()),
            umbrella.http.post(umbrella.path(conversation, "/messages"), json={"text": "hello?"}),
            umbrella.http.get(umbrella.path(conversation, "/events/stream")),
            umbrella.http.post(umbrella.path(conversation, "/stream"), json={"text": "hello?"}),
        ]
    finally:
        private_postgres.start()

    assert [answer.status_code for answer in answers] == [503] * 4
    assert {answer.json()["error"]["code"] for answer in answers} == {"database_unavailable"}
