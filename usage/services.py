"""Usage of model calls: recording each once (the gateway reads it off the stream), totals, and budgets."""

from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from conversations.models import Run
from tenants.models import PER_MILLION, Tenant, normalize_usage
from usage.models import COST_PLACES, UsageRecord, usd

Json = dict[str, Any]

# A rough, deliberately cheap size of a request in tokens (see budget_refusal).
BYTES_PER_TOKEN = 4


def record_usage(run_id: UUID | str, message_id: str, usage: Json) -> UsageRecord | None:
    """Store one model call of the run, at its model's price in effect now; None if that call is already recorded.

    `usage` is the call's Anthropic usage dict (as UsageTap.usage gives it). Idempotent on
    (run, message_id), also against a concurrent call for the same message.
    """
    if not message_id:
        raise ValueError("A model call without a message id cannot be recorded once and only once.")
    run = Run.objects.select_related("conversation", "model").get(pk=run_id)
    price = run.model.price_at(timezone.now())  # the price of the call's time, kept on its record
    cost = price.cost(usage).quantize(COST_PLACES)
    record = UsageRecord(
        tenant_id=run.conversation.tenant_id,
        conversation_id=run.conversation_id,
        run=run,
        user_id=run.user_id,
        model=run.model,
        message_id=message_id,
        cost_usd=cost,
        price=price,
        **normalize_usage(usage),
    )
    try:
        # A savepoint, so that a caller's transaction survives the duplicate.
        with transaction.atomic():
            record.save(force_insert=True)
    except IntegrityError:
        if UsageRecord.objects.filter(run_id=run.pk, message_id=message_id).exists():
            return None
        raise
    return record


def run_totals(run_id: UUID | str) -> dict[str, Any]:
    """The run's recorded usage: the five token kinds summed, `model_calls`, and `cost_usd` as a string."""
    return UsageRecord.objects.filter(run_id=run_id).totals()


def effective_budget(
    tenant: Tenant, override_usd: Decimal | None = None, override_calls: int | None = None
) -> tuple[Decimal | None, int | None]:
    """A new run's (budget_usd, budget_calls): the tenant's default, lowered by a per-request override.

    None means unlimited. An override can tighten the operator's limit but never loosen it (a
    tenant's own key must not raise what the operator set); each of the two is decided on its own.
    """
    return (_lower(tenant.run_budget_usd, override_usd), _lower(tenant.run_budget_calls, override_calls))


def _lower(default: Any, override: Any) -> Any:
    if override is None:
        return default
    return override if default is None else min(default, override)


def estimated_input_cost(run: Run, request_body: bytes) -> Decimal:
    """A cheap estimate of a request's input cost: body bytes / 4 as tokens, at the model's input price."""
    return Decimal(len(request_body) // BYTES_PER_TOKEN) * run.model.input_price / PER_MILLION


def budget_refusal(run: Run, request_body: bytes) -> str | None:
    """None when the run may make its next model call; otherwise why not, in words for the model and user.

    Refuses when `run.budget_calls` calls are already recorded, or when the recorded cost plus an
    estimate of this call's input cost would pass `run.budget_usd`. The estimate is deliberately
    rough and cheap: the request body's length in bytes / 4 as input tokens, at the model's input
    price, ignoring caching and output. Calls in flight at the same time are not yet recorded, so
    parallel calls (subagents) can overshoot a budget by what they spend.
    """
    if run.budget_calls is None and run.budget_usd is None:
        return None
    spent = UsageRecord.objects.filter(run_id=run.pk).totals()
    if run.budget_calls is not None and spent["model_calls"] >= run.budget_calls:
        return (
            f"This run has reached its budget of {run.budget_calls} model call(s) "
            f"({spent['model_calls']} made); start a new run to continue."
        )
    if run.budget_usd is not None:
        cost = Decimal(spent["cost_usd"])
        estimate = estimated_input_cost(run, request_body)
        if cost + estimate > run.budget_usd:
            return (
                f"This run's budget of ${run.budget_usd} USD would be exceeded: ${usd(cost)} spent so far, "
                f"and the next model call's input alone is estimated at ${usd(estimate)}."
            )
    return None
