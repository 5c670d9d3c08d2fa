"""Operator admin for the audit trail: read, never written, changed or deleted (it is append-only)."""

import json

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from audit.models import AuditRecord
from tenants.admin_mixins import ReadOnlyAdminMixin
from tenants.models import Tenant


class TenantFilter(admin.SimpleListFilter):
    # From the tenants' table: a record's tenant is a plain column (it outlives the tenant), and the default
    # filter would SELECT DISTINCT over the whole trail.
    title = "tenant"
    parameter_name = "tenant"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(tenant.pk, str(tenant)) for tenant in Tenant.objects.order_by("pk")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditRecord]) -> QuerySet[AuditRecord]:
        return queryset.filter(tenant=self.value()) if self.value() else queryset


class ActorKindFilter(admin.SimpleListFilter):
    title = "actor kind"
    parameter_name = "actor_kind"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        kinds = ("end_user", "api_key", "operator", "system")
        return [(kind, kind.replace("_", " ")) for kind in kinds]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AuditRecord]) -> QuerySet[AuditRecord]:
        return queryset.filter(actor_kind=self.value()) if self.value() else queryset


@admin.register(AuditRecord)
class AuditRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["at", "tenant", "actor_kind", "actor", "action", "object_type", "object_id"]
    list_filter = [TenantFilter, ActorKindFilter]
    search_fields = ["actor", "action", "object_id"]
    search_help_text = "Actor, action (e.g. approval.denied) or the object's id."
    date_hierarchy = "at"
    # The trail only grows: counting all of it for the paginator's "N total" would scan it.
    show_full_result_count = False
    fields = readonly_fields = (
        "at",
        "tenant",
        "actor_kind",
        "actor",
        "action",
        "object_type",
        "object_id",
        "data_json",
    )

    @admin.display(description="data")
    def data_json(self, obj: AuditRecord) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.data, indent=2, ensure_ascii=False, sort_keys=True))
