"""The OpenAPI schema documents what the server really sends."""

from typing import Any

import pytest
import yaml
from django.test import Client

pytestmark = pytest.mark.django_db

BASE = "/api/tenants/{tenant}/conversations/{conversation_id}"


@pytest.fixture
def schema() -> dict[str, Any]:
    return yaml.safe_load(Client().get("/api/schema/").content)


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def test_the_sse_endpoints_are_documented(schema: dict[str, Any]) -> None:
    follow = schema["paths"][f"{BASE}/events/stream"]["get"]
    send = schema["paths"][f"{BASE}/stream"]["post"]

    assert "text/event-stream" in follow["responses"]["200"]["content"]
    assert {p["name"] for p in follow["parameters"]} >= {"after", "Last-Event-ID", "token", "X-User-ID"}
    assert send["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/MessageCreateRequest")
    assert {"409", "415"} <= set(send["responses"])


def test_every_operation_documents_its_errors_in_the_one_shape(schema: dict[str, Any]) -> None:
    for path, method, operation in operations(schema):
        errors = {code: response for code, response in operation["responses"].items() if code >= "400"}
        assert {"400", "401", "404", "503"} <= set(errors), (method, path)
        for response in errors.values():
            assert response["content"]["application/json"]["schema"]["$ref"].endswith("/Error"), (method, path)
    messages = schema["paths"]["/api/tenants/{tenant}/conversations/{id}/messages/"]["post"]
    assert "409" in messages["responses"]


def test_tenant_scoped_operations_document_x_user_id(schema: dict[str, Any]) -> None:
    for path, method, operation in operations(schema):
        if path.startswith("/api/tenants/{tenant}/"):
            assert "X-User-ID" in {p["name"] for p in operation.get("parameters", [])}, (method, path)


def test_bodies_are_json_only_and_operations_are_tagged_by_resource(schema: dict[str, Any]) -> None:
    tags = {}
    for path, method, operation in operations(schema):
        if "requestBody" in operation:
            # Bodies are JSON; files come as multipart, alone or with a message.
            expected = {
                "/files/": {"multipart/form-data"},
                "/skills/": {"multipart/form-data"},
                "/versions/": {"multipart/form-data"},
                "/messages/": {"application/json", "multipart/form-data"},
            }.get(path[path.rfind("/", 0, -1) :], {"application/json"})
            assert set(operation["requestBody"]["content"]) == expected, (method, path)
        tags[f"{method} {path}"] = operation["tags"]
    assert tags["post /api/tenants/{tenant}/conversations/{id}/messages/"] == ["runs"]
    assert tags["get /api/tenants/{tenant}/conversations/"] == ["conversations"]
    assert tags["get /api/tenants/{tenant}/conversations/{id}/events/"] == ["events"]
    assert tags["get /api/tenants/{tenant}/usage/"] == ["usage"]
