"""A worker's warm shutdown (SIGTERM: `docker stop`, a Kubernetes rolling update): its runs finish, or are handed back.

Celery's warm shutdown stops consuming at once and waits for the tasks in flight, for as long as they take; the
container runtime kills the worker `stop_grace_period` (Docker: 10 s by default) or `terminationGracePeriodSeconds`
(Kubernetes: 30 s) after the SIGTERM. So the worker gives its runs `RUN_SHUTDOWN_GRACE_SECONDS` to end on their own,
then hands each one still going back: its CLI is stopped at a clean point, its workspace and transcript stored, and
the run queued again for another worker, which continues it from the database session store (`run.handed_back`,
then `run.resumed`). A SIGKILL skips all of this: the reaper fails the run once (`worker_lost`), as before.

Runs register here for as long as they execute; the hand-back is their own (`runs.executor`), called on their own
event loop, since each run of a worker has a thread and loop of its own.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from uuid import UUID

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_hand_backs: dict[UUID, Callable[[], object]] = {}
_draining = threading.Event()  # set at the SIGTERM: no run starts here any more
_handing_back = threading.Event()  # set once the grace is over: every run still here is handed back


def draining() -> bool:
    """True once the worker's shutdown began: a run given to it now goes back to the queue instead."""
    return _draining.is_set()


@contextlib.contextmanager
def handing_back_on_shutdown(run_id: UUID, hand_back: Callable[[], object]) -> Iterator[None]:
    """While the block runs, `hand_back` (thread-safe, returns at once) is called when the worker's grace ends;
    at once when it has already ended."""
    with _lock:
        _hand_backs[run_id] = hand_back
        late = _handing_back.is_set()
    if late:
        hand_back()
    try:
        yield
    finally:
        with _lock:
            _hand_backs.pop(run_id, None)


def begin_shutdown(grace_seconds: float) -> None:
    """The worker stops taking runs now, and hands back those still running after `grace_seconds`. Returns at once
    (it is called from a signal handler); idempotent: a second SIGTERM does not restart the grace."""
    if _draining.is_set():
        return
    _draining.set()
    with _lock:
        running = len(_hand_backs)
    logger.warning(
        "Worker shutting down: %d run(s) in progress get %.1f s to end, then are handed back", running, grace_seconds
    )
    threading.Thread(target=_hand_back_after, args=(grace_seconds,), name="run-shutdown", daemon=True).start()


def _hand_back_after(grace_seconds: float) -> None:
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        with _lock:
            if not _hand_backs:
                return  # every run ended within the grace (nothing new starts here)
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    hand_back_all()


def hand_back_all() -> int:
    """Hand back every run still executing here (and any that registers later); how many were asked to."""
    with _lock:
        _handing_back.set()
        hand_backs = list(_hand_backs.items())
    for run_id, hand_back in hand_backs:
        logger.warning("Handing run %s back: the worker is shutting down", run_id)
        try:
            hand_back()
        except Exception:  # its loop is closed: the run is ending by itself
            logger.exception("Handing run %s back failed", run_id)
    return len(hand_backs)


def reset() -> None:
    """Forget a shutdown (tests that run several in one process)."""
    with _lock:
        _draining.clear()
        _handing_back.clear()
        _hand_backs.clear()
