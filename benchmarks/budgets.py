"""What budgets add to a model call at the gateway: the same Messages call with no budget, and with all four.

Two tenants on the offline model: one with no budget at all (the gateway reserves nothing), one
whose calls are capped at every level (the tenant's month, the end user's day and month, the
conversation and the run), so each call reserves its worst case on five counters before it goes
upstream and its record replaces the reservation. Each call is a whole streamed Messages call
through a real `ModelGateway` (its token, the offline upstream, metering), with a body the size of
a CLI request's (some 40 KB); calls alternate between the two, after warm-ups, and each budgeted
call is compared with the free call made beside it (goal: under 2 ms added at p50).
"""

import asyncio
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchmarks.measure import percentile, size

CALLS = size(300, 5)
WARM_UP = size(30, 1)
# A CLI request carries its system prompt, tools and history: tens of kilobytes.
BODY = json.dumps(
    {
        "model": "offline-1",
        "max_tokens": 32000,
        "stream": True,
        "system": [{"type": "text", "text": "You are a helpful agent. " * 1600}],
        "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
    }
).encode()


def figures(tenant: Any, work: Path) -> dict[str, float]:
    from benchmarks.sandbox import bench_run
    from runs.services import create_conversation
    from tenants.models import Tenant

    capped = Tenant.objects.create(
        id="bench-budgets",
        name="Bench budgets",
        default_model=tenant.default_model,
        monthly_budget_usd=Decimal("100000"),
        user_daily_budget_usd=Decimal("100000"),
        user_monthly_budget_calls=10_000_000,
        conversation_budget_calls=10_000_000,
    )
    free_run = bench_run(create_conversation(tenant, user_id="ada", title="bench: no budget"), "bench")
    capped_run = bench_run(create_conversation(capped, user_id="ada", title="bench: budgets"), "bench")
    capped_run.budget_usd = Decimal("100000")
    capped_run.save(update_fields=["budget_usd"])
    (free, free_start), (budgeted, budgeted_start) = asyncio.run(_calls(free_run, capped_run))
    # Each budgeted call against the free call made beside it: the machine's drift cancels out.
    added = [with_budgets - without for without, with_budgets in zip(free, budgeted, strict=True)]
    added_start = [with_budgets - without for without, with_budgets in zip(free_start, budgeted_start, strict=True)]
    return {
        "calls": len(free),
        "free_p50": percentile(free, 0.5),
        "free_p99": percentile(free, 0.99),
        "budgeted_p50": percentile(budgeted, 0.5),
        "budgeted_p99": percentile(budgeted, 0.99),
        "added_p50": percentile(added, 0.5),
        "added_p90": percentile(added, 0.9),
        "added_start_p50": percentile(added_start, 0.5),
        "body_kb": len(BODY) / 1024,
    }


Timings = tuple[list[float], list[float]]


async def _calls(free_run: Any, capped_run: Any) -> tuple[Timings, Timings]:
    """Milliseconds per Messages call through each run's gateway, interleaved: to its answer's last byte, and
    to its answer's start (the reservation comes before the call goes upstream; its release at the end)."""
    import aiohttp

    from gateway.server import ModelGateway

    async with (
        ModelGateway(free_run) as free,
        ModelGateway(capped_run) as capped,
        aiohttp.ClientSession() as http,
    ):
        timings: dict[Any, Timings] = {free: ([], []), capped: ([], [])}
        for n in range(WARM_UP + CALLS):
            for gateway in (free, capped) if n % 2 else (capped, free):
                started = time.perf_counter()
                async with http.post(
                    f"{gateway.base_url}/v1/messages", data=BODY, headers={"x-api-key": gateway.token}
                ) as response:
                    answering = time.perf_counter()
                    answer = await response.read()
                ended = time.perf_counter()
                if response.status != 200 or b"message_stop" not in answer:
                    raise RuntimeError(f"the gateway answered {response.status}: {answer[:300]!r}")
                if n >= WARM_UP:
                    timings[gateway][0].append((ended - started) * 1000)
                    timings[gateway][1].append((answering - started) * 1000)
    return timings[free], timings[capped]


def rows(figures: dict[str, float]) -> list[tuple[str, str]]:
    if not figures:
        return []
    return [
        (
            "budget reservation per model call",
            f"{figures['added_start_p50']:+.2f} ms p50   (before the call goes upstream: to the answer's start, paired"
            " with the free call beside it; goal < 2 ms)",
        ),
        (
            "  the whole call",
            f"{figures['added_p50']:+.2f} ms p50   (with the reservation's release and the spend on five budgets in"
            f" the call's record; p90 {figures['added_p90']:+.2f} ms; no budget {figures['free_p50']:.2f} ms,"
            f" five budgets {figures['budgeted_p50']:.2f} ms)",
        ),
        (
            "  model call p99",
            f"no budget {figures['free_p99']:.2f} ms, five budgets {figures['budgeted_p99']:.2f} ms"
            f"   ({figures['calls']:.0f} calls each way, interleaved, {figures['body_kb']:.0f} KB requests)",
        ),
    ]
