"""Naming a conversation: one small model call of its first run, through the run's own gateway.

The call starts beside the agent as soon as the run has started, from the first message alone: the
title is there while the agent still works, and long before the run ends (the agent's turn waits for
its CLI to start, and then for a larger answer). It goes through the run's gateway as a side call
(`ModelGateway.side_call`): metered to the run, refused by budgets like any call, but a refusal only
means no title, never the end of the run.
"""

import logging
import re
from collections.abc import Callable
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from conversations.events import EventItem, EventType
from conversations.models import Conversation, Run
from conversations.reconnect import call_database
from gateway.server import ModelGateway, SideCallFailed
from tenants.models import LanguageModel

logger = logging.getLogger(__name__)

TITLE_MAX_CHARS = 60
# A title of a few words; also what budgets hold for the call's answer.
TITLE_MAX_TOKENS = 32
# As much of the first message as a title needs.
MESSAGE_MAX_CHARS = 4000
INSTRUCTIONS = (
    "You name conversations. Reply with a title of at most six words for the conversation that begins with "
    "the user's message: in the message's language, without quotes or a full stop, and nothing else."
)
# What a model may wrap a title in: a heading's hashes, quotes, emphasis, a label, a full stop.
QUOTES = "\"'`*“”‘’«»"
LABEL = re.compile(r"^title\s*:\s*", re.IGNORECASE)


def title_model(run: Run) -> LanguageModel | None:
    """The model that names the run's conversation, or None when this run names nothing: only a conversation's
    first run does (in its first leg: a run resumed after waiting for a person named it then), and only while the
    conversation has no title.

    TITLE_MODEL when it is an active catalog model of the run's provider (the run's gateway speaks to that one
    upstream), else the run's own model.
    """
    conversation = run.conversation
    if (
        run.suspensions
        or conversation.title
        or Run.objects.filter(conversation=conversation, created_at__lt=run.created_at).exists()
    ):
        return None
    if not settings.TITLE_MODEL:
        return run.model
    model = LanguageModel.objects.filter(pk=settings.TITLE_MODEL).first()
    if model is None or not model.is_usable or model.provider != run.model.provider:
        logger.info(
            "Run %s: TITLE_MODEL %r is not an active %s model of the catalog; its own model names the conversation",
            run.pk,
            settings.TITLE_MODEL,
            run.model.get_provider_display(),
        )
        return run.model
    return model


async def title_conversation(
    run: Run, gateway: ModelGateway, model: LanguageModel, emit: Callable[[str, dict[str, Any]], None]
) -> None:
    """Ask `model` for a title of the run's conversation, store it unless the conversation has one by then (a title
    its user set wins), and emit `conversation.titled` when it is stored. Never raises: a title is no reason to
    fail a run."""
    request = {
        "model": model.provider_model_id,
        "max_tokens": TITLE_MAX_TOKENS,
        "system": INSTRUCTIONS,
        "messages": [{"role": "user", "content": run.input[:MESSAGE_MAX_CHARS]}],
    }
    try:
        title = title_of(await gateway.side_call(request))
        if not title:
            logger.info("Run %s: the title model answered no title", run.pk)
            return
        stored = await call_database(
            f"Titling conversation {run.conversation_id}", store_title, run.conversation_id, title
        )
    except SideCallFailed as exc:
        logger.info("Run %s: no title for its conversation: %s", run.pk, exc)
        return
    except Exception:
        logger.exception("Run %s: titling its conversation failed", run.pk)
        return
    if stored:
        emit(*titled_event(title, model))


def title_of(message: dict[str, Any]) -> str:
    """A title from a model's answer: its first line of text, unwrapped, on one line of at most TITLE_MAX_CHARS."""
    blocks = message.get("content")
    text = "".join(
        str(block.get("text", "")) for block in blocks or [] if isinstance(block, dict) and block.get("type") == "text"
    )
    title = next((" ".join(unwrapped(line).split()) for line in text.splitlines() if unwrapped(line)), "")
    if len(title) <= TITLE_MAX_CHARS:
        return title
    cut = title[: TITLE_MAX_CHARS - 1]
    return (cut.rsplit(" ", 1)[0] if " " in cut else cut).rstrip(" ,;:-") + "…"


def unwrapped(line: str) -> str:
    line = "".join(char if char.isprintable() else " " for char in line)
    line = LABEL.sub("", line.strip().lstrip("#").strip().strip(QUOTES).strip())
    return line.strip().strip(QUOTES).rstrip(".").strip()


def store_title(conversation_id: UUID, title: str) -> bool:
    """Give the conversation `title` if it has none; False when it has another (its user's, set meanwhile).

    One conditional UPDATE, so a title set at any moment before it wins. A retry after a lost COMMIT finds its
    own title there and says so.
    """
    untitled = Conversation.objects.filter(Q(title="") | Q(title=title), pk=conversation_id)
    return bool(untitled.update(title=title, updated_at=timezone.now()))


def titled_event(title: str, model: LanguageModel) -> EventItem:
    return (EventType.CONVERSATION_TITLED, {"title": title, "model": model.pk})
