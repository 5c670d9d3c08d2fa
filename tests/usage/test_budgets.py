"""Budgets above and at the run: reservations of each call's worst case, replaced by its cost or given back."""

import json
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, connections
from django.utils import timezone

from conversations.models import Conversation, Run
from tenants.models import LanguageModel, ModelPrice, Tenant
from tests.factories import ConversationFactory, UserBudgetFactory
from tests.usage.conftest import anthropic_usage
from usage import budgets, counters
from usage.budgets import (
    BudgetExceeded,
    budget_notice,
    call_terms,
    periods,
    release,
    release_abandoned,
    reserve,
    worst_case_cost,
)
from usage.models import BudgetCounter, BudgetReservation
from usage.services import record_usage

# Also on the embedded SQLite, which takes the ORM steps.
pytestmark = [pytest.mark.django_db, pytest.mark.sqlite]


@pytest.fixture(autouse=True, params=["postgresql", "orm"])
def counters_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: with PostgreSQL's statements, and with the ORM steps other databases take."""
    if request.param == "postgresql" and connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's statements need PostgreSQL")
    if request.param == "orm":
        monkeypatch.setattr(counters, "fast", lambda: False)
    return str(request.param)


# 100 output tokens at Sonnet's 15 USD per million: the worst case of a call of this body is
# 0.0015 USD of output plus its 19 bytes / 3 = 7 tokens of input at the 1-hour cache write price (6).
SMALL_CALL = json.dumps({"max_tokens": 100}).encode()
SMALL_WORST_CASE = Decimal("0.001542")


def counter(tenant: Tenant | str, level: str, subject: str = "", period: str = "") -> BudgetCounter:
    return BudgetCounter.objects.get(tenant=tenant, level=level, subject=subject, period=period)


def this_month(tenant: Tenant) -> str:
    return periods(datetime.now(UTC), tenant.time_zone)[1]


def test_the_worst_case_is_the_input_at_the_dearest_input_price_and_all_of_max_tokens(run: Run) -> None:
    terms = call_terms(run, datetime.now(UTC))
    assert (terms.input_price, terms.output_price) == (Decimal(6), Decimal(15))  # the 1-hour cache write is dearest

    assert worst_case_cost(terms, 32_000, SMALL_CALL) == SMALL_WORST_CASE
    # No max_tokens (or not a JSON body): the model's own limit.
    assert worst_case_cost(terms, 32_000, b"{}") == Decimal("0.48") + Decimal(1 * 6) / 1_000_000
    # More than the model may answer: the model's limit.
    too_many = json.dumps({"max_tokens": 10**9}).encode()
    assert worst_case_cost(terms, 1000, too_many) == (Decimal(15_000) + 9 * 6) / 1_000_000  # 26 bytes: 9 tokens


def test_a_base64_image_counts_as_at_most_an_images_tokens_not_its_bytes(run: Run) -> None:
    terms = call_terms(run, datetime.now(UTC))
    photo = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 3_000_000}}
    icon = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 300}}
    # As the CLI sends an image its Read tool opened: inside a tool result.
    read = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [photo]}
    body = json.dumps({"max_tokens": 100, "messages": [{"role": "user", "content": [read, icon]}]}).encode()
    rest = len(body) - 3_000_000 - 300

    input_tokens = math.ceil(rest / 3) + budgets.IMAGE_TOKENS + 100
    assert worst_case_cost(terms, 32_000, body) == (input_tokens * Decimal(6) + 100 * Decimal(15)) / 1_000_000


def test_a_run_that_no_budget_caps_reserves_nothing(run: Run) -> None:
    assert reserve(run, SMALL_CALL) is None
    assert not BudgetReservation.objects.exists()


def test_the_call_budget_of_a_run_admits_calls_below_it_and_refuses_the_next_one(run: Run) -> None:
    run.budget_calls = 2
    run.save()
    first = reserve(run, SMALL_CALL)
    assert first is not None
    record_usage(run.pk, "msg_1", anthropic_usage(input=1), first)
    second = reserve(run, SMALL_CALL)
    assert second is not None
    record_usage(run.pk, "msg_2", anthropic_usage(input=1), second)

    with pytest.raises(BudgetExceeded) as refused:
        reserve(run, SMALL_CALL)

    assert refused.value.level == "run"
    assert "budget of 2 model call(s) is used up (2 made)" in refused.value.message


def test_the_conversations_title_call_is_capped_by_the_users_budget_but_not_by_the_runs(
    run: Run, tenant: Tenant
) -> None:
    run.budget_calls = 1
    run.save()
    tenant.user_daily_budget_calls = 1
    tenant.save()
    title = reserve(run, SMALL_CALL, on_run=False)
    record_usage(run.pk, "msg_title", anthropic_usage(input=1), title, on_run=False)

    with pytest.raises(BudgetExceeded) as refused:
        reserve(run, SMALL_CALL)

    # The agent's call is refused by the user's day, which the title used up, not by the run's budget:
    # the run's own counter never saw the title.
    assert refused.value.level == "user_day"
    assert not BudgetCounter.objects.filter(level="run").exclude(calls=0).exists()
    tenant.user_daily_budget_calls = None
    tenant.save()
    assert reserve(run, SMALL_CALL) is not None


def test_a_call_in_flight_counts_against_the_call_budget_before_it_is_recorded(run: Run) -> None:
    run.budget_calls = 1
    run.save()
    reserve(run, SMALL_CALL)

    with pytest.raises(BudgetExceeded, match=r"0 made, 1 in progress"):
        reserve(run, SMALL_CALL)


def test_the_usd_budget_refuses_a_call_whose_worst_case_would_pass_it(run: Run) -> None:
    run.budget_usd = Decimal("0.002")
    run.save()
    held = reserve(run, SMALL_CALL)  # 0.001542 of 0.002

    with pytest.raises(BudgetExceeded) as refused:
        reserve(run, SMALL_CALL)

    assert held is not None
    message = refused.value.message
    assert "This run's budget of $0.002 USD would be exceeded" in message
    assert "$0.0000000000 spent and $0.0015420000 held by calls in progress" in message
    assert "may cost up to $0.0015420000" in message


def test_a_recorded_call_replaces_its_reservation_with_its_cost(run: Run) -> None:
    run.budget_usd = Decimal("1")
    run.save()
    held = reserve(run, SMALL_CALL)
    assert held is not None
    assert counter("acme", "run", str(run.pk)).reserved_usd == SMALL_WORST_CASE

    record = record_usage(run.pk, "msg_1", anthropic_usage(output=10), held)

    assert record is not None and record.cost_usd == Decimal("0.00015")
    budget = counter("acme", "run", str(run.pk))
    assert (budget.spent_usd, budget.calls, budget.reserved_usd, budget.reserved_calls) == (record.cost_usd, 1, 0, 0)
    assert not BudgetReservation.objects.exists()


def test_every_call_counts_on_the_tenant_month_and_the_users_day_and_month(run: Run, tenant: Tenant) -> None:
    record_usage(run.pk, "msg_1", anthropic_usage(output=10))
    record_usage(run.pk, "msg_2", anthropic_usage(output=20))

    day, month = periods(datetime.now(UTC), tenant.time_zone)
    for level, subject, period in [
        ("tenant_month", "", month),
        ("user_day", "alice", day),
        ("user_month", "alice", month),
    ]:
        spent = counter(tenant, level, subject, period)
        assert (spent.spent_usd, spent.calls) == (Decimal("0.00045"), 2)
    # A run or conversation without a budget keeps no counter of its own.
    assert not BudgetCounter.objects.filter(level__in=["run", "conversation"]).exists()


def test_a_call_that_ends_without_a_record_gives_its_reservation_back(run: Run) -> None:
    run.budget_calls = 1
    run.save()
    held = reserve(run, SMALL_CALL)
    assert held is not None

    release(held, "acme")
    release(held, "acme")  # twice is once

    budget = counter("acme", "run", str(run.pk))
    assert (budget.reserved_usd, budget.reserved_calls, budget.calls) == (0, 0, 0)
    assert reserve(run, SMALL_CALL) is not None


def test_recording_a_call_twice_gives_the_second_reservation_back(run: Run) -> None:
    run.budget_calls = 5
    run.save()
    first, second = reserve(run, SMALL_CALL), reserve(run, SMALL_CALL)
    assert first is not None and second is not None

    record_usage(run.pk, "msg_1", anthropic_usage(output=1), first)
    again = record_usage(run.pk, "msg_1", anthropic_usage(output=1), second)

    assert again is None
    budget = counter("acme", "run", str(run.pk))
    assert (budget.calls, budget.reserved_calls, budget.reserved_usd) == (1, 0, 0)


def test_the_reaper_releases_what_calls_of_runs_no_longer_running_hold(
    sonnet_conversation: Conversation, make_run: Callable[..., Run]
) -> None:
    ended = make_run(sonnet_conversation, budget_calls=3, status=Run.Status.FAILED)
    running = make_run(sonnet_conversation, budget_calls=3, status=Run.Status.RUNNING)
    reserve(ended, SMALL_CALL)
    kept = reserve(running, SMALL_CALL)

    assert release_abandoned() == 1

    assert list(BudgetReservation.objects.values_list("pk", flat=True)) == [kept]
    assert counter("acme", "run", str(ended.pk)).reserved_calls == 0
    assert counter("acme", "run", str(running.pk)).reserved_calls == 1


def test_the_reaper_with_nothing_held_reads_one_table_once(django_assert_num_queries: Callable[..., Any]) -> None:
    # Every process reaps every few seconds: a join here would hold one table while waiting for
    # another, and deadlock against a TRUNCATE or a migration taking them in another order.
    with django_assert_num_queries(1) as captured:
        assert release_abandoned() == 0
    assert "JOIN" not in captured.captured_queries[0]["sql"].upper()


def test_the_tenant_month_refuses_with_its_level_and_period(run: Run, tenant: Tenant) -> None:
    tenant.monthly_budget_calls = 1
    tenant.save()
    held = reserve(run, SMALL_CALL)
    assert held is not None
    record_usage(run.pk, "msg_1", anthropic_usage(output=1), held)

    with pytest.raises(BudgetExceeded) as refused:
        reserve(run, SMALL_CALL)

    month = this_month(tenant)
    assert refused.value.details == {"level": "tenant_month", "period": month}
    assert (
        refused.value.message
        == f"The organisation's monthly budget for {month} of 1 model call(s) is used up (1 made)."
    )


def test_the_end_user_is_told_whose_budget_ran_out_and_when_it_renews_where_the_tenant_lives() -> None:
    assert budget_notice("tenant_month", "2026-12", "UTC") == (
        "This service has reached its monthly budget; it renews on 1 January."
    )
    assert budget_notice("user_day", "2026-11-30", "Asia/Kolkata") == (
        "You have reached your daily budget; it renews on 1 December."
    )
    assert (
        budget_notice("user_month", "2026-02", "UTC") == "You have reached your monthly budget; it renews on 1 March."
    )
    assert budget_notice("conversation", "", "UTC") == "This conversation has reached its budget."
    assert budget_notice("run", "", "UTC") == "This message has reached its budget."


def test_a_users_own_budget_replaces_the_tenants_default_for_that_user_only(
    run: Run, tenant: Tenant, sonnet_conversation: Conversation, make_run: Callable[..., Run]
) -> None:
    tenant.user_daily_budget_usd = Decimal("0.001")  # less than one small call's worst case
    tenant.save()
    UserBudgetFactory(tenant=tenant, user_id="alice", daily_usd=Decimal("1"))
    bob = make_run(sonnet_conversation, user_id="bob")

    allowed = reserve(run, SMALL_CALL)
    with pytest.raises(BudgetExceeded) as refused:
        reserve(bob, SMALL_CALL)

    assert allowed is not None
    assert refused.value.level == "user_day"
    assert refused.value.message.startswith(f"This user's daily budget for {periods(datetime.now(UTC), 'UTC')[0]}")


def test_a_conversation_budget_holds_across_its_runs(
    tenant: Tenant, sonnet: LanguageModel, make_run: Callable[..., Run]
) -> None:
    conversation = ConversationFactory(tenant=tenant, model=sonnet, budget_calls=2)
    for number in range(2):
        run = make_run(conversation)
        held = reserve(run, SMALL_CALL)
        assert held is not None
        record_usage(run.pk, f"msg_{number}", anthropic_usage(output=1), held)

    with pytest.raises(BudgetExceeded) as refused:
        reserve(make_run(conversation), SMALL_CALL)

    assert refused.value.details == {"level": "conversation", "period": ""}


def test_days_and_months_begin_where_the_tenant_lives() -> None:
    # 18:45 UTC on 30 November is 00:15 on 1 December in Kolkata (UTC+5:30).
    moment = datetime(2026, 11, 30, 18, 45, tzinfo=UTC)

    assert periods(moment, "UTC") == ("2026-11-30", "2026-11")
    assert periods(moment, "Asia/Kolkata") == ("2026-12-01", "2026-12")
    assert budgets.period_bounds("2026-12", "Asia/Kolkata")[0] == datetime(2026, 11, 30, 18, 30, tzinfo=UTC)
    assert budgets.period_bounds("2026-12-31", "UTC") == (
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


@pytest.mark.django_db(transaction=True)
def test_twenty_calls_at_once_against_a_cap_that_fits_five_admit_five(
    sonnet_conversation: Conversation, tenant: Tenant, make_run: Callable[..., Run]
) -> None:
    tenant.monthly_budget_usd = SMALL_WORST_CASE * 5
    tenant.save()
    runs = [make_run(sonnet_conversation, status=Run.Status.RUNNING) for _ in range(20)]
    start = threading.Barrier(len(runs))
    admitted: list[int] = []
    refused: list[str] = []

    def call(run: Run) -> None:
        try:
            start.wait()
            held = reserve(run, SMALL_CALL)
            assert held is not None
            admitted.append(held)
        except BudgetExceeded as exc:
            refused.append(exc.level)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=call, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert (len(admitted), refused) == (5, ["tenant_month"] * 15)
    month = counter(tenant, "tenant_month", "", this_month(tenant))
    assert (month.reserved_usd, month.reserved_calls) == (SMALL_WORST_CASE * 5, 5)


@pytest.mark.django_db(transaction=True)
def test_a_reservation_outside_a_transaction_leaves_the_connections_commits_durable(
    run: Run, tenant: Tenant, counters_path: str
) -> None:
    # The reservation alone commits without waiting for the disk; what follows it (the call's
    # record) must not inherit that.
    tenant.monthly_budget_calls = 10
    tenant.save()

    assert reserve(run, SMALL_CALL) is not None

    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit" if connection.vendor == "postgresql" else "SELECT 'on'")
        assert cursor.fetchone() == ("on",)
    assert counter(tenant, "tenant_month", "", this_month(tenant)).reserved_calls == 1


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # deeper than Python parses
        json.dumps({"messages": [{"content": [7, "text", {"type": "image", "source": "x"}, {"content": 5}]}]}).encode(),
        json.dumps({"messages": {"content": []}, "max_tokens": "many"}).encode(),
    ],
    ids=["too-deep", "odd-blocks", "odd-types"],
)
def test_an_odd_body_is_reckoned_by_its_bytes_and_the_models_limit(run: Run, body: bytes) -> None:
    terms = call_terms(run, datetime.now(UTC))
    expected = (math.ceil(len(body) / 3) * Decimal(6) + 1000 * Decimal(15)) / 1_000_000
    assert worst_case_cost(terms, 1000, body) == expected.quantize(Decimal("1e-10"))


# --- a run that may call several models ------------------------------------------------------------


def test_a_call_of_another_catalog_model_reserves_that_models_worst_case(run: Run, haiku: LanguageModel) -> None:
    run.budget_usd = Decimal("1")
    run.save()
    haiku.max_output_tokens = 1000
    haiku.save(update_fields=["max_output_tokens"])

    reserve(run, SMALL_CALL, haiku)
    reserve(run, b"{}", haiku)  # no max_tokens: that model's own limit

    # 100 output tokens at Haiku's 5 USD per million, and 7 of input at its dearest input price (2);
    # then 1000 output tokens (Haiku's limit here, not Sonnet's 32,000) and 1 of input.
    held = [Decimal("0.000514"), Decimal("0.005002")]
    assert sorted(BudgetReservation.objects.values_list("usd", flat=True)) == held
    assert counter("acme", "run", str(run.pk)).reserved_usd == sum(held)


def test_a_call_of_another_model_is_reckoned_at_that_models_price_in_effect(run: Run, haiku: LanguageModel) -> None:
    ModelPrice.objects.create(  # in effect from now on, after the price the model was made with
        model=haiku,
        effective_from=timezone.now(),
        input_price=Decimal("2"),
        output_price=Decimal("10"),
        cache_write_1h_price=Decimal("4"),
    )

    by_haiku = call_terms(run, timezone.now(), haiku)
    by_run = call_terms(run, timezone.now())

    assert (by_haiku.input_price, by_haiku.output_price) == (Decimal(4), Decimal(10))
    assert (by_run.input_price, by_run.output_price) == (Decimal(6), Decimal(15))


def test_a_call_of_another_model_replaces_its_reservation_with_its_cost_at_that_model(
    run: Run, haiku: LanguageModel
) -> None:
    run.budget_usd = Decimal("1")
    run.save()
    held = reserve(run, SMALL_CALL, haiku)

    record = record_usage(run.pk, "msg_1", anthropic_usage(output=10), held, haiku)

    assert record is not None and record.cost_usd == Decimal("0.00005")  # 10 tokens at 5 USD per million
    budget = counter("acme", "run", str(run.pk))
    assert (budget.spent_usd, budget.calls, budget.reserved_usd, budget.reserved_calls) == (record.cost_usd, 1, 0, 0)
    assert not BudgetReservation.objects.exists()
