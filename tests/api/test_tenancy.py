"""Tenancy from the outside: another tenant's (or end user's) objects answer exactly like missing ones."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID, uuid4

import pytest
from django.http import HttpResponse
from django.test import Client
from rest_framework.test import APIClient

from conversations.models import Conversation, Run
from runs.services import RunOptions, start_run
from tenants.models import ApiKey, LanguageModel, Tenant
from tests.api.assertions import error_of, row_counts
from tests.conftest import client_with_key

Endpoint = tuple[str, str, dict[str, Any] | None]

# Every endpoint that acts on one conversation: (method, path after the conversation, JSON body).
CONVERSATION_ENDPOINTS: list[Endpoint] = [
    ("get", "", None),
    ("patch", "", {"title": "Taken over"}),
    ("delete", "", None),
    ("post", "/archive", None),
    ("post", "/messages", {"text": "Hello from outside"}),
    ("post", "/interrupt", None),
    ("get", "/runs", None),
    ("get", "/runs/{run}", None),
    ("get", "/events", None),
    ("get", "/events/stream", None),
    ("post", "/stream", {"text": "Hello from outside"}),
    ("post", "/stream-token", None),
]
ENDPOINT_IDS = [f"{method} {suffix or '/'}" for method, suffix, _ in CONVERSATION_ENDPOINTS]


def call(client: Client, endpoint: Endpoint, tenant_id: str, conversation_id: UUID, run_id: UUID) -> HttpResponse:
    method, suffix, body = endpoint
    path = f"/api/tenants/{tenant_id}/conversations/{conversation_id}{suffix.format(run=run_id)}"
    if method == "get":
        return client.get(path)
    return getattr(client, method)(path, body, format="json")


@contextmanager
def untouched(conversation: Conversation) -> Iterator[None]:
    """Asserts that the block changed nothing: no rows created, the conversation and its runs as they were."""
    before = (row_counts(), Conversation.objects.values().get(pk=conversation.pk), list(conversation.runs.values()))
    yield
    after = (row_counts(), Conversation.objects.values().get(pk=conversation.pk), list(conversation.runs.values()))
    assert after == before


@pytest.fixture
def my_run(conversation: Conversation) -> Run:
    """A queued run in acme's conversation (on_commit never fires here, so no agent starts)."""
    return start_run(conversation, RunOptions("Hello"))


@pytest.fixture
def their_run(other_conversation: Conversation) -> Run:
    return start_run(other_conversation, RunOptions("Hello"))


# --- conversations: another tenant ------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", CONVERSATION_ENDPOINTS, ids=ENDPOINT_IDS)
def test_another_tenants_key_gets_the_same_404_as_for_a_missing_conversation(
    endpoint: Endpoint, other_api_client: APIClient, conversation: Conversation, my_run: Run
) -> None:
    missing = call(other_api_client, endpoint, "globex", uuid4(), uuid4())

    with untouched(conversation):
        under_their_tenant = call(other_api_client, endpoint, "globex", conversation.pk, my_run.pk)
        under_my_tenant = call(other_api_client, endpoint, "acme", conversation.pk, my_run.pk)

    assert error_of(missing, 404) == error_of(under_their_tenant, 404) == error_of(under_my_tenant, 404)


@pytest.mark.parametrize("endpoint", CONVERSATION_ENDPOINTS, ids=ENDPOINT_IDS)
def test_my_key_on_another_tenants_url_is_404(
    endpoint: Endpoint, api_client: APIClient, other_conversation: Conversation, their_run: Run
) -> None:
    missing = call(api_client, endpoint, "acme", uuid4(), uuid4())

    with untouched(other_conversation):
        response = call(api_client, endpoint, "globex", other_conversation.pk, their_run.pk)

    assert error_of(response, 404) == error_of(missing, 404)


@pytest.mark.parametrize("endpoint", CONVERSATION_ENDPOINTS, ids=ENDPOINT_IDS)
def test_another_tenants_conversation_named_under_my_url_is_404(
    endpoint: Endpoint, api_client: APIClient, other_conversation: Conversation, their_run: Run
) -> None:
    missing = call(api_client, endpoint, "acme", uuid4(), uuid4())

    with untouched(other_conversation):
        response = call(api_client, endpoint, "acme", other_conversation.pk, their_run.pk)

    assert error_of(response, 404) == error_of(missing, 404)


def test_another_conversations_run_named_under_my_conversation_is_404(
    api_client: APIClient, conversation: Conversation, their_run: Run
) -> None:
    response = api_client.get(f"/api/tenants/acme/conversations/{conversation.pk}/runs/{their_run.pk}")

    error_of(response, 404)


def test_another_tenants_conversations_are_absent_from_my_list(
    api_client: APIClient, conversation: Conversation, other_conversation: Conversation
) -> None:
    response = api_client.get("/api/tenants/acme/conversations")

    assert response.status_code == 200
    assert [item["id"] for item in response.json()["results"]] == [str(conversation.pk)]


def test_listing_another_tenants_conversations_is_404(api_client: APIClient, other_conversation: Conversation) -> None:
    response = api_client.get("/api/tenants/globex/conversations")

    assert error_of(response, 404)["code"] == "not_found"


def test_creating_a_conversation_under_another_tenant_is_404_and_creates_nothing(
    api_client: APIClient, other_tenant: Tenant
) -> None:
    before = row_counts()

    response = api_client.post("/api/tenants/globex/conversations", {"title": "Mine now"}, format="json")

    error_of(response, 404)
    assert row_counts() == before


def test_a_missing_tenant_in_the_url_is_404_like_another_tenant(api_client: APIClient, other_tenant: Tenant) -> None:
    missing = api_client.get("/api/tenants/initech/conversations")

    other = api_client.get("/api/tenants/globex/conversations")

    assert error_of(missing, 404) == error_of(other, 404)


def test_admin_key_reaches_any_tenants_conversations(
    admin_api_client: APIClient, conversation: Conversation, other_conversation: Conversation
) -> None:
    acme = admin_api_client.get("/api/tenants/acme/conversations")
    globex = admin_api_client.get(f"/api/tenants/globex/conversations/{other_conversation.pk}")

    assert [item["id"] for item in acme.json()["results"]] == [str(conversation.pk)]
    assert globex.status_code == 200


# --- conversations: another end user (X-User-ID) ------------------------------------------------------


@pytest.mark.parametrize("endpoint", CONVERSATION_ENDPOINTS, ids=ENDPOINT_IDS)
def test_another_end_users_conversation_is_404(
    endpoint: Endpoint, tenant_key: str, conversation: Conversation, my_run: Run
) -> None:
    bob = client_with_key(tenant_key, user_id="bob")
    missing = call(bob, endpoint, "acme", uuid4(), uuid4())

    with untouched(conversation):
        response = call(bob, endpoint, "acme", conversation.pk, my_run.pk)

    assert error_of(response, 404) == error_of(missing, 404)


def test_end_users_list_only_their_own_conversations(
    tenant_key: str, conversation: Conversation, tenant: Tenant
) -> None:
    bobs = Conversation.objects.create(tenant=tenant, model=tenant.default_model, user_id="bob")
    alice, bob = client_with_key(tenant_key, user_id="alice"), client_with_key(tenant_key, user_id="bob")

    alices_list = alice.get("/api/tenants/acme/conversations").json()["results"]
    bobs_list = bob.get("/api/tenants/acme/conversations").json()["results"]

    assert [item["id"] for item in alices_list] == [str(conversation.pk)]
    assert [item["id"] for item in bobs_list] == [str(bobs.pk)]


def test_the_end_user_who_owns_a_conversation_reaches_it(tenant_key: str, conversation: Conversation) -> None:
    alice = client_with_key(tenant_key, user_id="alice")

    response = alice.get(f"/api/tenants/acme/conversations/{conversation.pk}")

    assert response.status_code == 200
    assert response.json()["user_id"] == "alice"


# --- the model catalog and tenants --------------------------------------------------------------------


def test_tenant_key_can_read_the_model_catalog(api_client: APIClient, offline_model: LanguageModel) -> None:
    listing = api_client.get("/api/models")
    detail = api_client.get("/api/models/offline")

    assert listing.status_code == 200
    assert [item["id"] for item in listing.json()["results"]] == ["offline"]
    assert detail.json()["provider"] == "offline"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "post",
            "/api/models",
            {"id": "sonnet", "display_name": "Sonnet", "provider": "anthropic", "provider_model_id": "x"},
        ),
        ("patch", "/api/models/offline", {"display_name": "Renamed"}),
        (
            "put",
            "/api/models/offline",
            {"id": "offline", "display_name": "Renamed", "provider": "offline", "provider_model_id": "x"},
        ),
        ("delete", "/api/models/offline", None),
    ],
    ids=["create", "patch", "put", "delete"],
)
def test_tenant_key_cannot_change_the_model_catalog(
    api_client: APIClient, offline_model: LanguageModel, method: str, path: str, body: dict[str, Any] | None
) -> None:
    before = LanguageModel.objects.values().get(pk="offline")

    response = getattr(api_client, method)(path, body, format="json")

    assert error_of(response, 403)["code"] == "permission_denied"
    assert list(LanguageModel.objects.values()) == [before]


def test_tenant_key_sees_only_its_own_tenant(api_client: APIClient, tenant: Tenant, other_tenant: Tenant) -> None:
    response = api_client.get("/api/tenants")

    assert [item["id"] for item in response.json()["results"]] == ["acme"]


def test_tenant_key_gets_404_for_another_tenant(api_client: APIClient, tenant: Tenant, other_tenant: Tenant) -> None:
    other = api_client.get("/api/tenants/globex")
    missing = api_client.get("/api/tenants/initech")

    assert error_of(other, 404) == error_of(missing, 404)


def test_tenant_key_reads_its_own_tenant(api_client: APIClient, tenant: Tenant) -> None:
    response = api_client.get("/api/tenants/acme")

    assert response.status_code == 200
    assert response.json()["default_model"] == "offline"


@pytest.mark.parametrize(("method", "body"), [("patch", {"name": "Mine"}), ("delete", None)], ids=["patch", "delete"])
def test_tenant_key_cannot_change_its_own_tenant(
    api_client: APIClient, tenant: Tenant, method: str, body: dict[str, Any] | None
) -> None:
    response = getattr(api_client, method)("/api/tenants/acme", body, format="json")

    error_of(response, 403)
    assert Tenant.objects.get(pk="acme").name == "Acme"


def test_tenant_key_cannot_create_a_tenant(api_client: APIClient, tenant: Tenant) -> None:
    response = api_client.post(
        "/api/tenants", {"id": "initech", "name": "Initech", "default_model": "offline"}, format="json"
    )

    error_of(response, 403)
    assert not Tenant.objects.filter(pk="initech").exists()


def test_admin_key_manages_the_model_catalog(admin_api_client: APIClient, offline_model: LanguageModel) -> None:
    created = admin_api_client.post(
        "/api/models",
        {
            "id": "sonnet",
            "display_name": "Claude Sonnet",
            "provider": "anthropic",
            "provider_model_id": "claude-sonnet-4-5",
            "input_price": "3",
            "output_price": "15",
        },
        format="json",
    )
    read = admin_api_client.get("/api/models/sonnet")
    updated = admin_api_client.patch("/api/models/sonnet", {"status": "deprecated"}, format="json")
    deleted = admin_api_client.delete("/api/models/sonnet")

    assert created.status_code == 201
    assert read.json()["provider_model_id"] == "claude-sonnet-4-5"
    assert updated.json()["status"] == "deprecated"
    assert deleted.status_code == 204
    assert not LanguageModel.objects.filter(pk="sonnet").exists()


def test_admin_key_manages_tenants(admin_api_client: APIClient, tenant: Tenant, other_tenant: Tenant) -> None:
    created = admin_api_client.post(
        "/api/tenants", {"id": "initech", "name": "Initech", "default_model": "offline"}, format="json"
    )
    listing = admin_api_client.get("/api/tenants")
    updated = admin_api_client.patch("/api/tenants/initech", {"name": "Initech Corp."}, format="json")
    deleted = admin_api_client.delete("/api/tenants/initech")

    assert created.status_code == 201
    assert [item["id"] for item in listing.json()["results"]] == ["acme", "globex", "initech"]
    assert updated.json()["name"] == "Initech Corp."
    assert deleted.status_code == 204
    assert not Tenant.objects.filter(pk="initech").exists()


# --- authentication -----------------------------------------------------------------------------------


def unauthenticated_paths(conversation: Conversation) -> list[tuple[str, str]]:
    base = f"/api/tenants/acme/conversations/{conversation.pk}"
    return [
        ("get", "/api/models"),
        ("get", "/api/tenants"),
        ("get", "/api/tenants/acme/conversations"),
        ("post", f"{base}/messages"),
        ("get", f"{base}/events/stream"),
        ("post", f"{base}/stream"),
    ]


def test_a_request_without_a_key_is_401(conversation: Conversation) -> None:
    anonymous = APIClient()

    responses = [getattr(anonymous, method)(path) for method, path in unauthenticated_paths(conversation)]

    assert [error_of(response, 401)["code"] for response in responses] == ["not_authenticated"] * len(responses)
    assert conversation.runs.count() == 0


def test_a_revoked_key_is_401(tenant_key: str, conversation: Conversation) -> None:
    ApiKey.objects.get(tenant_id="acme").revoke()
    revoked = client_with_key(tenant_key)

    responses = [getattr(revoked, method)(path) for method, path in unauthenticated_paths(conversation)]

    assert [error_of(response, 401)["code"] for response in responses] == ["authentication_failed"] * len(responses)
    assert conversation.runs.count() == 0


def test_an_unknown_key_is_401(conversation: Conversation) -> None:
    stranger = client_with_key("ak_not-a-key-anyone-was-given")

    response = stranger.get("/api/tenants/acme/conversations")

    assert error_of(response, 401)["code"] == "authentication_failed"


def test_a_bearer_token_works_like_x_api_key(tenant_key: str, conversation: Conversation) -> None:
    bearer = Client(headers={"Authorization": f"Bearer {tenant_key}"})

    listing = bearer.get("/api/tenants/acme/conversations")
    missing_stream = bearer.get(f"/api/tenants/acme/conversations/{uuid4()}/events/stream")

    assert [item["id"] for item in listing.json()["results"]] == [str(conversation.pk)]
    # Authenticated, so the stream answers "no such conversation" rather than 401.
    error_of(missing_stream, 404)


def test_another_authorization_scheme_is_not_a_key(tenant_key: str, conversation: Conversation) -> None:
    basic = Client(headers={"Authorization": f"Basic {tenant_key}"})

    response = basic.get("/api/tenants/acme/conversations")

    error_of(response, 401)
