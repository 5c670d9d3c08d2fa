"""A conversation's files over REST: the tree, uploads, contents of any version, deletions, history."""

import builtins
from typing import Any

from django.conf import settings
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from api.parsers import BodyTooLarge
from api.viewsets import TENANT_PARAMETER, TenantScopedViewSet, principal
from conversations.models import Conversation
from workspaces import services, storage
from workspaces.models import WorkspaceFile
from workspaces.serializers import FileUploadSerializer, WorkspaceFileSerializer
from workspaces.sync import valid_path

CONVERSATION_PARAMETER = OpenApiParameter("conversation_id", OpenApiTypes.UUID, OpenApiParameter.PATH)
PATH_PARAMETER = OpenApiParameter("path", str, OpenApiParameter.PATH, description="The file's path in /workspace.")
VERSION_PARAMETER = OpenApiParameter("version", int, description="An earlier version (default: the current one).")


class WorkspaceFilesViewSet(TenantScopedViewSet):
    """`/api/tenants/{t}/conversations/{c}/files`: what the conversation's /workspace holds, version by version."""

    serializer_class = WorkspaceFileSerializer
    queryset = WorkspaceFile.objects.none()  # for the schema only: every action reads its conversation's files
    pagination_class = None

    def conversation(self) -> Conversation:
        conversations = principal(self.request).narrow(Conversation.objects.for_tenant(self.tenant))
        return get_object_or_404(conversations, pk=self.kwargs["conversation_id"])

    @extend_schema(parameters=[TENANT_PARAMETER, CONVERSATION_PARAMETER], responses=WorkspaceFileSerializer(many=True))
    def list(self, request: Request, tenant: str, conversation_id: str) -> Response:
        """The current tree: the latest version of every file that is not deleted."""
        files = WorkspaceFile.objects.filter(conversation=self.conversation()).current().order_by("path")
        return Response(WorkspaceFileSerializer(files, many=True).data)

    @extend_schema(
        parameters=[TENANT_PARAMETER, CONVERSATION_PARAMETER],
        request={"multipart/form-data": FileUploadSerializer},
        responses={201: WorkspaceFileSerializer},
    )
    def create(self, request: Request, tenant: str, conversation_id: str) -> Response:
        """Upload a file (multipart: `file`, optional `path`); it becomes the path's next version."""
        conversation = self.conversation()
        # A form keeps the last of repeated parts: two files for one path would lose one without a word.
        for name in ("file", "path"):
            if len(request.POST.getlist(name) + request.FILES.getlist(name)) > 1:
                problem = f"Send one `{name}`: an upload stores one file (a message takes several, as `file` parts)."
                raise exceptions.ValidationError({name: [problem]})
        body = FileUploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        upload = body.validated_data["file"]
        path = body.validated_data.get("path") or upload.name
        if reason := valid_path(path):
            raise exceptions.ValidationError({"path": [reason]})
        limit = settings.WORKSPACE_FILE_MB * services.MB
        if upload.size > limit:
            raise BodyTooLarge(f"The file is {upload.size:,} bytes; the limit is {limit:,} (WORKSPACE_FILE_MB).")
        version = services.save_file(conversation, path, upload, source=WorkspaceFile.Source.USER)
        return Response(WorkspaceFileSerializer(version).data, status=status.HTTP_201_CREATED)

    def _version(self, path: str) -> WorkspaceFile:
        versions = WorkspaceFile.objects.filter(conversation=self.conversation(), path=path)
        raw = self.request.query_params.get("version")
        if raw is None:
            found = versions.current().first()
        elif raw.isascii() and raw.isdigit() and int(raw) < 2**31:
            found = versions.filter(version=int(raw), deleted=False).first()
        else:
            raise exceptions.ValidationError({"version": ["Must be a whole number."]})
        if found is None:
            raise exceptions.NotFound()
        return found

    @extend_schema(
        parameters=[TENANT_PARAMETER, CONVERSATION_PARAMETER, PATH_PARAMETER, VERSION_PARAMETER],
        responses={
            (200, "*/*"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The content, with the content type it was stored with (else bytes)."
            )
        },
    )
    def retrieve(self, request: Request, tenant: str, conversation_id: str, path: str) -> Any:
        """The content of the file (the current version, or `?version=N`)."""
        version = self._version(path)
        content = storage.open_blob(version.conversation, version.sha256)
        name = path.rsplit("/", 1)[-1]
        return FileResponse(content, as_attachment=True, filename=name, content_type=version.content_type or None)

    @extend_schema(parameters=[TENANT_PARAMETER, CONVERSATION_PARAMETER, PATH_PARAMETER], responses={204: None})
    def destroy(self, request: Request, tenant: str, conversation_id: str, path: str) -> Response:
        """Delete the file: its history stays, and the next run's /workspace no longer has it."""
        conversation = self.conversation()
        if not WorkspaceFile.objects.filter(conversation=conversation, path=path).current().exists():
            raise exceptions.NotFound()
        services.delete_file(conversation, path)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[TENANT_PARAMETER, CONVERSATION_PARAMETER, PATH_PARAMETER],
        responses=WorkspaceFileSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def versions(self, request: Request, tenant: str, conversation_id: str, path: str) -> Response:
        """Every version of the file, newest first, deletions included."""
        versions = WorkspaceFile.objects.filter(conversation=self.conversation(), path=path).order_by("-version")
        if not versions.exists():
            raise exceptions.NotFound()
        return Response(WorkspaceFileSerializer(versions, many=True).data)

    def get_parsers(self) -> builtins.list[Any]:
        # Uploads are multipart; everything else here has no body.
        return (
            [MultiPartParser()] if self.request is not None and self.request.method == "POST" else super().get_parsers()
        )
