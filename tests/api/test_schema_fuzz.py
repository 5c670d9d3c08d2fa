"""A schema-driven fuzzer (schemathesis) against the API in this process: no server error, and no answer
that contradicts the OpenAPI schema (status codes, content types, bodies, headers)."""

from collections.abc import Iterator

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories import ConversationFactory

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
