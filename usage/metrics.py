"""`/metrics` for Prometheus, read from the database at each scrape.

Runs, events and model calls are counted where they are stored, so the figures are exact across
every web process and worker, survive restarts, and agree with the usage reports. Only for
monitoring systems: a bearer token (METRICS_TOKEN) or an allowed network (METRICS_ALLOWED_NETWORKS,
loopback by default) opens it.
"""

import hmac
import ipaddress
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Count, F, FloatField, Func, Q, Sum
from django.db.models.functions import Coalesce
from django.db.models.sql.compiler import SQLCompiler
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from api.errors import allow_methods, json_error
from conversations.models import Conversation, Run
from tenants.models import TOKEN_KINDS
from usage.models import usage_figures, usage_for_report

if TYPE_CHECKING:
    from django.db.models.sql.compiler import _AsSqlType  # django-stubs' name for (sql, params)

DURATION_BUCKETS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
WAIT_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
LAUNCH_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class PlatformCollector(Collector):
    def collect(self) -> Iterator[Any]:
        yield from _runs()
        yield from _events()
        yield from _model_calls()


def _runs() -> Iterator[Any]:
    started = CounterMetricFamily("agent_runs_started", "Runs a worker started.", labels=["tenant"])
    ended = CounterMetricFamily(
        "agent_runs_finished", "Runs that ended, by status and reason.", labels=["tenant", "status", "reason"]
    )
    refusals = CounterMetricFamily(
        "agent_budget_refusals",
        "Runs ended because a budget refused a model call, by the budget's level.",
        labels=["tenant", "level"],
    )
    active = GaugeMetricFamily(
        "agent_runs_active", "Runs queued, running or waiting for a person now.", labels=["tenant", "status"]
    )
    tenant = "conversation__tenant_id"
    for row in Run.objects.filter(started_at__isnull=False).values(tenant).annotate(n=Count("pk")).order_by():
        started.add_metric([row[tenant]], row["n"])
    finished = Run.objects.filter(finished_at__isnull=False).values(tenant, "status", reason=F("error__reason"))
    for row in finished.annotate(n=Count("pk")).order_by():
        ended.add_metric([row[tenant], row["status"], str(row["reason"] or "")], row["n"])
    refused = Run.objects.filter(finished_at__isnull=False, error__reason="budget_exceeded")
    for row in refused.values(tenant, level=F("error__level")).annotate(n=Count("pk")).order_by():
        refusals.add_metric([row[tenant], str(row["level"] or "run")], row["n"])
    unfinished = Run.objects.filter(status__in=Run.UNFINISHED).values(tenant, "status").annotate(n=Count("pk"))
    for row in unfinished.order_by():
        active.add_metric([row[tenant], row["status"]], row["n"])
    yield from (started, ended, refusals, active)
    yield _histogram(
        "agent_run_duration_seconds",
        "How long runs took, start to end.",
        Run.objects.filter(started_at__isnull=False, finished_at__isnull=False),
        Seconds(F("finished_at") - F("started_at")),
        DURATION_BUCKETS,
    )
    yield _histogram(
        "agent_run_queue_wait_seconds",
        "How long runs waited for a worker.",
        Run.objects.filter(started_at__isnull=False),
        Seconds(F("started_at") - F("created_at")),
        WAIT_BUCKETS,
    )
    yield _histogram(
        "agent_sandbox_launch_seconds",
        "How long a run's sandboxed CLI took to start and answer.",
        Run.objects.filter(launch_seconds__isnull=False),
        F("launch_seconds"),
        LAUNCH_BUCKETS,
    )


class Seconds(Func):
    """A duration (the difference of two date-times) in seconds, on PostgreSQL and on the embedded SQLite.

    Django's Extract(…, "epoch") needs a native interval type, which SQLite lacks: there Django
    computes a difference of date-times as its microseconds (django_timestamp_diff).
    """

    template = "EXTRACT(EPOCH FROM %(expressions)s)"
    output_field = FloatField()

    def as_sqlite(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any) -> "_AsSqlType":
        return self.as_sql(compiler, connection, template="(%(expressions)s / 1000000.0)", **extra_context)


def _histogram(name: str, documentation: str, runs: Any, seconds: Any, buckets: tuple[float, ...]) -> Any:
    """A histogram of a figure in seconds over runs, per tenant, counted by the database in one query."""
    counts = {f"le_{n}": Count("pk", filter=Q(seconds__lte=bound)) for n, bound in enumerate(buckets)}
    family = HistogramMetricFamily(name, documentation, labels=["tenant"])
    rows = (
        runs.annotate(seconds=seconds)
        .values("conversation__tenant_id")
        .annotate(total=Count("pk"), sum=Coalesce(Sum("seconds"), 0.0), **counts)
        .order_by()
    )
    for row in rows:
        cumulative = [(str(bound), row[f"le_{n}"]) for n, bound in enumerate(buckets)]
        family.add_metric([row["conversation__tenant_id"]], [*cumulative, ("+Inf", row["total"])], row["sum"])
    return family


def _events() -> Iterator[Any]:
    family = CounterMetricFamily("agent_events", "Events written to conversations' logs.", labels=["tenant"])
    # Each conversation's seq counts its events without a gap: no need to count the events themselves.
    for row in Conversation.objects.values("tenant_id").annotate(n=Coalesce(Sum("last_seq"), 0)).order_by():
        family.add_metric([row["tenant_id"]], row["n"])
    yield family


def _model_calls() -> Iterator[Any]:
    calls = CounterMetricFamily(
        "agent_model_calls", "Model calls through the gateway, metered.", labels=["tenant", "model"]
    )
    tokens = CounterMetricFamily("agent_tokens", "Tokens of model calls.", labels=["tenant", "model", "kind"])
    cost = CounterMetricFamily("agent_cost_usd", "Cost of model calls at catalog prices.", labels=["tenant", "model"])
    usage = usage_for_report(None, None, by_conversation=False)  # the rollup, where the database keeps one
    for row in usage.order_by().values("tenant_id", "model_id").annotate(**usage.sums()):
        labels = [row["tenant_id"], row["model_id"]]
        figures = usage_figures(row)
        calls.add_metric(labels, figures["model_calls"])
        cost.add_metric(labels, float(figures["cost_usd"]))
        for kind in TOKEN_KINDS:
            tokens.add_metric([*labels, kind], figures[kind])
    yield from (calls, tokens, cost)


@allow_methods("GET", "HEAD")
async def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _allowed(request):
        return json_error(403, "forbidden", "Metrics need METRICS_TOKEN as a bearer token, or an allowed network.")
    return HttpResponse(await sync_to_async(_exposition)(), content_type=CONTENT_TYPE_LATEST)


def _exposition() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PlatformCollector())
    return generate_latest(registry)


def _allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _, sent = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(sent.encode(), token.encode()):
        return True
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network) for network in settings.METRICS_ALLOWED_NETWORKS)
