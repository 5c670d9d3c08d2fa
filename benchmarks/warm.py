"""`make bench`, warm sessions (`BENCH_ONLY=warm`): a conversation's next turn sent into its live CLI, against a
cold turn (sandbox launch, CLI start, resume) and the bare SDK's cold turn, POST → first streamed text at the client
over WebSocket; and what a warm session costs in memory.

Cold and warm turns alternate, each conversation's first turn cold and its second warm, so that machine noise hits
both alike. Memory: the proportional set size (PSS: shared pages split among their sharers, so the CLI binary's
pages count once in all) of the worker and everything it started, while WARM_SESSIONS sessions are warm and nothing
runs, divided by them: each session's own processes plus its share of the worker.
"""

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.measure import percentile, platform_run, size
from runs.sessions import memory_bytes

RUNS = size(10, 1, "BENCH_WARM_RUNS")
WARM_SESSIONS = size(8, 2, "BENCH_WARM_SESSIONS")  # the default WARM_SESSIONS_MAX
PROMPT = "Say hello to the benchmark."
MB = 1024 * 1024


def figures(
    client: Any, worker_pid: int, bare_sdk: Callable[[], Awaitable[tuple[float, float]]] | None = None
) -> dict[str, Any]:
    found: dict[str, Any] = {"bare": [], "cold": [], "warm": [], "warm_served": 0}
    for _ in range(RUNS):
        if bare_sdk is not None:
            found["bare"].append(asyncio.run(bare_sdk())[0])
        conversation = client.create_conversation()
        cold = platform_run(client, PROMPT, conversation)
        warm = platform_run(client, PROMPT, conversation)
        found["cold"].append(cold["first_text"])
        found["warm"].append(warm["first_text"])
        found["warm_served"] += bool(warm["session"]["warm"])
    found.update(memory(client, worker_pid))
    return found


def memory(client: Any, worker_pid: int) -> dict[str, Any]:
    """The worker's and its warm sessions' PSS, with WARM_SESSIONS sessions warm."""
    pids = []
    for _ in range(WARM_SESSIONS):
        marks = platform_run(client, PROMPT)
        pids.append(marks["session"]["cli_pid"])
    time.sleep(1)  # the last run's ending (its context reading, its workspace's sync-out) is over
    sessions = sum(memory_bytes(pid) for pid in pids)
    whole = memory_bytes(worker_pid)
    return {"sessions": len(pids), "sessions_pss": sessions, "worker_tree_pss": whole}


def prewarmed_figures(client: Any, tenant: Any) -> dict[str, Any]:
    """POST → first text of new conversations' first turns, each handed a conversation made ahead (a platform with
    PREWARMED_SESSIONS=1: its worker makes the next one while the turn runs)."""
    from agents.services import default_profile
    from conversations.models import Conversation

    profile = default_profile(tenant)  # the agent of the conversations `platform_run` makes
    found: list[float] = []
    for _ in range(RUNS):
        deadline = time.monotonic() + 60
        ready = Conversation.all_objects.filter(tenant=tenant, agent=profile, reserved=True).exclude(warm_session="")
        while not ready.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no conversation was made ahead within 60 s")
            time.sleep(0.1)
        marks = platform_run(client, PROMPT)
        assert marks["session"]["prewarmed"], marks["session"]
        found.append(marks["first_text"])
    return {"prewarmed": found}


def rows(found: dict[str, Any]) -> list[tuple[str, str]]:
    if not found:
        return []

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.1f} ms p50, {percentile(values, 0.9) * 1000:.1f} p90"

    per_session = found["worker_tree_pss"] / found["sessions"] / MB
    own = found["sessions_pss"] / found["sessions"] / MB
    return [
        *([("bare SDK cold turn → first text", ms(found["bare"]))] if found["bare"] else []),
        ("our cold turn, POST → first text", f"{ms(found['cold'])}   (sandbox, CLI start, resume)"),
        (
            "our warm turn, POST → first text",
            f"{ms(found['warm'])}   (goal ≤ 60 ms p50; {found['warm_served']}/{len(found['warm'])} served warm)",
        ),
        *(
            [("first turn, pre-warmed sandbox → text", f"{ms(found['prewarmed'])}   (goal ≤ 100 ms p50)")]
            if "prewarmed" in found
            else []
        ),
        (
            "memory per warm session",
            f"{per_session:.0f} MB   (goal ≤ 150 MB: its processes {own:.0f} MB + its share of the worker; "
            f"{found['sessions']} warm)",
        ),
    ]
