"""Runs of a `chat` agent: one streamed model call through the run's real gateway (the offline model behind it),
no CLI and no sandbox, executed in this process as a worker executes them, with the events of an agent run."""

import asyncio
import json
import os
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from agents.services import AgentSpec, create_profile, update_profile
from conversations.models import Conversation, Event, Run
from runs.chat import EFFORT_BETA, HISTORY_CHARS, chat_history
from runs.executor import execute_run
from runs.services import RunOptions, create_conversation, interrupt_run, start_run
from tenants.models import LanguageModel, Tenant
from tests.conftest import add_events
from tests.factories import LanguageModelFactory
from usage.models import UsageRecord
from workspaces.models import WorkspaceFile

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests execute each run themselves, in this process."""
    monkeypatch.setattr("runs.services.dispatch_run", lambda run_id: None)


@pytest.fixture
def chat_agent(tenant: Tenant) -> None:
    create_profile(tenant, "helper", AgentSpec(kind="chat", instructions="Answer in one short paragraph."))


@pytest.fixture
def chat(tenant: Tenant, chat_agent: None) -> Conversation:
    """A conversation with the chat agent, titled already: its runs make no title call."""
    return create_conversation(tenant, user_id="alice", agent="helper", title="Chat")


async def send(conversation: Conversation, text: str, **options: Any) -> Run:
    """The message's run, executed to its terminal event."""
    run = await sync_to_async(start_run)(conversation, RunOptions(text, **options))
    await execute_run(run.pk)
    return await Run.objects.aget(pk=run.pk)


async def events_of(run: Run, *types: str) -> list[tuple[str, dict[str, Any]]]:
    found = Event.objects.filter(run=run).exclude(type="run.queued").order_by("seq")
    if types:
        found = found.filter(type__in=types)
    return [(event.type, event.data) async for event in found]


def text_of(events: list[tuple[str, dict[str, Any]]]) -> str:
    return "".join(data["text"] for kind, data in events if kind == "message.delta" and data["kind"] == "text")


# --- a turn -----------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_chat_run_streams_its_deltas_in_order_and_they_join_to_its_final_text(chat: Conversation) -> None:
    run = await send(chat, "[[words 30]]")

    events = await events_of(run)
    kinds = [kind for kind, _ in events]
    assert kinds == ["run.started", *["message.delta"] * 30, "message", "usage", "run.completed"]
    words = " ".join(f"word{n}" for n in range(1, 31))
    assert text_of(events) == words
    message = events[31][1]
    assert message["block"] == {"type": "text", "text": words}
    assert message["message_id"].startswith("msg_offline_")
    assert events[-1][1]["result"] == words
    assert (run.status, run.result["result"], run.result["num_turns"]) == (Run.Status.COMPLETED, words, 1)
    assert run.result["stop_reason"] == "end_turn"


@pytest.mark.asyncio
async def test_run_started_names_the_chat_agent_and_says_there_is_no_sandbox(chat: Conversation) -> None:
    run = await send(chat, "Hello")

    [(_, started)] = await events_of(run, "run.started")
    assert started["agent"] == {"name": "helper", "version": 1, "kind": "chat", "busy_policy": "reject"}
    assert (started["sandbox"], started["limits"], started["resumed_session_id"]) == ("none", {}, None)
    assert (started["model"], started["offline_model"], started["history_turns"]) == ("offline", True, 0)


@pytest.mark.asyncio
async def test_no_process_and_no_run_directory_is_made_for_a_chat_run(chat: Conversation, settings: Settings) -> None:
    run = await sync_to_async(start_run)(chat, RunOptions("[[words 40]] [[slow 1]]"))
    executing = asyncio.create_task(execute_run(run.pk))
    children: set[str] = set()
    while not executing.done():
        children |= child_processes()
        await asyncio.sleep(0.05)

    assert (await Run.objects.aget(pk=run.pk)).status == Run.Status.COMPLETED
    assert children == set()  # no bwrap, no CLI, no socat bridge
    assert not (Path(settings.RUN_ROOT) / "runs" / str(run.pk)).exists()


def child_processes() -> set[str]:
    """The commands of this process's children, from every thread."""
    names = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                names.add(Path(f"/proc/{pid}/comm").read_text().strip())
            except FileNotFoundError:
                pass  # already gone
    return names


@pytest.mark.asyncio
async def test_the_usage_event_is_the_gateways_record_and_run_completed_totals_it(
    tenant: Tenant, settings: Settings
) -> None:
    priced = await sync_to_async(LanguageModelFactory)(
        id="priced-offline", provider=LanguageModel.Provider.OFFLINE, provider_model_id="offline-priced"
    )
    await sync_to_async(create_profile)(tenant, "priced", AgentSpec(kind="chat", model=priced.pk))
    conversation = await sync_to_async(create_conversation)(tenant, agent="priced", title="Priced")

    run = await send(conversation, "Hi [[usage input=1200 output=340 cache_read=5000 cache_write_5m=700]]")

    record = await UsageRecord.objects.aget(run=run)
    [(_, usage)] = await events_of(run, "usage")
    assert usage == {
        "message_id": record.message_id,
        "model": "priced-offline",
        "input_tokens": 1200,
        "output_tokens": 340,
        "cache_write_5m_tokens": 700,
        "cache_write_1h_tokens": 0,
        "cache_read_tokens": 5000,
        "cost_usd": "0.0128250000",
        "parent_tool_use_id": None,
    }
    assert record.cost_usd == Decimal("0.012825")  # (1200 * 3 + 340 * 15 + 700 * 3.75 + 5000 * 0.30) per million
    [(_, completed)] = await events_of(run, "run.completed")
    assert completed["usage"] == {
        "input_tokens": 1200,
        "output_tokens": 340,
        "cache_write_5m_tokens": 700,
        "cache_write_1h_tokens": 0,
        "cache_read_tokens": 5000,
        "model_calls": 1,
        "cost_usd": "0.0128250000",
    }


@pytest.mark.asyncio
async def test_thinking_streams_as_thinking_deltas_and_a_thinking_block_before_the_text(chat: Conversation) -> None:
    run = await send(chat, "[[think Short question, short answer.]] [[reply Yes.]]")

    events = await events_of(run, "message.delta", "message")
    thinking = "".join(data["text"] for kind, data in events if kind == "message.delta" and data["kind"] == "thinking")
    assert thinking == "Short question, short answer."
    blocks = [data["block"] for kind, data in events if kind == "message"]
    assert blocks == [
        {"type": "thinking", "thinking": "Short question, short answer."},
        {"type": "text", "text": "Yes."},
    ]
    assert run.result["result"] == "Yes."


@pytest.mark.asyncio
async def test_a_chats_first_turn_names_its_conversation_through_the_runs_gateway(
    tenant: Tenant, chat_agent: None
) -> None:
    conversation = await sync_to_async(create_conversation)(tenant, agent="helper")

    run = await send(conversation, "Plans for the weekend [[words 4]]")

    [(_, titled)] = await events_of(run, "conversation.titled")
    assert titled["title"] == (await Conversation.objects.aget(pk=conversation.pk)).title != ""
    assert await UsageRecord.objects.filter(run=run).acount() == 2  # the answer and the title, both metered
    usage = await events_of(run, "usage")
    assert len(usage) == 2
    assert run.result["result"] == "word1 word2 word3 word4"


# --- the conversation's history ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_second_turn_sends_the_first_turns_text_as_history(chat: Conversation) -> None:
    first = await send(chat, "My name is Ada.")
    second = await send(chat, "[[recall]]")

    assert first.status == Run.Status.COMPLETED
    assert second.result["result"] == "Earlier turns: 1) My name is Ada."
    [(_, started)] = await events_of(second, "run.started")
    assert started["history_turns"] == 1


@pytest.mark.asyncio
async def test_a_chat_continues_a_conversation_that_an_agent_kind_run_began(
    tenant: Tenant, conversation: Conversation, chat_agent: None
) -> None:
    earlier = await sync_to_async(Run.objects.create)(
        conversation=conversation,
        model=conversation.model,
        input="Which files are there?",
        status=Run.Status.COMPLETED,
        result={"result": "Just notes.txt."},
    )
    await sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(active_run=None)

    run = await send(conversation, "[[recall]]", agent="helper")

    assert earlier.pk != run.pk
    assert run.result["result"] == "Earlier turns: 1) Which files are there?"


def test_history_alternates_user_and_assistant_texts_leaving_out_failed_and_empty_turns(
    chat: Conversation, offline_model: LanguageModel
) -> None:
    def past(text: str, status: str, result: dict[str, Any] | None = None) -> Run:
        return Run.objects.create(conversation=chat, model=offline_model, input=text, status=status, result=result)

    past("Hello", Run.Status.COMPLETED, {"result": "Hi there."})
    past("Broken", Run.Status.FAILED)
    cut = past("Tell me a story", Run.Status.INTERRUPTED, {"reason": "interrupted"})
    add_events(cut, [("message", {"role": "assistant", "block": {"type": "text", "text": "Once upon"}})])
    past("Silent", Run.Status.INTERRUPTED, {"reason": "interrupted"})  # interrupted before any text
    past("Only tools", Run.Status.COMPLETED, {"result": ""})
    current = past("And then?", Run.Status.QUEUED)

    assert chat_history(current) == [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "Tell me a story"},
        {"role": "assistant", "content": "Once upon"},
    ]


def test_history_keeps_the_newest_turns_that_fit_its_character_budget(
    chat: Conversation, offline_model: LanguageModel
) -> None:
    long_answer = "x" * (HISTORY_CHARS // 2)
    for number in range(3):
        Run.objects.create(
            conversation=chat,
            model=offline_model,
            input=f"Question {number}",
            status=Run.Status.COMPLETED,
            result={"result": long_answer},
        )
    current = Run.objects.create(conversation=chat, model=offline_model, input="Next")

    history = chat_history(current)

    assert [message["content"] for message in history if message["role"] == "user"] == ["Question 2"]


@pytest.mark.asyncio
async def test_the_call_carries_the_versions_instructions_thinking_and_effort(
    chat: Conversation, offline_model: LanguageModel
) -> None:
    assert chat.agent is not None
    await sync_to_async(update_profile)(chat.agent, {"thinking_budget": 500, "effort": "low"})

    run = await send(chat, "[[options]]")

    options = json.loads(run.result["result"])
    assert options["system_tail"] == "Answer in one short paragraph."
    assert options["model"] == offline_model.provider_model_id
    assert options["max_tokens"] == offline_model.max_output_tokens
    assert options["thinking"] == {"type": "enabled", "budget_tokens": 1024}  # the API's least
    assert (options["effort"], options["anthropic_beta"]) == ("low", EFFORT_BETA)
    assert options["tools"] == []


# --- endings ------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_an_interrupt_mid_answer_ends_run_interrupted_keeping_the_partial_text(chat: Conversation) -> None:
    run = await sync_to_async(start_run)(chat, RunOptions("[[words 40]] [[slow 5]]"))
    executing = asyncio.create_task(execute_run(run.pk))
    while not await Event.objects.filter(run=run, type="message.delta").acount() >= 5:
        await asyncio.sleep(0.05)

    began = asyncio.get_running_loop().time()
    await sync_to_async(interrupt_run)(chat)
    await asyncio.wait_for(executing, 10)

    assert asyncio.get_running_loop().time() - began < 2
    events = await events_of(run)
    assert events[-1][0] == "run.interrupted"
    partial = text_of(events)
    assert 5 <= len(partial.split()) < 40
    [block] = [data["block"] for kind, data in events if kind == "message"]
    assert block == {"type": "text", "text": partial}
    assert "usage" in [kind for kind, _ in events]  # the cut-off call is metered and reported
    assert await UsageRecord.objects.filter(run=run).acount() == 1


@pytest.mark.asyncio
async def test_a_call_past_the_budget_ends_run_failed_budget_exceeded(chat: Conversation) -> None:
    run = await send(chat, "Hello", budget_calls=0)

    events = await events_of(run)
    assert [kind for kind, _ in events] == ["run.started", "run.failed"]
    assert events[-1][1]["error"]["reason"] == "budget_exceeded"
    assert events[-1][1]["usage"]["model_calls"] == 0


@pytest.mark.asyncio
async def test_a_model_error_ends_run_failed_model_error_in_the_end_users_words(chat: Conversation) -> None:
    run = await send(chat, "[[error 400]]")

    assert run.status == Run.Status.FAILED
    assert run.error == {
        "reason": "model_error",
        "message": "The model is unavailable right now; try again.",
        "api_status": 400,
    }


@pytest.mark.asyncio
async def test_an_overloaded_model_is_retried_and_the_retry_is_an_event(chat: Conversation) -> None:
    run = await send(chat, "[[error 529 times=1]] [[reply Back again.]] (retry test)")

    [(_, retry)] = await events_of(run, "model.retry")
    assert (retry["attempt"], retry["error_status"]) == (1, 529)
    assert run.result["result"] == "Back again."


@pytest_asyncio.fixture
async def breaking_upstream(settings: Settings) -> AsyncIterator[list[bytes]]:
    """An Anthropic upstream on loopback whose answers break off after two words; the bodies it was sent."""
    calls: list[bytes] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        calls.append(await request.read())
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        message = {"id": f"msg_broken_{len(calls)}", "type": "message", "role": "assistant", "model": "m"}
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": {**message, "usage": {"input_tokens": 9, "output_tokens": 0}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Half "}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "an"}},
        ]
        for event in events:
            await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        assert request.transport is not None
        request.transport.close()  # no message_delta, no message_stop: the connection just ends
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    settings.ANTHROPIC_BASE_URL = f"http://127.0.0.1:{runner.addresses[0][1]}"
    settings.ANTHROPIC_API_KEY = "test-upstream-key"
    yield calls
    await runner.cleanup()


@pytest.mark.asyncio
async def test_an_answer_that_breaks_off_ends_run_failed_keeping_its_text_and_is_not_retried(
    tenant: Tenant, breaking_upstream: list[bytes]
) -> None:
    model = await sync_to_async(LanguageModelFactory)(id="claude-upstream", provider_model_id="claude-x")
    await sync_to_async(create_profile)(tenant, "remote", AgentSpec(kind="chat", model=model.pk))
    conversation = await sync_to_async(create_conversation)(tenant, agent="remote", title="Remote")

    run = await send(conversation, "Tell me everything")

    assert len(breaking_upstream) == 1
    assert run.status == Run.Status.FAILED and run.error["reason"] == "model_error"
    events = await events_of(run)
    assert [data["block"] for kind, data in events if kind == "message"] == [{"type": "text", "text": "Half an"}]
    assert "model.retry" not in [kind for kind, _ in events]


@pytest.mark.asyncio
async def test_a_chat_past_its_time_ends_run_failed_timeout_keeping_the_text_so_far(
    chat: Conversation, settings: Settings
) -> None:
    settings.RUN_MAX_SECONDS = 1

    run = await send(chat, "[[words 40]] [[slow 5]]")

    assert run.error["reason"] == "timeout"
    events = await events_of(run)
    [block] = [data["block"] for kind, data in events if kind == "message"]
    assert block["text"] == text_of(events) != ""


# --- what a chat agent's message may bring --------------------------------------------------------------------


def test_files_sent_to_a_chat_agent_are_refused_and_none_is_stored(api_client: APIClient, chat: Conversation) -> None:
    body = {"text": "Summarise this", "file": [SimpleUploadedFile("a.txt", b"notes")]}

    response = api_client.post(f"/api/tenants/acme/conversations/{chat.pk}/messages", body, format="multipart")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "files_not_supported"
    assert "chat without tools" in error["message"]
    assert not WorkspaceFile.objects.exists()
    assert not chat.runs.exists()


@pytest.mark.asyncio
async def test_a_chat_agents_message_that_starts_with_a_slash_is_text_not_a_command(chat: Conversation) -> None:
    run = await send(chat, "/shrug means what?")

    assert run.status == Run.Status.COMPLETED
    assert run.result["result"] == "Offline model (not Claude) reply: /shrug means what?"
