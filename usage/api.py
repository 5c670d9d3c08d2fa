from datetime import UTC
from typing import Any

from django.db.models import F
from django.db.models.functions import TruncDate
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response

from api.viewsets import TENANT_PARAMETER, TenantScopedViewSet, principal
from conversations.models import Run
from usage.models import UsageRecord, usage_figures
from usage.serializers import (
    MAX_GROUPS,
    RunUsageSerializer,
    UsageCallSerializer,
    UsageReportQuerySerializer,
    UsageReportSerializer,
)
from usage.services import run_totals

# group_by → (the grouping expression, whether groups are ordered by cost rather than by key)
GROUPINGS: dict[str, tuple[Any, bool]] = {
    "day": (TruncDate("created_at", tzinfo=UTC), False),
    "model": (F("model_id"), True),
    "user": (F("user_id"), True),
    "conversation": (F("conversation_id"), True),
}


def key_text(key: Any) -> str | None:
    if key is None:
        return None
    return key.isoformat() if hasattr(key, "isoformat") else str(key)


class UsageViewSet(TenantScopedViewSet):
    """Usage and cost reports of a tenant, from the gateway's records of each model call.

    With `X-User-ID`, only that end user's usage exists, as with conversations.
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
        """Token and cost totals over a time window, optionally grouped by day (UTC), model, end user or conversation."""
        query = UsageReportQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        start, end = query.validated_data.get("from"), query.validated_data.get("to")
        group_by = query.validated_data.get("group_by")
        caller = principal(request)
        records = caller.narrow(UsageRecord.objects.for_tenant(self.tenant).between(start, end))

        rows: list[dict[str, Any]] = []
        if group_by:
            key, by_cost = GROUPINGS[group_by]
            rows = list(records.grouped(key, by_cost=by_cost)[: MAX_GROUPS + 1])
        return Response(
            {
                "tenant": self.tenant.pk,
                "user_id": caller.user_id,
                "from": start,
                "to": end,
                "group_by": group_by,
                "totals": records.totals(),
                "groups": [{"key": key_text(row["key"]), **usage_figures(row)} for row in rows[:MAX_GROUPS]],
                "groups_truncated": len(rows) > MAX_GROUPS,
            }
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
