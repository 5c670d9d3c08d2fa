"""Usage data: a model with real catalog prices, a run on it, and a helper that records calls."""

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from conversations.models import Conversation, Run
from tenants.models import LanguageModel, Tenant
from tests.factories import ConversationFactory, LanguageModelFactory, RunFactory
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
    return LanguageModelFactory(
        id="haiku",
        display_name="Claude Haiku 4.5",
        provider_model_id="claude-haiku-4-5",
        input_price=Decimal("1"),
        output_price=Decimal("5"),
        cache_write_5m_price=Decimal("1.25"),
        cache_write_1h_price=Decimal("2"),
        cache_read_price=Decimal("0.10"),
    )


@pytest.fixture
def make_run() -> Callable[..., Run]:
    def make(conversation: Conversation, **fields: Any) -> Run:
        """A completed run of `conversation` unless told otherwise, by its user, on its model."""
        return RunFactory(conversation=conversation, **{"status": Run.Status.COMPLETED, **fields})

    return make


@pytest.fixture
def sonnet_conversation(tenant: Tenant, sonnet: LanguageModel) -> Conversation:
    return ConversationFactory(tenant=tenant, model=sonnet, user_id="alice", title="Priced")


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


@pytest.fixture
def usage_history(
    tenant: Tenant,
    other_tenant: Tenant,
    sonnet: LanguageModel,
    haiku: LanguageModel,
    record: Callable[..., UsageRecord],
) -> list[UsageRecord]:
    """Two tenants' calls on two models over the last days, from completed and failed runs, and one call long ago."""
    now = timezone.now()
    days_ago = [now - timedelta(days=n) for n in range(41)]

    def ended_run(conversation: Conversation, at: datetime, reason: str = "") -> Run:
        status = Run.Status.FAILED if reason else Run.Status.COMPLETED
        error = {"reason": reason, "message": "It went wrong."} if reason else None
        return RunFactory(conversation=conversation, status=status, error=error, started_at=at, finished_at=at)

    report = ConversationFactory(tenant=tenant, model=sonnet, user_id="alice", title="Quarterly report")
    translations = ConversationFactory(tenant=tenant, model=haiku, user_id="bob", title="Translations")
    support = ConversationFactory(tenant=other_tenant, model=sonnet, user_id="carol", title="Support desk")
    first, second = ended_run(report, days_ago[0]), ended_run(report, days_ago[2])
    failed = ended_run(translations, days_ago[1], reason="timeout")
    globex_runs = [ended_run(support, days_ago[5]), ended_run(support, days_ago[0], reason="model_error")]
    ended_run(support, days_ago[3], reason="timeout")
    return [
        record(first, "msg_a1", at=days_ago[0], input=10_000, output=2_000, cache_read=50_000),
        record(second, "msg_a2", at=days_ago[2], input=3_000, output=1_000),
        record(failed, "msg_b1", at=days_ago[1], input=20_000, output=500),
        record(globex_runs[0], "msg_c1", at=days_ago[5], input=40_000, output=8_000, cache_write_5m=4_000),
        record(globex_runs[1], "msg_c2", at=days_ago[0], input=5_000, output=100),
        record(globex_runs[0], "msg_c3", at=days_ago[40], input=1_000_000, output=1_000_000),
    ]
