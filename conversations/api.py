import django_filters
from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import ValidationError

from agents.services import AgentChoice, choose_agent, choose_agent_as_end_user
from api.filters import UtcDateTimeFilter
from api.parsers import JSONParser
from api.viewsets import TENANT_PARAMETER, TenantScopedViewSet, principal
from conversations.models import Conversation, Event, Run
from conversations.serializers import (
    ConversationCreateSerializer,
    ConversationSerializer,
    ConversationUpdateSerializer,
    EventPageSerializer,
    EventQuerySerializer,
    MessageAcceptedSerializer,
    MessageCreateSerializer,
    MessageWithFilesSerializer,
    RunSerializer,
    StreamTokenSerializer,
)
from runs import services
from tenants.auth import make_stream_token


class ConversationFilter(django_filters.FilterSet):
    user_id = django_filters.CharFilter()
    status = django_filters.ChoiceFilter(choices=Conversation.Status.choices)
    created_after = UtcDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = UtcDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Conversation
        fields = ["user_id", "status", "created_after", "created_before"]


@extend_schema_view(
    list=extend_schema(parameters=[TENANT_PARAMETER]),
    retrieve=extend_schema(parameters=[TENANT_PARAMETER]),
    destroy=extend_schema(parameters=[TENANT_PARAMETER]),
)
class ConversationViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    TenantScopedViewSet,
):
    """A tenant's conversations. With `X-User-ID`, only that end user's conversations exist."""

    serializer_class = ConversationSerializer
    filterset_class = ConversationFilter
    lookup_value_regex = "[0-9a-f-]{36}"

    def get_queryset(self) -> QuerySet[Conversation]:
        if getattr(self, "swagger_fake_view", False):
            # Schema generation has no request, hence no tenant; it only needs the model.
            return Conversation.objects.none()
        conversations = Conversation.objects.for_tenant(self.tenant).select_related(
            "tenant", "agent__current_version", "agent_version"
        )
        return principal(self.request).narrow(conversations)

    def chosen_agent(self, reference: str | None) -> AgentChoice:
        """The agent a request names. An end user's chat session may name only the agents its chat page
        offers (the default and those marked choosable); the tenant's backend, with its key, any of them."""
        if principal(self.request).key is None:
            return choose_agent_as_end_user(self.tenant, reference)
        return choose_agent(self.tenant, reference)

    @extend_schema(
        parameters=[TENANT_PARAMETER], request=ConversationCreateSerializer, responses={201: ConversationSerializer}
    )
    def create(self, request: Request, tenant: str) -> Response:
        body = ConversationCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        header_user = principal(request).user_id
        body_user = body.validated_data.get("user_id", "")
        if header_user and body_user and header_user != body_user:
            raise ValidationError({"user_id": ["It differs from the X-User-ID header; send one or make them equal."]})
        self.chosen_agent(body.validated_data.get("agent"))
        conversation = services.create_conversation(
            self.tenant,
            user_id=header_user or body_user,
            agent=body.validated_data.get("agent"),
            model_id=body.validated_data.get("model"),
            title=body.validated_data["title"],
            skills=body.validated_data.get("skills"),
            mcp_servers=body.validated_data.get("mcp_servers"),
            budget=body.validated_data.get("budget"),
        )
        return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[TENANT_PARAMETER], request=ConversationUpdateSerializer, responses=ConversationSerializer
    )
    def partial_update(self, request: Request, tenant: str, pk: str) -> Response:
        conversation = self.get_object()
        body = ConversationUpdateSerializer(conversation, data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        if body.validated_data.get("skills") is not None:
            body.validated_data["skills"] = services.checked_skills(
                self.tenant, body.validated_data["skills"], "skills"
            )
        if body.validated_data.get("mcp_servers") is not None:
            body.validated_data["mcp_servers"] = services.checked_servers(
                self.tenant, body.validated_data["mcp_servers"]
            )
        if "agent" in body.validated_data:
            choice = self.chosen_agent(body.validated_data.pop("agent"))
            body.validated_data.update(agent=choice.profile, agent_version=choice.pinned)
        body.save()
        return Response(ConversationSerializer(conversation).data)

    @extend_schema(parameters=[TENANT_PARAMETER], request=None, responses=ConversationSerializer)
    @action(detail=True, methods=["post"])
    def archive(self, request: Request, tenant: str, pk: str) -> Response:
        conversation = self.get_object()
        conversation.status = Conversation.Status.ARCHIVED
        conversation.save(update_fields=["status", "updated_at"])
        return Response(ConversationSerializer(conversation).data)

    def perform_destroy(self, instance: Conversation) -> None:
        services.delete_conversation(instance)

    @extend_schema(
        parameters=[TENANT_PARAMETER],
        request={"application/json": MessageCreateSerializer, "multipart/form-data": MessageWithFilesSerializer},
        responses={202: MessageAcceptedSerializer},
    )
    @action(detail=True, methods=["post"], parser_classes=[JSONParser, MultiPartParser])
    def messages(self, request: Request, tenant: str, pk: str) -> Response:
        """Send the end user's message: starts a run and answers 202 at once; follow its events. While a run is
        active, the active run's agent profile decides (`busy_policy`): 409, or queued, steered or interrupting,
        as the answer's `disposition` says.

        As multipart, the message may bring files (`file`, repeated): they are stored in the
        conversation's workspace before the run starts, and the agent is told their paths. Its
        other fields are the JSON message's, each holding JSON (`skills`: `["pdf"]`).
        """
        conversation = self.get_object()
        if request.content_type.startswith("multipart/"):
            return self._message_with_files(request, conversation)
        body = MessageCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if body.validated_data.get("agent"):
            self.chosen_agent(body.validated_data["agent"])
        sent = services.send_message(conversation, body.run_options(principal(request).user_id))
        return Response(MessageAcceptedSerializer.of(sent), status=status.HTTP_202_ACCEPTED)

    def _message_with_files(self, request: Request, conversation: Conversation) -> Response:
        body = MessageWithFilesSerializer.from_form(request.POST, request.FILES)
        body.is_valid(raise_exception=True)
        sent = services.send_message(conversation, body.run_options(principal(request).user_id))
        return Response(MessageAcceptedSerializer.of(sent), status=status.HTTP_202_ACCEPTED)

    @extend_schema(parameters=[TENANT_PARAMETER], request=None, responses={202: RunSerializer})
    @action(detail=True, methods=["post"])
    def interrupt(self, request: Request, tenant: str, pk: str) -> Response:
        """Stop the active run; it ends with `run.interrupted` within seconds."""
        run = services.interrupt_run(self.get_object())
        return Response(RunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[
            TENANT_PARAMETER,
            OpenApiParameter(
                "status",
                str,
                enum=Run.Status.values,
                description="Only runs in this status; `queued`: the messages waiting (and an active run not yet "
                "started), each with its `queue_position`.",
            ),
        ],
        responses=RunSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def runs(self, request: Request, tenant: str, pk: str) -> Response:
        """The conversation's runs, newest first."""
        conversation = self.get_object()
        runs = conversation.runs.select_related("agent_version__profile")
        if (wanted := request.query_params.get("status")) is not None:
            if wanted not in Run.Status.values:
                raise ValidationError({"status": [f"Choose one of: {', '.join(Run.Status.values)}."]})
            runs = runs.filter(status=wanted)
        page = self.paginate_queryset(runs)
        context = {"queue": services.message_queue(conversation)}
        return self.get_paginated_response(RunSerializer(page, many=True, context=context).data)

    @extend_schema(
        parameters=[TENANT_PARAMETER, OpenApiParameter("run_id", str, OpenApiParameter.PATH)],
        responses=RunSerializer,
    )
    @action(detail=True, methods=["get"], url_path=r"runs/(?P<run_id>[0-9a-f-]{36})")
    def run(self, request: Request, tenant: str, pk: str, run_id: str) -> Response:
        run = get_object_or_404(
            Run.objects.select_related("agent_version__profile"), pk=run_id, conversation=self.get_object()
        )
        return Response(RunSerializer(run).data)

    @extend_schema(
        parameters=[TENANT_PARAMETER, OpenApiParameter("run_id", str, OpenApiParameter.PATH)],
        request=None,
        responses=RunSerializer,
    )
    @action(detail=True, methods=["post"], url_path=r"runs/(?P<run_id>[0-9a-f-]{36})/cancel")
    def cancel_run(self, request: Request, tenant: str, pk: str, run_id: str) -> Response:
        """Drop a message waiting behind the active run: its run ends `run.interrupted` (reason `cancelled`). The
        active run itself is 409: interrupt it (`…/interrupt`)."""
        conversation = self.get_object()
        get_object_or_404(Run, pk=run_id, conversation=conversation)
        run = services.cancel_message(conversation, run_id)
        return Response(RunSerializer(Run.objects.select_related("agent_version__profile").get(pk=run.pk)).data)

    @extend_schema(
        parameters=[
            TENANT_PARAMETER,
            OpenApiParameter("after", int, description="Return events with seq greater than this (default 0)."),
            OpenApiParameter("limit", int, description="At most this many events, 1-1000 (default 100)."),
        ],
        responses=EventPageSerializer,
    )
    @action(detail=True, methods=["get"])
    def events(self, request: Request, tenant: str, pk: str) -> Response:
        """Stored events in seq order, paginated by seq."""
        conversation = self.get_object()
        query = EventQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        after, limit = query.validated_data["after"], query.validated_data["limit"]
        events = list(Event.objects.filter(conversation=conversation, seq__gt=after).order_by("seq")[: limit + 1])
        has_more = len(events) > limit
        events = events[:limit]
        return Response(
            {
                "events": [event.as_envelope() for event in events],
                "last_seq": conversation.last_seq,
                "next_after": events[-1].seq if events else after,
                "has_more": has_more,
            }
        )

    @extend_schema(parameters=[TENANT_PARAMETER], request=None, responses={201: StreamTokenSerializer})
    @action(detail=True, methods=["post"], url_path="stream-token")
    def stream_token(self, request: Request, tenant: str, pk: str) -> Response:
        """A short-lived signed token that opens this conversation's WebSocket."""
        conversation = self.get_object()
        asking = principal(request)
        token = make_stream_token(
            str(conversation.pk),
            conversation.tenant_id,
            asking.user_id,
            end_user=asking.key is None,
            key_id=asking.key.pk if asking.key is not None else None,
        )
        return Response(
            {
                "token": token,
                "expires_in": settings.STREAM_TOKEN_MAX_AGE_SECONDS,
                "websocket_path": f"/ws/tenants/{conversation.tenant_id}/conversations/{conversation.pk}/?token={token}",
            },
            status=status.HTTP_201_CREATED,
        )
