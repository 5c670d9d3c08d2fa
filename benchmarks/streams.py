"""`make bench`, streams part: idle WebSockets held by one Daphne process, and live latency beside them.

Opens IDLE_SOCKETS WebSockets (one conversation each, like browsers that watch and read) to one
Daphne process and leaves them quiet for IDLE_SECONDS; meanwhile one conversation streams a run and
each event's worker → WebSocket latency is measured. At the end every idle socket must still answer
a ping. Memory per idle socket is Daphne's growth in proportional set size divided by the sockets.
"""

import asyncio
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.measure import percentile, size, stream_run

IDLE_SOCKETS = size(1000, 20, "BENCH_IDLE_SOCKETS")
IDLE_SECONDS = size(60.0, 2.0, "BENCH_IDLE_SECONDS")
LATENCY_WORDS = size(1000, 100)


def pss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_conversation_urls(tenant: Any, base_url: str) -> list[str]:
    """WebSocket URLs, each with its own conversation and stream token, made straight in the database."""
    from conversations.models import Conversation
    from tenants.auth import make_stream_token

    conversations = Conversation.objects.bulk_create(
        Conversation(tenant=tenant, model=tenant.default_model, title=f"idle {n}") for n in range(IDLE_SOCKETS)
    )
    ws_base = base_url.replace("http", "ws", 1)
    return [
        f"{ws_base}/ws/tenants/{tenant.pk}/conversations/{conversation.pk}/?after=0&token="
        + make_stream_token(str(conversation.pk), tenant.pk, "")
        for conversation in conversations
    ]


async def hold_idle_sockets(urls: list[str], started: threading.Event, result: dict[str, Any]) -> None:
    from websockets.asyncio.client import connect

    sockets = []
    for start in range(0, len(urls), 50):  # in waves, as browsers arrive, not one SYN flood
        sockets += await asyncio.gather(*(connect(url, open_timeout=30) for url in urls[start : start + 50]))
    result["opened"] = len(sockets)
    started.set()
    await asyncio.sleep(IDLE_SECONDS)

    async def alive(socket: Any) -> bool:
        try:
            await socket.send(json.dumps({"type": "ping"}))
            return json.loads(await asyncio.wait_for(socket.recv(), 10))["type"] == "pong"
        except Exception:
            return False

    result["alive"] = sum(await asyncio.gather(*(alive(socket) for socket in sockets)))
    await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)


def figures(platform: Any, client: Any, tenant: Any) -> dict[str, Any]:
    """Idle sockets alive after the quiet, memory per idle socket, and live latency while they idle."""
    daphne = platform.web.pid
    urls = idle_conversation_urls(tenant, platform.base_url)
    before_kb = pss_kb(daphne)
    result: dict[str, Any] = {}
    started = threading.Event()
    holder = threading.Thread(
        target=lambda: asyncio.run(hold_idle_sockets(urls, started, result)), name="idle-sockets", daemon=True
    )
    holder.start()
    if not started.wait(120):
        raise RuntimeError("the idle sockets did not open")
    time.sleep(2)  # let the handshakes' garbage settle before measuring
    opened_kb = pss_kb(daphne)
    cpu_before, idle_from = cpu_seconds(daphne), time.monotonic()
    latencies, _, _ = stream_run(client, f"[[words {LATENCY_WORDS}]] [[slow {LATENCY_WORDS / 200}]]")
    holder.join(IDLE_SECONDS + 60)
    cpu_idle = (cpu_seconds(daphne) - cpu_before) / (time.monotonic() - idle_from)
    return {
        "opened": result.get("opened", 0),
        "alive": result.get("alive", 0),
        "kb_per_socket": (opened_kb - before_kb) / max(result.get("opened", 1), 1),
        "daphne_cpu": cpu_idle,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "events": len(latencies),
    }


def rows(found: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            f"idle WebSockets alive after {IDLE_SECONDS:.0f} s",
            f"{found['alive']} of {IDLE_SOCKETS}   (one Daphne process; goal: all)",
        ),
        ("memory per idle WebSocket", f"{found['kb_per_socket']:.1f} KB   (Daphne PSS growth; goal < 50 KB)"),
        ("Daphne CPU while they idle", f"{found['daphne_cpu'] * 100:.1f} % of one core"),
        (
            "worker → WebSocket p50 beside them",
            f"{found['p50']:.2f} ms   (goal < 5 ms; {found['events']} events at 200/s)",
        ),
        ("worker → WebSocket p99 beside them", f"{found['p99']:.2f} ms"),
    ]
