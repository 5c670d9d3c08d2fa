"""Budgets at the gateway, through real workers, CLIs and the offline model: parallel runs never pass a cap."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from conversations.models import Run
from tenants.models import ApiKey, LanguageModel, Tenant
from tests.e2e.harness import Client, Platform
from usage.budgets import periods
from usage.models import BudgetReservation, UsageRecord

# Input is free and every answer may be 1,000 tokens at 10 USD per million: each call's worst case
# (and, with the offline model told so, its real cost) is exactly one cent.
CENT = Decimal("0.01")
A_CENTS_WORTH = "[[usage output=1000]] Here you are."
# A title given at creation: an untitled conversation's first run also makes a title call, which the
# budgets count like the agent's; these tests count the agent's calls.
TITLED = "Budgeted"


def metered_client(platform: Platform, **tenant_fields: Any) -> Client:
    model = LanguageModel.objects.create(
        id="offline-metered",
        display_name="Offline model (not Claude), output at 10 USD per million tokens",
        provider=LanguageModel.Provider.OFFLINE,
        provider_model_id="offline-1",
        output_price=Decimal("10"),
        max_output_tokens=1000,
    )
    tenant = Tenant.objects.create(id="metered", name="Metered", default_model=model, **tenant_fields)
    return Client(platform.base_url, tenant.pk, ApiKey.issue("e2e", tenant=tenant)[1])


def send_at_once(client: Client, conversations: list[str], text: str) -> list[tuple[str, dict[str, Any]]]:
    """Start a run in each conversation, all together (an HTTP client per thread)."""
    key = client.http.headers["X-API-Key"]

    def start(conversation: str) -> tuple[str, dict[str, Any]]:
        return conversation, Client(client.base_url, client.tenant, key).send(conversation, text)

    with ThreadPoolExecutor(max_workers=len(conversations)) as starting:
        return list(starting.map(start, conversations))


def test_twenty_runs_at_once_against_a_month_that_fits_five_calls(platform: Platform, transactional_db: None) -> None:
    client = metered_client(platform, monthly_budget_usd=5 * CENT)
    conversations = [client.create_conversation(title=TITLED) for _ in range(20)]

    started = send_at_once(client, conversations, A_CENTS_WORTH)
    terminals = [client.wait_for_terminal(conversation, run["id"], timeout=180) for conversation, run in started]

    completed = [t for t in terminals if t["type"] == "run.completed"]
    refused = [t for t in terminals if t["type"] == "run.failed"]
    month = periods(datetime.now(UTC), "UTC")[1]
    assert (len(completed), len(refused)) == (5, 15), [t["data"] for t in terminals]
    for terminal in refused:
        error = terminal["data"]["error"]
        assert (error["reason"], error["level"], error["period"]) == ("budget_exceeded", "tenant_month", month)
        assert error["message"].startswith("This service has reached its monthly budget; it renews on 1 ")
        # Refused before the upstream: the refused runs' calls were never answered, so never recorded.
        assert terminal["data"]["usage"]["model_calls"] == 0
    records = UsageRecord.objects.filter(tenant="metered")
    assert records.count() == 5
    assert sum(record.cost_usd for record in records) <= 5 * CENT
    assert {record.run_id for record in records} == {
        Run.objects.get(pk=terminal["run_id"]).pk for terminal in completed
    }
    # Nothing is left held, and the budget reads as spent.
    assert not BudgetReservation.objects.exists()
    budget = client.http.get(f"/api/tenants/{client.tenant}/budgets").json()["month"]
    assert (budget["spent_usd"], budget["calls"], budget["reserved_calls"], budget["remaining_usd"]) == (
        "0.0500000000",
        5,
        0,
        "0.0000000000",
    )


def test_a_run_whose_next_call_might_pass_its_usd_budget_stops_before_it(
    platform: Platform, transactional_db: None
) -> None:
    client = metered_client(platform, run_budget_usd=Decimal("0.015"))
    conversation = client.create_conversation(title=TITLED)

    run = client.send(conversation, f"{A_CENTS_WORTH} [[bash echo one]] [[bash echo two]]")
    terminal = client.wait_for_terminal(conversation, run["id"])

    # The first call fit (a cent of 1.5); the second one's cent would not have, whatever it spent.
    assert terminal["type"] == "run.failed", terminal
    error = terminal["data"]["error"]
    assert (error["reason"], error["level"], error["period"]) == ("budget_exceeded", "run", "")
    assert terminal["data"]["usage"]["model_calls"] == 1
    assert Decimal(terminal["data"]["usage"]["cost_usd"]) == CENT
