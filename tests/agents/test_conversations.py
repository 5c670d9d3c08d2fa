"""Conversations and messages name their agent: `name` follows its current version, `name@n` pins one, an
unknown name (another tenant's included, without a word about it) is 400 naming `agent` and its choices."""

import pytest
from rest_framework.test import APIClient

from agents.models import AgentProfile
from agents.services import create_profile, update_profile
from agents.spec import AgentSpec
from conversations.events import finish_run
from conversations.models import Conversation, Run
from tenants.models import Tenant
from tests.api.assertions import error_of, nothing_created

pytestmark = pytest.mark.django_db

CONVERSATIONS = "/api/tenants/acme/conversations"


@pytest.fixture(autouse=True)
def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message's run is handed to a worker once committed; here it only has to be stored."""
    monkeypatch.setattr("runs.services.dispatch_run", lambda run_id: None)


def queued_agent(run_id: str) -> dict[str, object]:
    """How the run's run.queued event names its agent."""
    return Run.objects.get(pk=run_id).events.get(type="run.queued").data["agent"]


# --- Choosing at creation ------------------------------------------------------------------------------


def test_a_conversation_named_after_an_agent_follows_its_current_version(
    api_client: APIClient, support: AgentProfile
) -> None:
    created = api_client.post(CONVERSATIONS, {"agent": "support"}, format="json")
    update_profile(support, {"max_turns": 20})

    read = api_client.get(f"{CONVERSATIONS}/{created.json()['id']}").json()

    assert created.status_code == 201
    assert created.json()["agent"] == read["agent"] == {"name": "support", "version": None}
    run = api_client.post(f"{CONVERSATIONS}/{read['id']}/messages", {"text": "Hi"}, format="json").json()
    assert queued_agent(run["id"]) == {"name": "support", "version": 2, "kind": "agent"}


def test_a_conversation_pinned_to_a_version_keeps_it(api_client: APIClient, support: AgentProfile) -> None:
    update_profile(support, {"max_turns": 20})

    created = api_client.post(CONVERSATIONS, {"agent": "support@1"}, format="json").json()
    update_profile(support, {"max_turns": 30})
    run = api_client.post(f"{CONVERSATIONS}/{created['id']}/messages", {"text": "Hi"}, format="json").json()

    assert created["agent"] == {"name": "support", "version": 1}
    assert queued_agent(run["id"]) == {"name": "support", "version": 1, "kind": "agent"}


def test_a_conversation_naming_no_agent_gets_the_default(api_client: APIClient, tenant: Tenant) -> None:
    created = api_client.post(CONVERSATIONS, {}, format="json").json()

    assert created["agent"] == {"name": "default", "version": None}


def test_a_conversation_runs_on_its_agents_model_unless_it_names_one(
    api_client: APIClient, support: AgentProfile, sonnet: object
) -> None:
    update_profile(support, {"model": "sonnet"})

    agents_model = api_client.post(CONVERSATIONS, {"agent": "support"}, format="json").json()
    own_model = api_client.post(CONVERSATIONS, {"agent": "support", "model": "offline"}, format="json").json()

    assert (agents_model["model"], own_model["model"]) == ("sonnet", "offline")


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("helpdesk", "No agent is named 'helpdesk'. Choose one of: default, support."),
        ("support@3", "Agent 'support' has no version 3."),
        ("support@latest", "Write name@version with a version number, such as support@1."),
    ],
)
def test_an_unknown_agent_is_400_naming_agent_and_the_choices(
    api_client: APIClient, support: AgentProfile, reference: str, message: str
) -> None:
    with nothing_created():
        response = api_client.post(CONVERSATIONS, {"agent": reference}, format="json")

    error = error_of(response, 400)
    assert (error["code"], error["fields"]) == ("unknown_agent", {"agent": [message]})


def test_another_tenants_agent_is_unknown_like_one_that_never_was(
    api_client: APIClient, support: AgentProfile, other_tenant: Tenant
) -> None:
    create_profile(other_tenant, "globex-analyst", AgentSpec(instructions="Globex only."))

    with nothing_created():
        theirs = api_client.post(CONVERSATIONS, {"agent": "globex-analyst"}, format="json")
        never = api_client.post(CONVERSATIONS, {"agent": "nobody-at-all"}, format="json")

    assert error_of(theirs, 400)["fields"]["agent"] == [
        "No agent is named 'globex-analyst'. Choose one of: default, support."
    ]
    assert error_of(never, 400)["fields"]["agent"] == [
        "No agent is named 'nobody-at-all'. Choose one of: default, support."
    ]


# --- Moving a conversation ------------------------------------------------------------------------------------


def test_patching_agent_moves_the_conversation_from_its_next_run(
    api_client: APIClient, support: AgentProfile, conversation: Conversation
) -> None:
    pinned = api_client.patch(f"{CONVERSATIONS}/{conversation.pk}", {"agent": "support@1"}, format="json")
    update_profile(support, {"max_turns": 20})
    first = api_client.post(f"{CONVERSATIONS}/{conversation.pk}/messages", {"text": "Hi"}, format="json").json()
    finish_run(first["id"], Run.Status.COMPLETED)
    following = api_client.patch(f"{CONVERSATIONS}/{conversation.pk}", {"agent": "support"}, format="json")
    second = api_client.post(f"{CONVERSATIONS}/{conversation.pk}/messages", {"text": "Hi"}, format="json").json()

    assert pinned.json()["agent"] == {"name": "support", "version": 1}
    assert following.json()["agent"] == {"name": "support", "version": None}
    assert queued_agent(first["id"])["version"] == 1
    assert queued_agent(second["id"])["version"] == 2


def test_patching_to_another_tenants_agent_is_400_and_keeps_the_conversations(
    api_client: APIClient, support: AgentProfile, their_agent: AgentProfile, conversation: Conversation
) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(agent=support)
    their_agent.name = "globex-only"
    their_agent.save()

    response = api_client.patch(f"{CONVERSATIONS}/{conversation.pk}", {"agent": "globex-only"}, format="json")

    assert "agent" in error_of(response, 400)["fields"]
    conversation.refresh_from_db()
    assert (conversation.agent_id, conversation.agent_version_id) == (support.pk, None)


# --- One message, another agent ---------------------------------------------------------------------------------


def test_a_messages_agent_runs_that_message_only(
    api_client: APIClient, support: AgentProfile, conversation: Conversation
) -> None:
    create_profile(support.tenant, "chatty", AgentSpec(kind="chat"))

    run = api_client.post(
        f"{CONVERSATIONS}/{conversation.pk}/messages", {"text": "Hi", "agent": "chatty"}, format="json"
    ).json()
    finish_run(run["id"], Run.Status.COMPLETED)
    next_run = api_client.post(f"{CONVERSATIONS}/{conversation.pk}/messages", {"text": "Hi"}, format="json").json()

    assert queued_agent(run["id"]) == {"name": "chatty", "version": 1, "kind": "chat"}
    assert Run.objects.get(pk=run["id"]).agent_version == AgentProfile.objects.get(name="chatty").current_version
    assert queued_agent(next_run["id"])["name"] == "default"
    conversation.refresh_from_db()
    assert conversation.agent_id is None  # still the tenant's default


def test_a_message_naming_an_unknown_agent_is_400_and_starts_no_run(
    api_client: APIClient, support: AgentProfile, conversation: Conversation, their_agent: AgentProfile
) -> None:
    their_agent.name = "globex-only"
    their_agent.save()

    with nothing_created():
        response = api_client.post(
            f"{CONVERSATIONS}/{conversation.pk}/messages", {"text": "Hi", "agent": "globex-only"}, format="json"
        )

    assert error_of(response, 400)["fields"] == {
        "agent": ["No agent is named 'globex-only'. Choose one of: default, support."]
    }
