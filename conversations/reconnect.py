"""Database calls from a run's worker that outlive a dropped connection (a failover, a restart,
`pg_terminate_backend`). Django reconnects only between requests; a run lasts minutes."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

T = TypeVar("T")


def close_connection() -> None:
    """Give back this thread's database connection (the pool discards it if the database dropped it)."""
    with contextlib.suppress(DatabaseError):
        connection.close()


async def call_database(what: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call `function` on this run's database thread; when the database drops the connection (a failover,
    `pg_terminate_backend`, a restart) retry on a new one, with backoff, for RUN_DATABASE_RETRY_SECONDS.

    Only for functions that are safe to call again after a failure: read-only, or one transaction
    whose effect the function itself checks for.
    """
    deadline = time.monotonic() + settings.RUN_DATABASE_RETRY_SECONDS
    delay = 0.05
    while True:
        try:
            return await sync_to_async(function)(*args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("%s failed (%s: %s); retrying on a new database connection", what, type(exc).__name__, exc)
            await sync_to_async(close_connection)()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
