"""The gateway meters every model call and enforces run budgets; a conversation continues on any worker."""

import shutil
from decimal import Decimal

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agents.services import default_profile, update_profile
from conversations.models import Run
from tenants.models import ApiKey, LanguageModel, Tenant
from tests.e2e.harness import Client, Platform, sandbox_reachable_dir
from tests.factories import SONNET_PRICES
from usage.models import UsageRecord

SCRIPTED_USAGE = "[[usage input=1200 output=300 cache_read=5000 cache_write_5m=700 cache_write_1h=100]]"
# A title given at creation: an untitled conversation's first run also makes a title call, metered and
# budgeted like the agent's, and these tests count the agent's calls.
UNNAMED = "Metered"


def priced_client(platform: Platform, tenant_id: str = "priced", **tenant_fields: object) -> Client:
    model = LanguageModel.objects.create(
        id="offline-priced",
        display_name="Offline model (not Claude), priced like Sonnet",
        provider=LanguageModel.Provider.OFFLINE,
        provider_model_id="offline-1",
        **SONNET_PRICES,
    )
    tenant = Tenant.objects.create(id=tenant_id, name="Priced", default_model=model, **tenant_fields)
    return Client(platform.base_url, tenant.pk, ApiKey.issue("e2e", tenant=tenant)[1])


def test_usage_records_match_the_model_call_by_call_and_cost_matches_the_catalog(
    platform: Platform, transactional_db: None
) -> None:
    client = priced_client(platform)
    conversation = client.create_conversation(title=UNNAMED)

    run = client.send(conversation, f"Look around {SCRIPTED_USAGE} [[bash echo looked]]")
    terminal = client.wait_for_terminal(conversation, run["id"])

    records = list(UsageRecord.objects.filter(run_id=run["id"]).order_by("created_at"))
    assert len(records) == 2  # the tool call, then the answer: each metered once
    per_call = (
        1200 * Decimal("3") + 300 * Decimal("15") + 700 * Decimal("3.75") + 100 * Decimal("6") + 5000 * Decimal("0.30")
    ) / Decimal(1_000_000)
    for record in records:
        assert (
            record.input_tokens,
            record.output_tokens,
            record.cache_read_tokens,
            record.cache_write_5m_tokens,
            record.cache_write_1h_tokens,
        ) == (1200, 300, 5000, 700, 100)
        assert record.cost_usd == per_call
        assert record.tenant_id == "priced" and str(record.conversation_id) == conversation
    usage = terminal["data"]["usage"]
    assert terminal["type"] == "run.completed"
    assert usage["model_calls"] == 2
    assert (usage["input_tokens"], usage["output_tokens"], usage["cache_read_tokens"]) == (2400, 600, 10000)
    assert Decimal(usage["cost_usd"]) == 2 * per_call
    streamed = [e["data"] for e in client.events(conversation) if e["type"] == "usage"]
    assert sorted(Decimal(u["cost_usd"]) for u in streamed) == [per_call, per_call]

    # /metrics, read by Prometheus' own parser, counts the run's calls exactly.
    scraped = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(httpx.get(f"{platform.base_url}/metrics").text)
        for sample in family.samples
    }
    labels = (("model", "offline-priced"), ("tenant", "priced"))
    assert scraped[("agent_model_calls_total", labels)] == 2
    assert scraped[("agent_tokens_total", tuple(sorted((*labels, ("kind", "input_tokens")))))] == 2400
    assert scraped[("agent_runs_finished_total", (("reason", ""), ("status", "completed"), ("tenant", "priced")))] == 1
    # The run's sandboxed CLI was timed from launch to its answer to `initialize`.
    assert scraped[("agent_sandbox_launch_seconds_count", (("tenant", "priced"),))] == 1
    assert 0 < scraped[("agent_sandbox_launch_seconds_sum", (("tenant", "priced"),))] < 30


def test_a_run_that_falls_back_to_its_agents_fallback_model_is_billed_at_the_fallbacks_price(
    platform: Platform, transactional_db: None
) -> None:
    client = priced_client(platform)
    LanguageModel.objects.create(
        id="offline-cheap",
        display_name="Offline model (not Claude), priced like Haiku",
        provider=LanguageModel.Provider.OFFLINE,
        provider_model_id="offline-cheap",
        input_price=Decimal("1"),
        output_price=Decimal("5"),
    )
    update_profile(default_profile(Tenant.objects.get(pk="priced")), {"fallback_model": "offline-cheap"})
    conversation = client.create_conversation()

    # The CLI takes its fallback model after three "overloaded" answers in a row, which are not billed.
    run = client.send(conversation, "Hello [[error 529 times=3]] [[usage input=1000 output=100]]")
    terminal = client.wait_for_terminal(conversation, run["id"])

    assert terminal["type"] == "run.completed"
    records = UsageRecord.objects.filter(run_id=run["id"]).values_list("model_id", "price__model_id", "cost_usd")
    assert list(records) == [("offline-cheap", "offline-cheap", Decimal("0.0015"))]  # 1000 * 1 + 100 * 5 per million
    assert Decimal(terminal["data"]["usage"]["cost_usd"]) == Decimal("0.0015")


def test_a_run_over_its_call_budget_stops_at_the_gateway_with_budget_exceeded(
    platform: Platform, transactional_db: None
) -> None:
    client = priced_client(platform, run_budget_calls=5)
    conversation = client.create_conversation(title=UNNAMED)

    response = client.http.post(
        client.path(conversation, "/messages"),
        json={"text": "[[bash echo one]] [[bash echo two]] [[bash echo three]]", "budget": {"calls": 2}},
    )
    run = response.json()
    terminal = client.wait_for_terminal(conversation, run["id"])

    assert response.status_code == 202
    assert terminal["type"] == "run.failed", terminal
    assert terminal["data"]["error"]["reason"] == "budget_exceeded"
    assert terminal["data"]["error"]["message"] == "This message has reached its budget."
    assert UsageRecord.objects.filter(run_id=run["id"]).count() == 2
    assert terminal["data"]["usage"]["model_calls"] == 2
    assert Run.objects.get(pk=run["id"]).budget_calls == 2


def test_a_run_whose_first_call_may_cost_more_than_its_usd_budget_never_reaches_the_model(
    platform: Platform, transactional_db: None
) -> None:
    client = priced_client(platform, run_budget_usd=Decimal("0.05"))
    conversation = client.create_conversation(title=UNNAMED)

    run = client.send(conversation, f"{SCRIPTED_USAGE} [[bash echo one]]")
    terminal = client.wait_for_terminal(conversation, run["id"])

    # Its answer may be 32,000 tokens at 15 USD per million: 0.48 USD, past the budget before it starts.
    assert terminal["type"] == "run.failed"
    error = terminal["data"]["error"]
    assert (error["reason"], error["level"]) == ("budget_exceeded", "run")
    assert error["message"] == "This message has reached its budget."
    assert terminal["data"]["usage"]["model_calls"] == 0


def test_a_conversation_started_on_one_worker_continues_on_another_with_fresh_local_state(
    platform: Platform, transactional_db: None, acme: Client
) -> None:
    first_root, second_root = sandbox_reachable_dir(), sandbox_reachable_dir()
    platform.kill(platform.workers[0])
    first_worker = platform.start_worker("first-machine", RUN_ROOT=first_root)
    conversation = acme.create_conversation()
    first = acme.send(conversation, "Remember the code word: heliotrope.")
    assert acme.wait_for_terminal(conversation, first["id"])["type"] == "run.completed"

    platform.kill(first_worker)
    shutil.rmtree(first_root)  # the first machine and everything it kept locally are gone
    platform.start_worker("second-machine", RUN_ROOT=second_root)
    second = acme.send(conversation, "What was the code word? [[recall]]")
    terminal = acme.wait_for_terminal(conversation, second["id"])

    assert terminal["type"] == "run.completed", terminal
    assert terminal["data"]["result"] == "Earlier turns: 1) Remember the code word: heliotrope."
    started = [e["data"] for e in acme.events(conversation) if e["type"] == "run.started"]
    assert started[0]["worker"] != started[1]["worker"]
