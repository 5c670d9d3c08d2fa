"""Agent sessions: a run's sandboxed CLI with what serves it, kept warm between a conversation's runs.

Every agent run has a session: the run's place (its private directory and cgroup), the workspace, skills, MCP
servers, model gateway, egress proxy and the connected CLI in its sandbox. A cold run opens one (launch, CLI
start, resume from the database session store: ~0.5 s before the first token); when the run completes, its worker
keeps the session warm (`WarmSessions`) for WARM_SESSION_IDLE_SECONDS, and the conversation's next run, routed to
that worker's own queue, is sent into the live CLI: a warm run. The client sees the same events either way.

A warm session serves one run at a time. Between runs nothing of it acts: its gateway refuses every call (the
CLI's token is honoured only while a run is served, each run's calls budgeted and metered as that run's), its
egress proxy every connection, and the agent's commands still running are killed, as a cold run's would be with
its sandbox. It closes when idle, when the worker holds too many (WARM_SESSIONS_MAX) or too much memory
(WARM_SESSIONS_MEMORY_MB; least recently used first), when its worker shuts down, when its CLI exited, and when
anything it was started with differs from what the next run would start with (`session_terms`: agent profile
version, model, skills, MCP servers and their secrets, egress policy and secrets, budget terms). A run that goes
elsewhere meanwhile (the worker was busy, gone or full) makes the session stale: `Conversation.warm_session` names
the one session that may serve the conversation's next run.
"""

import asyncio
import collections
import contextlib
import contextvars
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

from claude_agent_sdk import ClaudeSDKClient
from claude_agent_sdk.types import (
    HookContext,
    HookEvent,
    HookInput,
    HookMatcher,
    PermissionResult,
    SyncHookJSONOutput,
    ToolPermissionContext,
)
from django.conf import settings
from django.db import connection
from django.utils import timezone

from conversations.events import EventItem, EventType
from conversations.models import Conversation, Run
from runs import lease
from runs.gate import RunGate
from runs.prepare import RunSetup

logger = logging.getLogger(__name__)

T = TypeVar("T")


class AgentSession:
    """One sandboxed CLI and what serves it, for one run or, kept warm, for a conversation's runs one at a time.

    The CLI's callbacks (permission hook and `can_use_tool`, stderr) and the events of the session's own parts (its
    MCP servers' and egress proxy's) go to the run it serves now (`serve`)."""

    def __init__(self, conversation_id: UUID, fingerprint: str) -> None:
        self.id = uuid.uuid4().hex
        self.conversation_id = conversation_id
        self.fingerprint = fingerprint
        self.resources = contextlib.AsyncExitStack()
        self.setup: RunSetup | None = None
        self.client: ClaudeSDKClient | None = None
        self.report: dict[str, Any] | None = None  # the sandbox's report of itself
        self.runs = 0  # how many runs it has served
        self.last_used = time.monotonic()
        self.closed = False
        self.marked = False  # its conversation was told it is warm (`Conversation.warm_session`)
        self.prewarmed = False  # started ahead of its conversation's first message (`runs.prewarm`)
        self.version_id: int | None = None  # a pre-warmed one's agent version
        self._gate: RunGate | None = None
        self._emit: Callable[[EventItem], None] | None = None
        self._stderr: Callable[[str], None] | None = None

    # The current run's ears.

    def emit(self, item: EventItem) -> None:
        if self._emit is not None:
            self._emit(item)

    def stderr(self, line: str) -> None:
        if self._stderr is not None:
            self._stderr(line)

    def hooks(self) -> dict[HookEvent, list[HookMatcher]]:
        """One PreToolUse hook for every call, the served run's gate's; failing closed (see `RunGate.hooks`)."""
        return {"PreToolUse": [HookMatcher(matcher=None, hooks=[self._pre_tool_use], on_failure="block")]}

    async def _pre_tool_use(
        self, hook_input: HookInput, tool_use_id: str | None, context: HookContext
    ) -> SyncHookJSONOutput:
        return await self._current_gate().pre_tool_use(hook_input, tool_use_id, context)

    async def can_use_tool(
        self, name: str, tool_input: dict[str, Any], context: ToolPermissionContext
    ) -> PermissionResult:
        return await self._current_gate().can_use_tool(name, tool_input, context)

    def _current_gate(self) -> RunGate:
        if self._gate is None:  # the CLI acts between runs: nothing may
            raise RuntimeError("The session serves no run now.")
        return self._gate

    @property
    def pid(self) -> int | None:
        """The host pid of the process the SDK started for the CLI (its sandbox's launcher), while it lives."""
        process = getattr(getattr(self.client, "_transport", None), "_process", None)
        return getattr(process, "pid", None)

    async def spawned(self, connecting: "asyncio.Task[None]") -> None:
        """Until the SDK has its CLI's process (its sandbox may have written its report first, on a busy loop)."""
        while self.pid is None and not connecting.done():
            await asyncio.sleep(0.005)

    def alive(self) -> bool:
        process = getattr(getattr(self.client, "_transport", None), "_process", None)
        return not self.closed and process is not None and process.returncode is None

    async def serve(
        self, run: Run, *, gate: RunGate, emit: Callable[[EventItem], None], stderr: Callable[[str], None]
    ) -> None:
        """From now on the session acts for `run`. Its parts made for the first run are already that run's."""
        self._gate, self._emit, self._stderr = gate, emit, stderr
        self.runs += 1
        self.last_used = time.monotonic()

    async def serve_next(
        self,
        run: Run,
        setup: RunSetup,
        *,
        on_refusal: Callable[..., None],
        on_usage: Callable[..., None],
        models: Any,
    ) -> None:
        """A warm run: the gateway serves `run` (a new budget and meter), the egress proxy counts its connections
        from zero, the workspace records its files' versions as `run`'s after taking in what changed meanwhile in
        storage (a file uploaded between runs)."""
        self.setup = setup
        await setup.gateway.serve(run, on_refusal=on_refusal, on_usage=on_usage, models=models)
        setup.egress.serve(lambda data: self.emit((EventType.EGRESS, data)))
        setup.workspace.run = run
        await setup.workspace.sync_in()

    def release(self) -> None:
        """The served run has ended: nothing of the session acts until the next one (`serve`)."""
        self._gate = self._emit = self._stderr = None
        self.last_used = time.monotonic()
        if self.setup is not None:
            self.setup.gateway.revoke()
            self.setup.egress.pause()
            if self.setup.place.cgroup is not None:
                self.setup.place.cgroup.kill_tools()

    def summary(self, warm: bool) -> dict[str, Any]:
        """What `run.started` says of the session: warm or started for the run, its CLI's pid, the runs it served."""
        return {"id": self.id, "warm": warm, "prewarmed": self.prewarmed, "cli_pid": self.pid, "runs": self.runs}

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._gate = self._emit = self._stderr = None
        try:
            await self.resources.aclose()
        except Exception:
            logger.exception("Closing the session of conversation %s failed", self.conversation_id)


def memory_bytes(root_pid: int | None) -> int:
    """The proportional set size (shared pages split among their sharers) of `root_pid` and its descendants."""
    if root_pid is None:
        return 0
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(entry.path, "stat").read_text()
            children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


class WarmSessions:
    """A worker's warm sessions, least recently used first. Used on the runs' loop only (`runs.loop`)."""

    def __init__(self) -> None:
        self._sessions: collections.OrderedDict[UUID, AgentSession] = collections.OrderedDict()
        self._idle: dict[str, asyncio.TimerHandle] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def take(self, conversation: Conversation, fingerprint: str) -> AgentSession | None:
        """The conversation's warm session, now the caller's, when it may serve the conversation's next run;
        else None (one that may not is closed)."""
        session = self._sessions.pop(conversation.pk, None)
        if session is None:
            return None
        self._cancel_idle(session)
        why = None
        if conversation.warm_session != session.id:
            why = "a run of the conversation went elsewhere since"
        elif session.fingerprint != fingerprint:
            why = "what it was started with changed (agent profile, model, skills, MCP servers, secrets or budgets)"
        elif not session.alive():
            why = "its CLI exited"
        if why is None:
            return session
        logger.info("Warm session of conversation %s closes: %s", conversation.pk, why)
        self._close_soon(session)
        return None

    async def keep(self, session: AgentSession) -> bool:
        """Keep `session` warm for its conversation's next run; False (and it is closed) when it may not be kept."""
        if settings.WARM_SESSIONS_MAX <= 0 or not session.alive():
            await self.forget(session)
            return False
        previous = self._sessions.pop(session.conversation_id, None)
        if previous is not None and previous is not session:
            self._close_soon(previous)
        self._sessions[session.conversation_id] = session
        while len(self._sessions) > settings.WARM_SESSIONS_MAX:
            self._close_soon(self._sessions.popitem(last=False)[1])
        until = timezone.now() + timedelta(seconds=settings.WARM_SESSION_IDLE_SECONDS)
        await on_own_connection(mark_warm, session.conversation_id, session.id, until)
        session.marked = True
        if session.prewarmed and not session.runs:
            # Waiting for its first message: renewed by its pre-warmer (runs.prewarm), never idle.
            self._background(self._fit_memory())
            return True
        loop = asyncio.get_running_loop()
        self._idle[session.id] = loop.call_later(
            settings.WARM_SESSION_IDLE_SECONDS, self._expire, session, context=contextvars.Context()
        )
        # Measured beside the run's end, not before it (reading every session's processes takes some milliseconds).
        self._background(self._fit_memory())
        return True

    async def forget(self, session: AgentSession) -> None:
        """Close a session that is not kept, telling its conversation no session is warm for it any more."""
        await session.close()
        if session.marked:
            await on_own_connection(mark_cold, session.conversation_id, session.id)

    def prewarmed(self) -> dict[UUID, AgentSession]:
        """The pre-warmed sessions waiting for their conversation's first message, by conversation."""
        return {key: session for key, session in self._sessions.items() if session.prewarmed and not session.runs}

    async def close(self, conversation_id: UUID) -> None:
        session = self._sessions.pop(conversation_id, None)
        if session is not None:
            self._cancel_idle(session)
            await self.forget(session)

    async def close_all(self) -> int:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        for session in sessions:
            self._cancel_idle(session)
        await asyncio.gather(*(self.forget(session) for session in sessions), return_exceptions=True)
        return len(sessions)

    async def memory(self) -> dict[str, int]:
        """Each warm session's memory (PSS of its processes), by session id."""
        pids = {session.id: session.pid for session in self._sessions.values()}
        return await asyncio.to_thread(lambda: {key: memory_bytes(pid) for key, pid in pids.items()})

    async def _fit_memory(self) -> None:
        limit = settings.WARM_SESSIONS_MEMORY_MB * 1024 * 1024
        used = await self.memory()
        while self._sessions and sum(used.values()) > limit:
            _, oldest = self._sessions.popitem(last=False)
            logger.info(
                "Warm session of conversation %s closes: the worker's warm sessions are over %d MB",
                oldest.conversation_id,
                settings.WARM_SESSIONS_MEMORY_MB,
            )
            used.pop(oldest.id, None)
            self._close_soon(oldest)

    def _expire(self, session: AgentSession) -> None:
        if self._sessions.get(session.conversation_id) is session:
            del self._sessions[session.conversation_id]
            self._close_soon(session)

    def _cancel_idle(self, session: AgentSession) -> None:
        if (handle := self._idle.pop(session.id, None)) is not None:
            handle.cancel()

    def _close_soon(self, session: AgentSession) -> None:
        self._cancel_idle(session)
        self._background(self.forget(session))

    @staticmethod
    def _background(work: Coroutine[Any, Any, None]) -> None:
        # Not in the context of the run that asked (its database thread ends with it): in a context of its own.
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        _background.add(task)
        task.add_done_callback(_background.discard)


_background: set["asyncio.Task[None]"] = set()  # held until done (the loop keeps weak references)
warm_sessions = WarmSessions()


async def on_own_connection(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a thread of the runs' pool, on a database connection given back at once: the sessions'
    bookkeeping outlives the runs whose threads and connections it would otherwise borrow."""

    def call() -> T:
        try:
            return function(*args)
        finally:
            connection.close()

    return await asyncio.to_thread(call)


def mark_warm(conversation_id: UUID, session_id: str, until: Any) -> None:
    Conversation.all_objects.filter(pk=conversation_id).update(
        warm_worker=lease.warm_worker(), warm_session=session_id, warm_until=until
    )


def mark_cold(conversation_id: UUID, session_id: str | None = None) -> None:
    """No session is warm for the conversation any more (`session_id`'s, when given: not a later one's). A
    conversation made ahead for the session (`runs.prewarm`) and not handed out goes with it."""
    conversations = Conversation.all_objects.filter(pk=conversation_id)
    if session_id is not None:
        conversations = conversations.filter(warm_session=session_id)
    conversations.filter(reserved=True).delete()
    conversations.update(warm_worker="", warm_session="", warm_until=None)


def close_warm_sessions(wait_seconds: float = 0.0) -> None:
    """Close this process's warm sessions (its worker shuts down); waits up to `wait_seconds` for them, and for
    those an earlier call is still closing, to be closed."""
    from runs.loop import submit

    global _closing_all
    with _closing_lock:
        if _closing_all is None or _closing_all.done():
            _closing_all = submit(warm_sessions.close_all())
        closing = _closing_all
    if wait_seconds:
        with contextlib.suppress(Exception):
            closing.result(wait_seconds)


_closing_lock = threading.Lock()
_closing_all: "Future[int] | None" = None
