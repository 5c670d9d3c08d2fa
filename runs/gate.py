"""The gate every tool call of a run passes: its profile's rules, and a person where a rule says `ask`.

One decision answers both of the CLI's ways to ask (measured, Claude Code 2.1 in SDK mode, permission mode
`default`): the PreToolUse hook, called for every call, and `can_use_tool`, called when the hook leaves the
decision to the CLI's permissions, and on a resumed session for the call it suspended on (the CLI settles a
deferred call at connect through one or the other, by a race). Both read the same stored request.

A call that asks waits in-process for `APPROVAL_WAIT_SECONDS`; past that the hook answers `defer`: the CLI ends
its turn with `deferred_tool_use`, the executor suspends the run, and the decision resumes it on any worker.
The `AskUserQuestion` tool is asked the same way; its answer reaches the CLI as the tool's `answers` input.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from claude_agent_sdk import PermissionResultAllow, PermissionResultDeny
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

from agents.rules import ToolPolicy
from approvals import services as approvals
from approvals.models import ASK_USER_QUESTION, Approval, Question
from conversations.models import Run

logger = logging.getLogger(__name__)

# The tool that starts a subagent: `Agent` in the model's requests, `Task` in the CLI's init message.
SUBAGENT_TOOLS = frozenset({"Agent", "Task"})
# How often a waiting call reads its request from the database, in case its decision's signal was lost.
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Decision:
    action: str  # allow | deny | defer
    updated_input: dict[str, Any] | None = None
    reason: str = ""


DEFER = Decision("defer")


class RunGate:
    """The tool calls of one run (one leg of it: a resumed run has a gate of its own)."""

    def __init__(
        self,
        run: Run,
        policy: ToolPolicy,
        timeout_seconds: int,
        *,
        flush: Callable[[], Awaitable[None]],
        stopped: asyncio.Event,
        holds: Callable[[], bool] = lambda: False,
    ) -> None:
        self.run = run
        self.policy = policy
        self.timeout_seconds = timeout_seconds
        self.flush = flush  # stores the run's events so far: a request's event comes after its call's
        self.stopped = stopped  # the run was interrupted or hit a limit: nobody waits any more
        self.holds = holds  # while true, a call waits in-process rather than suspend (`runs.steering`)
        self.decided = asyncio.Event()  # a decision was signalled: read the database now
        self.suspended_on: Approval | Question | None = None
        # Stores the session's transcript so far (set once the CLI is connected): a worker that dies while a call
        # waits leaves the call in the database, where the reaper can suspend the run instead of failing it.
        self.save_transcript: Callable[[str], Awaitable[bool]] | None = None
        self.asked = False  # whether a person was asked anything in this leg
        self.deferrable_waits = 0  # calls waiting in-process for a person that may suspend the run
        self.deferring_now = False  # the worker shuts down: such a call suspends the run at once (`defer_now`)

    def signal_decided(self) -> None:
        self.decided.set()

    def defer_now(self) -> bool:
        """The run's worker shuts down: a call waiting in-process for a person suspends the run now rather than
        after APPROVAL_WAIT_SECONDS (the decision resumes it on another worker). False when no call waits so."""
        if not self.deferrable_waits or self.holds():
            return False
        self.deferring_now = True
        self.decided.set()
        return True

    def hooks(self) -> dict[HookEvent, list[HookMatcher]]:
        """One PreToolUse hook for every call. It fails closed (`on_failure="block"`): a hook that raises would
        otherwise let the call through."""
        return {"PreToolUse": [HookMatcher(matcher=None, hooks=[self.pre_tool_use], on_failure="block")]}

    async def pre_tool_use(
        self, hook_input: HookInput, tool_use_id: str | None, context: HookContext
    ) -> SyncHookJSONOutput:
        name = str(hook_input.get("tool_name", ""))
        tool_input: Any = hook_input.get("tool_input") or {}
        decision = await self.decide(name, tool_input if isinstance(tool_input, dict) else {}, tool_use_id or "")
        output: dict[str, Any] = {"hookEventName": "PreToolUse", "permissionDecision": decision.action}
        if decision.updated_input is not None:
            output["updatedInput"] = decision.updated_input
        if decision.reason:
            output["permissionDecisionReason"] = decision.reason
        return {"hookSpecificOutput": output}  # type: ignore[typeddict-item]  # "defer" is newer than the SDK's types

    async def can_use_tool(
        self, name: str, tool_input: dict[str, Any], context: ToolPermissionContext
    ) -> PermissionResult:
        decision = await self.decide(name, tool_input, context.tool_use_id or "", may_defer=False)
        if decision.action == "allow":
            return PermissionResultAllow(updated_input=decision.updated_input)
        return PermissionResultDeny(message=decision.reason)

    async def decide(
        self, name: str, tool_input: dict[str, Any], tool_use_id: str, *, may_defer: bool = True
    ) -> Decision:
        verdict = self.policy.verdict(name, tool_input)
        if verdict.action == "deny":
            logger.info("Run %s: refused a call of %s: %s", self.run.pk, name, verdict.reason)
            return Decision("deny", reason=verdict.reason)
        if name == ASK_USER_QUESTION:
            return await self._ask(name, tool_input, tool_use_id, "", may_defer)
        if verdict.asks and not await sync_to_async(approvals.granted)(self.run.conversation_id, name):
            return await self._ask(name, tool_input, tool_use_id, verdict.reason, may_defer)
        if name in SUBAGENT_TOOLS and tool_input.get("run_in_background"):
            # A run ends with its agent's answer: a subagent left running in the background would act after
            # it, unseen. The model asked for the background; it gets the foreground, and its answer.
            return Decision("allow", {**tool_input, "run_in_background": False})
        # Said explicitly: in permission mode `default`, a call the hook leaves undecided goes to the CLI's
        # permission prompt (`can_use_tool`) whenever the CLI would ask a terminal user (Bash, Write, ...).
        return Decision("allow")

    async def _ask(
        self, name: str, tool_input: dict[str, Any], tool_use_id: str, reason: str, may_defer: bool
    ) -> Decision:
        self.asked = True
        request = await sync_to_async(approvals.settled_request)(self.run.pk, tool_use_id)
        if request is None:
            await self.flush()
            if name == ASK_USER_QUESTION:
                questions = tool_input.get("questions")
                request = await sync_to_async(approvals.ask_question)(
                    self.run, tool_use_id, questions if isinstance(questions, list) else [], self.timeout_seconds
                )
            else:
                request = await sync_to_async(approvals.ask_approval)(
                    self.run, tool_use_id, name, tool_input, reason, self.timeout_seconds
                )
        saved = self.save_transcript is None
        waited_until = time.monotonic() + settings.APPROVAL_WAIT_SECONDS
        self.deferrable_waits += may_defer
        try:
            while request.is_pending:
                if not saved and self.save_transcript is not None:
                    saved = await self.save_transcript(tool_use_id)
                if self.stopped.is_set():
                    return Decision("deny", reason="The run was stopped before anyone decided.")
                waited = time.monotonic() >= waited_until or self.deferring_now
                if may_defer and waited and not self.holds():
                    # The run suspends: its worker and sandbox are freed, and the decision resumes it.
                    self.suspended_on = request
                    return DEFER
                self.decided.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.decided.wait(), POLL_SECONDS)
                await sync_to_async(request.refresh_from_db)()
        finally:
            self.deferrable_waits -= may_defer
        await sync_to_async(approvals.mark_applied)(request)
        return applied(request, tool_input, self.policy)


def applied(request: Approval | Question, tool_input: Mapping[str, Any], policy: ToolPolicy) -> Decision:
    """What a settled request lets the call do: run (as edited, or with the user's answers), or be refused. An
    edited input is the profile's to allow like any call (the decision refused one it denies; this holds too)."""
    if isinstance(request, Approval) and request.allowed:
        if request.updated_input is not None and (refusal := policy.refusal(request.tool, request.updated_input)):
            return Decision("deny", reason=refusal)
        return Decision("allow", request.updated_input)
    if isinstance(request, Question) and request.status == Question.Status.ANSWERED:
        return Decision("allow", {**tool_input, "answers": request.answers})
    return Decision("deny", reason=approvals.refusal_text(request))
