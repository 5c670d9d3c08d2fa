"""What an end user reads when a run fails: one message in their terms, never the CLI's words or an internal
address, through real workers, CLIs and the offline model."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.e2e.harness import Client, Platform
from tests.e2e.test_budgets import A_CENTS_WORTH, CENT, TITLED, metered_client

# The CLI's wording of a failed model call, and where its gateway listens: nothing an end user should read.
NOT_FOR_END_USERS = ["Failed to authenticate", "API Error", "127.0.0.1", "8765", "gateway"]


def what_the_end_user_reads(client: Client, conversation: str) -> tuple[str, list[str]]:
    """Every event of the conversation but the user's own message, as text; and the messages among them
    that speak of the run's end or of an error (the model's text, a failure's message)."""
    events = [event for event in client.events(conversation) if event["type"] != "run.queued"]
    said = [
        event["data"]["block"].get("text", "")
        for event in events
        if event["type"] == "message" and event["data"]["block"]["type"] == "text"
    ]
    said += [event["data"]["error"]["message"] for event in events if event["type"] == "run.failed"]
    return json.dumps(events), [text for text in said if text]


def next_month() -> str:
    first = (datetime.now(UTC).replace(day=1) + timedelta(days=32)).replace(day=1)
    return f"1 {first:%B}"


def test_a_budget_refusal_says_once_whose_budget_it_was_and_when_it_renews(
    platform: Platform, transactional_db: None
) -> None:
    client = metered_client(platform, monthly_budget_usd=CENT / 2)  # not even the first call fits
    conversation = client.create_conversation(title=TITLED)

    run = client.send(conversation, A_CENTS_WORTH)
    terminal = client.wait_for_terminal(conversation, run["id"], timeout=120)

    readable, messages = what_the_end_user_reads(client, conversation)
    assert messages == [f"This service has reached its monthly budget; it renews on {next_month()}."]
    assert not [words for words in NOT_FOR_END_USERS if words in readable]
    error = terminal["data"]["error"]
    assert (error["reason"], error["level"], error["period"]) == (
        "budget_exceeded",
        "tenant_month",
        f"{datetime.now(UTC):%Y-%m}",
    )


def test_a_budget_that_stops_a_run_midway_is_named_once_without_the_clis_words(
    platform: Platform, transactional_db: None
) -> None:
    client = metered_client(platform, run_budget_usd=Decimal("0.015"))  # the first call fits, the second not
    conversation = client.create_conversation(title=TITLED)

    run = client.send(conversation, f"{A_CENTS_WORTH} [[bash echo one]] [[bash echo two]]")
    terminal = client.wait_for_terminal(conversation, run["id"], timeout=120)

    readable, messages = what_the_end_user_reads(client, conversation)
    assert terminal["type"] == "run.failed" and terminal["data"]["usage"]["model_calls"] == 1
    assert messages == ["This message has reached its budget."]
    assert not [words for words in NOT_FOR_END_USERS if words in readable]


def test_a_model_error_says_once_that_the_model_is_unavailable(acme: Client) -> None:
    conversation = acme.create_conversation()

    run = acme.send(conversation, "Hello [[error 400]]")
    terminal = acme.wait_for_terminal(conversation, run["id"], timeout=120)

    readable, messages = what_the_end_user_reads(acme, conversation)
    assert messages == ["The model is unavailable right now; try again."]
    assert not [words for words in NOT_FOR_END_USERS if words in readable]
    assert (terminal["data"]["error"]["reason"], terminal["data"]["error"]["api_status"]) == ("model_error", 400)
