"""Agent SDK session transcripts kept in the database, so that any worker, on any machine, can resume a conversation.

The CLI writes its transcript under `CLAUDE_CONFIG_DIR`, which is per run and thrown away. With
`session_store=DatabaseSessionStore(conversation.pk)` the SDK mirrors every transcript entry here, and on
`resume=<session id>` loads the transcript back into a temporary config dir for the CLI to resume from.
"""

import contextlib
import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from asgiref.sync import sync_to_async
from claude_agent_sdk.types import (
    SessionKey,
    SessionListSubkeysKey,
    SessionStore,
    SessionStoreEntry,
    SessionStoreListEntry,
)
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from conversations.models import Conversation, SessionEntry, SessionEntryQuerySet


class DatabaseSessionStore(SessionStore):
    """The session transcripts of one conversation.

    Every query is scoped to the conversation, so a store for conversation A never reads, lists or
    deletes B's entries, whatever project key or session id it is asked for.
    """

    def __init__(self, conversation_id: UUID | str) -> None:
        self.conversation_id = conversation_id

    async def append(self, key: SessionKey, entries: list[SessionStoreEntry]) -> None:
        if entries:
            await sync_to_async(self._append)(key, entries)

    async def load(self, key: SessionKey) -> list[SessionStoreEntry] | None:
        return await sync_to_async(self._load)(key)

    async def list_sessions(self, project_key: str) -> list[SessionStoreListEntry]:
        return await sync_to_async(self._list_sessions)(project_key)

    async def delete(self, key: SessionKey) -> None:
        await sync_to_async(self._delete)(key)

    async def list_subkeys(self, key: SessionListSubkeysKey) -> list[str]:
        return await sync_to_async(self._list_subkeys)(key)

    def _session(self, key: SessionKey | SessionListSubkeysKey) -> SessionEntryQuerySet:
        return SessionEntry.objects.for_session(self.conversation_id, key["project_key"], key["session_id"])

    def _transcript(self, key: SessionKey) -> SessionEntryQuerySet:
        return self._session(key).filter(subpath=key.get("subpath") or "")

    def _append(self, key: SessionKey, entries: list[SessionStoreEntry]) -> None:
        with transaction.atomic():
            # Appends to one conversation take turns here, so each batch gets the next positions
            # whole and in call order, across threads and workers. NO KEY: rows inserted meanwhile
            # with a foreign key to the conversation (events) need not wait.
            Conversation.objects.select_for_update(no_key=True).filter(pk=self.conversation_id).values("pk").get()
            transcript = self._transcript(key)
            last = transcript.aggregate(last=Max("position"))["last"]
            # The SDK retries a failed batch, which may then overlap what an earlier attempt stored.
            uuids = {entry_uuid for entry in entries if (entry_uuid := _uuid(entry))}
            seen = set(transcript.filter(uuid__in=uuids).values_list("uuid", flat=True)) if uuids else set()
            positions = itertools.count(0 if last is None else last + 1)
            rows = []
            for entry in entries:
                entry_uuid = _uuid(entry)
                if entry_uuid in seen:
                    continue
                if entry_uuid:
                    seen.add(entry_uuid)
                rows.append(
                    SessionEntry(
                        conversation_id=self.conversation_id,
                        project_key=key["project_key"],
                        session_id=key["session_id"],
                        subpath=key.get("subpath") or "",
                        position=next(positions),
                        uuid=entry_uuid,
                        # ASCII-escaped, so lone surrogates from a cut-off string survive as well.
                        data=json.dumps(entry),
                    )
                )
            SessionEntry.objects.bulk_create(rows)

    def _load(self, key: SessionKey) -> list[SessionStoreEntry] | None:
        rows = self._transcript(key).order_by("position").values_list("data", flat=True)
        return [json.loads(data) for data in rows] or None

    def _list_sessions(self, project_key: str) -> list[SessionStoreListEntry]:
        sessions = (
            SessionEntry.objects.filter(conversation_id=self.conversation_id, project_key=project_key, subpath="")
            .values("session_id")
            .annotate(written_at=Max("created_at"))
            .order_by()
        )
        return [{"session_id": s["session_id"], "mtime": int(s["written_at"].timestamp() * 1000)} for s in sessions]

    def _delete(self, key: SessionKey) -> None:
        # The main key takes its subagents' transcripts with it.
        (self._transcript(key) if key.get("subpath") else self._session(key)).delete()

    def _list_subkeys(self, key: SessionListSubkeysKey) -> list[str]:
        subpaths = self._session(key).exclude(subpath="").order_by("subpath").values_list("subpath", flat=True)
        return list(subpaths.distinct())


def checkpoint(conversation_id: UUID | str, config_dir: Path, session_id: str, tool_use_id: str) -> bool:
    """Store what the CLI has written of a session's main transcript so far; whether it holds the call `tool_use_id`
    (the CLI writes its file a moment after it asks about the call: the caller tries again).

    The SDK mirrors the transcript as the CLI sends it, which it does at the end of a turn: a call waiting for
    a person in mid-turn would not be in the database, and a worker that died meanwhile would take it along.
    The CLI's own file (in the run's config dir, on this worker) has it: its entries with a uuid are stored
    here (the SDK's later copies of them are then skipped; entries without a uuid follow with the SDK's own).
    """
    found = sorted(config_dir.glob(f"projects/*/{session_id}.jsonl"))
    if not found:
        return False
    entries = []
    for line in found[0].read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and _uuid(entry):
                entries.append(entry)
    key: SessionKey = {"project_key": found[0].parent.name, "session_id": session_id}
    DatabaseSessionStore(conversation_id)._append(key, entries)  # type: ignore[abstract,arg-type]  # see runs.options
    # The session the conversation resumes from, should its run be resumed before it ends.
    Conversation.objects.filter(pk=conversation_id).update(sdk_session_id=session_id)
    return any(_call(entry, tool_use_id) for entry in entries)


def _call(entry: Mapping[str, Any], tool_use_id: str) -> dict[str, Any] | None:
    """The tool_use block `tool_use_id` of an assistant entry, if it holds it."""
    message = entry.get("message") if entry.get("type") == "assistant" else None
    content = message.get("content") if isinstance(message, dict) else None
    blocks = content if isinstance(content, list) else []
    return next(
        (b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("id") == tool_use_id), None
    )


def defer_dangling_call(conversation_id: UUID | str, session_id: str, tool_use_id: str) -> bool:
    """Mark a call left waiting by a worker that died as deferred, as the CLI marks a call its hook defers, so that
    resuming the session settles it (with the person's decision) instead of dropping it. False when the stored
    transcript does not hold the call (it was never checkpointed): the run cannot be resumed at that call."""
    rows = SessionEntry.objects.filter(conversation_id=conversation_id, session_id=session_id, subpath="")
    for row in rows.exclude(uuid="").order_by("-position").iterator():
        entry = json.loads(row.data)
        call = _call(entry, tool_use_id)
        if call is None:
            continue
        marker = {
            key: entry[key]
            for key in ("isSidechain", "userType", "cwd", "sessionId", "version", "gitBranch")
            if key in entry
        }
        marker.update(
            {
                "parentUuid": row.uuid,
                "type": "attachment",
                "attachment": {
                    "type": "hook_deferred_tool",
                    "toolUseID": tool_use_id,
                    "toolName": call.get("name"),
                    "toolInput": call.get("input") or {},
                    "hookName": "settings",
                    "hookEvent": "PreToolUse",
                    "permissionMode": "default",
                },
                "uuid": str(uuid4()),
                "timestamp": timezone.now().isoformat().replace("+00:00", "Z"),
            }
        )
        key: SessionKey = {"project_key": row.project_key, "session_id": session_id}
        DatabaseSessionStore(conversation_id)._append(key, [marker])  # type: ignore[abstract,list-item]
        return True
    return False


def _uuid(entry: Mapping[str, Any]) -> str:
    """The entry's idempotency key; empty for entries without one (titles, tags, mode markers)."""
    value = entry.get("uuid")
    return value if isinstance(value, str) else ""
