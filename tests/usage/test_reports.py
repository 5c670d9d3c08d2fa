"""Usage reports by day, week and month where the tenant lives, and their CSV export, add up to the records."""

import csv
import io
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from rest_framework.test import APIClient

from conversations.models import Run
from tenants.models import Tenant
from tests.factories import ConversationFactory, RunFactory
from usage.models import UsageRecord
from usage.services import record_usage

# Also on the embedded SQLite (`make run`'s default), where PostgreSQL's SQL would not run.
pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]

URL = "/api/tenants/acme/usage"
UTC = ZoneInfo("UTC")


def call_at(run: object, n: int, when: datetime, tokens: int) -> None:
    record = record_usage(run.pk, f"msg_{n}", {"input_tokens": tokens, "output_tokens": 1})  # type: ignore[attr-defined]
    assert record is not None
    UsageRecord.objects.filter(pk=record.pk).update(created_at=when)


@pytest.fixture
def calls(tenant: Tenant) -> None:
    run = RunFactory(conversation=ConversationFactory(tenant=tenant))
    Run.objects.filter(pk=run.pk).update(created_at=datetime(2026, 11, 29, 14, 0, tzinfo=UTC))
    # In Tokyo (UTC+9): Sunday 29 Nov 23:30, Monday 30 Nov 01:00, Tuesday 1 Dec 01:00.
    call_at(run, 1, datetime(2026, 11, 29, 14, 30, tzinfo=UTC), 100)
    call_at(run, 2, datetime(2026, 11, 29, 16, 0, tzinfo=UTC), 200)
    call_at(run, 3, datetime(2026, 11, 30, 16, 0, tzinfo=UTC), 400)


def groups(api_client: APIClient, group_by: str) -> dict[str, int]:
    report = api_client.get(URL, {"group_by": group_by}).json()
    return {group["key"]: group["input_tokens"] for group in report["groups"]}


def test_days_weeks_and_months_begin_in_the_tenants_time_zone(
    api_client: APIClient, tenant: Tenant, calls: None
) -> None:
    assert groups(api_client, "month") == {"2026-11-01": 700}  # in UTC, all in November
    assert groups(api_client, "week") == {"2026-11-23": 300, "2026-11-30": 400}
    tenant.time_zone = "Asia/Tokyo"
    tenant.save()

    assert groups(api_client, "day") == {"2026-11-29": 100, "2026-11-30": 200, "2026-12-01": 400}
    assert groups(api_client, "week") == {"2026-11-23": 100, "2026-11-30": 600}
    assert groups(api_client, "month") == {"2026-11-01": 300, "2026-12-01": 400}


def test_the_csv_export_is_the_report_row_for_row_and_adds_up_to_the_records(
    api_client: APIClient, tenant: Tenant, calls: None
) -> None:
    report = api_client.get(URL, {"group_by": "day"}).json()
    response = api_client.get(f"{URL}/export", {"group_by": "day"})

    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert 'filename="usage-acme-day.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    *days, total = rows
    assert [row["key"] for row in days] == [group["key"] for group in report["groups"]]
    for row, group in zip(days, report["groups"], strict=True):
        assert int(row["input_tokens"]) == group["input_tokens"] and row["cost_usd"] == group["cost_usd"]
    stored = sum(record.cost_usd for record in UsageRecord.objects.all())
    assert total["key"] == "total" and Decimal(total["cost_usd"]) == stored == Decimal(report["totals"]["cost_usd"])
    assert int(total["input_tokens"]) == 700


def test_runs_and_failed_runs_are_counted_per_group_even_without_a_model_call(
    api_client: APIClient, tenant: Tenant, calls: None
) -> None:
    # Refused by a budget before its first call, on a day without usage.
    refused = RunFactory(conversation=ConversationFactory(tenant=tenant), status=Run.Status.FAILED)
    Run.objects.filter(pk=refused.pk).update(created_at=datetime(2026, 11, 27, 3, 0, tzinfo=UTC))

    report = api_client.get(URL, {"group_by": "day"}).json()
    response = api_client.get(f"{URL}/export", {"group_by": "day"})

    days = [(group["key"], group["model_calls"], group["runs"], group["failed_runs"]) for group in report["groups"]]
    assert days == [("2026-11-27", 0, 1, 1), ("2026-11-29", 2, 1, 0), ("2026-11-30", 1, 0, 0)]
    assert (report["totals"]["runs"], report["totals"]["failed_runs"]) == (2, 1)
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [(row["key"], int(row["model_calls"]), int(row["runs"]), int(row["failed_runs"])) for row in rows] == [
        *days,
        ("total", 3, 2, 1),
    ]


def test_a_time_zone_that_does_not_exist_is_refused(
    api_client: APIClient, tenant: Tenant, admin_api_client: APIClient
) -> None:
    response = admin_api_client.patch("/api/tenants/acme", {"time_zone": "Mars/Olympus"}, format="json")

    assert response.status_code == 400 and "IANA time zone" in response.json()["error"]["message"]
