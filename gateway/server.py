"""The model gateway: a run's only door to a model.

Each run gets its own gateway, on a Unix socket in the run's private directory (bridged to
127.0.0.1 inside the sandbox) or, unsandboxed, on a loopback port, with its own token. The CLI talks
plain Anthropic HTTP to it, or Bedrock HTTP for a Bedrock model (see `gateway.upstreams.bedrock`); the gateway
checks the token, refuses calls past the run's budget, swaps in the real credential (or serves the
offline model in-process), streams the answer through chunk by chunk, and meters every call from the
answer's own usage figures.
"""

import asyncio
import hmac
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import aiohttp
from aiohttp import web
from django.conf import settings
from yarl import URL

from conversations.models import Run
from conversations.reconnect import call_database
from gateway.metering import UsageTap
from gateway.upstreams import bedrock, offline
from tenants.models import LanguageModel
from usage.services import budget_refusal, record_usage

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
MESSAGES_PATH = "/v1/messages"
# The CLI's Bedrock clients send no credential, and its AWS SDK call ignores ANTHROPIC_CUSTOM_HEADERS,
# so a Bedrock run's token travels as the first segments of the base URL's path, which both keep.
RUN_PATH_PREFIX = "/run-token/"


def error_response(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response(body, status=status)


def request_token(request: web.BaseRequest) -> str:
    token = request.headers.get("x-api-key", "")
    if not token:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = value if scheme.lower() == "bearer" else ""
    return token


def path_token(raw_path: str) -> tuple[str, str]:
    """The token of a path `/run-token/<token>/rest?query`, and `/rest?query` (the raw path, still quoted)."""
    if not raw_path.startswith(RUN_PATH_PREFIX):
        return "", raw_path
    token, slash, rest = raw_path.removeprefix(RUN_PATH_PREFIX).partition("/")
    return token, slash + rest


class ModelGateway:
    """Serves one run for as long as the `async with` block lasts; its token is revoked at the end."""

    def __init__(
        self,
        run: Run,
        socket_path: Path | None = None,
        owner: tuple[int, int] | None = None,
        on_refusal: Callable[[str, str], None] | None = None,
    ) -> None:
        self.run = run
        self.model: LanguageModel = run.model
        self.socket_path = socket_path
        self.owner = owner
        # Told (reason, message) when the gateway refuses a call the run cannot recover from, so the
        # run ends now instead of the CLI retrying for minutes.
        self.on_refusal = on_refusal
        self.token = "run_" + secrets.token_urlsafe(32)
        self.base_url = ""
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._aws_credentials = bedrock.AwsCredentials()

    async def __aenter__(self) -> Self:
        # No access log: a Bedrock run's token is part of every path. (A ServerRunner ignores an
        # access_log argument; only the Server's own is used.)
        self._runner = web.ServerRunner(web.Server(self.handle, access_log=None), handle_signals=False)
        await self._runner.setup()
        if self.socket_path is None:
            await web.TCPSite(self._runner, "127.0.0.1", 0).start()
            self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        else:
            # The sandbox's only door out: a socket file in the run's private directory.
            await web.UnixSite(self._runner, str(self.socket_path)).start()
            if self.owner and os.geteuid() == 0:
                os.chown(self.socket_path, *self.owner)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.revoke()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def revoke(self) -> None:
        """From now on every call answers 403, whoever still holds the token."""
        self.token = ""

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        is_bedrock = self.model.provider == LanguageModel.Provider.BEDROCK
        token, raw_path = path_token(request.raw_path) if is_bedrock else (request_token(request), "")
        # A 403, not a 401: the CLI retries a 401 ten times with backoff. Neither the token sent nor
        # the expected one is ever logged.
        if not self.token or not hmac.compare_digest(token.encode(), self.token.encode()):
            logger.warning("Gateway of run %s refused a call with a wrong or revoked token", self.run.pk)
            return error_response(403, "permission_error", "Unknown or revoked run token.")
        if is_bedrock:
            return await self._forward_bedrock(request, raw_path)
        if request.method != "POST":
            return error_response(405, "invalid_request_error", "Only POST is supported.")
        body = await request.read()
        if request.path == MESSAGES_PATH and (refusal := await self._budget_refusal(body)):
            return refusal
        if self.model.provider == LanguageModel.Provider.OFFLINE:
            reply = await offline.respond(request.path, body, request.headers)
            return await self._relay(
                request,
                reply.status,
                {"content-type": reply.content_type},
                reply.body,
                self._messages_tap(request, reply.status),
            )
        if self.model.provider == LanguageModel.Provider.ANTHROPIC:
            return await self._forward_anthropic(request, body)
        return error_response(501, "api_error", f"Provider '{self.model.provider}' is not served by this gateway yet.")

    async def _budget_refusal(self, body: bytes) -> web.Response | None:
        refusal = await call_database(f"Checking the budget of run {self.run.pk}", budget_refusal, self.run, body)
        if not refusal:
            return None
        return self._refuse("budget_exceeded", refusal)

    def _refuse(self, reason: str, message: str) -> web.Response:
        if self.on_refusal:
            self.on_refusal(reason, message)
        # 403: the CLI retries a 400 or 429 (and, in Bedrock mode, even this) while the run stops.
        return error_response(403, "permission_error", message)

    @staticmethod
    def _messages_tap(request: web.BaseRequest, status: int) -> UsageTap | None:
        return UsageTap() if request.path == MESSAGES_PATH and status == 200 else None

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=600))
        return self._session

    async def _relay(
        self,
        request: web.BaseRequest,
        status: int,
        headers: dict[str, str],
        chunks: AsyncIterator[bytes],
        tap: UsageTap | None,
    ) -> web.StreamResponse:
        """Stream an answer to the CLI chunk by chunk, metering the call from the answer itself (with `tap`)."""
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        try:
            async for chunk in chunks:
                if tap is not None:
                    tap.feed(chunk)
                await response.write(chunk)
        except ConnectionResetError:
            pass  # the CLI hung up (an interrupt); what was streamed so far is still metered
        except aiohttp.ClientError as exc:
            # The upstream broke off mid-answer: the CLI sees a cut stream and retries the call.
            logger.warning("Upstream stream of run %s broke off: %s", self.run.pk, type(exc).__name__)
        finally:
            if tap is not None:
                tap.close()
                if tap.has_usage:
                    # Recorded before the answer ends, so the next call's budget check sees it.
                    await call_database(
                        f"Recording a model call of run {self.run.pk}",
                        record_usage,
                        self.run.pk,
                        tap.message_id,
                        tap.usage,
                    )
        try:
            await response.write_eof()
        except ConnectionResetError:
            pass
        return response

    async def _forward_anthropic(self, request: web.BaseRequest, body: bytes) -> web.StreamResponse:
        if not settings.ANTHROPIC_API_KEY:
            return self._refuse("credentials_missing", "The platform has no ANTHROPIC_API_KEY configured.")
        headers = {name: request.headers[name] for name in FORWARDED_REQUEST_HEADERS if name in request.headers}
        headers["x-api-key"] = settings.ANTHROPIC_API_KEY
        url = settings.ANTHROPIC_BASE_URL.rstrip("/") + request.path_qs
        try:
            async with self._client_session().post(url, data=body, headers=headers) as upstream:
                kept = {k: upstream.headers[k] for k in FORWARDED_RESPONSE_HEADERS if k in upstream.headers}
                tap = self._messages_tap(request, upstream.status)
                return await self._relay(request, upstream.status, kept, upstream.content.iter_any(), tap)
        except aiohttp.ClientError as exc:
            logger.warning("Anthropic upstream unreachable: %s", type(exc).__name__)
            return error_response(502, "api_error", f"The model upstream is unreachable ({type(exc).__name__}).")

    async def _forward_bedrock(self, request: web.BaseRequest, raw_path: str) -> web.StreamResponse:
        """Sign the CLI's Bedrock call with the platform's AWS credentials and relay the answer; only
        model calls (`/model/<id>/invoke*`) are budget-checked and metered."""
        call = bedrock.bedrock_call(request.method, raw_path)
        if call is None:
            return error_response(
                404,
                "not_found_error",
                "The gateway forwards only Bedrock model calls and the inference-profiles listing.",
            )
        body = await request.read()
        if call.is_model_call:
            if call.model_id != self.model.provider_model_id:
                # The usage would be priced as the run's model: another model is not the run's to call.
                return error_response(
                    403, "permission_error", f"This run may only call model {self.model.provider_model_id}."
                )
            if refusal := await self._budget_refusal(body):
                return refusal
        credentials = await asyncio.to_thread(self._aws_credentials.current)
        if credentials is None:
            # Measured: in Bedrock mode the CLI takes a 403 for expired AWS credentials and retries it
            # for about four minutes before it shows this message (a 400 would end the turn at once).
            return self._refuse(
                "credentials_missing",
                "The platform has no AWS credentials for Bedrock: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or give the worker an AWS role.",
            )
        headers = bedrock.signed_headers(call, body, request.headers, credentials)
        try:
            async with self._client_session().request(
                call.method, URL(call.url, encoded=True), data=body, headers=headers
            ) as upstream:
                tap: UsageTap | None = None
                if call.is_model_call and upstream.status == 200:
                    tap = bedrock.EventStreamUsageTap() if call.streaming else UsageTap()
                kept = bedrock.response_headers(upstream.headers)
                return await self._relay(request, upstream.status, kept, upstream.content.iter_any(), tap)
        except aiohttp.ClientError as exc:
            logger.warning("Bedrock upstream unreachable: %s", type(exc).__name__)
            return error_response(502, "api_error", f"The model upstream is unreachable ({type(exc).__name__}).")
