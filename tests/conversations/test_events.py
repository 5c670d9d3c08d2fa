"""The event log: gap-free numbering per conversation, and one terminal event per run."""

import threading

import pytest
from django.db import connection

from conversations.events import TERMINAL_TYPES, append_events, finish_run
from conversations.models import Conversation, Event, Run
from runs.lease import claim_run
from runs.services import RunOptions, start_run


def seqs(conversation: Conversation) -> list[int]:
    return list(Event.objects.filter(conversation=conversation).order_by("seq").values_list("seq", flat=True))


# --- append_events ------------------------------------------------------------------------------------


def test_append_events_numbers_events_without_gaps_across_calls_and_runs(conversation: Conversation) -> None:
    first = start_run(conversation, RunOptions("One"))
    append_events(conversation.pk, first.pk, [("message.delta", {"text": "a"}), ("message.delta", {"text": "b"})])
    append_events(conversation.pk, first.pk, [("message", {"text": "ab"})])
    finish_run(first.pk, Run.Status.COMPLETED)
    second = start_run(conversation, RunOptions("Two"))

    appended = append_events(conversation.pk, second.pk, [("message.delta", {"text": "c"}), ("usage", {})])

    assert [event.seq for event in appended] == [7, 8]
    assert seqs(conversation) == list(range(1, 9))
    assert Conversation.objects.get(pk=conversation.pk).last_seq == 8


def test_each_conversation_counts_its_own_seqs(conversation: Conversation, other_conversation: Conversation) -> None:
    mine, theirs = start_run(conversation, RunOptions("Mine")), start_run(other_conversation, RunOptions("Theirs"))

    append_events(conversation.pk, mine.pk, [("message", {})] * 3)
    append_events(other_conversation.pk, theirs.pk, [("message", {})])

    assert seqs(conversation) == [1, 2, 3, 4]
    assert seqs(other_conversation) == [1, 2]


def test_append_events_keeps_the_order_and_data_it_was_given(conversation: Conversation) -> None:
    run = start_run(conversation, RunOptions("Hi"))

    append_events(conversation.pk, run.pk, [("message.delta", {"text": "Hel"}), ("message.delta", {"text": "lo"})])

    stored = Event.objects.filter(conversation=conversation, seq__gt=1).order_by("seq")
    assert [(event.type, event.data["text"]) for event in stored] == [("message.delta", "Hel"), ("message.delta", "lo")]


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_still_give_gap_free_unique_seqs(
    conversation: Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Commits are real here, so on_commit would start an agent; this test is about seqs only.
    monkeypatch.setattr("runs.services.dispatch_run", lambda run_id: None)
    run = start_run(conversation, RunOptions("Busy"))
    errors: list[BaseException] = []

    def append_many() -> None:
        try:
            for n in range(20):
                append_events(conversation.pk, run.pk, [("message.delta", {"n": n}), ("message.delta", {"n": n})])
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=append_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert seqs(conversation) == list(range(1, 1 + 1 + 4 * 20 * 2))


def test_a_runs_streamed_events_are_not_stored_once_it_has_ended(conversation: Conversation) -> None:
    run = start_run(conversation, RunOptions("Hi"))
    claim_run(run.pk)
    append_events(conversation.pk, run.pk, [("message.delta", {"text": "a"})], while_running=True)
    finish_run(run.pk, Run.Status.FAILED, error={"reason": "worker_lost", "message": "gone"})

    late = append_events(conversation.pk, run.pk, [("message.delta", {"text": "b"})], while_running=True)

    assert late == []
    assert [event.type for event in run.events.order_by("seq")] == ["run.queued", "message.delta", "run.failed"]


# --- finish_run ---------------------------------------------------------------------------------------


def test_finish_run_writes_exactly_one_terminal_event_and_a_second_call_returns_none(
    conversation: Conversation,
) -> None:
    run = start_run(conversation, RunOptions("Hi"))

    first = finish_run(run.pk, Run.Status.COMPLETED, result={"text": "Hello"})
    second = finish_run(run.pk, Run.Status.FAILED, error={"reason": "late"})

    assert first is not None and first.type == "run.completed" and first.data == {"text": "Hello"}
    assert second is None
    run.refresh_from_db()
    assert (run.status, run.result, run.error) == (Run.Status.COMPLETED, {"text": "Hello"}, None)
    assert run.events.filter(type__in=TERMINAL_TYPES).count() == 1


def test_finish_run_releases_the_lease_and_stores_the_session(conversation: Conversation) -> None:
    run = start_run(conversation, RunOptions("Hi"))

    finish_run(run.pk, Run.Status.COMPLETED, session_id="session-123")

    conversation.refresh_from_db()
    assert conversation.active_run_id is None
    assert conversation.sdk_session_id == "session-123"


def test_finish_run_without_a_session_keeps_the_previous_one(conversation: Conversation) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(sdk_session_id="session-1")
    run = start_run(conversation, RunOptions("Hi"))

    finish_run(run.pk, Run.Status.FAILED, error={"reason": "boom"})

    assert Conversation.objects.get(pk=conversation.pk).sdk_session_id == "session-1"


def test_a_started_run_ends_with_its_duration_and_error(conversation: Conversation) -> None:
    run = start_run(conversation, RunOptions("Hi"))
    claim_run(run.pk)

    event = finish_run(run.pk, Run.Status.FAILED, error={"reason": "cli_crashed"})

    assert event is not None and event.type == "run.failed"
    assert event.data["error"] == {"reason": "cli_crashed"}
    assert event.data["duration_ms"] >= 0


def test_a_finished_run_no_longer_blocks_the_next_message(conversation: Conversation) -> None:
    first = start_run(conversation, RunOptions("One"))
    finish_run(first.pk, Run.Status.COMPLETED)

    second = start_run(conversation, RunOptions("Two"))

    assert Conversation.objects.get(pk=conversation.pk).active_run_id == second.pk
