"""The SSE endpoints in the OpenAPI schema: they are plain Django views, which drf-spectacular cannot see."""

from typing import Any

from api.schema import ERRORS, X_USER_ID

ERROR_REF = {"$ref": "#/components/schemas/Error"}
SSE_BODY = {
    "description": (
        "Server-sent events: `id:` is the event's seq, `data:` its envelope (see the README's Events). "
        "Comment lines (`: heartbeat`) keep a quiet stream alive."
    ),
    "content": {"text/event-stream": {"schema": {"type": "string"}}},
}


def _parameter(name: str, where: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "description": description, "schema": schema}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {"description": ERRORS[status], "content": {"application/json": {"schema": ERROR_REF}}}
        for status in statuses
    }


PATH_PARAMETERS = [
    _parameter("tenant", "path", "The tenant's id.", {"type": "string"}),
    _parameter("conversation_id", "path", "The conversation's id.", {"type": "string", "format": "uuid"}),
]
STREAM_AUTH = [
    _parameter(
        "token",
        "query",
        "A stream token (`POST …/stream-token`), for clients that cannot send headers (EventSource); "
        "instead of an API key.",
        {"type": "string"},
    ),
    {
        "name": X_USER_ID.name,
        "in": "header",
        "required": False,
        "description": X_USER_ID.description,
        "schema": {"type": "string", "maxLength": 200},
    },
]


def add_stream_endpoints(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: `GET …/events/stream` and `POST …/stream`."""
    base = "/api/tenants/{tenant}/conversations/{conversation_id}"
    security: list[dict[str, list[str]]] = [{"ApiKey": []}, {}]
    result["paths"][f"{base}/events/stream"] = {
        "get": {
            "operationId": "conversation_event_stream",
            "summary": "Follow a conversation's events live (SSE)",
            "description": "Every stored event after `after` (or `Last-Event-ID`), then new ones as they happen.",
            "tags": ["events"],
            "security": security,
            "parameters": [
                *PATH_PARAMETERS,
                *STREAM_AUTH,
                _parameter(
                    "after",
                    "query",
                    "Send events with seq greater than this (default 0).",
                    {"type": "integer", "minimum": 0},
                ),
                _parameter(
                    "Last-Event-ID",
                    "header",
                    "What EventSource sends on reconnecting; as `after`.",
                    {"type": "integer", "minimum": 0},
                ),
            ],
            "responses": {"200": SSE_BODY, **_errors(400, 401, 404, 405, 503)},
        }
    }
    result["paths"][f"{base}/stream"] = {
        "post": {
            "operationId": "conversation_stream_message",
            "summary": "Send a message and stream its run (SSE)",
            "description": "Starts a run like `…/messages`, then streams its events until its terminal event.",
            "tags": ["runs"],
            "security": security,
            "parameters": [*PATH_PARAMETERS, *STREAM_AUTH],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/MessageCreateRequest"}}},
            },
            "responses": {"200": SSE_BODY, **_errors(400, 401, 404, 405, 409, 413, 415, 503)},
        }
    }
    return result
