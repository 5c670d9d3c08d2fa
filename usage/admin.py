"""Operator admin for usage records: read-only billing history with the total of what is shown, and a dashboard."""

import uuid
from datetime import UTC
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone

from tenants.admin_mixins import ReadOnlyAdminMixin
from tenants.models import TOKEN_KINDS
from usage.budgets import near_caps
from usage.dashboard import dashboard_context
from usage.models import BudgetCounter, UsageRecord, UserBudget


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Read-only: only the gateway records usage, once per model call, and billing history is not edited
    # away; deleting the tenant deletes its records with it.
    list_display = [
        "created_at",
        "tenant",
        "user_id",
        "model",
        "run_id",
        "message_id",
        *TOKEN_KINDS,
        "cost_usd",
    ]
    list_filter = ["tenant", "model", "created_at"]
    list_select_related = ["tenant", "model"]
    # Exact matches only (get_search_results): `icontains` would scan the whole billing table.
    search_fields = ["message_id"]
    search_help_text = "A run's full id, an end user id or a message id (msg_…), exactly."
    # Newest first by the primary key's index, which follows creation order.
    ordering = ["-pk"]
    show_full_result_count = False
    fields = readonly_fields = (
        "tenant",
        "conversation",
        "run",
        "user_id",
        "model",
        "message_id",
        *TOKEN_KINDS,
        "cost_usd",
        "price",
        "created_at",
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[UsageRecord], search_term: str
    ) -> tuple[QuerySet[UsageRecord], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        matches = Q(message_id=term) | Q(user_id=term)
        try:
            matches |= Q(run_id=uuid.UUID(term))
        except ValueError:
            pass  # not a run id
        return queryset.filter(matches), False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        # Redirects and the "invalid filter" page carry no change list to total.
        if isinstance(response, TemplateResponse) and "cl" in (response.context_data or {}):
            assert response.context_data is not None
            response.context_data["usage_totals"] = response.context_data["cl"].queryset.totals()
        return response

    def get_urls(self) -> list[URLPattern]:
        dashboard = path("dashboard/", self.admin_site.admin_view(self.dashboard_view), name="usage_dashboard")
        # Before the defaults: their catch-all `<path:object_id>/` would swallow it.
        return [dashboard, *super().get_urls()]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """Spend, runs and failures over the last days, as charts and tables, for whoever may view usage records.

        With the budgets of the current periods that are 80% used or more.
        """
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Usage dashboard",
            **dashboard_context(request.GET, timezone.now().astimezone(UTC).date()),
        }
        context["budgets_near_caps"] = near_caps(timezone.now(), context["tenant"])
        return TemplateResponse(request, "admin/usage/dashboard.html", context)


@admin.register(UserBudget)
class UserBudgetAdmin(admin.ModelAdmin):
    list_display = ["tenant", "user_id", "daily_usd", "daily_calls", "monthly_usd", "monthly_calls", "updated_at"]
    list_filter = ["tenant"]
    list_select_related = ["tenant"]
    search_fields = ["=user_id"]
    fields = ["tenant", "user_id", ("daily_usd", "daily_calls"), ("monthly_usd", "monthly_calls")]


@admin.register(BudgetCounter)
class BudgetCounterAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """What each budget has spent and what calls in progress hold, per period: kept by the gateway alone."""

    list_display = ["tenant", "level", "subject", "period", "spent_usd", "calls", "reserved_usd", "reserved_calls"]
    list_filter = ["level", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["=subject", "=period"]
    ordering = ["-updated_at"]
    show_full_result_count = False
