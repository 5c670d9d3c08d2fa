"""Rate limits hold across web processes: two Daphnes on one Redis count one tenant's requests together."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tenants.models import Tenant
from tests.e2e.harness import Client, Platform, database_url


@pytest.fixture
def second_web(platform: Platform, tmp_path: Path) -> Iterator[Platform]:
    other = Platform(database_url(connection.settings_dict), settings.REDIS_URL, tmp_path)
    other.start_web()
    yield other
    other.stop()


def test_two_web_processes_share_one_count(acme: Client, platform: Platform, second_web: Platform) -> None:
    Tenant.objects.filter(pk=acme.tenant).update(api_requests_per_minute=4)
    other = Client(second_web.base_url, acme.tenant, acme.http.headers["X-API-Key"])
    # Not at the end of a minute: the five requests must fall in one window.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)

    answers = [client.http.get(client.path()) for client in (acme, other, acme, other, acme)]

    assert [answer.status_code for answer in answers] == [200, 200, 200, 200, 429]
    refused = answers[-1]
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["error"]["code"] == "rate_limited"
    # A WebSocket client is told too: a message past the runs limit is an error frame with retry_after.
    Tenant.objects.filter(pk=acme.tenant).update(api_requests_per_minute=None, runs_per_minute=0)
    conversation = acme.create_conversation()
    with acme.websocket(conversation) as socket_:
        socket_.send('{"type": "message", "text": "hi"}')
        frame = socket_.recv(timeout=10)
        while '"type": "error"' not in frame and '"type":"error"' not in frame:
            frame = socket_.recv(timeout=10)
    assert "rate_limited" in frame and "retry_after" in frame
