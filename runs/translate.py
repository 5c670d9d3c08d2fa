"""Turning Agent SDK messages into the platform's events (see the envelope in ARCHITECTURE.md)."""

import logging
from typing import Any

from claude_agent_sdk import (
    AssistantMessage,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)
from claude_agent_sdk.types import StreamEvent

from conversations.events import EventItem, EventType
from tenants.models import TOKEN_KINDS
from usage.models import UsageRecord, usd

logger = logging.getLogger(__name__)


# Tool output can be a whole file; events stay small enough for a browser frame.
MAX_TOOL_RESULT_CHARS = 64 * 1024


def _block_data(block: Any) -> dict[str, Any] | None:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ThinkingBlock):
        return {"type": "thinking", "thinking": block.thinking}
    if isinstance(block, ToolUseBlock):
        data = {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
        if block.name.startswith("mcp__"):  # mcp__<server>__<tool>
            _, server, tool = [*block.name.split("__", 2), ""][:3]
            data.update(mcp_server=server, mcp_tool=tool)
        return data
    return None


def _tool_result_content(content: Any) -> tuple[Any, bool]:
    if isinstance(content, str):
        return (content[:MAX_TOOL_RESULT_CHARS], len(content) > MAX_TOOL_RESULT_CHARS)
    if isinstance(content, list):
        text = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return (text[:MAX_TOOL_RESULT_CHARS], len(text) > MAX_TOOL_RESULT_CHARS)
    return ("" if content is None else str(content)[:MAX_TOOL_RESULT_CHARS], False)


def usage_event(record: UsageRecord, parent_tool_use_id: str | None) -> EventItem:
    """The `usage` event of one model call: the gateway's record of it, so what clients see is what bills."""
    tokens = {kind: getattr(record, kind) for kind in TOKEN_KINDS}
    data = {"message_id": record.message_id, "model": record.model_id, **tokens, "cost_usd": usd(record.cost_usd)}
    return (EventType.USAGE, {**data, "parent_tool_use_id": parent_tool_use_id})


def message_event(block: dict[str, Any], message_id: str | None, parent_tool_use_id: str | None) -> EventItem:
    """The `message` event of one complete assistant block (`{"type": "text", "text": …}`, thinking, tool_use)."""
    data = {"role": "assistant", "message_id": message_id, "block": block, "parent_tool_use_id": parent_tool_use_id}
    return (EventType.MESSAGE, data)


class EventTranslator:
    """Stateful per run: it places each model call's `usage` event where the call ends in the stream.

    The gateway hands it each call's record (`usage_recorded`) before the CLI sees the end of that
    answer; the event goes out at the call's `message_delta`, with the agent (or subagent) that made it.
    """

    def __init__(self) -> None:
        self.session_id = ""
        # Whether the CLI reported a model call that failed for good (after its own retries).
        self.model_failed = False
        self._recorded: dict[str, UsageRecord] = {}  # calls recorded, not yet reported, by message id
        self._open_call_by_parent: dict[str | None, str] = {}
        # A subagent's calls stream no events (CLI 2.1.327): each is known by its messages' id, and the
        # Agent call it belongs to, until its record is in and reported.
        self._subagent_calls: dict[str, str] = {}

    def usage_recorded(self, record: UsageRecord) -> None:
        self._recorded[record.message_id] = record

    def unreported_usage(self) -> list[EventItem]:
        """The `usage` events of recorded calls the stream never showed (cut off, or side calls), once."""
        items = [usage_event(record, self._subagent_calls.get(key)) for key, record in self._recorded.items()]
        self._recorded.clear()
        self._subagent_calls.clear()
        return items

    def translate(self, message: Any) -> list[EventItem]:
        # A subagent's call is reported as soon as both its message and its record are in: with its message,
        # or (the gateway records a call at its end, after the CLI has passed on its blocks) just after.
        return [*self._subagent_usage(), *self._translate(message), *self._subagent_usage()]

    def _subagent_usage(self) -> list[EventItem]:
        reported = [key for key in self._subagent_calls if key in self._recorded]
        return [usage_event(self._recorded.pop(key), self._subagent_calls.pop(key)) for key in reported]

    def _translate(self, message: Any) -> list[EventItem]:
        if isinstance(message, StreamEvent):
            return self._stream_event(message)
        if isinstance(message, AssistantMessage):
            return self._assistant(message)
        if isinstance(message, UserMessage):
            return self._user(message)
        if isinstance(message, SystemMessage) and message.subtype == "mirror_error":
            # A transcript batch the session store could not save: the next resume would miss it.
            logger.error("Session transcript not saved: %s", message.data)
            return [(EventType.SESSION_MIRROR_ERROR, {"detail": str(message.data.get("error", ""))[:500]})]
        if isinstance(message, SystemMessage) and message.subtype == "api_retry":
            # The CLI waits to retry a failed model call (overloaded, rate limited, a 5xx): say so,
            # rather than go quiet for the minutes its retries can take.
            data = message.data
            return [
                (
                    EventType.MODEL_RETRY,
                    {
                        "attempt": data.get("attempt"),
                        "max_retries": data.get("max_retries"),
                        "retry_delay_ms": data.get("retry_delay_ms"),
                        "error_status": data.get("error_status"),
                        "error": data.get("error"),
                    },
                )
            ]
        if isinstance(message, SystemMessage) and message.subtype == "init":
            self.session_id = message.data.get("session_id", "")
            data = message.data
            return [
                (
                    EventType.SESSION_INIT,
                    {
                        "session_id": self.session_id,
                        "model": data.get("model"),
                        "tools": data.get("tools", []),
                        "cwd": data.get("cwd"),
                        "permission_mode": data.get("permissionMode"),
                        "claude_code_version": data.get("claude_code_version"),
                        "skills": data.get("skills", []),
                        "mcp_servers": [
                            {"name": server.get("name"), "status": server.get("status")}
                            for server in data.get("mcp_servers", [])
                            if isinstance(server, dict)
                        ],
                    },
                )
            ]
        return []

    def _stream_event(self, message: StreamEvent) -> list[EventItem]:
        return self.api_event(message.event, message.parent_tool_use_id)

    def api_event(self, event: dict[str, Any], parent: str | None = None) -> list[EventItem]:
        """The events of one Messages API stream event: a text or thinking delta, or, at a call's
        `message_delta`, the call's `usage` event (the CLI's stream and a chat run's alike)."""
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta", {})
            # A text or thinking delta: (kind, the delta's key holding its text).
            found = {"text_delta": ("text", "text"), "thinking_delta": ("thinking", "thinking")}.get(delta.get("type"))
            if found is None:
                return []
            data = {
                "kind": found[0],
                "text": delta[found[1]],
                "index": event.get("index"),
                "parent_tool_use_id": parent,
            }
            return [(EventType.MESSAGE_DELTA, data)]
        if kind == "message_start":
            message_id = event.get("message", {}).get("id")
            if isinstance(message_id, str):
                self._open_call_by_parent[parent] = message_id
            return []
        if kind == "message_delta":
            message_id = self._open_call_by_parent.pop(parent, None)
            record = self._recorded.pop(message_id, None) if message_id else None
            return [usage_event(record, parent)] if record else []
        return []

    def _assistant(self, message: AssistantMessage) -> list[EventItem]:
        if message.error:
            # Not the model's words but the CLI's report of a failed model call ("Failed to authenticate.
            # API Error: 403 …", "… check your inference gateway (127.0.0.1:8765)"): end users would read it
            # beside the run's failure, and in the CLI's terms. Only its kind is kept; the terminal event
            # says what happened, once.
            self.model_failed = True
            return [(EventType.MESSAGE_ERROR, {"error": message.error, "message_id": message.message_id})]
        if message.parent_tool_use_id is not None and message.message_id:
            self._subagent_calls.setdefault(message.message_id, message.parent_tool_use_id)
        items: list[EventItem] = []
        for block in message.content:
            data = _block_data(block)
            if data is not None:
                items.append(message_event(data, message.message_id, message.parent_tool_use_id))
        return items

    def _user(self, message: UserMessage) -> list[EventItem]:
        if isinstance(message.content, str):
            return []
        items: list[EventItem] = []
        for block in message.content:
            if isinstance(block, ToolResultBlock):
                content, truncated = _tool_result_content(block.content)
                items.append(
                    (
                        EventType.TOOL_RESULT,
                        {
                            "tool_use_id": block.tool_use_id,
                            "content": content,
                            "truncated": truncated,
                            "is_error": bool(block.is_error),
                            "parent_tool_use_id": message.parent_tool_use_id,
                        },
                    )
                )
        return items
