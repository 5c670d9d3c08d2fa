from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import models
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce

from conversations.models import Conversation, Run
from tenants.models import TOKEN_KINDS, LanguageModel, ModelPrice, Tenant

COST_PLACES = Decimal("1e-10")


def usd(amount: Decimal | None) -> str:
    """A cost as the API shows it: fixed-point with 10 places, never `0E-10`."""
    return f"{(amount or Decimal(0)).quantize(COST_PLACES):f}"


def _sums() -> dict[str, Any]:
    # Suffixed aliases: an annotation may not share a name with a model field.
    zero_cost = models.Value(Decimal(0), output_field=models.DecimalField(max_digits=16, decimal_places=10))
    return {
        **{f"{name}_sum": Coalesce(Sum(name), 0) for name in TOKEN_KINDS},
        "model_calls": Count("pk"),
        "cost_usd_sum": Coalesce(Sum("cost_usd"), zero_cost),
    }


def usage_figures(row: dict[str, Any]) -> dict[str, Any]:
    """An aggregated row in the API's shape: integers for tokens and calls, the cost as a string."""
    # PostgreSQL sums bigints as numeric, hence int().
    figures: dict[str, Any] = {name: int(row[f"{name}_sum"]) for name in TOKEN_KINDS}
    return {**figures, "model_calls": row["model_calls"], "cost_usd": usd(row["cost_usd_sum"])}


class UsageRecordQuerySet(models.QuerySet["UsageRecord"]):
    def for_tenant(self, tenant: Tenant | str) -> "UsageRecordQuerySet":
        return self.filter(tenant=tenant)

    def between(self, start: datetime | None, end: datetime | None) -> "UsageRecordQuerySet":
        """Records in [start, end); a missing bound is open."""
        records = self
        if start is not None:
            records = records.filter(created_at__gte=start)
        if end is not None:
            records = records.filter(created_at__lt=end)
        return records

    def totals(self) -> dict[str, Any]:
        """The five token kinds, `model_calls` and `cost_usd` (a string) over these records, in one query."""
        return usage_figures(self.order_by().aggregate(**_sums()))

    def grouped(self, key: Any, by_cost: bool = False) -> "models.QuerySet[Any]":
        """One row per value of the expression `key`, ordered by key or by cost (highest first).

        Rows hold "key" and the aggregates; usage_figures() turns one into the API's shape.
        """
        order = ("-cost_usd_sum", "key") if by_cost else ("key",)
        return self.order_by().values(key=key).annotate(**_sums()).order_by(*order)


class UsageRecord(models.Model):
    """One model call of a run, metered by the gateway and priced from the catalog when it was made.

    `price` is the model's price in effect at that moment and `cost_usd` the call's cost at it; both
    stay as they were when the catalog's prices change, so reports (sums of `cost_usd`) never re-price.

    A billing record outlives what it bills: deleting a conversation (and so its runs) keeps the
    rows, with `conversation` and `run` set to NULL, and tenant, end user and model still on them.
    Deleting the tenant itself deletes them, like everything else the tenant owns.
    """

    # db_index=False where a composite index below already starts with the column.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage_records", db_index=False)
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records", db_index=False
    )
    user_id = models.CharField(max_length=200, blank=True, help_text="The tenant's end user (X-User-ID).")
    model = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="usage_records")
    message_id = models.CharField(max_length=200, help_text="The API's message id (msg_…) of the call.")
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_5m_tokens = models.PositiveBigIntegerField(default=0)
    cache_write_1h_tokens = models.PositiveBigIntegerField(default=0)
    cache_read_tokens = models.PositiveBigIntegerField(default=0)
    # Prices are per million tokens with up to 6 places; 10 places keep a call's cost exact for
    # prices of up to 4 places (0.08, 3.75: every real price list), and within 1e-10 USD otherwise.
    cost_usd = models.DecimalField("cost (USD)", max_digits=16, decimal_places=10)
    price = models.ForeignKey(
        ModelPrice,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="usage_records",
        help_text="The price the call was charged at. Empty for calls recorded before prices had a history.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = UsageRecordQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # A call is counted once however often the gateway (or a retry) reports it.
            models.UniqueConstraint(fields=["run", "message_id"], name="usage_record_once_per_call"),
        ]
        indexes = [models.Index(fields=["tenant", "created_at"], name="usage_tenant_time_idx")]

    def __str__(self) -> str:
        return f"{self.message_id} ({self.model_id}, ${usd(self.cost_usd)})"


class BudgetLevel(models.TextChoices):
    TENANT_MONTH = "tenant_month", "Tenant, per month"
    USER_DAY = "user_day", "End user, per day"
    USER_MONTH = "user_month", "End user, per month"
    CONVERSATION = "conversation", "Conversation"
    RUN = "run", "Run"


class BudgetCounter(models.Model):
    """What one budget has spent in one period, and what model calls in flight hold of it.

    The gateway keeps it (usage.budgets): a call reserves its worst-case cost before it goes
    upstream, and its usage record replaces the reservation with the real cost in one transaction.
    `subject` is the end user, conversation or run the budget belongs to ("" for the tenant);
    `period` the month ("2026-11") or day ("2026-11-28") where the tenant lives ("" for none).
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="budget_counters", db_index=False)
    level = models.CharField(max_length=20, choices=BudgetLevel.choices)
    subject = models.CharField(max_length=200, blank=True)
    period = models.CharField(max_length=10, blank=True)
    spent_usd = models.DecimalField(max_digits=16, decimal_places=10, default=Decimal(0))
    calls = models.PositiveBigIntegerField(default=0)
    reserved_usd = models.DecimalField(max_digits=16, decimal_places=10, default=Decimal(0))
    reserved_calls = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "level", "subject", "period"], name="budget_counter_once")
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.level} {self.subject} {self.period}".strip()


class BudgetReservation(models.Model):
    """The worst-case cost of one model call in flight, held on the counters named in `keys`.

    Replaced by the call's cost when it is recorded, released when it fails; a worker killed
    mid-call leaves it behind for the reaper, which releases the reservations of runs no longer
    running on the worker that made them.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="budget_reservations")
    usd = models.DecimalField(max_digits=16, decimal_places=10)
    keys = models.JSONField(help_text="[level, subject, period] of each counter it holds.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"${usd(self.usd)} for run {self.run_id}"


class UserBudget(models.Model):
    """One end user's own budgets, in place of the tenant's defaults for its users; empty = the default."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="user_budgets", db_index=False)
    user_id = models.CharField(max_length=200)
    daily_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    daily_calls = models.PositiveIntegerField(null=True, blank=True)
    monthly_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    monthly_calls = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "user_id"], name="user_budget_once")]

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.user_id}"
