"""The model gateway over its real Unix socket: tokens, budget refusals and metering."""

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from asgiref.sync import sync_to_async

from conversations.models import Conversation, Run
from gateway.server import ModelGateway, SideCallFailed
from tenants.models import Tenant
from tests.factories import LanguageModelFactory
from usage.models import UsageRecord

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

REQUEST = {
    "model": "offline-1",
    "max_tokens": 100,
    "stream": True,
    "messages": [{"role": "user", "content": "Hello [[usage input=10 output=5]]"}],
}


@pytest.fixture
def run(tenant: Tenant) -> Run:
    conversation = Conversation.objects.create(tenant=tenant, model=tenant.default_model)
    return Run.objects.create(conversation=conversation, model=conversation.model, input="Hello")


async def call(gateway: ModelGateway, token: str, body: dict | None = None) -> tuple[int, str]:
    assert gateway.socket_path is not None
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(gateway.socket_path))) as session,
        session.post(
            "http://gateway/v1/messages?beta=true", json=body or REQUEST, headers={"x-api-key": token}
        ) as response,
    ):
        return response.status, await response.text()


async def test_the_runs_token_gets_a_streamed_answer_metered_once(run: Run, tmp_path: Path) -> None:
    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock") as gateway:
        status, body = await call(gateway, gateway.token)

    records = await sync_to_async(list)(UsageRecord.objects.filter(run=run))
    assert status == 200
    assert "event: message_stop" in body
    assert [(r.input_tokens, r.output_tokens) for r in records] == [(10, 5)]


async def test_a_wrong_foreign_or_revoked_token_is_refused_with_403_and_never_logged(
    run: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with (
        ModelGateway(run, socket_path=tmp_path / "mine.sock") as gateway,
        ModelGateway(run, socket_path=tmp_path / "other.sock") as other,
    ):
        wrong = await call(gateway, "run_guessed-token")
        other_token = other.token
        foreign = await call(gateway, other_token)
        missing = await call(gateway, "")
        token = gateway.token
        gateway.revoke()
        revoked = await call(gateway, token)

    for status, body in (wrong, foreign, missing, revoked):
        assert status == 403
        assert json.loads(body)["error"] == {"type": "permission_error", "message": "Unknown or revoked run token."}
    assert token not in caplog.text and other_token not in caplog.text
    assert "run_guessed-token" not in caplog.text
    assert not await sync_to_async(UsageRecord.objects.filter(run=run).exists)()


async def test_the_token_dies_with_the_gateway(run: Run, tmp_path: Path) -> None:
    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock") as gateway:
        token = gateway.token

    assert gateway.token == ""
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(gateway, token)


async def test_a_call_past_the_budget_is_refused_before_it_reaches_the_model(run: Run, tmp_path: Path) -> None:
    run.budget_calls = 1
    await sync_to_async(run.save)()
    refusals: list[tuple[str, str]] = []

    async with ModelGateway(
        run, socket_path=tmp_path / "gateway.sock", on_refusal=lambda *refusal: refusals.append(refusal)
    ) as gateway:
        first = await call(gateway, gateway.token)
        second = await call(gateway, gateway.token)

    assert first[0] == 200
    assert second[0] == 403
    # The CLI may show the refusal's message: the end user's words, not the budget's figures.
    assert json.loads(second[1])["error"]["message"] == "This message has reached its budget."
    assert [refusal[0] for refusal in refusals] == ["budget_exceeded"]
    assert await sync_to_async(UsageRecord.objects.filter(run=run).count)() == 1


@pytest.fixture
def anthropic_run(tenant: Tenant) -> Run:
    model = LanguageModelFactory(id="claude", provider="anthropic", provider_model_id="claude-x")
    conversation = Conversation.objects.create(tenant=tenant, model=model)
    return Run.objects.create(conversation=conversation, model=model, input="Hello")


async def test_the_anthropic_upstream_relays_the_messages_api_and_nothing_else(
    anthropic_run: Run, tmp_path: Path, settings: Any
) -> None:
    seen: list[str] = []

    async def upstream(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"input_tokens": 3})

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", upstream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    settings.ANTHROPIC_BASE_URL, settings.ANTHROPIC_API_KEY = f"http://127.0.0.1:{port}", "sk-test-not-real"
    try:
        async with (
            ModelGateway(anthropic_run, socket_path=tmp_path / "gateway.sock") as gateway,
            aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(tmp_path / "gateway.sock"))) as session,
        ):
            headers = {"x-api-key": gateway.token}
            counted = await session.post("http://gateway/v1/messages/count_tokens", json=REQUEST, headers=headers)
            batches = await session.post("http://gateway/v1/messages/batches", json=REQUEST, headers=headers)
            models = await session.post("http://gateway/v1/models", json={}, headers=headers)
            statuses = (counted.status, batches.status, models.status)
            refusal = await batches.json()
    finally:
        await runner.cleanup()

    assert statuses == (200, 404, 404)
    assert "relays only /v1/messages" in refusal["error"]["message"]
    assert seen == ["/v1/messages/count_tokens"]


# --- side calls: the platform's own calls for the run (a conversation's title) ---------------------

SIDE_REQUEST = {
    "model": "offline-1",
    "max_tokens": 32,
    "messages": [{"role": "user", "content": "Name this [[reply Quarterly report]] [[usage input=10 output=2]]"}],
}


async def test_a_side_call_is_answered_and_metered_to_the_run_like_the_clis_calls(run: Run, tmp_path: Path) -> None:
    heard: list[UsageRecord] = []

    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock", on_usage=heard.append) as gateway:
        message = await gateway.side_call(SIDE_REQUEST)

    records = await sync_to_async(list)(UsageRecord.objects.filter(run=run))
    assert message["content"] == [{"type": "text", "text": "Quarterly report"}]
    assert [(r.message_id, r.input_tokens, r.output_tokens) for r in records] == [(message["id"], 10, 2)]
    assert [record.message_id for record in heard] == [message["id"]]


async def test_a_side_call_past_the_budget_is_refused_but_never_ends_the_run(run: Run, tmp_path: Path) -> None:
    run.conversation.budget_calls = 1
    await sync_to_async(run.conversation.save)()
    refusals: list[tuple[str, str]] = []

    async with ModelGateway(
        run, socket_path=tmp_path / "gateway.sock", on_refusal=lambda *refusal: refusals.append(refusal)
    ) as gateway:
        await gateway.side_call(SIDE_REQUEST)
        with pytest.raises(SideCallFailed) as refused:
            await gateway.side_call(SIDE_REQUEST)
        side_refusals = list(refusals)
        clis = await call(gateway, gateway.token)

    assert refused.value.status == 403 and "This conversation has reached its budget." in str(refused.value)
    assert side_refusals == []
    # The CLI's own call past the same budget does end the run.
    assert clis[0] == 403 and [refusal[0] for refusal in refusals] == ["budget_exceeded"]
    assert await sync_to_async(UsageRecord.objects.filter(run=run).count)() == 1


async def test_a_side_call_is_not_capped_by_the_runs_own_budget(run: Run, tmp_path: Path) -> None:
    run.budget_calls = 1
    await sync_to_async(run.save)()

    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock") as gateway:
        await gateway.side_call(SIDE_REQUEST)  # the conversation's title
        clis = await call(gateway, gateway.token)  # the agent's one call still fits the run's budget

    assert clis[0] == 200
    assert await sync_to_async(UsageRecord.objects.filter(run=run).count)() == 2


async def test_the_side_token_is_not_the_clis_and_dies_with_the_gateway(run: Run, tmp_path: Path) -> None:
    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock") as gateway:
        side_token = gateway.side_token
        environment = gateway.cli_environment("http://127.0.0.1:1")
        mcp = gateway.cli_mcp_servers("http://127.0.0.1:1")

    assert side_token and side_token != gateway.token
    assert side_token not in json.dumps([dict(environment), mcp])
    assert gateway.side_token == ""
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(gateway, side_token)
