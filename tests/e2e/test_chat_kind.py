"""A chat agent's conversation through real processes: REST → Celery → the run's gateway → offline model → events."""

from agents.services import AgentSpec, create_profile
from tenants.models import Tenant
from tests.e2e.harness import Client, read_ws_until_terminal
from usage.models import UsageRecord


def test_a_chat_agent_streams_its_answer_with_exact_usage_and_remembers_the_last_turn(acme: Client) -> None:
    create_profile(Tenant.objects.get(pk="acme"), "helper", AgentSpec(kind="chat", instructions="Be brief."))
    conversation = acme.create_conversation(agent="helper", title="Ada")  # titled: no title call to count

    with acme.websocket(conversation) as ws:
        first = acme.send(conversation, "My name is Ada. [[words 12]] [[usage input=70 output=12]]")
        events = read_ws_until_terminal(ws, first["id"])
        second = acme.send(conversation, "[[recall]]")
        recalled = read_ws_until_terminal(ws, second["id"])

    types = [event["type"] for event in events]
    assert types == ["run.queued", "run.started", *["message.delta"] * 12, "message", "usage", "run.completed"]
    assert events[1]["data"]["sandbox"] == "none" and events[1]["data"]["agent"]["kind"] == "chat"
    text = "".join(event["data"]["text"] for event in events if event["type"] == "message.delta")
    assert text == events[-1]["data"]["result"] == " ".join(f"word{n}" for n in range(1, 13))
    record = UsageRecord.objects.get(run_id=first["id"])
    usage = events[-2]["data"]
    assert (usage["message_id"], usage["input_tokens"], usage["output_tokens"]) == (record.message_id, 70, 12)
    assert events[-1]["data"]["usage"]["model_calls"] == 1
    assert recalled[-1]["type"] == "run.completed"
    assert (
        recalled[-1]["data"]["result"] == "Earlier turns: 1) My name is Ada. [[words 12]] [[usage input=70 output=12]]"
    )
