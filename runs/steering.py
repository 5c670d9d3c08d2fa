"""Messages steered into a running run (busy policy `steer`): the worker's side.

`runs.services.send_message` stores such a message as a Run waiting behind the running one, marked with a
`PendingSteer`, and signals the run's worker. The worker takes it in exactly once: in one transaction the
message's row goes and `message.steered` is recorded on the running run (`take_steers`); only then is the text
written to the CLI, the SDK's streaming-input way (`client.query` while the turn is being received). A message
the worker never takes (the run ended, or waited for a person, first) runs after it on its own
(`runs.dispatch.promote_next`): each is either, never both, never neither.

How the CLI takes a message in mid-turn (measured, Claude Code 2.1.327 in SDK mode): while a tool runs, the text
joins that tool's result as a reminder ("The user sent a new message while you were working: …") within the same
turn; while the model writes, the turn ends first and the text (several, joined by newlines) is a turn of its own,
with a ResultMessage of its own. Run with `--replay-user-messages`, the CLI echoes each message (with the uuid it
was sent with) when it takes it in; a run is over only at a ResultMessage after which no steered message is
still untaken (`Steering.finished`). A turn that suspends for a person (`deferred_tool_use`) would run the
untaken text next, as a turn the suspended session must not have: while one is untaken the run's gate keeps
waiting in-process instead (`Steering.untaken`), and none is taken while a person is asked.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from claude_agent_sdk import ClaudeSDKClient, UserMessage
from django.conf import settings
from django.db import DatabaseError, transaction

from agents.models import AgentVersion
from approvals.services import pending_for_run
from conversations.events import EventType, record_events
from conversations.models import Conversation, Run
from runs.models import PendingSteer

logger = logging.getLogger(__name__)


def steers(version: AgentVersion) -> bool:
    """Whether the runs of an agent version take steered messages (and their CLI echoes what it takes in)."""
    return version.busy_policy == AgentVersion.BusyPolicy.STEER and not version.is_chat


@dataclass(frozen=True)
class SteeredMessage:
    message_id: UUID  # the run that stored it, gone now
    text: str  # what the agent reads


def take_steers(run_id: UUID) -> list[SteeredMessage]:
    """The messages waiting to steer a running run, oldest first, taken: their rows deleted and `message.steered`
    recorded on the run, in one transaction under the conversation's row lock (as `send_message`, cancelling and
    `promote_next` take it), so a message is taken once, or falls back to the queue, never both. None while the run
    is not running or waits for a person (the text would reach a turn that may be suspended)."""
    if not PendingSteer.objects.filter(into_id=run_id).exists():  # the common case, without a lock
        return []
    with transaction.atomic():
        run = Run.objects.filter(pk=run_id).first()
        if run is None:
            return []
        Conversation.objects.select_for_update().filter(pk=run.conversation_id).first()
        run.refresh_from_db(fields=["status", "interrupt_requested_at"])
        if run.status != Run.Status.RUNNING or run.interrupt_requested_at is not None or pending_for_run(run_id):
            return []
        pending = list(PendingSteer.objects.filter(into_id=run_id).select_related("message").order_by("created_at"))
        if not pending:
            return []
        taken = []
        items = []
        for steer in pending:
            queued = steer.queued
            taken.append(SteeredMessage(steer.message_id, steer.message.input))
            items.append(
                (
                    EventType.MESSAGE_STEERED,
                    {
                        "message_id": str(steer.message_id),
                        "text": queued.get("text", steer.message.input),
                        "input": steer.message.input,
                        "user_id": steer.message.user_id,
                        "sent_at": steer.created_at.isoformat().replace("+00:00", "Z"),
                    },
                )
            )
        Run.objects.filter(pk__in=[steer.message_id for steer in pending]).delete()  # and their PendingSteer rows
        record_events(run, items)
    return taken


async def _user_message(message: SteeredMessage) -> AsyncIterator[dict[str, Any]]:
    # Verbatim (`client_composed`): no `@path` expansion and no slash command (a skill's runs on its own, queued).
    yield {
        "type": "user",
        "message": {"role": "user", "content": message.text},
        "parent_tool_use_id": None,
        "uuid": str(message.message_id),  # echoed when the CLI takes it in
        "client_composed": True,
    }


class Steering:
    """A running run's intake of steered messages, from its CLI's connection until its last turn is received.

    `signal()` when one may wait (a control message; it also looks by itself every RUN_HEARTBEAT_SECONDS, for a
    lost signal); `seen()` each message the CLI sends; `finished()` at each ResultMessage."""

    def __init__(
        self, run: Run, client: ClaudeSDKClient, *, flush: Callable[[], Awaitable[None]], stopped: asyncio.Event
    ) -> None:
        self.run = run
        self.client = client
        self.flush = flush  # the run's events so far go first: a steered message comes after what preceded it
        self.stopped = stopped
        self.lock = asyncio.Lock()  # a take and the decision that the run is over never overlap
        self.untaken: set[str] = set()  # written to the CLI, not yet echoed back by it
        self.open = True
        self.wake = asyncio.Event()
        self.wake.set()  # messages sent before the CLI was up (or before a suspension) are looked for at once
        self.task = asyncio.create_task(self._take_forever())

    def signal(self) -> None:
        self.wake.set()

    def seen(self, message: object) -> None:
        if isinstance(message, UserMessage) and message.uuid in self.untaken:
            self.untaken.discard(message.uuid)

    async def finished(self) -> bool:
        """At a ResultMessage: whether the run is over. Not while a steered message is untaken (the CLI answers it
        next, in a turn of its own); once over, nothing more is taken: what still waits runs after the run."""
        async with self.lock:
            if self.untaken and not self.stopped.is_set():
                return False
            self.open = False
            return True

    async def close(self) -> None:
        self.open = False
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    async def _take_forever(self) -> None:
        while self.open and not self.stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), settings.RUN_HEARTBEAT_SECONDS)
            self.wake.clear()
            async with self.lock:
                if not self.open or self.stopped.is_set():
                    return
                try:
                    await self._take()
                except DatabaseError as exc:  # the next look tries again; the messages wait meanwhile
                    logger.warning("Run %s: taking steered messages failed (%s)", self.run.pk, exc)
                except Exception:
                    # The CLI is gone (its run fails by itself): a message taken but not written is lost with it.
                    logger.exception("Run %s: writing a steered message to its CLI failed", self.run.pk)
                    return

    async def _take(self) -> None:
        if not await sync_to_async(PendingSteer.objects.filter(into_id=self.run.pk).exists)():
            return
        await self.flush()
        for message in await sync_to_async(take_steers)(self.run.pk):
            self.untaken.add(str(message.message_id))
            await self.client.query(_user_message(message))
            logger.info("Run %s: steered with message %s", self.run.pk, message.message_id)
