"""Budgets over REST: the tenant's month and defaults, and each end user's day and month with its own budgets."""

from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.http import Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from api.viewsets import TENANT_PARAMETER, ApiKeyRequired, TenantScopedViewSet, principal
from tenants.auth import user_id_problem
from usage import budgets
from usage.models import UserBudget
from usage.serializers import TenantBudgetsSerializer, UserBudgetSerializer, UserBudgetsSerializer

USER_PARAMETER = OpenApiParameter("user_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The end user.")


class BudgetViewSet(TenantScopedViewSet):
    """What a tenant's budgets allow now: read before starting work, or to show an end user what is left.

    Limits of the tenant itself (its month and the defaults) are the operator's: set in the admin or
    with an admin key on the tenant. An end user's own budgets may be set by the tenant's keys; an
    end user's chat session reads its own day and month (the chat page shows what is left).
    """

    permission_classes = [permissions.IsAuthenticated, ApiKeyRequired]

    def get_permissions(self) -> Sequence[Any]:
        if self.action == "read_user":
            return [permissions.IsAuthenticated()]
        return super().get_permissions()

    pagination_class = None
    filter_backends: list[type] = []

    @extend_schema(
        operation_id="budgets_read", tags=["usage"], parameters=[TENANT_PARAMETER], responses=TenantBudgetsSerializer
    )
    def overview(self, request: Request, tenant: str) -> Response:
        """The tenant's calendar month (limits, spent, held by calls in progress, remaining) and its defaults."""
        return Response(TenantBudgetsSerializer(budgets.tenant_state(self.tenant, timezone.now())).data)

    @extend_schema(
        operation_id="budgets_user_read",
        tags=["usage"],
        parameters=[TENANT_PARAMETER, USER_PARAMETER],
        responses=UserBudgetsSerializer,
    )
    def read_user(self, request: Request, tenant: str, user_id: str) -> Response:
        """An end user's day and month now, under its own budgets or the tenant's defaults."""
        return self._user_state(user_id)

    @extend_schema(
        operation_id="budgets_user_set",
        tags=["usage"],
        parameters=[TENANT_PARAMETER, USER_PARAMETER],
        request=UserBudgetSerializer,
        responses=UserBudgetsSerializer,
    )
    def set_user(self, request: Request, tenant: str, user_id: str) -> Response:
        """Give an end user its own daily and monthly budgets; a field left out or null takes the tenant's default."""
        with transaction.atomic():
            own = UserBudget.objects.select_for_update().filter(tenant=self.tenant, user_id=user_id).first()
            body = UserBudgetSerializer(own, data=request.data)
            body.is_valid(raise_exception=True)
            body.save(tenant=self.tenant, user_id=user_id)
        return self._user_state(user_id)

    @extend_schema(
        operation_id="budgets_user_reset",
        tags=["usage"],
        parameters=[TENANT_PARAMETER, USER_PARAMETER],
        responses={204: None},
    )
    def reset_user(self, request: Request, tenant: str, user_id: str) -> Response:
        """Drop the end user's own budgets: the tenant's defaults apply again."""
        UserBudget.objects.filter(tenant=self.tenant, user_id=user_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if problem := user_id_problem(kwargs.get("user_id", "")):
            raise ValidationError({"user_id": [problem]})
        # With X-User-ID, only that end user exists, as with conversations.
        caller = principal(request)
        if "user_id" in kwargs and caller.user_id and caller.user_id != kwargs["user_id"]:
            raise Http404

    def _user_state(self, user_id: str) -> Response:
        return Response(UserBudgetsSerializer(budgets.user_state(self.tenant, user_id, timezone.now())).data)
