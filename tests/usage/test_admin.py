"""The operator admin: usage records are read-only with a total, and tenants show their run budgets."""

from collections.abc import Callable
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from conversations.models import Run
from tenants.models import Tenant
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:usage_usagerecord_changelist")


@pytest.fixture
def records(run: Run, record: Callable[..., UsageRecord]) -> list[UsageRecord]:
    return [
        record(run, "msg_1", input=1200, output=300, cache_read=5000, cache_write_5m=700, cache_write_1h=100),
        record(run, "msg_2", input=100, output=50),
    ]


def test_the_changelist_and_change_page_render(admin_client: Client, records: list[UsageRecord]) -> None:
    for page in (CHANGELIST, reverse("admin:usage_usagerecord_change", args=[records[0].pk])):
        assert admin_client.get(page).status_code == 200, page


def test_records_cannot_be_added_changed_or_deleted(admin_client: Client, records: list[UsageRecord]) -> None:
    assert admin_client.get(reverse("admin:usage_usagerecord_add")).status_code == 403
    assert admin_client.get(reverse("admin:usage_usagerecord_delete", args=[records[0].pk])).status_code == 403
    response = admin_client.post(reverse("admin:usage_usagerecord_change", args=[records[0].pk]), {"input_tokens": 0})
    assert response.status_code == 403
    assert UsageRecord.objects.get(pk=records[0].pk).input_tokens == 1200


def test_the_changelist_shows_the_total_cost_of_the_filtered_records(
    admin_client: Client, records: list[UsageRecord]
) -> None:
    everything = admin_client.get(CHANGELIST)
    one = admin_client.get(CHANGELIST, {"q": "msg_2"})

    assert everything.context["usage_totals"]["cost_usd"] == "0.0138750000"
    assert "$0.0138750000" in everything.content.decode()
    assert one.context["usage_totals"] == {
        "input_tokens": 100,
        "output_tokens": 50,
        "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 0,
        "cache_read_tokens": 0,
        "model_calls": 1,
        "cost_usd": "0.0010500000",
    }


@pytest.mark.parametrize(
    ("params", "shown"),
    [
        ({"tenant__id__exact": "acme"}, 2),
        ({"tenant__id__exact": "globex"}, 0),
        ({"model__id__exact": "sonnet"}, 2),
        ({"created_at__gte": "2000-01-01 00:00:00+00:00"}, 2),
        ({"q": "alice"}, 2),
        ({"q": "msg_1"}, 1),
        ({"q": "nothing-like-this"}, 0),
    ],
)
def test_filters_and_search_narrow_the_list_and_its_total(
    admin_client: Client, records: list[UsageRecord], other_tenant: Tenant, params: dict[str, str], shown: int
) -> None:
    response = admin_client.get(CHANGELIST, params)

    assert response.status_code == 200
    assert response.context["usage_totals"]["model_calls"] == shown


def test_search_by_run_id(admin_client: Client, records: list[UsageRecord], run: Run) -> None:
    response = admin_client.get(CHANGELIST, {"q": str(run.pk)})

    assert response.context["usage_totals"]["model_calls"] == 2


def test_a_tenant_with_usage_records_can_be_deleted_with_them(
    admin_client: Client, records: list[UsageRecord], tenant: Tenant
) -> None:
    response = admin_client.post(reverse("admin:tenants_tenant_delete", args=[tenant.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert not Tenant.objects.filter(pk=tenant.pk).exists()
    assert not UsageRecord.objects.exists()


def test_the_operator_sets_a_tenants_run_budget(admin_client: Client, tenant: Tenant) -> None:
    page = admin_client.get(reverse("admin:tenants_tenant_change", args=[tenant.pk]))
    assert "run_budget_usd" in page.content.decode()

    response = admin_client.post(
        reverse("admin:tenants_tenant_change", args=[tenant.pk]),
        {
            "name": tenant.name,
            "status": "active",
            "default_model": tenant.default_model_id,
            "run_budget_usd": "2.50",
            "run_budget_calls": "40",
            "time_zone": "UTC",
        },
    )

    assert response.status_code == 302
    tenant.refresh_from_db()
    assert (tenant.run_budget_usd, tenant.run_budget_calls) == (Decimal("2.50"), 40)
