"""Run and event workflows, model pricing, and the translation of SDK stream events into our events."""

import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from claude_agent_sdk.types import StreamEvent
from django.db import connection
from django.utils import timezone
from pytest_django.fixtures import Settings

from conversations.events import append_events, finish_run
from conversations.models import Conversation, Event, Run
from conversations.services import start_run
from runs.dispatch import reap_stale_runs, sweep_run_leftovers
from runs.lease import claim_run
from runs.translate import EventTranslator
from tenants.models import LanguageModel

TERMINAL_TYPES = set(Run.TERMINAL_EVENTS.values())


def seqs(conversation: Conversation) -> list[int]:
    return list(Event.objects.filter(conversation=conversation).order_by("seq").values_list("seq", flat=True))


def make_stale(run: Run, settings: Settings) -> None:
    stale_at = timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS + 5)
    Run.objects.filter(pk=run.pk).update(heartbeat_at=stale_at)


# --- append_events ------------------------------------------------------------------------------------


def test_append_events_numbers_events_without_gaps_across_calls_and_runs(conversation: Conversation) -> None:
    first = start_run(conversation, "One")
    append_events(conversation.pk, first.pk, [("message.delta", {"text": "a"}), ("message.delta", {"text": "b"})])
    append_events(conversation.pk, first.pk, [("message", {"text": "ab"})])
    finish_run(first.pk, Run.Status.COMPLETED)
    second = start_run(conversation, "Two")

    appended = append_events(conversation.pk, second.pk, [("message.delta", {"text": "c"}), ("usage", {})])

    assert [event.seq for event in appended] == [7, 8]
    assert seqs(conversation) == list(range(1, 9))
    assert Conversation.objects.get(pk=conversation.pk).last_seq == 8


def test_each_conversation_counts_its_own_seqs(conversation: Conversation, other_conversation: Conversation) -> None:
    mine, theirs = start_run(conversation, "Mine"), start_run(other_conversation, "Theirs")

    append_events(conversation.pk, mine.pk, [("message", {})] * 3)
    append_events(other_conversation.pk, theirs.pk, [("message", {})])

    assert seqs(conversation) == [1, 2, 3, 4]
    assert seqs(other_conversation) == [1, 2]


def test_append_events_keeps_the_order_and_data_it_was_given(conversation: Conversation) -> None:
    run = start_run(conversation, "Hi")

    append_events(conversation.pk, run.pk, [("message.delta", {"text": "Hel"}), ("message.delta", {"text": "lo"})])

    stored = Event.objects.filter(conversation=conversation, seq__gt=1).order_by("seq")
    assert [(event.type, event.data["text"]) for event in stored] == [("message.delta", "Hel"), ("message.delta", "lo")]


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_still_give_gap_free_unique_seqs(
    conversation: Conversation, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Commits are real here, so on_commit would start an agent; this test is about seqs only.
    monkeypatch.setattr("conversations.services.dispatch_run", lambda run_id: None)
    run = start_run(conversation, "Busy")
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
    run = start_run(conversation, "Hi")
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
    run = start_run(conversation, "Hi")

    first = finish_run(run.pk, Run.Status.COMPLETED, result={"text": "Hello"})
    second = finish_run(run.pk, Run.Status.FAILED, error={"reason": "late"})

    assert first is not None and first.type == "run.completed" and first.data == {"text": "Hello"}
    assert second is None
    run.refresh_from_db()
    assert (run.status, run.result, run.error) == (Run.Status.COMPLETED, {"text": "Hello"}, None)
    assert run.events.filter(type__in=TERMINAL_TYPES).count() == 1


def test_finish_run_releases_the_lease_and_stores_the_session(conversation: Conversation) -> None:
    run = start_run(conversation, "Hi")

    finish_run(run.pk, Run.Status.COMPLETED, session_id="session-123")

    conversation.refresh_from_db()
    assert conversation.active_run_id is None
    assert conversation.sdk_session_id == "session-123"


def test_finish_run_without_a_session_keeps_the_previous_one(conversation: Conversation) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(sdk_session_id="session-1")
    run = start_run(conversation, "Hi")

    finish_run(run.pk, Run.Status.FAILED, error={"reason": "boom"})

    assert Conversation.objects.get(pk=conversation.pk).sdk_session_id == "session-1"


def test_a_started_run_ends_with_its_duration_and_error(conversation: Conversation) -> None:
    run = start_run(conversation, "Hi")
    claim_run(run.pk)

    event = finish_run(run.pk, Run.Status.FAILED, error={"reason": "cli_crashed"})

    assert event is not None and event.type == "run.failed"
    assert event.data["error"] == {"reason": "cli_crashed"}
    assert event.data["duration_ms"] >= 0


def test_a_finished_run_no_longer_blocks_the_next_message(conversation: Conversation) -> None:
    first = start_run(conversation, "One")
    finish_run(first.pk, Run.Status.COMPLETED)

    second = start_run(conversation, "Two")

    assert Conversation.objects.get(pk=conversation.pk).active_run_id == second.pk


# --- reap_stale_runs ----------------------------------------------------------------------------------


def test_reaping_fails_a_running_run_whose_worker_stopped_beating(
    conversation: Conversation, settings: Settings
) -> None:
    run = start_run(conversation, "Hi")
    claim_run(run.pk)
    make_stale(run, settings)

    reaped = reap_stale_runs()

    assert reaped == 1
    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert run.error["reason"] == "worker_lost"
    assert list(run.events.filter(type__in=TERMINAL_TYPES).values_list("type", flat=True)) == ["run.failed"]
    assert Conversation.objects.get(pk=conversation.pk).active_run_id is None


def test_reaping_leaves_a_run_with_a_fresh_heartbeat_alone(conversation: Conversation) -> None:
    run = start_run(conversation, "Hi")
    claim_run(run.pk)

    reaped = reap_stale_runs()

    assert reaped == 0
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING
    assert not run.events.filter(type__in=TERMINAL_TYPES).exists()


def test_reaping_twice_ends_a_stale_run_once(conversation: Conversation, settings: Settings) -> None:
    run = start_run(conversation, "Hi")
    claim_run(run.pk)
    make_stale(run, settings)

    counts = [reap_stale_runs(), reap_stale_runs()]

    assert counts == [1, 0]
    assert run.events.filter(type__in=TERMINAL_TYPES).count() == 1


def test_reaping_leaves_recently_queued_runs_alone(conversation: Conversation, monkeypatch: pytest.MonkeyPatch) -> None:
    dispatched: list[object] = []
    monkeypatch.setattr("runs.dispatch.dispatch_run", dispatched.append)
    run = start_run(conversation, "Hi")

    reaped = reap_stale_runs()

    assert reaped == 0
    assert dispatched == []
    assert Run.objects.get(pk=run.pk).status == Run.Status.QUEUED


def test_reaping_dispatches_again_a_run_no_worker_took(
    conversation: Conversation, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatched: list[object] = []
    monkeypatch.setattr("runs.dispatch.dispatch_run", dispatched.append)
    run = start_run(conversation, "Hi")
    Run.objects.filter(pk=run.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=settings.RUN_REDISPATCH_SECONDS + 1)
    )

    reap_stale_runs()
    reap_stale_runs()

    assert dispatched == [run.pk]
    assert Run.objects.get(pk=run.pk).status == Run.Status.QUEUED


# --- claim_run ----------------------------------------------------------------------------------------


def test_claim_run_claims_a_queued_run_only_once(conversation: Conversation) -> None:
    run = start_run(conversation, "Hi")

    first = claim_run(run.pk)
    second = claim_run(run.pk)

    assert first is not None and first.pk == run.pk
    assert (first.status, bool(first.worker)) == (Run.Status.RUNNING, True)
    assert first.started_at is not None and first.heartbeat_at is not None
    assert second is None


def test_claim_run_refuses_a_run_that_already_ended(conversation: Conversation) -> None:
    run = start_run(conversation, "Hi")
    finish_run(run.pk, Run.Status.INTERRUPTED)

    claimed = claim_run(run.pk)

    assert claimed is None
    assert Run.objects.get(pk=run.pk).status == Run.Status.INTERRUPTED


def test_claim_run_of_an_unknown_run_is_none(db: None) -> None:
    assert claim_run(uuid4()) is None


# --- LanguageModel.cost -------------------------------------------------------------------------------


SPLIT_USAGE = {
    "input_tokens": 1000,
    "output_tokens": 500,
    "cache_creation_input_tokens": 1500,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 500},
    "cache_read_input_tokens": 2000,
}


def test_cost_prices_each_of_the_five_token_kinds(sonnet: LanguageModel) -> None:
    cost = sonnet.cost(SPLIT_USAGE)

    by_hand = (
        1000 * Decimal("3") + 500 * Decimal("15") + 1000 * Decimal("3.75") + 500 * Decimal("6") + 2000 * Decimal("0.30")
    ) / Decimal(1_000_000)
    assert cost == by_hand == Decimal("0.01785")
    assert isinstance(cost, Decimal)


def test_cost_without_the_cache_split_bills_cache_writes_at_the_5_minute_rate(sonnet: LanguageModel) -> None:
    usage = {key: value for key, value in SPLIT_USAGE.items() if key != "cache_creation"}

    cost = sonnet.cost(usage)

    by_hand = (1000 * Decimal("3") + 500 * Decimal("15") + 1500 * Decimal("3.75") + 2000 * Decimal("0.30")) / Decimal(
        1_000_000
    )
    assert cost == by_hand == Decimal("0.016725")


def test_cost_with_only_the_1_hour_split_bills_the_rest_at_the_5_minute_rate(sonnet: LanguageModel) -> None:
    usage = {**SPLIT_USAGE, "cache_creation": {"ephemeral_1h_input_tokens": 500}}

    cost = sonnet.cost(usage)

    assert cost == sonnet.cost(SPLIT_USAGE)


def test_cost_of_no_usage_is_zero(sonnet: LanguageModel) -> None:
    assert sonnet.cost({}) == 0
    assert sonnet.cost({"input_tokens": None, "cache_creation": None}) == 0


# --- EventTranslator ----------------------------------------------------------------------------------


def stream_event(event: dict[str, Any], parent: str | None = None) -> StreamEvent:
    return StreamEvent(uuid=str(uuid4()), session_id="session-1", event=event, parent_tool_use_id=parent)


def text_delta(text: str, parent: str | None = None) -> StreamEvent:
    return stream_event(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}, parent
    )


def message_start(message_id: str, usage: dict[str, Any], parent: str | None = None) -> StreamEvent:
    return stream_event(
        {"type": "message_start", "message": {"id": message_id, "model": "claude-sonnet-4-5", "usage": usage}}, parent
    )


def message_delta(usage: dict[str, Any], parent: str | None = None) -> StreamEvent:
    return stream_event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}, parent)


def translate_all(translator: EventTranslator, messages: list[StreamEvent]) -> list[tuple[str, dict[str, Any]]]:
    return [item for message in messages for item in translator.translate(message)]


def test_stream_events_become_deltas_and_one_usage_event_per_api_message(sonnet: LanguageModel) -> None:
    translator = EventTranslator(sonnet)
    start_usage = {key: value for key, value in SPLIT_USAGE.items() if key != "output_tokens"} | {"output_tokens": 1}

    items = translate_all(
        translator,
        [
            message_start("msg_1", start_usage),
            stream_event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            text_delta("Hel"),
            text_delta("lo"),
            stream_event(
                {"type": "content_block_delta", "index": 1, "delta": {"type": "thinking_delta", "thinking": "Hm"}}
            ),
            stream_event(
                {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{"}}
            ),
            stream_event({"type": "content_block_stop", "index": 0}),
            message_delta({"output_tokens": 500}),
            stream_event({"type": "message_stop"}),
        ],
    )

    assert [kind for kind, _ in items] == ["message.delta", "message.delta", "message.delta", "usage"]
    assert [(data["kind"], data["text"]) for kind, data in items if kind == "message.delta"] == [
        ("text", "Hel"),
        ("text", "lo"),
        ("thinking", "Hm"),
    ]
    usage = items[-1][1]
    assert usage["message_id"] == "msg_1" and usage["model"] == "sonnet"
    assert (usage["input_tokens"], usage["output_tokens"], usage["cache_read_tokens"]) == (1000, 500, 2000)
    assert (usage["cache_write_5m_tokens"], usage["cache_write_1h_tokens"]) == (1000, 500)
    assert Decimal(usage["cost_usd"]) == sonnet.cost(SPLIT_USAGE) == Decimal("0.01785")


def test_subagent_calls_are_metered_separately_and_carry_their_parent(sonnet: LanguageModel) -> None:
    translator = EventTranslator(sonnet)

    items = translate_all(
        translator,
        [
            message_start("msg_main", {"input_tokens": 100, "output_tokens": 1}),
            message_start("msg_sub", {"input_tokens": 40, "output_tokens": 1}, parent="toolu_1"),
            text_delta("from the subagent", parent="toolu_1"),
            message_delta({"output_tokens": 7}, parent="toolu_1"),
            message_delta({"output_tokens": 20}),
        ],
    )

    usage = [data for kind, data in items if kind == "usage"]
    assert [(u["message_id"], u["parent_tool_use_id"], u["output_tokens"]) for u in usage] == [
        ("msg_sub", "toolu_1", 7),
        ("msg_main", None, 20),
    ]
    assert items[0] == (
        "message.delta",
        {"kind": "text", "text": "from the subagent", "index": 0, "parent_tool_use_id": "toolu_1"},
    )


def test_each_api_message_gets_its_own_usage_event_with_its_cost(sonnet: LanguageModel) -> None:
    translator = EventTranslator(sonnet)

    items = translate_all(
        translator,
        [
            message_start("msg_1", {**SPLIT_USAGE, "output_tokens": 1}),
            message_delta({"output_tokens": 500}),
            message_start("msg_2", {"input_tokens": 10, "cache_read_input_tokens": 3000, "output_tokens": 1}),
            message_delta({"output_tokens": 20}),
        ],
    )

    usage = [data for kind, data in items if kind == "usage"]
    second_call = (10 * Decimal("3") + 20 * Decimal("15") + 3000 * Decimal("0.30")) / Decimal(1_000_000)
    assert [u["message_id"] for u in usage] == ["msg_1", "msg_2"]
    assert [Decimal(u["cost_usd"]) for u in usage] == [Decimal("0.01785"), second_call]


def test_a_message_delta_without_a_start_is_ignored(sonnet: LanguageModel) -> None:
    translator = EventTranslator(sonnet)

    items = translator.translate(message_delta({"output_tokens": 5}))

    assert items == []


# --- leftovers of dead workers --------------------------------------------------------------------


def test_sweeping_removes_what_finished_runs_left_behind_and_keeps_everything_else(
    conversation: Conversation, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.RUN_ROOT = tmp_path
    cgroups = tmp_path / "cgroup" / "pids" / "agent-platform"  # a v1 layout, not the host's own
    monkeypatch.setattr("sandbox.limits.CGROUP_ROOT", tmp_path / "cgroup")
    finished = start_run(conversation, "Hi")
    finish_run(finished.pk, Run.Status.FAILED, error={"reason": "worker_lost", "message": "gone"})
    unfinished = Run.objects.create(conversation=conversation, model=conversation.model, input="Hi")
    for run_id in (finished.pk, unfinished.pk, "not-a-run"):
        (tmp_path / "runs" / str(run_id) / "claude").mkdir(parents=True)
        (cgroups / str(run_id)).mkdir(parents=True)

    swept = sweep_run_leftovers(min_age_seconds=0)

    assert swept == 1
    kept = sorted([str(unfinished.pk), "not-a-run"])  # and what another installation may own
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == kept
    assert sorted(path.name for path in cgroups.iterdir()) == kept
