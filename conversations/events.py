"""The event log: events appended with gap-free seqs and published after commit, and a run's one
terminal event. Shared by the API-side workflows (conversations.services) and the runs app."""

import json
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from django.db import connection, transaction
from django.utils import timezone

from conversations import realtime
from conversations.models import Conversation, Event, Run


class EventType(StrEnum):
    """Every type of event a conversation's log holds; the envelope and each type's data are in the README."""

    RUN_QUEUED = "run.queued"
    RUN_STARTED = "run.started"
    SESSION_INIT = "session.init"
    SESSION_MIRROR_ERROR = "session.mirror_error"
    MESSAGE_DELTA = "message.delta"
    MESSAGE = "message"
    MESSAGE_ERROR = "message.error"
    MODEL_RETRY = "model.retry"
    TOOL_RESULT = "tool.result"
    PERMISSION_REQUEST = "permission.request"
    PERMISSION_DECISION = "permission.decision"
    QUESTION = "question"
    QUESTION_ANSWERED = "question.answered"
    RUN_WAITING = "run.waiting"
    RUN_RESUMED = "run.resumed"
    RUN_HANDED_BACK = "run.handed_back"
    MESSAGE_STEERED = "message.steered"
    USAGE = "usage"
    FILE_CHANGED = "file.changed"
    FILE_SKIPPED = "file.skipped"
    FILE_PRESENTED = "file.presented"
    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"
    RUN_INTERRUPTED = "run.interrupted"
    CONVERSATION_TITLED = "conversation.titled"
    CONTEXT_USAGE = "context.usage"
    EGRESS = "egress"


# A run's one terminal event, by the status it ends in.
TERMINAL_EVENT_TYPES = {
    Run.Status.COMPLETED: EventType.RUN_COMPLETED,
    Run.Status.FAILED: EventType.RUN_FAILED,
    Run.Status.INTERRUPTED: EventType.RUN_INTERRUPTED,
}
TERMINAL_TYPES = frozenset(TERMINAL_EVENT_TYPES.values())

EventItem = tuple[str, dict[str, Any]]


def append_events(
    conversation_id: UUID, run_id: UUID, items: Sequence[EventItem], *, while_running: bool = False
) -> list[Event]:
    """Persist events with the next gap-free seqs of their conversation. Broadcasting is the caller's job.

    Every commit is durable, streamed deltas included: with `synchronous_commit` off, PostgreSQL
    stopped at once (a crash, a failover) lost events that listeners had already been sent, and
    gave their seqs to other events after the restart (measured in tests/e2e/test_postgres_restart.py).

    `while_running=True` stores nothing (and returns []) once the run has ended, so that no event
    follows its terminal one, e.g. when the reaper ended it while its worker could not reach the
    database. The terminal event takes the same conversation lock, so the check cannot race it.
    """
    with transaction.atomic():
        last_seq = Conversation.objects.select_for_update().values_list("last_seq", flat=True).get(pk=conversation_id)
        if connection.vendor == "postgresql":
            # A stream's every delta waits for this before it is broadcast: one statement, not three.
            return insert_events_postgres(conversation_id, run_id, last_seq, items, while_running=while_running)
        if while_running and not Run.objects.filter(pk=run_id, status=Run.Status.RUNNING).exists():
            return []
        now = timezone.now()
        events = [
            Event(
                conversation_id=conversation_id, run_id=run_id, seq=last_seq + i, type=kind, data=data, created_at=now
            )
            for i, (kind, data) in enumerate(items, start=1)
        ]
        Event.objects.bulk_create(events)
        Conversation.objects.filter(pk=conversation_id).update(last_seq=last_seq + len(events))
    return events


def insert_events_postgres(
    conversation_id: UUID, run_id: UUID, last_seq: int, items: Sequence[EventItem], *, while_running: bool
) -> list[Event]:
    """`append_events`' writes on PostgreSQL, the conversation's row already locked: the run's check, the
    events and the conversation's `last_seq` in one statement (one round trip instead of three).

    The statement's snapshot is taken after the lock was granted, so it sees a run ended by whoever held the
    lock before (`finish_run`), as the separate check did."""
    now = timezone.now()
    event_table, conversation_table, run_table = (model._meta.db_table for model in (Event, Conversation, Run))
    # Table names from the models, values as parameters.
    running = f"EXISTS (SELECT 1 FROM {run_table} WHERE id = %(run)s AND status = %(running)s)"  # noqa: S608
    allowed = running if while_running else "TRUE"
    # Each data dict is encoded here, as the JSONField would, and cast to jsonb by PostgreSQL.
    sql = f"""
        WITH allowed AS (SELECT {allowed} AS ok),
        stored AS (
            INSERT INTO {event_table} (conversation_id, run_id, seq, type, data, created_at)
            SELECT %(conversation)s, %(run)s, %(last_seq)s + item.n, item.type, item.data::jsonb, %(now)s
            FROM unnest(%(types)s::text[], %(data)s::text[]) WITH ORDINALITY AS item(type, data, n), allowed
            WHERE allowed.ok
            RETURNING id, seq
        ),
        bumped AS (
            UPDATE {conversation_table} SET last_seq = %(last_seq)s + %(count)s
            FROM allowed WHERE id = %(conversation)s AND allowed.ok
        )
        SELECT id FROM stored ORDER BY seq
    """  # noqa: S608
    params: dict[str, Any] = {
        "conversation": conversation_id,
        "run": run_id,
        "running": Run.Status.RUNNING.value,
        "last_seq": last_seq,
        "count": len(items),
        "types": [kind for kind, _ in items],
        "data": [json.dumps(data) for _, data in items],
        "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ids = [row[0] for row in cursor.fetchall()]
    if not ids:  # the run has ended
        return []
    return [
        Event(
            id=event_id,
            conversation_id=conversation_id,
            run_id=run_id,
            seq=last_seq + i,
            type=kind,
            data=data,
            created_at=now,
        )
        for i, (event_id, (kind, data)) in enumerate(zip(ids, items, strict=True), start=1)
    ]


# Events of a run that others store while it runs: its queueing, and the decisions people make on its requests.
STORED_BY_OTHERS = (
    EventType.RUN_QUEUED,
    EventType.PERMISSION_DECISION,
    EventType.QUESTION_ANSWERED,
    EventType.MESSAGE_STEERED,
)


def events_of_run_after(run_id: UUID, seq: int) -> list[Event]:
    """The events a run's worker stored after `seq` (not those others store for it: `STORED_BY_OTHERS`)."""
    return list(Event.objects.filter(run_id=run_id, seq__gt=seq).exclude(type__in=STORED_BY_OTHERS).order_by("seq"))


def record_events(run: Run, items: Sequence[EventItem]) -> list[Event]:
    """Persist events and broadcast them once the surrounding transaction commits (sync call sites)."""
    events = append_events(run.conversation_id, run.pk, items)
    transaction.on_commit(lambda: realtime.publish_events_sync(run.conversation_id, events))
    return events


def finish_run(
    run_id: UUID,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    session_id: str = "",
    from_statuses: Sequence[str] = Run.UNFINISHED,
    silent_since: datetime | None = None,
) -> Event | None:
    """End an unfinished run with exactly one terminal event and release the conversation's lease.

    Returns the terminal event, or None when the run had already ended (a racing reaper or worker).
    `silent_since`: only if its worker has not beaten since (a reaper's list may be stale by the time it acts).
    """
    terminal_type = TERMINAL_EVENT_TYPES[Run.Status(status)]
    with transaction.atomic():
        runs = Run.objects.select_for_update().filter(pk=run_id, status__in=from_statuses)
        if silent_since is not None:
            runs = runs.filter(heartbeat_at__lt=silent_since)
        run = runs.first()
        if run is None:
            return None
        run.status = status
        run.finished_at = timezone.now()
        run.result = result
        run.error = error
        run.mcp_tokens = None  # a message's MCP secrets last as long as its run
        run.save(update_fields=["status", "finished_at", "result", "error", "mcp_tokens"])
        conversation_updates: dict[str, Any] = {"active_run": None, "updated_at": run.finished_at}
        if session_id:
            conversation_updates["sdk_session_id"] = session_id
        Conversation.objects.filter(pk=run.conversation_id, active_run=run).update(**conversation_updates)
        data = {**(result or {}), **({"error": error} if error else {})}
        if run.started_at:
            data["duration_ms"] = round((run.finished_at - run.started_at).total_seconds() * 1000)
        (event,) = record_events(run, [(terminal_type, data)])
    return event
