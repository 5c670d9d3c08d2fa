"""A price change applies from its moment on: each call keeps the price it was charged at, and reports sum what
was charged, never re-pricing the past."""

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db.models import ProtectedError
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from conversations.models import Run
from tenants.models import LanguageModel, ModelPrice
from tenants.services import save_language_model
from tests.clock import at
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db

UTC = ZoneInfo("UTC")
NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
NOV_10 = datetime(2026, 11, 10, 12, tzinfo=UTC)
NOV_15 = datetime(2026, 11, 15, 9, tzinfo=UTC)  # the price changes
NOV_20 = datetime(2026, 11, 20, 18, tzinfo=UTC)


@pytest.fixture
def sonnet_since_november(sonnet: LanguageModel) -> LanguageModel:
    """Sonnet, at its list price since before November."""
    sonnet.prices.update(effective_from=datetime(2026, 10, 1, tzinfo=UTC))
    return sonnet


def test_a_price_changed_mid_month_charges_each_call_at_the_price_of_its_time(
    api_client: APIClient, run: Run, record: Callable[..., UsageRecord], sonnet_since_november: LanguageModel
) -> None:
    sonnet = sonnet_since_november
    with at(NOV_10):
        before = record(run, "msg_before", input=1_000_000, output=100_000)
    with at(NOV_15):
        sonnet.input_price, sonnet.output_price = Decimal("2"), Decimal("10")
        save_language_model(sonnet)  # an operator lowers the price from now on, as admin and API do
    with at(NOV_20):
        after = record(run, "msg_after", input=1_000_000, output=100_000)

    month = api_client.get("/api/tenants/acme/usage", {"from": "2026-11-01", "to": "2026-12-01", "group_by": "month"})

    assert month.status_code == 200
    # 1M input and 100K output tokens: $3 + $1.50 before the change, $2 + $1 after it.
    assert month.json()["groups"] == [
        {**month.json()["groups"][0], "key": "2026-11-01", "model_calls": 2, "cost_usd": "7.5000000000"}
    ]
    assert month.json()["totals"]["cost_usd"] == "7.5000000000"
    before.refresh_from_db()
    after.refresh_from_db()
    assert (before.cost_usd, after.cost_usd) == (Decimal("4.5"), Decimal("3"))
    assert before.price is not None and after.price is not None
    assert before.price.effective_from == datetime(2026, 10, 1, tzinfo=UTC)
    assert (before.price.input_price, before.price.output_price) == (Decimal("3"), Decimal("15"))
    assert after.price.effective_from == NOV_15
    assert (after.price.input_price, after.price.output_price) == (Decimal("2"), Decimal("10"))


def test_a_later_price_change_re_prices_nothing_already_recorded(
    api_client: APIClient, run: Run, record: Callable[..., UsageRecord], sonnet_since_november: LanguageModel
) -> None:
    with at(NOV_10):
        record(run, "msg_1", input=1_000_000)
    report = api_client.get("/api/tenants/acme/usage").json()

    sonnet_since_november.input_price = Decimal("30")
    save_language_model(sonnet_since_november)

    assert api_client.get("/api/tenants/acme/usage").json() == report
    assert report["totals"]["cost_usd"] == "3.0000000000"
    assert api_client.get(f"/api/tenants/acme/usage/runs/{run.pk}").json()["totals"]["cost_usd"] == "3.0000000000"


def test_a_scheduled_price_charges_the_calls_from_its_moment_on(
    run: Run, record: Callable[..., UsageRecord], sonnet_since_november: LanguageModel
) -> None:
    ModelPrice.objects.create(
        model=sonnet_since_november,
        effective_from=NOV_15,
        **{**sonnet_since_november.prices_by_field(), "input_price": 1},
    )

    with at(NOV_10):
        before = record(run, "msg_before", input=1_000_000)
    with at(NOV_20):
        after = record(run, "msg_after", input=1_000_000)

    assert (before.cost_usd, after.cost_usd) == (Decimal("3"), Decimal("1"))
    assert after.price is not None and after.price.effective_from == NOV_15


def test_a_price_that_charged_a_call_cannot_be_deleted(run: Run, record: Callable[..., UsageRecord]) -> None:
    stored = record(run, "msg_1", input=10)

    with pytest.raises(ProtectedError):
        ModelPrice.objects.filter(pk=stored.price_id).delete()


def test_records_from_before_price_history_keep_their_cost(
    api_client: APIClient, run: Run, record: Callable[..., UsageRecord]
) -> None:
    old = record(run, "msg_old", input=1_000_000)
    UsageRecord.objects.filter(pk=old.pk).update(price=None, cost_usd=Decimal("2.5"))  # charged at an unknown price

    assert api_client.get("/api/tenants/acme/usage").json()["totals"]["cost_usd"] == "2.5000000000"


def test_the_admin_shows_the_price_a_record_was_charged_at(
    admin_client: Client, run: Run, record: Callable[..., UsageRecord], sonnet_since_november: LanguageModel
) -> None:
    with at(NOV_10):
        stored = record(run, "msg_1", input=10)

    page = admin_client.get(reverse("admin:usage_usagerecord_change", args=[stored.pk]))

    assert page.status_code == 200
    assert "sonnet from 2026-10-01 00:00 UTC" in page.content.decode()
