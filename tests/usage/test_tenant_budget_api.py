"""A tenant's default run budget over the tenants API: admin keys set it, tenant keys read it."""

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from tenants.models import Tenant
from tests.api.assertions import error_of

pytestmark = pytest.mark.django_db


def test_an_admin_key_sets_and_clears_the_run_budget(admin_api_client: APIClient, tenant: Tenant) -> None:
    set_ = admin_api_client.patch("/api/tenants/acme", {"run_budget_usd": "2.5", "run_budget_calls": 40}, format="json")
    cleared = admin_api_client.patch("/api/tenants/acme", {"run_budget_usd": None}, format="json")

    assert set_.status_code == 200
    assert (set_.json()["run_budget_usd"], set_.json()["run_budget_calls"]) == ("2.500000", 40)
    assert (cleared.json()["run_budget_usd"], cleared.json()["run_budget_calls"]) == (None, 40)
    tenant.refresh_from_db()
    assert (tenant.run_budget_usd, tenant.run_budget_calls) == (None, 40)


def test_a_tenant_key_reads_its_budget(api_client: APIClient, tenant: Tenant) -> None:
    Tenant.objects.filter(pk="acme").update(run_budget_usd=Decimal("1"))

    body = api_client.get("/api/tenants/acme").json()

    assert (body["run_budget_usd"], body["run_budget_calls"]) == ("1.000000", None)


@pytest.mark.parametrize(
    ("field", "value"), [("run_budget_usd", "-1"), ("run_budget_calls", -3), ("run_budget_usd", "x")]
)
def test_a_negative_or_malformed_budget_is_a_400(
    admin_api_client: APIClient, tenant: Tenant, field: str, value: object
) -> None:
    error = error_of(admin_api_client.patch("/api/tenants/acme", {field: value}, format="json"), 400)

    assert field in error["fields"]
