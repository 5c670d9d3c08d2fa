"""A conversation's stored events as a transcript: runs of lines, a subagent's lines nested in the tool call
that started it. The admin draws it on the server (templates/admin/conversations/conversation/), as
conversations/static/conversations/events.js draws the same events live, with the same class names."""

import json
from dataclasses import dataclass, field
from typing import Any

from conversations.events import TERMINAL_EVENT_TYPES, EventType
from conversations.models import Conversation, Event, Run
from tenants.models import TOKEN_KINDS

# The newest events a change page renders; a long agent run easily stores tens of thousands.
TRANSCRIPT_MAX_EVENTS = 2000
# Token-level copies of the `message` events that follow them: noise in a transcript.
TRANSCRIPT_SKIPPED_TYPES = (EventType.MESSAGE_DELTA,)
TERMINAL_STATUS: dict[str, str] = {event_type: status for status, event_type in TERMINAL_EVENT_TYPES.items()}


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _number(data: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


@dataclass(frozen=True)
class ContextUsage:
    """How full a conversation's context window is (event `context.usage`, `Conversation.context_usage`): the
    SDK's `get_context_usage` keys (totalTokens, maxTokens, percentage, categories), or their snake_case."""

    used: int | None
    window: int | None
    percent: float
    categories: list[tuple[str, int]]

    @classmethod
    def read(cls, data: Any) -> "ContextUsage | None":
        """The usage `data` reports, or None when it says too little to show (as events.js reads it)."""
        if not isinstance(data, dict):
            return None
        used, window = _number(data, "totalTokens", "total_tokens"), _number(data, "maxTokens", "max_tokens")
        percent = _number(data, "percentage", "percent")
        if percent is None and used is not None and window:
            percent = used * 100 / window
        if percent is None:
            return None
        categories = [
            (str(category["name"]), int(_number(category, "tokens") or 0))
            for category in data.get("categories") or []
            if isinstance(category, dict) and category.get("name")
        ]
        return cls(
            None if used is None else int(used),
            None if window is None else int(window),
            min(max(percent, 0.0), 100.0),
            categories,
        )

    def __str__(self) -> str:
        share = f"{self.percent:.0f}%"
        if self.used is None or self.window is None:
            return f"{share} of the context window"
        return f"{self.used:,} of {self.window:,} tokens ({share})"


@dataclass
class TranscriptItem:
    """One line of a transcript; `kind` picks how the template draws it (as conversations/events.js
    draws the same event on the live page)."""

    kind: str
    event: Event
    data: dict[str, Any]
    text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    result: "TranscriptItem | None" = None  # a tool call's result, drawn inside it
    children: "list[TranscriptItem]" = field(default_factory=list)  # a subagent's lines, inside its tool call


@dataclass
class RunTranscript:
    run: Run
    user_text: str  # as the user typed it (the agent read it with the attachments' paths added)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    items: list[TranscriptItem] = field(default_factory=list)
    offline_model: bool = False
    sandbox: str = ""  # as its run.started says: bubblewrap, unsandboxed, or none (a chat)


@dataclass
class Transcript:
    runs: list[RunTranscript]
    shown: int
    total: int
    before: int | None
    earlier_before: int | None


def tool_label(block: dict[str, Any]) -> str:
    """What a tool call is about, in a few words (as events.js labels it on the live page)."""
    tool_input = block.get("input")
    if not isinstance(tool_input, dict):
        return ""
    for key in ("command", "file_path", "path", "pattern", "description"):
        if tool_input.get(key):
            return str(tool_input[key])[:120]
    return ""


def subagent_type(block: dict[str, Any]) -> str:
    """The subagent a tool call starts (the Agent tool's `subagent_type`), or "" for any other call."""
    tool_input = block.get("input")
    value = tool_input.get("subagent_type") if isinstance(tool_input, dict) else None
    return value if isinstance(value, str) else ""


def agent_label(agent: Any) -> str:
    """`name@version` of the agent a run.started names, with its kind when it is a plain chat."""
    if not isinstance(agent, dict) or not agent.get("name"):
        return ""
    label = f"{agent['name']}@{agent.get('version', '?')}"
    return f"{label} (chat)" if agent.get("kind") == "chat" else label


def transcript_item(event: Event) -> TranscriptItem | None:
    """The transcript line for one stored event, or None for events the transcript leaves out."""
    data = event.data if isinstance(event.data, dict) else {"value": event.data}
    if event.type == EventType.MESSAGE:
        block = data.get("block")
        if not isinstance(block, dict):
            block = {}
        block_type = block.get("type")
        if block_type == "text":
            return TranscriptItem("text", event, data, text=str(block.get("text", "")))
        if block_type == "thinking":
            return TranscriptItem("thinking", event, data, text=str(block.get("thinking", "")))
        if block_type == "tool_use":
            return TranscriptItem(
                "tool_use",
                event,
                data,
                text=pretty_json(block.get("input")),
                extra={
                    "name": block.get("name", "?"),
                    "id": block.get("id", ""),
                    "label": tool_label(block),
                    "subagent_type": subagent_type(block),
                },
            )
        return TranscriptItem("other", event, data, text=pretty_json(data))
    if event.type == EventType.TOOL_RESULT:
        content = data.get("content")
        return TranscriptItem(
            "tool_result",
            event,
            data,
            text=content if isinstance(content, str) else pretty_json(content),
            extra={"is_error": bool(data.get("is_error")), "truncated": bool(data.get("truncated"))},
        )
    if event.type == EventType.USAGE:
        tokens = {key.removesuffix("_tokens").replace("_", " "): data.get(key, 0) for key in TOKEN_KINDS}
        return TranscriptItem("usage", event, data, extra={"tokens": tokens, "cost_usd": data.get("cost_usd")})
    if event.type in TERMINAL_STATUS:
        error = data.get("error")
        if not isinstance(error, dict):
            error = {}
        structured = data.get("structured_output")
        return TranscriptItem(
            "terminal",
            event,
            data,
            text=str(error.get("message") or data.get("message") or ""),
            extra={
                "status": TERMINAL_STATUS[event.type],
                "structured_output": None if structured is None else pretty_json(structured),
            },
        )
    if event.type == EventType.RUN_STARTED:
        return TranscriptItem("started", event, data, extra={"agent": agent_label(data.get("agent"))})
    if event.type == EventType.MESSAGE_ERROR:
        return TranscriptItem("message_error", event, data, text=str(data.get("error", "")))
    if event.type == EventType.CONTEXT_USAGE and (usage := ContextUsage.read(data)) is not None:
        return TranscriptItem("context", event, data, text=str(usage), extra={"categories": usage.categories})
    if event.type == EventType.CONVERSATION_TITLED:
        return TranscriptItem("titled", event, data, text=str(data.get("title", "")))
    if event.type == EventType.MESSAGE_STEERED:
        return TranscriptItem("steered", event, data, text=str(data.get("text", "")))
    if event.type == EventType.RUN_QUEUED:
        return None
    return TranscriptItem("other", event, data, text=pretty_json(data))


def _without_message(items: list[TranscriptItem], message_id: str) -> list[TranscriptItem]:
    """The lines of every model message but one, nested lines included."""
    kept = []
    for item in items:
        if item.data.get("message_id") == message_id:
            continue
        item.children = _without_message(item.children, message_id)
        kept.append(item)
    return kept


def build_transcript(conversation: Conversation, before: int | None = None) -> Transcript:
    """The conversation's stored events as runs of transcript lines, newest TRANSCRIPT_MAX_EVENTS only.

    A line of a subagent (its event's `parent_tool_use_id`) goes inside the tool call that started it;
    when that call is older than the window shown, it stays in its run, marked as a subagent's."""
    events_qs = Event.objects.filter(conversation=conversation).exclude(type__in=TRANSCRIPT_SKIPPED_TYPES)
    total = events_qs.count()
    window = events_qs.filter(seq__lt=before) if before else events_qs
    events = list(reversed(window.order_by("-seq")[:TRANSCRIPT_MAX_EVENTS]))
    runs = Run.objects.in_bulk({event.run_id for event in events})
    transcripts: list[RunTranscript] = []
    # By run, in the order runs first appear: a message queued behind a run stores its `run.queued` among that
    # run's events, and its own lines follow once that run has ended.
    by_run: dict[Any, RunTranscript] = {}
    tool_calls: dict[str, TranscriptItem] = {}
    for event in events:
        if event.run_id not in by_run:
            run = runs[event.run_id]
            by_run[event.run_id] = RunTranscript(run=run, user_text=run.input)
            transcripts.append(by_run[event.run_id])
        current = by_run[event.run_id]
        data = event.data if isinstance(event.data, dict) else {}
        if event.type == EventType.RUN_QUEUED:
            current.user_text = str(data.get("text", data.get("input", current.user_text)))
            current.attachments = [file for file in data.get("attachments") or [] if isinstance(file, dict)]
        if event.type == EventType.RUN_STARTED:
            current.offline_model = bool(data.get("offline_model"))
            current.sandbox = str(data.get("sandbox") or "")
        item = transcript_item(event)
        if item is None:
            continue
        if item.kind == "tool_use":
            tool_calls[item.extra["id"]] = item
        elif item.kind == "tool_result" and (call := tool_calls.get(str(data.get("tool_use_id")))) is not None:
            call.result = item
            continue
        elif item.kind == "message_error" and (failed := data.get("message_id")):
            # The CLI's own words for a failed model call; the run's end says what went wrong.
            current.items = _without_message(current.items, failed)
        parent_id = data.get("parent_tool_use_id")
        parent = tool_calls.get(parent_id) if isinstance(parent_id, str) else None
        (parent.children if parent is not None else current.items).append(item)
    earlier = events[0].seq if events and window.filter(seq__lt=events[0].seq).exists() else None
    return Transcript(runs=transcripts, shown=len(events), total=total, before=before, earlier_before=earlier)
