"""Where a conversation's files live while its runs execute."""

from pathlib import Path

from django.conf import settings

from conversations.models import Conversation


def workspace_dir(conversation: Conversation) -> Path:
    """The conversation's files on this worker: the directory a run sees as `/workspace`.

    The one place that decides it, so that keeping workspaces in object storage between runs
    (a later step) changes only this function.
    """
    root = settings.RUN_ROOT / "workspaces"
    root.mkdir(mode=0o711, parents=True, exist_ok=True)  # the sandbox user passes through, never lists
    path = root / str(conversation.pk)
    path.mkdir(exist_ok=True)
    return path
