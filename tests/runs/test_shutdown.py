"""A worker's warm shutdown, on its own: the grace, the hand-back of what is still running, and how a handed-back
run is stored (queued again, its session kept, its next leg told apart from one resumed after a decision)."""

import threading
import time
from collections.abc import Iterator
from uuid import uuid4

import pytest
from django.utils import timezone

from conversations.models import Conversation, Event, Run
from runs import services, shutdown
from runs.dispatch import reap_stale_runs
from runs.lease import claim_run
from runs.services import RunOptions, start_run
from runs.waiting import hand_back_run, handed_back_data, suspend_run

HANDED_BACK = {"reason": "worker_shutdown", "worker": "host:1", "session_id": "session-1"}


@pytest.fixture(autouse=True)
def no_shutdown() -> Iterator[None]:
    shutdown.reset()
    yield
    shutdown.reset()


def running(conversation: Conversation, text: str = "Hi") -> Run:
    run = start_run(conversation, RunOptions(text))
    claimed = claim_run(run.pk)
    assert claimed is not None
    return claimed


def types(run: Run) -> list[str]:
    return list(Event.objects.filter(run=run).order_by("seq").values_list("type", flat=True))


def test_runs_get_the_grace_then_those_still_going_are_handed_back_and_late_ones_at_once() -> None:
    handed = threading.Event()
    with shutdown.handing_back_on_shutdown(uuid4(), handed.set):
        began = time.monotonic()
        shutdown.begin_shutdown(0.3)
        shutdown.begin_shutdown(30)  # a second SIGTERM does not restart the grace
        assert shutdown.draining()
        assert handed.wait(2)
        assert 0.3 <= time.monotonic() - began < 1.5

    late = threading.Event()
    with shutdown.handing_back_on_shutdown(uuid4(), late.set):
        assert late.is_set()


def test_a_run_that_ends_within_the_grace_is_not_handed_back() -> None:
    handed = threading.Event()
    with shutdown.handing_back_on_shutdown(uuid4(), handed.set):
        shutdown.begin_shutdown(0.3)
    time.sleep(0.5)
    assert not handed.is_set() and shutdown.draining()


def test_a_handed_back_run_is_queued_again_with_its_session_and_its_next_leg_knows_why(
    conversation: Conversation,
) -> None:
    run = running(conversation)

    assert hand_back_run(run.pk, HANDED_BACK, session_id="session-1") == "queued"

    run.refresh_from_db()
    assert (run.status, run.suspensions, run.worker) == (Run.Status.QUEUED, 1, "")
    assert Conversation.objects.get(pk=conversation.pk).sdk_session_id == "session-1"
    assert Conversation.objects.get(pk=conversation.pk).active_run_id == run.pk  # it keeps its lease
    assert types(run) == ["run.queued", "run.handed_back"]
    assert handed_back_data(run.pk) == HANDED_BACK
    # The next leg claims it as any queued run; the reaper leaves it alone meanwhile.
    reap_stale_runs()
    assert claim_run(run.pk) is not None


def test_a_leg_after_a_decision_is_not_taken_for_one_after_a_hand_back(conversation: Conversation) -> None:
    run = running(conversation)
    hand_back_run(run.pk, HANDED_BACK, session_id="session-1")
    claim_run(run.pk)
    suspend_run(run.pk, {"kind": "approval"}, session_id="session-1")

    assert handed_back_data(run.pk) is None
    other = Conversation.objects.create(tenant=conversation.tenant, model=conversation.model, user_id="bob")
    assert handed_back_data(running(other).pk) is None  # a first leg


def test_a_run_its_user_interrupted_or_that_ended_is_not_handed_back(conversation: Conversation) -> None:
    run = running(conversation)
    Run.objects.filter(pk=run.pk).update(interrupt_requested_at=timezone.now())
    assert hand_back_run(run.pk, HANDED_BACK, session_id="session-1") == "interrupt"
    assert Run.objects.get(pk=run.pk).status == Run.Status.RUNNING

    Run.objects.filter(pk=run.pk).update(status=Run.Status.FAILED)
    assert hand_back_run(run.pk, HANDED_BACK, session_id="session-1") == "gone"
    assert types(run) == ["run.queued"]


def test_interrupting_a_handed_back_run_before_its_next_leg_keeps_its_usage_message(
    conversation: Conversation,
) -> None:
    run = running(conversation)
    hand_back_run(run.pk, HANDED_BACK, session_id="session-1")

    services.interrupt_run(conversation)

    run.refresh_from_db()
    assert run.status == Run.Status.INTERRUPTED
    assert run.result is not None and run.result["message"] == "Interrupted while it waited."
