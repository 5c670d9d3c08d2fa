"""The workflows that start, steer and end a conversation's runs, over the feature apps.

This is where a new capability is asked what a message may choose (skills, MCP servers, budgets, rate
limits, and next agent profiles and approval policies): one `RunOptions` holds the message, is checked
here once, and is recorded in `run.queued` as it was decided. What a run then needs in the worker is
`runs.prepare`'s. The REST views, the SSE views, the WebSocket consumer and the admin all call these.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents.models import AgentProfile, AgentVersion
from agents.services import choose_agent, run_agent, run_version
from api.errors import Conflict, ServiceError
from approvals import services as approvals
from approvals.models import Approval, Question
from approvals.services import Who
from conversations import realtime
from conversations.events import EventType, finish_run, record_events
from conversations.models import Conversation, Run
from mcp_servers.services import ServerProblem
from mcp_servers.services import check_choice as check_server_choice
from mcp_servers.vault import seal
from runs.dispatch import dispatch_run, promote_next, queued_behind, wake_run
from runs.models import PendingSteer
from skills.archive import SkillProblem
from skills.services import SLASH_COMMAND, check_command, check_selection
from tenants import ratelimit
from tenants.models import LanguageModel, Tenant
from tenants.storage import delete_quietly
from usage.services import effective_budget, effective_conversation_budget, run_totals
from workspaces.services import attach_files, with_attachments
from workspaces.storage import delete_conversation_files


def message_text_problem(text: str) -> str | None:
    """What is wrong with a message's text, or None: the one rule, for the serializers and `start_run` alike."""
    if not text.strip():
        return "The message text is empty."
    if len(text) > settings.RUN_MAX_INPUT_CHARS:
        return f"The message is {len(text):,} characters; the limit is {settings.RUN_MAX_INPUT_CHARS:,}."
    return None


@dataclass(frozen=True)
class RunOptions:
    """One message and everything it asks of its run, as the end user sent it.

    `agent` names the agent profile (`name` or `name@version`) for this message only (None: the
    conversation's); `skills` and `mcp_servers` narrow the conversation's (None: the conversation's own choice);
    `preferred_skills` are added and named to the agent as the ones to use first; `budget_usd` and
    `budget_calls` may lower the tenant's run budget, never raise it; `mcp_tokens` are secrets for
    this run only (sealed, and gone when it ends); `files` land in the workspace before the run.
    """

    text: str
    user_id: str = ""
    agent: str | None = None
    files: Sequence[UploadedFile] = ()
    skills: Sequence[str] | None = None
    preferred_skills: Sequence[str] = ()
    mcp_servers: Sequence[str] | None = None
    mcp_tokens: Mapping[str, str] = field(default_factory=dict)
    budget_usd: Decimal | None = None
    budget_calls: int | None = None

    @classmethod
    def from_message(cls, data: Mapping[str, Any], **more: Any) -> "RunOptions":
        """The options of a validated message body (`MessageCreateSerializer`'s fields)."""
        budget = data.get("budget") or {}
        return cls(
            text=data["text"],
            agent=data.get("agent") or None,
            skills=data.get("skills"),
            preferred_skills=tuple(data.get("preferred_skills") or ()),
            mcp_servers=data.get("mcp_servers"),
            mcp_tokens=dict(data.get("mcp_tokens") or {}),
            budget_usd=budget.get("usd"),
            budget_calls=budget.get("calls"),
            **more,
        )


@dataclass(frozen=True)
class _Decided:
    """What `start_run` decided for a message, as `run.queued` records it."""

    agent: AgentVersion
    model: LanguageModel
    skills: list[str] | None
    preferred_skills: list[str]
    mcp_servers: list[str] | None
    budget_usd: Decimal | None
    budget_calls: int | None


# --- Conversations --------------------------------------------------------------------------------


def resolve_model(model_id: str) -> LanguageModel:
    """The catalog model a conversation names over its agent's, or the 400 that says which to choose."""
    model = LanguageModel.objects.filter(pk=model_id).first()
    if model is None:
        choices = ", ".join(LanguageModel.objects.usable().values_list("id", flat=True)) or "none defined"
        raise ServiceError(f"Unknown model '{model_id}'. Choose one of: {choices}.", code="unknown_model")
    if not model.is_usable:
        raise ServiceError(f"Model '{model_id}' is deprecated; choose an active model.", code="model_deprecated")
    return model


def create_conversation(
    tenant: Tenant,
    *,
    user_id: str = "",
    agent: str | None = None,
    model_id: str | None = None,
    title: str = "",
    skills: Sequence[str] | None = None,
    mcp_servers: Sequence[str] | None = None,
    budget: Mapping[str, Any] | None = None,
) -> Conversation:
    """A new conversation of `agent` (`name` follows its current version, `name@version` pins one; None: the
    tenant's default agent), on the agent's model unless `model_id` names another; its budget is the
    tenant's default, lowered by `budget` (`usd`, `calls`)."""
    if not tenant.is_active:
        raise Conflict(f"Tenant '{tenant.pk}' is inactive.", code="tenant_inactive")
    choice = choose_agent(tenant, agent)
    model = resolve_model(model_id) if model_id else None
    if model is None:
        _agent_model(tenant, choice.version)  # refuses a deprecated one now, not at the first message
    chosen = None if skills is None else checked_skills(tenant, skills, "skills")
    servers = None if mcp_servers is None else checked_servers(tenant, mcp_servers)
    budget_usd, budget_calls = effective_conversation_budget(
        tenant, (budget or {}).get("usd"), (budget or {}).get("calls")
    )
    if model is None and chosen is None and servers is None and choice.pinned is None:
        # Asking for nothing its agent's first message would not start with: one made ahead, if any is ready.
        made_ahead = claim_reserved(
            tenant, choice.profile, user_id=user_id, title=title, budget_usd=budget_usd, budget_calls=budget_calls
        )
        if made_ahead is not None:
            return made_ahead
    return Conversation.objects.create(
        tenant=tenant,
        user_id=user_id,
        agent=choice.profile,
        agent_version=choice.pinned,
        model=model,
        title=title,
        skills=chosen,
        mcp_servers=servers,
        budget_usd=budget_usd,
        budget_calls=budget_calls,
    )


def claim_reserved(tenant: Tenant, profile: AgentProfile, **fields: Any) -> Conversation | None:
    """A conversation of `profile` made ahead with its session started (`runs.prewarm`), now an ordinary one with
    `fields` (its user, title, budget); None when none is ready."""
    if settings.PREWARMED_SESSIONS <= 0:
        return None
    with transaction.atomic():
        conversation = (
            Conversation.all_objects.select_for_update(skip_locked=True)
            .filter(reserved=True, tenant=tenant, agent=profile, agent_version=None, warm_until__gt=timezone.now())
            .exclude(warm_session="")
            .first()
        )
        if conversation is None:
            return None
        for name, value in fields.items():
            setattr(conversation, name, value)
        conversation.reserved = False
        conversation.created_at = timezone.now()
        conversation.save()
    return conversation


def checked_servers(tenant: Tenant, names: Sequence[str]) -> list[str]:
    """The MCP servers an end user chose, or a 400 that names the one to fix and the choices."""
    try:
        return check_server_choice(tenant, names)
    except ServerProblem as problem:
        raise ServiceError(str(problem), code="unknown_mcp_server") from None


def checked_skills(tenant: Tenant, names: Sequence[str], field: str) -> list[str]:
    """The skills an end user chose, or a 400 that names the one to fix and the choices."""
    try:
        return check_selection(tenant, names, field)
    except SkillProblem as problem:
        raise ServiceError(str(problem), code="unknown_skill") from None


def delete_conversation(conversation: Conversation) -> None:
    """Delete a conversation with its runs, events and stored files; refused while a run is active in it."""
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if locked.active_run_id is not None:
            raise Conflict(
                "A run is active in this conversation; interrupt it before deleting.", code="run_in_progress"
            )
        _delete_idle(locked)


def delete_conversations(conversations: QuerySet[Conversation]) -> tuple[int, int]:
    """Delete the idle ones of many conversations (the admin's bulk action): (deleted, kept with an active run)."""
    with transaction.atomic():
        # Locked by id: the admin's queryset joins (its list columns), and a join's nullable side cannot be locked.
        chosen = list(conversations.values_list("pk", flat=True))
        locked = list(Conversation.objects.select_for_update().filter(pk__in=chosen))
        idle = [conversation for conversation in locked if conversation.active_run_id is None]
        for conversation in idle:
            _delete_idle(conversation)
    return len(idle), len(locked) - len(idle)


def _delete_idle(conversation: Conversation) -> None:
    # The ids are read before the row goes: Django sets a deleted instance's pk to None, and the files
    # are deleted only once the deletion is committed (a rollback must find them still there).
    tenant_id, conversation_id = conversation.tenant_id, conversation.pk
    conversation.delete()
    transaction.on_commit(lambda: delete_quietly(delete_conversation_files, tenant_id, conversation_id))


# --- Runs -----------------------------------------------------------------------------------------


class Disposition(StrEnum):
    """What became of a message: how the 202 of `…/messages`, the WebSocket's ack and `run.queued` name it."""

    STARTED = "started"  # no run was active: its run is the active one, handed to a worker
    QUEUED = "queued"  # it waits behind the active run, in order, as a run of its own
    STEERED = "steered"  # the running run takes it in as its next user input
    INTERRUPTING = "interrupting"  # it stopped the active run, and runs as soon as that one has ended


@dataclass(frozen=True)
class Sent:
    """A message `send_message` accepted, and what became of it."""

    run: Run  # the run that answers it: its own, or (steered) the active run it joins
    disposition: Disposition
    message_id: UUID  # the run storing the message (steered: until the running run takes it in, then gone)
    behind: UUID | None  # the active run it waits behind (or steers); None when it started at once
    position: int | None  # its place among the messages waiting (1: next); None when it started at once
    after_seq: int  # the conversation's last event before the message's own: where to follow it from

    def summary(self) -> dict[str, Any]:
        """What the 202 of `…/messages` and the WebSocket's ack add to the run they name."""
        return {
            "disposition": self.disposition.value,
            "message_id": str(self.message_id),
            "behind": None if self.behind is None else str(self.behind),
            "queue_position": self.position,
        }


def start_run(conversation: Conversation, options: RunOptions) -> Run:
    """`send_message`'s run: the one that answers the message."""
    return send_message(conversation, options).run


def send_message(conversation: Conversation, options: RunOptions) -> Sent:
    """Accept a message: store its Run and `run.queued` event and hand the run to a worker once committed; or, while
    a run is active, do what the active run's agent profile says (`AgentVersion.busy_policy`): refuse it (409), queue
    it behind, steer the running run with it, or interrupt the running run and start it next.

    The message's files are stored in the workspace in the same transaction: a refused message
    leaves none behind. A text that starts with `/name` invokes that skill.
    """
    if problem := message_text_problem(options.text):
        raise ServiceError(problem, code="empty_text" if not options.text.strip() else "text_too_long")
    with transaction.atomic():
        # The conversation's row only (of=self): its tenant's and model's rows are read, not locked, so
        # runs starting at once in many conversations of a tenant do not queue on the tenant's row.
        locked = (
            Conversation.objects.select_for_update(of=("self",))
            .select_related("tenant", "model")
            .get(pk=conversation.pk)
        )
        _check_startable(locked)
        # Messages wait while no run is active only for an instant (their run just ended): the first goes first.
        promote_next(locked)
        active = None
        if locked.active_run_id is not None:
            active = Run.objects.select_related("agent_version").get(pk=locked.active_run_id)
            policy = busy_policy(locked, active)
            if policy == AgentVersion.BusyPolicy.REJECT:
                raise Conflict(
                    f"Run {active.pk} is still active in this conversation; "
                    "wait for its terminal event or interrupt it first.",
                    code="run_in_progress",
                )
            _check_queue_room(locked)
        user_id = options.user_id or locked.user_id
        decided = _decide(locked, user_id, options)
        attached = attach_files(locked, list(options.files))
        run = Run.objects.create(
            conversation=locked,
            model=decided.model,
            agent_version=decided.agent,
            user_id=user_id,
            input=with_attachments(options.text, attached),
            # For the active run: when it was handed to a worker. A message waiting behind it is no worker's yet.
            heartbeat_at=timezone.now() if active is None else None,
            budget_usd=decided.budget_usd,
            budget_calls=decided.budget_calls,
            skills=decided.skills,
            preferred_skills=decided.preferred_skills,
            mcp_servers=decided.mcp_servers,
            mcp_tokens=seal(dict(options.mcp_tokens)) if options.mcp_tokens else None,
        )
        queued = {
            "input": run.input,
            "text": options.text,  # as the end user typed it; `input` is what the agent reads
            "attachments": [{"path": version.path, "size": version.size} for version in attached],
            "user_id": run.user_id,
            "agent": decided.agent.summary(),
            "model": run.model_id,
            "budget": {
                "usd": None if decided.budget_usd is None else str(decided.budget_usd),
                "calls": decided.budget_calls,
            },
            "skills": decided.skills,
            "preferred_skills": decided.preferred_skills,
            "mcp_servers": decided.mcp_servers,
            "mcp_tokens": sorted(options.mcp_tokens),  # their names only
        }
        if active is None:
            sent = _start(locked, run, queued)
        else:
            sent = _while_busy(locked, active, run, queued, policy, options)
    conversation.active_run_id = locked.active_run_id
    return sent


def _start(conversation: Conversation, run: Run, queued: dict[str, Any]) -> Sent:
    conversation.active_run = run
    conversation.save(update_fields=["active_run", "updated_at"])
    # The worker hears first: the broadcast of run.queued (a channel-layer round trip from this thread,
    # 10-45 ms measured under load) would otherwise hold up the run's start. A listener that gets the
    # worker's first event before it reads the gap from the database (conversations.streams).
    transaction.on_commit(lambda: dispatch_run(run.pk))
    data = {**queued, "disposition": Disposition.STARTED.value, "behind": None, "position": None}
    (event,) = record_events(run, [(EventType.RUN_QUEUED, data)])
    return Sent(run, Disposition.STARTED, run.pk, None, None, event.seq - 1)


def _while_busy(
    conversation: Conversation, active: Run, run: Run, queued: dict[str, Any], policy: str, options: RunOptions
) -> Sent:
    """A message sent while `active` is: queued behind it, steering it, or interrupting it (and then queued)."""
    position = queued_behind(conversation).count()  # the new run is among them
    why_not = _steer_problem(conversation, active, run, options) if policy == AgentVersion.BusyPolicy.STEER else None
    if policy == AgentVersion.BusyPolicy.STEER and why_not is None:
        PendingSteer.objects.create(message=run, into=active, queued=queued)
        active_id = active.pk
        transaction.on_commit(lambda: realtime.signal_run(active_id, {"type": realtime.STEER_MESSAGE_TYPE}))
        return Sent(active, Disposition.STEERED, run.pk, active.pk, position, conversation.last_seq)
    disposition = Disposition.QUEUED
    if policy == AgentVersion.BusyPolicy.INTERRUPT and active.interrupt_requested_at is None:
        disposition = Disposition.INTERRUPTING
    data = {**queued, "disposition": disposition.value, "behind": str(active.pk), "position": position}
    if policy == AgentVersion.BusyPolicy.STEER:
        data["steer_refused"] = why_not
    (event,) = record_events(run, [(EventType.RUN_QUEUED, data)])
    sent = Sent(run, disposition, run.pk, active.pk, position, event.seq - 1)
    if disposition == Disposition.INTERRUPTING:
        _interrupt(conversation, active)
    return sent


def _steer_problem(conversation: Conversation, active: Run, message: Run, options: RunOptions) -> str | None:
    """Why a message cannot steer the active run, or None. What cannot steer is queued instead."""
    if active.interrupt_requested_at is not None:
        return f"Run {active.pk} is being interrupted: the message runs after it."
    if active.status != Run.Status.RUNNING:
        return f"Run {active.pk} was {active.status}, not running: the message runs after it."
    if active.agent_version is not None and active.agent_version.is_chat:
        return "A chat agent's run is one model call, which takes no message mid-way: the message runs after it."
    others = queued_behind(conversation).exclude(pk=message.pk)
    if others.exclude(pk__in=PendingSteer.objects.filter(into=active).values("message")).exists():
        return "Messages already wait behind the run: the message runs after them, in order."
    if options.files or options.mcp_tokens or options.budget_usd is not None or options.budget_calls is not None:
        return "A message with files, tokens or a budget of its own runs on its own, after the run."
    if options.agent or options.skills is not None or options.preferred_skills or options.mcp_servers is not None:
        return "A message that chooses its own agent, skills or MCP servers runs on its own, after the run."
    if SLASH_COMMAND.match(options.text):
        return "A message that invokes a skill runs on its own, after the run."
    return None


def _check_queue_room(conversation: Conversation) -> None:
    waiting = queued_behind(conversation).count()
    if waiting >= settings.RUN_QUEUE_MAX:
        raise ServiceError(
            f"{waiting} messages already wait in this conversation, the most it holds (RUN_QUEUE_MAX); "
            "wait for its runs to end, or cancel a waiting one (POST …/runs/{id}/cancel).",
            status=429,
            code="queue_full",
        )


def busy_policy(conversation: Conversation, active: Run) -> str:
    """What a message sent while `active` runs does: the policy of the agent version the active run uses (the one
    the message would disturb), or, for a run stored without one, of the conversation's agent."""
    version = active.agent_version or run_version(conversation)
    return version.busy_policy


def _check_startable(conversation: Conversation) -> None:
    if conversation.is_archived:
        raise Conflict("This conversation is archived; unarchive it or start a new one.", code="archived")
    if not conversation.tenant.is_active:
        raise Conflict(f"Tenant '{conversation.tenant_id}' is inactive.", code="tenant_inactive")
    if conversation.model is not None and not conversation.model.is_usable:
        raise Conflict(
            f"This conversation's model '{conversation.model_id}' is deprecated; start a new conversation.",
            code="model_deprecated",
        )


def _decide(conversation: Conversation, user_id: str, options: RunOptions) -> _Decided:
    """Each feature's answer to what the message asks, or the ServiceError that says what to fix."""
    tenant = conversation.tenant
    try:
        ratelimit.check(ratelimit.run_limits(tenant, user_id))
    except ratelimit.RateLimited as limited:
        raise ServiceError(
            str(limited.detail), status=429, code="rate_limited", retry_after=limited.retry_after
        ) from None
    skills = None if options.skills is None else checked_skills(tenant, options.skills, "skills")
    preferred = checked_skills(tenant, options.preferred_skills, "preferred_skills")
    servers = None if options.mcp_servers is None else checked_servers(tenant, options.mcp_servers)
    agent = run_version(conversation, options.agent)
    if agent.is_chat and options.files:
        # A chat run reads no workspace: the files would be stored where its model never looks.
        raise ServiceError(
            f"Agent {agent.profile.name!r} is a chat without tools, which reads no files; "
            "put the text in the message, or choose an agent of kind 'agent'.",
            code="files_not_supported",
            fields={"file": ["A chat agent reads no files."]},
        )
    try:
        if not agent.is_chat:  # a chat runs no skills: to it, `/name` is text like any other
            check_command(tenant, options.text)
    except SkillProblem as problem:
        raise ServiceError(str(problem), code="unknown_command") from None
    model = conversation.model or _agent_model(tenant, agent)
    budget_usd, budget_calls = effective_budget(
        tenant,
        options.budget_usd,
        options.budget_calls,
        agent_usd=agent.run_budget_usd,
        agent_calls=agent.run_budget_calls,
    )
    return _Decided(agent, model, skills, preferred, servers, budget_usd, budget_calls)


def _agent_model(tenant: Tenant, agent: AgentVersion) -> LanguageModel:
    """The model an agent version runs on (the tenant's default when it names none), or why it cannot."""
    model = agent.model or tenant.default_model
    if not model.is_usable:
        raise Conflict(
            f"Agent {agent.label} runs on model '{model.pk}', which is deprecated; "
            "choose an active model for the agent, or name one for the conversation.",
            code="model_deprecated",
        )
    return model


def interrupt_run(conversation: Conversation) -> Run:
    """Ask the conversation's active run to stop; a queued or waiting run ends at once, a running one within
    seconds. What a waiting run asked is closed: nobody can decide for a run that is over. Messages waiting
    behind it then start, in order (cancel them first to drop them: `cancel_message`)."""
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if locked.active_run_id is None:
            raise Conflict("No run is active in this conversation.", code="no_active_run")
        run = _interrupt(locked, Run.objects.get(pk=locked.active_run_id))
    run.refresh_from_db()
    return run


def _interrupt(conversation: Conversation, active: Run) -> Run:
    """Interrupt the active run, inside the conversation's row lock: one without a worker (queued, waiting) ends
    now, and what waited behind it starts; a running one's worker is told, and ends it with its events and usage
    (its worker then starts what waited)."""
    run = Run.objects.select_for_update().get(pk=active.pk)
    if run.interrupt_requested_at is None:
        run.interrupt_requested_at = timezone.now()
        run.save(update_fields=["interrupt_requested_at"])
    if run.status == Run.Status.QUEUED and not run.suspensions:
        ended: dict[str, Any] = {"reason": "interrupted", "message": "Interrupted before it started."}
    else:  # waiting for a person (or queued to resume): its earlier legs' usage is its own
        ended = {"reason": "interrupted", "message": "Interrupted while it waited.", "usage": run_totals(run.pk)}
    ended_without_worker = finish_run(
        run.pk, Run.Status.INTERRUPTED, result=ended, from_statuses=[Run.Status.QUEUED, Run.Status.WAITING]
    )
    run_id = run.pk
    if ended_without_worker:
        approvals.cancel_pending(run_id)  # with its end: nobody can decide for a run that is over
        conversation.active_run = None
        promote_next(conversation)
    else:
        transaction.on_commit(lambda: realtime.signal_interrupt(run_id))
    return run


def cancel_message(conversation: Conversation, run_id: UUID | str) -> Run:
    """Drop a message waiting behind the active run: its run ends `interrupted` (reason `cancelled`) with its one
    terminal event; nothing else changes. The active run itself is interrupted, not cancelled (`interrupt_run`)."""
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        run = Run.objects.select_for_update().filter(pk=run_id, conversation=locked).first()
        if run is None:  # or taken in meanwhile by the run it steered
            raise ServiceError("Not found.", status=404, code="not_found")
        if run.pk == locked.active_run_id:
            raise Conflict(
                f"Run {run.pk} is the conversation's active run; interrupt it instead (POST …/interrupt).",
                code="run_active",
            )
        if run.status != Run.Status.QUEUED:
            raise Conflict(
                f"Run {run.pk} has already ended ({run.status}); only a message still waiting can be cancelled.",
                code="run_finished",
            )
        PendingSteer.objects.filter(message=run).delete()
        finish_run(
            run.pk,
            Run.Status.INTERRUPTED,
            result={"reason": "cancelled", "message": "Cancelled while it waited behind another run."},
            from_statuses=[Run.Status.QUEUED],
        )
    run.refresh_from_db()
    return run


@dataclass(frozen=True)
class MessageQueue:
    """The messages waiting behind a conversation's active run, by their runs' ids."""

    positions: dict[UUID, int]  # each one's place in line (1: next)
    steering: dict[UUID, UUID]  # of those sent to steer the running run: that run, until it takes them in

    def position(self, run: Run) -> int | None:
        return self.positions.get(run.pk)

    def steers(self, run: Run) -> UUID | None:
        return self.steering.get(run.pk)


def message_queue(conversation: Conversation) -> MessageQueue:
    """Who waits behind the conversation's active run, in order (two queries)."""
    line = list(queued_behind(conversation).values_list("pk", flat=True))
    steering = dict(PendingSteer.objects.filter(message_id__in=line).values_list("message_id", "into_id"))
    return MessageQueue({pk: place for place, pk in enumerate(line, start=1)}, steering)


# --- People in the loop ---------------------------------------------------------------------------


def decide_approval(approval: Approval, who: Who, **decision: Any) -> Approval:
    """Allow or deny an approval (once: a second decision is a 409), then wake its run wherever it waits.

    An edited input (`updated_input`) passes the run's agent profile again: a person may change what the call
    does, never past what the profile allows (the gate asked only because a rule said `ask`)."""
    updated_input = decision.get("updated_input")
    if decision.get("allow") and isinstance(updated_input, Mapping):
        _check_edited_input(approval, updated_input)
    decided = approvals.decide_approval(approval.pk, who, **decision)
    wake_run(decided.run_id)
    return decided


def answer_question(question: Question, who: Who, answers: Mapping[str, Any]) -> Question:
    """Answer the agent's question (once), then wake its run wherever it waits."""
    answered = approvals.answer_question(question.pk, who, answers)
    wake_run(answered.run_id)
    return answered


def _check_edited_input(approval: Approval, updated_input: Mapping[str, Any]) -> None:
    run = Run.objects.select_related("agent_version__profile", "conversation__tenant").get(pk=approval.run_id)
    refusal = run_agent(run).policy().refusal(approval.tool, updated_input)
    if refusal is not None:
        raise ServiceError(
            f"The edited input is one the agent profile refuses: {refusal} Send an input it allows, or deny the call.",
            code="input_refused",
            fields={"updated_input": [refusal]},
        )
