from django.db.models import Prefetch, QuerySet
from rest_framework import permissions, viewsets
from rest_framework.request import Request
from rest_framework.views import APIView

from api.viewsets import ApiKeyRequired, principal
from mcp_servers.models import Secret
from tenants.models import LanguageModel, Tenant
from tenants.serializers import LanguageModelSerializer, TenantSerializer
from tenants.services import delete_tenant


class IsAdminKeyOrReadOnly(permissions.BasePermission):
    message = "This needs an admin API key."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.method in permissions.SAFE_METHODS or principal(request).is_admin


class LanguageModelViewSet(viewsets.ModelViewSet):
    """The model catalog. Tenant keys may read it; only admin keys change it."""

    serializer_class = LanguageModelSerializer
    permission_classes = [permissions.IsAuthenticated, ApiKeyRequired, IsAdminKeyOrReadOnly]
    filterset_fields = ["provider", "status"]

    def get_queryset(self) -> QuerySet[LanguageModel]:
        return LanguageModel.objects.with_prices()


class TenantViewSet(viewsets.ModelViewSet):
    """Tenants. A tenant key sees only its own tenant, read-only; admin keys manage all of them."""

    serializer_class = TenantSerializer
    permission_classes = [permissions.IsAuthenticated, ApiKeyRequired, IsAdminKeyOrReadOnly]
    filterset_fields = ["status"]

    def get_queryset(self) -> QuerySet[Tenant]:
        if getattr(self, "swagger_fake_view", False):
            # Schema generation has no caller; it only needs the model.
            return Tenant.objects.none()
        # The names of their secrets, which egress_warnings reads, in one more query.
        tenants = Tenant.objects.select_related("default_model").prefetch_related(
            Prefetch("secrets", queryset=Secret.objects.only("id", "name", "tenant_id").order_by())
        )
        caller = principal(self.request)
        return tenants if caller.is_admin else tenants.filter(pk=caller.tenant_id)

    def perform_destroy(self, instance: Tenant) -> None:
        delete_tenant(instance)  # its stored files go too, once the rows are gone
