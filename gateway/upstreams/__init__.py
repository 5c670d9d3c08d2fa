"""The gateway's upstreams, one module per provider of models (`LanguageModel.Provider`).

Each module is an `Upstream`: it tells the CLI how to reach the gateway for its models, finds the run
token in a call, and serves an authorised call. The platform's own calls in the worker (a title, a chat
run's answer) are shaped as the upstream's CLI would send them (`side_call`). `gateway.server.UPSTREAMS`
maps providers to them; a new provider is a new module here and one line there.
"""

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web

from gateway.calls import RunCalls, SideCall


class EventDecoder(Protocol):
    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        """The Anthropic stream events (`message_start`, `content_block_delta`, …) that `chunk` completes."""
        ...


class Upstream(Protocol):
    def cli_environment(self, base_url: str, token: str) -> Mapping[str, str]:
        """The CLI's variables that send its model calls to the gateway at `base_url` with the run's `token`."""
        ...

    def call_token(self, request: web.BaseRequest) -> str:
        """The run token a call of the CLI carries ("" if none)."""
        ...

    async def serve(self, calls: RunCalls, request: web.BaseRequest) -> web.StreamResponse:
        """Answer a call whose token has been checked: refuse it, or relay the model's answer, metered."""
        ...

    def side_call(
        self, token: str, request: dict[str, Any], *, stream: bool = False, betas: Sequence[str] = ()
    ) -> SideCall:
        """The platform's own Messages call `request` (Anthropic's body, naming its model), as this upstream's
        CLI would send it to the gateway with `token` and the API's beta features `betas`; the answer is one
        Anthropic message, or with `stream` its events in the upstream's framing (`stream_events`)."""
        ...

    def stream_events(self) -> EventDecoder:
        """A reader of one streamed answer's events, in the framing this upstream's answers stream in."""
        ...
