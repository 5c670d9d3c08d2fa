"""The model gateway: a run's only door to a model.

Each run gets its own gateway on a loopback port with its own token. The CLI talks plain Anthropic
HTTP to it; the gateway checks the token, swaps in the real credential (or serves the offline
model in-process) and streams the answer through chunk by chunk.
"""

import hmac
import logging
import secrets
from types import TracebackType
from typing import Self

import aiohttp
from aiohttp import web
from django.conf import settings

from sandbox import offline
from tenants.models import LanguageModel

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


def error_response(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status)


def request_token(request: web.BaseRequest) -> str:
    token = request.headers.get("x-api-key", "")
    if not token:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = value if scheme.lower() == "bearer" else ""
    return token


class ModelGateway:
    """Serves one run for as long as the `async with` block lasts; its token dies with it."""

    def __init__(self, model: LanguageModel) -> None:
        self.model = model
        self.token = "run_" + secrets.token_urlsafe(32)
        self.base_url = ""
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._runner = web.ServerRunner(web.Server(self.handle), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.token = ""
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        # A 403, not a 401: the CLI retries a 401 ten times with backoff.
        if not self.token or not hmac.compare_digest(request_token(request), self.token):
            return error_response(403, "permission_error", "Unknown or revoked run token.")
        if request.method != "POST":
            return error_response(405, "invalid_request_error", "Only POST is supported.")
        body = await request.read()
        if self.model.provider == LanguageModel.Provider.OFFLINE:
            return await self._serve_offline(request, body)
        if self.model.provider == LanguageModel.Provider.ANTHROPIC:
            return await self._forward_anthropic(request, body)
        return error_response(501, "api_error", f"Provider '{self.model.provider}' is not served by this gateway yet.")

    async def _serve_offline(self, request: web.BaseRequest, body: bytes) -> web.StreamResponse:
        reply = await offline.respond(request.path, body, request.headers)
        response = web.StreamResponse(status=reply.status, headers={"content-type": reply.content_type})
        await response.prepare(request)
        try:
            async for chunk in reply.body:
                await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the CLI hung up (an interrupt): nobody is left to answer
        return response

    async def _forward_anthropic(self, request: web.BaseRequest, body: bytes) -> web.StreamResponse:
        if not settings.ANTHROPIC_API_KEY:
            return error_response(403, "permission_error", "The platform has no ANTHROPIC_API_KEY configured.")
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=600))
        headers = {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers}
        headers["x-api-key"] = settings.ANTHROPIC_API_KEY
        url = settings.ANTHROPIC_BASE_URL.rstrip("/") + request.path_qs
        try:
            async with self._session.post(url, data=body, headers=headers) as upstream:
                response = web.StreamResponse(
                    status=upstream.status,
                    headers={k: upstream.headers[k] for k in FORWARDED_RESPONSE_HEADERS if k in upstream.headers},
                )
                await response.prepare(request)
                try:
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                except ConnectionResetError:
                    pass  # the CLI hung up (an interrupt); closing the upstream stops the generation
                return response
        except aiohttp.ClientError as exc:
            logger.warning("Anthropic upstream unreachable: %s", type(exc).__name__)
            return error_response(502, "api_error", f"The model upstream is unreachable ({type(exc).__name__}).")
