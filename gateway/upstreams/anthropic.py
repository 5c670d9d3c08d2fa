"""The gateway's Anthropic upstream: the CLI's own API calls, relayed with the platform's API key."""

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from django.conf import settings

from gateway.calls import MESSAGES_PATH, RunCalls, SideCall, error_response, messages_tap
from gateway.metering import SSEDecoder

logger = logging.getLogger(__name__)

# Hop-by-hop and credential headers never cross the gateway.
FORWARDED_REQUEST_HEADERS = (
    "anthropic-version",
    "anthropic-beta",
    "content-type",
    "x-claude-code-session-id",
    "accept",
)
FORWARDED_RESPONSE_HEADERS = ("content-type", "request-id", "retry-after", "anthropic-ratelimit-requests-remaining")
# What the CLI calls, and all the gateway relays: any other path (batches, files, models) would reach the
# platform's account unmetered, naming any model.
RELAYED_PATHS = (MESSAGES_PATH, f"{MESSAGES_PATH}/count_tokens")
API_VERSION = "2023-06-01"


def cli_environment(base_url: str, token: str) -> Mapping[str, str]:
    """The run's token stands where the CLI expects an API key."""
    return {"ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_API_KEY": token}


def call_token(request: web.BaseRequest) -> str:
    token = request.headers.get("x-api-key", "")
    if not token:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = value if scheme.lower() == "bearer" else ""
    return token


def side_call(token: str, request: dict[str, Any], *, stream: bool = False, betas: Sequence[str] = ()) -> SideCall:
    headers = {"x-api-key": token, "anthropic-version": API_VERSION, "content-type": "application/json"}
    if betas:
        headers["anthropic-beta"] = ",".join(betas)
    return SideCall(MESSAGES_PATH, headers, json.dumps({**request, "stream": stream}).encode())


class StreamEvents:
    """An Anthropic stream's events (server-sent events), decoded as its bytes arrive."""

    def __init__(self) -> None:
        self._sse = SSEDecoder()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        events = []
        for _name, data in self._sse.feed(chunk):
            try:
                event = json.loads(data)
            except ValueError:
                continue  # not an event of the API's (a proxy's keep-alive text)
            if isinstance(event, dict):
                events.append(event)
        return events


def stream_events() -> StreamEvents:
    return StreamEvents()


async def serve(calls: RunCalls, request: web.BaseRequest) -> web.StreamResponse:
    if request.path.rstrip("/") not in RELAYED_PATHS:
        return error_response(404, "not_found_error", f"The gateway relays only {' and '.join(RELAYED_PATHS)}.")
    body = await calls.read_messages_call(request)
    if isinstance(body, web.StreamResponse):
        return body
    if not settings.ANTHROPIC_API_KEY:
        return calls.refuse("credentials_missing", "The platform has no ANTHROPIC_API_KEY configured.")
    headers = {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers}
    headers["x-api-key"] = settings.ANTHROPIC_API_KEY
    url = settings.ANTHROPIC_BASE_URL.rstrip("/") + request.path_qs
    try:
        async with calls.client_session().post(url, data=body, headers=headers) as upstream:
            kept = {k: upstream.headers[k] for k in FORWARDED_RESPONSE_HEADERS if k in upstream.headers}
            tap = messages_tap(request, upstream.status)
            return await calls.relay(request, upstream.status, kept, upstream.content.iter_any(), tap)
    except aiohttp.ClientError as exc:
        logger.warning("Anthropic upstream unreachable: %s", type(exc).__name__)
        return error_response(502, "api_error", f"The model upstream is unreachable ({type(exc).__name__}).")
