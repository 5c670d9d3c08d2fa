"""`/metrics`: Prometheus' parser reads it, its figures are the database's, and it is closed to strangers."""

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from pytest_django.fixtures import Settings

from conversations.models import Run
from tenants.models import Tenant
from tests.api.assertions import error_of
from tests.e2e.harness import Platform
from tests.factories import ConversationFactory, RunFactory
from usage.services import record_usage

# Also on the embedded SQLite (`make run`'s default), where PostgreSQL's SQL would not run.
pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]


def scrape(client: Client, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_metrics_count_runs_calls_tokens_and_cost_as_stored(tenant: Tenant) -> None:
    conversation = ConversationFactory(tenant=tenant)
    now = timezone.now()
    done = RunFactory(
        conversation=conversation,
        status=Run.Status.COMPLETED,
        started_at=now - timedelta(seconds=3),
        finished_at=now,
        launch_seconds=0.6,
    )
    RunFactory(
        conversation=conversation,
        status=Run.Status.FAILED,
        started_at=now,
        finished_at=now,
        launch_seconds=1.2,
        error={"reason": "budget_exceeded", "message": "…", "level": "tenant_month", "period": "2026-11"},
    )
    RunFactory(conversation=conversation, status=Run.Status.RUNNING, started_at=now)
    for n in range(3):
        record_usage(done.pk, f"msg_{n}", {"input_tokens": 100, "output_tokens": 10})
    conversation.last_seq = 17
    conversation.save(update_fields=["last_seq"])

    scraped = scrape(Client())

    calls = ("agent_model_calls_total", (("model", "offline"), ("tenant", "acme")))
    assert scraped[calls] == 3
    assert scraped[("agent_tokens_total", (("kind", "input_tokens"), ("model", "offline"), ("tenant", "acme")))] == 300
    assert scraped[("agent_runs_started_total", (("tenant", "acme"),))] == 3
    assert (
        scraped[
            ("agent_runs_finished_total", (("reason", "budget_exceeded"), ("status", "failed"), ("tenant", "acme")))
        ]
        == 1
    )
    assert scraped[("agent_budget_refusals_total", (("level", "tenant_month"), ("tenant", "acme")))] == 1
    assert scraped[("agent_runs_active", (("status", "running"), ("tenant", "acme")))] == 1
    assert scraped[("agent_events_total", (("tenant", "acme"),))] == 17
    assert scraped[("agent_run_duration_seconds_bucket", (("le", "2.0"), ("tenant", "acme")))] == 1  # the failed one
    assert scraped[("agent_run_duration_seconds_bucket", (("le", "5.0"), ("tenant", "acme")))] == 2
    assert scraped[("agent_run_duration_seconds_count", (("tenant", "acme"),))] == 2
    assert Decimal(str(scraped[("agent_run_duration_seconds_sum", (("tenant", "acme"),))])) == Decimal("3.0")
    assert scraped[("agent_sandbox_launch_seconds_bucket", (("le", "0.75"), ("tenant", "acme")))] == 1
    assert scraped[("agent_sandbox_launch_seconds_bucket", (("le", "1.5"), ("tenant", "acme")))] == 2
    assert scraped[("agent_sandbox_launch_seconds_sum", (("tenant", "acme"),))] == pytest.approx(1.8)


def test_metrics_are_closed_to_other_networks_unless_the_token_is_sent(settings: Settings) -> None:
    settings.METRICS_TOKEN = "metrics-token-for-tests"
    stranger = Client(REMOTE_ADDR="203.0.113.9")

    assert "METRICS_TOKEN" in error_of(stranger.get("/metrics"), 403)["message"]
    assert error_of(stranger.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong"), 403)
    assert scrape(stranger, HTTP_AUTHORIZATION="Bearer metrics-token-for-tests") == scrape(Client())


@pytest.mark.usefixtures("transactional_db")
def test_the_running_platform_answers_a_scrape_with_its_figures(platform: Platform, tenant: Tenant) -> None:
    now = timezone.now()
    RunFactory(
        conversation=ConversationFactory(tenant=tenant),
        status=Run.Status.COMPLETED,
        started_at=now - timedelta(seconds=2),
        finished_at=now,
    )

    response = httpx.get(f"{platform.base_url}/metrics", timeout=30)

    assert response.status_code == 200, response.text[:300]
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples[("agent_run_duration_seconds_sum", (("tenant", "acme"),))] == pytest.approx(2.0)
    assert samples[("agent_run_queue_wait_seconds_count", (("tenant", "acme"),))] == 1
