"""How full a conversation's context window is after a turn, as its CLI counts it (the `/context` command)."""

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from claude_agent_sdk import ClaudeSDKClient, ContextUsageResponse

from conversations.events import EventType
from conversations.models import Conversation, Run
from conversations.reconnect import call_database

logger = logging.getLogger(__name__)

# Measured: 0.1-0.2 s with the offline model (the CLI asks the gateway's count_tokens some 20 times, at once);
# a CLI that does not answer in this time leaves the gauge as it was rather than hold the run's end.
CONTEXT_USAGE_SECONDS = 5.0


async def read_context_usage(client: ClaudeSDKClient, run: Run) -> dict[str, Any] | None:
    """Ask the run's CLI, between turns, how full its session's context window is; None when it does not say.
    Never raises: the gauge is no reason to fail a run."""
    try:
        async with asyncio.timeout(CONTEXT_USAGE_SECONDS):
            return context_usage(await client.get_context_usage())
    except Exception:
        logger.warning("Run %s: the CLI did not say how full its context is", run.pk, exc_info=True)
        return None


async def report_context_usage(
    usage: dict[str, Any] | None, run: Run, emit: Callable[[str, dict[str, Any]], None]
) -> None:
    """Emit `context.usage` and keep it on the conversation (nothing when the CLI did not say)."""
    if usage is None:
        return
    emit(EventType.CONTEXT_USAGE, usage)
    try:
        await call_database(
            f"Storing the context usage of conversation {run.conversation_id}",
            Conversation.objects.filter(pk=run.conversation_id).update,
            context_usage=usage,
        )
    except Exception:
        logger.warning("Run %s: storing its conversation's context usage failed", run.pk, exc_info=True)


def context_usage(counted: ContextUsageResponse) -> dict[str, Any]:
    """The event's data (and the conversation's `context_usage`): the CLI's own figures and category names.

    `total_tokens` is what the context holds (the CLI takes it from the last model call's input, cache included),
    `window` the model's context window, `max_tokens` what the CLI lets the context reach of it; each
    category's `kind` says whether it is `used`, a `buffer` kept free for compaction, or `free`.
    """
    categories: list[dict[str, Any]] = [dict(category) for category in counted["categories"]]
    return {
        "total_tokens": counted["totalTokens"],
        "max_tokens": counted["maxTokens"],
        "window": counted["rawMaxTokens"],
        "percentage": counted["percentage"],
        "auto_compact_threshold": counted.get("autoCompactThreshold") if counted["isAutoCompactEnabled"] else None,
        "categories": [
            {
                "id": category.get("id", ""),
                "name": category["name"],
                "kind": category.get("kind", ""),
                "tokens": category["tokens"],
                "deferred": bool(category.get("isDeferred", False)),
            }
            for category in categories
        ],
    }
