"""A tenant's agent profiles over REST: `/api/tenants/{t}/agents`.

Profiles are the tenant's configuration: its backend changes them with its API key, sent without
`X-User-ID`. End users (a key with `X-User-ID`, or the chat page's session) read only the profiles
they may start a conversation with (`agents.services.end_user_agents`: the default and the choosable
ones). Another tenant's profile answers 404 exactly like a missing one.
"""

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, status
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import services
from agents.models import AgentProfile, AgentVersion
from agents.serializers import AgentSerializer, AgentVersionSerializer, AgentWriteSerializer, spec_changes
from agents.spec import AgentSpec
from api.viewsets import TENANT_PARAMETER, TenantScopedViewSet, principal
from tenants.auth import Principal

READ_BY_END_USERS = {"list", "retrieve"}


def is_end_user(caller: Principal) -> bool:
    """An end user's request: the chat page's session, or a key acting for one (`X-User-ID`)."""
    return caller.key is None or bool(caller.user_id)


class TenantBackendToChange(permissions.BasePermission):
    """End users may list and read the profiles they may choose; everything else is the tenant backend's."""

    message = (
        "Agent profiles are the tenant's configuration: use the tenant's API key without X-User-ID. "
        "End users may only list and read the agents they can choose."
    )

    def has_permission(self, request: Request, view: APIView) -> bool:
        return not is_end_user(principal(request)) or getattr(view, "action", None) in READ_BY_END_USERS


NAME_PARAMETER = OpenApiParameter("name", str, OpenApiParameter.PATH, description="The profile's name.")
NUMBER_PARAMETER = OpenApiParameter("number", int, OpenApiParameter.PATH, description="The version's number.")


class AgentViewSet(TenantScopedViewSet):
    """The tenant's agent profiles, version by version; another tenant's answer 404."""

    serializer_class = AgentSerializer
    queryset = AgentProfile.objects.none()  # for the schema only
    permission_classes = [permissions.IsAuthenticated, TenantBackendToChange]
    lookup_field = "name"
    pagination_class = None

    def profiles(self) -> QuerySet[AgentProfile]:
        if is_end_user(principal(self.request)):
            return services.end_user_agents(self.tenant)  # what the chat page offers them
        # A tenant always has a default agent; one made before profiles, or over REST, gets it on first use.
        services.default_profile(self.tenant)
        return AgentProfile.objects.for_tenant(self.tenant).select_related("current_version").order_by("name")

    def profile(self) -> AgentProfile:
        return get_object_or_404(self.profiles(), name=self.kwargs["name"])

    def version(self, profile: AgentProfile) -> AgentVersion:
        return get_object_or_404(profile.versions.select_related("profile"), number=self.kwargs["number"])

    @extend_schema(parameters=[TENANT_PARAMETER], responses=AgentSerializer(many=True))
    def list(self, request: Request, tenant: str) -> Response:
        """Every profile of the tenant by name, each with its current version's fields. End users get those they
        may start a conversation with: the default first, then the choosable ones."""
        return Response(AgentSerializer(self.profiles(), many=True).data)

    @extend_schema(parameters=[TENANT_PARAMETER], request=AgentWriteSerializer, responses={201: AgentSerializer})
    def create(self, request: Request, tenant: str) -> Response:
        """A new profile; its version fields (defaults for those left out) become its version 1. A profile
        that could not run (a tool pattern, model, skill or MCP server that does not exist, a schema that does
        not compile, a subagent without a prompt, …) is refused with 400 naming the field, and nothing is
        stored; a name the tenant already uses is 409."""
        body = AgentWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        profile = services.create_profile(
            self.tenant,
            body.validated_data["name"],
            AgentSpec().changed(spec_changes(body.validated_data)),
            description=body.validated_data.get("description", ""),
            choosable=body.validated_data.get("choosable", False),
            is_default=body.validated_data.get("is_default", False),
            created_by=_author(request),
        )
        return Response(AgentSerializer(_reread(profile)).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[TENANT_PARAMETER, NAME_PARAMETER], responses=AgentSerializer)
    def retrieve(self, request: Request, tenant: str, name: str) -> Response:
        return Response(AgentSerializer(self.profile()).data)

    @extend_schema(
        parameters=[TENANT_PARAMETER, NAME_PARAMETER], request=AgentWriteSerializer, responses=AgentSerializer
    )
    def partial_update(self, request: Request, tenant: str, name: str) -> Response:
        """Change a profile. Version fields that differ from the current version's make a new version, which
        becomes current (conversations pinned to an older one keep it); description, choosable and is_default
        change in place. Nothing is stored when anything is refused."""
        profile = self.profile()
        body = AgentWriteSerializer(profile, data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        services.update_profile(
            profile,
            spec_changes(body.validated_data),
            description=body.validated_data.get("description"),
            choosable=body.validated_data.get("choosable"),
            is_default=body.validated_data.get("is_default"),
            created_by=_author(request),
        )
        return Response(AgentSerializer(_reread(profile)).data)

    @extend_schema(parameters=[TENANT_PARAMETER, NAME_PARAMETER], responses={204: None})
    def destroy(self, request: Request, tenant: str, name: str) -> Response:
        """Delete the profile and its versions. The default profile, and one that conversations use, are
        refused (409): make another the default, or move or delete the conversations first."""
        services.delete_profile(self.profile())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(parameters=[TENANT_PARAMETER, NAME_PARAMETER], responses=AgentVersionSerializer(many=True))
    @action(detail=True, methods=["get"])
    def versions(self, request: Request, tenant: str, name: str) -> Response:
        """Every version of the profile, newest first."""
        profile = self.profile()
        versions = profile.versions.all()
        for version in versions:
            version.profile = profile  # for `current`, without a query per version
        return Response(AgentVersionSerializer(versions, many=True).data)

    @extend_schema(parameters=[TENANT_PARAMETER, NAME_PARAMETER, NUMBER_PARAMETER], responses=AgentVersionSerializer)
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<number>[0-9]{1,9})")
    def version_detail(self, request: Request, tenant: str, name: str, number: str) -> Response:
        """One version of the profile, as it was made (versions never change)."""
        return Response(AgentVersionSerializer(self.version(self.profile())).data)

    @extend_schema(
        parameters=[TENANT_PARAMETER, NAME_PARAMETER, NUMBER_PARAMETER], request=None, responses=AgentSerializer
    )
    @action(detail=True, methods=["post"], url_path=r"versions/(?P<number>[0-9]{1,9})/make-current")
    def make_current(self, request: Request, tenant: str, name: str, number: str) -> Response:
        """Run this version from the next run on: roll back to an older one, or forward again. Conversations
        pinned to a version keep theirs."""
        profile = self.profile()
        version = self.version(profile)
        services.make_current(profile, version.number)
        return Response(AgentSerializer(_reread(profile)).data)


def _reread(profile: AgentProfile) -> AgentProfile:
    return AgentProfile.objects.select_related("current_version").get(pk=profile.pk)


def _author(request: Request) -> str:
    key = principal(request).key
    assert key is not None  # TenantBackendToChange: changes come with a key
    return f"api-key:{key.name}"
