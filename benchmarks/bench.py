"""`make bench`: what the platform adds to a run, measured against the bare SDK on the same machine.

Starts real Daphne and a real Celery worker on a scratch PostgreSQL database and Redis, then prints:
POST → first event and → terminal event against the bare SDK driving the CLI directly (same
offline model), worker → WebSocket latency per event (p50/p99), and events per second for one run.
Then what the sandbox costs (benchmarks/sandbox.py): bubblewrap's launch overhead against the
unsandboxed runner, the model gateway's latency per streamed chunk, real memory per concurrent
sandboxed session, and wall time for 10 and 20 concurrent sandboxed runs. Then streams
(benchmarks/streams.py): 1,000 idle WebSockets held by one Daphne for 60 s, their memory, and
live latency beside them. Workspaces (benchmarks/workspaces.py) and skills (benchmarks/skills.py):
sync and placement figures against S3 (moto). MCP (benchmarks/mcp.py): what the gateway's MCP relay
adds to a tool call against calling the server directly. Budgets (benchmarks/budgets.py): what
reserving a call's worst case on five budgets adds to a model call at the gateway. Reports
(benchmarks/reports.py): a month's usage report over 1,000,000 usage records. Chat (benchmarks/chat.py):
a `chat` agent's POST → first token against calling its (loopback, 300 ms to first token) upstream directly.
Warm sessions (benchmarks/warm.py): a conversation's next turn sent into its live CLI against a cold turn and the
bare SDK's, and the memory of a warm session. Approvals (benchmarks/approvals.py): a person's decision → the asked call's start, in-process and after
suspension. Egress (benchmarks/egress.py): what the sandbox's egress proxy adds per request, per CONNECT, and
its throughput. `BENCH_ONLY=events|warm|streams|workspaces|skills|mcp|egress|budgets|reports|chat|approvals` measures one part; `BENCH_QUICK=1` runs
each part once at small sizes, to show that every part still runs (CI does), not to measure.
"""

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from benchmarks.measure import QUICK, percentile, platform_run, size, stream_run

RUNS = size(10, 1, "BENCH_RUNS")
WORDS = size(3000, 200, "BENCH_WORDS")
PACED_WORDS = size(1000, 100)


def scratch_database(base_url: str) -> str:
    """A fresh database next to the configured one (its name + `_bench`, so that benches on other databases
    of the same server do not drop each other's)."""
    server, base_name = base_url.rsplit("/", 1)
    name = f"{base_name}_bench"
    admin_url = server + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


async def bare_sdk_run(base_url: str, prompt: str, work: Path) -> tuple[float, float]:
    """Seconds to the first streamed text and to the result, with the SDK driving the CLI directly."""
    from claude_agent_sdk import ClaudeAgentOptions, ResultMessage, query
    from claude_agent_sdk.types import StreamEvent

    config = Path(tempfile.mkdtemp(dir=work))
    options = ClaudeAgentOptions(
        model="offline-1",
        cwd=str(config),
        permission_mode="bypassPermissions",
        include_partial_messages=True,
        setting_sources=[],
        env={
            "ANTHROPIC_BASE_URL": base_url,
            "ANTHROPIC_API_KEY": "bench",
            "CLAUDE_CONFIG_DIR": str(config),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "IS_SANDBOX": "1",
        },
    )
    started = time.perf_counter()
    first = 0.0
    async for message in query(prompt=prompt, options=options):
        if not first and isinstance(message, StreamEvent) and message.event.get("type") == "content_block_delta":
            first = time.perf_counter() - started
        if isinstance(message, ResultMessage):
            return first, time.perf_counter() - started
    raise RuntimeError("the bare SDK run ended without a result")


def serve_offline_model_forever() -> tuple[Any, str]:
    """The offline model on a loopback port, served from a thread of its own for the bare SDK runs."""
    import threading

    loop = asyncio.new_event_loop()
    result: list[tuple[Any, str]] = []
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        result.append(loop.run_until_complete(serve_offline_model()))
        started.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True, name="offline-model").start()
    started.wait(10)
    return result[0]


async def serve_offline_model() -> tuple[Any, str]:
    from aiohttp import web

    from gateway.upstreams import offline

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        reply = await offline.respond(request.path, await request.read(), request.headers)
        response = web.StreamResponse(status=reply.status, headers={"content-type": reply.content_type})
        await response.prepare(request)
        async for chunk in reply.body:
            await response.write(chunk)
        return response

    runner = web.ServerRunner(web.Server(handle))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def main() -> None:
    base_db = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/agent_platform")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    os.environ["DATABASE_URL"] = scratch_database(base_db)
    os.environ["REDIS_URL"] = redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)

    from benchmarks import approvals as bench_approvals
    from benchmarks import budgets as bench_budgets
    from benchmarks import chat as bench_chat
    from benchmarks import egress as bench_egress
    from benchmarks import egress_tls as bench_egress_tls
    from benchmarks import events as bench_events
    from benchmarks import mcp as bench_mcp
    from benchmarks import reports as bench_reports
    from benchmarks import sandbox as bench_sandbox
    from benchmarks import skills as bench_skills
    from benchmarks import streams as bench_streams
    from benchmarks import warm as bench_warm
    from benchmarks import workspaces as bench_workspaces
    from tenants.models import ApiKey, Tenant
    from tenants.services import ensure_offline_model
    from tests.e2e.harness import Client, Platform

    tenant = Tenant.objects.create(id="bench", name="Bench", default_model=ensure_offline_model())
    key = ApiKey.issue("bench", tenant=tenant)[1]
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    only = os.environ.get("BENCH_ONLY", "")
    only_streams = only == "streams"
    if only == "workspaces":
        print_rows(bench_workspaces.rows(bench_workspaces.figures(tenant, work)), work)
        return
    if only == "skills":
        print_rows(bench_skills.rows(bench_skills.figures(tenant, work)), work)
        return
    if only == "mcp":
        print_rows(bench_mcp.rows(bench_mcp.figures(tenant, work)), work)
        return
    if only == "budgets":
        print_rows(bench_budgets.rows(bench_budgets.figures(tenant, work)), work)
        return
    if only == "reports":
        print_rows(bench_reports.rows(bench_reports.figures()), work)
        return
    if only == "egress":
        print_rows(
            [*bench_egress.rows(bench_egress.figures()), *bench_egress_tls.rows(bench_egress_tls.figures(work))], work
        )
        return
    # The chat agent's model upstream, which the platform's processes must know from their start.
    upstream = bench_chat.Upstream()
    if only == "approvals":
        approvals_platform = Platform(
            os.environ["DATABASE_URL"], redis_url, work, APPROVAL_WAIT_SECONDS=bench_approvals.WAIT_SECONDS
        )
        try:
            approvals_platform.start_web()
            approvals_platform.start_worker(concurrency=4)
            approval_figures = bench_approvals.figures(Client(approvals_platform.base_url, tenant.pk, key), tenant)
        finally:
            approvals_platform.stop()
        print_rows(bench_approvals.rows(approval_figures), work)
        return
    if only == "chat":
        chat_platform = Platform(os.environ["DATABASE_URL"], redis_url, work, **upstream.platform_env)
        try:
            chat_platform.start_web()
            chat_platform.start_worker(concurrency=4)
            chat_figures = bench_chat.figures(bench_chat.chat_client(chat_platform.base_url), upstream)
        finally:
            chat_platform.stop()
        print_rows(bench_chat.rows(chat_figures), work)
        return
    # In this process, before the platform starts, so that nothing else of the bench competes.
    only_streams = only_streams or only == "events"
    sandbox_in_process = {} if only_streams else bench_sandbox.in_process_figures(tenant, work)
    workspace_figures = {} if only_streams else bench_workspaces.figures(tenant, work)
    skill_figures = {} if only_streams else bench_skills.figures(tenant, work)
    mcp_figures = {} if only_streams else bench_mcp.figures(tenant, work)
    egress_figures = {} if only_streams else bench_egress.figures()
    egress_tls_figures = {} if only_streams else bench_egress_tls.figures(work)
    budget_figures = {} if only_streams else bench_budgets.figures(tenant, work)
    # The production heartbeat and staleness: the harness's 3 s (for quick crash tests) reaps live
    # runs whose heartbeat is late while 20 CLIs saturate two cores.
    platform = Platform(
        os.environ["DATABASE_URL"],
        redis_url,
        work,
        RUN_HEARTBEAT_SECONDS="2",
        RUN_STALE_AFTER_SECONDS="10",
        APPROVAL_WAIT_SECONDS=bench_approvals.WAIT_SECONDS,
        **upstream.platform_env,
    )
    platform.start_web()
    # WORKER_CONCURRENCY's default: a saturated thread-pool worker takes its next message up to 2 s
    # after a run ends (Celery's blocking loop polls the broker every 2 s), which is not what one
    # run on an idle platform costs.
    worker = platform.start_worker(concurrency=4)
    client = Client(platform.base_url, tenant.pk, key)
    prompt = "Say hello to the benchmark."
    try:
        if only == "events":
            platform_run(client, prompt)  # warm-up
            print_rows(bench_events.rows(bench_events.figures(client)), work)
            return
        if only == "warm":
            _, url = serve_offline_model_forever()
            asyncio.run(bare_sdk_run(url, prompt, work))  # warm-ups: first CLI start, imports, connections
            platform_run(client, prompt)
            warm_figures = bench_warm.figures(client, worker.pid, lambda: bare_sdk_run(url, prompt, work))
            event_figures = bench_events.figures(client)
            platform.stop()
            warm_figures.update(prewarmed_figures(os.environ["DATABASE_URL"], redis_url, work, tenant, key))
            print_rows([*bench_warm.rows(warm_figures), *bench_events.rows(event_figures)], work)
            return
        if only_streams:
            platform_run(client, prompt)  # warm-up
            print_rows(bench_streams.rows(bench_streams.figures(platform, client, tenant)), work)
            return
        _, url = serve_offline_model_forever()
        asyncio.run(bare_sdk_run(url, prompt, work))  # warm-ups: first CLI start, imports, connections
        platform_run(client, prompt)
        # Interleaved, so that machine noise (the CLI alone varies by ±100 ms) hits both alike.
        bare, ours = [], []
        for _ in range(RUNS):
            bare.append(asyncio.run(bare_sdk_run(url, prompt, work)))
            ours.append(platform_run(client, prompt))
        warm_figures = bench_warm.figures(client, worker.pid)
        # Latency at a steady 200 events/s (a fast model), throughput flat out.
        latencies, _, _ = stream_run(client, f"[[words {PACED_WORDS}]] [[slow {PACED_WORDS / 200}]]")
        _, events_per_second, deltas = stream_run(client, f"[[words {WORDS}]]")
        streams = bench_streams.figures(platform, client, tenant)
        chat_figures = bench_chat.figures(bench_chat.chat_client(platform.base_url), upstream)
        approval_figures = bench_approvals.figures(client, tenant)
        bench_sandbox.stop_worker(platform, worker)  # the next figures want a worker of their own
        sandbox_platform = bench_sandbox.platform_figures(platform, client)
    finally:
        platform.stop()
    warm_figures.update(prewarmed_figures(os.environ["DATABASE_URL"], redis_url, work, tenant, key))
    report_figures = bench_reports.figures()  # last: it leaves a million usage records behind

    bare_first = statistics.median(b[0] for b in bare)
    bare_total = statistics.median(b[1] for b in bare)
    first_event = statistics.median(m["first_event"] for m in ours)
    first_text = statistics.median(m["first_text"] for m in ours)
    terminal = statistics.median(m["terminal"] for m in ours)
    post = statistics.median(m["post_returned"] for m in ours)
    overhead_ms = (terminal - bare_total) * 1000
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    launch = sandbox_in_process["launch"]
    sandbox_launch_ms = launch["init_bubblewrap"] - launch["init_unsandboxed"]
    rows = [
        ("runs per figure (median)", f"{RUNS}"),
        ("POST /messages returned (202)", f"{post * 1000:.1f} ms"),
        ("POST → first event (run.queued)", f"{first_event * 1000:.1f} ms"),
        ("POST → first streamed text", f"{first_text * 1000:.1f} ms   (bare SDK: {bare_first * 1000:.1f} ms)"),
        ("POST → terminal event", f"{terminal * 1000:.1f} ms   (bare SDK: {bare_total * 1000:.1f} ms)"),
        ("platform / bare SDK, whole run", f"{terminal / bare_total:.3f}x"),
        (
            "platform overhead per run",
            f"{overhead_ms:.1f} ms   (the platform's runs are sandboxed, the bare SDK's not)",
        ),
        (
            "  without the sandbox launch",
            f"{overhead_ms - sandbox_launch_ms:.1f} ms   (goal < 100 ms; minus the launch overhead below)",
        ),
        ("worker → WebSocket latency p50", f"{p50:.2f} ms   (goal < 5 ms; {len(latencies)} events at 200/s)"),
        ("worker → WebSocket latency p99", f"{p99:.2f} ms"),
        ("events per second, one run", f"{events_per_second:,.0f}   ({deltas} text deltas)"),
        *bench_warm.rows(warm_figures),
        *bench_chat.rows(chat_figures),
        *bench_approvals.rows(approval_figures),
        *bench_sandbox.rows(sandbox_in_process, sandbox_platform),
        *bench_streams.rows(streams),
        *bench_workspaces.rows(workspace_figures),
        *bench_skills.rows(skill_figures),
        *bench_mcp.rows(mcp_figures),
        *bench_egress.rows(egress_figures),
        *bench_egress_tls.rows(egress_tls_figures),
        *bench_budgets.rows(budget_figures),
        *bench_reports.rows(report_figures),
    ]
    print_rows(rows, work)


def prewarmed_figures(database_url: str, redis_url: str, work: Path, tenant: Any, key: str) -> dict[str, Any]:
    """The pre-warmed first turns (benchmarks/warm.py), on a platform of their own that makes conversations ahead."""
    from benchmarks import warm as bench_warm
    from tests.e2e.harness import Client, Platform

    platform = Platform(database_url, redis_url, work, PREWARMED_SESSIONS="1")
    try:
        platform.start_web()
        platform.start_worker(concurrency=4)
        return bench_warm.prewarmed_figures(Client(platform.base_url, tenant.pk, key), tenant)
    finally:
        platform.stop()


def print_rows(rows: list[tuple[str, str]], work: Path) -> None:
    width = max(len(label) for label, _ in rows)
    print("\nAgent platform benchmark (offline model, real Daphne + Celery + PostgreSQL + Redis)")
    if QUICK:
        print("  QUICK MODE (BENCH_QUICK): each part once at small sizes; these are not measurements")
    for label, value in rows:
        print(f"  {label.ljust(width)}  {value}")
    print(f"  logs: {work}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
