"""Which run names its conversation and with which model, what a title looks like, and that a user's title wins.
Through real runs: test_titles_and_context.py."""

from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from conversations.models import Conversation, Run
from gateway.server import ModelGateway
from runs.titles import TITLE_MAX_CHARS, title_conversation, title_model, title_of
from tenants.models import OFFLINE_LABEL, LanguageModel, Tenant
from usage.models import UsageRecord


def answer(text: str) -> dict[str, Any]:
    return {"type": "message", "content": [{"type": "text", "text": text}]}


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("Quarterly report plan", "Quarterly report plan"),
        ('"Quarterly report plan."', "Quarterly report plan"),
        ("**Title:** Quarterly   report\tplan", "Quarterly report plan"),
        ("# Quarterly report plan\n\nA plan for the report.", "Quarterly report plan"),
        ("\n\n  «Plan trimestriel»  \n", "Plan trimestriel"),
        ("Report\x00 plan", "Report plan"),
        ("", ""),
        ('""', ""),
    ],
)
def test_a_title_is_the_first_line_of_the_answer_unwrapped(text: str, title: str) -> None:
    assert title_of(answer(text)) == title


def test_a_long_title_is_cut_at_a_word_within_sixty_characters() -> None:
    text = "Planning the quarterly report for the board with every regional figure included"

    title = title_of(answer(text))

    assert title == "Planning the quarterly report for the board with every…"
    assert len(title) <= TITLE_MAX_CHARS


def test_an_answer_without_text_gives_no_title() -> None:
    tool_call = {"type": "message", "content": [{"type": "tool_use", "id": "t", "name": "Bash", "input": {}}]}

    assert title_of(tool_call) == ""


# --- which run, which model ----------------------------------------------------------------------


@pytest.fixture
def untitled(tenant: Tenant) -> Conversation:
    return Conversation.objects.create(tenant=tenant, model=tenant.default_model, user_id="alice")


def first_run(conversation: Conversation) -> Run:
    return Run.objects.create(conversation=conversation, model=conversation.model, input="Plan the quarterly report")


@pytest.mark.django_db
def test_the_first_run_of_an_untitled_conversation_names_it_with_its_own_model(untitled: Conversation) -> None:
    run = first_run(untitled)

    assert title_model(run) == run.model


@pytest.mark.django_db
def test_later_runs_and_titled_conversations_name_nothing(untitled: Conversation, conversation: Conversation) -> None:
    first = first_run(untitled)
    second = Run.objects.create(conversation=untitled, model=untitled.model, input="And the budget?")

    assert title_model(second) is None
    assert title_model(first_run(conversation)) is None  # "Hello", its user's title
    assert title_model(first) == first.model


@pytest.mark.django_db
def test_title_model_names_a_catalog_model_of_the_runs_provider(untitled: Conversation, settings: Settings) -> None:
    small = LanguageModel.objects.create(
        id="offline-small", display_name="Offline small", provider="offline", provider_model_id="offline-small-1"
    )
    LanguageModel.objects.create(
        id="haiku", display_name="Claude Haiku", provider="anthropic", provider_model_id="claude-haiku-4-5"
    )
    LanguageModel.objects.create(
        id="offline-old", display_name="Old", provider="offline", provider_model_id="offline-0", status="deprecated"
    )
    run = first_run(untitled)

    settings.TITLE_MODEL = "offline-small"
    assert title_model(run) == small
    # Another provider's model (the run's gateway speaks to one), a deprecated one, or none of the catalog's:
    # the run's own model names the conversation.
    for name in ("haiku", "offline-old", "no-such-model"):
        settings.TITLE_MODEL = name
        assert title_model(run) == run.model, name


# --- a title the user set wins --------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_title_the_user_set_after_the_run_chose_to_name_the_conversation_wins(
    untitled: Conversation, api_client: APIClient, tmp_path: Path
) -> None:
    run = await sync_to_async(first_run)(untitled)
    model = await sync_to_async(title_model)(run)
    assert model is not None
    emitted: list[tuple[str, dict[str, Any]]] = []
    path = f"/api/tenants/{untitled.tenant_id}/conversations/{untitled.pk}"
    response = await sync_to_async(api_client.patch)(path, {"title": "Q3 planning"}, format="json")
    assert response.status_code == 200

    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock") as gateway:
        await title_conversation(run, gateway, model, lambda *event: emitted.append(event))

    await untitled.arefresh_from_db()
    assert untitled.title == "Q3 planning"
    assert emitted == []
    assert await UsageRecord.objects.filter(run=run).acount() == 1  # the call was made, and is the run's


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_an_untitled_conversation_takes_the_title_and_says_so_once(
    untitled: Conversation, tmp_path: Path
) -> None:
    run = await sync_to_async(first_run)(untitled)
    model = await sync_to_async(title_model)(run)
    assert model is not None
    emitted: list[tuple[str, dict[str, Any]]] = []

    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock") as gateway:
        await title_conversation(run, gateway, model, lambda *event: emitted.append(event))

    title = f"{OFFLINE_LABEL} reply: Plan the quarterly report"
    await untitled.arefresh_from_db()
    assert untitled.title == title
    assert emitted == [("conversation.titled", {"title": title, "model": "offline"})]
