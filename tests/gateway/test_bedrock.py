"""The gateway's Bedrock upstream: SigV4-signed forwarding, event-stream metering, and the real CLI in Bedrock mode.

The upstream here is a fake Bedrock on loopback that checks every request's SigV4 signature by
recomputing it with botocore, and answers with the offline model's events in AWS event-stream framing.
"""

import asyncio
import base64
import json
import logging
import re
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from asgiref.sync import sync_to_async
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pytest_django.fixtures import Settings

from agents.services import AgentSpec, create_profile
from conversations.models import Conversation, Event, Run
from gateway.calls import models_by_id
from gateway.metering import SSEDecoder
from gateway.server import ModelGateway
from gateway.upstreams import bedrock, offline
from gateway.upstreams.bedrock import EventStreamUsageTap, control_plane_url
from runs.executor import execute_run
from runs.services import RunOptions, create_conversation, start_run
from sandbox.launcher import BUNDLED_CLI, agent_environment
from tenants.models import LanguageModel, Tenant
from usage.models import UsageRecord

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

MODEL_ID = "anthropic.claude-sonnet-4-5-20250929-v1:0"
HAIKU_ID = "anthropic.claude-haiku-4-5-20251001-v1:0"
KEY_ID, SECRET, SESSION_TOKEN, REGION = "AKIDBEDROCKTEST", "test-secret-key", "test-session-token", "eu-west-1"
STREAM_PATH = f"/model/{MODEL_ID}/invoke-with-response-stream"
REQUEST = {
    "anthropic_version": "bedrock-2023-05-31",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Hello [[usage input=10 output=5 cache_read=3]]"}],
}
AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/bedrock/aws4_request, "
    r"SignedHeaders=(?P<signed>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})"
)


# --- a fake Bedrock ---------------------------------------------------------------------------


def event_stream_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (lengths + CRC), string headers, payload, message CRC."""
    encoded = b"".join(
        bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def chunk_frame(event: dict[str, Any]) -> bytes:
    payload = {"bytes": base64.b64encode(json.dumps(event).encode()).decode(), "p": "abcdef"}
    headers = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    return event_stream_frame(headers, json.dumps(payload).encode())


async def offline_events(bedrock_body: bytes, model_id: str) -> list[dict[str, Any]]:
    """The offline model's streamed events for a Bedrock request body (which has no model or stream)."""
    request = {**json.loads(bedrock_body), "model": model_id, "stream": True}
    reply = await offline.respond("/v1/messages", json.dumps(request).encode(), {})
    decoder, events = SSEDecoder(), []
    async for chunk in reply.body:
        events += [json.loads(data) for _, data in decoder.feed(chunk)]
    return events


def signature_problem(request: web.Request, body: bytes) -> str | None:
    """Why the request's SigV4 signature is not what botocore computes from the test credentials, or None."""
    match = AUTHORIZATION.fullmatch(request.headers.get("Authorization", ""))
    if not match:
        return f"unexpected Authorization {request.headers.get('Authorization')!r}"
    if (match["key"], match["region"]) != (KEY_ID, REGION):
        return f"signed for {match['key']} in {match['region']}"
    signed = {name: request.headers[name] for name in match["signed"].split(";")}
    aws_request = AWSRequest(
        method=request.method, url=f"http://{request.host}{request.raw_path}", data=body, headers=signed
    )
    aws_request.context["timestamp"] = request.headers["X-Amz-Date"]
    signer = SigV4Auth(Credentials(KEY_ID, SECRET, SESSION_TOKEN), "bedrock", REGION)
    expected = signer.signature(signer.string_to_sign(aws_request, signer.canonical_request(aws_request)), aws_request)
    return None if expected == match["signature"] else "signature mismatch"


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: dict[str, str]
    body: bytes
    signature_problem: str | None


@dataclass
class FakeBedrock:
    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)  # each answer's body, exactly as written

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        problem = signature_problem(request, body)
        self.seen.append(Seen(request.method, request.raw_path, dict(request.headers), body, problem))
        if problem:
            return web.json_response({"message": f"The request signature is wrong: {problem}"}, status=403)
        if request.method == "GET" and request.path == "/inference-profiles":
            profile = {"inferenceProfileId": f"eu.{MODEL_ID}", "type": "SYSTEM_DEFINED", "status": "ACTIVE"}
            return web.json_response({"inferenceProfileSummaries": [profile]})
        match = re.fullmatch(r"/model/([^/]+)/(invoke|invoke-with-response-stream)", request.path)
        if request.method != "POST" or not match:
            return web.json_response({"message": "UnknownOperationException"}, status=404)
        events = await offline_events(body, match[1])
        if match[2] == "invoke":
            message = {**events[0]["message"], "content": [], "usage": events[-2]["usage"]}
            return web.json_response(message, headers={"X-Amzn-Bedrock-Output-Token-Count": "5"})
        # Like Bedrock, message_stop carries the invocation metrics.
        events[-1]["amazon-bedrock-invocationMetrics"] = {"inputTokenCount": 10, "outputTokenCount": 5}
        stream = b"".join(chunk_frame(event) for event in events)
        self.sent.append(stream)
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await response.prepare(request)
        for start in range(0, len(stream), 37):  # pieces that split frames anywhere
            await response.write(stream[start : start + 37])
            await asyncio.sleep(0)
        await response.write_eof()
        return response


@pytest_asyncio.fixture
async def fake_bedrock() -> AsyncIterator[FakeBedrock]:
    fake = FakeBedrock()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


@pytest.fixture
def aws(settings: Settings, fake_bedrock: FakeBedrock, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The platform's Bedrock settings point at the fake; botocore's default chain finds nothing else."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    settings.BEDROCK_BASE_URL = fake_bedrock.url
    settings.AWS_REGION_NAME = REGION
    settings.AWS_ACCESS_KEY_ID = KEY_ID
    settings.AWS_SECRET_ACCESS_KEY = SECRET
    settings.AWS_SESSION_TOKEN = SESSION_TOKEN
    return settings


@pytest.fixture
def run(tenant: Tenant) -> Run:
    model = LanguageModel.objects.create(
        id="bedrock-sonnet",
        display_name="Claude Sonnet 4.5 on Bedrock",
        provider=LanguageModel.Provider.BEDROCK,
        provider_model_id=MODEL_ID,
        input_price=Decimal("3"),
        output_price=Decimal("15"),
        cache_read_price=Decimal("0.30"),
    )
    conversation = Conversation.objects.create(tenant=tenant, model=model)
    return Run.objects.create(conversation=conversation, model=model, input="Hello")


async def call(
    gateway: ModelGateway,
    path: str,
    token: str | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    """A call of the CLI's Bedrock client: the token is the first path segments, and x-api-key is sent too."""
    assert gateway.socket_path is not None
    token = gateway.token if token is None else token
    headers = {"x-api-key": token, "anthropic-beta": "claude-code-20250219", "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(gateway.socket_path))) as session,
        session.request(
            method,
            f"http://gateway/run-token/{token}{path}",
            data=json.dumps(REQUEST) if method == "POST" else None,
            headers=headers,
        ) as response,
    ):
        return response.status, dict(response.headers), await response.read()


def records(run: Run) -> list[tuple[str, int, int, int]]:
    rows = UsageRecord.objects.filter(run=run).order_by("created_at")
    return [(r.message_id, r.input_tokens, r.output_tokens, r.cache_read_tokens) for r in rows]


def assert_signed_and_clean(seen: Seen, token: str) -> None:
    """Signed for the test key by SigV4, and nothing of the CLI's credentials or Anthropic headers got through."""
    assert seen.signature_problem is None, seen.signature_problem
    assert seen.headers["Authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY_ID}/")
    assert f"/{REGION}/bedrock/aws4_request" in seen.headers["Authorization"]
    assert re.fullmatch(r"\d{8}T\d{6}Z", seen.headers["X-Amz-Date"])
    assert seen.headers["X-Amz-Security-Token"] == SESSION_TOKEN
    lowered = {name.lower() for name in seen.headers}
    assert not lowered & {"x-api-key", "anthropic-beta", "anthropic-version", "x-claude-code-session-id"}
    assert token not in json.dumps(seen.headers) and token not in seen.raw_path and "run-token" not in seen.raw_path


# --- the gateway ------------------------------------------------------------------------------


async def test_a_streamed_answer_is_signed_relayed_byte_for_byte_and_metered_once(
    run: Run, aws: Settings, fake_bedrock: FakeBedrock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock") as gateway:
        token = gateway.token
        status, headers, body = await call(gateway, STREAM_PATH)

    [seen] = fake_bedrock.seen
    assert status == 200
    assert headers["Content-Type"] == "application/vnd.amazon.eventstream"
    assert body == fake_bedrock.sent[0]
    assert seen.method == "POST"
    # Bedrock wants the `:` of the model id percent-encoded (SigV4 then encodes the path once more).
    assert seen.raw_path == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
    assert json.loads(seen.body) == REQUEST
    assert_signed_and_clean(seen, token)
    [(message_id, *figures)] = await sync_to_async(records)(run)
    assert message_id.startswith("msg_offline_") and figures == [10, 5, 3]
    assert token not in caplog.text  # the path carries it: no access log may show it


async def test_a_non_streaming_invoke_is_metered_from_its_json_answer(
    run: Run, aws: Settings, fake_bedrock: FakeBedrock, tmp_path: Path
) -> None:
    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock") as gateway:
        status, headers, body = await call(gateway, f"/model/{MODEL_ID}/invoke")

    assert status == 200
    assert json.loads(body)["type"] == "message"
    assert headers["X-Amzn-Bedrock-Output-Token-Count"] == "5"
    assert fake_bedrock.seen[0].raw_path == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    assert [figures for _, *figures in await sync_to_async(records)(run)] == [[10, 5, 3]]


async def test_a_side_call_is_an_invoke_signed_and_metered_like_the_clis_calls(
    run: Run, aws: Settings, fake_bedrock: FakeBedrock, tmp_path: Path
) -> None:
    request = {"model": MODEL_ID, "max_tokens": 32, "system": "Name it.", "messages": REQUEST["messages"]}

    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock") as gateway:
        side_token = gateway.side_token
        message = await gateway.side_call(request)

    [seen] = fake_bedrock.seen
    assert seen.raw_path == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    assert json.loads(seen.body) == {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 32,
        "system": "Name it.",
        "messages": REQUEST["messages"],
    }
    assert_signed_and_clean(seen, side_token)
    assert message["type"] == "message"
    assert [figures for _, *figures in await sync_to_async(records)(run)] == [[10, 5, 3]]


async def test_the_inference_profiles_listing_is_signed_and_forwarded_but_not_metered(
    run: Run, aws: Settings, fake_bedrock: FakeBedrock, tmp_path: Path
) -> None:
    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock") as gateway:
        token = gateway.token
        status, _, body = await call(gateway, "/inference-profiles?type=SYSTEM_DEFINED", method="GET")

    [seen] = fake_bedrock.seen
    assert status == 200
    assert json.loads(body)["inferenceProfileSummaries"][0]["inferenceProfileId"] == f"eu.{MODEL_ID}"
    assert (seen.method, seen.raw_path) == ("GET", "/inference-profiles?type=SYSTEM_DEFINED")
    assert_signed_and_clean(seen, token)
    assert await sync_to_async(records)(run) == []


async def test_a_wrong_header_only_or_revoked_token_is_403_and_nothing_reaches_bedrock(
    run: Run, aws: Settings, fake_bedrock: FakeBedrock, tmp_path: Path
) -> None:
    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock") as gateway:
        wrong = await call(gateway, STREAM_PATH, token="run_guessed-token")
        profiles = await call(gateway, "/inference-profiles", token="run_guessed-token", method="GET")
        unix = aiohttp.UnixConnector(path=str(gateway.socket_path))
        async with (
            aiohttp.ClientSession(connector=unix) as session,
            session.post(f"http://gateway{STREAM_PATH}", json=REQUEST, headers={"x-api-key": gateway.token}) as answer,
        ):
            header_only = answer.status, {}, await answer.read()
        token = gateway.token
        gateway.revoke()
        revoked = await call(gateway, STREAM_PATH, token=token)

    for status, _, body in (wrong, profiles, header_only, revoked):
        assert status == 403
        assert json.loads(body)["error"] == {"type": "permission_error", "message": "Unknown or revoked run token."}
    assert fake_bedrock.seen == []


async def test_without_aws_credentials_every_call_is_refused_with_403_saying_so(
    run: Run, aws: Settings, fake_bedrock: FakeBedrock, tmp_path: Path
) -> None:
    aws.AWS_ACCESS_KEY_ID = aws.AWS_SECRET_ACCESS_KEY = aws.AWS_SESSION_TOKEN = ""
    refusals: list[tuple[str, str]] = []

    gateway_for_run = ModelGateway(run, socket_path=tmp_path / "gateway.sock", on_refusal=lambda *r: refusals.append(r))
    async with gateway_for_run as gateway:
        answers = [
            await call(gateway, STREAM_PATH),
            await call(gateway, "/inference-profiles?type=SYSTEM_DEFINED", method="GET"),
        ]

    for status, _, body in answers:
        assert status == 403
        error = json.loads(body)["error"]
        assert error["type"] == "permission_error"
        assert "no AWS credentials" in error["message"] and "AWS_ACCESS_KEY_ID" in error["message"]
    assert fake_bedrock.seen == []
    # The run is told, so it ends now rather than after the CLI's minutes of retries.
    assert {refusal[0] for refusal in refusals} == {"credentials_missing"}


async def test_without_credentials_in_settings_botocores_default_chain_signs(
    run: Run, aws: Settings, fake_bedrock: FakeBedrock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws.AWS_ACCESS_KEY_ID = aws.AWS_SECRET_ACCESS_KEY = aws.AWS_SESSION_TOKEN = ""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)

    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock") as gateway:
        token = gateway.token
        status, _, _ = await call(gateway, STREAM_PATH)

    assert status == 200
    assert_signed_and_clean(fake_bedrock.seen[0], token)


async def test_a_call_for_a_model_the_run_was_not_given_is_refused_before_it_reaches_bedrock(
    run: Run, aws: Settings, fake_bedrock: FakeBedrock, tmp_path: Path
) -> None:
    refusals: list[tuple[str, str]] = []

    async with ModelGateway(
        run, socket_path=tmp_path / "gateway.sock", on_refusal=lambda *refusal: refusals.append(refusal)
    ) as gateway:
        status, _, body = await call(
            gateway, "/model/anthropic.claude-opus-4-1-20250805-v1:0/invoke-with-response-stream"
        )

    # A 400: in Bedrock mode the CLI retries a 403 for minutes, and ends its turn at a 400 at once.
    assert status == 400
    assert json.loads(body)["error"] == {
        "type": "permission_error",
        "message": f"This run may not call model anthropic.claude-opus-4-1-20250805-v1:0; it may call {MODEL_ID}.",
    }
    assert fake_bedrock.seen == []
    assert refusals == []  # the CLI may carry on without that call
    assert await sync_to_async(records)(run) == []


async def test_a_call_for_another_model_the_run_was_given_is_budgeted_and_priced_at_that_model(
    run: Run, aws: Settings, fake_bedrock: FakeBedrock, tmp_path: Path
) -> None:
    haiku = await sync_to_async(LanguageModel.objects.create)(
        id="bedrock-haiku",
        display_name="Claude Haiku 4.5 on Bedrock",
        provider=LanguageModel.Provider.BEDROCK,
        provider_model_id=HAIKU_ID,
        input_price=Decimal("1"),
        output_price=Decimal("5"),
        cache_read_price=Decimal("0.10"),
    )
    # A call of 100 output tokens may cost $0.0005 on Haiku, $0.0015 on the run's Sonnet.
    run.budget_usd = Decimal("0.001")
    await sync_to_async(run.save)()

    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock", models=models_by_id([haiku])) as gateway:
        by_haiku = await call(gateway, f"/model/{HAIKU_ID}/invoke-with-response-stream")
        by_sonnet = await call(gateway, STREAM_PATH)

    assert (by_haiku[0], by_sonnet[0]) == (200, 403)
    assert json.loads(by_sonnet[2])["error"]["message"] == "This message has reached its budget."
    assert [seen.raw_path for seen in fake_bedrock.seen] == [
        "/model/anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke-with-response-stream"
    ]
    [record] = await sync_to_async(list)(UsageRecord.objects.filter(run=run).select_related("price"))
    assert record.model_id == "bedrock-haiku"
    assert record.price is not None and record.price.model_id == "bedrock-haiku"
    assert record.cost_usd == (10 * Decimal(1) + 5 * Decimal(5) + 3 * Decimal("0.10")) / 1_000_000


async def test_past_the_budget_model_calls_are_refused_but_the_listing_is_not(
    run: Run, aws: Settings, fake_bedrock: FakeBedrock, tmp_path: Path
) -> None:
    run.budget_calls = 1
    await sync_to_async(run.save)()
    refusals: list[tuple[str, str]] = []

    async with ModelGateway(
        run, socket_path=tmp_path / "gateway.sock", on_refusal=lambda *refusal: refusals.append(refusal)
    ) as gateway:
        first = await call(gateway, STREAM_PATH)
        second = await call(gateway, STREAM_PATH)
        listing = await call(gateway, "/inference-profiles?type=SYSTEM_DEFINED", method="GET")

    assert (first[0], second[0], listing[0]) == (200, 403, 200)
    assert json.loads(second[2])["error"]["message"] == "This message has reached its budget."
    assert [refusal[0] for refusal in refusals] == ["budget_exceeded"]
    assert [seen.method for seen in fake_bedrock.seen] == ["POST", "GET"]
    assert len(await sync_to_async(records)(run)) == 1


# --- pieces -----------------------------------------------------------------------------------


async def test_the_event_stream_tap_reads_usage_from_frames_split_anywhere() -> None:
    events = await offline_events(json.dumps(REQUEST).encode(), MODEL_ID)
    stream = b"".join(chunk_frame(event) for event in events)

    for size in (1, 7, len(stream)):
        tap = EventStreamUsageTap()
        for start in range(0, len(stream), size):
            tap.feed(stream[start : start + size])
        tap.close()

        assert tap.complete and tap.message_id == events[0]["message"]["id"]
        assert (tap.usage["input_tokens"], tap.usage["output_tokens"], tap.usage["cache_read_input_tokens"]) == (
            10,
            5,
            3,
        )


async def test_the_event_stream_tap_notes_an_exception_and_survives_garbage() -> None:
    throttled = event_stream_frame(
        {":exception-type": "throttlingException", ":content-type": "application/json", ":message-type": "exception"},
        b'{"message": "Too many requests"}',
    )
    tap, garbage = EventStreamUsageTap(), EventStreamUsageTap()

    tap.feed(throttled)
    garbage.feed(b"\x00\x00\x00\x10 not an event stream at all")
    garbage.feed(b"more")

    assert tap.error == {"type": "throttlingException", "message": "Too many requests"}
    assert not garbage.has_usage


async def test_the_listing_goes_to_the_control_plane_beside_an_aws_runtime_endpoint() -> None:
    assert (
        control_plane_url("https://bedrock-runtime.eu-west-1.amazonaws.com")
        == "https://bedrock.eu-west-1.amazonaws.com"
    )
    assert (
        control_plane_url("https://bedrock-runtime-fips.us-east-1.amazonaws.com/")
        == "https://bedrock-fips.us-east-1.amazonaws.com"
    )
    assert control_plane_url("http://127.0.0.1:9000/bedrock/") == "http://127.0.0.1:9000/bedrock"


async def test_a_bedrock_agents_environment_has_the_run_token_in_the_base_url_and_no_aws_secret(
    aws: Settings,
) -> None:
    env = agent_environment(
        model_id=MODEL_ID, config_dir=Path("/c"), gateway=bedrock.cli_environment("http://127.0.0.1:8765", "run_tok")
    )

    assert env["CLAUDE_CODE_USE_BEDROCK"] == env["CLAUDE_CODE_SKIP_BEDROCK_AUTH"] == "1"
    assert env["ANTHROPIC_BEDROCK_BASE_URL"] == "http://127.0.0.1:8765/run-token/run_tok"
    assert env["AWS_REGION"] == REGION
    assert (
        env["ANTHROPIC_MODEL"] == env["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == env["CLAUDE_CODE_SUBAGENT_MODEL"] == MODEL_ID
    )
    assert not {"ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert not any(SECRET in value or SESSION_TOKEN in value for value in env.values())


# --- the real CLI -----------------------------------------------------------------------------


@pytest.mark.cli
async def test_the_real_cli_in_bedrock_mode_completes_a_tool_turn_through_the_gateway(
    run: Run, aws: Settings, fake_bedrock: FakeBedrock, tmp_path: Path
) -> None:
    cwd, home = tmp_path / "work", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()

    async with ModelGateway(run) as gateway:  # unsandboxed: on a loopback port
        token = gateway.token
        env = agent_environment(
            model_id=MODEL_ID, config_dir=home / ".claude", gateway=gateway.cli_environment(gateway.base_url)
        )
        # As root (the tests), the CLI refuses bypassPermissions unless told it is sandboxed.
        env |= {"HOME": str(home), "IS_SANDBOX": "1"}
        process = await asyncio.create_subprocess_exec(
            str(BUNDLED_CLI),
            *("-p", "make a file [[write hello.txt hi there]] [[usage input=10 output=5]]"),
            *("--output-format", "stream-json", "--verbose", "--permission-mode", "bypassPermissions"),
            *("--model", MODEL_ID),
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)

    assert process.returncode == 0, stderr.decode() + stdout.decode()
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    assert result["type"] == "result" and result["is_error"] is False
    assert result["result"].startswith(f"{offline.OFFLINE_LABEL} reply: make a file\n[Write result] ")
    assert (cwd / "hello.txt").read_text() == "hi there"
    calls = [(seen.method, seen.raw_path) for seen in fake_bedrock.seen]
    assert calls[0] == ("GET", "/inference-profiles?type=SYSTEM_DEFINED")
    assert calls[1:] == [("POST", "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream")] * 2
    for seen in fake_bedrock.seen:
        assert_signed_and_clean(seen, token)
    assert [figures for _, *figures in await sync_to_async(records)(run)] == [[10, 5, 0], [10, 5, 0]]


# --- a chat agent (no CLI) ----------------------------------------------------------------------


async def test_a_chat_agent_on_bedrock_streams_its_answer_through_the_gateway_signed_and_metered(
    run: Run, aws: Settings, fake_bedrock: FakeBedrock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runs.services.dispatch_run", lambda run_id: None)
    tenant = run.conversation.tenant
    await sync_to_async(create_profile)(tenant, "helper", AgentSpec(kind="chat", model="bedrock-sonnet"))
    conversation = await sync_to_async(create_conversation)(tenant, agent="helper", title="Hi")
    chat = await sync_to_async(start_run)(conversation, RunOptions("Hi [[words 3]] [[usage input=10 output=5]]"))

    await execute_run(chat.pk)

    [seen] = fake_bedrock.seen
    assert seen.raw_path == "/model/anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
    assert_signed_and_clean(seen, "run_")
    sent = json.loads(seen.body)
    assert sent["anthropic_version"] == "bedrock-2023-05-31" and not {"model", "stream"} & set(sent)
    events = [(event.type, event.data) async for event in Event.objects.filter(run=chat).order_by("seq")]
    deltas = [data["text"] for kind, data in events if kind == "message.delta"]
    assert "".join(deltas) == "word1 word2 word3" and len(deltas) == 3
    [usage] = [data for kind, data in events if kind == "usage"]
    assert (usage["model"], usage["input_tokens"], usage["output_tokens"]) == ("bedrock-sonnet", 10, 5)
    assert events[-1][0] == "run.completed" and events[-1][1]["result"] == "word1 word2 word3"
