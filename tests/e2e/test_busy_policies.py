"""Messages sent while a run is active, under each busy policy of an agent profile, through the real platform:
REST (and the WebSocket, and SSE) → Celery → the sandboxed CLI → the offline model → events.

What each policy promises, with two and with three messages in flight: the order of the runs and their events,
each message answered once (nothing lost, nothing run twice: run statuses, each run's one terminal event, and the
session's own record of its turns, which the offline model's `[[recall]]` reads back).
"""

import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from agents.services import create_profile
from agents.spec import AgentSpec
from tenants.models import Tenant
from tests.e2e.harness import TERMINAL, Client, read_ws_until_terminal, sse_events


def busy_conversation(client: Client, policy: str) -> str:
    create_profile(Tenant.objects.get(pk=client.tenant), policy, AgentSpec(busy_policy=policy))
    return client.create_conversation(agent=policy)


def post(client: Client, conversation: str, text: str) -> dict[str, Any]:
    response = client.http.post(client.path(conversation, "/messages"), json={"text": text})
    assert response.status_code == 202, response.text
    return dict(response.json())


def wait_for(client: Client, conversation: str, found: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        events = client.events(conversation)
        if found(events):
            return events
        time.sleep(0.05)
    raise TimeoutError("the events never showed what the test waited for")


def has(kind: str, run_id: str, **data: Any) -> Callable[[list[dict[str, Any]]], bool]:
    def found(events: list[dict[str, Any]]) -> bool:
        return any(
            event["type"] == kind
            and event["run_id"] == run_id
            and all(event["data"].get(key) == value for key, value in data.items())
            for event in events
        )

    return found


def ended(*run_ids: str) -> Callable[[list[dict[str, Any]]], bool]:
    def found(events: list[dict[str, Any]]) -> bool:
        done = {event["run_id"] for event in events if event["type"] in TERMINAL}
        return set(run_ids) <= done

    return found


def runs(client: Client, conversation: str) -> dict[str, dict[str, Any]]:
    """The conversation's runs by id, as the API lists them."""
    listing = client.http.get(client.path(conversation, "/runs")).json()["results"]
    return {run["id"]: run for run in listing}


def seq_of(events: list[dict[str, Any]], kind: str, run_id: str) -> int:
    (seq,) = [event["seq"] for event in events if event["type"] == kind and event["run_id"] == run_id]
    return seq


def terminal(events: list[dict[str, Any]], run_id: str) -> dict[str, Any]:
    """The run's one terminal event (asserting there is exactly one)."""
    (event,) = [event for event in events if event["run_id"] == run_id and event["type"] in TERMINAL]
    return event


def in_order(events: list[dict[str, Any]], *run_ids: str) -> None:
    """Each run started after the one before it ended, and each has exactly one terminal event."""
    for earlier, later in itertools.pairwise(run_ids):
        assert terminal(events, earlier)["seq"] < seq_of(events, "run.started", later)


# --- reject ---------------------------------------------------------------------------------------------------


def test_reject_refuses_the_second_and_third_message_and_the_run_goes_on_alone(acme: Client) -> None:
    conversation = busy_conversation(acme, "reject")
    first = post(acme, conversation, "one [[slow 2]]")

    refused = [acme.http.post(acme.path(conversation, "/messages"), json={"text": text}) for text in ("two", "three")]

    for response in refused:
        assert (response.status_code, response.json()["error"]["code"]) == (409, "run_in_progress")
    events = wait_for(acme, conversation, ended(first["id"]))
    assert terminal(events, first["id"])["data"]["result"] == "Offline model (not Claude) reply: one"
    assert list(runs(acme, conversation)) == [first["id"]]
    after = post(acme, conversation, "four [[recall]]")  # once it has ended, the next message starts
    assert after["disposition"] == "started"
    events = wait_for(acme, conversation, ended(after["id"]))
    assert terminal(events, after["id"])["data"]["result"] == "Earlier turns: 1) one [[slow 2]]"


# --- queue ----------------------------------------------------------------------------------------------------


def test_queue_two_messages_the_second_runs_after_the_first_and_remembers_it(acme: Client) -> None:
    conversation = busy_conversation(acme, "queue")
    first = post(acme, conversation, "one [[slow 2]]")

    second = post(acme, conversation, "two [[recall]]")

    assert first["disposition"] == "started"
    assert (second["disposition"], second["behind"], second["queue_position"]) == ("queued", first["id"], 1)
    assert second["status"] == "queued" and second["id"] == second["message_id"]
    events = wait_for(acme, conversation, ended(first["id"], second["id"]))
    queued = [event["data"] for event in events if event["type"] == "run.queued" and event["run_id"] == second["id"]]
    assert queued == [
        {**queued[0], "disposition": "queued", "behind": first["id"], "position": 1, "text": "two [[recall]]"}
    ]
    in_order(events, first["id"], second["id"])
    assert terminal(events, first["id"])["type"] == terminal(events, second["id"])["type"] == "run.completed"
    assert terminal(events, second["id"])["data"]["result"] == "Earlier turns: 1) one [[slow 2]]"
    assert {run["status"] for run in runs(acme, conversation).values()} == {"completed"}


def test_queue_three_messages_over_rest_and_websocket_run_in_the_order_sent(acme: Client) -> None:
    conversation = busy_conversation(acme, "queue")
    first = post(acme, conversation, "one [[slow 2]]")
    wait_for(acme, conversation, has("run.started", first["id"]))  # running: the others wait behind it
    with acme.websocket(conversation) as socket_:
        socket_.send(json.dumps({"type": "message", "text": "two"}))
        ack = json.loads(socket_.recv(timeout=10))
        while ack.get("type") != "ack":
            ack = json.loads(socket_.recv(timeout=10))
        third = post(acme, conversation, "three [[recall]]")
        waiting = acme.http.get(acme.path(conversation, "/runs"), params={"status": "queued"}).json()["results"]
        read_ws_until_terminal(socket_, third["id"])
    second = ack["run"]

    assert (ack["disposition"], second["disposition"], second["queue_position"]) == ("queued", "queued", 1)
    assert (third["disposition"], third["queue_position"]) == ("queued", 2)
    assert [(run["id"], run["queue_position"]) for run in waiting] == [(third["id"], 2), (second["id"], 1)]
    events = wait_for(acme, conversation, ended(first["id"], second["id"], third["id"]))
    in_order(events, first["id"], second["id"], third["id"])
    assert terminal(events, third["id"])["data"]["result"] == "Earlier turns: 1) one [[slow 2]]; 2) two"
    assert [run["status"] for run in runs(acme, conversation).values()] == ["completed"] * 3


def test_a_cancelled_message_never_runs_and_the_next_one_takes_its_place(acme: Client) -> None:
    conversation = busy_conversation(acme, "queue")
    first = post(acme, conversation, "one [[slow 2]]")
    second = post(acme, conversation, "two")
    third = post(acme, conversation, "three [[recall]]")

    cancelled = acme.http.post(acme.path(conversation, f"/runs/{second['id']}/cancel"))

    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["result"]["reason"]) == ("interrupted", "cancelled")
    assert acme.http.get(acme.path(conversation, f"/runs/{third['id']}")).json()["queue_position"] == 1
    events = wait_for(acme, conversation, ended(first["id"], third["id"]))
    assert [event["type"] for event in events if event["run_id"] == second["id"]] == ["run.queued", "run.interrupted"]
    in_order(events, first["id"], third["id"])
    assert terminal(events, third["id"])["data"]["result"] == "Earlier turns: 1) one [[slow 2]]"
    again = acme.http.post(acme.path(conversation, f"/runs/{second['id']}/cancel"))
    assert (again.status_code, again.json()["error"]["code"]) == (409, "run_finished")


# --- interrupt ------------------------------------------------------------------------------------------------


def test_interrupt_two_messages_the_second_stops_the_first_which_keeps_its_events(acme: Client) -> None:
    conversation = busy_conversation(acme, "interrupt")
    first = post(acme, conversation, "one [[slow 5]]")
    wait_for(acme, conversation, has("message.delta", first["id"]))

    second = post(acme, conversation, "two [[recall]]")

    assert (second["disposition"], second["behind"], second["queue_position"]) == ("interrupting", first["id"], 1)
    events = wait_for(acme, conversation, ended(first["id"], second["id"]))
    in_order(events, first["id"], second["id"])
    stopped = terminal(events, first["id"])
    assert stopped["type"] == "run.interrupted"
    assert stopped["data"]["usage"]["model_calls"] >= 1  # what it spent stays on its record
    assert any(event["type"] == "message.delta" for event in events if event["run_id"] == first["id"])
    # The session keeps the interrupted turn, and the CLI's own note that it was interrupted.
    expected = "Earlier turns: 1) one [[slow 5]]; 2) [Request interrupted by user]"
    assert terminal(events, second["id"])["data"]["result"] == expected


def test_interrupt_three_messages_each_stops_the_run_before_it(acme: Client) -> None:
    conversation = busy_conversation(acme, "interrupt")
    first = post(acme, conversation, "one [[slow 5]]")
    wait_for(acme, conversation, has("message.delta", first["id"]))
    second = post(acme, conversation, "two [[slow 5]]")
    wait_for(acme, conversation, has("message.delta", second["id"]))

    third = post(acme, conversation, "three [[recall]]")

    assert (second["disposition"], third["disposition"], third["behind"]) == (
        "interrupting",
        "interrupting",
        second["id"],
    )
    events = wait_for(acme, conversation, ended(first["id"], second["id"], third["id"]))
    in_order(events, first["id"], second["id"], third["id"])
    statuses = [terminal(events, run)["type"] for run in (first["id"], second["id"], third["id"])]
    assert statuses == ["run.interrupted", "run.interrupted", "run.completed"]
    stopped = "[Request interrupted by user]"
    expected = f"Earlier turns: 1) one [[slow 5]]; 2) {stopped}; 3) two [[slow 5]]; 4) {stopped}"
    assert terminal(events, third["id"])["data"]["result"] == expected


def test_interrupt_two_messages_at_once_stop_the_run_once_and_both_run_in_order(acme: Client) -> None:
    conversation = busy_conversation(acme, "interrupt")
    first = post(acme, conversation, "one [[slow 5]]")
    wait_for(acme, conversation, has("message.delta", first["id"]))

    second = post(acme, conversation, "two")
    third = post(acme, conversation, "three [[recall]]")

    assert second["disposition"] == "interrupting"
    events = wait_for(acme, conversation, ended(first["id"], second["id"], third["id"]))
    in_order(events, first["id"], second["id"], third["id"])
    assert terminal(events, first["id"])["type"] == "run.interrupted"
    # The third came while the first was still stopping: it waited behind the second, which ran to its end;
    # or the second had started already, and the third stopped it.
    second_end = {"queued": "run.completed", "interrupting": "run.interrupted"}[third["disposition"]]
    assert terminal(events, second["id"])["type"] == second_end
    recalled = terminal(events, third["id"])["data"]["result"]
    assert recalled.startswith("Earlier turns: 1) one [[slow 5]]; 2) [Request interrupted by user]; 3) two"), recalled


# --- steer ----------------------------------------------------------------------------------------------------


def test_steer_two_messages_while_a_tool_runs_the_agent_reads_it_with_the_tools_result(acme: Client) -> None:
    conversation = busy_conversation(acme, "steer")
    first = post(acme, conversation, "one [[bash sleep 2]]")
    wait_for(acme, conversation, has("message", first["id"]))  # the tool call: the tool runs now

    second = post(acme, conversation, "two")

    assert (second["disposition"], second["id"], second["behind"]) == ("steered", first["id"], first["id"])
    events = wait_for(acme, conversation, ended(first["id"]))
    (steered,) = [event for event in events if event["type"] == "message.steered"]
    assert steered["run_id"] == first["id"]
    assert (steered["data"]["message_id"], steered["data"]["text"]) == (second["message_id"], "two")
    done = terminal(events, first["id"])
    assert done["type"] == "run.completed"
    assert done["data"]["result"].endswith("\n[sent while working] two"), done  # the CLI passed it on in the turn
    assert list(runs(acme, conversation)) == [first["id"]]  # the message joined the run: no run of its own
    missing = acme.http.get(acme.path(conversation, f"/runs/{second['message_id']}"))
    assert missing.status_code == 404


def test_steer_three_messages_while_a_tool_runs_the_agent_reads_both_in_order(acme: Client) -> None:
    conversation = busy_conversation(acme, "steer")
    first = post(acme, conversation, "one [[bash sleep 2]]")
    wait_for(acme, conversation, has("message", first["id"]))

    second = post(acme, conversation, "two")
    third = post(acme, conversation, "three")

    assert (second["disposition"], third["disposition"]) == ("steered", "steered")
    assert (second["queue_position"], third["id"]) == (1, first["id"])
    events = wait_for(acme, conversation, ended(first["id"]))
    steered = [event["data"]["message_id"] for event in events if event["type"] == "message.steered"]
    assert steered == [second["message_id"], third["message_id"]]
    done = terminal(events, first["id"])
    assert done["data"]["result"].endswith("\n[sent while working] two\n[sent while working] three"), done
    assert list(runs(acme, conversation)) == [first["id"]]


def test_steer_three_messages_while_the_agent_writes_it_answers_them_next_in_the_same_run(acme: Client) -> None:
    conversation = busy_conversation(acme, "steer")
    first = post(acme, conversation, "one [[slow 3]]")
    wait_for(acme, conversation, has("message.delta", first["id"]))

    second = post(acme, conversation, "two")
    with acme.http.stream(
        "POST",
        acme.path(conversation, "/stream"),
        json={"text": "three [[recall]]"},
        timeout=httpx.Timeout(30, read=60),
    ) as response:
        assert response.status_code == 200, response.read()
        streamed = list(sse_events(response.iter_lines()))

    assert second["disposition"] == "steered"
    assert streamed[-1]["type"] == "run.completed" and streamed[-1]["run_id"] == first["id"]
    events = acme.events(conversation)
    steered = [event["data"]["text"] for event in events if event["type"] == "message.steered"]
    assert steered == ["two", "three [[recall]]"]
    assert "three [[recall]]" in [event["data"]["text"] for event in streamed if event["type"] == "message.steered"]
    done = terminal(events, first["id"])
    # The CLI answers what came mid-reply after its turn, as a turn of its own (both texts joined, as it does).
    assert done["data"]["result"].startswith("Earlier turns: 1) one [[slow 3]]"), done
    assert list(runs(acme, conversation)) == [first["id"]]
    answers = [event["data"]["block"].get("text") for event in events if event["type"] == "message"]
    assert answers[0] == "Offline model (not Claude) reply: one" and len(answers) >= 2
