from rest_framework import serializers

from workspaces.models import WorkspaceFile


class WorkspaceFileSerializer(serializers.ModelSerializer):
    run = serializers.UUIDField(source="run_id", read_only=True, allow_null=True)
    updated_at = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = WorkspaceFile
        fields = [
            "path",
            "version",
            "size",
            "sha256",
            "content_type",
            "source",
            "run",
            "presented",
            "deleted",
            "updated_at",
        ]
        read_only_fields = fields


class FileUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="The content.")
    path = serializers.CharField(
        required=False, help_text="Where in /workspace, e.g. `docs/brief.md`; the file's own name by default."
    )
