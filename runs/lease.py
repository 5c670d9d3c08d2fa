"""A worker's hold on a run: claiming it from the queue, and proving it is still alive."""

import os
import socket
from uuid import UUID

from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from conversations.models import Run

WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"


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


def beat(run_id: UUID) -> bool:
    """Record that the run's worker is alive; True when an interrupt was requested meanwhile."""
    Run.objects.filter(pk=run_id, status=Run.Status.RUNNING).update(heartbeat_at=timezone.now())
    return Run.objects.filter(pk=run_id, interrupt_requested_at__isnull=False).exists()
