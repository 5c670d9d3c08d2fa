"""A run that waits for a person: suspended, woken by a decision, expired, interrupted, and reaped at its call."""

import json
from datetime import timedelta
from pathlib import Path

from django.utils import timezone
from pytest_django.fixtures import Settings

from approvals.models import Approval, Question
from approvals.services import SYSTEM, Who, ask_approval, ask_question
from conversations.models import Conversation, Event, Run, SessionEntry
from runs import services
from runs.dispatch import expire_requests, reap_stale_runs, wake_run
from runs.lease import claim_run
from runs.services import RunOptions, start_run
from runs.session_store import checkpoint
from runs.waiting import suspend_run

ADA = Who("end_user", "ada")


def running(conversation: Conversation, text: str = "Hi") -> Run:
    run = start_run(conversation, RunOptions(text))
    claimed = claim_run(run.pk)
    assert claimed is not None
    return claimed


def asked(run: Run, tool_use_id: str = "toolu_1", timeout: int = 600) -> Approval:
    return ask_approval(run, tool_use_id, "Bash", {"command": "echo hi"}, "The rule asks.", timeout)


def types(run: Run) -> list[str]:
    return list(Event.objects.filter(run=run).order_by("seq").values_list("type", flat=True))


def test_a_run_suspended_at_a_pending_request_waits_without_a_worker_and_a_decision_queues_it(
    conversation: Conversation,
) -> None:
    run = running(conversation)
    approval = asked(run)

    requeued = suspend_run(run.pk, {"kind": "approval"}, session_id="session-1")
    run.refresh_from_db()
    assert (requeued, run.status, run.suspensions, run.worker) == (False, Run.Status.WAITING, 1, "")
    assert Conversation.objects.get(pk=conversation.pk).sdk_session_id == "session-1"
    assert Conversation.objects.get(pk=conversation.pk).active_run_id == run.pk  # it keeps its lease

    services.decide_approval(approval, ADA, allow=True)

    run.refresh_from_db()
    assert run.status == Run.Status.QUEUED
    assert types(run) == ["run.queued", "permission.request", "run.waiting", "permission.decision"]


def test_a_decision_that_comes_while_the_run_suspends_queues_it_for_its_worker(conversation: Conversation) -> None:
    run = running(conversation)
    approval = asked(run)
    services.decide_approval(approval, ADA, allow=False, message="no")  # the worker was told; it had deferred

    requeued = suspend_run(run.pk, {"kind": "approval"}, session_id="session-1")

    run.refresh_from_db()
    assert requeued is True and run.status == Run.Status.QUEUED and run.suspensions == 1


def test_waking_a_running_run_leaves_it_running_and_a_waiting_one_with_another_pending_request_waiting(
    conversation: Conversation, tenant: object
) -> None:
    run = running(conversation)
    asked(run, "toolu_1")
    wake_run(run.pk)
    run.refresh_from_db()
    assert run.status == Run.Status.RUNNING

    suspend_run(run.pk, {}, session_id="s")
    wake_run(run.pk)  # nothing was decided
    run.refresh_from_db()
    assert run.status == Run.Status.WAITING


def test_interrupting_a_waiting_run_ends_it_at_once_and_cancels_only_its_own_requests(
    conversation: Conversation, tenant: object
) -> None:
    run = running(conversation)
    approval = asked(run)
    suspend_run(run.pk, {}, session_id="s")
    other_conversation = Conversation.objects.create(tenant=conversation.tenant)
    neighbour = running(other_conversation)
    untouched = asked(neighbour)

    services.interrupt_run(conversation)

    run.refresh_from_db()
    approval.refresh_from_db()
    untouched.refresh_from_db()
    assert run.status == Run.Status.INTERRUPTED
    assert run.result["message"] == "Interrupted while it waited." and "usage" in run.result
    assert (approval.status, approval.decided_by_kind) == (Approval.Status.CANCELLED, SYSTEM.kind)
    assert untouched.status == Approval.Status.PENDING
    assert Conversation.objects.get(pk=conversation.pk).active_run_id is None


def test_expired_requests_are_denied_by_the_platform_and_their_runs_woken_and_fresh_ones_wait(
    conversation: Conversation,
) -> None:
    run = running(conversation)
    late = asked(run, "toolu_late")
    question = ask_question(run, "toolu_q", [{"question": "Go?", "options": []}], 600)
    Approval.objects.filter(pk=late.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    suspend_run(run.pk, {}, session_id="s")

    assert expire_requests() == 1

    late.refresh_from_db()
    question.refresh_from_db()
    run.refresh_from_db()
    assert (late.status, late.decided_by_kind, late.decided_by) == ("expired", "system", "platform")
    assert question.status == Question.Status.PENDING
    assert run.status == Run.Status.WAITING  # it still waits on the question


def test_a_run_whose_worker_died_at_a_checkpointed_call_is_suspended_there(
    conversation: Conversation, settings: Settings, tmp_path: Path
) -> None:
    run = running(conversation)
    approval = asked(run, "toolu_dangling")
    transcript = tmp_path / "projects" / "-workspace" / "session-9.jsonl"
    transcript.parent.mkdir(parents=True)
    user = {"type": "user", "uuid": "u-1", "sessionId": "session-9", "message": {"role": "user", "content": "hi"}}
    call = {"type": "tool_use", "id": "toolu_dangling", "name": "Bash", "input": {"command": "echo hi"}}
    assistant = {
        "type": "assistant",
        "uuid": "a-1",
        "parentUuid": "u-1",
        "sessionId": "session-9",
        "message": {"role": "assistant", "content": [call]},
    }
    transcript.write_text(json.dumps({"type": "queue-operation"}) + "\n" + json.dumps(user) + "\n")
    assert checkpoint(conversation.pk, tmp_path, "session-9", "toolu_dangling") is False  # not written yet
    transcript.write_text(transcript.read_text() + json.dumps(assistant) + "\n")
    assert checkpoint(conversation.pk, tmp_path, "session-9", "toolu_dangling") is True
    assert checkpoint(conversation.pk, tmp_path, "session-9", "toolu_dangling") is True  # stored once
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))

    assert reap_stale_runs() == 0

    run.refresh_from_db()
    approval.refresh_from_db()
    assert run.status == Run.Status.WAITING and approval.status == Approval.Status.PENDING
    stored = [json.loads(data) for data in SessionEntry.objects.order_by("position").values_list("data", flat=True)]
    assert [entry.get("uuid") for entry in stored[:2]] == ["u-1", "a-1"]
    marker = stored[-1]
    assert marker["parentUuid"] == "a-1" and marker["attachment"]["type"] == "hook_deferred_tool"
    assert marker["attachment"]["toolUseID"] == "toolu_dangling"
    waiting = Event.objects.get(run=run, type="run.waiting").data
    assert waiting["approval_id"] == str(approval.pk) and waiting["worker_lost"]


def test_a_run_whose_worker_died_before_its_call_was_stored_fails_and_its_request_is_cancelled(
    conversation: Conversation,
) -> None:
    run = running(conversation)
    approval = asked(run)
    Conversation.objects.filter(pk=conversation.pk).update(sdk_session_id="session-x")
    Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=60))

    assert reap_stale_runs() == 1

    run.refresh_from_db()
    approval.refresh_from_db()
    assert run.status == Run.Status.FAILED and run.error["reason"] == "worker_lost"
    assert approval.status == Approval.Status.CANCELLED
