"""A run in which the agent hands work to a subagent, as its events are stored: the SDK's messages of such a
turn, put through the platform's own translator (runs/translate.py), between the events that start and end it."""

from decimal import Decimal
from typing import Any

from claude_agent_sdk import AssistantMessage, TextBlock, ToolResultBlock, ToolUseBlock, UserMessage
from claude_agent_sdk.types import StreamEvent

from conversations.events import EventItem
from runs.translate import EventTranslator
from usage.models import UsageRecord

AGENT_CALL = "toolu_agent_1"  # the main agent's Agent tool call; the subagent's events name it as their parent
SUBAGENT_CALL = "toolu_sub_bash"
STRUCTURED_OUTPUT = {"files": ["notes.txt"], "count": 1}


def _stream(event: dict[str, Any], parent: str | None) -> StreamEvent:
    return StreamEvent(uuid="u", session_id="session-1", event=event, parent_tool_use_id=parent)


def subagent_turn_messages() -> list[Any]:
    """What the SDK hands the executor for the turn (its partial messages too): the main agent's words and
    Agent call, the subagent's streamed words, Bash call and result, its answer, then the main agent's."""
    call = ToolUseBlock(
        id=AGENT_CALL,
        name="Agent",
        input={"subagent_type": "researcher", "description": "Find the notes", "prompt": "Look for notes."},
    )
    return [
        AssistantMessage([TextBlock("MAIN-BEFORE Let me ask for help.")], "offline", message_id="msg_main_1"),
        AssistantMessage([call], "offline", message_id="msg_main_1"),
        _stream({"type": "message_start", "message": {"id": "msg_sub_1"}}, AGENT_CALL),
        _stream(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "SUB-"}}, AGENT_CALL
        ),
        _stream(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "LOOKING"}}, AGENT_CALL
        ),
        AssistantMessage(
            [TextBlock("SUB-LOOKING"), ToolUseBlock(id=SUBAGENT_CALL, name="Bash", input={"command": "ls notes*"})],
            "offline",
            parent_tool_use_id=AGENT_CALL,
            message_id="msg_sub_1",
        ),
        _stream({"type": "message_delta", "delta": {"stop_reason": "tool_use"}}, AGENT_CALL),
        UserMessage([ToolResultBlock(SUBAGENT_CALL, "notes.txt", False)], parent_tool_use_id=AGENT_CALL),
        AssistantMessage(
            [TextBlock("SUB-ANSWER The notes are in notes.txt.")],
            "offline",
            parent_tool_use_id=AGENT_CALL,
            message_id="msg_sub_2",
        ),
        UserMessage([ToolResultBlock(AGENT_CALL, [{"type": "text", "text": "AGENT-RESULT notes.txt"}], False)]),
        AssistantMessage([TextBlock("MAIN-AFTER Your notes are in notes.txt.")], "offline", message_id="msg_main_2"),
    ]


def subagent_run_events(structured_output: dict[str, Any] | None = None) -> list[EventItem]:
    """The run's events from run.queued to run.completed (with `structured_output` when given)."""
    translator = EventTranslator()
    # The gateway's record of the subagent's model call, which its `usage` event reports.
    translator.usage_recorded(
        UsageRecord(message_id="msg_sub_1", model_id="offline", input_tokens=40, output_tokens=12, cost_usd=Decimal(0))
    )
    agent = {"name": "default", "version": 1, "kind": "agent"}
    events: list[EventItem] = [
        ("run.queued", {"input": "Where are my notes?", "text": "Where are my notes?", "user_id": "alice"}),
        ("run.started", {"model": "offline", "model_display_name": "Offline model (not Claude)", "agent": agent}),
    ]
    for message in subagent_turn_messages():
        events.extend(translator.translate(message))
    result: dict[str, Any] = {"result": "MAIN-AFTER Your notes are in notes.txt.", "num_turns": 2}
    if structured_output is not None:
        result["structured_output"] = structured_output
    return [*events, ("run.completed", {**result, "duration_ms": 1200})]
