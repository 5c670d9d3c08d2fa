"""The one path from an HTTP request to its tenant: the calling key's principal, and the base of every
tenant-scoped viewset (`/api/tenants/{tenant}/…`)."""

from typing import Any

from drf_spectacular.utils import OpenApiParameter
from rest_framework import viewsets
from rest_framework.request import Request

from tenants.auth import Principal
from tenants.models import Tenant


def principal(request: Request) -> Principal:
    user = request.user
    assert isinstance(user, Principal)
    return user


TENANT_PARAMETER = OpenApiParameter("tenant", str, OpenApiParameter.PATH, description="The tenant's id.")


class TenantScopedViewSet(viewsets.GenericViewSet):
    """Resolves `{tenant}` for the calling key: another tenant's URL answers 404 like a missing one."""

    tenant: Tenant

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        self.tenant = principal(request).tenant(kwargs["tenant"])
