"""The operator's usage dashboard: staff only, figures that agree with the records, and no 500 for any query."""

from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db.models import Sum
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries

from conversations.models import Run
from tenants.models import Tenant
from tests.factories import BudgetCounterFactory, UserBudgetFactory
from usage.dashboard import Period, dashboard_figures
from usage.models import UsageRecord

# Also on the embedded SQLite (`make run`'s default), where PostgreSQL's SQL would not run.
pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]

DASHBOARD = reverse("admin:usage_dashboard")


def in_last(days: int) -> Any:
    today = timezone.now().astimezone(UTC).date()
    period = Period(days, today)
    return UsageRecord.objects.between(period.start, period.end)


def series(response: Any, chart_id: str) -> dict[str, list[Any]]:
    chart = next(chart for chart in response.context["charts"] if chart.id == chart_id)
    return {s.label: s.values for s in chart.series}


def test_staff_see_thirty_days_of_spend_runs_and_failures(
    admin_client: Client, usage_history: list[UsageRecord]
) -> None:
    response = admin_client.get(DASHBOARD)

    assert response.status_code == 200
    context = response.context
    assert context["days"] == 30
    assert len(context["charts"][0].dates) == 30
    expected = in_last(30).aggregate(cost=Sum("cost_usd"))["cost"]
    assert context["totals"]["cost_usd"] == expected
    assert context["totals"]["model_calls"] == 5
    for chart_id, key in [("spend-by-tenant", "tenant_id"), ("spend-by-model", "model_id")]:
        per_label = {label: sum(values) for label, values in series(response, chart_id).items()}
        by_key = in_last(30).values(key).annotate(cost=Sum("cost_usd")).order_by()
        assert per_label == {row[key]: row["cost"] for row in by_key}
    runs = series(response, "runs")
    assert {label: sum(values) for label, values in runs.items()} == {"completed": 3, "failed": 3, "interrupted": 0}
    assert runs["failed"][-1] == 1  # today's model_error
    assert context["failures"] == [{"reason": "timeout", "runs": 2}, {"reason": "model_error", "runs": 1}]


def test_the_top_tables_rank_users_and_conversations_by_spend(
    admin_client: Client, usage_history: list[UsageRecord]
) -> None:
    response = admin_client.get(DASHBOARD)

    users = [(row["tenant_id"], row["user_id"], row["calls"]) for row in response.context["top_users"]]
    assert users == [("globex", "carol", 2), ("acme", "alice", 2), ("acme", "bob", 1)]
    carol = response.context["top_users"][0]
    assert carol["spent_usd"] == sum(r.cost_usd for r in usage_history[3:5])
    assert (carol["tokens_in"], carol["tokens_out"], carol["tokens_cached"]) == (45_000, 8_100, 4_000)
    top = response.context["top_conversations"][0]
    assert top["title"] == "Support desk"
    page = response.content.decode()
    assert reverse("admin:conversations_conversation_change", args=[top["conversation_id"]]) in page
    assert '<script id="dashboard-charts" type="application/json">' in page
    assert "usage/vendor/chart.umd.min.js" in page


def test_a_longer_period_and_one_tenant_narrow_the_figures(
    admin_client: Client, usage_history: list[UsageRecord], other_tenant: Tenant
) -> None:
    response = admin_client.get(DASHBOARD, {"days": "90", "tenant": "globex"})

    assert response.context["days"] == 90
    assert response.context["tenant"] == other_tenant
    assert response.context["totals"]["model_calls"] == 3  # the call of 40 days ago included
    assert list(series(response, "spend-by-tenant")) == ["globex"]
    assert response.context["failures"] == [{"reason": "model_error", "runs": 1}, {"reason": "timeout", "runs": 1}]


@pytest.mark.parametrize(
    "params",
    [
        {"days": "abc"},
        {"days": "31"},
        {"days": "-7"},
        {"days": "99999999999999999999999"},
        {"days": ""},
        {"tenant": "no-such-tenant"},
        {"tenant": "' OR 1=1 --"},
        {"days": ["7", "x"], "tenant": ["acme", "no-such-tenant"]},  # the last of each counts
    ],
)
def test_odd_query_values_mean_the_defaults(
    admin_client: Client, usage_history: list[UsageRecord], params: dict[str, Any]
) -> None:
    response = admin_client.get(DASHBOARD, params)

    assert response.status_code == 200
    assert response.context["days"] == 30
    assert response.context["tenant"] is None


def test_an_empty_platform_shows_empty_tables(admin_client: Client) -> None:
    response = admin_client.get(DASHBOARD)

    assert response.status_code == 200
    assert response.context["totals"]["cost_usd"] == Decimal(0)
    assert "No model calls in this period." in response.content.decode()


def test_visitors_and_non_staff_users_are_sent_to_the_login_page(client: Client) -> None:
    anonymous = client.get(DASHBOARD)
    client.force_login(User.objects.create_user("customer", password="a-long-test-password"))
    not_staff = client.get(DASHBOARD)

    for response in (anonymous, not_staff):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_permission_to_view_usage_are_refused(client: Client) -> None:
    staff = User.objects.create_user("clerk", password="a-long-test-password", is_staff=True)
    client.force_login(staff)

    assert client.get(DASHBOARD).status_code == 403
    assert reverse("admin:usage_dashboard") not in client.get(reverse("admin:index")).content.decode()

    staff.user_permissions.add(Permission.objects.get(codename="view_usagerecord"))
    assert client.get(DASHBOARD).status_code == 200


def test_the_admin_index_and_the_usage_records_link_to_the_dashboard(admin_client: Client) -> None:
    for page in (reverse("admin:index"), reverse("admin:usage_usagerecord_changelist")):
        assert f'href="{DASHBOARD}"' in admin_client.get(page).content.decode(), page


def test_the_figures_take_seven_queries(
    usage_history: list[UsageRecord], tenant: Tenant, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    period = Period(30, timezone.now().astimezone(UTC).date())

    with django_assert_num_queries(7):
        dashboard_figures(period, None)
    with django_assert_num_queries(7):
        dashboard_figures(period, tenant)


def test_days_are_utc_days_ending_today() -> None:
    today = timezone.now().astimezone(UTC).date()

    period = Period(7, today)

    assert period.dates[0] == today - timedelta(days=6)
    assert period.dates[-1] == today
    assert period.end - period.start == timedelta(days=7)
    assert period.start.tzinfo == UTC


def test_budgets_near_their_caps_show_fullest_first(admin_client: Client, tenant: Tenant, other_tenant: Tenant) -> None:
    tenant.monthly_budget_usd, tenant.user_daily_budget_calls = Decimal("100"), 10
    tenant.save()
    UserBudgetFactory(tenant=tenant, user_id="bob", daily_calls=100)  # bob's own: far from it
    BudgetCounterFactory(tenant=tenant, spent_usd=90, reserved_usd=3)  # this month's
    BudgetCounterFactory(tenant=tenant, level="user_day", subject="alice", calls=9, reserved_calls=1)  # today's
    BudgetCounterFactory(tenant=tenant, level="user_day", subject="bob", calls=9)
    BudgetCounterFactory(tenant=tenant, period="2020-01", spent_usd=500)  # the past
    BudgetCounterFactory(tenant=other_tenant, spent_usd=500)  # no cap

    response = admin_client.get(DASHBOARD)

    near = response.context["budgets_near_caps"]
    assert [(b["level"], b["subject"], b["share"]) for b in near] == [
        ("End user, per day", "alice", 1.0),
        ("Tenant, per month", "", 0.93),
    ]
    page = response.content.decode()
    assert "Budgets near their caps" in page and "$93.00" in page and "10 calls" in page and "93%" in page


def test_a_failed_run_without_a_reason_is_counted_as_such(
    admin_client: Client, usage_history: list[UsageRecord], run: Run
) -> None:
    Run.objects.filter(pk=run.pk).update(status=Run.Status.FAILED, error=None, finished_at=timezone.now())

    response = admin_client.get(DASHBOARD, {"tenant": "acme"})

    assert {"reason": None, "runs": 1} in response.context["failures"]
    assert "(no reason given)" in response.content.decode()
