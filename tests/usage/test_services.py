"""Recording each model call once, at catalog prices, and the budgets runs are given."""

from collections.abc import Callable
from decimal import Decimal

import pytest

from conversations.models import Conversation, Run
from tenants.models import LanguageModel, Tenant
from tests.usage.conftest import anthropic_usage
from usage.models import UsageRecord
from usage.services import effective_budget, record_usage, run_totals

pytestmark = pytest.mark.django_db

SCRIPTED = {"input": 1200, "output": 300, "cache_read": 5000, "cache_write_5m": 700, "cache_write_1h": 100}


def test_a_recorded_call_carries_its_tokens_and_its_cost_at_catalog_prices(run: Run) -> None:
    record = record_usage(run.pk, "msg_1", anthropic_usage(**SCRIPTED))

    assert record is not None
    stored = UsageRecord.objects.get(pk=record.pk)
    assert (stored.tenant_id, stored.conversation_id, stored.run_id) == ("acme", run.conversation_id, run.pk)
    assert (stored.user_id, stored.model_id, stored.message_id) == ("alice", "sonnet", "msg_1")
    assert (
        stored.input_tokens,
        stored.output_tokens,
        stored.cache_write_5m_tokens,
        stored.cache_write_1h_tokens,
        stored.cache_read_tokens,
    ) == (1200, 300, 700, 100, 5000)
    # 1200 * 3 + 300 * 15 + 700 * 3.75 + 100 * 6 + 5000 * 0.30 = 12 825 USD per million tokens
    assert stored.cost_usd == Decimal("0.0128250000")
    assert record.cost_usd == stored.cost_usd


def test_fractions_of_a_cent_are_kept_to_the_tenth_decimal(run: Run) -> None:
    record = record_usage(
        run.pk, "msg_1", anthropic_usage(input=1, output=1, cache_read=1, cache_write_5m=1, cache_write_1h=1)
    )

    # 3 + 15 + 0.30 + 3.75 + 6 = 28.05 USD per million tokens
    assert record is not None
    assert UsageRecord.objects.get(pk=record.pk).cost_usd == Decimal("0.0000280500")


def test_cache_writes_without_the_split_are_billed_at_the_5_minute_rate(run: Run) -> None:
    record = record_usage(run.pk, "msg_1", {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 1000})

    assert record is not None
    assert (record.cache_write_5m_tokens, record.cache_write_1h_tokens) == (1000, 0)
    assert record.cost_usd == Decimal("0.0037500000")


def test_recording_the_same_call_twice_counts_it_once(run: Run) -> None:
    first = record_usage(run.pk, "msg_1", anthropic_usage(**SCRIPTED))

    again = record_usage(run.pk, "msg_1", anthropic_usage(**SCRIPTED))

    assert first is not None
    assert again is None
    assert UsageRecord.objects.count() == 1


def test_the_same_message_id_in_another_run_is_another_call(
    run: Run, sonnet_conversation: Conversation, make_run: Callable[..., Run]
) -> None:
    other_run = make_run(sonnet_conversation)
    record_usage(run.pk, "msg_1", anthropic_usage(input=1))

    assert record_usage(other_run.pk, "msg_1", anthropic_usage(input=1)) is not None


def test_a_call_without_a_message_id_is_refused(run: Run) -> None:
    with pytest.raises(ValueError, match="message id"):
        record_usage(run.pk, "", anthropic_usage(input=1))


def test_records_outlive_the_conversation_they_bill(run: Run, record: Callable[..., UsageRecord]) -> None:
    record(run, "msg_1", **SCRIPTED)

    run.conversation.delete()

    kept = UsageRecord.objects.get()
    assert (kept.tenant_id, kept.user_id, kept.model_id, kept.conversation_id, kept.run_id) == (
        "acme",
        "alice",
        "sonnet",
        None,
        None,
    )


def test_records_go_with_their_tenant(run: Run, record: Callable[..., UsageRecord], tenant: Tenant) -> None:
    record(run, "msg_1", **SCRIPTED)

    tenant.delete()

    assert not UsageRecord.objects.exists()


def test_run_totals_sum_the_runs_own_calls(
    run: Run, record: Callable[..., UsageRecord], sonnet_conversation: Conversation, make_run: Callable[..., Run]
) -> None:
    record(run, "msg_1", **SCRIPTED)
    record(run, "msg_2", input=100, output=50)
    record(make_run(sonnet_conversation), "msg_3", input=999_999)

    totals = run_totals(run.pk)

    assert totals == {
        "input_tokens": 1300,
        "output_tokens": 350,
        "cache_write_5m_tokens": 700,
        "cache_write_1h_tokens": 100,
        "cache_read_tokens": 5000,
        "model_calls": 2,
        # 0.012825 + (100 * 3 + 50 * 15) / 1e6
        "cost_usd": "0.0138750000",
    }


def test_run_totals_of_a_run_without_calls_are_zero(run: Run) -> None:
    assert run_totals(run.pk) == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_write_5m_tokens": 0,
        "cache_write_1h_tokens": 0,
        "cache_read_tokens": 0,
        "model_calls": 0,
        "cost_usd": "0.0000000000",
    }


# --- budgets ------------------------------------------------------------------------------------


def test_each_budget_falls_back_on_the_tenants_default_on_its_own(tenant: Tenant) -> None:
    tenant.run_budget_usd, tenant.run_budget_calls = Decimal("5"), 100

    assert effective_budget(tenant) == (Decimal("5"), 100)
    assert effective_budget(tenant, override_usd=Decimal("1.5")) == (Decimal("1.5"), 100)
    assert effective_budget(tenant, override_calls=7) == (Decimal("5"), 7)
    assert effective_budget(tenant, Decimal("20"), 1000) == (Decimal("5"), 100)  # never loosened


def test_a_zero_override_wins_rather_than_meaning_no_override(tenant: Tenant) -> None:
    tenant.run_budget_usd, tenant.run_budget_calls = Decimal("5"), 100

    assert effective_budget(tenant, override_usd=Decimal("0"), override_calls=0) == (Decimal("0"), 0)


def test_a_tenant_without_defaults_gives_unlimited_runs(tenant: Tenant) -> None:
    assert effective_budget(tenant) == (None, None)


# --- a run that may call several models ------------------------------------------------------------


def test_a_call_of_another_catalog_model_is_recorded_at_that_models_price(run: Run, haiku: LanguageModel) -> None:
    record = record_usage(run.pk, "msg_1", anthropic_usage(**SCRIPTED), model=haiku)

    assert record is not None
    stored = UsageRecord.objects.select_related("price").get(pk=record.pk)
    assert stored.model_id == "haiku"
    assert stored.price is not None and stored.price.model_id == "haiku"
    # 1200 * 1 + 300 * 5 + 700 * 1.25 + 100 * 2 + 5000 * 0.10 = 4 275 USD per million tokens
    assert stored.cost_usd == Decimal("0.0042750000")


def test_a_call_recorded_again_under_another_model_still_counts_once_at_the_first(
    run: Run, haiku: LanguageModel
) -> None:
    first = record_usage(run.pk, "msg_1", anthropic_usage(**SCRIPTED))

    again = record_usage(run.pk, "msg_1", anthropic_usage(**SCRIPTED), model=haiku)

    assert first is not None and again is None
    assert list(UsageRecord.objects.values_list("model_id", flat=True)) == ["sonnet"]
