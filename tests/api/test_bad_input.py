"""Refused requests: a 4xx in the one error shape that says what to fix, and nothing half-created."""

from typing import Any
from uuid import uuid4

import pytest
from django.test import Client
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from agents.services import default_profile
from conversations.models import Conversation, Run
from runs.services import RunOptions, start_run
from tenants.models import LanguageModel, Tenant
from tests.api.assertions import error_of, nothing_created


def conversation_url(conversation: Conversation, suffix: str = "") -> str:
    return f"/api/tenants/{conversation.tenant_id}/conversations/{conversation.pk}{suffix}"


@pytest.fixture
def deprecated_model(db: None) -> LanguageModel:
    return LanguageModel.objects.create(
        id="claude-2", display_name="Claude 2", provider="anthropic", provider_model_id="claude-2", status="deprecated"
    )


# --- bodies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/messages", "/stream"], ids=["create", "messages", "stream"])
def test_malformed_json_is_400_with_a_message(api_client: APIClient, conversation: Conversation, suffix: str) -> None:
    path = conversation_url(conversation, suffix) if suffix else "/api/tenants/acme/conversations"

    with nothing_created():
        response = api_client.post(path, '{"text": "unterminated', content_type="application/json")

    error = error_of(response, 400)
    assert error["code"] == "parse_error"
    assert "JSON" in error["message"]


def test_malformed_json_in_a_patch_is_400_and_changes_nothing(
    api_client: APIClient, conversation: Conversation
) -> None:
    response = api_client.patch(conversation_url(conversation), "{title: 1}", content_type="application/json")

    assert error_of(response, 400)["code"] == "parse_error"
    assert Conversation.objects.get(pk=conversation.pk).title == "Hello"


@pytest.mark.parametrize(
    ("suffix", "body"),
    [
        ("", {"title": "Hi", "modle": "offline"}),
        ("/messages", {"text": "Hi", "stream": True}),
        ("/stream", {"text": "Hi", "stream": True}),
    ],
    ids=["create", "messages", "stream"],
)
def test_an_unknown_field_is_400_naming_it(
    api_client: APIClient, conversation: Conversation, suffix: str, body: dict[str, Any]
) -> None:
    path = conversation_url(conversation, suffix) if suffix else "/api/tenants/acme/conversations"
    unknown = next(name for name in body if name not in {"title", "text"})

    with nothing_created():
        response = api_client.post(path, body, format="json")

    error = error_of(response, 400)
    assert unknown in error["message"]
    assert unknown in error["fields"]


def test_an_unknown_field_in_a_patch_is_400_naming_it(api_client: APIClient, conversation: Conversation) -> None:
    response = api_client.patch(conversation_url(conversation), {"title": "New", "model": "offline"}, format="json")

    error = error_of(response, 400)
    assert "model" in error["fields"]
    assert Conversation.objects.get(pk=conversation.pk).title == "Hello"


@pytest.mark.parametrize("suffix", ["/messages", "/stream"])
def test_a_message_without_text_is_400(api_client: APIClient, conversation: Conversation, suffix: str) -> None:
    with nothing_created():
        response = api_client.post(conversation_url(conversation, suffix), {}, format="json")

    assert "text" in error_of(response, 400)["fields"]


@pytest.mark.parametrize("suffix", ["/messages", "/stream"])
@pytest.mark.parametrize("text", ["", "   \n\t "], ids=["empty", "whitespace"])
def test_an_empty_message_is_400(api_client: APIClient, conversation: Conversation, suffix: str, text: str) -> None:
    with nothing_created():
        response = api_client.post(conversation_url(conversation, suffix), {"text": text}, format="json")

    assert "text" in error_of(response, 400)["fields"]


@pytest.mark.parametrize("suffix", ["/messages", "/stream"])
def test_a_message_over_the_size_limit_is_400(
    api_client: APIClient, conversation: Conversation, settings: Settings, suffix: str
) -> None:
    settings.RUN_MAX_INPUT_CHARS = 10

    with nothing_created():
        response = api_client.post(conversation_url(conversation, suffix), {"text": "x" * 11}, format="json")

    error = error_of(response, 400)
    assert "11" in error["message"] and "10" in error["message"]


def test_a_message_at_the_size_limit_is_accepted(
    api_client: APIClient, conversation: Conversation, settings: Settings
) -> None:
    settings.RUN_MAX_INPUT_CHARS = 10

    response = api_client.post(conversation_url(conversation, "/messages"), {"text": "x" * 10}, format="json")

    assert response.status_code == 202


@pytest.mark.parametrize("body", [[{"text": "Hi"}], "Hi", None], ids=["list", "string", "null"])
def test_a_body_that_is_not_an_object_is_400(api_client: APIClient, conversation: Conversation, body: Any) -> None:
    with nothing_created():
        response = api_client.post(conversation_url(conversation, "/messages"), body, format="json")

    error_of(response, 400)


# --- choosing a model ---------------------------------------------------------------------------------


def test_an_unknown_model_is_400_listing_the_models_to_choose(api_client: APIClient, tenant: Tenant) -> None:
    with nothing_created():
        response = api_client.post("/api/tenants/acme/conversations", {"model": "gpt-4"}, format="json")

    error = error_of(response, 400)
    assert error["code"] == "unknown_model"
    assert "gpt-4" in error["message"]
    assert "Choose one of: offline" in error["message"]


def test_a_deprecated_model_is_400_asking_for_an_active_one(
    api_client: APIClient, tenant: Tenant, deprecated_model: LanguageModel
) -> None:
    with nothing_created():
        response = api_client.post("/api/tenants/acme/conversations", {"model": "claude-2"}, format="json")

    error = error_of(response, 400)
    assert error["code"] == "model_deprecated"
    assert "choose an active model" in error["message"]


def test_a_user_id_over_its_length_is_400(api_client: APIClient, tenant: Tenant) -> None:
    with nothing_created():
        response = api_client.post("/api/tenants/acme/conversations", {"user_id": "u" * 201}, format="json")

    assert "user_id" in error_of(response, 400)["fields"]


# --- conflicts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["/messages", "/stream"])
def test_a_message_to_an_archived_conversation_is_409(
    api_client: APIClient, conversation: Conversation, suffix: str
) -> None:
    Conversation.objects.filter(pk=conversation.pk).update(status=Conversation.Status.ARCHIVED)

    with nothing_created():
        response = api_client.post(conversation_url(conversation, suffix), {"text": "Hi"}, format="json")

    error = error_of(response, 409)
    assert error["code"] == "archived"
    assert "archived" in error["message"]


@pytest.mark.parametrize("suffix", ["/messages", "/stream"])
def test_a_second_message_while_a_run_is_active_is_409_naming_the_run(
    api_client: APIClient, conversation: Conversation, suffix: str
) -> None:
    active = start_run(conversation, RunOptions("First"))

    with nothing_created():
        response = api_client.post(conversation_url(conversation, suffix), {"text": "Second"}, format="json")

    error = error_of(response, 409)
    assert error["code"] == "run_in_progress"
    assert str(active.pk) in error["message"]
    assert Conversation.objects.get(pk=conversation.pk).active_run_id == active.pk


def test_a_message_in_a_conversation_whose_model_was_deprecated_is_409(
    api_client: APIClient, conversation: Conversation
) -> None:
    LanguageModel.objects.filter(pk="offline").update(status="deprecated")

    with nothing_created():
        response = api_client.post(conversation_url(conversation, "/messages"), {"text": "Hi"}, format="json")

    assert error_of(response, 409)["code"] == "model_deprecated"


def test_deleting_a_model_in_use_is_409(admin_api_client: APIClient, conversation: Conversation) -> None:
    response = admin_api_client.delete("/api/models/offline")

    error = error_of(response, 409)
    assert error["code"] == "in_use"
    assert "conversations" in error["message"] and "tenants" in error["message"]
    assert LanguageModel.objects.filter(pk="offline").exists()


def test_deleting_a_conversation_with_an_active_run_is_409(api_client: APIClient, conversation: Conversation) -> None:
    start_run(conversation, RunOptions("Still running"))

    with nothing_created():
        response = api_client.delete(conversation_url(conversation))

    assert error_of(response, 409)["code"] == "run_in_progress"
    assert Conversation.objects.filter(pk=conversation.pk).exists()


# --- query strings and paths --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("after=abc", "after"),
        ("after=-1", "after"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
    ],
)
def test_bad_event_paging_is_400(api_client: APIClient, conversation: Conversation, query: str, field: str) -> None:
    response = api_client.get(conversation_url(conversation, f"/events?{query}"))

    assert field in error_of(response, 400)["fields"]


def test_a_bad_after_on_the_event_stream_is_400(api_client: APIClient, conversation: Conversation) -> None:
    response = api_client.get(conversation_url(conversation, "/events/stream?after=abc"))

    assert "after" in error_of(response, 400)["message"]


@pytest.mark.parametrize(
    ("query", "field"),
    [("status=deleted", "status"), ("created_after=yesterday", "created_after")],
)
def test_bad_list_filters_are_400(api_client: APIClient, tenant: Tenant, query: str, field: str) -> None:
    response = api_client.get(f"/api/tenants/acme/conversations?{query}")

    assert field in error_of(response, 400)["fields"]


@pytest.mark.parametrize(
    "path",
    [
        "/api/tenants/acme/conversations/not-a-uuid",
        "/api/tenants/acme/conversations/not-a-uuid/events",
        "/api/tenants/acme/conversations/not-a-uuid/events/stream",
        "/api/tenants/acme/conversations/12345/runs",
    ],
)
def test_an_invalid_conversation_id_in_the_path_is_404(api_client: APIClient, tenant: Tenant, path: str) -> None:
    response = api_client.get(path)

    assert response.status_code == 404


@pytest.mark.parametrize(
    "run_id",
    ["-" * 36, "0" * 36, "a" * 32 + "----"],
    # The route takes 36 hex digits or dashes; only the last spells a UUID (that no run has).
    ids=["only-dashes", "too-many-digits", "misplaced-dashes"],
)
def test_an_invalid_run_id_in_the_path_is_404_not_500(
    api_client: APIClient, conversation: Conversation, run_id: str
) -> None:
    response = api_client.get(conversation_url(conversation, f"/runs/{run_id}"))

    assert error_of(response, 404)["code"] == "not_found"


def test_a_wrong_method_is_405_in_the_error_shape(api_client: APIClient, conversation: Conversation) -> None:
    response = api_client.put(conversation_url(conversation), {"title": "x"}, format="json")

    assert error_of(response, 405)["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("method", "suffix", "allowed"),
    [("get", "/stream", "POST"), ("post", "/events/stream", "GET"), ("delete", "/events/stream", "GET")],
)
def test_the_stream_endpoints_refuse_other_methods_in_json(
    tenant_key: str, conversation: Conversation, method: str, suffix: str, allowed: str
) -> None:
    # A plain client: the CSRF check applies to it, as to a browser's form post.
    client = Client(enforce_csrf_checks=True, headers={"X-API-Key": tenant_key})

    response = getattr(client, method)(conversation_url(conversation, suffix))

    assert error_of(response, 405)["code"] == "method_not_allowed"
    assert response["Allow"] == allowed


def test_a_missing_run_is_404(api_client: APIClient, conversation: Conversation) -> None:
    response = api_client.get(conversation_url(conversation, f"/runs/{uuid4()}"))

    assert error_of(response, 404) == {"status": 404, "code": "not_found", "message": "Not found."}


def test_an_unauthenticated_stream_request_is_401_in_the_error_shape(conversation: Conversation) -> None:
    response = Client().post(conversation_url(conversation, "/stream"), {"text": "Hi"}, content_type="application/json")

    error_of(response, 401)
    assert Run.objects.count() == 0


@pytest.mark.parametrize("suffix", ["/messages", "/stream"])
def test_an_over_long_x_user_id_is_400_naming_the_header(
    tenant_key: str, conversation: Conversation, suffix: str
) -> None:
    client = Client(headers={"X-API-Key": tenant_key, "X-User-ID": "u" * 201})

    with nothing_created():
        response = client.post(conversation_url(conversation, suffix), {"text": "Hi"}, content_type="application/json")

    assert error_of(response, 400)["message"] == "X-User-ID: Use at most 200 characters."
    assert error_of(response, 400)["fields"] == {"X-User-ID": ["Use at most 200 characters."]}


# --- types, sizes and characters ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["/messages", "/stream"])
@pytest.mark.parametrize(
    "text", [42, 4.2, True, ["Hi"], {"text": "Hi"}], ids=["int", "float", "bool", "list", "object"]
)
def test_a_message_text_that_is_not_a_string_is_400(
    api_client: APIClient, conversation: Conversation, suffix: str, text: Any
) -> None:
    with nothing_created():
        response = api_client.post(conversation_url(conversation, suffix), {"text": text}, format="json")

    assert error_of(response, 400)["fields"]["text"] in (["Must be a string."], ["Not a valid string."])


@pytest.mark.parametrize("suffix", ["/messages", "/stream"])
def test_json_without_its_content_type_is_415_saying_what_to_send(
    api_client: APIClient, conversation: Conversation, suffix: str
) -> None:
    with nothing_created():
        response = api_client.generic("POST", conversation_url(conversation, suffix), '{"text": "hi"}', "text/plain")

    error = error_of(response, 415)
    assert "Content-Type: application/json" in error["message"] and "text/plain" in error["message"]


@pytest.mark.parametrize("suffix", ["", "/messages", "/stream"], ids=["create", "messages", "stream"])
def test_json_nested_too_deep_is_400(api_client: APIClient, conversation: Conversation, suffix: str) -> None:
    path = conversation_url(conversation, suffix) if suffix else "/api/tenants/acme/conversations"

    with nothing_created():
        response = api_client.generic("POST", path, "[" * 50_000 + "]" * 50_000, "application/json")

    assert error_of(response, 400)["message"] == "The JSON is nested too deeply."


@pytest.mark.parametrize("suffix", ["/messages", "/stream"])
def test_a_body_over_the_upload_limit_is_413(
    api_client: APIClient, conversation: Conversation, suffix: str, settings: Settings
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    with nothing_created():
        response = api_client.post(conversation_url(conversation, suffix), {"text": "x" * 2000}, format="json")

    assert error_of(response, 413)["code"] == "request_too_large"


@pytest.mark.parametrize("suffix", ["/messages", "/stream"])
def test_nul_in_a_body_is_400(api_client: APIClient, conversation: Conversation, suffix: str) -> None:
    with nothing_created():
        response = api_client.generic(
            "POST", conversation_url(conversation, suffix), '{"text": "a\\u0000b"}', "application/json"
        )

    assert "NUL" in error_of(response, 400)["message"]


@pytest.mark.parametrize(
    "path", ["/api/models/a%00b", "/api/tenants/a%00b", "/api/tenants/acme/conversations?user_id=a%00b"]
)
def test_nul_in_a_path_or_query_is_400(admin_api_client: APIClient, tenant: Tenant, path: str) -> None:
    assert "NUL" in error_of(admin_api_client.get(path), 400)["message"]


def test_a_lone_surrogate_echoed_in_an_error_still_encodes(api_client: APIClient, conversation: Conversation) -> None:
    response = api_client.generic("PATCH", conversation_url(conversation), '{"\\ud800": 1}', "application/json")

    assert "\ud800" in error_of(response, 400)["message"]


def test_a_call_budget_past_the_column_is_400(api_client: APIClient, conversation: Conversation) -> None:
    with nothing_created():
        response = api_client.post(
            conversation_url(conversation, "/messages"), {"text": "Hi", "budget": {"calls": 2**31}}, format="json"
        )

    assert "budget" in error_of(response, 400)["fields"]


def test_a_tenants_system_prompt_is_now_its_agents_instructions(admin_api_client: APIClient, tenant: Tenant) -> None:
    response = admin_api_client.patch(f"/api/tenants/{tenant.pk}", {"system_prompt": "Be brief."}, format="json")

    assert "system_prompt" in error_of(response, 400)["fields"]
    assert default_profile(tenant).current_version.instructions == "You help Acme's customers."


# --- lists and their query strings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=18446744073709551616", "limit"),
        ("offset=-5", "offset"),
        ("offset=18446744073709551616", "offset"),
        ("colour=blue", "colour"),
    ],
)
def test_bad_paging_and_unknown_parameters_on_a_list_are_400(
    api_client: APIClient, tenant: Tenant, query: str, field: str
) -> None:
    response = api_client.get(f"/api/tenants/{tenant.pk}/conversations?{query}")

    assert field in error_of(response, 400)["fields"]


def test_a_limit_over_the_most_is_400_naming_the_range(api_client: APIClient, conversation: Conversation) -> None:
    response = api_client.get(f"/api/tenants/{conversation.tenant_id}/conversations?limit=501")

    assert error_of(response, 400)["fields"] == {"limit": ["Must be a whole number from 1 to 500."]}


@pytest.mark.parametrize("offset", ["-20:56", "+15:59", "Z"])
def test_a_date_filter_with_any_offset_python_reads_is_answered(
    api_client: APIClient, conversation: Conversation, offset: str
) -> None:
    response = api_client.get(
        f"/api/tenants/{conversation.tenant_id}/conversations", {"created_after": f"2026-01-01T00:00:00{offset}"}
    )

    assert response.status_code == 200 and response.json()["count"] == 1


def test_list_filters_do_not_apply_to_a_lookup(api_client: APIClient, conversation: Conversation) -> None:
    # `status` of a run list is the runs' own (a conversation's `archived` is no run's: 400), `user_id` is not.
    response = api_client.get(conversation_url(conversation, "/runs?user_id=nobody"))
    detail = api_client.get(conversation_url(conversation) + "?status=archived")

    assert response.status_code == 200 and detail.status_code == 200


# --- paths no route matches -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api", "/API/tenants", "/Api/schema/", "/nothing", "/api/tenants/acme/nope"])
@pytest.mark.parametrize("debug", [True, False], ids=["DEBUG on, as make run", "DEBUG off"])
def test_a_path_no_route_matches_is_a_json_404(settings: Settings, path: str, debug: bool) -> None:
    settings.DEBUG = debug

    response = Client().get(path)

    assert error_of(response, 404) == {"status": 404, "code": "not_found", "message": "Not found."}


def test_a_refusal_on_a_page_for_people_stays_a_page(settings: Settings) -> None:
    settings.DEBUG = True

    response = Client().get("/chat/")  # no chat session: a page that says how to open the chat

    assert response.status_code == 401 and response["Content-Type"].startswith("text/html")
