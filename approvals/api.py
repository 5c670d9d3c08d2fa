"""What a tenant's runs ask people, over REST: `/api/tenants/{t}/approvals` and `/api/tenants/{t}/questions`.

List and read them (`?status=pending` for what waits), and decide one with a POST to it: an approval is allowed
or denied, a question answered. With `X-User-ID`, or in an end user's chat session, only that end user's requests
exist; another tenant's or another end user's answers 404 exactly like a missing one. A request is decided once:
a second decision is 409 (`already_decided`). Deciding goes through `runs.services`, which also wakes the run.
"""

from typing import Any

import django_filters
from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from api.viewsets import TENANT_PARAMETER, TenantScopedViewSet, principal
from approvals.deciders import request_decider
from approvals.models import Approval, Question
from approvals.serializers import (
    ApprovalDecisionSerializer,
    ApprovalSerializer,
    QuestionAnswerSerializer,
    QuestionSerializer,
)
from runs import services

ID_PARAMETER = OpenApiParameter("id", str, OpenApiParameter.PATH, description="The request's id (a UUID).")


class RequestFilter(django_filters.FilterSet):
    conversation = django_filters.UUIDFilter(field_name="conversation_id", help_text="Only this conversation's.")
    run = django_filters.UUIDFilter(field_name="run_id", help_text="Only this run's.")
    user_id = django_filters.CharFilter(help_text="Only this end user's.")


class ApprovalFilter(RequestFilter):
    status = django_filters.ChoiceFilter(choices=Approval.Status.choices, help_text="`pending`: what waits.")
    tool = django_filters.CharFilter(help_text="Only calls of this tool, e.g. `Bash`.")

    class Meta:
        model = Approval
        fields = ["status", "conversation", "run", "user_id", "tool"]


class QuestionFilter(RequestFilter):
    status = django_filters.ChoiceFilter(choices=Question.Status.choices, help_text="`pending`: what waits.")

    class Meta:
        model = Question
        fields = ["status", "conversation", "run", "user_id"]


class PersonRequestViewSet(TenantScopedViewSet):
    """The tenant's requests of one kind, newest first, narrowed to the end user a request is for."""

    model: type[Approval] | type[Question]

    def get_queryset(self) -> QuerySet[Any]:
        if getattr(self, "swagger_fake_view", False):
            return self.model.objects.none()  # the schema has no request, hence no tenant
        rows = self.model.objects.for_tenant(self.tenant).order_by("-requested_at", "-pk")
        return principal(self.request).narrow(rows)

    def list(self, request: Request, tenant: str) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request: Request, tenant: str, pk: str) -> Response:
        return Response(self.get_serializer(self.get_object()).data)


LIST_PARAMETERS = [TENANT_PARAMETER]
DETAIL_PARAMETERS = [TENANT_PARAMETER, ID_PARAMETER]


class ApprovalViewSet(PersonRequestViewSet):
    """Tool calls that wait for a person's allow or deny (a profile's `ask` rules)."""

    model = Approval
    serializer_class = ApprovalSerializer
    filterset_class = ApprovalFilter

    @extend_schema(parameters=LIST_PARAMETERS, responses=ApprovalSerializer(many=True))
    def list(self, request: Request, tenant: str) -> Response:
        """The tenant's approvals, newest first; `?status=pending` for those waiting for a decision."""
        return super().list(request, tenant)

    @extend_schema(parameters=DETAIL_PARAMETERS, responses=ApprovalSerializer)
    def retrieve(self, request: Request, tenant: str, pk: str) -> Response:
        return super().retrieve(request, tenant, pk)

    @extend_schema(
        operation_id="tenants_approvals_decide",
        parameters=DETAIL_PARAMETERS,
        request=ApprovalDecisionSerializer,
        responses=ApprovalSerializer,
    )
    def decide(self, request: Request, tenant: str, pk: str) -> Response:
        """Allow or deny the call, once: the run goes on with the decision (resumed if it was suspended). A second
        decision is 409 `already_decided`; an edited input the agent profile refuses is 400."""
        approval = self.get_object()
        body = ApprovalDecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            decided = services.decide_approval(approval, request_decider(principal(request)), **body.as_decision())
        except Approval.DoesNotExist:  # its conversation was deleted meanwhile
            raise Http404 from None
        return Response(ApprovalSerializer(decided).data)


class QuestionViewSet(PersonRequestViewSet):
    """The agent's questions to its user (the CLI's `AskUserQuestion` tool)."""

    model = Question
    serializer_class = QuestionSerializer
    filterset_class = QuestionFilter

    @extend_schema(parameters=LIST_PARAMETERS, responses=QuestionSerializer(many=True))
    def list(self, request: Request, tenant: str) -> Response:
        """The tenant's questions, newest first; `?status=pending` for those waiting for an answer."""
        return super().list(request, tenant)

    @extend_schema(parameters=DETAIL_PARAMETERS, responses=QuestionSerializer)
    def retrieve(self, request: Request, tenant: str, pk: str) -> Response:
        return super().retrieve(request, tenant, pk)

    @extend_schema(
        operation_id="tenants_questions_answer",
        parameters=DETAIL_PARAMETERS,
        request=QuestionAnswerSerializer,
        responses=QuestionSerializer,
    )
    def answer(self, request: Request, tenant: str, pk: str) -> Response:
        """Answer the question, once: every question of it by its text. The run goes on with the answers (resumed
        if it was suspended); a second answer is 409 `already_decided`."""
        question = self.get_object()
        body = QuestionAnswerSerializer(data=request.data, context={"question": question})
        body.is_valid(raise_exception=True)
        try:
            answered = services.answer_question(
                question, request_decider(principal(request)), body.validated_data["answers"]
            )
        except Question.DoesNotExist:
            raise Http404 from None
        return Response(QuestionSerializer(answered).data)
