"""Data for tests of every app (factory-boy): each factory makes a valid row, given only what a test cares about."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from approvals.models import Approval, Question
from approvals.services import describe
from conversations.models import Conversation, Run
from mcp_servers.models import McpServer
from tenants.models import LanguageModel, Tenant
from tenants.services import save_language_model
from usage.budgets import periods
from usage.models import BudgetCounter, BudgetLevel, UserBudget

# Claude Sonnet 4.5 list prices, USD per million tokens.
SONNET_PRICES = {
    "input_price": Decimal("3"),
    "output_price": Decimal("15"),
    "cache_write_5m_price": Decimal("3.75"),
    "cache_write_1h_price": Decimal("6"),
    "cache_read_price": Decimal("0.30"),
}

# One model call's usage as the API reports it, with the cache writes split by lifetime.
SPLIT_USAGE = {
    "input_tokens": 1000,
    "output_tokens": 500,
    "cache_creation_input_tokens": 1500,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 500},
    "cache_read_input_tokens": 2000,
}


class LanguageModelFactory(DjangoModelFactory[LanguageModel]):
    """An Anthropic model at Sonnet's prices."""

    class Meta:
        model = LanguageModel
        django_get_or_create = ("id",)

    id = factory.Sequence(lambda n: f"model-{n}")
    display_name = factory.LazyAttribute(lambda model: model.id.title())
    provider = LanguageModel.Provider.ANTHROPIC
    provider_model_id = "claude-sonnet-4-5"
    input_price = SONNET_PRICES["input_price"]
    output_price = SONNET_PRICES["output_price"]
    cache_write_5m_price = SONNET_PRICES["cache_write_5m_price"]
    cache_write_1h_price = SONNET_PRICES["cache_write_1h_price"]
    cache_read_price = SONNET_PRICES["cache_read_price"]

    @classmethod
    def _create(cls, model_class: type[LanguageModel], *args: Any, **kwargs: Any) -> LanguageModel:
        # Through the catalog service, as admin, API and loadmodels make models: with its first price recorded.
        existing = model_class.objects.filter(pk=kwargs["id"]).first()
        return existing or save_language_model(model_class(*args, **kwargs))


class TenantFactory(DjangoModelFactory[Tenant]):
    class Meta:
        model = Tenant
        django_get_or_create = ("id",)

    id = factory.Sequence(lambda n: f"tenant-{n}")
    name = factory.LazyAttribute(lambda tenant: tenant.id.title())
    default_model = factory.SubFactory(LanguageModelFactory)


class ConversationFactory(DjangoModelFactory[Conversation]):
    """A conversation on its tenant's default model."""

    class Meta:
        model = Conversation

    tenant = factory.SubFactory(TenantFactory)
    model = factory.SelfAttribute("tenant.default_model")


class RunFactory(DjangoModelFactory[Run]):
    """A queued run of a conversation, on the conversation's model, for the conversation's user."""

    class Meta:
        model = Run

    conversation = factory.SubFactory(ConversationFactory)
    model = factory.SelfAttribute("conversation.model")
    user_id = factory.SelfAttribute("conversation.user_id")
    input = "Hi"


class McpServerFactory(DjangoModelFactory[McpServer]):
    """A tenant's built-in server (the kind that needs no address, command or secret)."""

    class Meta:
        model = McpServer

    tenant = factory.SubFactory(TenantFactory)
    name = factory.Sequence(lambda n: f"server-{n}")
    kind = McpServer.Kind.BUILTIN

    class Params:
        # A remote server over streamable HTTP, at an address no test dials.
        http = factory.Trait(kind=McpServer.Kind.HTTP, url="https://mcp.example.com/mcp")


def current_period(level: str, tenant: Tenant) -> str:
    """The period a budget of `level` counts in now, in the tenant's time zone (none for conversations and runs)."""
    day, month = periods(timezone.now(), tenant.time_zone)
    return {BudgetLevel.USER_DAY: day, BudgetLevel.TENANT_MONTH: month, BudgetLevel.USER_MONTH: month}.get(level, "")


class BudgetCounterFactory(DjangoModelFactory[BudgetCounter]):
    """What a budget has spent and holds: the tenant's, this month, nothing yet unless told."""

    class Meta:
        model = BudgetCounter

    tenant = factory.SubFactory(TenantFactory)
    level = BudgetLevel.TENANT_MONTH
    period = factory.LazyAttribute(lambda counter: current_period(counter.level, counter.tenant))


class UserBudgetFactory(DjangoModelFactory[UserBudget]):
    """An end user's own budget, with no limit unless told."""

    class Meta:
        model = UserBudget

    tenant = factory.SubFactory(TenantFactory)
    user_id = factory.Sequence(lambda n: f"user-{n}")


class ApprovalFactory(DjangoModelFactory[Approval]):
    """A pending approval of a Bash call of a run, for the run's end user, as the run's gate stores it."""

    class Meta:
        model = Approval

    run = factory.SubFactory(RunFactory)
    conversation = factory.SelfAttribute("run.conversation")
    tenant = factory.SelfAttribute("run.conversation.tenant")
    user_id = factory.SelfAttribute("run.user_id")
    tool_use_id = factory.Sequence(lambda n: f"toolu_{n:04d}")
    tool = "Bash"
    tool_input = factory.LazyFunction(lambda: {"command": "echo hi"})
    title = factory.LazyAttribute(lambda approval: describe(approval.tool, approval.tool_input)[0])
    display_name = factory.SelfAttribute("tool")
    description = factory.LazyAttribute(lambda approval: describe(approval.tool, approval.tool_input)[1])
    decision_reason = "The agent profile 'default' asks a person first (Bash(echo *))."
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=1))


class QuestionFactory(DjangoModelFactory[Question]):
    """The agent's pending question to a run's end user: one question, two options."""

    class Meta:
        model = Question

    run = factory.SubFactory(RunFactory)
    conversation = factory.SelfAttribute("run.conversation")
    tenant = factory.SelfAttribute("run.conversation.tenant")
    user_id = factory.SelfAttribute("run.user_id")
    tool_use_id = factory.Sequence(lambda n: f"toolu_q{n:04d}")
    questions = factory.LazyFunction(
        lambda: [
            {
                "question": "Which format?",
                "header": "Format",
                "options": [
                    {"label": "CSV", "description": "Comma-separated values."},
                    {"label": "JSON", "description": "One object per row."},
                ],
                "multiSelect": False,
            }
        ]
    )
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(hours=1))
