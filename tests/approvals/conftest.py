"""Runs that wait for people, and what they ask: rows made directly (no agent runs in these tests)."""

from typing import Any
from uuid import UUID

import pytest

from approvals.models import Approval, Question
from conversations.models import Conversation, Run
from tenants.models import Tenant
from tests.factories import ApprovalFactory, QuestionFactory, RunFactory


def waiting_run_of(conversation: Conversation) -> Run:
    """A run suspended for a person (no worker), holding its conversation's lease as a waiting run does."""
    run = RunFactory(conversation=conversation, status=Run.Status.WAITING, suspensions=1, input="Tidy up, please.")
    conversation.active_run = run
    conversation.save(update_fields=["active_run"])
    return run


@pytest.fixture
def dispatched(monkeypatch: pytest.MonkeyPatch) -> list[UUID]:
    """The runs handed to a worker (after commit), instead of starting an agent."""
    handed: list[UUID] = []
    monkeypatch.setattr("runs.dispatch.dispatch_run", handed.append)
    return handed


@pytest.fixture
def signalled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[UUID, dict[str, Any]]]:
    """Control messages sent to the worker running a run (after commit)."""
    sent: list[tuple[UUID, dict[str, Any]]] = []
    monkeypatch.setattr("conversations.realtime.signal_run", lambda run_id, message: sent.append((run_id, message)))
    return sent


@pytest.fixture
def waiting_run(conversation: Conversation) -> Run:
    """alice's run in acme, suspended on a Bash call."""
    return waiting_run_of(conversation)


@pytest.fixture
def approval(waiting_run: Run) -> Approval:
    return ApprovalFactory(run=waiting_run)


@pytest.fixture
def question(waiting_run: Run) -> Question:
    return QuestionFactory(run=waiting_run)


@pytest.fixture
def bobs_conversation(tenant: Tenant) -> Conversation:
    return Conversation.objects.create(tenant=tenant, model=tenant.default_model, user_id="bob", title="Bob's")


@pytest.fixture
def bobs_approval(bobs_conversation: Conversation) -> Approval:
    """Another end user's approval in the same tenant."""
    return ApprovalFactory(run=waiting_run_of(bobs_conversation), tool_input={"command": "echo bob"})


@pytest.fixture
def bobs_question(bobs_conversation: Conversation) -> Question:
    return QuestionFactory(run=waiting_run_of(bobs_conversation))


@pytest.fixture
def their_approval(other_conversation: Conversation) -> Approval:
    """Another tenant's (globex's, of its user bob)."""
    return ApprovalFactory(run=waiting_run_of(other_conversation), tool_input={"command": "echo globex"})


@pytest.fixture
def their_question(other_conversation: Conversation) -> Question:
    return QuestionFactory(run=waiting_run_of(other_conversation))
