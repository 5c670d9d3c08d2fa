from django.urls import re_path

from workspaces.api import WorkspaceFilesViewSet

files = r"^tenants/(?P<tenant>[a-z0-9][a-z0-9-]*)/conversations/(?P<conversation_id>[0-9a-f-]{36})/files"
path = r"(?P<path>[^\x00]+?)"

urlpatterns = [
    re_path(f"{files}/?$", WorkspaceFilesViewSet.as_view({"get": "list", "post": "create"}), name="workspace-files"),
    re_path(
        f"{files}/{path}/versions$", WorkspaceFilesViewSet.as_view({"get": "versions"}), name="workspace-file-versions"
    ),
    re_path(
        f"{files}/{path}$",
        WorkspaceFilesViewSet.as_view({"get": "retrieve", "delete": "destroy"}),
        name="workspace-file",
    ),
]
