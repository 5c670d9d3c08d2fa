"""The sandbox's figures for `make bench`: what bubblewrap and the model gateway cost a run.

- Launch overhead: the real launch path (`prepare_place` + `prepare_launch` + a `ModelGateway` +
  `ClaudeSDKClient`), in-process, with `SANDBOX_RUNNER` switched between bubblewrap and unsandboxed,
  interleaved; plus each launcher alone (with /usr/bin/true standing in for the CLI) and with the
  real CLI's `--version`.
- Gateway latency per streamed chunk: the offline model's SSE chunks timestamped where the model
  yields them and where a client (another process, like the CLI) receives them through the gateway's
  Unix socket, against the same reply consumed directly from `gateway.upstreams.offline.respond`.
- Real memory (PSS) per concurrent sandboxed session, and wall time for 10 and 20 concurrent runs,
  through the real platform (Daphne + a Celery worker with a thread per run).
"""

import asyncio
import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.measure import percentile, size

LAUNCHES = size(20, 1, "BENCH_LAUNCHES")
LAUNCHER_RUNS = size(20, 1)
CHUNK_WORDS = size(2000, 100)
PACED_SECONDS = CHUNK_WORDS / 500  # chunks at 500/s
MEMORY_SESSIONS = size(10, 2)
MEMORY_SLOW_SECONDS = size(15, 5)
CONCURRENT_RUNS = (10, 20) if size(True, False) else (2,)
CONCURRENT_PROMPT = "[[bash echo hi]]"
TRUE = "/usr/bin/true"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No per-request log lines (httpx, the gateway's access log) or expected warnings (the
    unsandboxed runner's) between the bench's own output."""
    loggers = {name: logging.getLogger(name) for name in ("httpx", "aiohttp.access", "sandbox.launcher")}
    levels = {name: logger.level for name, logger in loggers.items()}
    for logger in loggers.values():
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, logger in loggers.items():
            logger.setLevel(levels[name])


def clock() -> float:
    """CLOCK_MONOTONIC in seconds: one clock for this process and the client subprocess."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


# --- 1. launch overhead -------------------------------------------------------------------------


def bench_run(conversation: Any, text: str) -> Any:
    """A real Run row for the gateway to meter into; stored as completed so no reaper ever dispatches it."""
    from conversations.models import Run

    # A conversation names a model only to override its agent's: the tenant's default is what the bench runs on.
    model = conversation.model or conversation.tenant.default_model
    return Run.objects.create(conversation=conversation, model=model, input=text, status="completed")


async def timed_launch(run: Any) -> dict[str, float]:
    """One run's CLI through the real launch path; seconds for its setup, to `init`, to the first model call."""
    from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage, SystemMessage

    from runs.session_store import DatabaseSessionStore
    from sandbox.launcher import agent_environment, gateway_base_url, prepare_launch, prepare_place, sandbox_ids
    from skills.placement import place_skills
    from workspaces.services import workspace_dir

    stderr: list[str] = []
    marks: dict[str, float] = {}
    began = clock()
    place = prepare_place(str(run.pk), workspace_dir(run.conversation))
    try:
        # As runs.prepare does: the sandbox mounts the run's skills folder, so it must exist (here, empty).
        place_skills([], place.skills_dir)
        gateway = first_call_gateway()(run, socket_path=place.gateway_socket, owner=sandbox_ids())
        async with gateway:
            launch = prepare_launch(
                place,
                agent_environment(
                    model_id=run.model.provider_model_id,
                    config_dir=place.config_dir,
                    gateway=gateway.cli_environment(gateway_base_url(place, gateway.base_url)),
                ),
            )
            options = ClaudeAgentOptions(
                cli_path=launch.cli_path,
                env=launch.env,
                cwd=launch.cwd,
                model=run.model.provider_model_id,
                system_prompt={"type": "preset", "preset": "claude_code"},
                permission_mode="bypassPermissions",
                include_partial_messages=True,
                session_store=DatabaseSessionStore(run.conversation_id),
                setting_sources=[],
                stderr=stderr.append,
            )
            client = ClaudeSDKClient(options)
            launched = clock()
            marks["setup"] = launched - began
            try:
                await client.connect()
                await client.query(run.input)
                async for message in client.receive_response():  # ends after the ResultMessage
                    if isinstance(message, SystemMessage) and message.subtype == "init":
                        marks["init"] = clock() - launched
                    if isinstance(message, ResultMessage) and message.is_error:
                        raise RuntimeError(f"{launch.sandbox} launch ended in error: {message.result}")
            finally:
                await client.disconnect()
            if "init" not in marks or gateway.first_call is None:
                raise RuntimeError(f"{launch.sandbox} launch saw no init or no model call:\n" + "\n".join(stderr))
            marks["first_call"] = gateway.first_call - launched
    finally:
        place.remove()
    return marks


def first_call_gateway() -> type:
    from gateway.server import ModelGateway

    class FirstCall(ModelGateway):
        """The real gateway, noting when the first call reached it (instrumentation only)."""

        first_call: float | None = None

        async def handle(self, request: Any) -> Any:
            if self.first_call is None:
                self.first_call = clock()
            return await super().handle(request)

    return FirstCall


def time_command(args: list[str], env: dict[str, str], cwd: str) -> float:
    started = clock()
    subprocess.run(args, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return clock() - started


def launcher_costs(conversation: Any, runner: str) -> dict[str, list[float]]:
    """Seconds to start and end a process through a runner's launcher: /usr/bin/true as the CLI, and the CLI's --version."""
    from django.test import override_settings

    from gateway.upstreams import anthropic
    from sandbox.launcher import agent_environment, prepare_launch, prepare_place
    from skills.placement import place_skills
    from workspaces.services import workspace_dir

    times: dict[str, list[float]] = {"true": [], "version": []}
    with override_settings(SANDBOX_RUNNER=runner):
        place = prepare_place(f"launcher-{uuid.uuid4()}", workspace_dir(conversation))
        try:
            place_skills([], place.skills_dir)  # the sandbox mounts it, as in timed_launch
            # Nothing is called: the process ends before any request.
            gateway = anthropic.cli_environment("http://127.0.0.1:9", "none")
            launch = prepare_launch(
                place, agent_environment(model_id="offline-1", config_dir=place.config_dir, gateway=gateway)
            )
            for _ in range(LAUNCHER_RUNS):
                times["true"].append(time_command([launch.cli_path], {**launch.env, "AGENT_CLI": TRUE}, launch.cwd))
                times["version"].append(time_command([launch.cli_path, "--version"], launch.env, launch.cwd))
        finally:
            place.remove()
    return times


def direct_costs() -> dict[str, list[float]]:
    """The same processes started with no launcher at all."""
    from sandbox.launcher import BUNDLED_CLI

    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "DISABLE_AUTOUPDATER": "1"}
    times: dict[str, list[float]] = {"true": [], "version": []}
    for _ in range(LAUNCHER_RUNS):
        times["true"].append(time_command([TRUE], env, "/"))
        times["version"].append(time_command([str(BUNDLED_CLI), "--version"], env, "/"))
    return times


def launch_overhead(conversation: Any) -> dict[str, Any]:
    """Interleaved launches through both runners, after one warm-up each (the first copies the CLI)."""
    from django.test import override_settings

    from sandbox.launcher import BUBBLEWRAP, UNSANDBOXED

    marks: dict[str, list[dict[str, float]]] = {BUBBLEWRAP: [], UNSANDBOXED: []}
    order = [BUBBLEWRAP, UNSANDBOXED]
    for index in range(LAUNCHES + 1):
        for runner in order if index % 2 else reversed(order):  # ABBA, so drift hits both alike
            with override_settings(SANDBOX_RUNNER=runner):
                result = asyncio.run(timed_launch(bench_run(conversation, "Say hello to the benchmark.")))
            if index:  # the first round is the warm-up
                marks[runner].append(result)
    launchers = {runner: launcher_costs(conversation, runner) for runner in (BUBBLEWRAP, UNSANDBOXED)}
    launchers["direct"] = direct_costs()

    def median(runner: str, mark: str) -> float:
        return statistics.median(m[mark] for m in marks[runner]) * 1000

    def launcher(runner: str, what: str) -> float:
        return statistics.median(launchers[runner][what]) * 1000

    return {
        "launches": LAUNCHES,
        **{f"{mark}_{runner}": median(runner, mark) for runner in marks for mark in ("setup", "init", "first_call")},
        **{f"{what}_{runner}": launcher(runner, what) for runner in launchers for what in ("true", "version")},
    }


# --- 2. gateway latency per chunk ---------------------------------------------------------------


def stream_request(words: int, seconds: float | None) -> bytes:
    text = f"[[words {words}]]" + (f" [[slow {seconds}]]" if seconds else "")
    return json.dumps(
        {
            "model": "offline-1",
            "max_tokens": 32000,
            "stream": True,
            "messages": [{"role": "user", "content": text}],
        }
    ).encode()


async def stamped(chunks: AsyncIterator[bytes], yielded: list[float]) -> AsyncIterator[bytes]:
    """The offline model's chunks, each noted the moment the model yields it."""
    async for chunk in chunks:
        yielded.append(clock())
        yield chunk


async def direct_stream(body: bytes) -> tuple[list[float], list[float]]:
    """Yield and arrival times of each chunk consumed straight from `gateway.upstreams.offline.respond`."""
    from gateway.upstreams import offline

    reply = await offline.respond("/v1/messages", body, {"content-type": "application/json"})
    yielded: list[float] = []
    arrived: list[float] = []
    async for _ in stamped(reply.body, yielded):
        arrived.append(clock())
    return yielded, arrived


def stamping_gateway(yielded: list[float]) -> type:
    from gateway.calls import RunCalls
    from gateway.server import ModelGateway

    class StampingCalls(RunCalls):
        async def relay(self, request: Any, status: int, headers: dict[str, str], chunks: Any, *rest: Any) -> Any:
            return await super().relay(request, status, headers, stamped(chunks, yielded), *rest)

    class Stamping(ModelGateway):
        """The real gateway, noting when the model yields each chunk it relays (instrumentation only)."""

        def __init__(self, run: Any, **kwargs: Any) -> None:
            super().__init__(run, **kwargs)
            self.calls = StampingCalls(run)

    return Stamping


async def gateway_stream(run: Any, socket_path: Path, body: bytes) -> tuple[list[float], list[float]]:
    """Yield times (in the gateway) and arrival times (in a client process on the Unix socket) of each chunk."""
    yielded: list[float] = []
    async with stamping_gateway(yielded)(run, socket_path=socket_path) as gateway:
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.sandbox",
            "gateway-client",
            str(socket_path),
            gateway.token,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[1],
        )
        out, _ = await client.communicate(body)
        if client.returncode:
            raise RuntimeError("the gateway client failed")
    return yielded, json.loads(out)


async def gateway_client(socket_path: str, token: str) -> None:
    """Run in its own process, like the CLI: POST the request read from stdin and print each SSE event's arrival time."""
    import aiohttp

    body = sys.stdin.buffer.read()
    arrived: list[float] = []
    headers = {"x-api-key": token, "content-type": "application/json", "anthropic-version": "2023-06-01"}
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket_path)) as session,
        session.post("http://gateway/v1/messages", data=body, headers=headers) as response,
    ):
        assert response.status == 200, await response.text()
        pending = b""
        async for data in response.content.iter_any():
            now = clock()
            pending += data
            *events, pending = pending.split(b"\n\n")
            arrived.extend(now for _ in events)
    print(json.dumps(arrived))


def gateway_latency(conversation: Any, work: Path) -> dict[str, Any]:
    """Per chunk: arrival minus yield through the gateway, against the same directly; paced and flat out."""
    paced, flat = stream_request(CHUNK_WORDS, PACED_SECONDS), stream_request(CHUNK_WORDS, None)
    socket_dir = work / "gateway-bench"
    socket_dir.mkdir(exist_ok=True)

    async def measure(streams: dict[str, bytes]) -> dict[str, tuple[list[float], list[float]]]:
        results = {}
        for name, body in streams.items():
            run = await asyncio.to_thread(bench_run, conversation, body.decode())
            results[f"direct_{name}"] = await direct_stream(body)
            results[f"gateway_{name}"] = await gateway_stream(run, socket_dir / f"{name}.sock", body)
        return results

    asyncio.run(measure({"flat": flat}))  # warm-up: imports, the first DB connection, the client's start
    results = asyncio.run(measure({"paced": paced, "flat": flat}))
    for name, (yielded, arrived) in results.items():
        assert len(yielded) == len(arrived) >= CHUNK_WORDS, (name, len(yielded), len(arrived))

    def latencies(name: str) -> list[float]:
        yielded, arrived = results[name]
        return [(a - y) * 1000 for y, a in zip(yielded, arrived, strict=True)]

    def span(name: str) -> float:
        yielded, arrived = results[name]
        return arrived[-1] - yielded[0]

    direct, through = latencies("direct_paced"), latencies("gateway_paced")
    chunks = len(results["gateway_flat"][0])
    return {
        "chunks": len(through),
        "rate": CHUNK_WORDS / PACED_SECONDS,
        "direct_p50": percentile(direct, 0.5),
        "added_p50": percentile(through, 0.5) - percentile(direct, 0.5),
        "added_p99": percentile(through, 0.99) - percentile(direct, 0.99),
        "flat_chunks": chunks,
        "flat_direct_per_second": chunks / span("direct_flat"),
        "flat_gateway_per_second": chunks / span("gateway_flat"),
        "flat_added_per_chunk_us": (span("gateway_flat") - span("direct_flat")) / chunks * 1e6,
    }


def in_process_figures(tenant: Any, work: Path) -> dict[str, Any]:
    """Figures 1 and 2, in this process against the scratch database, with a RUN_ROOT the sandbox user can reach."""
    from django.test import override_settings

    from runs.services import create_conversation
    from tests.e2e.harness import sandbox_reachable_dir

    run_root = Path(sandbox_reachable_dir())
    try:
        with quiet(), override_settings(RUN_ROOT=run_root):
            conversation = create_conversation(tenant, title="bench: sandbox launch")
            return {"launch": launch_overhead(conversation), "gateway": gateway_latency(conversation, work)}
    finally:
        shutil.rmtree(run_root, ignore_errors=True)


# --- 3. memory per concurrent session -----------------------------------------------------------


def cgroup_pids(run_id: str) -> list[int] | None:
    from sandbox.limits import CGROUP_ROOT, PARENT

    for path in (CGROUP_ROOT / "memory" / PARENT / run_id, CGROUP_ROOT / PARENT / run_id):
        with contextlib.suppress(OSError):
            return [int(line) for line in (path / "cgroup.procs").read_text().split()]
    return None


def uid_pids(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
    return pids


def pss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def parent_pid(pid: int) -> int:
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return 0


def sample_memory(run_ids: list[str]) -> dict[str, Any]:
    """PSS of the runs' sandboxes (their cgroups' processes) and of the worker processes driving them."""
    from django.conf import settings

    from sandbox.launcher import sandbox_ids

    groups = [cgroup_pids(run_id) for run_id in run_ids]
    if all(pids is not None for pids in groups):
        sandboxed = {pid for pids in groups for pid in pids or []}
        source = "run cgroups"
    else:  # no cgroups on this host: every process of the sandbox uid (may include other runs)
        uid = sandbox_ids()[0] if os.geteuid() == 0 else settings.SANDBOX_UID
        sandboxed = set(uid_pids(uid))
        source = f"uid {uid}"
    drivers = {parent_pid(pid) for pid in sandboxed} - sandboxed - {0}
    return {
        "sandbox_kb": sum(pss_kb(pid) for pid in sandboxed),
        "sandbox_processes": len(sandboxed),
        "worker_kb": sum(pss_kb(pid) for pid in drivers),
        "worker_processes": len(drivers),
        "source": source,
    }


def memory_per_session(client: Any) -> dict[str, Any]:
    """N slow sandboxed runs at once; PSS sampled while every one of them is streaming its reply."""
    conversations = [client.create_conversation() for _ in range(MEMORY_SESSIONS)]
    prompt = f"Hold on. [[slow {MEMORY_SLOW_SECONDS}]]"
    run_ids = [client.send(conversation, prompt)["id"] for conversation in conversations]
    seen = {conversation: 0 for conversation in conversations}
    streaming: set[str] = set()
    deadline = time.monotonic() + 120

    def poll() -> set[str]:
        ended = set()
        for conversation in conversations:
            for event in client.events(conversation, after=seen[conversation]):
                seen[conversation] = event["seq"]
                if event["type"] == "message.delta":
                    streaming.add(conversation)
                if event["type"] in ("run.completed", "run.failed", "run.interrupted"):
                    ended.add(conversation)
        return ended

    while len(streaming) < len(conversations):
        if poll():
            raise RuntimeError("a run ended before all of them were streaming; raise MEMORY_SLOW_SECONDS")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(streaming)} of {len(conversations)} runs started streaming")
        time.sleep(0.2)
    samples = []
    for _ in range(5):
        samples.append(sample_memory(run_ids))
        time.sleep(0.3)
    overlapping = not poll()  # still all streaming after the last sample
    for conversation, run_id in zip(conversations, run_ids, strict=True):
        terminal = client.wait_for_terminal(conversation, run_id, timeout=120)
        assert terminal["type"] == "run.completed", terminal
    sandbox = statistics.median(s["sandbox_kb"] for s in samples) / 1024
    worker = statistics.median(s["worker_kb"] for s in samples) / 1024
    return {
        "sessions": MEMORY_SESSIONS,
        "sandbox_mb": sandbox / MEMORY_SESSIONS,
        "worker_mb": worker / MEMORY_SESSIONS,
        "processes": statistics.median(s["sandbox_processes"] for s in samples) / MEMORY_SESSIONS,
        "workers": max(s["worker_processes"] for s in samples),
        "source": samples[0]["source"],
        "overlapping": overlapping,
    }


# --- 4. wall time for concurrent runs ------------------------------------------------------------


def concurrent_runs(client: Any, count: int) -> dict[str, Any]:
    """`count` runs with one Bash call each, posted at once; first POST to last terminal event, and failures."""
    conversations = [client.create_conversation() for _ in range(count)]
    ready = threading.Barrier(count + 1, timeout=60)
    ends: list[tuple[float, str, str]] = [(0.0, "none", "")] * count

    def watch(index: int) -> None:
        with client.websocket(conversations[index]) as ws:
            ws.send(json.dumps({"type": "ping"}))
            assert json.loads(ws.recv(timeout=30))["type"] == "pong"
            ready.wait()
            try:
                while True:
                    frame = json.loads(ws.recv(timeout=180))
                    if frame.get("type") in ("run.completed", "run.failed", "run.interrupted"):
                        ends[index] = (clock(), frame["type"], str(frame.get("data", {}).get("result", "")))
                        return
            except TimeoutError:
                ends[index] = (clock(), "timeout", "")

    watchers = [threading.Thread(target=watch, args=(i,), daemon=True) for i in range(count)]
    for watcher in watchers:
        watcher.start()
    ready.wait()
    with ThreadPoolExecutor(count) as pool:
        started = clock()
        list(pool.map(lambda conversation: client.send(conversation, CONCURRENT_PROMPT), conversations))
    for watcher in watchers:
        watcher.join(240)
    failures = [end for end in ends if end[1] != "run.completed" or "[Bash result] hi" not in end[2]]
    return {
        "runs": count,
        "wall": max(end[0] for end in ends) - started,
        "failures": len(failures),
        "failure_kinds": sorted({end[1] for end in failures}),
    }


def stop_worker(platform: Any, worker: Any) -> None:
    """A warm shutdown of one idle worker (its pool would otherwise share the run queue)."""
    import signal

    os.kill(worker.pid, signal.SIGTERM)  # the main process only: it ends its pool itself
    try:
        worker.wait(30)
        platform.workers.remove(worker)
    except subprocess.TimeoutExpired:
        platform.kill(worker)


def platform_figures(platform: Any, client: Any) -> dict[str, Any]:
    """Figures 3 and 4, on a worker with a thread per run (the largest batch's size)."""
    worker = platform.start_worker("pool", concurrency=max(CONCURRENT_RUNS))
    try:
        with quiet():
            concurrent_runs(client, 2)  # warm-up: the pool's first runs (imports, connections)
            memory = memory_per_session(client)
            walls = [concurrent_runs(client, count) for count in CONCURRENT_RUNS]
    finally:
        stop_worker(platform, worker)
    return {"memory": memory, "walls": walls}


# --- the table ------------------------------------------------------------------------------------


def rows(inproc: dict[str, Any], platform: dict[str, Any]) -> list[tuple[str, str]]:
    launch, gateway, memory = inproc["launch"], inproc["gateway"], platform["memory"]
    bw, un = "bubblewrap", "unsandboxed"
    overhead = launch[f"init_{bw}"] - launch[f"init_{un}"]
    first_call = launch[f"first_call_{bw}"] - launch[f"first_call_{un}"]
    result = [
        (
            "sandbox launch overhead per run",
            f"{overhead:.1f} ms   (goal < 60 ms; CLI launch → init, median of {launch['launches']} each way)",
        ),
        ("  CLI launch → init", f"bubblewrap {launch[f'init_{bw}']:.0f} ms, unsandboxed {launch[f'init_{un}']:.0f} ms"),
        (
            "  CLI launch → first model call",
            f"bubblewrap {launch[f'first_call_{bw}']:.0f} ms, unsandboxed {launch[f'first_call_{un}']:.0f} ms"
            f"   ({first_call:+.1f} ms)",
        ),
        (
            "  run setup (place, cgroup, gateway)",
            f"bubblewrap {launch[f'setup_{bw}']:.1f} ms, unsandboxed {launch[f'setup_{un}']:.1f} ms",
        ),
        (
            "  launcher alone (true as the CLI)",
            f"agent-sandbox {launch[f'true_{bw}']:.1f} ms, agent-launch {launch[f'true_{un}']:.1f} ms, "
            f"no launcher {launch['true_direct']:.1f} ms",
        ),
        (
            "  CLI --version via launcher",
            f"agent-sandbox {launch[f'version_{bw}']:.1f} ms, agent-launch {launch[f'version_{un}']:.1f} ms, "
            f"no launcher {launch['version_direct']:.1f} ms",
        ),
        (
            "gateway latency added per chunk p50",
            f"{gateway['added_p50']:.3f} ms   (goal < 1 ms; {gateway['chunks']} chunks at {gateway['rate']:.0f}/s, "
            "model yield → client arrival over the Unix socket, minus direct)",
        ),
        ("gateway latency added per chunk p99", f"{gateway['added_p99']:.3f} ms"),
        (
            "gateway flat out",
            f"{gateway['flat_gateway_per_second']:,.0f} chunks/s (direct {gateway['flat_direct_per_second']:,.0f}/s; "
            f"{gateway['flat_added_per_chunk_us']:.0f} µs per chunk)",
        ),
        (
            "real memory per sandboxed session",
            f"{memory['sandbox_mb']:.0f} MB PSS   ({memory['sessions']} streaming at once, {memory['source']}, "
            f"{memory['processes']:.0f} processes each{'' if memory['overlapping'] else '; NOT all overlapping'})",
        ),
        ("  + its share of the worker process", f"{memory['worker_mb']:.0f} MB PSS"),
    ]
    for wall in platform["walls"]:
        kinds = f" ({', '.join(wall['failure_kinds'])})" if wall["failures"] else ""
        result.append(
            (
                f"{wall['runs']} concurrent sandboxed runs",
                f"{wall['wall']:.1f} s wall, {wall['failures']} failed{kinds}   (one Bash call each, worker -c "
                f"{max(CONCURRENT_RUNS)}, first POST → last terminal event)",
            )
        )
    return result


if __name__ == "__main__" and sys.argv[1:2] == ["gateway-client"]:
    asyncio.run(gateway_client(sys.argv[2], sys.argv[3]))
