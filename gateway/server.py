"""The model gateway: a run's only door to a model.

Each run gets its own gateway, on a Unix socket in the run's private directory (bridged to
127.0.0.1 inside the sandbox) or, unsandboxed, on a loopback port, with its own token. The CLI talks
to it as its model's upstream tells it to (`cli_environment`): the gateway checks the token, and the
upstream (`gateway.upstreams`) refuses calls of a model the run was not given or past its budget,
swaps in the real credential (or serves the offline model in-process), streams the answer through
chunk by chunk, and meters every call at the price of the model it names, from the answer's own
usage figures (`gateway.calls`). The same door relays the run's `http`
and `sse` MCP servers (`gateway.mcp`).
"""

import hmac
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from conversations.models import Run
from gateway.calls import Refusal, RunCalls, error_response
from gateway.mcp import PREFIX as MCP_PREFIX
from gateway.mcp import McpRelay
from gateway.upstreams import Upstream, anthropic, bedrock, offline
from tenants.models import LanguageModel
from usage.models import UsageRecord

logger = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 1.0

UPSTREAMS: dict[str, Upstream] = {
    LanguageModel.Provider.ANTHROPIC: anthropic,
    LanguageModel.Provider.BEDROCK: bedrock,
    LanguageModel.Provider.OFFLINE: offline,
}


class ModelGateway:
    """Serves one run for as long as the `async with` block lasts; its token is revoked at the end.

    `models` are the catalog models the run may call besides its own, by the id its calls name them
    by (see `RunCalls`); `on_refusal` and `on_usage` are the run's ears (see `RunCalls`).
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
        self.run = run
        self.mcp = mcp or McpRelay([])
        self.upstream = UPSTREAMS[run.model.provider]
        self.calls = RunCalls(run, models=models, on_refusal=on_refusal, on_usage=on_usage)
        self.socket_path = socket_path
        self.owner = owner
        self.token = "run_" + secrets.token_urlsafe(32)
        self.base_url = ""
        self._runner: web.ServerRunner | None = None

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
        await self.calls.close()
        await self.mcp.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def cli_environment(self, base_url: str) -> Mapping[str, str]:
        """The CLI's variables that make it call this gateway, at `base_url` as the CLI reaches it."""
        return self.upstream.cli_environment(base_url, self.token)

    def cli_mcp_servers(self, base_url: str) -> dict[str, Any]:
        """The CLI's MCP configuration of the run's `http` and `sse` servers: through this gateway, at `base_url`."""
        return self.mcp.cli_config(base_url, self.token)

    def revoke(self) -> None:
        """From now on every call answers 403, whoever still holds the token."""
        self.token = ""

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        relayed = request.path.startswith(MCP_PREFIX)
        token = request.headers.get("X-Run-Token", "") if relayed else self.upstream.call_token(request)
        # A 403, not a 401: the CLI retries a 401 ten times with backoff. Neither the token sent nor
        # the expected one is ever logged.
        if not self.token or not hmac.compare_digest(token.encode(), self.token.encode()):
            logger.warning("Gateway of run %s refused a call with a wrong or revoked token", self.run.pk)
            return error_response(403, "permission_error", "Unknown or revoked run token.")
        if relayed:
            return await self.mcp.serve(request)
        try:
            return await self.upstream.serve(self.calls, request)
        finally:
            await self.calls.release(request)
