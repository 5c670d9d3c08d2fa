import asyncio
import threading

from celery import shared_task
from celery.signals import worker_ready, worker_shutting_down
from django.conf import settings

from runs.dispatch import EXECUTE_RUN_TASK, dispatch_run, start_next, start_reaper_thread
from runs.executor import execute_run
from runs.shutdown import begin_shutdown

_loops = threading.local()


def run_loop() -> asyncio.AbstractEventLoop:
    """One event loop per worker thread, reused by every run that thread executes.

    The channel layer keeps its Redis connections per event loop; a fresh loop per run would
    reconnect at every run's first event. Runs on other threads of the worker have loops of their own.
    """
    loop: asyncio.AbstractEventLoop | None = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()
    return loop


@shared_task(name=EXECUTE_RUN_TASK, ignore_result=True)
def execute_run_task(run_id: str) -> None:
    run_loop().run_until_complete(execute_run(run_id, then=start_next, requeue=dispatch_run))


@worker_ready.connect
def reap_stale_runs_while_serving(**kwargs: object) -> None:
    """Every worker also fails runs whose worker died, so none stays running forever."""
    start_reaper_thread()


@worker_shutting_down.connect
def hand_back_runs_on_shutdown(how: str = "Warm", **kwargs: object) -> None:
    """SIGTERM (Celery's warm shutdown, which waits for the tasks in flight): the runs here get
    RUN_SHUTDOWN_GRACE_SECONDS to end, then are handed back. A cold shutdown (SIGQUIT) waits for nothing: they are
    handed back at once, as far as the process lives long enough (else the reaper fails them, `worker_lost`)."""
    begin_shutdown(settings.RUN_SHUTDOWN_GRACE_SECONDS if how == "Warm" else 0.0)
