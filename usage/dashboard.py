"""The operator's usage dashboard: spend, runs and failures over the last days, of every tenant or one.

The database does the counting (one GROUP BY per chart or table); Python only lays the grouped rows
out on the period's days. Days are UTC days, so tenants living in different time zones share one axis.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, F, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.http import QueryDict

from conversations.models import Run
from tenants.models import Tenant
from usage.models import UsageRecord

PERIODS = (7, 30, 90)
DEFAULT_PERIOD = 30
TOP = 10
TOKEN_SUMS = ("tokens_in", "tokens_out", "tokens_cached")
# How runs end, in the order their bars stack.
ENDINGS = (Run.Status.COMPLETED.value, Run.Status.FAILED.value, Run.Status.INTERRUPTED.value)


@dataclass(frozen=True)
class Period:
    """The last `days` UTC days, today included."""

    days: int
    today: date

    @property
    def dates(self) -> list[date]:
        first = self.today - timedelta(days=self.days - 1)
        return [first + timedelta(days=n) for n in range(self.days)]

    @property
    def start(self) -> datetime:
        return datetime.combine(self.dates[0], time(), UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.today + timedelta(days=1), time(), UTC)


@dataclass(frozen=True)
class Series:
    label: str
    values: list[Any]


@dataclass(frozen=True)
class Chart:
    """A stacked bar chart of figures per day, drawn by dashboard.js and listed as a table for readers without it."""

    id: str
    title: str
    unit: str  # "USD" or "runs"
    dates: list[date]
    series: list[Series]

    def rows(self) -> list[tuple[date, list[Any]]]:
        return [(day, [series.values[n] for series in self.series]) for n, day in enumerate(self.dates)]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "unit": self.unit,
            "days": [day.isoformat() for day in self.dates],
            "series": [{"label": s.label, "values": [float(v) for v in s.values]} for s in self.series],
        }


def dashboard_context(query: QueryDict, today: date) -> dict[str, Any]:
    """The page's choices and figures for `?days=` (7, 30 or 90) and `?tenant=` (an id); any other value means the default."""
    try:
        days = int(query.get("days", ""))
    except ValueError:
        days = DEFAULT_PERIOD
    if days not in PERIODS:
        days = DEFAULT_PERIOD
    tenants = list(Tenant.objects.order_by("id").only("id", "name"))
    # Picked from the list the form offers: no second query, and an unknown id is simply no filter.
    tenant = next((t for t in tenants if t.pk == query.get("tenant")), None)
    return {
        "periods": PERIODS,
        "days": days,
        "tenants": tenants,
        "tenant": tenant,
        **dashboard_figures(Period(days, today), tenant),
    }


def dashboard_figures(period: Period, tenant: Tenant | None) -> dict[str, Any]:
    """Charts, tables and totals of the period, in seven queries."""
    records = UsageRecord.objects.between(period.start, period.end)
    ended = Run.objects.filter(finished_at__gte=period.start, finished_at__lt=period.end)
    if tenant is not None:
        records = records.for_tenant(tenant)
        ended = ended.for_tenant(tenant)
    dates = period.dates

    def spend_by(key: str) -> list[Series]:
        by_day = records.values(day=TruncDate("created_at", tzinfo=UTC), series=F(key))
        return per_day(by_day.annotate(value=Sum("cost_usd")), dates)

    runs = ended.filter(status__in=ENDINGS).values(day=TruncDate("finished_at", tzinfo=UTC), series=F("status"))
    run_series = per_day(runs.annotate(value=Count("pk")), dates, order=ENDINGS)
    charts = [
        Chart("spend-by-tenant", "Spend per day by tenant (USD)", "USD", dates, spend_by("tenant_id")),
        Chart("spend-by-model", "Spend per day by model (USD)", "USD", dates, spend_by("model_id")),
        Chart("runs", "Runs ended per day", "runs", dates, run_series),
    ]
    totals = records.totals()
    return {
        "charts": charts,
        "charts_json": [chart.as_json() for chart in charts],
        "totals": {
            **totals,
            "cost_usd": Decimal(totals["cost_usd"]),
            "runs": {series.label: sum(series.values) for series in run_series},
        },
        "top_users": top(records.values("tenant_id", "user_id")),
        "top_conversations": top(
            records.filter(conversation__isnull=False).values(
                "tenant_id", "conversation_id", title=F("conversation__title")
            )
        ),
        "failures": list(
            ended.filter(status=Run.Status.FAILED)
            .values(reason=F("error__reason"))
            .annotate(runs=Count("pk"))
            .order_by("-runs", "reason")
        ),
    }


def per_day(rows: QuerySet[Any], dates: list[date], order: Sequence[str] = ()) -> list[Series]:
    """Grouped rows of (day, series, value) as one value per day in each series: `order`'s, else the biggest first."""
    index = {day: n for n, day in enumerate(dates)}
    values: dict[str, list[Any]] = {label: [0] * len(dates) for label in order}
    for row in rows.order_by():
        values.setdefault(str(row["series"]), [0] * len(dates))[index[row["day"]]] = row["value"]
    labels = order or sorted(values, key=lambda label: (-sum(values[label]), label))
    return [Series(label, values[label]) for label in labels]


def top(groups: QuerySet[Any]) -> list[dict[str, Any]]:
    """The TOP groups (a `values()` query) that cost the most, with their calls, tokens and cost."""
    # Names unlike the model's fields, which an annotation may not reuse.
    rows = groups.annotate(
        calls=Count("pk"),
        tokens_in=Sum("input_tokens"),
        tokens_out=Sum("output_tokens"),
        tokens_cached=Sum(F("cache_read_tokens") + F("cache_write_5m_tokens") + F("cache_write_1h_tokens")),
        spent_usd=Sum("cost_usd"),
    ).order_by("-spent_usd", *groups.query.values_select)
    # PostgreSQL sums bigints as numeric, hence int().
    return [{**row, **{kind: int(row[kind]) for kind in TOKEN_SUMS}} for row in rows[:TOP]]
