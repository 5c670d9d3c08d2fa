"""Workflows of conversations and runs: starting, interrupting, recording events, finishing, reaping."""

import contextlib
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from api.errors import Conflict, ServiceError
from conversations import realtime
from conversations.models import Conversation, Event, Run
from tenants.models import LanguageModel, Tenant
from usage.services import effective_budget

logger = logging.getLogger(__name__)

EventItem = tuple[str, dict[str, Any]]
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"


def resolve_model(tenant: Tenant, model_id: str | None) -> LanguageModel:
    """The catalog model a conversation should use: the one named, or the tenant's default."""
    if not model_id:
        if tenant.default_model.status != LanguageModel.Status.ACTIVE:
            raise ServiceError(
                f"The tenant's default model '{tenant.default_model_id}' is deprecated; name an active model.",
                code="model_deprecated",
            )
        return tenant.default_model
    model = LanguageModel.objects.filter(pk=model_id).first()
    if model is None:
        choices = ", ".join(LanguageModel.objects.usable().values_list("id", flat=True)) or "none defined"
        raise ServiceError(f"Unknown model '{model_id}'. Choose one of: {choices}.", code="unknown_model")
    if model.status != LanguageModel.Status.ACTIVE:
        raise ServiceError(f"Model '{model_id}' is deprecated; choose an active model.", code="model_deprecated")
    return model


def create_conversation(
    tenant: Tenant, *, user_id: str = "", model_id: str | None = None, title: str = ""
) -> Conversation:
    if not tenant.is_active:
        raise Conflict(f"Tenant '{tenant.pk}' is inactive.", code="tenant_inactive")
    model = resolve_model(tenant, model_id)
    return Conversation.objects.create(tenant=tenant, user_id=user_id, model=model, title=title)


def delete_conversation(conversation: Conversation) -> None:
    """Delete a conversation with its runs and events; refused while a run is active in it."""
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if locked.active_run_id is not None:
            raise Conflict(
                "A run is active in this conversation; interrupt it before deleting.", code="run_in_progress"
            )
        locked.delete()


def start_run(
    conversation: Conversation,
    text: str,
    user_id: str = "",
    *,
    budget: Mapping[str, Any] | None = None,
) -> Run:
    """Store a queued Run and its `run.queued` event, then hand it to a worker once committed."""
    if not text.strip():
        raise ServiceError("The message text is empty.", code="empty_text")
    if len(text) > settings.RUN_MAX_INPUT_CHARS:
        raise ServiceError(
            f"The message is {len(text)} characters; the limit is {settings.RUN_MAX_INPUT_CHARS}.",
            code="text_too_long",
        )
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().select_related("tenant", "model").get(pk=conversation.pk)
        if locked.is_archived:
            raise Conflict("This conversation is archived; unarchive it or start a new one.", code="archived")
        if not locked.tenant.is_active:
            raise Conflict(f"Tenant '{locked.tenant_id}' is inactive.", code="tenant_inactive")
        if locked.model.status != LanguageModel.Status.ACTIVE:
            raise Conflict(
                f"This conversation's model '{locked.model_id}' is deprecated; start a new conversation.",
                code="model_deprecated",
            )
        if locked.active_run_id is not None:
            raise Conflict(
                f"Run {locked.active_run_id} is still active in this conversation; "
                "wait for its terminal event or interrupt it first.",
                code="run_in_progress",
            )
        budget_usd, budget_calls = effective_budget(
            locked.tenant, (budget or {}).get("usd"), (budget or {}).get("calls")
        )
        run = Run.objects.create(
            conversation=locked,
            model=locked.model,
            user_id=user_id or locked.user_id,
            input=text,
            heartbeat_at=timezone.now(),  # for a queued run: when it was handed to a worker
            budget_usd=budget_usd,
            budget_calls=budget_calls,
        )
        locked.active_run = run
        locked.save(update_fields=["active_run", "updated_at"])
        budget_data = {"usd": None if budget_usd is None else str(budget_usd), "calls": budget_calls}
        queued = {"input": text, "user_id": run.user_id, "model": run.model_id, "budget": budget_data}
        record_events(run, [("run.queued", queued)])
        transaction.on_commit(lambda: dispatch_run(run.pk))
    conversation.active_run = run
    return run


def dispatch_run(run_id: UUID) -> None:
    """Hand a queued run to a Celery worker, or to a background thread when no broker is configured."""
    if settings.RUN_EXECUTION == "celery":
        from conversations.tasks import execute_run_task

        try:
            execute_run_task.delay(str(run_id))
        except Exception as exc:  # the broker is down; the run is stored, queued
            logger.error(
                "Handing run %s to a worker failed (%s: %s); it stays queued and is dispatched again within %.0f s",
                run_id,
                type(exc).__name__,
                exc,
                settings.RUN_REDISPATCH_SECONDS,
            )
        return
    threading.Thread(target=_execute_in_thread, args=(run_id,), name=f"run-{run_id}", daemon=True).start()
    start_reaper_thread()


def _execute_in_thread(run_id: UUID) -> None:
    import asyncio

    from conversations.executor import execute_run

    try:
        asyncio.run(execute_run(run_id))
    finally:
        close_old_connections()


def interrupt_run(conversation: Conversation) -> Run:
    """Ask the conversation's active run to stop; a queued run ends at once, a running one within seconds."""
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if locked.active_run_id is None:
            raise Conflict("No run is active in this conversation.", code="no_active_run")
        run = Run.objects.select_for_update().get(pk=locked.active_run_id)
        if run.interrupt_requested_at is None:
            run.interrupt_requested_at = timezone.now()
            run.save(update_fields=["interrupt_requested_at"])
    ended_while_queued = finish_run(
        run.pk,
        Run.Status.INTERRUPTED,
        result={"reason": "interrupted", "message": "Interrupted before it started."},
        from_statuses=[Run.Status.QUEUED],
    )
    if not ended_while_queued:
        realtime.signal_interrupt(run.pk)
    run.refresh_from_db()
    return run


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


def events_of_run_after(run_id: UUID, seq: int) -> list[Event]:
    """The events a run's worker stored after `seq` (not its `run.queued`, which start_run stores)."""
    return list(Event.objects.filter(run_id=run_id, seq__gt=seq).exclude(type="run.queued").order_by("seq"))


def record_events(run: Run, items: Sequence[EventItem]) -> list[Event]:
    """Persist events and broadcast them once the surrounding transaction commits (sync call sites)."""
    events = append_events(run.conversation_id, run.pk, items)
    transaction.on_commit(lambda: realtime.publish_events_sync(run.conversation_id, events))
    return events


def claim_run(run_id: UUID) -> Run | None:
    """Move a queued run to running for this process; None when it was already taken or ended."""
    now = timezone.now()
    claimed = Run.objects.filter(pk=run_id, status=Run.Status.QUEUED).update(
        status=Run.Status.RUNNING, started_at=now, heartbeat_at=now, worker=WORKER_NAME
    )
    if not claimed:
        return None
    return Run.objects.select_related("conversation__tenant", "model").get(pk=run_id)


def beat(run_id: UUID) -> bool:
    """Record that the run's worker is alive; True when an interrupt was requested meanwhile."""
    Run.objects.filter(pk=run_id, status=Run.Status.RUNNING).update(heartbeat_at=timezone.now())
    return Run.objects.filter(pk=run_id, interrupt_requested_at__isnull=False).exists()


def finish_run(
    run_id: UUID,
    status: str,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    session_id: str = "",
    from_statuses: Sequence[str] = Run.UNFINISHED,
) -> Event | None:
    """End an unfinished run with exactly one terminal event and release the conversation's lease.

    Returns the terminal event, or None when the run had already ended (a racing reaper or worker).
    """
    terminal_type = Run.TERMINAL_EVENTS[status]
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id, status__in=from_statuses).first()
        if run is None:
            return None
        run.status = status
        run.finished_at = timezone.now()
        run.result = result
        run.error = error
        run.save(update_fields=["status", "finished_at", "result", "error"])
        conversation_updates: dict[str, Any] = {"active_run": None, "updated_at": run.finished_at}
        if session_id:
            conversation_updates["sdk_session_id"] = session_id
        Conversation.objects.filter(pk=run.conversation_id, active_run=run).update(**conversation_updates)
        data = {**(result or {}), **({"error": error} if error else {})}
        if run.started_at:
            data["duration_ms"] = round((run.finished_at - run.started_at).total_seconds() * 1000)
        (event,) = record_events(run, [(terminal_type, data)])
    return event


def reap_stale_runs() -> int:
    """Fail running runs whose worker stopped beating (it died), so none stays running forever,
    and hand queued runs that no worker took (a lost task) to a worker again."""
    now = timezone.now()
    unclaimed = Run.objects.filter(
        status=Run.Status.QUEUED, heartbeat_at__lt=now - timedelta(seconds=settings.RUN_REDISPATCH_SECONDS)
    ).values_list("pk", flat=True)
    for run_id in unclaimed:
        # The conditional update makes one reaper, of many, dispatch it; claim_run makes a
        # duplicate task harmless.
        if Run.objects.filter(pk=run_id, status=Run.Status.QUEUED).update(heartbeat_at=now):
            logger.warning("Run %s was still queued; dispatching it again", run_id)
            dispatch_run(run_id)
    cutoff = now - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS)
    stale = Run.objects.filter(status=Run.Status.RUNNING, heartbeat_at__lt=cutoff).values_list("pk", "worker")
    reaped = 0
    for run_id, worker in stale:
        message = f"The worker running this run ({worker}) stopped responding."
        if finish_run(run_id, Run.Status.FAILED, error={"reason": "worker_lost", "message": message}):
            logger.warning("Reaped run %s: worker %s stopped responding", run_id, worker)
            reaped += 1
    return reaped


def sweep_run_leftovers(min_age_seconds: float = 60.0) -> int:
    """Remove the cgroups and private directories that finished runs whose worker died left here.

    A run removes its own when it ends; only a killed worker leaves them behind. Anything younger
    than `min_age_seconds` is left alone, so a run that is just ending cleans up after itself.
    """
    from sandbox.limits import run_cgroups

    runs_dir = settings.RUN_ROOT / "runs"
    directories = {path.name: path for path in runs_dir.iterdir()} if runs_dir.is_dir() else {}
    cgroups = run_cgroups()
    names = set(directories) | set(cgroups)
    run_ids = set()
    for name in names:
        with contextlib.suppress(ValueError):
            run_ids.add(UUID(name))
    # Only runs this database knows as finished: cgroups are machine-wide, and another installation
    # on the same machine may own the rest.
    finished = Run.objects.filter(pk__in=run_ids).exclude(status__in=Run.UNFINISHED).values_list("pk", flat=True)
    cutoff = time.time() - min_age_seconds
    swept = 0
    for name in {str(pk) for pk in finished}:
        if name in directories and directories[name].stat().st_mtime > cutoff:
            continue
        if name in cgroups:
            cgroups[name].remove()
        if name in directories:
            shutil.rmtree(directories[name], ignore_errors=True)
        swept += 1
    return swept


_reaper_lock = threading.Lock()
_reaper_started = False


def start_reaper_thread() -> None:
    """Reap stale runs every few seconds from this process, once per process."""
    global _reaper_started
    if _reaper_started:  # the common case, on every request in thread mode: no lock needed
        return
    with _reaper_lock:
        if _reaper_started:
            return
        _reaper_started = True

    def loop() -> None:
        next_sweep = 0.0  # at once: a worker that died on this machine may have left things behind
        while True:
            try:
                reap_stale_runs()
                if time.monotonic() >= next_sweep:
                    sweep_run_leftovers()
                    next_sweep = time.monotonic() + 60
            except Exception:
                logger.exception("Reaping stale runs failed")
            finally:
                close_old_connections()
            time.sleep(settings.RUN_HEARTBEAT_SECONDS)

    threading.Thread(target=loop, name="run-reaper", daemon=True).start()
