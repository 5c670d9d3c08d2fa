"""`/api/tenants/{t}/approvals` and `/api/tenants/{t}/questions`: a POST to one decides it (the contract's shape,
hence routes of their own rather than a router's)."""

from django.urls import re_path

from approvals.api import ApprovalViewSet, QuestionViewSet

TENANT = r"^tenants/(?P<tenant>[a-z0-9][a-z0-9-]*)"
UUID = r"(?P<pk>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"

urlpatterns = [
    re_path(rf"{TENANT}/approvals/?$", ApprovalViewSet.as_view({"get": "list"}), name="approval-list"),
    re_path(
        rf"{TENANT}/approvals/{UUID}/?$",
        ApprovalViewSet.as_view({"get": "retrieve", "post": "decide"}),
        name="approval-detail",
    ),
    re_path(rf"{TENANT}/questions/?$", QuestionViewSet.as_view({"get": "list"}), name="question-list"),
    re_path(
        rf"{TENANT}/questions/{UUID}/?$",
        QuestionViewSet.as_view({"get": "retrieve", "post": "answer"}),
        name="question-detail",
    ),
]
