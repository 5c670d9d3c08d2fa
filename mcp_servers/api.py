"""A tenant's MCP servers and secrets over REST: `/api/tenants/{t}/mcp-servers`, `/api/tenants/{t}/secrets`.

Both are the tenant backend's business (an API key; an end user's chat session is refused). Secrets
are write-only: their names come back, never their values, and a server's header values are never
shown either (only their names and the secrets they use).
"""

from typing import Any

from django.db import IntegrityError, transaction
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response

from api.serializers import StrictModelSerializer, StrictSerializer
from api.viewsets import TENANT_PARAMETER, ApiKeyRequired, TenantScopedViewSet
from mcp_servers import services, vault
from mcp_servers.models import McpServer, Secret
from mcp_servers.probe import probe

KEY_ONLY = [permissions.IsAuthenticated, ApiKeyRequired]


class McpServerSerializer(StrictModelSerializer):
    headers = serializers.DictField(
        child=serializers.CharField(max_length=8000, allow_blank=True),
        required=False,
        write_only=True,
        help_text="Sent with every call; values may name secrets as ${name}. Write-only.",
    )
    header_names = serializers.SerializerMethodField()
    secrets = serializers.SerializerMethodField(help_text="The secrets its headers name.")
    allowed_tools = serializers.ListField(child=serializers.CharField(max_length=128), required=False, max_length=500)
    args = serializers.ListField(child=serializers.CharField(max_length=4000), required=False, max_length=100)
    platform = serializers.BooleanField(source="is_platform", read_only=True)

    class Meta:
        model = McpServer
        fields = [
            "name",
            "kind",
            "description",
            "enabled",
            "allowed_tools",
            "url",
            "headers",
            "header_names",
            "secrets",
            "command",
            "args",
            "openapi_document",
            "openapi_url",
            "base_url",
            "platform",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["platform", "created_at", "updated_at"]

    def get_header_names(self, server: McpServer) -> list[str]:
        return sorted(server.headers)

    def get_secrets(self, server: McpServer) -> list[str]:
        return sorted(server.secret_names())

    def validate_name(self, value: str) -> str:
        if self.instance is not None and value != self.instance.name:
            raise serializers.ValidationError("A server's name cannot change; make a new server.")
        return value

    def validate_kind(self, value: str) -> str:
        if self.instance is not None and value != self.instance.kind:
            raise serializers.ValidationError("A server's kind cannot change; make a new server.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("openapi_url") and "openapi_document" not in attrs:  # fetched once, now
            try:
                attrs["openapi_document"] = services.fetch_openapi_document(attrs["openapi_url"])
            except services.ServerProblem as problem:
                raise serializers.ValidationError({problem.field: [str(problem)]}) from None
        server = McpServer(**{**self._current(), **attrs})
        try:
            services.check_server(server)
        except services.ServerProblem as problem:
            raise serializers.ValidationError({problem.field: [str(problem)]}) from None
        return attrs

    def _current(self) -> dict[str, Any]:
        if self.instance is None:
            return {}
        fields = ["name", "kind", "allowed_tools", "url", "headers", "command", "args", "openapi_document", "base_url"]
        return {field: getattr(self.instance, field) for field in fields}


class SecretSerializer(serializers.ModelSerializer):
    class Meta:
        model = Secret
        fields = ["name", "created_at", "updated_at"]
        read_only_fields = fields


class SecretValueSerializer(StrictSerializer):
    value = serializers.CharField(max_length=16_000, trim_whitespace=False, help_text="Write-only: never shown again.")


class ProbeRequestSerializer(StrictSerializer):
    mcp_tokens = serializers.DictField(
        child=serializers.CharField(max_length=16_000, trim_whitespace=False),
        required=False,
        help_text="Secrets for this test only, as a message would send them.",
    )


class ProbeResultSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["connected", "failed"])
    tools = serializers.ListField(child=serializers.DictField(child=serializers.CharField()))
    reason = serializers.CharField(required=False, help_text="Why it failed, when it did.")


class McpServerViewSet(TenantScopedViewSet):
    """The tenant's MCP servers and the platform servers granted to it (read-only here); others' answer 404."""

    serializer_class = McpServerSerializer
    queryset = McpServer.objects.none()  # for the schema only
    lookup_field = "name"
    pagination_class = None
    permission_classes = KEY_ONLY

    def servers(self) -> Any:
        return McpServer.objects.seen_by(self.tenant)

    def server(self, *, to_change: bool = False) -> McpServer:
        server = get_object_or_404(self.servers(), name=self.kwargs["name"])
        if to_change and server.is_platform:
            raise exceptions.PermissionDenied(
                f"{server.name!r} is a platform server: the platform's operators manage it. "
                "Leave it out of a conversation with `mcp_servers` to not use it."
            )
        return server

    @extend_schema(parameters=[TENANT_PARAMETER], responses=McpServerSerializer(many=True))
    def list(self, request: Request, tenant: str) -> Response:
        return Response(McpServerSerializer(self.servers(), many=True).data)

    @extend_schema(parameters=[TENANT_PARAMETER], request=McpServerSerializer, responses={201: McpServerSerializer})
    def create(self, request: Request, tenant: str) -> Response:
        body = McpServerSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            with transaction.atomic():
                server = body.save(tenant=self.tenant)
        except IntegrityError:
            raise exceptions.ValidationError(
                {"name": [f"The tenant already has an MCP server named {body.validated_data['name']!r}."]}
            ) from None
        return Response(McpServerSerializer(server).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[TENANT_PARAMETER], responses=McpServerSerializer)
    def retrieve(self, request: Request, tenant: str, name: str) -> Response:
        return Response(McpServerSerializer(self.server()).data)

    @extend_schema(parameters=[TENANT_PARAMETER], request=McpServerSerializer, responses=McpServerSerializer)
    def partial_update(self, request: Request, tenant: str, name: str) -> Response:
        body = McpServerSerializer(self.server(to_change=True), data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        return Response(McpServerSerializer(body.save()).data)

    @extend_schema(parameters=[TENANT_PARAMETER], responses={204: None})
    def destroy(self, request: Request, tenant: str, name: str) -> Response:
        self.server(to_change=True).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(parameters=[TENANT_PARAMETER], request=ProbeRequestSerializer, responses=ProbeResultSerializer)
    @action(detail=True, methods=["post"])
    def test(self, request: Request, tenant: str, name: str) -> Response:
        """Connect as a run would and list the tools the agent would get (or say why it cannot)."""
        body = ProbeRequestSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        result = probe(self.server(), self.tenant, body.validated_data.get("mcp_tokens", {}))
        return Response(result.as_dict())


class SecretViewSet(TenantScopedViewSet):
    """The tenant's secrets: names only; values are written, never read."""

    serializer_class = SecretSerializer
    queryset = Secret.objects.none()  # for the schema only
    lookup_field = "name"
    lookup_value_regex = r"[A-Za-z0-9_.-]{1,64}"
    pagination_class = None
    permission_classes = KEY_ONLY

    @extend_schema(parameters=[TENANT_PARAMETER], responses=SecretSerializer(many=True))
    def list(self, request: Request, tenant: str) -> Response:
        return Response(SecretSerializer(Secret.objects.filter(tenant=self.tenant), many=True).data)

    @extend_schema(parameters=[TENANT_PARAMETER], request=SecretValueSerializer, responses=SecretSerializer)
    def update(self, request: Request, tenant: str, name: str) -> Response:
        """Store the secret (or replace its value); headers name it as ${name}."""
        body = SecretValueSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        return Response(SecretSerializer(vault.store(self.tenant, name, body.validated_data["value"])).data)

    @extend_schema(parameters=[TENANT_PARAMETER], responses={204: None})
    def destroy(self, request: Request, tenant: str, name: str) -> Response:
        get_object_or_404(Secret, tenant=self.tenant, name=name).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)
