from django.contrib import admin
from django.http import FileResponse, Http404, HttpRequest
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from tenants.admin_mixins import ReadOnlyAdminMixin
from workspaces import storage
from workspaces.models import WorkspaceFile


@admin.register(WorkspaceFile)
class WorkspaceFileAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every version of every conversation's files, with its content a click away.

    Files arrive through the API and from runs, versioned; a deletion is a version too (the API's
    DELETE), so the history stays.
    """

    list_display = [
        "path",
        "version",
        "file_size",
        "source",
        "deleted",
        "conversation",
        "run",
        "created_at",
        "download",
    ]
    list_filter = ["source", "deleted", "created_at"]
    list_select_related = ["conversation"]
    search_fields = ["path", "=conversation__id"]
    search_help_text = "A path (or part of one), or a conversation's full id."
    ordering = ["conversation", "path", "-version"]
    fields = readonly_fields = (
        "conversation",
        "path",
        "version",
        "file_size",
        "sha256",
        "content_type",
        "source",
        "run",
        "presented",
        "deleted",
        "created_at",
        "download",
    )

    @admin.display(description="size", ordering="size")
    def file_size(self, obj: WorkspaceFile) -> str:
        return "—" if obj.deleted else filesizeformat(obj.size)

    @admin.display(description="content")
    def download(self, obj: WorkspaceFile) -> str:
        if obj.deleted:
            return "deleted"
        return format_html(
            '<a href="{}">download</a>', reverse("admin:workspaces_workspacefile_download", args=[obj.pk])
        )

    def get_urls(self) -> list[URLPattern]:
        download = self.admin_site.admin_view(self.download_view)
        return [path("<int:pk>/download/", download, name="workspaces_workspacefile_download"), *super().get_urls()]

    def download_view(self, request: HttpRequest, pk: int) -> FileResponse:
        if not self.has_view_permission(request):
            raise Http404
        version = get_object_or_404(WorkspaceFile.objects.select_related("conversation"), pk=pk, deleted=False)
        name = version.path.rsplit("/", 1)[-1]
        content = storage.open_blob(version.conversation, version.sha256)
        return FileResponse(content, as_attachment=True, filename=name, content_type=version.content_type or None)
