"""A tenant's skills over REST: `/api/tenants/{t}/skills`.

A tenant key sees its tenant's skills and the platform skills granted to it (read-only: operators
manage those in the admin); another tenant's skills answer 404.
"""

import builtins
import mimetypes
from typing import Any

from django.http import FileResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from api.errors import Conflict
from api.parsers import JSONParser
from api.serializers import StrictModelSerializer
from api.viewsets import TENANT_PARAMETER, ApiKeyRequiredToChange, TenantScopedViewSet, principal
from skills import archive, services
from skills.models import Skill, SkillVersion


class SkillVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = SkillVersion
        fields = ["number", "description", "files", "size", "sha256", "uploaded_by", "created_at"]
        read_only_fields = fields


class SkillSerializer(StrictModelSerializer):
    current_version = SkillVersionSerializer(read_only=True)
    platform = serializers.BooleanField(
        source="is_platform", read_only=True, help_text="A platform skill granted to the tenant (read-only here)."
    )

    class Meta:
        model = Skill
        fields = [
            "name",
            "description",
            "title",
            "enabled",
            "user_selectable",
            "slash_command",
            "platform",
            "current_version",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["name", "description", "platform", "current_version", "created_at", "updated_at"]


class SkillUploadSerializer(serializers.Serializer):
    archive = serializers.FileField(required=False, help_text="The skill as a zip (its folder, or its contents).")
    file = serializers.ListField(child=serializers.FileField(), required=False, help_text="Or its files, each…")
    path = serializers.ListField(child=serializers.CharField(), required=False, help_text="…with its relative path.")


def read_upload(request: Request) -> archive.SkillContent:
    """The uploaded skill, checked; a 400 that names the problem otherwise."""
    uploads = request.FILES
    try:
        if "archive" in uploads:
            # A form keeps the last of repeated parts: refuse rather than take one zip of two unsaid.
            if len(uploads.getlist("archive")) > 1:
                raise archive.SkillProblem("Send one `archive`: a skill is one zip.")
            return archive.from_zip(uploads["archive"])
        files, paths = uploads.getlist("file"), request.POST.getlist("path")
        if not files:
            raise archive.SkillProblem("Send the skill as `archive` (a zip), or as `file` parts each with a `path`.")
        if len(paths) != len(files):
            raise archive.SkillProblem("Send one `path` for each `file`, in the same order.")
        return archive.from_files([(path, upload.read()) for path, upload in zip(paths, files, strict=True)])
    except archive.SkillProblem as problem:
        raise exceptions.ValidationError({"skill": [str(problem)]}) from None


NUMBER_PARAMETER = OpenApiParameter("number", int, OpenApiParameter.PATH, description="The version's number.")
FILE_PATH_PARAMETER = OpenApiParameter(
    "path", str, OpenApiParameter.PATH, description="The file's path in the skill's folder."
)


class SkillViewSet(TenantScopedViewSet):
    """The tenant's Agent Skills; another tenant's answer 404."""

    serializer_class = SkillSerializer
    queryset = Skill.objects.none()  # for the schema only
    # End users (the chat page) may see the skills, and the commands they can type; changes are the backend's.
    permission_classes = [permissions.IsAuthenticated, ApiKeyRequiredToChange]
    lookup_field = "name"
    pagination_class = None

    def get_parsers(self) -> builtins.list[Any]:
        if self.request is not None and self.request.method == "POST":
            return [MultiPartParser()]
        return [JSONParser()]

    def skills(self) -> Any:
        """The tenant's own and its granted platform skills; where names meet, its own."""
        return Skill.objects.seen_by(self.tenant).select_related("current_version")

    def skill(self, *, to_change: bool = False) -> Skill:
        skill = get_object_or_404(self.skills(), name=self.kwargs["name"])
        if to_change and skill.is_platform:
            raise exceptions.PermissionDenied(
                f"{skill.name!r} is a platform skill: the platform's operators manage it. "
                "Leave it out of a conversation with `skills` to not use it."
            )
        return skill

    def version(self) -> SkillVersion:
        return get_object_or_404(self.skill().versions.select_related("skill"), number=self.kwargs["number"])

    @extend_schema(parameters=[TENANT_PARAMETER], responses=SkillSerializer(many=True))
    def list(self, request: Request, tenant: str) -> Response:
        return Response(SkillSerializer(self.skills(), many=True).data)

    @extend_schema(
        parameters=[TENANT_PARAMETER],
        request={"multipart/form-data": SkillUploadSerializer},
        responses={201: SkillSerializer},
    )
    def create(self, request: Request, tenant: str) -> Response:
        """Upload a new skill (its name comes from SKILL.md)."""
        content = read_upload(request)
        try:
            skill = services.create_skill(self.tenant, content, uploaded_by=_uploader(request))
        except archive.SkillProblem as problem:
            raise exceptions.ValidationError({"skill": [str(problem)]}) from None
        return Response(SkillSerializer(skill).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[TENANT_PARAMETER], responses=SkillSerializer)
    def retrieve(self, request: Request, tenant: str, name: str) -> Response:
        return Response(SkillSerializer(self.skill()).data)

    @extend_schema(parameters=[TENANT_PARAMETER], request=SkillSerializer, responses=SkillSerializer)
    def partial_update(self, request: Request, tenant: str, name: str) -> Response:
        """Change the title, or whether the skill is enabled, user-selectable or a slash command."""
        body = SkillSerializer(self.skill(to_change=True), data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        body.save()
        return Response(body.data)

    @extend_schema(parameters=[TENANT_PARAMETER], responses={204: None})
    def destroy(self, request: Request, tenant: str, name: str) -> Response:
        """Delete the skill with every version and stored file; runs under way keep their copy."""
        services.delete_skill(self.skill(to_change=True))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[TENANT_PARAMETER],
        request={"multipart/form-data": SkillUploadSerializer},
        responses={200: SkillVersionSerializer(many=True), 201: SkillVersionSerializer},
    )
    @action(detail=True, methods=["get", "post"])
    def versions(self, request: Request, tenant: str, name: str) -> Response:
        """Every version, newest first; POST uploads the next one, which becomes current."""
        if request.method == "GET":
            return Response(SkillVersionSerializer(self.skill().versions.all(), many=True).data)
        skill = self.skill(to_change=True)
        content = read_upload(request)
        try:
            version = services.add_version(skill, content, uploaded_by=_uploader(request))
        except archive.SkillProblem as problem:
            raise exceptions.ValidationError({"skill": [str(problem)]}) from None
        return Response(SkillVersionSerializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[TENANT_PARAMETER, NUMBER_PARAMETER], responses=SkillVersionSerializer)
    @extend_schema(
        methods=["DELETE"], parameters=[TENANT_PARAMETER, NUMBER_PARAMETER], request=None, responses={204: None}
    )
    @action(detail=True, methods=["get", "delete"], url_path=r"versions/(?P<number>[0-9]{1,9})")
    def version_detail(self, request: Request, tenant: str, name: str, number: str) -> Response:
        """One version: its files (path, size, sha256) and who uploaded it. DELETE removes an old version
        (say, one that held a secret) and the files no other version has; the current one is refused (409)."""
        if request.method == "GET":
            return Response(SkillVersionSerializer(self.version()).data)
        self.skill(to_change=True)
        try:
            services.delete_version(self.version())
        except archive.SkillProblem as problem:
            raise Conflict(str(problem), code="current_version") from None
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[TENANT_PARAMETER, NUMBER_PARAMETER],
        responses={(200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="`<name>/…` as a zip.")},
    )
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<number>[0-9]{1,9})/download")
    def download(self, request: Request, tenant: str, name: str, number: str) -> StreamingHttpResponse:
        """The version as a zip of its folder, ready to upload again (here or elsewhere)."""
        version = self.version()
        response = StreamingHttpResponse(services.version_zip(version), content_type="application/zip")
        response["Content-Disposition"] = f'attachment; filename="{version.skill.name}-v{version.number}.zip"'
        return response

    @extend_schema(
        parameters=[TENANT_PARAMETER, NUMBER_PARAMETER, FILE_PATH_PARAMETER],
        responses={
            (200, "*/*"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The file, with the content type its name suggests (else bytes)."
            )
        },
    )
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<number>[0-9]{1,9})/files/(?P<path>.+?)")
    def file(self, request: Request, tenant: str, name: str, number: str, path: str) -> FileResponse:
        """One file of the version, by its path in the skill's folder (e.g. `scripts/extract.py`)."""
        version = self.version()
        entry = next((entry for entry in version.files if entry["path"] == path), None)
        if entry is None:
            raise exceptions.NotFound(f"Version {version.number} of {version.skill.name!r} has no file {path!r}.")
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return FileResponse(
            services.open_file(version, entry), filename=path.rsplit("/", 1)[-1], content_type=content_type
        )

    @extend_schema(parameters=[TENANT_PARAMETER, NUMBER_PARAMETER], request=None, responses=SkillSerializer)
    @action(detail=True, methods=["post"], url_path=r"versions/(?P<number>[0-9]{1,9})/make-current")
    def make_current(self, request: Request, tenant: str, name: str, number: str) -> Response:
        """Run this version from the next run on (an older one, to undo an upload)."""
        self.skill(to_change=True)
        return Response(SkillSerializer(services.make_current(self.version())).data)

    @extend_schema(parameters=[TENANT_PARAMETER], responses=SkillSerializer(many=True))
    @action(detail=False, methods=["get"], url_path="slash-commands")
    def slash_commands(self, request: Request, tenant: str) -> Response:
        """What an end user may type as `/name`: the enabled skills marked as slash commands."""
        commands = [skill for skill in services.enabled_skills(self.tenant).values() if skill.slash_command]
        return Response(SkillSerializer(sorted(commands, key=lambda s: s.name), many=True).data)


def _uploader(request: Request) -> str:
    caller = principal(request)
    if caller.key is not None:
        return f"key {caller.key.prefix}…"
    return f"user {caller.user_id}"
