from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Self, TypeVar

from django.db import connection, models
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce

from conversations.models import Conversation, Run
from tenants.models import TOKEN_KINDS, LanguageModel, ModelPrice, Tenant

COST_PLACES = Decimal("1e-10")
# The rollup's period. Every time zone's offset has been a whole number of quarter hours since 1980
# (Asia/Kolkata +5:30, Asia/Kathmandu +5:45), so a quarter hour never straddles a local midnight.
ROLLUP_PERIOD = timedelta(minutes=15)


def usd(amount: Decimal | None) -> str:
    """A cost as the API shows it: fixed-point with 10 places, never `0E-10`."""
    return f"{(amount or Decimal(0)).quantize(COST_PLACES):f}"


def usage_figures(row: dict[str, Any]) -> dict[str, Any]:
    """An aggregated row in the API's shape: integers for tokens and calls, the cost as a string."""
    # PostgreSQL sums bigints as numeric, hence int().
    figures: dict[str, Any] = {name: int(row[f"{name}_sum"]) for name in TOKEN_KINDS}
    return {**figures, "model_calls": int(row["model_calls"]), "cost_usd": usd(row["cost_usd_sum"])}


def summed(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Aggregated rows added up, as one aggregated row: over groups that cover some usage, its totals."""
    total: dict[str, Any] = {**{f"{name}_sum": 0 for name in TOKEN_KINDS}, "model_calls": 0, "cost_usd_sum": Decimal(0)}
    for row in rows:
        for name in total:
            total[name] += row[name]
    return total


_Usage = TypeVar("_Usage", bound=models.Model)


class UsageQuerySet(models.QuerySet[_Usage]):
    """What reports ask of usage, from the records themselves or from their rollup: the same figures."""

    time_field: ClassVar[str]
    calls: ClassVar[Any]  # the aggregate that counts model calls

    def for_tenant(self, tenant: Tenant | str) -> Self:
        return self.filter(tenant=tenant)

    def between(self, start: datetime | None, end: datetime | None) -> Self:
        """Usage in [start, end); a missing bound is open."""
        rows = self
        if start is not None:
            rows = rows.filter(**{f"{self.time_field}__gte": start})
        if end is not None:
            rows = rows.filter(**{f"{self.time_field}__lt": end})
        return rows

    def totals(self) -> dict[str, Any]:
        """The five token kinds, `model_calls` and `cost_usd` (a string) over this usage, in one query."""
        return usage_figures(self.order_by().aggregate(**self.sums()))

    def grouped(self, key: Any, by_cost: bool = False) -> "models.QuerySet[Any]":
        """One row per value of the expression `key`, ordered by key or by cost (highest first).

        Rows hold "key" and the aggregates; usage_figures() turns one into the API's shape.
        """
        order = ("-cost_usd_sum", "key") if by_cost else ("key",)
        return self.order_by().values(key=key).annotate(**self.sums()).order_by(*order)

    def sums(self) -> dict[str, Any]:
        """The aggregates of usage_figures(), for `annotate` or `aggregate`."""
        # Suffixed aliases: an annotation may not share a name with a model field.
        zero_cost = models.Value(Decimal(0), output_field=models.DecimalField(max_digits=16, decimal_places=10))
        return {
            **{f"{name}_sum": Coalesce(Sum(name), 0) for name in TOKEN_KINDS},
            "model_calls": self.calls,
            "cost_usd_sum": Coalesce(Sum("cost_usd"), zero_cost),
        }


class UsageRecordQuerySet(UsageQuerySet["UsageRecord"]):
    time_field = "created_at"
    calls = Count("pk")


class UsageRollupQuerySet(UsageQuerySet["UsageRollup"]):
    time_field = "period"
    calls = Coalesce(Sum("model_calls"), 0)


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
    mid-call leaves it behind for the reaper, which fails that worker's runs and releases the
    reservations of runs no longer running (usage.budgets.release_abandoned).
    """

    # No database constraint: its check would lock the run's row at every model call (the gateway
    # makes the reservation); Django still deletes a run's reservations with the run.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="budget_reservations", db_constraint=False)
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


class UsageRollup(models.Model):
    """The usage records of a quarter hour summed per tenant, model and end user: what reports read.

    Kept by the database, not by us: PostgreSQL triggers (migration 0004) add the records a
    statement inserts, subtract those it deletes and move those it updates, within that statement,
    so the rollup always holds exactly the records' sums, however they were written. The calls of
    one conversation share their quarter hours, so a month's report reads several times fewer rows
    than records (the bench: 165,000 for 1,000,000). A quarter hour lies within one local day
    wherever the tenant lives (see ROLLUP_PERIOD).
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    period = models.DateTimeField(help_text="The quarter hour's start.")
    model = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="+")
    user_id = models.CharField(max_length=200, blank=True)
    input_tokens = models.PositiveBigIntegerField()
    output_tokens = models.PositiveBigIntegerField()
    cache_write_5m_tokens = models.PositiveBigIntegerField()
    cache_write_1h_tokens = models.PositiveBigIntegerField()
    cache_read_tokens = models.PositiveBigIntegerField()
    model_calls = models.PositiveBigIntegerField()
    cost_usd = models.DecimalField("cost (USD)", max_digits=20, decimal_places=10)

    objects = UsageRollupQuerySet.as_manager()

    class Meta:
        constraints = [
            # The triggers' ON CONFLICT target, and the index of a report's tenant and window.
            models.UniqueConstraint(fields=["tenant", "period", "model", "user_id"], name="usage_rollup_once"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.period:%Y-%m-%d %H:%M} {self.model_id} {self.user_id}"


def usage_for_report(start: datetime | None, end: datetime | None, by_conversation: bool) -> UsageQuerySet[Any]:
    """Where a report reads: the rollup when it holds the answer, otherwise the records; the figures are the same.

    The rollup knows no conversations and sums whole quarter hours, so the window's ends must fall
    on quarter hours (dates do); and only PostgreSQL keeps it (its statement triggers): the embedded
    SQLite reads the records.
    """
    on_periods = all(bound is None or on_period(bound) for bound in (start, end))
    if by_conversation or not on_periods or connection.vendor != "postgresql":
        return UsageRecord.objects.all()
    return UsageRollup.objects.all()


def on_period(moment: datetime) -> bool:
    """Whether a moment is the start of a rollup period."""
    return (moment - datetime(2000, 1, 1, tzinfo=UTC)) % ROLLUP_PERIOD == timedelta(0)
