"""Agent profiles to work on: acme's support agent and globex's own, made through the services."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from agents.models import AgentProfile, AgentVersion
from agents.services import create_profile
from agents.spec import AgentSpec
from tenants.models import LanguageModel, Tenant
from tests.factories import LanguageModelFactory


@pytest.fixture
def support(tenant: Tenant) -> AgentProfile:
    """acme's read-only support agent, version 1, not choosable by end users."""
    spec = AgentSpec(instructions="Answer from the docs.", allowed_tools=["Read", "Grep", "Bash(git *)"], max_turns=8)
    return create_profile(tenant, "support", spec, description="Answers customers.", created_by="test")


@pytest.fixture
def their_agent(other_tenant: Tenant) -> AgentProfile:
    """globex's agent named like acme's, so that a name alone reaches nothing across tenants."""
    return create_profile(other_tenant, "support", AgentSpec(instructions="Globex's secret."), created_by="test")


@pytest.fixture
def retired_model(db: None) -> LanguageModel:
    return LanguageModelFactory(id="retired", status=LanguageModel.Status.DEPRECATED)


def agent_rows() -> list[dict[str, Any]]:
    """Every profile and version as stored, to show that a refused request changed nothing."""
    return [*AgentProfile.objects.order_by("pk").values(), *AgentVersion.objects.order_by("pk").values()]


@contextmanager
def agents_untouched() -> Iterator[None]:
    before = agent_rows()
    yield
    assert agent_rows() == before
