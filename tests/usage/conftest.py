"""Usage data: a model with real catalog prices, a run on it, and a helper that records calls."""

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from conversations.models import Conversation, Run
from tenants.models import LanguageModel, Tenant
from usage.models import UsageRecord
from usage.services import record_usage


def anthropic_usage(
    input: int = 0, output: int = 0, cache_read: int = 0, cache_write_5m: int = 0, cache_write_1h: int = 0
) -> dict[str, Any]:
    """A usage dict as the Messages API reports it."""
    return {
        "input_tokens": input,
        "output_tokens": output,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write_5m + cache_write_1h,
        "cache_creation": {"ephemeral_5m_input_tokens": cache_write_5m, "ephemeral_1h_input_tokens": cache_write_1h},
    }


@pytest.fixture
def haiku(db: None) -> LanguageModel:
    """Claude Haiku 4.5 at its list prices."""
    return LanguageModel.objects.create(
        id="haiku",
        display_name="Claude Haiku 4.5",
        provider=LanguageModel.Provider.ANTHROPIC,
        provider_model_id="claude-haiku-4-5",
        input_price=Decimal("1"),
        output_price=Decimal("5"),
        cache_write_5m_price=Decimal("1.25"),
        cache_write_1h_price=Decimal("2"),
        cache_read_price=Decimal("0.10"),
    )


@pytest.fixture
def make_run() -> Callable[..., Run]:
    def make(conversation: Conversation, model: LanguageModel | None = None, user_id: str = "", **fields: Any) -> Run:
        fields = {"status": Run.Status.COMPLETED, **fields}
        return Run.objects.create(
            conversation=conversation,
            model=model or conversation.model,
            user_id=user_id or conversation.user_id,
            input="Hello",
            **fields,
        )

    return make


@pytest.fixture
def sonnet_conversation(tenant: Tenant, sonnet: LanguageModel) -> Conversation:
    return Conversation.objects.create(tenant=tenant, model=sonnet, user_id="alice", title="Priced")


@pytest.fixture
def run(sonnet_conversation: Conversation, make_run: Callable[..., Run]) -> Run:
    """A run on Sonnet by end user alice of tenant acme."""
    return make_run(sonnet_conversation)


@pytest.fixture
def record() -> Callable[..., UsageRecord]:
    """Records one call through the service, optionally back-dated."""

    def make(run: Run, message_id: str, at: datetime | None = None, **usage: int) -> UsageRecord:
        stored = record_usage(run.pk, message_id, anthropic_usage(**usage))
        assert stored is not None
        if at is not None:
            UsageRecord.objects.filter(pk=stored.pk).update(created_at=at)
            stored.created_at = at
        return stored

    return make
