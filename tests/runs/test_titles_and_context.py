"""Conversation titles and the context gauge through real runs: the real CLI in bubblewrap, the run's gateway and
the offline model, each run executed by a thread of this process as the embedded mode does."""

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from conversations.events import TERMINAL_TYPES
from conversations.models import Conversation, Event, Run
from runs.services import RunOptions, create_conversation, start_run
from tenants.models import OFFLINE_LABEL, LanguageModel, Tenant
from tests.e2e.harness import sandbox_reachable_dir
from usage.models import UsageRecord

pytestmark = [pytest.mark.cli, pytest.mark.django_db(transaction=True)]

# The first run's title, from the offline model, which answers every message with this.
TITLE = f"{OFFLINE_LABEL} reply: Plan the quarterly report"


@pytest.fixture(autouse=True)
def run_root(settings: Settings, tmp_path: Path) -> Iterator[None]:
    settings.RUN_ROOT = root = Path(sandbox_reachable_dir())
    settings.MEDIA_ROOT = tmp_path / "media"
    yield
    shutil.rmtree(root, ignore_errors=True)


def send(conversation: Conversation, text: str) -> tuple[Run, list[Event]]:
    """Start a run, wait for its thread to end it, and return it with its events."""
    run = start_run(conversation, RunOptions(text=text))
    deadline = time.monotonic() + 120
    while not Event.objects.filter(run=run, type__in=TERMINAL_TYPES).exists():
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.05)
    for thread in threading.enumerate():
        if thread.name == f"run-{run.pk}":
            thread.join(30)
    run.refresh_from_db()
    return run, list(Event.objects.filter(run=run).order_by("seq"))


def of_type(events: list[Event], kind: str) -> list[dict[str, Any]]:
    return [event.data for event in events if event.type == kind]


def read_conversation(api_client: APIClient, conversation: Conversation) -> dict[str, Any]:
    response = api_client.get(f"/api/tenants/{conversation.tenant_id}/conversations/{conversation.pk}")
    assert response.status_code == 200, response.content
    return response.json()


# --- titles -------------------------------------------------------------------------------------


def test_the_first_run_titles_its_conversation_once_with_a_call_metered_to_it(
    tenant: Tenant, api_client: APIClient, settings: Settings
) -> None:
    LanguageModel.objects.create(
        id="offline-titles", display_name="Offline titles", provider="offline", provider_model_id="offline-titles-1"
    )
    settings.TITLE_MODEL = "offline-titles"
    conversation = create_conversation(tenant, user_id="alice")

    first, events = send(conversation, "Plan the quarterly report")

    assert first.status == Run.Status.COMPLETED, first.error
    assert of_type(events, "conversation.titled") == [{"title": TITLE, "model": "offline-titles"}]
    assert events[-1].type == "run.completed"
    assert read_conversation(api_client, conversation)["title"] == TITLE
    # The agent made one model call, the title one more; both are the run's, in its records, events and totals.
    # The title call names the title model, and is metered at it.
    agents_calls = {data["message_id"] for data in of_type(events, "message")}
    records = {record.message_id: record.model_id for record in UsageRecord.objects.filter(run=first)}
    assert len(agents_calls) == 1 and len(records) == 2 and agents_calls < set(records)
    assert {records[call] for call in agents_calls} == {"offline"}
    assert {model for call, model in records.items() if call not in agents_calls} == {"offline-titles"}
    assert {data["message_id"]: data["model"] for data in of_type(events, "usage")} == records
    assert events[-1].data["usage"]["model_calls"] == 2

    second, events = send(conversation, "And the budget?")

    assert second.status == Run.Status.COMPLETED, second.error
    assert of_type(events, "conversation.titled") == []
    assert UsageRecord.objects.filter(run=second).count() == len(of_type(events, "usage")) == 1
    assert read_conversation(api_client, conversation)["title"] == TITLE


def test_a_conversation_its_user_titled_is_never_renamed(tenant: Tenant, api_client: APIClient) -> None:
    conversation = create_conversation(tenant, user_id="alice", title="Q3 planning")

    run, events = send(conversation, "Plan the quarterly report")

    assert run.status == Run.Status.COMPLETED, run.error
    assert of_type(events, "conversation.titled") == []
    assert UsageRecord.objects.filter(run=run).count() == 1  # no title call at all
    assert read_conversation(api_client, conversation)["title"] == "Q3 planning"


def test_a_first_message_the_title_model_cannot_name_leaves_the_conversation_untitled(tenant: Tenant) -> None:
    conversation = create_conversation(tenant, user_id="alice")

    # The offline model answers the title call, which carries the message, with a tool call and no text.
    run, events = send(conversation, "[[bash echo hi]]")

    assert run.status == Run.Status.COMPLETED, run.error
    assert of_type(events, "conversation.titled") == []
    conversation.refresh_from_db()
    assert conversation.title == ""


# --- context usage ------------------------------------------------------------------------------

SCRIPTED = "[[usage input=1000 cache_read=20000 cache_write_5m=300 output=7]]"


def test_after_each_turn_the_clis_count_of_the_context_is_an_event_and_on_the_conversation(
    tenant: Tenant, api_client: APIClient
) -> None:
    conversation = create_conversation(tenant, user_id="alice", title="Context")

    run, events = send(conversation, f"Plan the quarterly report {SCRIPTED}")

    assert run.status == Run.Status.COMPLETED, run.error
    [usage] = of_type(events, "context.usage")
    types = [event.type for event in events]
    assert types.index("context.usage") > types.index("message") and types[-1] == "run.completed"
    # The CLI counts what the context holds from the model's own figures for its last call (1,000 tokens read,
    # 20,000 from the cache, 300 written to it), and splits the window into its categories.
    assert usage["total_tokens"] == 21300
    used = [category for category in usage["categories"] if category["kind"] == "used"]
    assert sum(category["tokens"] for category in used) == usage["total_tokens"]
    assert sum(category["tokens"] for category in usage["categories"]) == usage["window"]
    assert {"System prompt", "Messages", "Free space"} <= {category["name"] for category in usage["categories"]}
    assert usage["percentage"] == round(100 * usage["total_tokens"] / usage["window"])
    assert usage["max_tokens"] <= usage["window"]
    assert read_conversation(api_client, conversation)["context_usage"] == usage

    run, events = send(conversation, "And the budget?")

    [later] = of_type(events, "context.usage")
    assert later["total_tokens"] != usage["total_tokens"]
    assert read_conversation(api_client, conversation)["context_usage"] == later
