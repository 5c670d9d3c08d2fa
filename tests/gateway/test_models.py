"""A run that may call several catalog models: each call is budgeted and metered at the model it names,
and a call naming a model the run was not given is refused, without ending the run."""

import asyncio
import itertools
import json
import logging
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations.models import Conversation, Run
from gateway.calls import models_by_id
from gateway.server import ModelGateway
from sandbox.launcher import BUNDLED_CLI, agent_environment
from tenants.models import LanguageModel, Tenant
from tests.factories import LanguageModelFactory, RunFactory
from usage.models import BudgetReservation, UsageRecord

pytestmark = pytest.mark.django_db(transaction=True)


def offline_model(model_id: str, **prices: Decimal) -> LanguageModel:
    """A catalog model the gateway serves in-process (the offline model), at Sonnet's prices unless told."""
    model = LanguageModelFactory(
        id=model_id, provider=LanguageModel.Provider.OFFLINE, provider_model_id=f"offline-{model_id}", **prices
    )
    return LanguageModel.objects.get(pk=model.pk)  # read back: prices are the Decimals the database returns


@pytest.fixture
def main() -> LanguageModel:
    return offline_model("main")


@pytest.fixture
def fallback() -> LanguageModel:
    """Cheaper than the run's model: Haiku's prices."""
    return offline_model(
        "fallback",
        input_price=Decimal("1"),
        output_price=Decimal("5"),
        cache_write_5m_price=Decimal("1.25"),
        cache_write_1h_price=Decimal("2"),
        cache_read_price=Decimal("0.10"),
    )


@pytest.fixture
def run(tenant: Tenant, main: LanguageModel) -> Run:
    conversation = Conversation.objects.create(tenant=tenant, model=main, user_id="alice")
    return RunFactory(conversation=conversation)


CALLS = itertools.count()


def request_naming(model_id: str | None, max_tokens: int = 100) -> dict[str, Any]:
    """A new call (the offline model's message id is its body's digest) of 1000 input and 100 output tokens."""
    body: dict[str, Any] = {
        "max_tokens": max_tokens,
        "stream": True,
        "messages": [{"role": "user", "content": f"Hello {next(CALLS)} [[usage input=1000 output=100]]"}],
    }
    return body if model_id is None else {"model": model_id, **body}


async def call(gateway: ModelGateway, body: dict[str, Any]) -> tuple[int, str]:
    assert gateway.socket_path is not None
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(gateway.socket_path))) as session,
        session.post("http://gateway/v1/messages?beta=true", json=body, headers={"x-api-key": gateway.token}) as answer,
    ):
        return answer.status, await answer.text()


def records(run: Run) -> list[tuple[str, str, Decimal]]:
    """The run's calls: (model, the model of the price charged, cost)."""
    rows = UsageRecord.objects.filter(run=run).select_related("price").order_by("created_at")
    return [(row.model_id, row.price.model_id if row.price else "", row.cost_usd) for row in rows]


# (1000 input, 100 output) tokens at Sonnet's (3, 15) and Haiku's (1, 5) USD per million.
AT_MAIN, AT_FALLBACK = Decimal("0.0045"), Decimal("0.0015")


@pytest.mark.asyncio
async def test_each_call_is_metered_at_the_price_of_the_model_it_names(
    run: Run, main: LanguageModel, fallback: LanguageModel, tmp_path: Path
) -> None:
    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock", models=models_by_id([fallback])) as gateway:
        by_fallback = await call(gateway, request_naming("offline-fallback"))
        by_main = await call(gateway, request_naming("offline-main"))

    assert (by_fallback[0], by_main[0]) == (200, 200)
    assert await sync_to_async(records)(run) == [("fallback", "fallback", AT_FALLBACK), ("main", "main", AT_MAIN)]


@pytest.mark.asyncio
async def test_a_call_naming_no_model_is_the_runs_own(run: Run, fallback: LanguageModel, tmp_path: Path) -> None:
    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock", models=models_by_id([fallback])) as gateway:
        status, _ = await call(gateway, request_naming(None))

    assert status == 200  # the offline model answers it; Anthropic's refuses it with a 400, which is not metered
    assert await sync_to_async(records)(run) == [("main", "main", AT_MAIN)]


@pytest.mark.asyncio
async def test_a_call_naming_a_model_the_run_was_not_given_is_refused_and_the_run_goes_on(
    run: Run, fallback: LanguageModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.calls")
    run.budget_calls = 5  # so that a reservation would be made, were the call admitted
    await sync_to_async(run.save)()
    refusals: list[tuple[str, str, Any]] = []

    async with ModelGateway(
        run,
        socket_path=tmp_path / "gateway.sock",
        models=models_by_id([fallback]),
        on_refusal=lambda *refusal: refusals.append(refusal),
    ) as gateway:
        refused = await call(gateway, request_naming("claude-opus-4-1"))
        afterwards = await call(gateway, request_naming("offline-main"))

    assert refused[0] == 403
    assert json.loads(refused[1])["error"] == {
        "type": "permission_error",
        "message": "This run may not call model claude-opus-4-1; it may call offline-fallback, offline-main.",
    }
    # Not the run's end: the CLI may carry on (a side call, a subagent), and does here.
    assert refusals == []
    assert afterwards[0] == 200
    assert await sync_to_async(records)(run) == [("main", "main", AT_MAIN)]
    assert not await sync_to_async(BudgetReservation.objects.exists)()
    assert "a call naming model 'claude-opus-4-1' was refused" in caplog.text
    assert [r.levelname for r in caplog.records if "refused" in r.message] == ["INFO"]


@pytest.mark.asyncio
async def test_the_budget_holds_the_worst_case_of_the_model_a_call_names(
    run: Run, fallback: LanguageModel, tmp_path: Path
) -> None:
    # A call of 1000 output tokens may cost $0.015 on the run's model and $0.005 on the fallback.
    run.budget_usd = Decimal("0.01")
    await sync_to_async(run.save)()
    refusals: list[tuple[str, str, Any]] = []

    async with ModelGateway(
        run,
        socket_path=tmp_path / "gateway.sock",
        models=models_by_id([fallback]),
        on_refusal=lambda *refusal: refusals.append(refusal),
    ) as gateway:
        by_fallback = await call(gateway, request_naming("offline-fallback", max_tokens=1000))
        by_main = await call(gateway, request_naming("offline-main", max_tokens=1000))

    assert (by_fallback[0], by_main[0]) == (200, 403)
    assert json.loads(by_main[1])["error"]["message"] == "This message has reached its budget."
    assert [refusal[0] for refusal in refusals] == ["budget_exceeded"]
    assert await sync_to_async(records)(run) == [("fallback", "fallback", AT_FALLBACK)]


async def queries_of_one_call(gateway: ModelGateway, model_id: str) -> list[str]:
    """The queries of one call, made where the gateway reaches the database: asgiref's thread-sensitive
    thread, like every `sync_to_async` call of the run (`connection` is that thread's there)."""
    capture = CaptureQueriesContext(connection)
    await sync_to_async(capture.__enter__)()
    status, _ = await call(gateway, request_naming(model_id))
    await sync_to_async(capture.__exit__)(None, None, None)
    assert status == 200
    return await sync_to_async(lambda: [query["sql"] for query in capture.captured_queries])()


@pytest.mark.asyncio
async def test_finding_a_calls_model_asks_the_database_nothing(
    run: Run, fallback: LanguageModel, tmp_path: Path
) -> None:
    run.budget_calls = 10  # the budgets' queries too
    await sync_to_async(run.save)()

    async with ModelGateway(run, socket_path=tmp_path / "gateway.sock", models=models_by_id([fallback])) as gateway:
        await call(gateway, request_naming("offline-main"))  # the first call of a run makes its counters
        await call(gateway, request_naming("offline-fallback"))
        by_main = await queries_of_one_call(gateway, "offline-main")
        by_fallback = await queries_of_one_call(gateway, "offline-fallback")

    # As many as a run's every call made when it could call only its own model (measured on main: 9):
    # the budget's terms and hold; the price in effect, then BEGIN, SAVEPOINT, the record, RELEASE,
    # the budgets' settlement and COMMIT.
    assert len(by_main) == len(by_fallback) == 9, by_fallback
    assert not any("tenants_languagemodel" in sql for sql in by_main + by_fallback)


def test_a_model_of_another_provider_is_not_given_to_the_run_and_the_operator_is_told(
    run: Run, fallback: LanguageModel, caplog: pytest.LogCaptureFixture
) -> None:
    bedrock = LanguageModelFactory(
        id="bedrock-haiku", provider=LanguageModel.Provider.BEDROCK, provider_model_id="anthropic.claude-haiku"
    )

    gateway = ModelGateway(run, models=models_by_id([fallback, bedrock]))

    # Its calls would reach the run's upstream (here the offline model), priced as Bedrock's.
    assert gateway.calls.models == {"offline-fallback": fallback, "offline-main": run.model}
    assert "cannot call anthropic.claude-haiku: not served by Offline model (not Claude)" in caplog.text


def test_the_runs_own_model_wins_its_id_over_another_catalog_model_with_the_same(run: Run, main: LanguageModel) -> None:
    twin = offline_model("main-twin")
    twin.provider_model_id = main.provider_model_id

    gateway = ModelGateway(run, models={main.provider_model_id: twin})

    assert gateway.calls.models == {"offline-main": run.model}


# --- the CLI's own choices ----------------------------------------------------------------------


def test_every_model_the_cli_chooses_itself_is_the_runs_unless_told_otherwise() -> None:
    chosen = ("ANTHROPIC_DEFAULT_HAIKU_MODEL", "ANTHROPIC_SMALL_FAST_MODEL", "CLAUDE_CODE_SUBAGENT_MODEL")
    aliases = ("ANTHROPIC_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL")

    plain = agent_environment(model_id="claude-sonnet-4-5", config_dir=Path("/c"), gateway={})
    told = agent_environment(
        model_id="claude-sonnet-4-5",
        config_dir=Path("/c"),
        gateway={},
        small_model_id="claude-haiku-4-5",
        subagent_model_id="claude-opus-4-1",
    )

    assert {plain[name] for name in chosen + aliases} == {"claude-sonnet-4-5"}
    assert [told[name] for name in chosen] == ["claude-haiku-4-5", "claude-haiku-4-5", "claude-opus-4-1"]
    assert {told[name] for name in aliases} == {"claude-sonnet-4-5"}


@pytest.mark.asyncio
@pytest.mark.cli
async def test_the_real_cli_falling_back_to_its_fallback_model_is_metered_at_the_fallbacks_price(
    run: Run, fallback: LanguageModel, tmp_path: Path
) -> None:
    cwd, home = tmp_path / "work", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()

    async with ModelGateway(run, models=models_by_id([fallback])) as gateway:  # unsandboxed: on a loopback port
        env = agent_environment(
            model_id="offline-main", config_dir=home / ".claude", gateway=gateway.cli_environment(gateway.base_url)
        )
        env |= {"HOME": str(home), "IS_SANDBOX": "1"}  # as root (the tests), bypassPermissions needs it
        # The CLI 2.1.327 switches to its fallback model after three "overloaded" answers in a row.
        process = await asyncio.create_subprocess_exec(
            str(BUNDLED_CLI),
            *("-p", "hello [[error 529 times=3]] [[usage input=1000 output=100]]"),
            *("--output-format", "stream-json", "--verbose", "--permission-mode", "bypassPermissions"),
            *("--model", "offline-main", "--fallback-model", "offline-fallback"),
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=90)

    assert process.returncode == 0, stderr.decode() + stdout.decode()
    messages = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    assert [m["fallback_model"] for m in messages if m.get("subtype") == "model_fallback"] == ["offline-fallback"]
    assert messages[-1]["type"] == "result" and messages[-1]["is_error"] is False
    # The overloaded answers are not billed; the answer is, at the fallback's price.
    assert await sync_to_async(records)(run) == [("fallback", "fallback", AT_FALLBACK)]
