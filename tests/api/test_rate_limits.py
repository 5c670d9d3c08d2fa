"""Rate limits per tenant and per end user: 429 with Retry-After in the one error shape, counted in Redis."""

import time
from collections.abc import Iterator
from unittest import mock

import pytest
import redis
from django.conf import settings
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from conversations.models import Conversation, Run
from tenants import ratelimit
from tenants.models import Tenant
from tests.api.assertions import error_of
from tests.factories import ConversationFactory

pytestmark = pytest.mark.django_db

LIST = "/api/tenants/acme/conversations"


@pytest.fixture(autouse=True)
def fresh_counts() -> Iterator[None]:
    """No count of another test, and one window for the whole test (no minute boundary mid-test)."""
    if settings.REDIS_URL:
        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter("ratelimit:*"):
            client.delete(key)
    ratelimit._local_counts.clear()
    start = (time.time() // 60) * 60 + 1  # early in a window: Retry-After is 59 s
    with mock.patch("tenants.ratelimit.time.time", lambda: start):
        yield


@pytest.fixture(autouse=True)
def no_worker() -> Iterator[None]:
    with mock.patch("runs.services.dispatch_run"):
        yield


def limit(tenant: Tenant, **fields: int) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(**fields)


def test_a_tenants_api_requests_past_its_limit_get_429_with_retry_after(
    api_client: APIClient, other_api_client: APIClient, tenant: Tenant
) -> None:
    limit(tenant, api_requests_per_minute=3)

    answers = [api_client.get(LIST) for _ in range(4)]

    assert [answer.status_code for answer in answers[:3]] == [200, 200, 200]
    error = error_of(answers[3], 429)
    assert error["code"] == "rate_limited"
    assert "API requests for tenant 'acme' is limited to 3 per minute" in error["message"]
    assert answers[3]["Retry-After"] == "59"
    assert other_api_client.get("/api/tenants/globex/conversations").status_code == 200  # another tenant


def test_each_end_user_has_a_limit_of_their_own(api_client: APIClient, tenant: Tenant) -> None:
    limit(tenant, user_api_requests_per_minute=2)

    alice = [api_client.get(LIST, HTTP_X_USER_ID="alice").status_code for _ in range(3)]
    bob = api_client.get(LIST, HTTP_X_USER_ID="bob").status_code

    assert (alice, bob) == ([200, 200, 429], 200)


def test_starting_runs_has_its_own_limit_and_refuses_before_storing_anything(
    api_client: APIClient, tenant: Tenant
) -> None:
    limit(tenant, runs_per_minute=2)
    conversations = [ConversationFactory(tenant=tenant) for _ in range(3)]

    answers = [api_client.post(f"{LIST}/{c.pk}/messages", {"text": "hi"}, format="json") for c in conversations]

    assert [answer.status_code for answer in answers] == [202, 202, 429]
    assert answers[2]["Retry-After"] == "59"
    assert "Starting runs for tenant 'acme' is limited to 2 per minute" in error_of(answers[2], 429)["message"]
    assert Run.objects.count() == 2 and Conversation.objects.get(pk=conversations[2].pk).active_run_id is None


def test_without_redis_requests_pass_and_a_warning_says_why(
    api_client: APIClient, tenant: Tenant, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    limit(tenant, api_requests_per_minute=1)
    ratelimit._last_warning = 0.0

    answers = [api_client.get(LIST).status_code for _ in range(3)]

    assert answers == [200, 200, 200]
    assert "Rate limits are not enforced while Redis is unavailable" in caplog.text
