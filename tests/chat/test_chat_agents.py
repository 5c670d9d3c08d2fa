"""The chat page's agents: an end user starts a conversation with the tenant's default agent or one it marks
choosable, of their own tenant only, and the chat session can name no other."""

import pytest
from django.test import Client
from pytest_django import DjangoAssertNumQueries
from rest_framework.test import APIClient

from agents.services import create_profile, default_profile, update_profile
from agents.spec import AgentSpec
from conversations.models import Conversation, Run
from tenants.models import Tenant
from tests.api.assertions import error_of, nothing_created
from tests.chat.test_links import chat_link, opened

pytestmark = pytest.mark.django_db


@pytest.fixture
def agents(tenant: Tenant, other_tenant: Tenant) -> None:
    """acme: its default, `support` (choosable), `smalltalk` (a choosable chat), `internal` (not choosable);
    globex: `rival` (choosable)."""
    create_profile(tenant, "support", AgentSpec(busy_policy="queue"), description="Answers questions.", choosable=True)
    create_profile(tenant, "smalltalk", AgentSpec(kind="chat"), description="Just chats.", choosable=True)
    create_profile(tenant, "internal", AgentSpec(instructions="Staff only."), description="For staff.")
    create_profile(other_tenant, "rival", AgentSpec(), choosable=True)


def session(api_client: APIClient) -> tuple[Client, dict[str, str]]:
    """alice's chat session, and the header its writes send."""
    browser = opened(chat_link(api_client))
    browser.get("/chat/")
    return browser, {"HTTP_X_CSRFTOKEN": browser.cookies["csrftoken"].value}


def test_the_session_lists_the_default_agent_first_then_its_tenants_choosable_ones(
    api_client: APIClient, agents: None, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    browser, _ = session(api_client)

    with django_assert_num_queries(5):  # the session, the tenant (twice, as every request), the default, the list
        listed = browser.get("/api/tenants/acme/chat-agents")
    from_the_backend = api_client.get("/api/tenants/acme/chat-agents")

    assert listed.status_code == 200
    assert listed.json() == [
        {"name": "default", "description": "", "kind": "agent", "is_default": True, "busy_policy": "reject"},
        {
            "name": "smalltalk",
            "description": "Just chats.",
            "kind": "chat",
            "is_default": False,
            "busy_policy": "reject",
        },
        {
            "name": "support",
            "description": "Answers questions.",
            "kind": "agent",
            "is_default": False,
            "busy_policy": "queue",
        },
    ]
    assert from_the_backend.json() == listed.json()


def test_another_tenants_agents_are_never_listed_or_chosen(api_client: APIClient, agents: None) -> None:
    browser, csrf = session(api_client)

    theirs = browser.get("/api/tenants/globex/chat-agents")
    ours = [agent["name"] for agent in browser.get("/api/tenants/acme/chat-agents").json()]
    with nothing_created():
        named = browser.post("/api/tenants/acme/conversations", {"agent": "rival"}, "application/json", **csrf)

    assert error_of(theirs, 404)
    assert "rival" not in ours
    assert "rival" not in error_of(named, 400)["message"].split("Choose one of:")[1]


def test_the_default_agent_is_offered_even_when_not_marked_choosable(
    api_client: APIClient, tenant: Tenant, agents: None
) -> None:
    update_profile(default_profile(tenant), {}, choosable=False)
    browser, _ = session(api_client)

    listed = browser.get("/api/tenants/acme/chat-agents").json()

    assert [agent["name"] for agent in listed] == ["default", "smalltalk", "support"]


def test_the_session_starts_a_conversation_with_a_choosable_agent(api_client: APIClient, agents: None) -> None:
    browser, csrf = session(api_client)

    made = browser.post("/api/tenants/acme/conversations", {"agent": "support"}, "application/json", **csrf)

    assert made.status_code == 201, made.content
    assert made.json()["agent"] == {"name": "support", "version": None}
    assert Conversation.objects.get().agent.name == "support"


def test_an_agent_kept_from_end_users_answers_the_session_like_a_missing_one(
    api_client: APIClient, agents: None
) -> None:
    browser, csrf = session(api_client)

    with nothing_created():
        hidden = browser.post("/api/tenants/acme/conversations", {"agent": "internal"}, "application/json", **csrf)
        missing = browser.post("/api/tenants/acme/conversations", {"agent": "nobody"}, "application/json", **csrf)
        pinned = browser.post("/api/tenants/acme/conversations", {"agent": "support@1"}, "application/json", **csrf)

    assert error_of(hidden, 400)["message"] == error_of(missing, 400)["message"].replace("nobody", "internal")
    assert "internal" not in error_of(hidden, 400)["message"].split("Choose one of:")[1]
    assert error_of(pinned, 400)["fields"] == {"agent": ["Name the agent without a version: support."]}


def test_the_session_cannot_move_a_conversation_or_a_message_to_a_hidden_agent(
    api_client: APIClient, conversation: Conversation, agents: None
) -> None:
    browser, csrf = session(api_client)
    path = f"/api/tenants/acme/conversations/{conversation.pk}"

    moved = browser.patch(path, {"agent": "internal"}, "application/json", **csrf)
    message = browser.post(f"{path}/messages", {"text": "Hi", "agent": "internal"}, "application/json", **csrf)
    allowed = browser.patch(path, {"agent": "support"}, "application/json", **csrf)

    assert "agent" in error_of(moved, 400)["fields"]
    assert "agent" in error_of(message, 400)["fields"]
    assert not Run.objects.exists()
    assert allowed.status_code == 200 and allowed.json()["agent"]["name"] == "support"


def test_the_tenants_backend_names_any_of_its_agents(api_client: APIClient, agents: None) -> None:
    made = api_client.post("/api/tenants/acme/conversations", {"agent": "internal@1"}, format="json")

    assert made.status_code == 201, made.content
    assert made.json()["agent"] == {"name": "internal", "version": 1}
