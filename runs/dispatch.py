"""Handing runs to workers (Celery, or a thread of the web process without a broker), starting a conversation's
next queued message when its active run ends, and the reaper that ends runs whose worker died and hands lost
ones out again."""

import contextlib
import logging
import shutil
import threading
import time
from concurrent.futures import Future
from datetime import timedelta
from uuid import UUID

from celery import current_app
from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from approvals.services import cancel_pending, expire_due, pending_for_run
from conversations import realtime
from conversations.events import EventType, finish_run, record_events
from conversations.models import Conversation, Run
from runs.lease import warm_queue
from runs.models import PendingSteer
from runs.waiting import suspend_lost_run
from sandbox.limits import run_cgroups
from usage.budgets import release_abandoned

logger = logging.getLogger(__name__)

EXECUTE_RUN_TASK = "runs.execute_run"


def dispatch_run(run_id: UUID) -> None:
    """Hand a queued run to a Celery worker, or to a background thread when no broker is configured."""
    if settings.RUN_EXECUTION == "celery":
        try:
            # By name: the task's module imports the executor, which the web process does not need. A conversation
            # kept warm on a worker goes to that worker's own queue (`runs.sessions`); the reaper sends it to any
            # worker if that one does not take it soon (`reap_stale_runs`).
            queue = warm_queue_of(run_id)
            current_app.send_task(EXECUTE_RUN_TASK, args=[str(run_id)], queue=queue)
            logger.debug("Run %s dispatched to %s", run_id, queue or "any worker")
        except Exception as exc:  # the broker is down; the run is stored, queued
            logger.error(
                "Handing run %s to a worker failed (%s: %s); it stays queued and is dispatched again within %.0f s",
                run_id,
                type(exc).__name__,
                exc,
                settings.RUN_REDISPATCH_SECONDS,
            )
        return
    _execute_in_process(run_id)
    start_reaper_thread()
    from runs.prewarm import start_prewarming

    start_prewarming()


def _execute_in_process(run_id: UUID) -> None:
    """Without a broker, runs execute in the web process, on its runs' loop (`runs.loop`)."""
    from runs.executor import execute_run
    from runs.loop import submit

    def report(done: "Future[None]") -> None:
        if not done.cancelled() and done.exception() is not None:
            logger.error("Run %s failed in the web process", run_id, exc_info=done.exception())

    submit(execute_run(run_id, then=start_next)).add_done_callback(report)


def warm_queue_of(run_id: UUID) -> str | None:
    """The queue of the worker keeping the run's conversation warm, or None (the default queue, any worker)."""
    worker, until = (
        Run.objects.filter(pk=run_id).values_list("conversation__warm_worker", "conversation__warm_until").first()
    ) or ("", None)
    if not worker or until is None or until <= timezone.now():
        return None
    return warm_queue(worker)


def queued_behind(conversation: Conversation) -> QuerySet[Run]:
    """The messages waiting behind the conversation's active run (busy policies `queue`, `steer`, `interrupt`),
    first in line first. They are queued runs that are not the active one: no worker ever gets them, until
    `promote_next` makes the first of them active."""
    waiting = Run.objects.filter(conversation=conversation, status=Run.Status.QUEUED)
    if conversation.active_run_id is not None:
        waiting = waiting.exclude(pk=conversation.active_run_id)
    return waiting.order_by("created_at", "pk")


def promote_next(conversation: Conversation) -> Run | None:
    """Make the first message waiting in the conversation its active run, handed to a worker once committed; None
    when a run is active or nothing waits. Call inside the conversation's row lock (`select_for_update`): the lock
    is what makes one caller of many (the run's worker, an interrupt, the reaper, a new message) promote it.

    Messages that were to steer a run that ended before it took them in run on their own, in their place in line
    (they were sent before anything queued after them), with the `run.queued` event they had not had yet."""
    if conversation.active_run_id is not None:
        return None
    line = list(queued_behind(conversation).values_list("pk", flat=True))
    if not line:  # the common case: one query
        return None
    fallen = list(
        PendingSteer.objects.filter(message_id__in=line)
        .exclude(into__status__in=Run.UNFINISHED)
        .select_related("message")
        .order_by("created_at")
    )
    for steer in fallen:
        queued = {
            **steer.queued,
            "disposition": "queued",
            "behind": str(steer.into_id),
            "position": line.index(steer.message_id) + 1,
            "steer_fallback": "The run it was sent to steer ended before it took the message in.",
        }
        record_events(steer.message, [(EventType.RUN_QUEUED, queued)])
    if fallen:
        PendingSteer.objects.filter(pk__in=[steer.pk for steer in fallen]).delete()
    following = Run.objects.get(pk=line[0])
    now = timezone.now()
    Run.objects.filter(pk=following.pk).update(heartbeat_at=now)  # handed to a worker now: the reaper's clock
    Conversation.objects.filter(pk=conversation.pk).update(active_run=following, updated_at=now)
    conversation.active_run = following
    run_id = following.pk
    transaction.on_commit(lambda: dispatch_run(run_id))
    return following


def start_next(conversation_id: UUID) -> Run | None:
    """Start the conversation's next waiting message if no run is active: after every ending of a run (its worker's
    terminal event, an interrupt that ended it at once, the reaper). Idempotent; the new active run, or None."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().filter(pk=conversation_id).first()
        if conversation is None:
            return None
        return promote_next(conversation)


def wake_run(run_id: UUID) -> None:
    """A request of the run was settled: a suspended run waiting on nothing more is queued again for any worker;
    a running one (waiting in-process) is told at once. Locks the run's row, as `runs.services.suspend_run` does,
    so a decision and a suspension that race end in one of the two, never in neither."""
    with transaction.atomic():
        run = Run.objects.select_for_update().filter(pk=run_id).first()
        if run is None:
            return
        if run.status == Run.Status.RUNNING:
            transaction.on_commit(lambda: realtime.signal_run(run_id, {"type": realtime.DECIDED_MESSAGE_TYPE}))
        elif run.status == Run.Status.WAITING and pending_for_run(run_id) is None:
            run.status = Run.Status.QUEUED
            run.heartbeat_at = timezone.now()
            run.save(update_fields=["status", "heartbeat_at"])
            transaction.on_commit(lambda: dispatch_run(run_id))


def expire_requests() -> int:
    """Deny by themselves the approvals and questions past their time, and wake their runs."""
    runs = expire_due()
    for run_id in runs:
        wake_run(run_id)
    return len(runs)


def reap_stale_runs() -> int:
    """Fail running runs whose worker stopped beating (it died), so none stays running forever, and start what
    waited behind them; hand queued runs that no worker took (a lost task) to a worker again, and start the next
    message of conversations whose run ended without starting it (its process died in between). What the dead
    workers' model calls held of budgets is given back."""
    now = timezone.now()
    unclaimed = Run.objects.filter(
        status=Run.Status.QUEUED,
        heartbeat_at__lt=now - timedelta(seconds=settings.RUN_REDISPATCH_SECONDS),
        # Only a conversation's active run: a message waiting behind it is no worker's yet (`promote_next`).
        conversation__active_run=F("pk"),
    ).values_list("pk", flat=True)
    for run_id in unclaimed:
        # The conditional update makes one reaper, of many, dispatch it; claim_run makes a
        # duplicate task harmless.
        if Run.objects.filter(pk=run_id, status=Run.Status.QUEUED).update(heartbeat_at=now):
            logger.warning("Run %s was still queued; dispatching it again", run_id)
            dispatch_run(run_id)
    unwarmed = Run.objects.filter(
        status=Run.Status.QUEUED,
        heartbeat_at__lt=now - timedelta(seconds=settings.RUN_WARM_CLAIM_SECONDS),
        conversation__active_run=F("pk"),
        # Kept warm by a worker of this run queue: those of another (another platform on the same database) are
        # theirs to send elsewhere.
        conversation__warm_worker__startswith=f"{settings.CELERY_TASK_DEFAULT_QUEUE}/",
    )
    for run_id, conversation_id in unwarmed.values_list("pk", "conversation_id"):
        # Sent to the worker keeping its conversation warm, which has not taken it: that worker is busy or gone.
        # Cold on any worker instead (its warm session, now stale, closes when that worker sees it).
        if Run.objects.filter(pk=run_id, status=Run.Status.QUEUED).update(heartbeat_at=now):
            logger.warning("Run %s was not taken by the worker keeping its conversation warm; dispatching it", run_id)
            Conversation.objects.filter(pk=conversation_id).update(warm_worker="", warm_session="", warm_until=None)
            dispatch_run(run_id)
    cutoff = now - timedelta(seconds=settings.RUN_STALE_AFTER_SECONDS)
    stale = Run.objects.filter(status=Run.Status.RUNNING, heartbeat_at__lt=cutoff).values_list(
        "pk", "worker", "conversation_id"
    )
    reaped = 0
    for run_id, worker, conversation_id in stale:
        # A run that waited for a person when its worker died waits on, without a worker.
        suspended = suspend_lost_run(run_id, worker, cutoff)
        if suspended is not None:
            logger.warning(
                "Run %s lost its worker %s while it waited for a person; it is %s", run_id, worker, suspended
            )
            if suspended == Run.Status.QUEUED:
                dispatch_run(run_id)
            continue
        message = f"The worker running this run ({worker}) stopped responding."
        error = {"reason": "worker_lost", "message": message}
        # Only a run still running silently: another reaper may have suspended it, or a worker resumed it, since.
        if finish_run(run_id, Run.Status.FAILED, error=error, from_statuses=[Run.Status.RUNNING], silent_since=cutoff):
            logger.warning("Reaped run %s: worker %s stopped responding", run_id, worker)
            cancel_pending(run_id)
            start_next(conversation_id)
            reaped += 1
    idle = (
        Run.objects.filter(status=Run.Status.QUEUED, conversation__active_run__isnull=True)
        .values_list("conversation_id", flat=True)
        .order_by()
        .distinct()
    )
    for conversation_id in idle:
        if (started := start_next(conversation_id)) is not None:
            logger.warning(
                "Conversation %s had messages waiting and no run; started run %s", conversation_id, started.pk
            )
    if released := release_abandoned():
        logger.warning("Released %d budget reservation(s) of model calls that ended with their worker", released)
    return reaped


def sweep_run_leftovers(min_age_seconds: float = 60.0) -> int:
    """Remove the cgroups and private directories that finished runs whose worker died left here.

    A run removes its own when it ends; only a killed worker leaves them behind. Anything younger
    than `min_age_seconds` is left alone, so a run that is just ending cleans up after itself.
    """
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
    finished = (
        Run.objects.filter(pk__in=run_ids)
        .exclude(status__in=Run.UNFINISHED)
        # A warm session's place and cgroup are named after the run that opened it, which ended long since: they go
        # when the session closes (or, if its worker died, once its conversation no longer counts on it).
        .exclude(
            conversation__warm_worker__gt="",
            conversation__warm_until__gt=timezone.now() - timedelta(seconds=settings.RUN_MAX_SECONDS),
        )
        .values_list("pk", flat=True)
    )
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
                expire_requests()
                if time.monotonic() >= next_sweep:
                    sweep_run_leftovers()
                    next_sweep = time.monotonic() + 60
            except Exception:
                logger.exception("Reaping stale runs failed")
            finally:
                close_old_connections()
            time.sleep(settings.RUN_HEARTBEAT_SECONDS)

    threading.Thread(target=loop, name="run-reaper", daemon=True).start()
