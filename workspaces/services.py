"""Where a conversation's files live while its runs execute."""

from pathlib import Path

from django.conf import settings

from conversations.models import Conversation


def conversation_dir(conversation: Conversation) -> Path:
    return settings.RUN_ROOT / "conversations" / str(conversation.pk)


def workspace_dir(conversation: Conversation) -> Path:
    """The directory a run sees as its working directory (`/workspace` once sandboxed)."""
    path = conversation_dir(conversation) / "workspace"
    path.mkdir(parents=True, exist_ok=True)
    return path
