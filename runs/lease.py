"""A worker's hold on a run: claiming it from the queue, and proving it is still alive."""

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator
from uuid import UUID

from django.conf import settings
from django.db import DatabaseError
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from conversations.models import Run
from conversations.reconnect import close_connection

logger = logging.getLogger(__name__)

WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
# Each worker's own Celery queue, beside the shared one: the runs of conversations it keeps warm (runs.sessions).
WARM_QUEUE_PREFIX = "runs.warm."


def warm_worker() -> str:
    """This worker as `Conversation.warm_worker` names it: its run queue, then its lease name. Only workers of one
    run queue stand in for each other (`runs.dispatch.reap_stale_runs`)."""
    return f"{settings.CELERY_TASK_DEFAULT_QUEUE}/{WORKER_NAME}"


def warm_queue(worker: str | None = None) -> str:
    """The own queue of `worker` (a `warm_worker()`; this process's by default)."""
    return WARM_QUEUE_PREFIX + (worker or warm_worker())


def claim_run(run_id: UUID | str) -> Run | None:
    """Move a queued run to running for this process; None when it was already taken or ended, or when it is a
    message waiting behind its conversation's active run (only the active run ever runs)."""
    now = timezone.now()
    claimed = Run.objects.filter(pk=run_id, status=Run.Status.QUEUED, conversation__active_run=F("pk")).update(
        # A resumed run keeps the start of its first leg: its duration is the whole wait's.
        status=Run.Status.RUNNING,
        started_at=Coalesce(F("started_at"), Value(now)),
        heartbeat_at=now,
        worker=WORKER_NAME,
    )
    if not claimed:
        return None
    return Run.objects.select_related(
        "conversation__tenant", "model", "agent_version__profile", "agent_version__fallback_model"
    ).get(pk=run_id)


def beat(run_ids: Collection[UUID]) -> set[UUID]:
    """Record that the runs' worker is alive; those of them whose interrupt was requested meanwhile."""
    Run.objects.filter(pk__in=run_ids, status=Run.Status.RUNNING).update(heartbeat_at=timezone.now())
    return set(Run.objects.filter(pk__in=run_ids, interrupt_requested_at__isnull=False).values_list("pk", flat=True))


class Heartbeat:
    """The process's runs beat from a thread of their own: one statement for all of them every RUN_HEARTBEAT_SECONDS.

    A beat says the worker is alive and its runs' loop answers (`runs.loop.responsive`); it does not wait behind a
    run's own database work (its events), which a busy machine can hold up for seconds. It is also how a run hears
    of an interrupt whose channel-layer message was lost, or came before the run's listener joined."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[UUID, Callable[[], object]] = {}
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def beating(self, run_id: UUID, on_interrupt: Callable[[], object]) -> Iterator[None]:
        """While the block runs, the run beats; `on_interrupt` (thread-safe) is called when an interrupt was asked."""
        with self._lock:
            self._runs[run_id] = on_interrupt
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._beat_forever, name="run-heartbeat", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._runs.pop(run_id, None)

    def _beat_forever(self) -> None:
        from runs.loop import responsive

        while True:
            time.sleep(settings.RUN_HEARTBEAT_SECONDS)
            with self._lock:
                runs = dict(self._runs)
            if not runs or not responsive():
                continue
            try:
                interrupted = beat(list(runs))
            except DatabaseError as exc:
                # Beats resume on a new connection (this one is given back: the pool drops it if the database did);
                # a run silent past RUN_STALE_AFTER_SECONDS is reaped.
                logger.warning("Heartbeat of %d run(s) failed (%s: %s)", len(runs), type(exc).__name__, exc)
                close_connection()
                continue
            for run_id in interrupted:
                with contextlib.suppress(Exception):  # its loop is closed: the run is ending by itself
                    runs[run_id]()


heartbeat = Heartbeat()
