"""A tenant's skills over REST: `/api/tenants/{t}/skills`."""

import builtins
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.decorators import action
from rest_framework.generics import get_object_or_404
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from api.parsers import JSONParser
from api.serializers import StrictModelSerializer
from api.viewsets import TENANT_PARAMETER, TenantScopedViewSet, principal
from skills import archive, services
from skills.models import Skill, SkillVersion


class SkillVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = SkillVersion
        fields = ["number", "description", "files", "size", "sha256", "uploaded_by", "created_at"]
        read_only_fields = fields


class SkillSerializer(StrictModelSerializer):
    current_version = SkillVersionSerializer(read_only=True)

    class Meta:
        model = Skill
        fields = [
            "name",
            "description",
            "title",
            "enabled",
            "user_selectable",
            "slash_command",
            "current_version",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["name", "description", "current_version", "created_at", "updated_at"]


class SkillUploadSerializer(serializers.Serializer):
    archive = serializers.FileField(required=False, help_text="The skill as a zip (its folder, or its contents).")
    file = serializers.ListField(child=serializers.FileField(), required=False, help_text="Or its files, each…")
    path = serializers.ListField(child=serializers.CharField(), required=False, help_text="…with its relative path.")


def read_upload(request: Request) -> archive.SkillContent:
    """The uploaded skill, checked; a 400 that names the problem otherwise."""
    uploads = request.FILES
    try:
        if "archive" in uploads:
            return archive.from_zip(uploads["archive"])
        files, paths = uploads.getlist("file"), request.POST.getlist("path")
        if not files:
            raise archive.SkillProblem("Send the skill as `archive` (a zip), or as `file` parts each with a `path`.")
        if len(paths) != len(files):
            raise archive.SkillProblem("Send one `path` for each `file`, in the same order.")
        return archive.from_files([(path, upload.read()) for path, upload in zip(paths, files, strict=True)])
    except archive.SkillProblem as problem:
        raise exceptions.ValidationError({"skill": [str(problem)]}) from None


class SkillViewSet(TenantScopedViewSet):
    """The tenant's Agent Skills; another tenant's answer 404."""

    serializer_class = SkillSerializer
    queryset = Skill.objects.none()  # for the schema only
    lookup_field = "name"
    pagination_class = None

    def get_parsers(self) -> builtins.list[Any]:
        if self.request is not None and self.request.method == "POST":
            return [MultiPartParser()]
        return [JSONParser()]

    def skills(self) -> Any:
        return Skill.objects.filter(tenant=self.tenant).select_related("current_version")

    def skill(self) -> Skill:
        return get_object_or_404(self.skills(), name=self.kwargs["name"])

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
        body = SkillSerializer(self.skill(), data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        body.save()
        return Response(body.data)

    @extend_schema(parameters=[TENANT_PARAMETER], responses={204: None})
    def destroy(self, request: Request, tenant: str, name: str) -> Response:
        self.skill().delete()
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[TENANT_PARAMETER],
        request={"multipart/form-data": SkillUploadSerializer},
        responses={200: SkillVersionSerializer(many=True), 201: SkillVersionSerializer},
    )
    @action(detail=True, methods=["get", "post"])
    def versions(self, request: Request, tenant: str, name: str) -> Response:
        """Every version, newest first; POST uploads the next one, which becomes current."""
        skill = self.skill()
        if request.method == "GET":
            return Response(SkillVersionSerializer(skill.versions.all(), many=True).data)
        content = read_upload(request)
        try:
            version = services.add_version(skill, content, uploaded_by=_uploader(request))
        except archive.SkillProblem as problem:
            raise exceptions.ValidationError({"skill": [str(problem)]}) from None
        return Response(SkillVersionSerializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(parameters=[TENANT_PARAMETER], responses=SkillSerializer(many=True))
    @action(detail=False, methods=["get"], url_path="slash-commands")
    def slash_commands(self, request: Request, tenant: str) -> Response:
        """What an end user may type as `/name`: the enabled skills marked as slash commands."""
        commands = self.skills().filter(enabled=True, slash_command=True)
        return Response(SkillSerializer(commands, many=True).data)


def _uploader(request: Request) -> str:
    caller = principal(request)
    if caller.key is not None:
        return f"key {caller.key.prefix}…"
    return f"user {caller.user_id}"
