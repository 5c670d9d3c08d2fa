"""The one path from an HTTP request to its tenant: the calling key's principal, and the base of every
tenant-scoped viewset (`/api/tenants/{tenant}/…`)."""

from typing import Any

from drf_spectacular.utils import OpenApiParameter
from rest_framework import permissions, viewsets
from rest_framework.request import Request
from rest_framework.views import APIView

from tenants.auth import Principal
from tenants.models import Tenant


def principal(request: Request) -> Principal:
    user = request.user
    assert isinstance(user, Principal)
    return user


class ApiKeyRequired(permissions.BasePermission):
    """The tenant's backend only (an API key): an end user's chat session is refused."""

    message = "This needs an API key: an end user's chat session cannot do it."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return principal(request).key is not None


class ApiKeyRequiredToChange(ApiKeyRequired):
    """Anyone of the tenant may read; changing needs an API key."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.method in permissions.SAFE_METHODS or super().has_permission(request, view)


TENANT_PARAMETER = OpenApiParameter("tenant", str, OpenApiParameter.PATH, description="The tenant's id.")


class TenantScopedViewSet(viewsets.GenericViewSet):
    """Resolves `{tenant}` for the calling key: another tenant's URL answers 404 like a missing one."""

    tenant: Tenant

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        self.tenant = principal(request).tenant(kwargs["tenant"])
