"""A run in which the agent hands work to a subagent, as its events are stored: the SDK's messages of such a
turn, put through the platform's own translator (runs/translate.py), between the events that start and end it.
(tests/e2e/test_agent_profiles.py and the chat page's browser tests make such runs through the real CLI too.)"""

from decimal import Decimal
from typing import Any

from claude_agent_sdk import AssistantMessage, TextBlock, ToolResultBlock, ToolUseBlock, UserMessage

from conversations.events import EventItem
from runs.translate import EventTranslator
from usage.models import UsageRecord

AGENT_CALL = "toolu_agent_1"  # the main agent's Agent tool call; the subagent's events name it as their parent
SUBAGENT_CALL = "toolu_sub_bash"
STRUCTURED_OUTPUT = {"files": ["notes.txt"], "count": 1}


def subagent_turn_messages() -> list[Any]:
    """What the SDK hands the executor for the turn, as CLI 2.1.327 streams it with `forward_subagent_text`: the
    main agent's words and Agent call, then the subagent's messages (its calls stream no partial events): its
    words and Bash call, the gateway's record of that model call, the Bash result, its answer; then the Agent
    call's result and the main agent's answer."""
    call = ToolUseBlock(
        id=AGENT_CALL,
        name="Agent",
        input={"subagent_type": "researcher", "description": "Find the notes", "prompt": "Look for notes."},
    )
    return [
        AssistantMessage([TextBlock("MAIN-BEFORE Let me ask for help.")], "offline", message_id="msg_main_1"),
        AssistantMessage([call], "offline", message_id="msg_main_1"),
        AssistantMessage(
            [TextBlock("SUB-LOOKING"), ToolUseBlock(id=SUBAGENT_CALL, name="Bash", input={"command": "ls notes*"})],
            "offline",
            parent_tool_use_id=AGENT_CALL,
            message_id="msg_sub_1",
        ),
        UsageRecord(message_id="msg_sub_1", model_id="offline", input_tokens=40, output_tokens=12, cost_usd=Decimal(0)),
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
    agent = {"name": "default", "version": 1, "kind": "agent"}
    events: list[EventItem] = [
        ("run.queued", {"input": "Where are my notes?", "text": "Where are my notes?", "user_id": "alice"}),
        ("run.started", {"model": "offline", "model_display_name": "Offline model (not Claude)", "agent": agent}),
    ]
    for message in subagent_turn_messages():
        if isinstance(message, UsageRecord):
            translator.usage_recorded(message)  # the gateway's record, which the call's `usage` event reports
        else:
            events.extend(translator.translate(message))
    result: dict[str, Any] = {"result": "MAIN-AFTER Your notes are in notes.txt.", "num_turns": 2}
    if structured_output is not None:
        result["structured_output"] = structured_output
    return [*events, ("run.completed", {**result, "duration_ms": 1200})]
