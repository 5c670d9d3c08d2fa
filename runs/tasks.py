from celery import shared_task
from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown, worker_shutting_down
from django.conf import settings
from kombu import Exchange, Queue

from runs.dispatch import EXECUTE_RUN_TASK, dispatch_run, start_next, start_reaper_thread
from runs.executor import execute_run
from runs.lease import warm_queue
from runs.loop import run_on_runs_loop
from runs.prewarm import start_prewarming
from runs.sessions import close_warm_sessions
from runs.shutdown import begin_shutdown


@shared_task(name=EXECUTE_RUN_TASK, ignore_result=True)
def execute_run_task(run_id: str) -> None:
    run_on_runs_loop(execute_run(run_id, then=start_next, requeue=dispatch_run))


@celeryd_after_setup.connect
def consume_own_queue(sender: str, instance: object, **kwargs: object) -> None:
    """Each worker also takes runs from a queue of its own: those of the conversations it keeps warm."""
    # Declared as a client sending to it names it (Celery's queue of that name, on an exchange of that name).
    name = warm_queue()
    instance.app.amqp.queues.select_add(Queue(name, Exchange(name, "direct"), routing_key=name))  # type: ignore[attr-defined]


@worker_ready.connect
def reap_stale_runs_while_serving(**kwargs: object) -> None:
    """Every worker also fails runs whose worker died, so none stays running forever."""
    start_reaper_thread()
    start_prewarming()


@worker_shutting_down.connect
def hand_back_runs_on_shutdown(how: str = "Warm", **kwargs: object) -> None:
    """SIGTERM (Celery's warm shutdown, which waits for the tasks in flight): the runs here get
    RUN_SHUTDOWN_GRACE_SECONDS to end, then are handed back. A cold shutdown (SIGQUIT) waits for nothing: they are
    handed back at once, as far as the process lives long enough (else the reaper fails them, `worker_lost`)."""
    begin_shutdown(settings.RUN_SHUTDOWN_GRACE_SECONDS if how == "Warm" else 0.0)
    close_warm_sessions()  # those between runs now; one still running a run closes at its end


@worker_shutdown.connect
def wait_for_warm_sessions(**kwargs: object) -> None:
    """The CLIs of warm sessions are stopped cleanly before the process exits (they would die with it anyway)."""
    close_warm_sessions(wait_seconds=5.0)
