import asyncio

from celery import shared_task
from celery.signals import worker_ready

from conversations.executor import execute_run
from conversations.services import start_reaper_thread

_loop: asyncio.AbstractEventLoop | None = None


def run_loop() -> asyncio.AbstractEventLoop:
    """One event loop per worker process, reused by every run it executes.

    The channel layer keeps its Redis connections per event loop; a fresh loop per run would
    reconnect at every run's first event. Created lazily, so each prefork child gets its own.
    """
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop


@shared_task(name="conversations.execute_run", ignore_result=True)
def execute_run_task(run_id: str) -> None:
    run_loop().run_until_complete(execute_run(run_id))


@worker_ready.connect
def reap_stale_runs_while_serving(**kwargs: object) -> None:
    """Every worker also fails runs whose worker died, so none stays running forever."""
    start_reaper_thread()
