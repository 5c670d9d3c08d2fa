"""Executing one run: its agent's turn driven as the agent's kind says, turned into stored, broadcast events.

An `agent` runs the Agent SDK driving the CLI in a sandbox; a `chat` (`runs.chat`) makes one streamed model
call. Both share the rest: `run.started`, the event writer, the interrupt and heartbeat watch, the run's
time limit, its gateway's usage events and its one terminal event.
"""

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import jsonschema
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import InMemoryChannelLayer, channel_layers, get_channel_layer
from claude_agent_sdk import ClaudeSDKClient, ClaudeSDKError, ResultMessage
from django.conf import settings
from django.db import DatabaseError

from agents.services import RunAgent, run_agent
from approvals.services import cancel_pending
from conversations import events, realtime
from conversations.events import EventType
from conversations.models import Run
from conversations.reconnect import call_database, close_connection
from gateway.allowlist import RuleError
from gateway.calls import models_by_id
from gateway.server import ModelGateway
from runs import lease
from runs.chat import ChatAnswer, ChatExecution, ModelFailed, chat_history, chat_request
from runs.context import read_context_usage, report_context_usage
from runs.gate import RunGate
from runs.options import agent_options
from runs.prepare import RunSetup, prepare_run, session_terms
from runs.session_store import checkpoint
from runs.sessions import AgentSession, warm_sessions
from runs.shutdown import draining, handing_back_on_shutdown
from runs.steering import Steering, steers
from runs.titles import title_conversation, title_model
from runs.translate import EventTranslator
from runs.waiting import (
    hand_back_run,
    handed_back_data,
    resumed_data,
    suspend_run,
    suspended_request,
    waiting_data,
)
from runs.writer import EventWriter
from sandbox.launcher import SANDBOX_CONFIG_DIR, Launch, SandboxUnavailable
from sandbox.limits import MB, directory_bytes
from sandbox.report import missing_layers_message, wait_for_report
from skills.placement import SkillsUnavailable
from skills.services import SLASH_COMMAND, RunSkills
from usage.services import run_totals
from workspaces.services import RunWorkspace

logger = logging.getLogger(__name__)

Outcome = tuple[str, dict[str, Any] | None, dict[str, Any] | None]

# What the end user reads when the model (or the way to it) failed; the CLI's own words, which name
# its gateway's address and say "Failed to authenticate" for any 403, go to the log.
MODEL_UNAVAILABLE = "The model is unavailable right now; try again."
AGENT_FAILED = "The agent stopped unexpectedly; try again."
MAX_TURNS = "The agent reached its limit of turns ({limit}) before it finished."
RESUME_FAILED = "The run could not continue where it waited: its session was not stored; send the message again."
# The run's status while its worker hands it back (`runs.shutdown`): queued again, not ended.
HANDED_BACK = "handed_back"
# What a run handed back mid-turn is told when its next leg resumes the session: the words the CLI itself uses
# when a resumed session continues a deferred turn (the model continues the interrupted turn, not a new one).
CONTINUE_TURN = "Continue from where you left off."


class RunExecution:
    """One claimed run, from its `run.started` to its terminal event."""

    def __init__(self, run: Run, then: Callable[[UUID], object] | None = None) -> None:
        self.run = run
        self.then = then  # called with the conversation's id once the run has ended: `runs.dispatch.start_next`
        self.conversation = run.conversation
        self.model = run.model
        self.translator = EventTranslator()
        self.setup: RunSetup | None = None  # an agent's (a chat has no sandbox, workspace or CLI)
        self.gateway: ModelGateway | None = None
        self.saver: asyncio.Task[None] | None = None
        self.titling: asyncio.Task[None] | None = None
        self.context_reading: asyncio.Task[dict[str, Any] | None] | None = None
        self.saving_stops = asyncio.Event()
        self.interrupted = asyncio.Event()
        # The CLI's last words, logged when it fails (never put in events: they are not for users).
        self.cli_stderr: collections.deque[str] = collections.deque(maxlen=40)
        # Set when the platform itself stops the run (a limit was hit): it then ends run.failed.
        self.stop_error: dict[str, Any] | None = None
        self.writer = EventWriter(run)
        self.gate: RunGate | None = None  # an agent's: its tool calls' rules, and the people they ask
        self.steering: Steering | None = None  # an agent's under busy policy `steer`, once its CLI is up
        # A run that was suspended waiting for a person continues its session: no new message, no run.started.
        self.resuming = run.suspensions > 0
        self.requeued = False  # suspended, and decided meanwhile: the run's next leg may start here at once
        self.handing_back = False  # its worker shuts down: stopped at a clean point and queued again (`hand_back`)
        self.handed_back = False  # queued again for another worker: its task is dispatched by the caller
        self.client: ClaudeSDKClient | None = None  # an agent's, once its CLI is launched
        self.session: AgentSession | None = None  # an agent's: its CLI and what serves it, maybe kept warm after
        # What the run alone holds, released after its terminal event. Its session's CLI and gateway are closed only
        # after the terminal event too: the CLI takes ~60 ms to exit, which nobody waiting for the answer should pay.
        self.resources = contextlib.AsyncExitStack()
        # What shielded the agent, for every event that shows the run: bubblewrap, unsandboxed or none (a chat).
        self.sandbox_mode = "none"

    async def execute(self) -> None:
        loop = asyncio.get_running_loop()
        # The run beats from its claim to its end: its ending too (the last usage, the workspace's sync-out), which a
        # busy machine can stretch past RUN_STALE_AFTER_SECONDS.
        with lease.heartbeat.beating(self.run.pk, lambda: loop.call_soon_threadsafe(self.interrupted.set)):
            await self._execute(loop)

    async def _execute(self, loop: asyncio.AbstractEventLoop) -> None:
        status: str = Run.Status.FAILED
        result: dict[str, Any] | None = None
        error: dict[str, Any] | None = {"reason": "internal_error", "message": "The run ended unexpectedly."}
        try:
            with (
                realtime.control_callback(
                    self.run.pk, lambda message: loop.call_soon_threadsafe(self._control, message)
                ),
                handing_back_on_shutdown(self.run.pk, lambda: loop.call_soon_threadsafe(self._hand_back_now)),
            ):
                async with self._watch_for_interrupts(), asyncio.timeout(settings.RUN_MAX_SECONDS):
                    status, result, error = await self._drive()
        except TimeoutError:
            error = {"reason": "timeout", "message": f"The run exceeded {settings.RUN_MAX_SECONDS} seconds."}
        except ClaudeSDKError as exc:
            # The CLI's own words, for operators (it only ever holds the run's token, never a real credential).
            logger.warning("Run %s: the agent failed: %s\n%s", self.run.pk, exc, "\n".join(self.cli_stderr))
            error = {"reason": "agent_error", "message": AGENT_FAILED}
        except Exception:
            # The exception's name and text are for operators (the log); an end user reads what to do.
            logger.exception("Run %s failed", self.run.pk)
            error = {"reason": "internal_error", "message": "The run failed on our side; try again."}
        finally:
            await self._sync_workspace_out()
            await self._end_titling()
            await self._report_context_usage()
            await self._report_remaining_usage()
            await self.writer.close()
            if status in (Run.Status.WAITING, HANDED_BACK):
                # Its next leg may start at once, on this machine too, in the run's place: this leg's session (its
                # CLI, place and cgroup) is gone first, its transcript stored where that leg resumes it.
                await self._flush_transcript()
                await self._close_session()
            if status == Run.Status.WAITING:
                await self._suspend(result or {})
            elif status == HANDED_BACK:
                if not await self._hand_back(result or {}):  # its user interrupted it meanwhile: it ends here
                    await self._finish(Run.Status.INTERRUPTED, {"reason": "interrupted"}, None)
            else:
                if status == Run.Status.COMPLETED:
                    # Kept before the terminal event: a next message sent on it finds the session warm.
                    await self._keep_session()
                await self._finish(status, result, error)
            await self._close_session()  # one not kept: after the terminal event (a CLI takes ~60 ms to exit)
            await self.resources.aclose()

    def _hand_back_now(self) -> None:
        """Its worker shuts down and the grace is over: a call waiting for a person suspends now (the way it would
        after APPROVAL_WAIT_SECONDS: a clean point that needs no interrupt); otherwise the turn is interrupted,
        and the run handed back once its CLI has stopped (`_hand_back`)."""
        if self.gate is not None and self.gate.defer_now():
            return
        self.handing_back = True
        self.interrupted.set()

    async def _hand_back(self, handed_back: dict[str, Any]) -> bool:
        """Queue the run again, for another worker to continue from its stored session; False when it must end here
        instead (its user interrupted it meanwhile: `_finish` says so)."""
        try:
            outcome = await call_database(
                f"Handing run {self.run.pk} back",
                hand_back_run,
                self.run.pk,
                handed_back,
                session_id=self.translator.session_id or "",
            )
        except Exception:
            # Still running in the database: the reaper fails it (worker_lost) once the database is back.
            logger.exception("Run %s: storing its hand-back failed", self.run.pk)
            return True
        if outcome == "interrupt":
            return False
        self.handed_back = outcome == "queued"
        return True

    async def _flush_transcript(self) -> None:
        """What the SDK holds of the session's transcript is stored now: the next leg, on another worker, resumes
        from the database (the SDK, 0.2.x, offers no public flush; its batcher's own is used)."""
        batcher = transcript_mirror(self.client)
        if batcher is None:
            return
        try:
            await batcher.flush()
        except Exception:
            logger.exception("Run %s: storing its transcript failed; its next leg resumes what was stored", self.run.pk)

    def _control(self, message: Mapping[str, Any]) -> None:
        """A control message for this run: from this process directly, or from the run's channel-layer group."""
        kind = message.get("type")
        if kind == realtime.INTERRUPT_MESSAGE_TYPE:
            self.interrupted.set()
        elif kind == realtime.DECIDED_MESSAGE_TYPE and self.gate is not None:
            self.gate.signal_decided()
        elif kind == realtime.STEER_MESSAGE_TYPE and self.steering is not None:
            self.steering.signal()

    async def _suspend(self, waiting: dict[str, Any]) -> None:
        """The run waits for a person without its worker: stored as waiting (or queued again, when the decision
        came meanwhile: `requeued`, for this worker to resume it at once), its session where the next leg resumes."""
        try:
            self.requeued = await call_database(
                f"Suspending run {self.run.pk}",
                suspend_run,
                self.run.pk,
                waiting,
                session_id=self.translator.session_id or "",
            )
        except Exception:
            # Still running in the database: the reaper fails it (worker_lost) once the database is back.
            logger.exception("Run %s: storing its suspension failed", self.run.pk)

    async def _report_context_usage(self) -> None:
        if self.context_reading is not None:
            await report_context_usage(await self.context_reading, self.run, self.writer.emit)

    async def _sync_workspace_out(self) -> None:
        """Save the workspace once more, whatever the ending: its `file.changed` events precede the terminal one."""
        if self.setup is None:
            return
        if self.saver is not None:
            # No periodic save may come after this one, and none is cut short: a save cancelled
            # between recording its versions and emitting them would lose their `file.changed`.
            self.saving_stops.set()
            await asyncio.gather(self.saver, return_exceptions=True)
        try:
            for kind, data in await self.setup.workspace.sync_out():
                self.writer.emit(kind, data)
        except Exception:
            # The periodic saves so far stand; the next run on this conversation syncs from storage.
            logger.exception("Run %s: saving its workspace failed", self.run.pk)

    async def _save_workspace_periodically(self, workspace: RunWorkspace) -> None:
        """Bounds what a killed worker loses: at most the last WORKSPACE_SYNC_SECONDS of writes."""
        while not self.saving_stops.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.saving_stops.wait(), settings.WORKSPACE_SYNC_SECONDS)
                return
            try:
                for kind, data in await workspace.sync_out():
                    self.writer.emit(kind, data)
            except Exception:
                logger.exception("Run %s: saving its workspace failed; trying again", self.run.pk)

    async def _end_titling(self) -> None:
        """A title still being asked for (the run ended at once) gets as long as an answer still streaming, no longer."""
        if self.titling is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.titling, settings.RUN_INTERRUPT_GRACE_SECONDS)

    async def _report_remaining_usage(self) -> None:
        """The `usage` events of calls the stream did not show (side calls too), so the run's events add up to its bill.

        An answer may still be streaming (an interrupt, a timeout): it is waited for, briefly.
        """
        if self.gateway is not None:
            await self.gateway.settled(settings.RUN_INTERRUPT_GRACE_SECONDS)
        for kind, data in self.translator.unreported_usage():
            self.writer.emit(kind, data)

    async def _finish(self, status: str, result: dict[str, Any] | None, error: dict[str, Any] | None) -> None:
        """Write the run's one terminal event, with its totals from our own metering (not the CLI's estimate)."""
        try:
            usage = await call_database(f"Totalling run {self.run.pk}", run_totals, self.run.pk)
            await call_database(
                f"Finishing run {self.run.pk}",
                events.finish_run,
                self.run.pk,
                status,
                result={**(result or {}), "usage": usage, "sandbox": self.sandbox_mode, **self._egress_totals()},
                error=error,
                session_id=self.translator.session_id,
            )
            if self.gate is not None and self.gate.asked:
                await call_database(f"Closing run {self.run.pk}'s requests", cancel_pending, self.run.pk)
        except Exception:
            # The database stayed away: the reaper ends the run (worker_lost) once it is back.
            logger.exception("Run %s: storing its end (%s) failed", self.run.pk, status)
            return
        if self.then is None:
            return
        try:
            await call_database(f"Starting what waited behind run {self.run.pk}", self.then, self.conversation.pk)
        except Exception:
            # The reaper starts it (a conversation with messages waiting and no active run) once the database is back.
            logger.exception("Run %s: starting the conversation's next message failed", self.run.pk)

    def _egress_totals(self) -> dict[str, Any]:
        """What the run's sandbox moved through its egress proxy (runs that had one)."""
        return {"egress": self.setup.egress.traffic.summary()} if self.setup is not None else {}

    @contextlib.asynccontextmanager
    async def _watch_for_interrupts(self) -> AsyncIterator[None]:
        """The run's control messages from the channel layer (an interrupt, a decision, a steered message). In-memory
        layers only work on the web server's loop: runs there get them by callback (`realtime.control_callback`).
        The heartbeat (`lease.heartbeat`) also hears of an interrupt whose message was lost."""
        if isinstance(get_channel_layer(), InMemoryChannelLayer):
            yield
            return
        listening = asyncio.create_task(self._listen_for_control())
        try:
            yield
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)

    async def _watch_workspace(self, workspace: Path) -> None:
        """Stop the run when its workspace grows past the limit (a disk filler in a tool)."""
        limit = settings.SANDBOX_WORKSPACE_MB * MB
        start = await asyncio.to_thread(directory_bytes, workspace)
        while True:
            began = time.monotonic()
            used = await asyncio.to_thread(directory_bytes, workspace)
            # Only growth counts: a run that starts over the limit may still clean up.
            if used > limit and used > start:
                self.stop("workspace_limit", f"The workspace grew to {used // MB} MB; the limit is {limit // MB} MB.")
                return
            # A huge tree takes long to measure: never spend more than a fifth of the time on it.
            await asyncio.sleep(max(settings.SANDBOX_WORKSPACE_CHECK_SECONDS, 4 * (time.monotonic() - began)))

    async def _listen_for_control(self) -> None:
        # A layer of the run's own: channels-redis lets only one event loop per layer receive, and a
        # worker runs each run on its own thread and loop. It joins beside the run's start, not before
        # it (Redis round trips); an interrupt sent meanwhile is the heartbeat's.
        layer = channel_layers.make_backend(DEFAULT_CHANNEL_LAYER)
        try:
            listener = realtime.GroupListener(layer, await layer.new_channel())
            await listener.join(realtime.run_control_group(self.run.pk))
            try:
                while True:
                    self._control(await listener.receive())
            finally:
                await listener.leave()
        finally:
            with contextlib.suppress(Exception):
                await layer.close_pools()

    async def _drive(self) -> Outcome:
        agent = await sync_to_async(run_agent)(self.run)
        if agent.version.is_chat:
            return await self._drive_chat(agent)
        return await self._drive_agent(agent)

    async def _drive_chat(self, agent: RunAgent) -> Outcome:
        """A chat's turn: one model call through the run's gateway (on loopback: there is no sandbox to reach
        it from), its answer streamed into events. No workspace, skills or MCP servers: a chat has no tools."""
        history = await sync_to_async(chat_history)(self.run)
        titling = await sync_to_async(title_model)(self.run)
        gateway = self.gateway = await self.resources.enter_async_context(
            ModelGateway(
                self.run,
                on_refusal=self.stop,
                on_usage=self.translator.usage_recorded,
                models=models_by_id([titling]) if titling else None,
            )
        )
        handed_back = await sync_to_async(handed_back_data)(self.run.pk) if self.resuming else None
        self.writer.emit(
            EventType.RUN_RESUMED if handed_back is not None else EventType.RUN_STARTED,
            {
                **({"after": {"kind": "handed_back", **handed_back}} if handed_back is not None else {}),
                "agent": agent.summary(),
                "model": self.model.pk,
                "model_display_name": self.model.display_name,
                "offline_model": self.model.is_offline,
                "sandbox": "none",
                "limits": {},
                "warning": "",
                "resumed_session_id": None,
                "worker": lease.WORKER_NAME,
                "skills": [],
                "preferred_skills": [],
                "mcp_servers": [],
                "history_turns": len(history) // 2,
            },
        )

        def name_conversation() -> None:
            # Once the answer streams, not before: the title's call would take turns with the answer's on the
            # run's one database thread (its budget reservation), and hold up the first token.
            if titling is not None and self.titling is None:
                self.titling = asyncio.create_task(title_conversation(self.run, gateway, titling, self.writer.emit))

        chat = ChatExecution(
            gateway,
            chat_request(self.run, agent.version, history),
            emit=self.writer.emit,
            translator=self.translator,
            on_answering=name_conversation,
        )

        async def answer() -> Outcome:
            try:
                return self._chat_outcome(await chat.answer())
            except ModelFailed as failure:
                if self.interrupted.is_set():  # refused by the gateway (a budget): `stop` said why
                    return self._stopped_outcome()
                logger.warning("Run %s: the model failed: %s", self.run.pk, failure)
                return Run.Status.FAILED, None, model_error(failure.status)

        return await self._until_done_or_interrupted(answer(), stop=_cancel)

    def _chat_outcome(self, answer: ChatAnswer) -> Outcome:
        if self.interrupted.is_set():
            return self._stopped_outcome()
        result = {"result": answer.text, "num_turns": 1, "stop_reason": answer.stop_reason, "session_id": None}
        return Run.Status.COMPLETED, result, None

    async def _drive_agent(self, agent: RunAgent) -> Outcome:
        try:
            terms = await sync_to_async(session_terms)(self.run, agent)
            # A resumed leg (after a suspension or a hand-back) continues from the stored session: always cold.
            session = None if self.resuming else warm_sessions.take(self.conversation, terms.fingerprint)
            warm = session is not None
            session = self.session = session or AgentSession(self.conversation.pk, terms.fingerprint)
            if warm:
                setup = await self._serve_warm(session, agent)
            else:
                setup = await prepare_run(
                    self.run,
                    agent,
                    terms,
                    session.resources,
                    on_refusal=self.stop,
                    on_usage=self.translator.usage_recorded,
                    emit=session.emit,
                )
        except SandboxUnavailable as exc:
            logger.error("Run %s cannot start: %s", self.run.pk, exc)
            return Run.Status.FAILED, None, {"reason": "sandbox_unavailable", "message": str(exc)}
        except SkillsUnavailable as exc:
            logger.error("Run %s cannot start: %s", self.run.pk, exc)
            return Run.Status.FAILED, None, {"reason": "skills_unavailable", "message": str(exc)}
        except RuleError as exc:
            # Stored rules are checked when saved; one written around the checks (a migration, the shell) fails closed.
            logger.error("Run %s cannot start: its egress rules cannot be read: %s", self.run.pk, exc)
            message = f"The egress allow-list cannot be read ({exc}); fix the tenant's or the agent profile's list."
            return Run.Status.FAILED, None, {"reason": "egress_unavailable", "message": message}
        self.setup = session.setup = setup
        self.gateway = setup.gateway
        watcher = asyncio.create_task(self._watch_workspace(setup.place.workspace))
        self.resources.callback(watcher.cancel)
        self.saver = asyncio.create_task(self._save_workspace_periodically(setup.workspace))
        launch, resume = setup.launch, setup.resume
        self.sandbox_mode = launch.sandbox
        started = {
            "agent": setup.agent.summary(),
            "model": self.model.pk,
            "model_display_name": self.model.display_name,
            "offline_model": self.model.is_offline,
            "sandbox": launch.sandbox,
            "limits": launch.limits,
            "warning": launch.warning,
            "resumed_session_id": resume,
            "worker": lease.WORKER_NAME,
            "skills": setup.skills.summary(),
            "preferred_skills": setup.skills.preferred,
            "mcp_servers": setup.mcp.summary(),
            "egress": setup.egress.summary(),
        }
        gate = self.gate = RunGate(
            self.run,
            setup.agent.policy({server.name: list(server.allowed_tools) for server in setup.mcp.servers}),
            setup.agent.version.approval_timeout_seconds,
            flush=self.writer.flush,
            stopped=self.interrupted,
            holds=lambda: self.steering is not None and bool(self.steering.untaken),
        )
        await session.serve(
            self.run, gate=gate, emit=lambda item: self.writer.emit(*item), stderr=self.cli_stderr.append
        )
        if warm:
            client = await self._start_warm(session, started)
        else:
            started_client = await self._start_cold(session, started)
            if not isinstance(started_client, ClaudeSDKClient):
                return started_client
            client = started_client
        if steers(setup.agent.version):
            self.steering = Steering(self.run, client, flush=self.writer.flush, stopped=self.interrupted)
        try:
            return await self._until_done_or_interrupted(
                self._receive(client), stop=partial(self._interrupt_cli, client)
            )
        finally:
            if self.steering is not None:
                await self.steering.close()

    async def _serve_warm(self, session: AgentSession, agent: RunAgent) -> RunSetup:
        """A warm session's setup, now serving this run: its gateway, egress proxy and workspace are the run's."""
        assert session.setup is not None
        titling = await sync_to_async(title_model)(self.run)
        # The CLI goes on with the conversation's session, as a cold run would resume it.
        resume = self.conversation.sdk_session_id or None
        setup = dataclasses.replace(session.setup, agent=agent, resume=resume, title_model=titling)
        await session.serve_next(
            self.run,
            setup,
            on_refusal=self.stop,
            on_usage=self.translator.usage_recorded,
            models=models_by_id([*agent.models, *([titling] if titling else [])]),
        )
        return setup

    async def _start_warm(self, session: AgentSession, started: dict[str, Any]) -> ClaudeSDKClient:
        """The run's message, sent into the session's live CLI: no launch, no CLI start, no resume."""
        assert session.client is not None and session.setup is not None
        client = self.client = session.client
        assert self.gate is not None
        self.gate.save_transcript = partial(self._save_transcript, client)
        self.writer.emit(
            EventType.RUN_STARTED,
            {**started, "sandbox_report": session.report, "session": session.summary(warm=True)},
        )
        self._start_titling()
        await client.query(user_message(self.run.input, session.setup.skills))
        return client

    async def _start_cold(self, session: AgentSession, started: dict[str, Any]) -> ClaudeSDKClient | Outcome:
        """Launch the session's sandbox and CLI for the run; resume its conversation's stored session, if any.
        The failed outcome when its sandbox cannot start."""
        setup, gate = session.setup, self.gate
        assert setup is not None and gate is not None
        launch, resume = setup.launch, setup.resume
        settled = None
        handed_back = await sync_to_async(handed_back_data)(self.run.pk) if self.resuming else None
        if self.resuming and handed_back is None:
            settled = await sync_to_async(suspended_request)(self.run.pk)
            if resume is None or settled is None:
                logger.error("Run %s cannot resume: its session (%s) or its request is gone", self.run.pk, resume)
                return Run.Status.FAILED, None, {"reason": "resume_failed", "message": RESUME_FAILED}
        options = agent_options(
            self.run, setup, session, stderr=session.stderr, settled_tool=settled.tool if settled else None
        )
        client = self.client = session.client = ClaudeSDKClient(options)
        gate.save_transcript = partial(self._save_transcript, client)
        session.resources.push_async_callback(disconnect, client, self.conversation.pk)
        launching = time.monotonic()
        # The sandbox and its CLI are up once the CLI answers `initialize`. A resumed session settles the call it
        # was suspended on meanwhile (through the gate) and continues its turn by itself: it gets no message.
        # run.started waits only for the sandbox's report of itself (its init writes it some 50 ms after the
        # launch, before the CLI starts), not for the CLI.
        connecting = asyncio.create_task(client.connect())
        try:
            report = await self._sandbox_report(launch, connecting)
        except BaseException:
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
            raise
        if report is None or report.get("missing_layers"):
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
            message = missing_layers_message(report) if report else "The sandbox did not start: it wrote no report."
            logger.error("Run %s cannot start: %s\n%s", self.run.pk, message, "\n".join(self.cli_stderr))
            error = {"reason": "sandbox_unavailable", "message": message, "sandbox_report": report}
            return Run.Status.FAILED, None, error
        session.report = report
        await session.spawned(connecting)
        started = {**started, "sandbox_report": report, "session": session.summary(warm=False)}
        if self.resuming and settled is not None:
            self.writer.emit(EventType.RUN_RESUMED, {**started, **resumed_data(settled)})
        elif handed_back is not None:
            self.writer.emit(EventType.RUN_RESUMED, {**started, "after": {"kind": "handed_back", **handed_back}})
        else:
            self.writer.emit(EventType.RUN_STARTED, started)
        self._start_titling()
        await connecting
        mirror_inside_paths(client, launch)
        await self._record_launch(time.monotonic() - launching)
        if handed_back is not None and handed_back.get("session_id") and resume == handed_back["session_id"]:
            # Mid-turn on a worker that shut down: the session holds the turn so far, which the model continues.
            await client.query(continue_turn())
        elif not self.resuming or handed_back is not None:
            # A first leg; or one handed back before its agent had started the turn (or whose session was not
            # stored): the message is sent (again) and the turn starts anew.
            await client.query(user_message(self.run.input, setup.skills))
        return client

    def _start_titling(self) -> None:
        """Beside the agent, from the first message: the title comes long before the run's end (runs.titles)."""
        if self.setup is not None and self.setup.title_model is not None:
            self.titling = asyncio.create_task(
                title_conversation(self.run, self.setup.gateway, self.setup.title_model, self.writer.emit)
            )

    async def _keep_session(self) -> None:
        """Keep the run's session warm for its conversation's next run, unless the worker shuts down."""
        session = self.session
        if session is None or draining():
            return
        session.release()
        self.session = None
        await warm_sessions.keep(session)

    async def _close_session(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.release()
            await warm_sessions.forget(session)

    async def _sandbox_report(self, launch: Launch, connecting: "asyncio.Task[None]") -> dict[str, Any] | None:
        """The sandbox's report of the layers in force (`sandbox.report`), once its init has written it."""
        if launch.report is not None or launch.report_path is None:
            return launch.report
        report = await wait_for_report(launch.report_path, connecting)
        if report is None and connecting.done() and connecting.exception() is not None:
            raise connecting.exception()  # type: ignore[misc]  # the launch itself failed: not the sandbox's report
        return report

    async def _save_transcript(self, client: ClaudeSDKClient, tool_use_id: str) -> bool:
        """Store the session's transcript so far, up to the call now waiting for a person: a worker that dies while
        it waits leaves the call where the reaper suspends the run at it (`runs.session_store.checkpoint`)."""
        # What the SDK holds is stored too.
        batcher = transcript_mirror(client)
        if batcher is not None:
            await batcher.flush()
        if self.setup is None or not self.translator.session_id:
            return False
        try:
            return await call_database(
                f"Checkpointing run {self.run.pk}'s session",
                checkpoint,
                self.run.conversation_id,
                self.setup.place.config_dir,
                self.translator.session_id,
                tool_use_id,
            )
        except Exception:
            logger.exception("Run %s: checkpointing its session failed; a lost worker fails it", self.run.pk)
            return True  # not again

    async def _record_launch(self, seconds: float) -> None:
        """For /metrics: how long launching the sandboxed CLI took (a lost figure loses nothing else)."""
        try:
            await call_database(
                f"Recording run {self.run.pk}'s launch",
                Run.objects.filter(pk=self.run.pk).update,
                launch_seconds=seconds,
            )
        except DatabaseError:
            logger.warning("Run %s: recording its launch time failed", self.run.pk)

    async def _until_done_or_interrupted(
        self, work: Coroutine[Any, Any, Outcome], stop: Callable[["asyncio.Task[Outcome]"], Awaitable[None]]
    ) -> Outcome:
        """The outcome of `work`, or, when an interrupt (or a limit) comes first, the stopped outcome once
        `stop` has ended the work."""
        working = asyncio.create_task(work)
        interrupt_requested = asyncio.create_task(self.interrupted.wait())
        try:
            done, _ = await asyncio.wait({working, interrupt_requested}, return_when=asyncio.FIRST_COMPLETED)
            if working in done:
                return working.result()
            await stop(working)
            return self._stopped_outcome()
        finally:
            # Also when the run's time is up: no work outlives its run.
            interrupt_requested.cancel()
            working.cancel()
            await asyncio.gather(working, interrupt_requested, return_exceptions=True)

    async def _interrupt_cli(self, client: ClaudeSDKClient, receiving: "asyncio.Task[Outcome]") -> None:
        grace = settings.RUN_INTERRUPT_GRACE_SECONDS
        try:
            await asyncio.wait_for(client.interrupt(), grace)
            await asyncio.wait_for(asyncio.shield(receiving), grace)
        except Exception:
            # interrupt() is known to hang now and then: disconnecting (in the caller) kills the CLI.
            logger.warning("Run %s did not stop on interrupt within %.1fs; killing its CLI", self.run.pk, grace)
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)

    def stop(self, reason: str, message: str, details: Mapping[str, str] | None = None) -> None:
        """End the run as failed because a limit was hit; the first reason wins. `details` join the error."""
        if self.stop_error is None:
            logger.warning("Stopping run %s: %s", self.run.pk, message)
            self.stop_error = {"reason": reason, "message": message, **(details or {})}
        self.interrupted.set()

    def _stopped_outcome(self) -> Outcome:
        if self.stop_error is not None:
            return Run.Status.FAILED, None, self.stop_error
        if self.handing_back:
            return HANDED_BACK, self._handed_back_data(), None
        return Run.Status.INTERRUPTED, {"reason": "interrupted"}, None

    def _handed_back_data(self) -> dict[str, Any]:
        """`run.handed_back`: why, by which worker, and the session its next leg continues (None: the agent had
        not started its turn, so the next leg starts it anew)."""
        return {"reason": "worker_shutdown", "worker": lease.WORKER_NAME, "session_id": self.translator.session_id}

    async def _receive(self, client: ClaudeSDKClient) -> Outcome:
        async for message in client.receive_messages():
            for kind, data in self.translator.translate(message):
                self.writer.emit(kind, data)
            if self.steering is not None:
                self.steering.seen(message)
            if isinstance(message, ResultMessage) and message.deferred_tool_use is not None:
                return self._outcome(message)  # suspending: the context is read when the run ends
            if isinstance(message, ResultMessage) and self.steering is not None and not await self.steering.finished():
                continue  # a steered message the CLI has not taken in yet: it answers it next, in a turn of its own
            if isinstance(message, ResultMessage):
                # The gauge is read while the run saves its workspace and settles its calls (the CLI counts the
                # context with some 20 count_tokens calls): its event comes just before the terminal one.
                self.context_reading = asyncio.create_task(read_context_usage(client, self.run))
                return self._outcome(message)
        return Run.Status.FAILED, None, {"reason": "cli_exited", "message": "The agent exited without a result."}

    def _outcome(self, message: ResultMessage) -> Outcome:
        self.translator.session_id = message.session_id or self.translator.session_id
        finished_anyway = self.handing_back and self.stop_error is None and message.subtype == "success"
        if self.interrupted.is_set() and not finished_anyway:  # a turn that ended as it was handed back is done
            return self._stopped_outcome()
        if message.deferred_tool_use is not None:
            request = self.gate.suspended_on if self.gate is not None else None
            if request is None or request.tool_use_id != message.deferred_tool_use.id:
                # Only the gate defers a call; anything else would wait for a decision nobody was asked for.
                error = {"reason": "agent_error", "message": AGENT_FAILED, "api_status": None}
                logger.error("Run %s: the CLI deferred %s unasked", self.run.pk, message.deferred_tool_use)
                return Run.Status.FAILED, None, error
            return Run.Status.WAITING, waiting_data(request), None
        if message.is_error or message.subtype != "success":
            detail = "; ".join(message.errors or []) or message.result or message.subtype
            if message.api_error_status or self.translator.model_failed:
                logger.warning("Run %s: the model failed (%s): %s", self.run.pk, message.api_error_status, detail)
                return Run.Status.FAILED, None, model_error(message.api_error_status)
            if message.subtype == "error_max_structured_output_retries":
                return Run.Status.FAILED, None, {"reason": "output_invalid", "message": detail, "api_status": None}
            if message.subtype == "error_max_turns" and self.setup is not None:
                # The agent profile's limit, named as the platform's other limits are (not in the CLI's terms).
                limit = self.setup.agent.version.max_turns
                error = {"reason": "max_turns", "message": MAX_TURNS.format(limit=limit), "api_status": None}
                return Run.Status.FAILED, None, error
            return Run.Status.FAILED, None, {"reason": message.subtype, "message": detail, "api_status": None}
        result = {
            "result": message.result or "",
            "num_turns": message.num_turns,
            "stop_reason": message.stop_reason,
            "session_id": message.session_id,
        }
        schema = self.setup.agent.version.output_schema if self.setup else None
        if schema is not None:
            if problem := output_problem(schema, message.structured_output):
                return Run.Status.FAILED, None, {"reason": "output_invalid", "message": problem, "api_status": None}
            result["structured_output"] = message.structured_output
        return Run.Status.COMPLETED, result, None


async def disconnect(client: ClaudeSDKClient, conversation_id: UUID) -> None:
    try:
        await client.disconnect()
    except Exception:
        logger.warning("Disconnecting the CLI of conversation %s failed", conversation_id, exc_info=True)


def model_error(api_status: int | None) -> dict[str, Any]:
    return {"reason": "model_error", "message": MODEL_UNAVAILABLE, "api_status": api_status}


async def _cancel(working: "asyncio.Task[Outcome]") -> None:
    """How a chat stops: its call is cut off (the gateway meters what had streamed; the text so far is kept)."""
    working.cancel()
    await asyncio.gather(working, return_exceptions=True)


def output_problem(schema: dict[str, Any], output: Any) -> str | None:
    """Why a run's structured output does not fit its agent's schema, or None. The CLI checks it too; this is
    the platform's own word on what it stores and hands on."""
    if output is None:
        return "The agent ended without a structured answer."
    error = jsonschema.exceptions.best_match(jsonschema.validators.validator_for(schema)(schema).iter_errors(output))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"The structured answer does not fit the agent's schema{f' at {where}' if where else ''}: {error.message}"


def transcript_mirror(client: ClaudeSDKClient | None) -> Any:
    """The SDK's mirror of `client`'s transcript to the session store, or None: SDK 0.2.x offers no public way to
    flush it or to tell it where the CLI's transcripts are, so its private batcher is used (check on upgrades)."""
    return getattr(getattr(client, "_query", None), "_transcript_mirror_batcher", None)


def mirror_inside_paths(client: ClaudeSDKClient, launch: Launch) -> None:
    """Have the SDK's transcript mirror resolve the paths the sandboxed CLI reports: the CLI names its
    transcripts under the config dir's neutral path inside the sandbox, which the SDK (0.2.184), knowing only
    the host path, would otherwise take for no session's and drop. Set before the CLI's first flush (at the
    turn's result); the mirror resolves paths only when it flushes."""
    if launch.report_path is None:  # not sandboxed: the CLI sees the host's paths
        return
    batcher = transcript_mirror(client)
    if batcher is not None:
        batcher.projects_dir = f"{SANDBOX_CONFIG_DIR}/projects"


async def continue_turn() -> AsyncIterator[dict[str, Any]]:
    """The message that has a resumed session continue the turn it was interrupted in (`CONTINUE_TURN`)."""
    content = CONTINUE_TURN
    yield {
        "type": "user",
        "message": {"role": "user", "content": content},
        "parent_tool_use_id": None,
        "client_composed": True,
    }


async def user_message(text: str, skills: RunSkills) -> AsyncIterator[dict[str, Any]]:
    """The message as the CLI gets it: verbatim (`client_composed`: no `@path` expansion, none of the CLI's own
    commands such as /init or /compact), except `/name args` naming one of the run's slash-command skills (the API
    let only those through), which the CLI dispatches as that skill, provided its arguments mention no `@path`."""
    command = SLASH_COMMAND.match(text)
    invokes_skill = command is not None and any(
        version.skill.name == command[1] and version.skill.slash_command for version in skills.versions
    )
    message: dict[str, Any] = {"type": "user", "message": {"role": "user", "content": text}, "parent_tool_use_id": None}
    if not invokes_skill or "@" in text:
        message["client_composed"] = True
    yield message


async def execute_run(
    run_id: UUID | str,
    then: Callable[[UUID], object] | None = None,
    requeue: Callable[[UUID], object] | None = None,
) -> None:
    """Execute a queued run to its terminal event or its suspension; does nothing when another worker took it or it
    ended. A run whose decision came while it was suspending continues here, in a new leg. `then` is called with
    the conversation's id once the run has ended (the caller's `runs.dispatch.start_next`: this module cannot
    import the dispatch, which imports it). `requeue` (`runs.dispatch.dispatch_run`) hands a run to another
    worker: one this worker handed back as it shuts down, or one given to it after its shutdown began."""
    # The run's database work takes turns on one thread of its own, with one connection, returned
    # to the pool when the run ends; runs beside it in the process use theirs.
    async with ThreadSensitiveContext():
        try:
            while True:
                if requeue is not None and draining():
                    # Taken from the queue just before the worker stopped consuming: another worker starts it.
                    logger.info("Run %s came as this worker shuts down; handing it to another", run_id)
                    await sync_to_async(requeue)(UUID(str(run_id)))
                    return
                run = await sync_to_async(lease.claim_run)(run_id)
                if run is None:
                    logger.info("Run %s was not queued any more; skipping", run_id)
                    return
                execution = RunExecution(run, then)
                await execution.execute()
                if execution.handed_back and requeue is not None:
                    await sync_to_async(requeue)(run.pk)
                    return
                if not execution.requeued:
                    return
        finally:
            await sync_to_async(close_connection)()
