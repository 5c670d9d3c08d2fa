"""Budgets over REST: what each allows now, end users' own budgets, and conversations that ask for less."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from conversations.models import Conversation
from tenants.models import Tenant
from tests.api.assertions import error_of
from tests.conftest import client_with_key
from tests.factories import BudgetCounterFactory, UserBudgetFactory
from usage.budgets import periods
from usage.models import UserBudget

pytestmark = pytest.mark.django_db


def now_periods() -> tuple[str, str]:
    return periods(datetime.now(UTC), "UTC")


def test_the_tenants_month_reads_with_what_is_spent_held_and_left(api_client: APIClient, tenant: Tenant) -> None:
    Tenant.objects.filter(pk="acme").update(
        monthly_budget_usd=Decimal("10"), monthly_budget_calls=100, user_daily_budget_usd=Decimal("1")
    )
    _, month = now_periods()
    BudgetCounterFactory(tenant=tenant, spent_usd=Decimal("2.5"), calls=7, reserved_usd=1, reserved_calls=1)

    body = api_client.get("/api/tenants/acme/budgets").json()

    assert body["month"] == {
        "level": "tenant_month",
        "period": month,
        "starts_at": f"{month}-01T00:00:00Z",
        "ends_at": body["month"]["ends_at"],
        "limit_usd": "10.000000",
        "limit_calls": 100,
        "spent_usd": "2.5000000000",
        "calls": 7,
        "reserved_usd": "1.0000000000",
        "reserved_calls": 1,
        "remaining_usd": "6.5000000000",
        "remaining_calls": 92,
    }
    assert body["defaults"]["user_day"] == {"usd": "1.000000", "calls": None}
    assert body["defaults"]["run"] == {"usd": None, "calls": None}


def test_an_end_users_own_budget_is_set_read_and_dropped(api_client: APIClient, tenant: Tenant) -> None:
    Tenant.objects.filter(pk="acme").update(user_daily_budget_usd=Decimal("1"), user_monthly_budget_calls=50)
    day, _ = now_periods()

    set_ = api_client.put(
        "/api/tenants/acme/budgets/users/alice", {"daily_usd": "5", "monthly_calls": None}, format="json"
    )
    read = api_client.get("/api/tenants/acme/budgets/users/alice").json()
    dropped = api_client.delete("/api/tenants/acme/budgets/users/alice")
    after = api_client.get("/api/tenants/acme/budgets/users/alice").json()

    assert set_.status_code == 200
    assert set_.json() == read
    assert read["own"] == {"daily_usd": "5.000000", "daily_calls": None, "monthly_usd": None, "monthly_calls": None}
    assert (read["day"]["period"], read["day"]["limit_usd"]) == (day, "5.000000")
    assert read["month"]["limit_calls"] == 50  # the tenant's default, where alice has none of her own
    assert dropped.status_code == 204
    assert after["day"]["limit_usd"] == "1.000000"
    assert not UserBudget.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"daily_usd": "-1"}, "daily_usd"),
        ({"monthly_calls": "many"}, "monthly_calls"),
        ({"weekly_usd": "1"}, "weekly_usd"),
    ],
)
def test_a_bad_user_budget_is_a_400_that_names_the_field_and_keeps_the_old_one(
    api_client: APIClient, tenant: Tenant, body: dict[str, str], field: str
) -> None:
    UserBudgetFactory(tenant=tenant, user_id="alice", daily_usd=Decimal("2"))

    error = error_of(api_client.put("/api/tenants/acme/budgets/users/alice", body, format="json"), 400)

    assert field in error["fields"]
    assert UserBudget.objects.get(user_id="alice").daily_usd == Decimal("2")


def test_another_tenants_budgets_are_not_found(other_api_client: APIClient, tenant: Tenant) -> None:
    error_of(other_api_client.get("/api/tenants/acme/budgets"), 404)
    error_of(other_api_client.put("/api/tenants/acme/budgets/users/alice", {"daily_usd": "9"}, format="json"), 404)
    assert not UserBudget.objects.exists()


def test_with_x_user_id_only_that_end_users_budget_exists(tenant_key: str, tenant: Tenant) -> None:
    as_alice = client_with_key(tenant_key, user_id="alice")

    assert as_alice.get("/api/tenants/acme/budgets/users/alice").status_code == 200
    error_of(as_alice.get("/api/tenants/acme/budgets/users/bob"), 404)
    error_of(as_alice.put("/api/tenants/acme/budgets/users/bob", {"daily_usd": "9"}, format="json"), 404)
    assert not UserBudget.objects.exists()


def test_an_admin_key_sets_the_tenants_budgets(admin_api_client: APIClient, tenant: Tenant) -> None:
    response = admin_api_client.patch(
        "/api/tenants/acme", {"monthly_budget_usd": "500", "user_daily_budget_calls": 200}, format="json"
    )

    assert response.status_code == 200
    tenant.refresh_from_db()
    assert (tenant.monthly_budget_usd, tenant.user_daily_budget_calls) == (Decimal("500"), 200)


def test_a_conversation_may_ask_for_less_than_the_tenants_default_never_more(
    api_client: APIClient, tenant: Tenant
) -> None:
    Tenant.objects.filter(pk="acme").update(conversation_budget_usd=Decimal("3"), conversation_budget_calls=20)

    lower = api_client.post("/api/tenants/acme/conversations", {"budget": {"usd": "1.5"}}, format="json")
    higher = api_client.post("/api/tenants/acme/conversations", {"budget": {"calls": 500}}, format="json")

    assert lower.json()["budget"] == {"usd": "1.500000", "calls": 20}
    assert higher.json()["budget"] == {"usd": "3.000000", "calls": 20}
    assert Conversation.objects.get(pk=lower.json()["id"]).budget_usd == Decimal("1.5")
