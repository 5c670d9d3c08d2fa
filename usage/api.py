import csv
import heapq
import itertools
from collections.abc import Iterable, Iterator
from typing import Any
from zoneinfo import ZoneInfo

from django.db.models import Count, DateField, F, Q, QuerySet
from django.db.models.functions import TruncDate, TruncMonth, TruncWeek
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response

from api.viewsets import TENANT_PARAMETER, TenantScopedViewSet, principal
from conversations.models import Run
from tenants.models import TOKEN_KINDS, Tenant
from usage.models import UsageQuerySet, UsageRecord, summed, usage_figures, usage_for_report
from usage.serializers import (
    MAX_GROUPS,
    RunUsageSerializer,
    UsageCallSerializer,
    UsageReportQuerySerializer,
    UsageReportSerializer,
)
from usage.services import run_totals


def grouping(group_by: str, tenant: Tenant, time: str) -> tuple[Any, bool]:
    """The grouping expression over rows timed by the field `time`, and whether groups are ordered by cost
    rather than by key.

    Days, weeks (from Monday) and months begin where the tenant lives (`Tenant.time_zone`)."""
    zone = ZoneInfo(tenant.time_zone)
    return {
        "day": (TruncDate(time, tzinfo=zone), False),
        "week": (TruncWeek(time, tzinfo=zone, output_field=DateField()), False),
        "month": (TruncMonth(time, tzinfo=zone, output_field=DateField()), False),
        "model": (F("model_id"), True),
        "user": (F("user_id"), True),
        "conversation": (F("conversation_id"), True),
    }[group_by]


CSV_COLUMNS = ["key", *TOKEN_KINDS, "model_calls", "cost_usd", "runs", "failed_runs"]
NO_RUNS = {"runs": 0, "failed_runs": 0}


def run_counts(runs: "QuerySet[Run]", key: Any) -> dict[Any, dict[str, int]]:
    """Runs and failed runs per value of `key`, or all of them under None without one (the runs created in
    the window, whether or not they called a model)."""
    counted = {"runs": Count("pk"), "failed_runs": Count("pk", filter=Q(status=Run.Status.FAILED))}
    if key is None:
        return {None: runs.order_by().aggregate(**counted)}
    rows: Any = runs.order_by().values(key=key).annotate(**counted)
    return {row["key"]: {"runs": row["runs"], "failed_runs": row["failed_runs"]} for row in rows}


def with_idle_groups(
    rows: Iterable[dict[str, Any]], counts: dict[Any, dict[str, int]], by_cost: bool
) -> Iterator[dict[str, Any]]:
    """The usage groups, and among them the groups whose runs made no model call (refused by a budget, say):
    in key order, or after all the others when groups go by cost."""
    idle = [{"key": key, **summed(())} for key in sorted(counts, key=_key_order)]
    if by_cost:
        seen = set()
        for row in rows:
            seen.add(row["key"])
            yield row
        yield from (row for row in idle if row["key"] not in seen)
        return
    last: Any = object()
    # A usage group comes first of two with the same key (merge is stable): its idle twin is dropped.
    for row in heapq.merge(rows, idle, key=lambda row: _key_order(row["key"])):
        if row["key"] != last:
            yield row
        last = row["key"]


def _key_order(key: Any) -> tuple[bool, Any]:
    return key is None, key  # as PostgreSQL sorts: nulls last


def all_runs(counts: dict[Any, dict[str, int]]) -> dict[str, int]:
    return {name: sum(count[name] for count in counts.values()) for name in NO_RUNS}


def key_text(key: Any) -> str | None:
    if key is None:
        return None
    return key.isoformat() if hasattr(key, "isoformat") else str(key)


class UsageViewSet(TenantScopedViewSet):
    """Usage and cost reports of a tenant, from the gateway's records of each model call.

    With `X-User-ID`, only that end user's usage exists, as with conversations. Reports read the
    records' rollup where it can answer (usage_for_report), the records themselves otherwise.
    """

    pagination_class = None
    filter_backends: list[Any] = []

    @extend_schema(
        operation_id="usage_report",
        tags=["usage"],
        parameters=[TENANT_PARAMETER, UsageReportQuerySerializer],
        responses=UsageReportSerializer,
    )
    def report(self, request: Request, tenant: str) -> Response:
        """Token and cost totals over a time window, optionally grouped by day, week or month (in the tenant's
        time zone), model, end user or conversation."""
        start, end, group_by, usage, runs = self._query(request)
        caller = principal(request)
        rows: list[dict[str, Any]] = []
        counts = run_counts(runs, grouping(group_by, self.tenant, "created_at")[0] if group_by else None)
        if group_by:
            key, by_cost = grouping(group_by, self.tenant, usage.time_field)
            usage_groups = usage.grouped(key, by_cost=by_cost)[: MAX_GROUPS + 1]
            rows = list(itertools.islice(with_idle_groups(usage_groups, counts, by_cost), MAX_GROUPS + 1))
        # Every group there is adds up to the totals: a second pass over the month would be as long as the first.
        totals = usage_figures(summed(rows)) if group_by and len(rows) <= MAX_GROUPS else usage.totals()
        groups = [
            {"key": key_text(row["key"]), **usage_figures(row), **counts.get(row["key"], NO_RUNS)}
            for row in rows[:MAX_GROUPS]
        ]
        return Response(
            {
                "tenant": self.tenant.pk,
                "user_id": caller.user_id,
                "from": start,
                "to": end,
                "group_by": group_by,
                "totals": {**totals, **all_runs(counts)},
                "groups": groups,
                "groups_truncated": len(rows) > MAX_GROUPS,
            }
        )

    @extend_schema(
        operation_id="usage_export",
        tags=["usage"],
        parameters=[TENANT_PARAMETER, UsageReportQuerySerializer],
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="One row per group.")},
    )
    def export(self, request: Request, tenant: str) -> StreamingHttpResponse:
        """The same report as CSV: a row per group (every group, however many), then the totals."""
        _, _, group_by, usage, runs = self._query(request)
        key, by_cost = grouping(group_by, self.tenant, usage.time_field) if group_by else (None, False)
        rows = usage.grouped(key, by_cost=by_cost).iterator() if group_by else iter(())
        counts = run_counts(runs, grouping(group_by, self.tenant, "created_at")[0] if group_by else None)

        def lines() -> Iterator[str]:
            out = _Line()
            writer = csv.writer(out)
            writer.writerow(CSV_COLUMNS)
            yield out.take()
            so_far = summed(())
            for row in with_idle_groups(rows, counts, by_cost):
                figures = {**usage_figures(row), **counts.get(row["key"], NO_RUNS)}
                writer.writerow([key_text(row["key"]), *(figures[column] for column in CSV_COLUMNS[1:])])
                yield out.take()
                so_far = summed((so_far, row))
            totals = {**(usage_figures(so_far) if group_by else usage.totals()), **all_runs(counts)}
            writer.writerow(["total", *(totals[column] for column in CSV_COLUMNS[1:])])
            yield out.take()

        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
        name = f"usage-{self.tenant.pk}-{group_by or 'total'}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    def _query(self, request: Request) -> tuple[Any, Any, str | None, UsageQuerySet[Any], "QuerySet[Run]"]:
        """The window, the grouping, the usage to sum and the runs to count, as the caller may see them."""
        query = UsageReportQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        start, end = query.validated_data.get("from"), query.validated_data.get("to")
        group_by = query.validated_data.get("group_by")
        usage = usage_for_report(start, end, by_conversation=group_by == "conversation")
        runs = Run.objects.for_tenant(self.tenant)
        runs = runs.filter(created_at__gte=start) if start else runs
        runs = runs.filter(created_at__lt=end) if end else runs
        caller = principal(request)
        return (
            start,
            end,
            group_by,
            caller.narrow(usage.for_tenant(self.tenant).between(start, end)),
            caller.narrow(runs),
        )

    @extend_schema(
        operation_id="usage_run",
        tags=["usage"],
        parameters=[TENANT_PARAMETER, OpenApiParameter("run_id", OpenApiTypes.UUID, OpenApiParameter.PATH)],
        responses=RunUsageSerializer,
    )
    def run(self, request: Request, tenant: str, run_id: str) -> Response:
        """One run's recorded usage: its totals and each model call."""
        runs = principal(request).narrow(Run.objects.for_tenant(self.tenant), "conversation__user_id")
        run = get_object_or_404(runs, pk=run_id)
        calls = UsageRecord.objects.filter(run=run).order_by("created_at", "pk")
        return Response(
            {
                "run_id": run.pk,
                "conversation": run.conversation_id,
                "totals": run_totals(run.pk),
                "calls": UsageCallSerializer(calls, many=True).data,
            }
        )


class _Line:
    """Where csv.writer writes one row at a time, for streaming."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def take(self) -> str:
        text, self.text = self.text, ""
        return text
