"""Chat links open a session for one end user of one tenant, and that session reaches nothing else."""

import re
import time
from pathlib import Path
from unittest import mock

import pytest
from django.test import Client
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from chat.links import ChatGrant, make_link_token
from conversations.models import Conversation
from skills.archive import from_files
from skills.models import Skill
from skills.services import create_skill
from tests.api.assertions import error_of

pytestmark = pytest.mark.django_db


def chat_link(api_client: APIClient, **body: object) -> str:
    response = api_client.post("/api/tenants/acme/chat-links", {"user_id": "alice", **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["url"]


def opened(url: str) -> Client:
    browser = Client(enforce_csrf_checks=True)
    response = browser.get(url.removeprefix("http://testserver"))
    assert response.status_code == 302 and response["Location"] == "/chat/"
    return browser


def test_a_link_opens_the_page_with_a_strict_content_security_policy(
    api_client: APIClient, conversation: Conversation
) -> None:
    browser = opened(chat_link(api_client))

    page = browser.get("/chat/")

    assert page.status_code == 200 and b'data-user="alice"' in page.content
    policy = page["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("style-src")[0]
    assert not re.search(rb"<script(?![^>]*\bsrc=)", page.content)  # no inline script at all


def test_the_session_sees_its_users_conversations_only(
    api_client: APIClient, conversation: Conversation, other_conversation: Conversation
) -> None:
    bobs = Conversation.objects.create(tenant=conversation.tenant, model=conversation.model, user_id="bob")
    browser = opened(chat_link(api_client))

    listed = browser.get("/api/tenants/acme/conversations").json()["results"]
    bob = browser.get(f"/api/tenants/acme/conversations/{bobs.pk}")
    globex = browser.get(f"/api/tenants/globex/conversations/{other_conversation.pk}")
    spoofed = browser.get("/api/tenants/acme/conversations", HTTP_X_USER_ID="bob").json()["results"]

    assert [c["id"] for c in listed] == [str(conversation.pk)]
    assert bob.status_code == globex.status_code == 404
    assert [c["id"] for c in spoofed] == [str(conversation.pk)]  # the session's user, whatever the header says


def test_the_sessions_writes_need_the_csrf_token(api_client: APIClient, conversation: Conversation) -> None:
    browser = opened(chat_link(api_client))
    browser.get("/chat/")
    path = f"/api/tenants/acme/conversations/{conversation.pk}/stream-token"

    without = browser.post(path, content_type="application/json")
    with_token = browser.post(
        path, content_type="application/json", HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value
    )

    assert error_of(without, 403)["message"].startswith("CSRF Failed")
    assert with_token.status_code == 201


def test_the_session_reads_the_skills_but_the_backends_business_needs_an_api_key(
    api_client: APIClient, conversation: Conversation, settings: Settings, tmp_path: Path
) -> None:
    settings.MEDIA_ROOT = tmp_path
    skill_md = b"---\nname: greet\ndescription: Greets.\n---\nSay hello.\n"
    create_skill(conversation.tenant, from_files([("SKILL.md", skill_md)]), "test")
    Skill.objects.update(slash_command=True)
    browser = opened(chat_link(api_client))
    browser.get("/chat/")
    csrf = {"HTTP_X_CSRFTOKEN": browser.cookies["csrftoken"].value}

    commands = browser.get("/api/tenants/acme/skills/slash-commands")
    changed = browser.patch("/api/tenants/acme/skills/greet", {"enabled": False}, "application/json", **csrf)
    deleted = browser.delete("/api/tenants/acme/skills/greet", **csrf)
    link = browser.post("/api/tenants/acme/chat-links", {"user_id": "alice"}, "application/json", **csrf)

    assert [command["name"] for command in commands.json()] == ["greet"]
    for refused in (changed, deleted, link, browser.get("/api/tenants/acme"), browser.get("/api/models")):
        assert "needs an API key" in error_of(refused, 403)["message"]
    assert Skill.objects.get().enabled


@pytest.mark.parametrize("kind", ["tampered", "expired", "garbage"])
def test_a_bad_link_is_refused_with_a_clear_page(api_client: APIClient, conversation: Conversation, kind: str) -> None:
    url = chat_link(api_client).removeprefix("http://testserver")
    if kind == "tampered":
        url = url[:-3] + ("aaa" if not url.endswith("aaa") else "bbb")
    elif kind == "expired":
        with mock.patch("django.core.signing.time.time", return_value=time.time() - 120):
            url = "/chat/open/" + make_link_token(ChatGrant("acme", "alice"), 60)  # valid for 60 s, 120 s ago
    else:
        url = "/chat/open/not-a-link"

    response = Client().get(url)

    assert response.status_code == 403
    assert b"expired or is not valid" in response.content
    assert Client().get("/chat/").status_code == 401


def test_a_link_for_one_conversation_cannot_name_another_users(
    api_client: APIClient, conversation: Conversation
) -> None:
    bobs = Conversation.objects.create(tenant=conversation.tenant, model=conversation.model, user_id="bob")

    response = api_client.post(
        "/api/tenants/acme/chat-links", {"user_id": "alice", "conversation": str(bobs.pk)}, format="json"
    )
    forged = Client().get("/chat/open/" + make_link_token(ChatGrant("acme", "alice", str(bobs.pk)), 600))

    assert "conversation" in error_of(response, 400)["fields"]
    assert forged.status_code == 404


def test_another_tenants_key_cannot_make_links_here(other_api_client: APIClient, tenant: object) -> None:
    response = other_api_client.post("/api/tenants/acme/chat-links", {"user_id": "mallory"}, format="json")

    assert error_of(response, 404)


def test_staff_open_any_tenants_chat_and_others_are_sent_to_log_in(
    admin_client: Client, other_conversation: Conversation
) -> None:
    opened_by_staff = admin_client.get("/chat/staff/globex")
    page = admin_client.get("/chat/")
    anonymous = Client().get("/chat/staff/globex")

    assert opened_by_staff.status_code == 302 and opened_by_staff["Location"] == "/chat/"
    assert page.status_code == 200 and b'data-tenant="globex"' in page.content and b"staff:admin" in page.content
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")


def test_the_session_reads_its_users_budget_and_no_other(api_client: APIClient, conversation: Conversation) -> None:
    tenant = conversation.tenant
    tenant.user_daily_budget_calls = 10
    tenant.save()
    browser = opened(chat_link(api_client))
    browser.get("/chat/")
    csrf = {"HTTP_X_CSRFTOKEN": browser.cookies["csrftoken"].value}

    own = browser.get("/api/tenants/acme/budgets/users/alice")
    raised = browser.put("/api/tenants/acme/budgets/users/alice", {"daily_calls": 1000}, "application/json", **csrf)

    assert own.status_code == 200 and own.json()["day"]["remaining_calls"] == 10
    assert error_of(browser.get("/api/tenants/acme/budgets/users/bob"), 404)
    assert "needs an API key" in error_of(browser.get("/api/tenants/acme/budgets"), 403)["message"]
    assert "needs an API key" in error_of(raised, 403)["message"]


def test_the_page_says_not_sandboxed_in_the_development_mode(
    api_client: APIClient, conversation: Conversation, settings: Settings
) -> None:
    settings.SANDBOX_RUNNER = "bubblewrap"
    sandboxed = opened(chat_link(api_client)).get("/chat/").content.decode()
    settings.SANDBOX_RUNNER = "unsandboxed"
    unsandboxed = opened(chat_link(api_client)).get("/chat/").content.decode()

    assert re.search(r'id="unsandboxed"[^>]*hidden>NOT SANDBOXED', sandboxed)
    assert re.search(r'id="unsandboxed"[^>]*"\s*>NOT SANDBOXED', unsandboxed)
