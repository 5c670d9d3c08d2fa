from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import include, path, re_path

from api.docs import DocsView, SchemaView
from api.errors import allow_methods, api_not_found
from chat.urls import api_urlpatterns as chat_api_urlpatterns
from usage.metrics import metrics_view


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and the test harness: the process serves requests."""
    return JsonResponse({"status": "ok"})


@allow_methods("GET", "HEAD")
async def home(request: HttpRequest) -> HttpResponse:
    """Where a first visit lands (and the admin's "View site"): what this is, and the way in."""
    return render(request, "home.html")


urlpatterns = [
    path("", home, name="home"),
    path("healthz", healthz),
    path("metrics", metrics_view),
    path("admin/", admin.site.urls),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", DocsView.as_view(url_name="schema"), name="api-docs"),
    path("api/", include("tenants.urls")),
    path("api/", include("conversations.urls")),
    path("api/", include("usage.urls")),
    path("api/", include("workspaces.urls")),
    path("api/", include("skills.urls")),
    path("api/", include("mcp_servers.urls")),
    path("api/", include("agents.urls")),
    path("api/", include("approvals.urls")),
    path("api/", include(chat_api_urlpatterns)),
    path("chat/", include("chat.urls")),
    re_path(r"^api/(?P<path>.*)$", api_not_found),
]

# Errors Django answers itself (a body over the size limit, a path no pattern matches, a crash) in the
# API's one error shape; the admin's pages keep their HTML.
handler400 = "api.errors.bad_request"
handler403 = "api.errors.permission_denied"
handler404 = "api.errors.page_not_found"
handler500 = "api.errors.server_error"
