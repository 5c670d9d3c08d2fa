"""The chat page's own API: `POST /api/tenants/{t}/chat-links` (a tenant's backend gets a link that opens the chat
for one end user) and `GET /api/tenants/{t}/chat-agents` (the agents that end user may start a conversation with)."""

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from agents.models import AgentProfile, AgentVersion
from agents.services import end_user_agents
from api.serializers import StrictSerializer
from api.viewsets import TENANT_PARAMETER, ApiKeyRequired, TenantScopedViewSet, principal
from chat.links import ChatGrant, make_link_token
from conversations.models import Conversation
from tenants.auth import USER_ID_MAX_LENGTH, validate_user_id


class ChatLinkRequestSerializer(StrictSerializer):
    user_id = serializers.CharField(
        max_length=USER_ID_MAX_LENGTH, validators=[validate_user_id], help_text="The end user the chat is for."
    )
    conversation = serializers.UUIDField(required=False, help_text="Open only this conversation (the user's own).")
    expires_in = serializers.IntegerField(
        min_value=60, max_value=7 * 24 * 3600, default=3600, help_text="Seconds the link stays valid (60 s to 7 days)."
    )


class ChatLinkSerializer(serializers.Serializer):
    url = serializers.URLField(help_text="Open it in the end user's browser; it carries no API key.")
    expires_at = serializers.DateTimeField()


class ChatLinkViewSet(TenantScopedViewSet):
    queryset = Conversation.objects.none()  # for the schema only
    permission_classes = [permissions.IsAuthenticated, ApiKeyRequired]

    @extend_schema(
        parameters=[TENANT_PARAMETER], request=ChatLinkRequestSerializer, responses={201: ChatLinkSerializer}
    )
    def create(self, request: Request, tenant: str) -> Response:
        """A short-lived signed link to the chat page for one end user of this tenant."""
        body = ChatLinkRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        caller, user_id = principal(request), body.validated_data["user_id"]
        if caller.user_id and caller.user_id != user_id:
            raise serializers.ValidationError({"user_id": ["It differs from the X-User-ID header."]})
        conversation = body.validated_data.get("conversation")
        if conversation is not None:
            owned = Conversation.objects.for_tenant(self.tenant).filter(pk=conversation, user_id=user_id)
            if not owned.exists():
                raise serializers.ValidationError({"conversation": ["No such conversation of this user."]})
        expires_in = body.validated_data["expires_in"]
        grant = ChatGrant(self.tenant.pk, user_id, str(conversation) if conversation else None)
        url = request.build_absolute_uri(f"/chat/open/{make_link_token(grant, expires_in)}")
        expires_at = timezone.now() + timedelta(seconds=expires_in)
        return Response({"url": url, "expires_at": expires_at}, status=status.HTTP_201_CREATED)


class ChatAgentSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="Send it as `agent` when creating a conversation.")
    description = serializers.CharField()
    kind = serializers.ChoiceField(
        choices=["agent", "chat"], help_text="agent: tools and files in a sandbox; chat: a plain chat."
    )
    is_default = serializers.BooleanField(help_text="What a conversation that names no agent gets; listed first.")
    busy_policy = serializers.ChoiceField(
        choices=AgentVersion.BusyPolicy.values,
        help_text="What a message sent while the agent works does: refused (409), queued after the current run, "
        "steered into it, or interrupting it.",
    )


class ChatAgentViewSet(TenantScopedViewSet):
    queryset = AgentProfile.objects.none()  # for the schema only
    pagination_class = None  # a short list, answered whole (and so documented)

    @extend_schema(parameters=[TENANT_PARAMETER], responses=ChatAgentSerializer(many=True))
    def list(self, request: Request, tenant: str) -> Response:
        """The agents an end user may start a conversation with: the tenant's default agent first, then those
        it marks choosable. An end user's chat session and the tenant's backend read the same list."""
        agents = [
            {
                "name": profile.name,
                "description": profile.description,
                "kind": profile.current_version.kind if profile.current_version else "agent",
                "is_default": profile.is_default,
                "busy_policy": profile.current_version.busy_policy
                if profile.current_version
                else AgentVersion.BusyPolicy.REJECT,
            }
            for profile in end_user_agents(self.tenant)
        ]
        return Response(ChatAgentSerializer(agents, many=True).data)
