"""The conversation API's happy paths: create, list, change, message, interrupt, read events, stream tokens."""

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from django.test import Client
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

from conversations.events import append_events
from conversations.models import Conversation, Event, Run
from conversations.serializers import ConversationUpdateSerializer
from runs.lease import claim_run
from runs.services import RunOptions, start_run
from tenants.auth import read_stream_token
from tenants.models import ApiKey, LanguageModel, Tenant
from tests.api.assertions import error_of
from tests.conftest import client_with_key

CONVERSATIONS = "/api/tenants/acme/conversations"


def conversation_url(conversation: Conversation, suffix: str = "") -> str:
    return f"{CONVERSATIONS}/{conversation.pk}{suffix}"


@pytest.fixture
def make_conversation(tenant: Tenant) -> Callable[..., Conversation]:
    def make(**fields: Any) -> Conversation:
        return Conversation.objects.create(tenant=tenant, model=tenant.default_model, **fields)

    return make


@pytest.fixture
def sonnet(db: None) -> LanguageModel:
    return LanguageModel.objects.create(
        id="sonnet", display_name="Claude Sonnet", provider="anthropic", provider_model_id="claude-sonnet-4-5"
    )


# --- create -------------------------------------------------------------------------------------------


def test_creating_a_conversation_uses_the_tenants_default_model_and_the_header_user(
    tenant_key: str, tenant: Tenant, sonnet: LanguageModel
) -> None:
    Tenant.objects.filter(pk="acme").update(default_model=sonnet)
    carol = client_with_key(tenant_key, user_id="carol")

    response = carol.post(CONVERSATIONS, {"title": "Refund"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert (body["tenant"], body["model"], body["user_id"], body["title"]) == ("acme", "sonnet", "carol", "Refund")
    assert (body["status"], body["active_run"], body["last_seq"]) == ("active", None, 0)
    assert Conversation.objects.get(pk=body["id"]).user_id == "carol"


def test_creating_a_conversation_with_an_empty_body_takes_every_default(api_client: APIClient, tenant: Tenant) -> None:
    response = api_client.post(CONVERSATIONS, {}, format="json")

    body = response.json()
    assert response.status_code == 201
    assert (body["model"], body["user_id"], body["title"]) == ("offline", "", "")


def test_creating_a_conversation_with_a_named_model_uses_it(api_client: APIClient, sonnet: LanguageModel) -> None:
    response = api_client.post(CONVERSATIONS, {"model": "sonnet"}, format="json")

    assert response.json()["model"] == "sonnet"


def test_the_user_may_come_from_the_body_when_no_header_is_sent(api_client: APIClient, tenant: Tenant) -> None:
    response = api_client.post(CONVERSATIONS, {"user_id": "dave"}, format="json")

    assert response.json()["user_id"] == "dave"


def test_a_body_user_equal_to_the_header_is_accepted(tenant_key: str, tenant: Tenant) -> None:
    carol = client_with_key(tenant_key, user_id="carol")

    response = carol.post(CONVERSATIONS, {"user_id": "carol"}, format="json")

    assert response.json()["user_id"] == "carol"


def test_a_body_user_conflicting_with_the_header_is_400(tenant_key: str, tenant: Tenant) -> None:
    carol = client_with_key(tenant_key, user_id="carol")

    response = carol.post(CONVERSATIONS, {"user_id": "mallory"}, format="json")

    assert "user_id" in error_of(response, 400)["fields"]
    assert not Conversation.objects.exists()


def test_an_inactive_tenant_cannot_start_conversations(api_client: APIClient, tenant: Tenant) -> None:
    Tenant.objects.filter(pk="acme").update(status=Tenant.Status.INACTIVE)

    response = api_client.post(CONVERSATIONS, {}, format="json")

    assert error_of(response, 409)["code"] == "tenant_inactive"


# --- list ---------------------------------------------------------------------------------------------


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


def test_the_list_is_newest_first(api_client: APIClient, make_conversation: Callable[..., Conversation]) -> None:
    first, second = make_conversation(), make_conversation()

    response = api_client.get(CONVERSATIONS)

    assert ids(response) == [str(second.pk), str(first.pk)]


def test_the_list_filters_by_user_and_status(
    api_client: APIClient, make_conversation: Callable[..., Conversation]
) -> None:
    alices = make_conversation(user_id="alice")
    alices_archived = make_conversation(user_id="alice", status=Conversation.Status.ARCHIVED)
    make_conversation(user_id="bob")

    by_user = api_client.get(f"{CONVERSATIONS}?user_id=alice")
    by_status = api_client.get(f"{CONVERSATIONS}?status=archived")
    by_both = api_client.get(f"{CONVERSATIONS}?user_id=alice&status=active")

    assert set(ids(by_user)) == {str(alices.pk), str(alices_archived.pk)}
    assert ids(by_status) == [str(alices_archived.pk)]
    assert ids(by_both) == [str(alices.pk)]


def test_the_list_filters_by_creation_time(
    api_client: APIClient, make_conversation: Callable[..., Conversation]
) -> None:
    january, february, march = make_conversation(), make_conversation(), make_conversation()
    for conversation, month in ((january, 1), (february, 2), (march, 3)):
        Conversation.objects.filter(pk=conversation.pk).update(created_at=datetime(2026, month, 15, tzinfo=UTC))

    after = api_client.get(f"{CONVERSATIONS}?created_after=2026-02-01T00:00:00Z")
    before = api_client.get(f"{CONVERSATIONS}?created_before=2026-02-15T00:00:00Z")
    between = api_client.get(f"{CONVERSATIONS}?created_after=2026-02-01T00:00:00Z&created_before=2026-03-01T00:00:00Z")

    assert ids(after) == [str(march.pk), str(february.pk)]
    # created_before is exclusive: February's conversation, created at that very instant, is not before it.
    assert ids(before) == [str(january.pk)]
    assert ids(between) == [str(february.pk)]


def test_the_list_is_paginated_by_limit_and_offset(
    api_client: APIClient, make_conversation: Callable[..., Conversation]
) -> None:
    conversations = [make_conversation(title=f"#{i}") for i in range(5)]
    newest_first = [str(c.pk) for c in reversed(conversations)]

    first_page = api_client.get(f"{CONVERSATIONS}?limit=2").json()
    last_page = api_client.get(f"{CONVERSATIONS}?limit=2&offset=4").json()

    assert first_page["count"] == 5
    assert [item["id"] for item in first_page["results"]] == newest_first[:2]
    assert first_page["next"].endswith("limit=2&offset=2")
    assert first_page["previous"] is None
    assert [item["id"] for item in last_page["results"]] == newest_first[4:]
    assert last_page["next"] is None


@pytest.mark.parametrize("how_many", [1, 20])
def test_the_list_takes_the_same_queries_however_many_conversations(
    api_client: APIClient,
    make_conversation: Callable[..., Conversation],
    django_assert_num_queries: Any,
    how_many: int,
) -> None:
    for i in range(how_many):
        conversation = make_conversation(user_id="alice")
        start_run(conversation, RunOptions(f"Message {i}"))
    api_client.get(CONVERSATIONS)  # records the key's first use, which is a write, once a minute

    # the key, the tenant, the count and the page
    with django_assert_num_queries(4):
        response = api_client.get(CONVERSATIONS)

    assert len(ids(response)) == how_many


# --- change, archive, delete --------------------------------------------------------------------------


def test_patch_changes_the_title_and_status(api_client: APIClient, conversation: Conversation) -> None:
    response = api_client.patch(
        conversation_url(conversation), {"title": "Renamed", "status": "archived"}, format="json"
    )

    assert response.status_code == 200
    assert (response.json()["title"], response.json()["status"]) == ("Renamed", "archived")
    conversation.refresh_from_db()
    assert (conversation.title, conversation.status) == ("Renamed", "archived")


def test_patch_keeps_what_the_conversations_run_changed_meanwhile(conversation: Conversation, running_run: Run) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(title="")
    conversation.refresh_from_db()
    body = ConversationUpdateSerializer(conversation, data={"skills": []}, partial=True)  # a PATCH has read it
    body.is_valid(raise_exception=True)
    append_events(conversation.pk, running_run.pk, [("run.started", {}), ("message.delta", {"text": "Hi"})])
    Conversation.objects.filter(pk=conversation.pk).update(
        title="Quarterly report", context_usage={"total_tokens": 2423}
    )

    body.save()

    conversation.refresh_from_db()
    assert conversation.skills == []
    assert (conversation.last_seq, conversation.active_run_id) == (3, running_run.pk)
    assert (conversation.title, conversation.context_usage) == ("Quarterly report", {"total_tokens": 2423})
    stored = append_events(conversation.pk, running_run.pk, [("message.delta", {"text": " there"})])
    assert [event.seq for event in stored] == [4]


def test_patch_can_unarchive(api_client: APIClient, conversation: Conversation) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(status=Conversation.Status.ARCHIVED)

    response = api_client.patch(conversation_url(conversation), {"status": "active"}, format="json")

    assert response.json()["status"] == "active"


def test_archive_archives_the_conversation(api_client: APIClient, conversation: Conversation) -> None:
    response = api_client.post(conversation_url(conversation, "/archive"))

    assert response.status_code == 200
    assert response.json()["status"] == "archived"
    assert Conversation.objects.get(pk=conversation.pk).is_archived


def test_delete_removes_the_conversation_with_its_runs_and_events(
    api_client: APIClient, conversation: Conversation
) -> None:
    run = start_run(conversation, RunOptions("Hello"))
    api_client.post(conversation_url(conversation, "/interrupt"))

    response = api_client.delete(conversation_url(conversation))

    assert response.status_code == 204
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert not Run.objects.filter(pk=run.pk).exists()
    assert not Event.objects.filter(run_id=run.pk).exists()


def test_delete_with_an_active_run_is_409(api_client: APIClient, conversation: Conversation) -> None:
    start_run(conversation, RunOptions("Hello"))

    response = api_client.delete(conversation_url(conversation))

    assert error_of(response, 409)["code"] == "run_in_progress"
    assert Conversation.objects.filter(pk=conversation.pk).exists()


# --- messages and runs --------------------------------------------------------------------------------


def test_a_message_is_accepted_with_a_queued_run_and_a_first_event(tenant_key: str, conversation: Conversation) -> None:
    alice = client_with_key(tenant_key, user_id="alice")

    response = alice.post(conversation_url(conversation, "/messages"), {"text": "What is 2+2?"}, format="json")

    assert response.status_code == 202
    run = response.json()
    assert (run["status"], run["input"], run["user_id"], run["model"]) == ("queued", "What is 2+2?", "alice", "offline")
    assert run["conversation"] == str(conversation.pk)
    assert (run["disposition"], run["message_id"], run["behind"], run["queue_position"]) == (
        "started",
        run["id"],
        None,
        None,
    )
    (event,) = Event.objects.filter(conversation=conversation)
    assert (event.seq, event.type, str(event.run_id)) == (1, "run.queued", run["id"])
    assert event.data == {
        "input": "What is 2+2?",
        "text": "What is 2+2?",
        "attachments": [],
        "user_id": "alice",
        "agent": {"name": "default", "version": 2, "kind": "agent"},
        "model": "offline",
        "budget": {"usd": None, "calls": None},
        "skills": None,
        "preferred_skills": [],
        "mcp_servers": None,
        "mcp_tokens": [],
        "disposition": "started",
        "behind": None,
        "position": None,
    }
    assert str(Conversation.objects.get(pk=conversation.pk).active_run_id) == run["id"]


def test_a_message_keeps_its_whitespace(api_client: APIClient, conversation: Conversation) -> None:
    response = api_client.post(conversation_url(conversation, "/messages"), {"text": "  indented\n"}, format="json")

    assert response.json()["input"] == "  indented\n"


def test_a_message_without_a_user_header_is_attributed_to_the_conversations_user(
    api_client: APIClient, conversation: Conversation
) -> None:
    response = api_client.post(conversation_url(conversation, "/messages"), {"text": "Hi"}, format="json")

    assert response.json()["user_id"] == "alice"


def test_runs_are_listed_newest_first_and_readable_one_by_one(
    api_client: APIClient, conversation: Conversation
) -> None:
    first = start_run(conversation, RunOptions("One"))
    api_client.post(conversation_url(conversation, "/interrupt"))
    second = start_run(conversation, RunOptions("Two"))

    listing = api_client.get(conversation_url(conversation, "/runs"))
    detail = api_client.get(conversation_url(conversation, f"/runs/{first.pk}"))

    assert [run["id"] for run in listing.json()["results"]] == [str(second.pk), str(first.pk)]
    assert (detail.json()["id"], detail.json()["status"]) == (str(first.pk), "interrupted")


def test_interrupting_a_queued_run_ends_it_with_exactly_one_terminal_event(
    api_client: APIClient, conversation: Conversation
) -> None:
    run = start_run(conversation, RunOptions("Hello"))

    response = api_client.post(conversation_url(conversation, "/interrupt"))

    assert response.status_code == 202
    assert (response.json()["id"], response.json()["status"]) == (str(run.pk), "interrupted")
    run.refresh_from_db()
    assert run.status == Run.Status.INTERRUPTED and run.finished_at is not None
    assert list(run.events.order_by("seq").values_list("seq", "type")) == [(1, "run.queued"), (2, "run.interrupted")]
    assert Conversation.objects.get(pk=conversation.pk).active_run_id is None


def test_interrupting_a_running_run_asks_its_worker_to_stop(api_client: APIClient, conversation: Conversation) -> None:
    run = start_run(conversation, RunOptions("Hello"))
    claim_run(run.pk)

    response = api_client.post(conversation_url(conversation, "/interrupt"))

    assert response.status_code == 202
    assert response.json()["status"] == "running"
    assert response.json()["interrupt_requested_at"] is not None
    # The worker writes the terminal event when it stops; until then the run keeps its lease.
    assert not run.events.filter(type="run.interrupted").exists()
    assert Conversation.objects.get(pk=conversation.pk).active_run_id == run.pk


def test_interrupting_twice_is_409_and_adds_no_second_terminal_event(
    api_client: APIClient, conversation: Conversation
) -> None:
    run = start_run(conversation, RunOptions("Hello"))
    api_client.post(conversation_url(conversation, "/interrupt"))

    response = api_client.post(conversation_url(conversation, "/interrupt"))

    assert error_of(response, 409)["code"] == "no_active_run"
    assert run.events.filter(type="run.interrupted").count() == 1


def test_interrupting_with_no_active_run_is_409(api_client: APIClient, conversation: Conversation) -> None:
    response = api_client.post(conversation_url(conversation, "/interrupt"))

    assert error_of(response, 409)["code"] == "no_active_run"


def test_after_an_interrupt_the_next_message_starts_a_new_run(
    api_client: APIClient, conversation: Conversation
) -> None:
    start_run(conversation, RunOptions("First"))
    api_client.post(conversation_url(conversation, "/interrupt"))

    response = api_client.post(conversation_url(conversation, "/messages"), {"text": "Second"}, format="json")

    assert response.status_code == 202
    assert list(Event.objects.filter(conversation=conversation).values_list("seq", "type")) == [
        (1, "run.queued"),
        (2, "run.interrupted"),
        (3, "run.queued"),
    ]


# --- events -------------------------------------------------------------------------------------------


@pytest.fixture
def five_events(conversation: Conversation) -> list[Event]:
    run = start_run(conversation, RunOptions("Count to four"))
    return [
        Event.objects.get(run=run),
        *append_events(conversation.pk, run.pk, [("message.delta", {"n": n}) for n in range(1, 5)]),
    ]


def event_page(client: APIClient, conversation: Conversation, query: str = "") -> dict[str, Any]:
    response = client.get(conversation_url(conversation, f"/events{query}"))
    assert response.status_code == 200, response.content
    return response.json()


def test_events_are_read_in_pages_by_seq(
    api_client: APIClient, conversation: Conversation, five_events: list[Event]
) -> None:
    first = event_page(api_client, conversation, "?limit=2")
    second = event_page(api_client, conversation, f"?after={first['next_after']}&limit=2")
    third = event_page(api_client, conversation, f"?after={second['next_after']}&limit=2")
    beyond = event_page(api_client, conversation, f"?after={third['next_after']}")

    assert [e["seq"] for e in first["events"]] == [1, 2] and first["has_more"] and first["next_after"] == 2
    assert [e["seq"] for e in second["events"]] == [3, 4] and second["has_more"] and second["next_after"] == 4
    assert [e["seq"] for e in third["events"]] == [5] and not third["has_more"] and third["next_after"] == 5
    assert beyond["events"] == [] and not beyond["has_more"] and beyond["next_after"] == 5
    assert first["last_seq"] == beyond["last_seq"] == 5


def test_a_page_that_ends_exactly_at_the_last_event_has_no_more(
    api_client: APIClient, conversation: Conversation, five_events: list[Event]
) -> None:
    page = event_page(api_client, conversation, "?after=3&limit=2")

    assert [e["seq"] for e in page["events"]] == [4, 5]
    assert not page["has_more"]


def test_events_use_the_envelope(api_client: APIClient, conversation: Conversation, five_events: list[Event]) -> None:
    page = event_page(api_client, conversation, "?limit=1")

    (envelope,) = page["events"]
    assert envelope == five_events[0].as_envelope()
    assert set(envelope) == {"seq", "type", "run_id", "at", "data"}
    assert envelope["at"].endswith("Z")


# --- stream tokens ------------------------------------------------------------------------------------


def test_a_stream_token_opens_the_conversations_websocket(tenant_key: str, conversation: Conversation) -> None:
    alice = client_with_key(tenant_key, user_id="alice")

    response = alice.post(conversation_url(conversation, "/stream-token"))

    assert response.status_code == 201
    body = response.json()
    assert body["expires_in"] > 0
    assert body["websocket_path"] == f"/ws/tenants/acme/conversations/{conversation.pk}/?token={body['token']}"
    key = ApiKey.objects.get(tenant_id="acme")
    # The key's id (never its secret): the socket's approvals and answers name the key, as its REST requests do.
    assert read_stream_token(body["token"]) == {"c": str(conversation.pk), "t": "acme", "u": "alice", "k": str(key.pk)}


# --- the schema and its docs --------------------------------------------------------------------------


def test_the_openapi_schema_is_served_and_valid(db: None) -> None:
    response = Client().get("/api/schema/")

    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    validate_schema(schema)
    conversation_paths = [path for path in schema["paths"] if path.startswith("/api/tenants/{tenant}/conversations")]
    assert len(conversation_paths) >= 9


def test_the_schema_documents_the_api_key_and_the_list_filters(db: None) -> None:
    schema = yaml.safe_load(Client().get("/api/schema/").content)

    schemes = schema["components"]["securitySchemes"]
    assert set(schemes) == {"ApiKey", "ChatSession"}
    scheme, session = schemes["ApiKey"], schemes["ChatSession"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-API-Key")
    assert (session["type"], session["in"], session["name"]) == ("apiKey", "cookie", "sessionid")
    list_operation = schema["paths"]["/api/tenants/{tenant}/conversations/"]["get"]
    parameters = {parameter["name"] for parameter in list_operation["parameters"]}
    assert {"user_id", "status", "created_after", "created_before", "limit", "offset"} <= parameters


def test_the_api_docs_page_is_served(db: None) -> None:
    response = Client().get("/api/docs/")

    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
