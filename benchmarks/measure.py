"""What every part of `make bench` measures with: its sizes (normal or quick), percentiles, and runs
through the running platform seen over WebSocket.

`BENCH_QUICK=1` runs each part once at small sizes: a smoke test that every part still runs (CI runs
it after `make test`), not a measurement. A part's own variable (`BENCH_RUNS`, …) overrides both.
"""

import json
import os
import time
from datetime import datetime
from typing import Any, TypeVar

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")

_Size = TypeVar("_Size", int, float)


def size(normal: _Size, quick: _Size, variable: str = "") -> _Size:
    """A bench size: `quick` under BENCH_QUICK, else `normal`; the environment variable `variable`, when set, wins."""
    chosen = quick if QUICK else normal
    return type(normal)(os.environ[variable]) if variable and os.environ.get(variable) else chosen


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


def platform_run(client: Any, prompt: str, conversation: str = "") -> dict[str, Any]:
    """Seconds from POST to the first event, the first streamed text, and the terminal event, seen over WebSocket;
    and the run's `session` (`run.started`). In a new conversation unless `conversation` is given."""
    events = client.events(conversation) if conversation else []
    conversation = conversation or client.create_conversation()
    marks: dict[str, Any] = {}
    with client.websocket(conversation, after=events[-1]["seq"] if events else 0) as ws:
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "pong"  # the socket is fully set up
        started = time.perf_counter()
        run = client.send(conversation, prompt)
        marks["post_returned"] = time.perf_counter() - started
        while True:
            frame = json.loads(ws.recv(timeout=60))
            if "seq" not in frame:
                continue
            now = time.perf_counter() - started
            marks.setdefault("first_event", now)
            if frame["type"] == "run.started":
                marks["session"] = frame["data"].get("session")
            if frame["type"] == "message.delta":
                marks.setdefault("first_text", now)
            if frame["type"] in ("run.completed", "run.failed", "run.interrupted"):
                assert frame["type"] == "run.completed", frame
                assert frame["run_id"] == run["id"]
                marks["terminal"] = now
                return marks


def stream_run(client: Any, prompt: str) -> tuple[list[float], float, int]:
    """Per-event worker→WebSocket latency (ms), text deltas per second, and their count, for one run."""
    conversation = client.create_conversation()
    latencies: list[float] = []
    with client.websocket(conversation) as ws:
        client.send(conversation, prompt)
        first_at = last_at = 0.0
        count = 0
        while True:
            frame = json.loads(ws.recv(timeout=120))
            received = time.time()
            if "seq" not in frame:
                continue
            stored_at = datetime.fromisoformat(frame["at"].replace("Z", "+00:00")).timestamp()
            latencies.append((received - stored_at) * 1000)
            if frame["type"] == "message.delta":
                count += 1
                first_at = first_at or received
                last_at = received
            if frame["type"] == "run.completed":
                return latencies, count / max(last_at - first_at, 1e-9), count
