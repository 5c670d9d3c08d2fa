"""A schema-driven fuzzer (schemathesis) against the API in this process: no server error, and no answer
that contradicts the OpenAPI schema (status codes, content types, bodies, headers), on drawn requests, on
every read of real objects, and on `OPTIONS` (the methods it lists are the schema's)."""

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from pytest_django.fixtures import Settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agents.services import create_profile
from agents.spec import AgentSpec
from conversations.models import Conversation, Run
from mcp_servers.models import McpServer
from skills.archive import from_files
from skills.services import create_skill
from tests.factories import ApprovalFactory, ConversationFactory, QuestionFactory
from workspaces.models import WorkspaceFile
from workspaces.services import save_file

# In this thread, on the test's own connection: nothing is committed, so no run is ever dispatched.
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
# The SSE endpoints answer streams that end only with a run, which no worker executes here; the
# route-walking tests ask them every wrong question instead.
schema = schema.exclude(path_regex=r"stream$")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(autouse=True)
def requests_keep_the_tests_connection() -> Iterator[None]:
    """As Django's test client does: a request must not close the connection holding the test's transaction."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def conversation_id(admin_key: str, tenant: object) -> str:
    return str(ConversationFactory(tenant=tenant, user_id="alice").pk)


@pytest.mark.django_db
@schema.parametrize()
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_schema(case: schemathesis.Case, admin_key: str, conversation_id: str) -> None:
    # Real ids where the fuzzer drew ones that exist nowhere, so some cases reach real objects.
    if "tenant" in case.path_parameters and case.path_parameters["tenant"] == "acme":
        case.path_parameters["id"] = conversation_id
    case.call_and_validate(headers={"X-API-Key": admin_key}, checks=CHECKS)


@pytest.fixture
def real_objects(conversation: Conversation, finished_run: Run, settings: Settings, tmp_path: Path) -> dict[str, str]:
    """One of everything a path can name, as stored (a conversation without a budget of its own, a text
    file, a skill whose SKILL.md is Markdown, an approval and a question), by the name of its path parameter."""
    settings.MEDIA_ROOT = tmp_path / "media"
    save_file(conversation, "notes.txt", io.BytesIO(b"plain text"), source=WorkspaceFile.Source.USER)
    skill_md = b"---\nname: sample\ndescription: A skill that is read back.\n---\nBe helpful.\n"
    create_skill(conversation.tenant, from_files([("SKILL.md", skill_md)]), "test")
    McpServer.objects.create(tenant=conversation.tenant, name="sample", kind="builtin")
    create_profile(conversation.tenant, "sample", AgentSpec(allowed_tools=["Read"], output_schema={"type": "object"}))
    return {
        "tenant": conversation.tenant_id,
        "conversation_id": str(conversation.pk),
        "run_id": str(finished_run.pk),
        "user_id": conversation.user_id,
        "name": "sample",
        "number": "1",
        "path": "notes.txt",
        "approval_id": str(ApprovalFactory(run=finished_run).pk),
        "question_id": str(QuestionFactory(run=finished_run).pk),
    }


def path_parameters(path: str, objects: dict[str, str]) -> dict[str, str]:
    """Real values for the parameters of a path: `{id}` is a model's, a tenant's or a conversation's."""
    if path.startswith("/api/models/"):
        real_id = "offline"
    elif path == "/api/tenants/{id}/":
        real_id = objects["tenant"]
    elif "/approvals/" in path:
        real_id = objects["approval_id"]
    elif "/questions/" in path:
        real_id = objects["question_id"]
    else:
        real_id = objects["conversation_id"]
    if "/skills/" in path:
        objects = {**objects, "path": "SKILL.md"}
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    return {name: real_id if name == "id" else objects[name] for name in names}


@pytest.mark.django_db
def test_every_read_of_a_real_object_answers_what_the_schema_says(admin_key: str, real_objects: dict[str, str]) -> None:
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() != "GET":
            continue
        case = operation.Case(path_parameters=path_parameters(operation.path, real_objects))

        response = case.call_and_validate(headers={"X-API-Key": admin_key}, checks=CHECKS)

        assert response.status_code == 200, (operation.label, response.status_code, response.text[:300])


@pytest.mark.django_db
def test_options_on_every_path_lists_the_methods_of_the_schema(admin_key: str, real_objects: dict[str, str]) -> None:
    asked = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in asked:
            continue
        asked.add(operation.path)
        case = operation.Case(method="OPTIONS", path_parameters=path_parameters(operation.path, real_objects))

        response = case.call_and_validate(
            headers={"X-API-Key": admin_key}, checks=[not_a_server_error, allow_header_conformance]
        )

        assert response.status_code == 200, (operation.path, response.status_code, response.text[:300])
