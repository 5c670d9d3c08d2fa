"""Usage of model calls: recording each once (the gateway reads it off the stream), totals, and budgets."""

from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations.models import Run
from tenants.models import LanguageModel, Tenant, normalize_usage
from usage import budgets
from usage.models import COST_PLACES, UsageRecord

Json = dict[str, Any]


def record_usage(
    run_id: Run | UUID | str,
    message_id: str,
    usage: Json,
    reservation: int | None = None,
    model: LanguageModel | None = None,
    *,
    on_run: bool = True,
) -> UsageRecord | None:
    """Store one model call of the run, at its model's price in effect now; None if that call is already recorded.

    `run_id` is the run or its id; `usage` is the call's Anthropic usage dict (as UsageTap.usage gives it);
    `model` the catalog model the call named (the run's own by default), which the gateway has checked
    the run was given. Idempotent on (run, message_id), also against a concurrent call for the same
    message. The call's cost replaces its budget `reservation` (usage.budgets) in the same transaction; a call
    not `on_run` (the conversation's title) is not counted on the run's own budget.
    """
    if not message_id:
        raise ValueError("A model call without a message id cannot be recorded once and only once.")
    # The gateway passes its run, loaded with its conversation, tenant and model when the run began:
    # reading them again cost every model call some 2 ms on the way to the answer's last chunk.
    run = (
        run_id
        if isinstance(run_id, Run)
        else Run.objects.select_related("conversation__tenant", "model").get(pk=run_id)
    )
    model = model or run.model
    price = model.price_at(timezone.now())  # the price of the call's time, kept on its record
    cost = price.cost(usage).quantize(COST_PLACES)
    record = UsageRecord(
        tenant_id=run.conversation.tenant_id,
        conversation_id=run.conversation_id,
        run=run,
        user_id=run.user_id,
        model=model,
        message_id=message_id,
        cost_usd=cost,
        price=price,
        **normalize_usage(usage),
    )
    with transaction.atomic():
        try:
            # A savepoint, so that the transaction survives the duplicate.
            with transaction.atomic():
                record.save(force_insert=True)
        except IntegrityError:
            if UsageRecord.objects.filter(run_id=run.pk, message_id=message_id).exists():
                if reservation is not None:
                    budgets.release(reservation, run.conversation.tenant_id)
                return None
            raise
        budgets.settle(run, reservation, record.created_at, cost, on_run=on_run)
    return record


def run_totals(run_id: UUID | str) -> dict[str, Any]:
    """The run's recorded usage: the five token kinds summed, `model_calls`, and `cost_usd` as a string."""
    return UsageRecord.objects.filter(run_id=run_id).totals()


def effective_budget(
    tenant: Tenant,
    override_usd: Decimal | None = None,
    override_calls: int | None = None,
    *,
    agent_usd: Decimal | None = None,
    agent_calls: int | None = None,
) -> tuple[Decimal | None, int | None]:
    """A new run's (budget_usd, budget_calls): the tenant's default, lowered by its agent profile's, lowered by a
    per-request override.

    None means unlimited. An override can tighten the operator's limit but never loosen it (a
    tenant's own key must not raise what the operator set); each of the two is decided on its own.
    """
    return (
        _lower(_lower(tenant.run_budget_usd, agent_usd), override_usd),
        _lower(_lower(tenant.run_budget_calls, agent_calls), override_calls),
    )


def effective_conversation_budget(
    tenant: Tenant, override_usd: Decimal | None = None, override_calls: int | None = None
) -> tuple[Decimal | None, int | None]:
    """A new conversation's (budget_usd, budget_calls), decided as a run's is (effective_budget)."""
    return (
        _lower(tenant.conversation_budget_usd, override_usd),
        _lower(tenant.conversation_budget_calls, override_calls),
    )


def _lower(default: Any, override: Any) -> Any:
    if override is None:
        return default
    return override if default is None else min(default, override)
