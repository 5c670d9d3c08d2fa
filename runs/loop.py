"""The event loop every run of a process executes on.

A run's CLI is driven by a `ClaudeSDKClient`, which belongs to the event loop that connected it. A warm session
(`runs.sessions`) keeps its CLI connected after a run for the conversation's next one, which Celery may hand to
any thread of the worker: so every run of the process executes on this one loop, in a thread of its own, and the
thread that took the task only waits for it. The channel layer keeps one set of Redis connections here too.
"""

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)

EXECUTOR_THREADS = 64
LAG_PROBE_SECONDS, LAG_WARNING_SECONDS = 0.5, 0.5
UNRESPONSIVE_SECONDS = 5.0

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_last_tick: float | None = None


def runs_loop() -> asyncio.AbstractEventLoop:
    """The process's runs' loop, started on first use."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            # The runs' blocking work (workspace scans and transfers, skills' placement) shares this pool; a loop per
            # thread, as asyncio's default, would have had one each.
            loop.set_default_executor(ThreadPoolExecutor(max_workers=EXECUTOR_THREADS, thread_name_prefix="runs-io"))
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=serve, name="runs-loop", daemon=True).start()
            ready.wait()
            asyncio.run_coroutine_threadsafe(_watch_lag(), loop)
            _loop = loop
        return _loop


async def _watch_lag() -> None:
    """Say when the loop was held up: every run of the process waits while anything blocks it."""
    global _last_tick
    while True:
        began = _last_tick = time.monotonic()
        await asyncio.sleep(LAG_PROBE_SECONDS)
        late = time.monotonic() - began - LAG_PROBE_SECONDS
        if late > LAG_WARNING_SECONDS:
            logger.warning("The runs' event loop was held up for %.2f s", late)


def responsive() -> bool:
    """Whether the runs' loop (if this process has one) turned within the last few seconds: a loop stuck for good
    lets its runs' heartbeats stop, and the reaper end them."""
    return _last_tick is None or time.monotonic() - _last_tick < UNRESPONSIVE_SECONDS


def submit(coroutine: Coroutine[Any, Any, T]) -> "Future[T]":
    """Run `coroutine` on the runs' loop, in a context of its own: not the caller's (a web request's context names
    its own executors, which are gone by the time the run does its database work)."""
    loop = runs_loop()
    done: Future[T] = Future()

    def copy(task: "asyncio.Task[T]") -> None:
        if task.cancelled():
            done.cancel()
        elif (exception := task.exception()) is not None:
            done.set_exception(exception)
        else:
            done.set_result(task.result())

    def start() -> None:
        loop.create_task(coroutine).add_done_callback(copy)

    loop.call_soon_threadsafe(start, context=contextvars.Context())
    return done


def run_on_runs_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on the runs' loop and wait for its result in the calling thread (not the loop's own)."""
    return submit(coroutine).result()
