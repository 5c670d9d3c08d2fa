"""`make bench`, events part: worker → WebSocket latency per event, alone (`BENCH_ONLY=events`).

The figure the full bench prints as "worker → WebSocket latency", measured the same way (one run
paced at 200 events/s; each event's `at`, stamped as the worker stores it, against the moment the
client has its frame), without the rest of the bench, so that a change to the event path can be
measured in a minute.
"""

from typing import Any

from benchmarks.measure import percentile, size, stream_run

PACED_WORDS = size(1000, 100)
RUNS = size(3, 1, "BENCH_EVENT_RUNS")


def figures(client: Any) -> dict[str, Any]:
    """p50 and p99 of each paced run, and of all of them together."""
    every: list[float] = []
    per_run: list[tuple[float, float]] = []
    for _ in range(RUNS):
        latencies, _, _ = stream_run(client, f"[[words {PACED_WORDS}]] [[slow {PACED_WORDS / 200}]]")
        every += latencies
        per_run.append((percentile(latencies, 0.5), percentile(latencies, 0.99)))
    return {"p50": percentile(every, 0.5), "p99": percentile(every, 0.99), "events": len(every), "per_run": per_run}


def rows(found: dict[str, Any]) -> list[tuple[str, str]]:
    runs = ", ".join(f"{p50:.2f}/{p99:.2f}" for p50, p99 in found["per_run"])
    return [
        (
            "worker → WebSocket latency p50",
            f"{found['p50']:.2f} ms   (goal ≤ 2 ms; {found['events']} events at 200/s in {len(found['per_run'])} runs)",
        ),
        ("worker → WebSocket latency p99", f"{found['p99']:.2f} ms"),
        ("  p50/p99 of each run", f"{runs} ms"),
    ]
