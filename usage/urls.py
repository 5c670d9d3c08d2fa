from django.urls import re_path

from usage.api import UsageViewSet

tenant = r"^tenants/(?P<tenant>[a-z0-9][a-z0-9-]*)/usage"
urlpatterns = [
    re_path(rf"{tenant}/?$", UsageViewSet.as_view({"get": "report"}), name="usage-report"),
    re_path(rf"{tenant}/export/?$", UsageViewSet.as_view({"get": "export"}), name="usage-export"),
    re_path(rf"{tenant}/runs/(?P<run_id>[0-9a-f-]{{36}})/?$", UsageViewSet.as_view({"get": "run"}), name="usage-run"),
]
