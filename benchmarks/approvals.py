"""People in the loop: from a person's decision (the POST that allows a call) to the call starting in the sandbox,
while the run still waits in-process, and after it was suspended (the decision queues it again; a worker
launches the sandbox, resumes the session from the database, and the CLI runs the call).

The call is `date +%s.%N` in Bash, under a profile rule that asks: the time it prints is when the tool started,
on the same clock as the bench's own (one machine). The platform's runs wait in-process for
`APPROVAL_WAIT_SECONDS` (the bench sets 2 s): a decision sent at the request is in-process, one sent after
`run.waiting` resumes a suspended run.
"""

import json
import statistics
import time
from typing import Any

from benchmarks.measure import percentile, size

RUNS = size(10, 1, "BENCH_APPROVAL_RUNS")
WAIT_SECONDS = "2"
PROFILE = "bench-careful"


def make_profile(tenant: Any) -> None:
    from agents.services import create_profile
    from agents.spec import AgentSpec

    create_profile(tenant, PROFILE, AgentSpec(permission_rules=[{"pattern": "Bash(date *)", "action": "ask"}]))


def decision_to_tool_start(client: Any, suspended: bool) -> float:
    """Milliseconds from the decision's POST to the asked call's start, for one run."""
    conversation = client.create_conversation(agent=PROFILE)
    with client.websocket(conversation) as ws:
        run = client.send(conversation, "[[bash date +%s.%N]] [[reply ok]]")
        wanted = "run.waiting" if suspended else "permission.request"
        approval_id = ""
        while True:
            frame = json.loads(ws.recv(timeout=60))
            if frame.get("type") == "permission.request":
                approval_id = frame["data"]["approval_id"]
            if frame.get("type") == wanted:
                break
            assert frame.get("type") not in ("run.completed", "run.failed", "run.interrupted"), frame
        decided_at = time.time()
        response = client.http.post(f"/api/tenants/{client.tenant}/approvals/{approval_id}", json={"decision": "allow"})
        assert response.status_code == 200, response.text
        while True:
            frame = json.loads(ws.recv(timeout=60))
            if frame.get("type") == "tool.result":
                started_at = float(frame["data"]["content"].strip())
            if frame.get("type") in ("run.completed", "run.failed", "run.interrupted"):
                assert frame["type"] == "run.completed" and frame["run_id"] == run["id"], frame
                return (started_at - decided_at) * 1000


def call_to_tool_start(client: Any) -> float:
    """Milliseconds from the model's call reaching the client (its `message` event) to the call's start, when
    nobody is asked: what the CLI itself takes to start a Bash call, for comparison."""
    conversation = client.create_conversation()
    with client.websocket(conversation) as ws:
        client.send(conversation, "[[bash date +%s.%N]] [[reply ok]]")
        called_at = 0.0
        while True:
            frame = json.loads(ws.recv(timeout=60))
            if frame.get("type") == "message" and frame["data"]["block"]["type"] == "tool_use" and not called_at:
                called_at = time.time()
            if frame.get("type") == "tool.result":
                return (float(frame["data"]["content"].strip()) - called_at) * 1000


def figures(client: Any, tenant: Any) -> dict[str, list[float]]:
    make_profile(tenant)
    decision_to_tool_start(client, suspended=False)  # warm-up
    in_process, resumed, unasked = [], [], []
    for _ in range(RUNS):  # interleaved: machine noise hits all alike
        in_process.append(decision_to_tool_start(client, suspended=False))
        resumed.append(decision_to_tool_start(client, suspended=True))
        unasked.append(call_to_tool_start(client))
    return {"in_process": in_process, "resumed": resumed, "unasked": unasked}


def rows(figures: dict[str, list[float]]) -> list[tuple[str, str]]:
    if not figures:
        return []

    def summary(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} ms p50, {percentile(values, 0.99):.1f} ms p99 ({len(values)} runs)"

    return [
        ("approval → tool start, run waiting in-process", summary(figures["in_process"])),
        ("approval → tool start, run suspended (resumed)", summary(figures["resumed"])),
        ("  the CLI's own: call seen → tool start, unasked", summary(figures["unasked"])),
    ]
