"""Agent SDK session transcripts kept in the database, so that any worker, on any machine, can resume a conversation.

The CLI writes its transcript under `CLAUDE_CONFIG_DIR`, which is per run and thrown away. With
`session_store=DatabaseSessionStore(conversation.pk)` the SDK mirrors every transcript entry here, and on
`resume=<session id>` loads the transcript back into a temporary config dir for the CLI to resume from.
"""

import itertools
import json
from uuid import UUID

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


def _uuid(entry: SessionStoreEntry) -> str:
    """The entry's idempotency key; empty for entries without one (titles, tags, mode markers)."""
    value = entry.get("uuid")
    return value if isinstance(value, str) else ""
