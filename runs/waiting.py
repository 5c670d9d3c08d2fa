"""A run that waits for a person: suspended without its worker, resumed (on any worker) once decided.

Deciding and waking are `runs.services` and `runs.dispatch`'s; this is the worker's side.
"""

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from approvals import services as approvals
from approvals.models import Approval, Question
from conversations.events import EventType, record_events
from conversations.models import Conversation, Event, Run
from runs.session_store import defer_dangling_call


def suspend_run(run_id: UUID, waiting: dict[str, Any], *, session_id: str) -> bool:
    """A run whose call waits for a person gives up its worker: it waits (`run.waiting`), or, when the decision
    came while it was suspending, is queued again (True), for its worker to resume at once. Its session is where
    its next leg resumes. Locks the run's row, as `runs.dispatch.wake_run` does, so a decision and a suspension
    that race end in one of the two, never in neither."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id, status=Run.Status.RUNNING).first()
        if run is None:
            return False  # ended meanwhile (interrupted, reaped)
        run.suspensions += 1
        queued = approvals.pending_for_run(run_id) is None
        if queued:
            run.status, run.heartbeat_at = Run.Status.QUEUED, timezone.now()
        else:
            run.status, run.worker = Run.Status.WAITING, ""
        run.save(update_fields=["suspensions", "status", "heartbeat_at", "worker"])
        if session_id:
            Conversation.objects.filter(pk=run.conversation_id).update(sdk_session_id=session_id)
        record_events(run, [(EventType.RUN_WAITING, waiting)])
    return queued


def suspended_request(run_id: UUID) -> Approval | Question | None:
    """The request a resumed run was suspended on."""
    return approvals.latest_request(run_id)


def waiting_data(request: Approval | Question) -> dict[str, Any]:
    """`run.waiting`: what the run waits for, and until when."""
    return approvals.request_summary(request)


def resumed_data(request: Approval | Question) -> dict[str, Any]:
    """What `run.resumed` adds to `run.started`'s fields: the request whose settling resumed it."""
    return {"after": approvals.request_summary(request)}


def suspend_lost_run(run_id: UUID, worker: str, cutoff: datetime) -> str | None:
    """A run whose worker died while one of its calls waited for a person is suspended at that call instead of
    failed: the new status (waiting, or queued when the decision came meanwhile), or None when it cannot be
    (it waited on nothing, or its transcript does not hold the call)."""
    request = approvals.latest_request(run_id)
    if request is None or request.applied_at is not None:
        return None
    with transaction.atomic():
        run = (
            Run.objects.select_for_update()
            .filter(pk=run_id, status=Run.Status.RUNNING, heartbeat_at__lt=cutoff)
            .select_related("conversation")
            .first()
        )
        session_id = run.conversation.sdk_session_id if run is not None else ""
        if run is None or not session_id:
            return None
        if not defer_dangling_call(run.conversation_id, session_id, request.tool_use_id):
            return None
        request.refresh_from_db()
        run.suspensions += 1
        run.status = Run.Status.WAITING if request.is_pending else Run.Status.QUEUED
        run.heartbeat_at, run.worker = timezone.now(), ""
        run.save(update_fields=["suspensions", "status", "heartbeat_at", "worker"])
        record_events(run, [(EventType.RUN_WAITING, {**approvals.request_summary(request), "worker_lost": worker})])
    return run.status


def hand_back_run(
    run_id: UUID, handed_back: dict[str, Any], *, session_id: str
) -> Literal["queued", "interrupt", "gone"]:
    """A run its worker gives up as it shuts down is queued again, for any worker to continue from its session
    (`run.handed_back`; its next leg starts with `run.resumed`): "queued". "interrupt" when its user asked to
    interrupt it meanwhile (the caller ends it so, rather than start it again elsewhere only to stop it), "gone"
    when it ended meanwhile (the reaper). Counted among its suspensions: a queued run with any resumes its session.
    Locks the run's row, as `runs.dispatch.wake_run` and the interrupt do."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id, status=Run.Status.RUNNING).first()
        if run is None:
            return "gone"
        if run.interrupt_requested_at is not None:
            return "interrupt"
        run.suspensions += 1
        run.status, run.heartbeat_at, run.worker = Run.Status.QUEUED, timezone.now(), ""
        run.save(update_fields=["suspensions", "status", "heartbeat_at", "worker"])
        if session_id:
            Conversation.objects.filter(pk=run.conversation_id).update(sdk_session_id=session_id)
        record_events(run, [(EventType.RUN_HANDED_BACK, handed_back)])
    return "queued"


def handed_back_data(run_id: UUID) -> dict[str, Any] | None:
    """`run.handed_back`'s data when the run's last leg ended so (its worker shut down), None when it ended waiting
    for a person (or never ended: a first leg)."""
    last = (
        Event.objects.filter(run_id=run_id, type__in=[EventType.RUN_WAITING, EventType.RUN_HANDED_BACK])
        .order_by("-seq")
        .values_list("type", "data")
        .first()
    )
    if last is None or last[0] != EventType.RUN_HANDED_BACK:
        return None
    return dict(last[1])
