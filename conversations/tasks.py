import asyncio

from celery import shared_task
from celery.signals import worker_ready

from conversations.executor import execute_run
from conversations.services import start_reaper_thread


@shared_task(name="conversations.execute_run", ignore_result=True)
def execute_run_task(run_id: str) -> None:
    asyncio.run(execute_run(run_id))


@worker_ready.connect
def reap_stale_runs_while_serving(**kwargs: object) -> None:
    """Every worker also fails runs whose worker died, so none stays running forever."""
    start_reaper_thread()
