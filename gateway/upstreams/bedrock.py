"""The gateway's Bedrock upstream: which calls it forwards, how it signs them, how it meters them.

The CLI in Bedrock mode (`CLAUDE_CODE_USE_BEDROCK=1`, `CLAUDE_CODE_SKIP_BEDROCK_AUTH=1`) sends unsigned
requests to the gateway: `GET /inference-profiles?type=SYSTEM_DEFINED` from its AWS SDK (an API of the
Bedrock control plane), then `POST /model/<id>/invoke-with-response-stream` (or `/invoke`) with an
Anthropic body. The gateway signs them with SigV4 using the platform's AWS credentials, which never
enter the sandbox. A streamed answer is AWS event-stream framing: each `chunk` event's payload is
`{"bytes": base64(Anthropic streaming event JSON)}`.
"""

import asyncio
import base64
import binascii
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import aiohttp
import botocore.session
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError
from botocore.exceptions import BotoCoreError
from django.conf import settings
from yarl import URL

from gateway.calls import RunCalls, SideCall, error_response
from gateway.metering import UsageTap

logger = logging.getLogger(__name__)

# The signing name of both bedrock-runtime (invoke) and the bedrock control plane (inference profiles).
SIGNING_NAME = "bedrock"
PROFILES_PATH = "/inference-profiles"
INVOKE_PATH = re.compile(r"^/model/(?P<model>.+)/(?P<action>invoke|invoke-with-response-stream)$")
STREAMING_ACTION = "invoke-with-response-stream"
# The only headers of the CLI's that are forwarded (and signed): never its token or Anthropic headers.
FORWARDED_REQUEST_HEADERS = ("content-type", "accept")
FORWARDED_RESPONSE_HEADERS = ("content-type", "x-amzn-requestid", "x-amzn-errortype", "retry-after")
FORWARDED_RESPONSE_PREFIX = "x-amzn-bedrock-"  # invocation latency, token counts of /invoke
# The CLI's Bedrock clients send no credential, and its AWS SDK call ignores ANTHROPIC_CUSTOM_HEADERS,
# so a Bedrock run's token travels as the first segments of the base URL's path, which both keep.
RUN_PATH_PREFIX = "/run-token/"
# What a Bedrock body carries in place of the Anthropic API's version header.
ANTHROPIC_VERSION = "bedrock-2023-05-31"


def cli_environment(base_url: str, token: str) -> Mapping[str, str]:
    """Bedrock mode, unsigned (the gateway signs with the platform's AWS credentials, which the CLI never sees)."""
    return {
        "CLAUDE_CODE_USE_BEDROCK": "1",
        "CLAUDE_CODE_SKIP_BEDROCK_AUTH": "1",
        "ANTHROPIC_BEDROCK_BASE_URL": f"{base_url.rstrip('/')}{RUN_PATH_PREFIX}{token}",
        "AWS_REGION": settings.AWS_REGION_NAME,
    }


def call_token(request: web.BaseRequest) -> str:
    return path_token(request.raw_path)[0]


def side_call(token: str, request: dict[str, Any], *, stream: bool = False, betas: Sequence[str] = ()) -> SideCall:
    """A Bedrock `invoke` (or, streamed, `invoke-with-response-stream`): the model is named in the path, the API
    version and betas in the body."""
    body = {key: value for key, value in request.items() if key not in ("model", "stream")}
    body["anthropic_version"] = ANTHROPIC_VERSION
    if betas:
        body["anthropic_beta"] = list(betas)
    action = STREAMING_ACTION if stream else "invoke"
    path = f"{RUN_PATH_PREFIX}{token}/model/{quote(request['model'], safe='')}/{action}"
    # A stream's framing is AWS event-stream, whatever the call accepts.
    headers = {"content-type": "application/json", **({} if stream else {"accept": "application/json"})}
    return SideCall(path, headers, json.dumps(body).encode())


def path_token(raw_path: str) -> tuple[str, str]:
    """The token of a path `/run-token/<token>/rest?query`, and `/rest?query` (the raw path, still quoted)."""
    if not raw_path.startswith(RUN_PATH_PREFIX):
        return "", raw_path
    token, slash, rest = raw_path.removeprefix(RUN_PATH_PREFIX).partition("/")
    return token, slash + rest


async def serve(calls: RunCalls, request: web.BaseRequest) -> web.StreamResponse:
    """Sign the CLI's Bedrock call with the platform's AWS credentials and relay the answer; only
    model calls (`/model/<id>/invoke*`) are budget-checked and metered."""
    call = bedrock_call(request.method, path_token(request.raw_path)[1])
    if call is None:
        return error_response(
            404, "not_found_error", "The gateway forwards only Bedrock model calls and the inference-profiles listing."
        )
    body = await request.read()
    # A model the run was not given is refused with a 400: in Bedrock mode the CLI retries a 403 for some
    # four minutes (measured: 13 attempts over 250 s), and at a 400 ends its turn at once, showing the message.
    if call.is_model_call and (refusal := await calls.reserve(request, body, call.model_id, model_refusal_status=400)):
        return refusal
    credentials = await asyncio.to_thread(CREDENTIALS.current)
    if credentials is None:
        # Measured: in Bedrock mode the CLI takes a 403 for expired AWS credentials and retries it
        # for about four minutes before it shows this message (a 400 would end the turn at once).
        return calls.refuse(
            "credentials_missing",
            "The platform has no AWS credentials for Bedrock: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or give the worker an AWS role.",
        )
    headers = signed_headers(call, body, request.headers, credentials)
    try:
        async with calls.client_session().request(
            call.method, URL(call.url, encoded=True), data=body, headers=headers
        ) as upstream:
            tap: UsageTap | None = None
            if call.is_model_call and upstream.status == 200:
                tap = EventStreamUsageTap() if call.streaming else UsageTap()
            kept = response_headers(upstream.headers)
            return await calls.relay(request, upstream.status, kept, upstream.content.iter_any(), tap)
    except aiohttp.ClientError as exc:
        logger.warning("Bedrock upstream unreachable: %s", type(exc).__name__)
        return error_response(502, "api_error", f"The model upstream is unreachable ({type(exc).__name__}).")


@dataclass(frozen=True)
class BedrockCall:
    """One call the gateway makes upstream on the CLI's behalf."""

    method: str
    url: str  # percent-encoded exactly as signed; send it with yarl's `encoded=True`
    model_id: str | None = None  # set for the model calls (`/model/<id>/invoke*`), which are metered
    streaming: bool = False

    @property
    def is_model_call(self) -> bool:
        return self.model_id is not None


def bedrock_call(method: str, raw_path: str) -> BedrockCall | None:
    """The upstream call for a request of the CLI (raw path and query), or None when it is not forwarded."""
    path, _, query = raw_path.partition("?")
    if method == "GET" and path.rstrip("/") == PROFILES_PATH:
        # The query is re-encoded the way SigV4 canonicalizes it, so what is signed is what is sent.
        canonical_query = urlencode(parse_qsl(query, keep_blank_values=True), quote_via=quote)
        url = control_plane_url(settings.BEDROCK_BASE_URL) + PROFILES_PATH
        return BedrockCall("GET", f"{url}?{canonical_query}" if canonical_query else url)
    match = INVOKE_PATH.match(path)
    if method == "POST" and match:
        model_id = unquote(match["model"])
        # The CLI sends the `:` of ids like `…-v1:0` raw; Bedrock wants it (and `/` of ARNs) as %XX.
        url = f"{settings.BEDROCK_BASE_URL.rstrip('/')}/model/{quote(model_id, safe='')}/{match['action']}"
        return BedrockCall("POST", url, model_id, match["action"] == STREAMING_ACTION)
    return None


def control_plane_url(runtime_url: str) -> str:
    """Where `GET /inference-profiles` goes: the Bedrock control plane beside an AWS runtime endpoint.

    `https://bedrock-runtime.<region>.amazonaws.com` serves only the model calls; the listing lives at
    `https://bedrock.<region>.amazonaws.com`. Any other base URL (a proxy, a test double) serves both.
    """
    parts = urlsplit(runtime_url.rstrip("/"))
    host = parts.hostname or ""
    if host.startswith("bedrock-runtime") and host.endswith((".amazonaws.com", ".amazonaws.com.cn")):
        return urlunsplit(parts._replace(netloc=parts.netloc.replace("bedrock-runtime", "bedrock", 1)))
    return urlunsplit(parts)


class AwsCredentials:
    """The platform's AWS credentials: from settings, else botocore's default chain (env, config files,
    container or instance role). The chain is looked up once and then refreshes itself (role credentials
    expire); both may block on the instance metadata service, so call `current()` in a thread.
    """

    def __init__(self) -> None:
        self._chain: Credentials | None = None

    def current(self) -> ReadOnlyCredentials | None:
        if settings.AWS_ACCESS_KEY_ID and settings.AWS_SECRET_ACCESS_KEY:
            return ReadOnlyCredentials(
                settings.AWS_ACCESS_KEY_ID, settings.AWS_SECRET_ACCESS_KEY, settings.AWS_SESSION_TOKEN or None
            )
        try:
            if self._chain is None:
                self._chain = botocore.session.Session().get_credentials()
            frozen = self._chain.get_frozen_credentials() if self._chain is not None else None
        except BotoCoreError as exc:  # a broken config file, a role that cannot be assumed or refreshed
            logger.warning("AWS credentials could not be loaded: %s", exc)
            return None
        return frozen if frozen and frozen.access_key and frozen.secret_key else None


# One per process: botocore's chain refreshes role credentials itself.
CREDENTIALS = AwsCredentials()


def signed_headers(
    call: BedrockCall, body: bytes, headers: Mapping[str, str], credentials: ReadOnlyCredentials
) -> dict[str, str]:
    """The headers to send `call` with: the forwarded ones plus SigV4's `Authorization`, `X-Amz-Date`
    (and `X-Amz-Security-Token`), signed for the settings' region."""
    forwarded = {name: headers[name] for name in FORWARDED_REQUEST_HEADERS if name in headers}
    request = AWSRequest(method=call.method, url=call.url, data=body, headers=forwarded)
    SigV4Auth(credentials, SIGNING_NAME, settings.AWS_REGION_NAME).add_auth(request)
    return dict(request.headers.items())


def response_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The upstream answer's headers that reach the CLI."""
    return {
        name: value
        for name, value in headers.items()
        if name.lower() in FORWARDED_RESPONSE_HEADERS or name.lower().startswith(FORWARDED_RESPONSE_PREFIX)
    }


class EventStreamUsageTap(UsageTap):
    """A UsageTap for Bedrock's streamed answer: decodes its AWS event-stream frames as they pass
    (a frame may arrive split over several chunks) and observes the Anthropic event inside each."""

    def __init__(self) -> None:
        super().__init__()
        self._frames: EventStreamBuffer | None = EventStreamBuffer()

    def feed(self, chunk: bytes) -> None:
        if self._frames is None or not chunk:
            return
        self._frames.add_data(chunk)
        try:
            for message in self._frames:
                self._observe_frame(message)
        except ParserError as exc:
            # The bytes still reach the CLI unchanged; only this call's metering stops here.
            logger.warning("Unreadable Bedrock event stream, metering stops: %s", type(exc).__name__)
            self._frames = None

    def close(self) -> None:
        self._frames = None

    def _observe_frame(self, message: EventStreamMessage) -> None:
        event = frame_event(message)
        if event is not None:
            self.observe_event(event)


def frame_event(message: EventStreamMessage) -> dict[str, Any] | None:
    """The Anthropic event a Bedrock `chunk` frame carries, an `error` event for an exception frame, or None."""
    headers = message.headers
    try:
        payload = json.loads(message.payload)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    if headers.get(":message-type") == "exception":
        return {"type": "error", "error": {"type": headers.get(":exception-type"), "message": payload.get("message")}}
    if headers.get(":event-type") != "chunk" or not isinstance(payload.get("bytes"), str):
        return None
    try:
        event = json.loads(base64.b64decode(payload["bytes"]))
    except (ValueError, binascii.Error):
        return None
    return event if isinstance(event, dict) else None


class StreamEvents:
    """A Bedrock event stream's Anthropic events, decoded as its frames complete (split anywhere)."""

    def __init__(self) -> None:
        self._frames = EventStreamBuffer()

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        self._frames.add_data(chunk)
        events = []
        try:
            for message in self._frames:
                if (event := frame_event(message)) is not None:
                    events.append(event)
        except ParserError as exc:
            events.append(
                {"type": "error", "error": {"type": "api_error", "message": f"Unreadable event stream: {exc}"}}
            )
        return events


def stream_events() -> StreamEvents:
    return StreamEvents()
