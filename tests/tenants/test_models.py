"""The catalog's prices: what one model call costs."""

from decimal import Decimal

from tenants.models import LanguageModel
from tests.factories import SPLIT_USAGE

# --- LanguageModel.cost -------------------------------------------------------------------------------


def test_cost_prices_each_of_the_five_token_kinds(sonnet: LanguageModel) -> None:
    cost = sonnet.cost(SPLIT_USAGE)

    by_hand = (
        1000 * Decimal("3") + 500 * Decimal("15") + 1000 * Decimal("3.75") + 500 * Decimal("6") + 2000 * Decimal("0.30")
    ) / Decimal(1_000_000)
    assert cost == by_hand == Decimal("0.01785")
    assert isinstance(cost, Decimal)


def test_cost_without_the_cache_split_bills_cache_writes_at_the_5_minute_rate(sonnet: LanguageModel) -> None:
    usage = {key: value for key, value in SPLIT_USAGE.items() if key != "cache_creation"}

    cost = sonnet.cost(usage)

    by_hand = (1000 * Decimal("3") + 500 * Decimal("15") + 1500 * Decimal("3.75") + 2000 * Decimal("0.30")) / Decimal(
        1_000_000
    )
    assert cost == by_hand == Decimal("0.016725")


def test_cost_with_only_the_1_hour_split_bills_the_rest_at_the_5_minute_rate(sonnet: LanguageModel) -> None:
    usage = {**SPLIT_USAGE, "cache_creation": {"ephemeral_1h_input_tokens": 500}}

    cost = sonnet.cost(usage)

    assert cost == sonnet.cost(SPLIT_USAGE)


def test_cost_of_no_usage_is_zero(sonnet: LanguageModel) -> None:
    assert sonnet.cost({}) == 0
    assert sonnet.cost({"input_tokens": None, "cache_creation": None}) == 0
