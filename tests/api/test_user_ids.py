"""End users' ids: `X-User-ID` is read as the UTF-8 its client sent, on REST and SSE alike, and an id with
control characters is refused wherever one comes in (header, body, path) with a 400 that says what to fix."""

import pytest
from django.test import Client

from conversations.models import Conversation, Run
from tenants.models import Tenant
from tests.api.assertions import error_of, nothing_created

pytestmark = pytest.mark.django_db

CONTROL_PROBLEM = "A user id may not contain control characters (tabs, line breaks, NUL, escapes); send plain text."


def as_served(text: str) -> str:
    """A header value as Daphne (and any WSGI or ASGI server) hands it to Django: the UTF-8 bytes the
    client sent, each read as one latin-1 character."""
    return text.encode().decode("latin-1")


def client_as(tenant_key: str, user_id: str) -> Client:
    return Client(headers={"X-API-Key": tenant_key, "X-User-ID": user_id})


def test_a_utf8_user_id_names_the_same_user_as_in_a_body(tenant_key: str, tenant: Tenant) -> None:
    zoe = client_as(tenant_key, as_served("zoë"))

    created = zoe.post("/api/tenants/acme/conversations", {}, content_type="application/json")
    listed = zoe.get("/api/tenants/acme/conversations", {"user_id": "zoë"})

    assert created.status_code == 201, created.content
    assert created.json()["user_id"] == "zoë"
    assert Conversation.objects.get().user_id == "zoë"
    assert [c["user_id"] for c in listed.json()["results"]] == ["zoë"]


def test_the_event_stream_reads_the_utf8_user_id_too(tenant_key: str, tenant: Tenant, running_run: Run) -> None:
    Conversation.objects.filter(pk=running_run.conversation_id).update(user_id="zoë")
    path = f"/api/tenants/acme/conversations/{running_run.conversation_id}/stream"

    # zoë's conversation is found (and busy with its run); any other reading of the header would not find it.
    response = client_as(tenant_key, as_served("zoë")).post(path, {"text": "Hi"}, content_type="application/json")

    assert error_of(response, 409)["code"] == "run_in_progress"


@pytest.mark.parametrize("suffix", ["", "/stream"], ids=["rest", "sse"])
def test_a_user_id_that_is_not_utf8_is_400(tenant_key: str, conversation: Conversation, suffix: str) -> None:
    path = f"/api/tenants/acme/conversations/{conversation.pk}{suffix}"
    client = client_as(tenant_key, "zo\xeb")  # latin-1's ë: not UTF-8

    response = client.post(path, {"text": "Hi"}, content_type="application/json") if suffix else client.get(path)

    assert error_of(response, 400)["fields"] == {"X-User-ID": ["Send the user id as UTF-8 text."]}


@pytest.mark.parametrize("user_id", ["ali\tce", "ali\x1bce", "alice\x7f", "ali\x85ce"], ids=["tab", "esc", "del", "c1"])
@pytest.mark.parametrize("suffix", ["", "/stream"], ids=["rest", "sse"])
def test_a_user_id_header_with_control_characters_is_400(
    tenant_key: str, conversation: Conversation, suffix: str, user_id: str
) -> None:
    path = f"/api/tenants/acme/conversations/{conversation.pk}{suffix}"
    client = client_as(tenant_key, as_served(user_id))

    with nothing_created():
        response = client.post(path, {"text": "Hi"}, content_type="application/json") if suffix else client.get(path)

    assert error_of(response, 400)["fields"] == {"X-User-ID": [CONTROL_PROBLEM]}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/tenants/acme/conversations", {"user_id": "ali\nce"}),
        ("/api/tenants/acme/chat-links", {"user_id": "ali\x07ce"}),
    ],
    ids=["conversation", "chat link"],
)
def test_a_user_id_in_a_body_with_control_characters_is_400(
    tenant_key: str, tenant: Tenant, path: str, body: dict[str, str]
) -> None:
    with nothing_created():
        response = Client(headers={"X-API-Key": tenant_key}).post(path, body, content_type="application/json")

    assert error_of(response, 400)["fields"] == {"user_id": [CONTROL_PROBLEM]}


def test_a_budget_for_a_user_id_with_control_characters_is_400(tenant_key: str, tenant: Tenant) -> None:
    response = Client(headers={"X-API-Key": tenant_key}).put(
        "/api/tenants/acme/budgets/users/ali%0Ace", {"daily_usd": "1"}, content_type="application/json"
    )

    assert error_of(response, 400)["fields"] == {"user_id": [CONTROL_PROBLEM]}
