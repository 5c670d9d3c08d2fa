"""Messages sent while a run is active: what each busy policy of the active run's agent stores, what starts next
when a run ends (every ending: its worker, an interrupt, the reaper), and steered messages taken in exactly once.

No workers here: runs are claimed and ended as their worker would (claim_run, finish_run), and what would be
handed to a worker or signalled is recorded."""

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from pytest_django.fixtures import DjangoCaptureOnCommitCallbacks, Settings
from rest_framework.test import APIClient

from agents.rules import ToolPolicy
from agents.services import create_profile, default_profile, update_profile
from agents.spec import AgentSpec
from api.errors import Conflict, ServiceError
from approvals.models import Approval, Decider
from approvals.services import Who, ask_approval, decide_approval
from conversations import realtime
from conversations.events import TERMINAL_TYPES, append_events, finish_run
from conversations.models import Conversation, Event, Run
from conversations.transcripts import build_transcript
from runs.dispatch import reap_stale_runs, start_next
from runs.gate import RunGate
from runs.lease import claim_run
from runs.models import PendingSteer
from runs.services import (
    Disposition,
    RunOptions,
    cancel_message,
    interrupt_run,
    message_queue,
    send_message,
    start_run,
)
from runs.steering import take_steers
from tenants.models import Tenant
from tests.api.assertions import error_of


@pytest.fixture
def dispatched(monkeypatch: pytest.MonkeyPatch) -> list[UUID]:
    """The runs handed to a worker (once their transaction commits)."""
    handed: list[UUID] = []
    monkeypatch.setattr("runs.dispatch.dispatch_run", handed.append)
    monkeypatch.setattr("runs.services.dispatch_run", handed.append)
    return handed


@pytest.fixture
def signals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[UUID, str]]:
    """The control messages sent to runs' workers: (run id, type)."""
    sent: list[tuple[UUID, str]] = []
    monkeypatch.setattr(realtime, "signal_run", lambda run_id, message: sent.append((run_id, message["type"])))
    return sent


@pytest.fixture
def with_policy(tenant: Tenant) -> Callable[[str], None]:
    def choose(policy: str) -> None:
        update_profile(default_profile(tenant), {"busy_policy": policy})

    return choose


def send(conversation: Conversation, text: str, **options: Any) -> Any:
    return send_message(conversation, RunOptions(text, **options))


def running(conversation: Conversation, text: str = "one") -> Run:
    """A message's run, claimed by a worker."""
    run = start_run(conversation, RunOptions(text))
    claimed = claim_run(run.pk)
    assert claimed is not None
    return claimed


def events_of(run: Run | UUID) -> list[tuple[str, dict[str, Any]]]:
    return [(event.type, event.data) for event in Event.objects.filter(run_id=getattr(run, "pk", run)).order_by("seq")]


def terminals(run: Run) -> list[str]:
    return list(Event.objects.filter(run=run, type__in=TERMINAL_TYPES).values_list("type", flat=True))


def active_of(conversation: Conversation) -> UUID | None:
    return Conversation.objects.get(pk=conversation.pk).active_run_id


def end(run: Run, status: str = Run.Status.COMPLETED) -> Run | None:
    """The run ends as its worker ends it: its terminal event, then what waited behind it starts."""
    finish_run(run.pk, status)
    return start_next(run.conversation_id)


# --- reject ---------------------------------------------------------------------------------------------------


def test_reject_refuses_a_message_while_a_run_is_active_and_stores_nothing(conversation: Conversation) -> None:
    first = running(conversation)

    with pytest.raises(Conflict) as refused:
        send(conversation, "two")

    assert refused.value.code == "run_in_progress" and str(first.pk) in refused.value.message
    assert list(Run.objects.filter(conversation=conversation)) == [first]


# --- queue ----------------------------------------------------------------------------------------------------


def test_a_queued_message_waits_behind_the_active_run_with_its_place_and_run_queued(
    conversation: Conversation, with_policy: Callable[[str], None], dispatched: list[UUID]
) -> None:
    with_policy("queue")
    first = running(conversation)

    sent = send(conversation, "two")

    assert (sent.disposition, sent.behind, sent.position, sent.message_id) == ("queued", first.pk, 1, sent.run.pk)
    waiting = Run.objects.get(pk=sent.run.pk)
    assert (waiting.status, waiting.heartbeat_at) == (Run.Status.QUEUED, None)  # no worker's yet
    assert active_of(conversation) == first.pk
    ((kind, data),) = events_of(waiting)
    assert kind == "run.queued"
    assert (data["text"], data["disposition"], data["behind"], data["position"]) == ("two", "queued", str(first.pk), 1)
    assert dispatched == []


def test_when_the_active_run_ends_the_waiting_messages_start_one_by_one_in_the_order_sent(
    conversation: Conversation,
    with_policy: Callable[[str], None],
    dispatched: list[UUID],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with_policy("queue")
    first = running(conversation)
    second, third = send(conversation, "two").run, send(conversation, "three").run
    assert message_queue(conversation).positions == {second.pk: 1, third.pk: 2}

    with django_capture_on_commit_callbacks(execute=True):
        started = end(first)

    assert started == second and active_of(conversation) == second.pk
    assert dispatched == [second.pk]
    assert claim_run(third.pk) is None  # a waiting message is no worker's, even if a task named it
    assert claim_run(second.pk) is not None
    with django_capture_on_commit_callbacks(execute=True):
        assert end(Run.objects.get(pk=second.pk)) == third
    assert dispatched == [second.pk, third.pk]
    assert end(Run.objects.get(pk=third.pk)) is None
    assert active_of(conversation) is None
    for run in (first, second, third):
        assert terminals(run) == ["run.completed"]


def test_the_queue_holds_at_most_run_queue_max_messages_and_a_refused_one_stores_nothing(
    conversation: Conversation, with_policy: Callable[[str], None], settings: Settings
) -> None:
    settings.RUN_QUEUE_MAX = 2
    with_policy("queue")
    running(conversation)
    send(conversation, "two")
    send(conversation, "three")
    runs_before, events_before = Run.objects.count(), Event.objects.count()

    with pytest.raises(ServiceError) as refused:
        send(conversation, "four", files=[SimpleUploadedFile("a.txt", b"x")])

    assert (refused.value.status, refused.value.code) == (429, "queue_full")
    assert "RUN_QUEUE_MAX" in refused.value.message and "cancel" in refused.value.message
    assert (Run.objects.count(), Event.objects.count()) == (runs_before, events_before)


def test_the_policy_is_the_active_runs_agent_versions_not_what_the_agent_says_since(
    conversation: Conversation, with_policy: Callable[[str], None]
) -> None:
    with_policy("queue")
    first = running(conversation)
    with_policy("reject")  # a new version: the next run's, not the active one's

    sent = send(conversation, "two")

    assert sent.disposition == Disposition.QUEUED and sent.behind == first.pk


def test_a_message_sent_when_no_run_is_active_but_messages_still_wait_goes_behind_them(
    conversation: Conversation, with_policy: Callable[[str], None]
) -> None:
    with_policy("queue")
    first = running(conversation)
    second = send(conversation, "two").run
    finish_run(first.pk, Run.Status.COMPLETED)  # its worker died before it started the next one

    sent = send(conversation, "three")

    assert active_of(conversation) == second.pk  # the first in line went first
    assert (sent.disposition, sent.behind, sent.position) == ("queued", second.pk, 1)


def test_cancelling_a_waiting_message_ends_it_with_its_one_terminal_event_and_nothing_else(
    conversation: Conversation, with_policy: Callable[[str], None]
) -> None:
    with_policy("queue")
    first = running(conversation)
    second, third = send(conversation, "two").run, send(conversation, "three").run

    cancelled = cancel_message(conversation, second.pk)

    assert (cancelled.status, cancelled.result) == (Run.Status.INTERRUPTED, {"reason": "cancelled", **cancelled.result})
    assert [kind for kind, _ in events_of(second)] == ["run.queued", "run.interrupted"]
    assert Run.objects.get(pk=first.pk).status == Run.Status.RUNNING and active_of(conversation) == first.pk
    assert message_queue(conversation).positions == {third.pk: 1}
    with pytest.raises(Conflict) as again:
        cancel_message(conversation, second.pk)
    assert again.value.code == "run_finished"
    with pytest.raises(Conflict) as active:
        cancel_message(conversation, first.pk)
    assert active.value.code == "run_active"


def test_interrupting_the_active_run_starts_the_next_waiting_message(
    conversation: Conversation, with_policy: Callable[[str], None]
) -> None:
    with_policy("queue")
    first = start_run(conversation, RunOptions("one"))  # not started yet: it ends at once
    second = send(conversation, "two").run

    interrupt_run(conversation)

    assert terminals(first) == ["run.interrupted"]
    assert active_of(conversation) == second.pk


# --- the reaper -----------------------------------------------------------------------------------------------


def test_the_reaper_never_hands_a_waiting_message_to_a_worker(
    conversation: Conversation, with_policy: Callable[[str], None], dispatched: list[UUID], settings: Settings
) -> None:
    with_policy("queue")
    first = start_run(conversation, RunOptions("one"))
    second = send(conversation, "two").run
    long_ago = timezone.now() - timedelta(seconds=settings.RUN_REDISPATCH_SECONDS + 1)
    Run.objects.filter(pk__in=[first.pk, second.pk]).update(heartbeat_at=long_ago)

    reap_stale_runs()

    assert dispatched == [first.pk]  # the active one, lost: handed out again; the waiting one stays waiting


def test_the_reaper_starts_what_waited_behind_a_run_whose_worker_died(
    conversation: Conversation, with_policy: Callable[[str], None], dispatched: list[UUID], settings: Settings
) -> None:
    with_policy("queue")
    first = running(conversation)
    second = send(conversation, "two").run
    stale = timezone.now() - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS + 5)
    Run.objects.filter(pk=first.pk).update(heartbeat_at=stale)

    reap_stale_runs()

    assert terminals(first) == ["run.failed"]
    assert active_of(conversation) == second.pk


def test_the_reaper_starts_the_next_message_of_a_conversation_its_run_left_without_one(
    conversation: Conversation, with_policy: Callable[[str], None]
) -> None:
    with_policy("queue")
    first = running(conversation)
    second = send(conversation, "two").run
    finish_run(first.pk, Run.Status.COMPLETED)  # and its process died right there

    reap_stale_runs()
    reap_stale_runs()

    assert active_of(conversation) == second.pk
    assert [kind for kind, _ in events_of(second)] == ["run.queued"]


# --- interrupt ------------------------------------------------------------------------------------------------


def test_interrupt_asks_the_running_run_to_stop_and_queues_the_message_right_behind_it(
    conversation: Conversation,
    with_policy: Callable[[str], None],
    signals: list[tuple[UUID, str]],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with_policy("interrupt")
    first = running(conversation)

    with django_capture_on_commit_callbacks(execute=True):
        sent = send(conversation, "two")

    assert (sent.disposition, sent.behind, sent.position) == ("interrupting", first.pk, 1)
    assert signals == [(first.pk, realtime.INTERRUPT_MESSAGE_TYPE)]
    stopping = Run.objects.get(pk=first.pk)
    assert stopping.status == Run.Status.RUNNING and stopping.interrupt_requested_at is not None
    assert active_of(conversation) == first.pk  # its worker ends it, with its events and usage
    assert end(stopping, Run.Status.INTERRUPTED) == sent.run


def test_interrupt_ends_a_run_that_had_not_started_at_once_and_the_message_starts(
    conversation: Conversation,
    with_policy: Callable[[str], None],
    dispatched: list[UUID],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with_policy("interrupt")
    first = start_run(conversation, RunOptions("one"))

    with django_capture_on_commit_callbacks(execute=True):
        sent = send(conversation, "two")

    assert sent.disposition == Disposition.INTERRUPTING
    assert terminals(first) == ["run.interrupted"]
    assert active_of(conversation) == sent.run.pk and dispatched == [sent.run.pk]


def test_a_message_sent_while_the_run_is_already_stopping_waits_its_turn_and_stops_nothing(
    conversation: Conversation, with_policy: Callable[[str], None], signals: list[tuple[UUID, str]]
) -> None:
    with_policy("interrupt")
    first = running(conversation)
    second = send(conversation, "two")

    third = send(conversation, "three")

    assert (second.disposition, third.disposition) == ("interrupting", "queued")
    assert (third.behind, third.position) == (first.pk, 2)
    assert end(Run.objects.get(pk=first.pk), Run.Status.INTERRUPTED) == second.run


# --- steer ----------------------------------------------------------------------------------------------------


def test_steer_stores_the_message_for_the_running_run_and_signals_its_worker(
    conversation: Conversation,
    with_policy: Callable[[str], None],
    signals: list[tuple[UUID, str]],
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with_policy("steer")
    first = running(conversation)

    with django_capture_on_commit_callbacks(execute=True):
        sent = send(conversation, "two")

    assert (sent.disposition, sent.run, sent.behind, sent.position) == ("steered", first, first.pk, 1)
    assert PendingSteer.objects.get(message_id=sent.message_id).into_id == first.pk
    assert events_of(sent.message_id) == []  # it has no life of its own unless the run ends first
    assert signals == [(first.pk, realtime.STEER_MESSAGE_TYPE)]
    queue = message_queue(conversation)
    assert (queue.positions, queue.steering) == ({sent.message_id: 1}, {sent.message_id: first.pk})


def test_the_worker_takes_steered_messages_once_in_order_as_message_steered_on_its_run(
    conversation: Conversation, with_policy: Callable[[str], None]
) -> None:
    with_policy("steer")
    first = running(conversation)
    second, third = send(conversation, "two"), send(conversation, "three")

    taken = take_steers(first.pk)
    again = take_steers(first.pk)

    assert [(message.message_id, message.text) for message in taken] == [
        (second.message_id, "two"),
        (third.message_id, "three"),
    ]
    assert again == []
    steered = [data for kind, data in events_of(first) if kind == "message.steered"]
    assert [(data["message_id"], data["text"]) for data in steered] == [
        (str(second.message_id), "two"),
        (str(third.message_id), "three"),
    ]
    assert not Run.objects.filter(pk__in=[second.message_id, third.message_id]).exists()
    assert end(first) is None  # nothing left to run on its own
    assert terminals(first) == ["run.completed"]


def test_a_steered_message_the_run_never_took_runs_after_it_on_its_own(
    conversation: Conversation, with_policy: Callable[[str], None]
) -> None:
    with_policy("steer")
    first = running(conversation)
    sent = send(conversation, "two")

    started = end(first)

    assert started is not None and started.pk == sent.message_id
    ((kind, data),) = events_of(started)
    assert (kind, data["text"], data["disposition"], data["position"]) == ("run.queued", "two", "queued", 1)
    assert "ended before it took the message in" in data["steer_fallback"]
    assert not PendingSteer.objects.exists()
    assert take_steers(first.pk) == []


def test_nothing_is_taken_while_the_run_waits_for_a_person(
    conversation: Conversation, with_policy: Callable[[str], None]
) -> None:
    with_policy("steer")
    first = running(conversation)
    send(conversation, "two")
    approval = ask_approval(first, "toolu_1", "Bash", {"command": "rm x"}, "", 60)

    assert take_steers(first.pk) == []

    approval.status = approval.Status.ALLOWED
    approval.save(update_fields=["status"])
    assert [message.text for message in take_steers(first.pk)] == ["two"]


@pytest.mark.parametrize(
    ("state", "reason"),
    [("queued", "was queued, not running"), ("waiting", "was waiting, not running"), ("stopping", "being interrupted")],
)
def test_steer_queues_the_message_when_the_run_is_not_running(
    conversation: Conversation, with_policy: Callable[[str], None], state: str, reason: str
) -> None:
    with_policy("steer")
    first = start_run(conversation, RunOptions("one"))
    if state != "queued":
        claim_run(first.pk)
    if state == "waiting":
        Run.objects.filter(pk=first.pk).update(status=Run.Status.WAITING)
    if state == "stopping":
        Run.objects.filter(pk=first.pk).update(interrupt_requested_at=timezone.now())

    sent = send(conversation, "two")

    assert (sent.disposition, sent.behind) == ("queued", first.pk)
    queued = dict(events_of(sent.run))["run.queued"]
    assert reason in queued["steer_refused"]
    assert not PendingSteer.objects.exists()


@pytest.mark.parametrize(
    "options",
    [
        {"files": [SimpleUploadedFile("a.txt", b"x")]},
        {"skills": []},
        {"budget_calls": 3},
        {"mcp_tokens": {"token": "secret"}},
    ],
    ids=["files", "skills", "budget", "mcp_tokens"],
)
def test_a_message_with_choices_of_its_own_is_queued_not_steered(
    conversation: Conversation, with_policy: Callable[[str], None], options: dict[str, Any]
) -> None:
    with_policy("steer")
    running(conversation)

    sent = send(conversation, "two", **options)

    assert sent.disposition == Disposition.QUEUED
    assert "runs on its own" in dict(events_of(sent.run))["run.queued"]["steer_refused"]


def test_a_steer_never_overtakes_a_message_already_waiting(
    conversation: Conversation, with_policy: Callable[[str], None]
) -> None:
    with_policy("steer")
    first = running(conversation)
    waiting = send(conversation, "two", budget_calls=3)  # queued: it has a budget of its own

    sent = send(conversation, "three")

    assert (waiting.disposition, sent.disposition, sent.position) == ("queued", "queued", 2)
    assert take_steers(first.pk) == []


def test_a_chat_agents_run_takes_no_steered_message(conversation: Conversation, tenant: Tenant) -> None:
    create_profile(tenant, "talker", AgentSpec(kind="chat", busy_policy="steer"))
    Conversation.objects.filter(pk=conversation.pk).update(agent=default_profile(tenant))
    first = running(conversation)
    first.agent_version = tenant.agents.get(name="talker").current_version
    first.save(update_fields=["agent_version"])

    sent = send(conversation, "two")

    assert sent.disposition == Disposition.QUEUED
    assert "chat" in dict(events_of(sent.run))["run.queued"]["steer_refused"]


def test_a_cancelled_steer_is_never_taken(conversation: Conversation, with_policy: Callable[[str], None]) -> None:
    with_policy("steer")
    first = running(conversation)
    sent = send(conversation, "two")

    cancelled = cancel_message(conversation, sent.message_id)

    assert cancelled.status == Run.Status.INTERRUPTED
    assert take_steers(first.pk) == []
    assert end(first) is None


def test_cancelling_a_steer_the_run_took_meanwhile_is_404(
    conversation: Conversation, with_policy: Callable[[str], None]
) -> None:
    with_policy("steer")
    first = running(conversation)
    sent = send(conversation, "two")
    take_steers(first.pk)

    with pytest.raises(ServiceError) as gone:
        cancel_message(conversation, sent.message_id)

    assert (gone.value.status, gone.value.code) == (404, "not_found")


# --- the REST surface -----------------------------------------------------------------------------------------


def messages_url(conversation: Conversation, suffix: str = "/messages") -> str:
    return f"/api/tenants/{conversation.tenant_id}/conversations/{conversation.pk}{suffix}"


def test_the_202_says_what_became_of_the_message(
    api_client: APIClient, conversation: Conversation, with_policy: Callable[[str], None]
) -> None:
    with_policy("steer")
    first = running(conversation)

    body = api_client.post(messages_url(conversation), {"text": "two"}, format="json").json()

    assert (body["id"], body["status"], body["disposition"]) == (str(first.pk), "running", "steered")
    assert (body["behind"], body["queue_position"]) == (str(first.pk), 1)
    assert body["message_id"] != body["id"] and PendingSteer.objects.filter(message_id=body["message_id"]).exists()


def test_waiting_messages_are_listed_with_their_place_in_line(
    api_client: APIClient,
    conversation: Conversation,
    with_policy: Callable[[str], None],
    django_assert_num_queries: Any,
) -> None:
    with_policy("steer")
    first = running(conversation)
    steering = send(conversation, "two")
    queued = send(conversation, "three", budget_calls=2)

    with django_assert_num_queries(8):  # as many for any number of runs
        listing = api_client.get(messages_url(conversation, "/runs"), {"status": "queued"}).json()["results"]

    assert [(run["id"], run["queue_position"], run["steers"]) for run in listing] == [
        (str(queued.message_id), 2, None),
        (str(steering.message_id), 1, str(first.pk)),
    ]
    everything = api_client.get(messages_url(conversation, "/runs")).json()["results"]
    assert (everything[-1]["id"], everything[-1]["queue_position"]) == (str(first.pk), None)


def test_a_run_list_of_an_unknown_status_is_400(api_client: APIClient, conversation: Conversation) -> None:
    response = api_client.get(messages_url(conversation, "/runs"), {"status": "later"})

    assert "queued" in error_of(response, 400)["fields"]["status"][0]


def test_cancel_over_rest_and_another_tenants_message_is_404(
    api_client: APIClient,
    other_api_client: APIClient,
    conversation: Conversation,
    with_policy: Callable[[str], None],
) -> None:
    with_policy("queue")
    first = running(conversation)
    sent = send(conversation, "two")
    path = messages_url(conversation, f"/runs/{sent.message_id}/cancel")
    elsewhere = f"/api/tenants/globex/conversations/{conversation.pk}/runs/{sent.message_id}/cancel"

    foreign = other_api_client.post(elsewhere)
    missing = api_client.post(messages_url(conversation, f"/runs/{first.conversation_id}/cancel"))
    active = api_client.post(messages_url(conversation, f"/runs/{first.pk}/cancel"))
    cancelled = api_client.post(path)

    assert error_of(foreign, 404)["code"] == error_of(missing, 404)["code"] == "not_found"
    assert error_of(active, 409)["code"] == "run_active"
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["result"]["reason"]) == ("interrupted", "cancelled")


# --- the admin's transcript -----------------------------------------------------------------------------------


def test_the_transcript_keeps_a_runs_lines_together_and_shows_a_steered_message_where_it_came(
    conversation: Conversation, tenant: Tenant
) -> None:
    update_profile(default_profile(tenant), {"busy_policy": "steer"})
    first = running(conversation)
    send(conversation, "two")
    take_steers(first.pk)
    waiting = send(conversation, "three", budget_calls=1).run  # queued: its run.queued lands among first's events
    append_events(conversation.pk, first.pk, [("message", {"block": {"type": "text", "text": "Done."}})])
    end(first)
    claim_run(waiting.pk)
    end(Run.objects.get(pk=waiting.pk))

    transcript = build_transcript(conversation)

    assert [(part.run.pk, part.user_text) for part in transcript.runs] == [(first.pk, "one"), (waiting.pk, "three")]
    lines = [(item.kind, item.text) for item in transcript.runs[0].items if item.kind in ("steered", "text")]
    assert lines == [("steered", "two"), ("text", "Done.")]


# --- the gate, while a steered message is unread --------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("unread", [False, True], ids=["nothing unread: it suspends", "unread: it waits"])
async def test_a_call_asking_a_person_waits_in_process_while_a_steered_message_is_unread(
    conversation: Conversation, settings: Settings, dispatched: list[UUID], unread: bool
) -> None:
    # A suspended turn would hand the CLI's unread message a turn of its own, which the suspended session
    # must not have: the call waits for its person in-process instead (runs.steering).
    settings.APPROVAL_WAIT_SECONDS = 0
    run = await sync_to_async(running)(conversation)
    policy = ToolPolicy.of("careful", [], [], [{"pattern": "Bash(echo *)", "action": "ask"}])

    async def flush() -> None:
        return None

    gate = RunGate(run, policy, 60, flush=flush, stopped=asyncio.Event(), holds=lambda: unread)
    deciding = asyncio.create_task(gate.decide("Bash", {"command": "echo hi"}, "toolu_1"))
    await asyncio.sleep(0.3)
    approval = await Approval.objects.aget(run=run)
    await sync_to_async(decide_approval)(approval.pk, Who(Decider.API_KEY, "test"), allow=True)
    gate.signal_decided()
    decision = await asyncio.wait_for(deciding, 5)

    assert decision.action == ("allow" if unread else "defer")
