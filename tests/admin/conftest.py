"""Admin data: a conversation with one finished run whose events cover every transcript line."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from conversations.models import Conversation, Event, Run


def add_events(run: Run, items: list[tuple[str, dict[str, Any]]]) -> list[Event]:
    """Store events with the conversation's next seqs, straight through the ORM (no broadcast)."""
    conversation = run.conversation
    now = timezone.now()
    events = [
        Event(conversation=conversation, run=run, seq=conversation.last_seq + i, type=kind, data=data, created_at=now)
        for i, (kind, data) in enumerate(items, start=1)
    ]
    Event.objects.bulk_create(events)
    conversation.last_seq += len(events)
    conversation.save(update_fields=["last_seq"])
    return events


@pytest.fixture
def finished_run(conversation: Conversation) -> Run:
    started = timezone.now() - timedelta(seconds=12)
    run = Run.objects.create(
        conversation=conversation,
        model=conversation.model,
        user_id="alice",
        input="List the files, please.",
        status=Run.Status.COMPLETED,
        started_at=started,
        finished_at=started + timedelta(seconds=9.5),
        worker="web-1:4242",
    )
    add_events(
        run,
        [
            ("run.queued", {"input": "List the files, please.", "user_id": "alice", "model": "offline"}),
            (
                "run.started",
                {"model": "offline", "model_display_name": "Offline model (not Claude)", "offline_model": True},
            ),
            ("message.delta", {"kind": "text", "text": "DELTA-ONLY-TOKEN"}),
            ("message", {"role": "assistant", "block": {"type": "thinking", "thinking": "The user wants a listing."}}),
            ("message", {"role": "assistant", "block": {"type": "text", "text": "Let me look at the workspace."}}),
            (
                "message",
                {
                    "role": "assistant",
                    "block": {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls -la"}},
                },
            ),
            ("tool.result", {"tool_use_id": "toolu_1", "content": "notes.txt", "is_error": False, "truncated": False}),
            ("usage", {"input_tokens": 120, "output_tokens": 30, "cache_read_tokens": 0, "cost_usd": "0.000000"}),
            ("run.completed", {"result": "done", "duration_ms": 9500}),
        ],
    )
    return run


@pytest.fixture
def running_run(conversation: Conversation) -> Run:
    """A queued run holding the conversation's lease, as `services.start_run` leaves it."""
    run = Run.objects.create(conversation=conversation, model=conversation.model, input="Still going?")
    conversation.active_run = run
    conversation.save(update_fields=["active_run"])
    add_events(run, [("run.queued", {"input": "Still going?", "user_id": "", "model": run.model_id})])
    return run
