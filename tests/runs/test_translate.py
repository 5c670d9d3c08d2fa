"""Translating the SDK's stream into events; each model call's `usage` event is the gateway's record of it."""

from decimal import Decimal
from typing import Any
from uuid import uuid4

import pytest
from claude_agent_sdk import AssistantMessage, TextBlock, ToolResultBlock, ToolUseBlock, UserMessage
from claude_agent_sdk.types import StreamEvent

from conversations.models import Run
from runs.translate import EventTranslator
from tenants.models import LanguageModel
from tests.factories import SPLIT_USAGE, RunFactory
from usage.models import UsageRecord
from usage.services import record_usage


@pytest.fixture
def run(sonnet: LanguageModel) -> Run:
    return RunFactory(conversation__tenant__default_model=sonnet)


def recorded(run: Run, message_id: str, usage: dict[str, Any]) -> UsageRecord:
    record = record_usage(run.pk, message_id, usage)
    assert record is not None
    return record


def stream_event(event: dict[str, Any], parent: str | None = None) -> StreamEvent:
    return StreamEvent(uuid=str(uuid4()), session_id="session-1", event=event, parent_tool_use_id=parent)


def text_delta(text: str, parent: str | None = None) -> StreamEvent:
    return stream_event(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}, parent
    )


def message_start(message_id: str, usage: dict[str, Any], parent: str | None = None) -> StreamEvent:
    return stream_event(
        {"type": "message_start", "message": {"id": message_id, "model": "claude-sonnet-4-5", "usage": usage}}, parent
    )


def message_delta(usage: dict[str, Any], parent: str | None = None) -> StreamEvent:
    return stream_event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}, parent)


def translate_all(translator: EventTranslator, messages: list[StreamEvent]) -> list[tuple[str, dict[str, Any]]]:
    return [item for message in messages for item in translator.translate(message)]


def test_stream_events_become_deltas_and_each_call_one_usage_event_from_its_record(run: Run) -> None:
    translator = EventTranslator()
    translator.usage_recorded(recorded(run, "msg_1", SPLIT_USAGE))

    items = translate_all(
        translator,
        [
            # The stream's own figures are not what bills; they play no part.
            message_start("msg_1", {"input_tokens": 1, "output_tokens": 1}),
            stream_event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            text_delta("Hel"),
            text_delta("lo"),
            stream_event(
                {"type": "content_block_delta", "index": 1, "delta": {"type": "thinking_delta", "thinking": "Hm"}}
            ),
            stream_event(
                {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{"}}
            ),
            stream_event({"type": "content_block_stop", "index": 0}),
            message_delta({"output_tokens": 9}),
            stream_event({"type": "message_stop"}),
        ],
    )

    assert [kind for kind, _ in items] == ["message.delta", "message.delta", "message.delta", "usage"]
    assert [(data["kind"], data["text"]) for kind, data in items if kind == "message.delta"] == [
        ("text", "Hel"),
        ("text", "lo"),
        ("thinking", "Hm"),
    ]
    assert items[-1][1] == {
        "message_id": "msg_1",
        "model": "sonnet",
        "input_tokens": 1000,
        "output_tokens": 500,
        "cache_write_5m_tokens": 1000,
        "cache_write_1h_tokens": 500,
        "cache_read_tokens": 2000,
        "cost_usd": "0.0178500000",
        "parent_tool_use_id": None,
    }
    assert translator.unreported_usage() == []


def test_a_subagents_call_carries_its_parent(run: Run) -> None:
    translator = EventTranslator()
    translator.usage_recorded(recorded(run, "msg_main", {"input_tokens": 100, "output_tokens": 20}))
    translator.usage_recorded(recorded(run, "msg_sub", {"input_tokens": 40, "output_tokens": 7}))

    items = translate_all(
        translator,
        [
            message_start("msg_main", {}),
            message_start("msg_sub", {}, parent="toolu_1"),
            text_delta("from the subagent", parent="toolu_1"),
            message_delta({}, parent="toolu_1"),
            message_delta({}),
        ],
    )

    usage = [data for kind, data in items if kind == "usage"]
    assert [(u["message_id"], u["parent_tool_use_id"], u["output_tokens"]) for u in usage] == [
        ("msg_sub", "toolu_1", 7),
        ("msg_main", None, 20),
    ]
    assert items[0] == (
        "message.delta",
        {"kind": "text", "text": "from the subagent", "index": 0, "parent_tool_use_id": "toolu_1"},
    )


def assistant(message_id: str, parent: str | None, *blocks: Any) -> AssistantMessage:
    return AssistantMessage(
        content=list(blocks), model="claude-sonnet-4-5", parent_tool_use_id=parent, message_id=message_id
    )


def test_a_subagents_calls_which_stream_nothing_get_their_usage_with_their_messages(run: Run) -> None:
    # As CLI 2.1.327 sends them: no stream events of a subagent, its blocks as whole messages, and the
    # gateway's record of a call after its blocks (it records the call at its end).
    translator = EventTranslator()
    searched = ToolUseBlock(id="toolu_sub", name="Bash", input={"command": "ls"})
    reported = TextBlock(text="Found it.")

    before_its_record = translator.translate(assistant("msg_sub_1", "toolu_agent", searched))
    translator.usage_recorded(recorded(run, "msg_sub_1", {"input_tokens": 40, "output_tokens": 7}))
    translator.usage_recorded(recorded(run, "msg_sub_2", {"input_tokens": 50, "output_tokens": 3}))
    result = UserMessage(
        content=[ToolResultBlock(tool_use_id="toolu_sub", content="a.txt")], parent_tool_use_id="toolu_agent"
    )
    after_it = translator.translate(result) + translator.translate(assistant("msg_sub_2", "toolu_agent", reported))
    translator.translate(assistant("msg_sub_3", "toolu_agent", TextBlock(text="And more.")))
    # The run ends (an interrupt) before another message: its record comes in last, still under its call.
    translator.usage_recorded(recorded(run, "msg_sub_3", {"input_tokens": 9, "output_tokens": 1}))

    assert [kind for kind, _ in before_its_record] == ["message"]
    assert [(kind, data.get("message_id"), data["parent_tool_use_id"]) for kind, data in after_it] == [
        ("usage", "msg_sub_1", "toolu_agent"),
        ("tool.result", None, "toolu_agent"),
        ("message", "msg_sub_2", "toolu_agent"),
        ("usage", "msg_sub_2", "toolu_agent"),
    ]
    assert [(data["message_id"], data["parent_tool_use_id"]) for _, data in translator.unreported_usage()] == [
        ("msg_sub_3", "toolu_agent")
    ]


def test_each_call_gets_its_own_usage_event_with_its_recorded_cost(run: Run) -> None:
    translator = EventTranslator()
    first = recorded(run, "msg_1", SPLIT_USAGE)
    second = recorded(run, "msg_2", {"input_tokens": 10, "cache_read_input_tokens": 3000, "output_tokens": 20})

    translator.usage_recorded(first)
    items = translate_all(translator, [message_start("msg_1", {}), message_delta({})])
    translator.usage_recorded(second)
    items += translate_all(translator, [message_start("msg_2", {}), message_delta({})])

    second_call = (10 * Decimal("3") + 20 * Decimal("15") + 3000 * Decimal("0.30")) / Decimal(1_000_000)
    assert [(data["message_id"], Decimal(data["cost_usd"])) for _, data in items] == [
        ("msg_1", Decimal("0.01785")),
        ("msg_2", second_call),
    ]
    assert second.cost_usd == second_call


def test_calls_the_stream_never_ended_are_reported_once_at_the_end(run: Run) -> None:
    translator = EventTranslator()
    translator.usage_recorded(recorded(run, "msg_cut", {"input_tokens": 50, "output_tokens": 3}))
    translator.usage_recorded(recorded(run, "msg_side", {"input_tokens": 5, "output_tokens": 1}))

    during = translate_all(translator, [message_start("msg_cut", {}), text_delta("Half an ans")])
    at_the_end = translator.unreported_usage()

    assert during == [
        ("message.delta", {"kind": "text", "text": "Half an ans", "index": 0, "parent_tool_use_id": None})
    ]
    assert sorted((data["message_id"], data["output_tokens"]) for _, data in at_the_end) == [
        ("msg_cut", 3),
        ("msg_side", 1),
    ]
    assert translator.unreported_usage() == []


def test_a_call_without_a_record_gets_no_usage_event(run: Run) -> None:
    translator = EventTranslator()

    assert (
        translate_all(translator, [message_start("msg_1", {"input_tokens": 5}), message_delta({"output_tokens": 5})])
        == []
    )
    assert translator.translate(message_delta({"output_tokens": 5})) == []


def test_the_clis_report_of_a_refused_call_is_kept_as_its_kind_not_its_words() -> None:
    translator = EventTranslator()
    report = AssistantMessage(
        content=[TextBlock(text='Failed to authenticate. API Error: 403 {"type":"error","error":{"message":"…"}}')],
        model="<synthetic>",
        error="authentication_failed",
        message_id="msg_1",
    )

    events = translator.translate(report)

    assert events == [("message.error", {"error": "authentication_failed", "message_id": "msg_1"})]
    assert translator.model_failed
