from django.urls import re_path

from usage.api import UsageViewSet
from usage.budget_api import BudgetViewSet

tenant = r"^tenants/(?P<tenant>[a-z0-9][a-z0-9-]*)/usage"
urlpatterns = [
    re_path(rf"{tenant}/?$", UsageViewSet.as_view({"get": "report"}), name="usage-report"),
    re_path(rf"{tenant}/export/?$", UsageViewSet.as_view({"get": "export"}), name="usage-export"),
    re_path(rf"{tenant}/runs/(?P<run_id>[0-9a-f-]{{36}})/?$", UsageViewSet.as_view({"get": "run"}), name="usage-run"),
    re_path(
        r"^tenants/(?P<tenant>[a-z0-9][a-z0-9-]*)/budgets/?$",
        BudgetViewSet.as_view({"get": "overview"}),
        name="budgets",
    ),
    re_path(
        r"^tenants/(?P<tenant>[a-z0-9][a-z0-9-]*)/budgets/users/(?P<user_id>[^/]{1,200})/?$",
        BudgetViewSet.as_view({"get": "read_user", "put": "set_user", "delete": "reset_user"}),
        name="budgets-user",
    ),
]
