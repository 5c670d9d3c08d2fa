"""The OpenAPI schema says what the server really sends: the X-User-ID header, the error answers of each
operation in the one error shape, and a tag per resource."""

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from api.viewsets import TenantScopedViewSet


class ErrorDetailSerializer(serializers.Serializer):
    status = serializers.IntegerField(help_text="The HTTP status, again.")
    code = serializers.CharField(help_text="A stable, machine-readable reason, e.g. `run_in_progress`.")
    message = serializers.CharField(help_text="What went wrong and what to do about it, for people.")

    def get_fields(self) -> dict[str, serializers.Field]:
        # `fields` is also the name of Serializer's own attribute, hence here.
        fields = super().get_fields()
        fields["fields"] = serializers.DictField(
            child=serializers.JSONField(),
            required=False,
            help_text="For invalid input: each field (or header, or query parameter) and what is wrong with it.",
        )
        return fields


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ErrorSerializer, description=description)


ERRORS = {
    400: "Invalid input: a body, field, header or query parameter; `fields` names each.",
    401: "No API key, or one that is unknown or revoked.",
    403: "The key may not do this (a tenant key on a platform-wide resource).",
    404: "No such resource, or one of another tenant (both answer alike).",
    405: "The method is not one this path serves.",
    409: "The request conflicts with the resource's state (a run already active, an archived conversation, …).",
    413: "The body is over the upload limit.",
    415: "The body is not of a type the operation takes: JSON, or a multipart form where its request body says so.",
    503: "The database is unavailable for a moment; retry after `Retry-After` seconds.",
}
BODY_METHODS = {"POST", "PUT", "PATCH"}

X_USER_ID = OpenApiParameter(
    "X-User-ID",
    str,
    OpenApiParameter.HEADER,
    description=(
        "The tenant's end user the request is for (UTF-8, at most 200 characters, no control characters). "
        "With it, only that user's conversations, runs and usage exist, and new conversations and runs are theirs."
    ),
)


def tag_of(path: str) -> str:
    """The resource a path is about, as the docs group operations."""
    if "/usage" in path:
        return "usage"
    if "/files" in path:
        return "files"
    if "/skills" in path:
        return "skills"
    if "/agents" in path:
        return "agents"
    if "/approvals" in path or "/questions" in path:
        return "approvals"
    if "/events" in path or path.endswith("/stream-token/"):
        return "events"
    if any(part in path for part in ("/runs", "/messages", "/interrupt", "/stream")):
        return "runs"
    if "/conversations" in path:
        return "conversations"
    return "models" if path.startswith("/api/models") else "tenants"


class ApiSchema(AutoSchema):
    def get_tags(self) -> list[str]:
        return [tag_of(self.path)]

    def get_override_parameters(self) -> list[Any]:
        parameters = list(super().get_override_parameters())
        if isinstance(self.view, TenantScopedViewSet):
            parameters.append(X_USER_ID)
        return parameters

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for status in self._error_statuses():
            responses.setdefault(str(status), self._get_response_for_code(error_response(ERRORS[status]), str(status)))
        return responses

    def _error_statuses(self) -> list[int]:
        statuses = [400, 401, 403, 404, 405, 503]
        if self.method in BODY_METHODS or self.method == "DELETE":
            statuses.append(409)
        if self.method in BODY_METHODS:
            statuses += [413, 415]
        return sorted(statuses)
