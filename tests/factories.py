"""Data shared by tests of different apps."""

from decimal import Decimal

# Claude Sonnet 4.5 list prices, USD per million tokens.
SONNET_PRICES = {
    "input_price": Decimal("3"),
    "output_price": Decimal("15"),
    "cache_write_5m_price": Decimal("3.75"),
    "cache_write_1h_price": Decimal("6"),
    "cache_read_price": Decimal("0.30"),
}
