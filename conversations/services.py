"""API-side workflows: creating and deleting conversations, starting and interrupting runs."""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from api import ratelimit
from api.errors import Conflict, ServiceError
from conversations import realtime
from conversations.events import EventType, finish_run, record_events
from conversations.models import Conversation, Run
from mcp_servers.services import ServerProblem
from mcp_servers.services import check_choice as check_server_choice
from mcp_servers.vault import seal
from runs.dispatch import dispatch_run
from skills.archive import SkillProblem
from skills.services import check_command, check_selection
from tenants.models import LanguageModel, Tenant
from usage.services import effective_budget, effective_conversation_budget

logger = logging.getLogger(__name__)


def resolve_model(tenant: Tenant, model_id: str | None) -> LanguageModel:
    """The catalog model a conversation should use: the one named, or the tenant's default."""
    if not model_id:
        if not tenant.default_model.is_usable:
            raise ServiceError(
                f"The tenant's default model '{tenant.default_model_id}' is deprecated; name an active model.",
                code="model_deprecated",
            )
        return tenant.default_model
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
    model_id: str | None = None,
    title: str = "",
    skills: Sequence[str] | None = None,
    mcp_servers: Sequence[str] | None = None,
    budget: Mapping[str, Any] | None = None,
) -> Conversation:
    """A new conversation; its budget is the tenant's default, lowered by `budget` (`usd`, `calls`)."""
    if not tenant.is_active:
        raise Conflict(f"Tenant '{tenant.pk}' is inactive.", code="tenant_inactive")
    model = resolve_model(tenant, model_id)
    chosen = None if skills is None else checked_skills(tenant, skills, "skills")
    servers = None if mcp_servers is None else checked_servers(tenant, mcp_servers)
    budget_usd, budget_calls = effective_conversation_budget(
        tenant, (budget or {}).get("usd"), (budget or {}).get("calls")
    )
    return Conversation.objects.create(
        tenant=tenant,
        user_id=user_id,
        model=model,
        title=title,
        skills=chosen,
        mcp_servers=servers,
        budget_usd=budget_usd,
        budget_calls=budget_calls,
    )


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
    """Delete a conversation with its runs and events; refused while a run is active in it."""
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if locked.active_run_id is not None:
            raise Conflict(
                "A run is active in this conversation; interrupt it before deleting.", code="run_in_progress"
            )
        locked.delete()


def start_run(
    conversation: Conversation,
    text: str,
    user_id: str = "",
    *,
    budget: Mapping[str, Any] | None = None,
    skills: Sequence[str] | None = None,
    preferred_skills: Sequence[str] = (),
    mcp_servers: Sequence[str] | None = None,
    mcp_tokens: Mapping[str, str] | None = None,
) -> Run:
    """Store a queued Run and its `run.queued` event, then hand it to a worker once committed.

    `skills` narrows the conversation's skills for this message; `preferred_skills` are added and the
    agent is told to use them first; a text that starts with `/name` invokes that skill.
    """
    if not text.strip():
        raise ServiceError("The message text is empty.", code="empty_text")
    if len(text) > settings.RUN_MAX_INPUT_CHARS:
        raise ServiceError(
            f"The message is {len(text)} characters; the limit is {settings.RUN_MAX_INPUT_CHARS}.",
            code="text_too_long",
        )
    with transaction.atomic():
        # The conversation's row only (of=self): its tenant's and model's rows are read, not locked, so
        # runs starting at once in many conversations of a tenant do not queue on the tenant's row.
        locked = (
            Conversation.objects.select_for_update(of=("self",))
            .select_related("tenant", "model")
            .get(pk=conversation.pk)
        )
        if locked.is_archived:
            raise Conflict("This conversation is archived; unarchive it or start a new one.", code="archived")
        if not locked.tenant.is_active:
            raise Conflict(f"Tenant '{locked.tenant_id}' is inactive.", code="tenant_inactive")
        if not locked.model.is_usable:
            raise Conflict(
                f"This conversation's model '{locked.model_id}' is deprecated; start a new conversation.",
                code="model_deprecated",
            )
        if locked.active_run_id is not None:
            raise Conflict(
                f"Run {locked.active_run_id} is still active in this conversation; "
                "wait for its terminal event or interrupt it first.",
                code="run_in_progress",
            )
        try:
            ratelimit.check(ratelimit.run_limits(locked.tenant, user_id or locked.user_id))
        except ratelimit.RateLimited as limited:
            raise ServiceError(
                str(limited.detail), status=429, code="rate_limited", retry_after=limited.retry_after
            ) from None
        chosen = None if skills is None else checked_skills(locked.tenant, skills, "skills")
        preferred = checked_skills(locked.tenant, preferred_skills, "preferred_skills")
        servers = None if mcp_servers is None else checked_servers(locked.tenant, mcp_servers)
        try:
            check_command(locked.tenant, text)
        except SkillProblem as problem:
            raise ServiceError(str(problem), code="unknown_command") from None
        budget_usd, budget_calls = effective_budget(
            locked.tenant, (budget or {}).get("usd"), (budget or {}).get("calls")
        )
        run = Run.objects.create(
            conversation=locked,
            model=locked.model,
            user_id=user_id or locked.user_id,
            input=text,
            heartbeat_at=timezone.now(),  # for a queued run: when it was handed to a worker
            budget_usd=budget_usd,
            budget_calls=budget_calls,
            skills=chosen,
            preferred_skills=preferred,
            mcp_servers=servers,
            mcp_tokens=seal(dict(mcp_tokens)) if mcp_tokens else None,
        )
        locked.active_run = run
        locked.save(update_fields=["active_run", "updated_at"])
        budget_data = {"usd": None if budget_usd is None else str(budget_usd), "calls": budget_calls}
        queued = {
            "input": text,
            "user_id": run.user_id,
            "model": run.model_id,
            "budget": budget_data,
            "skills": chosen,
            "preferred_skills": preferred,
            "mcp_servers": servers,
            "mcp_tokens": sorted(mcp_tokens or {}),  # their names only
        }
        record_events(run, [(EventType.RUN_QUEUED, queued)])
        transaction.on_commit(lambda: dispatch_run(run.pk))
    conversation.active_run = run
    return run


def interrupt_run(conversation: Conversation) -> Run:
    """Ask the conversation's active run to stop; a queued run ends at once, a running one within seconds."""
    with transaction.atomic():
        locked = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if locked.active_run_id is None:
            raise Conflict("No run is active in this conversation.", code="no_active_run")
        run = Run.objects.select_for_update().get(pk=locked.active_run_id)
        if run.interrupt_requested_at is None:
            run.interrupt_requested_at = timezone.now()
            run.save(update_fields=["interrupt_requested_at"])
    ended_while_queued = finish_run(
        run.pk,
        Run.Status.INTERRUPTED,
        result={"reason": "interrupted", "message": "Interrupted before it started."},
        from_statuses=[Run.Status.QUEUED],
    )
    if not ended_while_queued:
        realtime.signal_interrupt(run.pk)
    run.refresh_from_db()
    return run
