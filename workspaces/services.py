"""A conversation's workspace: its files in storage, versioned, and synced around every run."""

import asyncio
import hashlib
import logging
import mimetypes
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Max

from api.errors import ServiceError
from conversations.events import EventItem, EventType
from conversations.models import Conversation, Run
from workspaces import storage
from workspaces.models import WorkspaceFile
from workspaces.sync import Change, Limits, Manifest, place_tree, scan, valid_path

logger = logging.getLogger(__name__)

MB = 1024 * 1024
TRANSFERS = 10  # storage requests in flight at once, each way (botocore pools 10 connections)
# The folder of files the agent hands to the user: what it writes there is `presented`.
PRESENTED_FOLDER = "outputs"
WORKSPACE_PROMPT = (
    "Your working directory, /workspace, holds this conversation's files; they are kept between messages. "
    f"To hand a file to the user, save it under /workspace/{PRESENTED_FOLDER}/."
)


def workspace_dir(conversation: Conversation) -> Path:
    """The conversation's files on this worker: the directory a run sees as `/workspace`.

    A cache of what storage holds: each run first makes it match the stored tree (sync in).
    """
    root = settings.RUN_ROOT / "workspaces"
    root.mkdir(mode=0o711, parents=True, exist_ok=True)  # the sandbox user passes through, never lists
    path = root / str(conversation.pk)
    path.mkdir(exist_ok=True)
    return path


def limits() -> Limits:
    return Limits(
        file_bytes=settings.WORKSPACE_FILE_MB * MB,
        total_bytes=settings.SANDBOX_WORKSPACE_MB * MB,
        files=settings.WORKSPACE_MAX_FILES,
    )


def current_tree(conversation: Conversation) -> dict[str, str]:
    """Path → sha256 of the conversation's files as they are now."""
    return dict(WorkspaceFile.objects.filter(conversation=conversation).current().values_list("path", "sha256"))


def record_changes(
    conversation: Conversation, run: Run | None, changes: list[Change], source: str
) -> list[WorkspaceFile]:
    """Store each change as the next version of its path (a deletion too)."""
    if not changes:
        return []
    with transaction.atomic():
        # Versions of one conversation are numbered one writer at a time.
        Conversation.objects.select_for_update(no_key=True).filter(pk=conversation.pk).values("pk").get()
        paths = [change.path for change in changes]
        latest = dict(
            WorkspaceFile.objects.filter(conversation=conversation, path__in=paths)
            .values("path")
            .annotate(version=Max("version"))
            .values_list("path", "version")
        )
        versions = [
            WorkspaceFile(
                conversation=conversation,
                path=change.path,
                version=latest.get(change.path, 0) + 1,
                size=change.size,
                sha256=change.sha256,
                content_type=(mimetypes.guess_type(change.path)[0] or "application/octet-stream")
                if change.change != "deleted"
                else "",
                source=source,
                run=run,
                presented=source == WorkspaceFile.Source.AGENT and change.path.startswith(f"{PRESENTED_FOLDER}/"),
                deleted=change.change == "deleted",
            )
            for change in changes
        ]
        return WorkspaceFile.objects.bulk_create(versions)


def mark_presented(conversation: Conversation, paths: list[str]) -> list[WorkspaceFile]:
    """Mark the current versions of `paths` presented; those that are not files of the workspace are left out."""
    versions = list(WorkspaceFile.objects.filter(conversation=conversation, path__in=paths).current())
    WorkspaceFile.objects.filter(pk__in=[version.pk for version in versions]).update(presented=True)
    return versions


def file_presented(version: WorkspaceFile) -> EventItem:
    data = {"path": version.path, "version": version.version, "size": version.size, "sha256": version.sha256}
    return (EventType.FILE_PRESENTED, data)


def file_changed(version: WorkspaceFile, change: str) -> EventItem:
    data = {"path": version.path, "version": version.version, "size": version.size, "sha256": version.sha256}
    return (EventType.FILE_CHANGED, {**data, "change": change})


class RunWorkspace:
    """A run's /workspace: filled from storage before the CLI starts, saved back while it runs and at its end."""

    def __init__(self, run: Run, directory: Path, owner: tuple[int, int] | None) -> None:
        self.run = run
        self.conversation = run.conversation
        self.directory = directory
        self.owner = owner
        self.manifest = Manifest.load(settings.RUN_ROOT / "workspaces" / f"{self.conversation.pk}.manifest.json")
        self.limits = limits()
        self._saving = asyncio.Lock()
        self._reported: dict[str, str] = {}  # skipped paths already told about, with why

    async def sync_in(self) -> None:
        """Make the directory hold the conversation's stored tree, exactly."""
        tree = await sync_to_async(current_tree)(self.conversation)
        await asyncio.to_thread(
            place_tree,
            self.directory,
            tree,
            self.manifest,
            lambda sha256: storage.open_blob(self.conversation, sha256),
            self.owner,
            TRANSFERS,
        )
        await asyncio.to_thread(self.manifest.save)

    async def sync_out(self) -> list[EventItem]:
        """Save what changed since the last sync as new versions; the `file.changed` (and `file.skipped`) events."""
        async with self._saving:
            staging = Path(tempfile.mkdtemp(prefix="sync-", dir=_staging_root()))
            try:
                found = await asyncio.to_thread(scan, self.directory, self.manifest, self.limits, staging)
                await asyncio.to_thread(self._upload, found.changes)
                versions = await sync_to_async(record_changes)(
                    self.conversation, self.run, found.changes, WorkspaceFile.Source.AGENT
                )
                await asyncio.to_thread(self.manifest.save)
            finally:
                await asyncio.to_thread(shutil.rmtree, staging, True)
        items = [file_changed(version, change.change) for version, change in zip(versions, found.changes, strict=True)]
        for path, reason in found.skipped.items():
            if self._reported.get(path) != reason:
                self._reported[path] = reason
                items.append((EventType.FILE_SKIPPED, {"path": path, "reason": reason}))
        return items

    async def present(self, paths: list[str]) -> list[EventItem]:
        """Hand files to the user: saved now (their `file.changed`), then marked presented (`file.presented`)."""
        items = await self.sync_out()
        versions = await sync_to_async(mark_presented)(self.conversation, paths)
        return items + [file_presented(version) for version in versions]

    def _upload(self, changes: list[Change]) -> None:
        def upload(change: Change) -> None:
            with open(change.staged, "rb") as content:
                storage.put_blob(self.conversation, change.sha256, content, change.size)

        # Many small files are many requests: a few at a time hide each one's round trip.
        with ThreadPoolExecutor(max_workers=TRANSFERS) as transfers:
            list(transfers.map(upload, [change for change in changes if change.staged]))


def _staging_root() -> Path:
    root = settings.RUN_ROOT / "staging"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root


def save_file(
    conversation: Conversation, path: str, content: IO[bytes], *, source: str, run: Run | None = None
) -> WorkspaceFile:
    """Store an uploaded file as the next version of `path`."""
    staging = _staging_root()
    with tempfile.NamedTemporaryFile(dir=staging) as copy:
        digest = hashlib.sha256()
        size = 0
        while chunk := content.read(MB):
            size += len(chunk)
            digest.update(chunk)
            copy.write(chunk)
        copy.flush()
        copy.seek(0)
        storage.put_blob(conversation, digest.hexdigest(), copy)
    change = Change(path, "modified", size, digest.hexdigest())
    (version,) = record_changes(conversation, run, [change], source)
    return version


def attach_files(conversation: Conversation, uploads: list[Any]) -> list[WorkspaceFile]:
    """Store a message's files in the workspace, each under its own name (refused: a name that is no path)."""
    limit = settings.WORKSPACE_FILE_MB * MB
    for upload in uploads:
        if reason := valid_path(upload.name or ""):
            message = f"{upload.name!r}: {reason}"
            raise ServiceError(message, code="invalid", fields={"file": [message]})
        if upload.size > limit:
            message = f"{upload.name!r} is {upload.size:,} bytes; the limit is {limit:,} (WORKSPACE_FILE_MB)."
            raise ServiceError(message, status=413, code="request_too_large", fields={"file": [message]})
    return [save_file(conversation, upload.name, upload, source=WorkspaceFile.Source.USER) for upload in uploads]


def with_attachments(text: str, attached: list[WorkspaceFile]) -> str:
    """The message as the agent reads it: its text, then where the files it brought are."""
    if not attached:
        return text
    listing = "\n".join(f"- /workspace/{version.path} ({version.size:,} bytes)" for version in attached)
    return f"{text}\n\nThe user attached these files:\n{listing}"


def delete_file(conversation: Conversation, path: str) -> WorkspaceFile:
    (version,) = record_changes(conversation, None, [Change(path, "deleted")], WorkspaceFile.Source.USER)
    return version
