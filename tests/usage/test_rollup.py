"""The rollup that reports read holds exactly the records' sums, however records are written, in every time zone."""

import zoneinfo
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from conversations.models import Conversation, Run
from tenants.models import TOKEN_KINDS, LanguageModel, Tenant
from tests.factories import ConversationFactory
from usage.models import ROLLUP_PERIOD, UsageRecord, UsageRollup, on_period, usage_for_report

pytestmark = pytest.mark.django_db
# Only PostgreSQL keeps the rollup (statement triggers, migration 0004); reports on SQLite read the records.
keeps_the_rollup = pytest.mark.skipif(connection.vendor != "postgresql", reason="only PostgreSQL keeps the rollup")

URL = "/api/tenants/acme/usage"
SUMS = [*TOKEN_KINDS, "model_calls", "cost_usd"]
# In Kolkata (UTC+5:30), 1 December begins at 18:30 UTC on 30 November: in the middle of a UTC hour.
KOLKATA_MIDNIGHT = datetime(2026, 11, 30, 18, 30, tzinfo=UTC)


def rollup_of_the_records() -> dict[tuple[Any, ...], list[Any]]:
    """The rollup as it should be, summed here from the records."""
    expected: dict[tuple[Any, ...], list[Any]] = defaultdict(lambda: [0] * len(TOKEN_KINDS) + [0, Decimal(0)])
    for record in UsageRecord.objects.all():
        period = record.created_at - (record.created_at - datetime(2000, 1, 1, tzinfo=UTC)) % ROLLUP_PERIOD
        sums = expected[(record.tenant_id, period, record.model_id, record.user_id)]
        for n, value in enumerate([*(getattr(record, kind) for kind in TOKEN_KINDS), 1, record.cost_usd]):
            sums[n] += value
    return dict(expected)


def the_rollup() -> dict[tuple[Any, ...], list[Any]]:
    return {
        (row.tenant_id, row.period, row.model_id, row.user_id): [getattr(row, name) for name in SUMS]
        for row in UsageRollup.objects.all()
    }


@pytest.fixture
def calls(
    run: Run,
    other_conversation: Conversation,
    haiku: LanguageModel,
    make_run: Callable[..., Run],
    record: Callable[..., UsageRecord],
) -> list[UsageRecord]:
    """acme: alice on Sonnet either side of Kolkata's midnight, bob on Haiku; globex: one call."""
    bob = make_run(ConversationFactory(tenant=run.conversation.tenant, model=haiku, user_id="bob"))
    return [
        record(run, "msg_1", at=KOLKATA_MIDNIGHT - timedelta(microseconds=1), input=1000, output=7),
        record(run, "msg_2", at=KOLKATA_MIDNIGHT, input=300, output=11, cache_read=4000),
        record(run, "msg_3", at=KOLKATA_MIDNIGHT + timedelta(minutes=14), input=1, cache_write_1h=900),
        record(bob, "msg_4", at=KOLKATA_MIDNIGHT, input=20, output=3, cache_write_5m=50),
        record(make_run(other_conversation), "msg_5", at=KOLKATA_MIDNIGHT, input=5),
    ]


@keeps_the_rollup
def test_the_rollup_follows_records_as_they_are_recorded_moved_and_deleted(calls: list[UsageRecord]) -> None:
    assert the_rollup() == rollup_of_the_records() and len(the_rollup()) == 4

    UsageRecord.objects.filter(pk=calls[1].pk).update(created_at=KOLKATA_MIDNIGHT - timedelta(days=3))
    assert the_rollup() == rollup_of_the_records()

    calls[2].delete()
    calls[0].conversation.delete()  # its records stay, without their conversation
    assert the_rollup() == rollup_of_the_records()

    UsageRecord.objects.all().delete()
    assert not UsageRollup.objects.exists()


@keeps_the_rollup
def test_deleting_a_tenant_deletes_its_rollup_and_no_other(calls: list[UsageRecord], tenant: Tenant) -> None:
    tenant.delete()

    assert {key[0] for key in the_rollup()} == {"globex"}
    assert the_rollup() == rollup_of_the_records()


@pytest.mark.sqlite
def test_a_kolkata_day_report_splits_at_local_midnight_and_agrees_with_the_records(
    api_client: APIClient, tenant: Tenant, calls: list[UsageRecord]
) -> None:
    tenant.time_zone = "Asia/Kolkata"
    tenant.save()
    window = {"from": "2026-11-30", "to": "2026-12-02"}

    report = api_client.get(URL, {**window, "group_by": "day"}).json()
    # The same window, a microsecond off the quarter hour at each end: read from the records.
    off_period = {"from": "2026-11-29T23:59:59.999999Z", "to": "2026-12-02T00:00:00.000001Z"}
    from_records = api_client.get(URL, {**off_period, "group_by": "day"}).json()

    assert [(group["key"], group["input_tokens"]) for group in report["groups"]] == [
        ("2026-11-30", 1000),
        ("2026-12-01", 321),
    ]
    assert report["groups"] == from_records["groups"] and report["totals"] == from_records["totals"]
    assert Decimal(report["totals"]["cost_usd"]) == sum(call.cost_usd for call in calls[:4])


@pytest.mark.sqlite
@pytest.mark.parametrize("group_by", ["day", "week", "month", "model", "user"])
def test_reports_from_the_rollup_are_the_reports_from_the_records(
    api_client: APIClient, calls: list[UsageRecord], group_by: str
) -> None:
    from_rollup = api_client.get(URL, {"group_by": group_by}).json()
    from_records = api_client.get(URL, {"group_by": group_by, "to": "2027-01-01T00:00:01Z"}).json()

    assert from_rollup == {**from_records, "to": None}


@keeps_the_rollup
def test_the_rollup_answers_windows_on_quarter_hours_and_never_by_conversation() -> None:
    quarter_past = datetime(2026, 11, 30, 18, 15, tzinfo=UTC)

    assert usage_for_report(None, None, by_conversation=False).model is UsageRollup
    assert usage_for_report(quarter_past, KOLKATA_MIDNIGHT, by_conversation=False).model is UsageRollup
    assert usage_for_report(quarter_past, None, by_conversation=True).model is UsageRecord
    assert usage_for_report(quarter_past + timedelta(seconds=1), None, by_conversation=False).model is UsageRecord


@pytest.mark.sqlite
@pytest.mark.skipif(connection.vendor == "postgresql", reason="PostgreSQL reads the rollup")
def test_on_sqlite_every_report_reads_the_records() -> None:
    assert usage_for_report(None, None, by_conversation=False).model is UsageRecord


def test_no_time_zone_has_moved_its_clocks_off_the_quarter_hour_since_1980() -> None:
    zones = [zoneinfo.ZoneInfo(name) for name in zoneinfo.available_timezones()]
    moment = datetime(1980, 1, 1, tzinfo=UTC)

    off_quarter = set()
    while moment.year < 2040:
        off_quarter |= {zone.key for zone in zones if not on_period(moment.astimezone(zone).replace(tzinfo=UTC))}
        moment += timedelta(days=30)

    assert not off_quarter
