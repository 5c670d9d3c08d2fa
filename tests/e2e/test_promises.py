"""What a client sees keeps the API's promises through the real CLI: a failed turn does not poison the
conversation, retries are announced, and an interrupted run's figures are what it is billed."""

import json
import re
import time
from decimal import Decimal
from uuid import uuid4

import httpx

from tests.e2e.harness import Client, Platform, read_ws_until_terminal


def test_a_scripted_error_fails_its_own_turn_only(acme: Client) -> None:
    conversation = acme.create_conversation()

    first = acme.send(conversation, "first [[error 400]]")
    failed = acme.wait_for_terminal(conversation, first["id"])
    second = acme.send(conversation, "second, plain hello")
    plain = acme.wait_for_terminal(conversation, second["id"])
    third = acme.send(conversation, "third [[reply fine]]")
    fine = acme.wait_for_terminal(conversation, third["id"])

    assert failed["type"] == "run.failed"
    assert plain["type"] == "run.completed", plain
    assert "second, plain hello" in plain["data"]["result"]
    assert "first" not in plain["data"]["result"]
    assert (fine["type"], fine["data"]["result"]) == ("run.completed", "fine")


def test_a_run_waiting_on_model_retries_says_so(acme: Client) -> None:
    conversation = acme.create_conversation()

    run = acme.send(conversation, "Busy? [[error 529 times=1]] [[reply made it]]")
    terminal = acme.wait_for_terminal(conversation, run["id"])

    events = [e for e in acme.events(conversation) if e["run_id"] == run["id"]]
    retries = [e["data"] for e in events if e["type"] == "model.retry"]
    assert (terminal["type"], terminal["data"]["result"]) == ("run.completed", "made it")
    assert retries and retries[0]["attempt"] == 1 and retries[0]["error_status"] == 529
    assert retries[0]["retry_delay_ms"] > 0 and retries[0]["max_retries"] >= 1


def test_an_interrupted_run_shows_what_it_is_billed(acme: Client) -> None:
    conversation = acme.create_conversation()

    with acme.websocket(conversation) as ws:
        run = acme.send(conversation, "[[slow 10]]")
        while json.loads(ws.recv(timeout=30)).get("type") != "message.delta":
            pass
        time.sleep(2)
        assert acme.interrupt(conversation).status_code == 202
        events = read_ws_until_terminal(ws, run["id"], timeout=20)

    billed = acme.http.get(f"/api/tenants/{acme.tenant}/usage/runs/{run['id']}").json()
    terminal = events[-1]
    usage_events = [e["data"] for e in events if e["type"] == "usage"]
    assert terminal["type"] == "run.interrupted"
    assert billed["totals"]["model_calls"] >= 1
    assert terminal["data"]["usage"] == billed["totals"]
    assert len(usage_events) == billed["totals"]["model_calls"]
    assert sum(Decimal(u["cost_usd"]) for u in usage_events) == Decimal(billed["totals"]["cost_usd"])
    assert sum(u["input_tokens"] for u in usage_events) == billed["totals"]["input_tokens"]
    # One way to write a cost, wherever it appears: fixed point, 10 places.
    costs = [u["cost_usd"] for u in usage_events] + [
        terminal["data"]["usage"]["cost_usd"],
        billed["totals"]["cost_usd"],
    ]
    costs += [call["cost_usd"] for call in billed["calls"]]
    assert all(re.fullmatch(r"\d+\.\d{10}", cost) for cost in costs), costs


def test_stream_tokens_stay_out_of_the_access_log(acme: Client, platform: Platform) -> None:
    conversation = acme.create_conversation()
    token = acme.stream_token(conversation)

    # Answered at once (another conversation's path), so Daphne logs the request line right away.
    response = httpx.get(
        f"{platform.base_url}{acme.path(str(uuid4()), '/events/stream')}", params={"token": token, "after": 0}
    )
    time.sleep(0.5)

    assert response.status_code == 404
    logs = platform.logs()
    assert "/events/stream?token=[redacted]&after=0" in logs
    assert token not in logs
