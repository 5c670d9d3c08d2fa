"""A `chat` agent's first token: POST /messages → the first `message.delta` on a WebSocket, against calling the
model's upstream directly (goal: within 1.05x).

The upstream is Anthropic-compatible and on loopback (aiohttp, in a thread of the bench's own process): it
checks the API key, waits FIRST_TOKEN_SECONDS as a real model does before its first token, then streams a
short answer, a word every DELTA_SECONDS. The platform's worker reaches it as the Anthropic upstream
(`ANTHROPIC_BASE_URL`), for a catalog model of provider `anthropic` that the chat agent runs on; the direct
client posts the same streamed Messages call to it with a fresh connection, as a one-shot client would. The
two alternate, after warm-ups.
`BENCH_CHAT_FIRST_TOKEN_SECONDS` sets the upstream's delay (0.3 s: a fast model's first token).
"""

import asyncio
import json
import statistics
import threading
import time
from typing import Any

import httpx

from benchmarks.measure import platform_run, size

RUNS = size(20, 2, "BENCH_CHAT_RUNS")
FIRST_TOKEN_SECONDS = size(0.3, 0.3, "BENCH_CHAT_FIRST_TOKEN_SECONDS")
ANSWER_WORDS = 20
DELTA_SECONDS = 0.015  # a word every 15 ms after the first, as a model streams
UPSTREAM_KEY = "bench-upstream-key"
MODEL_ID = "claude-bench-chat"
PROMPT = "Say hello to the benchmark."


class Upstream:
    """An Anthropic-compatible Messages endpoint on a loopback port, in a thread of its own."""

    def __init__(self) -> None:
        self.url = ""
        self.calls = 0
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._serve, args=(started,), daemon=True, name="bench-upstream").start()
        if not started.wait(10):
            raise RuntimeError("the bench's upstream did not start")

    @property
    def platform_env(self) -> dict[str, str]:
        """What the platform's processes need to call it as their Anthropic upstream."""
        return {"ANTHROPIC_BASE_URL": self.url, "ANTHROPIC_API_KEY": UPSTREAM_KEY}

    def _serve(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = self._loop.run_until_complete(self._start())
        started.set()
        self._loop.run_forever()

    async def _start(self) -> Any:
        from aiohttp import web

        runner = web.ServerRunner(web.Server(self._handle, access_log=None))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return runner

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        if request.path != "/v1/messages" or request.headers.get("x-api-key") != UPSTREAM_KEY:
            return web.json_response(
                {"type": "error", "error": {"type": "not_found_error", "message": "no"}}, status=404
            )
        body = await request.json()
        self.calls += 1
        await asyncio.sleep(FIRST_TOKEN_SECONDS)
        events = answer_events(body, self.calls)
        if not body.get("stream"):  # the conversation's title, which a first turn asks for beside its answer
            text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
            message = {**events[0]["message"], "content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}
            return web.json_response({**message, "usage": events[-2]["usage"]})
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        try:
            for event in events:
                if event["type"] == "content_block_delta" and event["delta"]["text"] != "word1 ":
                    await asyncio.sleep(DELTA_SECONDS)
                await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            await response.write_eof()
        except ConnectionResetError:
            pass  # the direct client hangs up at its first token: that is all it measures
        return response


def answer_events(body: dict[str, Any], number: int) -> list[dict[str, Any]]:
    words = [f"word{n} " for n in range(1, ANSWER_WORDS + 1)]
    usage = {"input_tokens": max(1, len(json.dumps(body["messages"])) // 4), "output_tokens": 0}
    message = {"id": f"msg_bench_{number}", "type": "message", "role": "assistant", "model": body["model"]}
    return [
        {"type": "message_start", "message": {**message, "content": [], "stop_reason": None, "usage": usage}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}} for w in words),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {**usage, "output_tokens": len(words)},
        },
        {"type": "message_stop"},
    ]


def direct_first_token(upstream: Upstream) -> float:
    """Seconds from a fresh client's POST to the first text delta, straight from the upstream."""
    body = {
        "model": MODEL_ID,
        "max_tokens": 1024,
        "stream": True,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    headers = {"x-api-key": UPSTREAM_KEY, "anthropic-version": "2023-06-01"}
    # Made before the clock starts: an httpx client builds an SSL context (tens of ms) even for http.
    with httpx.Client(timeout=30) as client:
        started = time.perf_counter()
        with client.stream("POST", f"{upstream.url}/v1/messages", json=body, headers=headers) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and '"text_delta"' in line:
                    return time.perf_counter() - started
    raise RuntimeError("the upstream's answer had no text")


def chat_client(base_url: str) -> Any:
    """A tenant whose default agent is a chat on the loopback upstream's model, and its client application."""
    from decimal import Decimal

    from agents.services import AgentSpec, create_profile
    from tenants.models import ApiKey, LanguageModel, Tenant
    from tenants.services import save_language_model
    from tests.e2e.harness import Client

    model = save_language_model(
        LanguageModel(
            id="bench-chat-model",
            display_name="Bench chat model (loopback upstream)",
            provider=LanguageModel.Provider.ANTHROPIC,
            provider_model_id=MODEL_ID,
            input_price=Decimal("3"),
            output_price=Decimal("15"),
        )
    )
    tenant = Tenant.objects.create(id="bench-chat", name="Bench chat", default_model=model)
    create_profile(tenant, "chat", AgentSpec(kind="chat", instructions="Be brief."), is_default=True)
    return Client(base_url, tenant.pk, ApiKey.issue("bench chat", tenant=tenant)[1])


def figures(client: Any, upstream: Upstream) -> dict[str, float]:
    direct_first_token(upstream)  # warm-ups: imports, the worker's first chat, connections
    platform_run(client, PROMPT)
    direct, ours = [], []
    for _ in range(RUNS):  # interleaved, so that machine noise hits both alike
        direct.append(direct_first_token(upstream))
        ours.append(platform_run(client, PROMPT)["first_text"])
    return {
        "runs": RUNS,
        "direct": statistics.median(direct),
        "platform": statistics.median(ours),
        "ratio": statistics.median(ours) / statistics.median(direct),
        "added_p50": statistics.median(o - d for o, d in zip(ours, direct, strict=True)),
    }


def rows(found: dict[str, float]) -> list[tuple[str, str]]:
    if not found:
        return []
    return [
        (
            "chat agent: POST → first token",
            f"{found['platform'] * 1000:.1f} ms   (upstream directly: {found['direct'] * 1000:.1f} ms; "
            f"its first token after {FIRST_TOKEN_SECONDS * 1000:.0f} ms; median of {found['runs']:.0f})",
        ),
        ("  platform / upstream directly", f"{found['ratio']:.3f}x   (goal ≤ 1.05x)"),
        (
            "  added by the platform (p50)",
            f"{found['added_p50'] * 1000:.1f} ms   (within 1.05x for a first token after "
            f"{found['added_p50'] / 0.05:.1f} s or more)",
        ),
    ]
