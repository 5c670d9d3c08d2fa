"""The model gateway: a run's only door to a model.

Each run gets its own gateway, on a Unix socket in the run's private directory (bridged to
127.0.0.1 inside the sandbox) or, unsandboxed, on a loopback port, with its own token. The CLI talks
to it as its model's upstream tells it to (`cli_environment`): the gateway checks the token, and the
upstream (`gateway.upstreams`) refuses calls of a model the run was not given or past its budget,
swaps in the real credential (or serves the offline model in-process), streams the answer through
chunk by chunk, and meters every call at the price of the model it names, from the answer's own
usage figures (`gateway.calls`). The same door relays the run's `http` and `sse` MCP servers
(`gateway.mcp`), and takes the platform's own calls for the run (`side_call`: a conversation's title),
with a token of their own that never enters the sandbox. A chat run, which has no CLI, makes the run's
own call from the worker, on loopback, with the run's token (`streamed_call`).
"""

import asyncio
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
from aiohttp import web
from yarl import URL

from conversations.models import Run
from gateway.calls import Refusal, RunCalls, error_response
from gateway.mcp import PREFIX as MCP_PREFIX
from gateway.mcp import McpRelay
from gateway.upstreams import EventDecoder, Upstream, anthropic, bedrock, offline
from tenants.models import LanguageModel
from usage.models import UsageRecord

logger = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 1.0

UPSTREAMS: dict[str, Upstream] = {
    LanguageModel.Provider.ANTHROPIC: anthropic,
    LanguageModel.Provider.BEDROCK: bedrock,
    LanguageModel.Provider.OFFLINE: offline,
}


class SideCallFailed(Exception):
    """A side call was refused (a budget) or failed; the message is the gateway's or the upstream's."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"{status}: {message}")


@dataclass(frozen=True)
class StreamedCall:
    """A streamed call to a run's gateway: where it goes, what it sends, and how its answer's events read."""

    url: URL
    headers: Mapping[str, str]
    body: bytes
    upstream: Upstream

    def events(self) -> EventDecoder:
        """A reader of the answer's events, in its upstream's framing."""
        return self.upstream.stream_events()


class ModelGateway:
    """Serves one run for as long as the `async with` block lasts; its tokens are revoked at the end.

    `models` are the catalog models the run may call besides its own, by the id its calls name them
    by (see `RunCalls`); `on_refusal` and `on_usage` are the run's ears (see `RunCalls`); side calls
    are heard by `on_usage` only.
    """

    def __init__(
        self,
        run: Run,
        socket_path: Path | None = None,
        owner: tuple[int, int] | None = None,
        on_refusal: Refusal | None = None,
        on_usage: Callable[[UsageRecord], None] | None = None,
        mcp: McpRelay | None = None,
        models: Mapping[str, LanguageModel] | None = None,
    ) -> None:
        self.mcp = mcp or McpRelay([])
        self.upstream = UPSTREAMS[run.model.provider]
        self.socket_path = socket_path
        self.owner = owner
        # The CLI's token, for as long as the CLI lives: a warm session's (`runs.sessions`) serves several runs.
        self.cli_token = "run_" + secrets.token_urlsafe(32)
        self.base_url = ""
        self._runner: web.ServerRunner | None = None
        self._serve(run, models, on_refusal, on_usage)

    def _serve(
        self,
        run: Run,
        models: Mapping[str, LanguageModel] | None,
        on_refusal: Refusal | None,
        on_usage: Callable[[UsageRecord], None] | None,
    ) -> None:
        self.run = run
        self.calls = RunCalls(run, models=models, on_refusal=on_refusal, on_usage=on_usage)
        # The platform's own calls: metered and budgeted like the CLI's, but no refusal of one ends the run.
        self.side_calls = RunCalls(run, models=self.calls.models, on_usage=on_usage, on_run=False)
        self.token = self.cli_token
        self.side_token = "side_" + secrets.token_urlsafe(32)

    async def serve(
        self,
        run: Run,
        *,
        on_refusal: Refusal | None = None,
        on_usage: Callable[[UsageRecord], None] | None = None,
        models: Mapping[str, LanguageModel] | None = None,
    ) -> None:
        """Serve the next run of a warm session's CLI (revoked since its last run): its calls are budgeted, metered
        and heard as that run's, the platform's side calls get a new token."""
        await self._close_calls()
        self._serve(run, models, on_refusal, on_usage)

    async def __aenter__(self) -> Self:
        # No access log: a Bedrock run's token is part of every path. (A ServerRunner ignores an
        # access_log argument; only the Server's own is used.)
        # Closing waits at most a second for answers still streaming (an MCP server's open event
        # stream would otherwise hold the run's end for aiohttp's default minute).
        self._runner = web.ServerRunner(
            web.Server(self.handle, access_log=None), handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS
        )
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
        await self._close_calls()
        await self.mcp.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _close_calls(self) -> None:
        await self.calls.close()
        await self.side_calls.close()

    def cli_environment(self, base_url: str) -> Mapping[str, str]:
        """The CLI's variables that make it call this gateway, at `base_url` as the CLI reaches it."""
        return self.upstream.cli_environment(base_url, self.cli_token)

    def cli_mcp_servers(self, base_url: str) -> dict[str, Any]:
        """The CLI's MCP configuration of the run's `http` and `sse` servers: through this gateway, at `base_url`."""
        return self.mcp.cli_config(base_url, self.cli_token)

    def streamed_call(self, request: dict[str, Any], betas: Sequence[str] = ()) -> "StreamedCall":
        """The run's own streamed Messages call `request` (naming its model), as a client in this process (a chat
        run, which has no CLI) makes it to this gateway on loopback: with the run's token, so it is refused,
        budgeted and metered as the CLI's calls are, and a refusal ends the run."""
        if self.socket_path is not None:
            raise RuntimeError("A gateway on a Unix socket serves a sandboxed CLI; open it on loopback TCP.")
        call = self.upstream.side_call(self.token, request, stream=True, betas=betas)
        return StreamedCall(URL(self.base_url + call.path, encoded=True), call.headers, call.body, self.upstream)

    def revoke(self) -> None:
        """From now on every call answers 403, whoever still holds a token (until `serve` serves another run)."""
        self.token = self.side_token = ""

    async def settled(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the answers still streaming, the CLI's and side calls'; False if some still are."""
        settled = await asyncio.gather(self.calls.settled(timeout), self.side_calls.settled(timeout))
        return all(settled)

    async def side_call(self, request: dict[str, Any]) -> dict[str, Any]:
        """The answer (an Anthropic message) to the platform's own Messages call `request`, which names its model.

        It goes through this gateway's door like the CLI's calls (token, budgets, credentials, metering
        to the run and `on_usage`), but its refusal ends nothing. Raises SideCallFailed when refused or failed.
        """
        call = self.upstream.side_call(self.side_token, request)
        connector = aiohttp.UnixConnector(path=str(self.socket_path)) if self.socket_path else None
        base_url = "http://gateway" if self.socket_path else self.base_url
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(URL(base_url + call.path, encoded=True), data=call.body, headers=dict(call.headers)) as answer,
        ):
            try:
                message = await answer.json(content_type=None)
            except ValueError:
                message = None
        if answer.status != 200 or not isinstance(message, dict) or message.get("type") != "message":
            error = message.get("error") if isinstance(message, dict) else None
            detail = error.get("message") if isinstance(error, dict) else None
            raise SideCallFailed(answer.status, str(detail or "The answer was not a message."))
        return message

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        relayed = request.path.startswith(MCP_PREFIX)
        token = request.headers.get("X-Run-Token", "") if relayed else self.upstream.call_token(request)
        calls = self.calls if matches(token, self.token) else None
        if calls is None and not relayed and matches(token, self.side_token):
            calls = self.side_calls
        # A 403, not a 401: the CLI retries a 401 ten times with backoff. Neither the token sent nor
        # the expected one is ever logged.
        if calls is None:
            logger.warning("Gateway of run %s refused a call with a wrong or revoked token", self.run.pk)
            return error_response(403, "permission_error", "Unknown or revoked run token.")
        if relayed:
            return await self.mcp.serve(request)
        try:
            return await self.upstream.serve(calls, request)
        finally:
            await calls.release(request)


def matches(token: str, expected: str) -> bool:
    """Whether a call's token is `expected`, a token not yet revoked; in constant time."""
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())
