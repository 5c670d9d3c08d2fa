"""A tenant's "openapi" MCP server: an OpenAPI 3 document whose operations become tools, and the HTTP
requests those tools stand for.

- `document`: loading an upload (JSON or YAML), bounded, checked to yield a tool;
- `operations`: the document's operations as tools (names, descriptions, input schemas), with `refs`
  following the `$ref`s they need;
- `request`: a tool call as the HTTP request it stands for;
- `calls`: the tools served in the worker, which makes those requests.
All but `calls` are pure functions: no network, no models. This module names what the rest of the
app uses.

Choices, in words for whoever reads a tenant's complaint:
- Only JSON request bodies (`application/json`, `application/*+json`). An operation whose body offers
  no JSON media type is left out, and `skipped_operations()` says why, so the upload can show it.
- Cookie parameters are not exposed (a secret cookie belongs in the server's configured headers).
- `$ref`s are followed where a tool needs them (parameters, request bodies and their schemas); one that
  points outside the document is refused. Responses are never read.
- Tool argument names must match `^[a-zA-Z0-9_.-]{1,64}$` (the Anthropic API refuses the whole request
  otherwise), so a parameter such as `filter[status]` is offered as `filter_status` and mapped back.
- A header the server config sets (`headers=` in `build_request`) wins over an argument of that name.
"""

from mcp_servers.openapi.document import MAX_BYTES, load_document
from mcp_servers.openapi.operations import (
    MAX_DESCRIPTION,
    MAX_OPERATIONS,
    Operation,
    Parameter,
    operations,
    skipped_operations,
)
from mcp_servers.openapi.problems import OpenApiProblem
from mcp_servers.openapi.request import Request, build_request

__all__ = [
    "MAX_BYTES",
    "MAX_DESCRIPTION",
    "MAX_OPERATIONS",
    "OpenApiProblem",
    "Operation",
    "Parameter",
    "Request",
    "build_request",
    "load_document",
    "operations",
    "skipped_operations",
]
