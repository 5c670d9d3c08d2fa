"""The platform with no broker and no Redis: runs execute on a thread of Daphne, events travel over
the in-memory channel layer. This is what `make run` gives a newcomer."""

import json
import time
from collections.abc import Iterator

import pytest
from django.db import connection

from tenants.models import ApiKey, Tenant
from tenants.services import ensure_offline_model
from tests.e2e.harness import Client, Platform, database_url, read_ws_until_terminal


@pytest.fixture(scope="module")
def embedded(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    web_only = Platform(
        database_url(connection.settings_dict),
        "",
        tmp_path_factory.mktemp("embedded"),
        CELERY_BROKER_URL="",
        REDIS_URL="",
    )
    web_only.start_web()
    yield web_only
    web_only.stop()


@pytest.fixture
def demo(embedded: Platform, transactional_db: None) -> Client:
    tenant = Tenant.objects.create(id="demo", name="Demo", default_model=ensure_offline_model())
    return Client(embedded.base_url, tenant.pk, ApiKey.issue("demo", tenant=tenant)[1])


def test_without_broker_or_redis_a_run_streams_over_websocket_from_the_web_process(demo: Client) -> None:
    conversation = demo.create_conversation()

    with demo.websocket(conversation) as ws:
        ws.send(json.dumps({"type": "message", "text": "Hi [[bash echo embedded]]"}))
        ack = json.loads(ws.recv(timeout=10))
        events = read_ws_until_terminal(ws, ack["run"]["id"])

    assert ack["type"] == "ack"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "run.completed"
    assert "[Bash result] embedded" in events[-1]["data"]["result"]
    assert events == demo.events(conversation)


def test_without_broker_an_interrupt_reaches_the_thread_running_the_run(demo: Client) -> None:
    conversation = demo.create_conversation()

    with demo.websocket(conversation) as ws:
        run = demo.send(conversation, "[[slow 30]]")
        while json.loads(ws.recv(timeout=30)).get("type") != "message.delta":
            pass
        asked_at = time.monotonic()
        assert demo.interrupt(conversation).status_code == 202
        events = read_ws_until_terminal(ws, run["id"], timeout=10)

    assert events[-1]["type"] == "run.interrupted"
    assert time.monotonic() - asked_at < 2.0
