"""People in the loop, end to end: REST → Celery → the sandboxed CLI → the gateway → the offline model, with a
person deciding over REST, in-process and after the run was suspended, on another worker, after a kill.

A profile's rule `Bash(echo *)` asks; each asked command appends a line to a workspace file, so the file says
how often the call ran (exactly once, or never).
"""

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection

from agents.services import create_profile
from agents.spec import AgentSpec
from conversations.models import SessionEntry
from tenants.models import Tenant
from tests.e2e.harness import Client, Platform, database_url, serving, tenant_client

ASKS = [{"pattern": "Bash(echo *)", "action": "ask"}]
TERMINAL = {"run.completed", "run.failed", "run.interrupted"}


def careful(client: Client, name: str = "careful", **spec: Any) -> str:
    create_profile(Tenant.objects.get(pk=client.tenant), name, AgentSpec(permission_rules=ASKS, **spec))
    return client.create_conversation(agent=name)


def send(client: Client, conversation: str, text: str) -> str:
    response = client.http.post(client.path(conversation, "/messages"), json={"text": text})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_for(
    client: Client, conversation: str, kind: str, run_id: str, timeout: float = 60, nth: int = 1
) -> dict[str, Any]:
    """The run's `nth` event of `kind`, once it is stored."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = [event for event in client.events(conversation) if event["run_id"] == run_id]
        found = [event for event in events if event["type"] == kind]
        if len(found) >= nth:
            return found[nth - 1]
        if kind not in TERMINAL and any(event["type"] in TERMINAL for event in events):
            raise AssertionError(f"run {run_id} ended before {kind}: {events[-1]}")
        time.sleep(0.1)
    raise TimeoutError(f"no {kind} #{nth} for run {run_id} within {timeout}s")


def post(client: Client, path: str, body: dict[str, Any]) -> Any:
    """A POST as a client makes it: a 503 `database_unavailable` says to retry in a few seconds, and it does once."""
    response = client.http.post(path, json=body)
    if response.status_code == 503:
        time.sleep(3)
        response = client.http.post(path, json=body)
    return response


def decide(client: Client, approval_id: str, **body: Any) -> dict[str, Any]:
    response = post(client, f"/api/tenants/{client.tenant}/approvals/{approval_id}", body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def answer(client: Client, question_id: str, answers: dict[str, str]) -> dict[str, Any]:
    response = post(client, f"/api/tenants/{client.tenant}/questions/{question_id}", {"answers": answers})
    assert response.status_code == 200, response.text
    return dict(response.json())


def run_events(client: Client, conversation: str, run_id: str) -> list[dict[str, Any]]:
    return [event for event in client.events(conversation) if event["run_id"] == run_id]


def of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event["data"] for event in events if event["type"] == kind]


def file_text(client: Client, conversation: str, path: str) -> str | None:
    response = client.http.get(client.path(conversation, f"/files/{path}"))
    return response.text if response.status_code == 200 else None


# --- Decided while the run waits in-process ----------------------------------------------------------


def test_allow_runs_the_call_once_and_deny_gives_the_model_the_reason(acme: Client) -> None:
    conversation = careful(acme)
    run_id = send(acme, conversation, "[[bash echo one >> /workspace/ran.txt]] [[bash echo two >> /workspace/ran.txt]]")

    first = wait_for(acme, conversation, "permission.request", run_id)["data"]
    assert (first["tool"], first["input"]["command"]) == ("Bash", "echo one >> /workspace/ran.txt")
    assert first["decision_reason"] == "The agent profile 'careful' asks a person first (Bash(echo *))."
    decided = decide(acme, first["approval_id"], decision="allow")
    assert decided["status"] == "allowed" and decided["decided_by"]["kind"] == "api_key"
    second = wait_for(acme, conversation, "permission.request", run_id, nth=2)["data"]
    decide(acme, second["approval_id"], decision="deny", message="Two is one too many.")
    terminal = acme.wait_for_terminal(conversation, run_id)

    assert terminal["type"] == "run.completed", terminal
    events = run_events(acme, conversation, run_id)
    ran, refused = of(events, "tool.result")
    assert (ran["content"], ran["is_error"]) == ("(Bash completed with no output)", False)
    assert refused["is_error"] is True
    assert "The user denied this call. They said: Two is one too many." in refused["content"]
    assert "Two is one too many." in terminal["data"]["result"]  # the model read it
    assert file_text(acme, conversation, "ran.txt") == "one\n"  # the allowed call ran once, the denied one never
    decisions = of(events, "permission.decision")
    assert [(d["decision"], d["decided_by"]["kind"]) for d in decisions] == [
        ("allowed", "api_key"),
        ("denied", "api_key"),
    ]
    assert not of(events, "run.waiting")  # decided within the in-process wait: no suspension


def test_an_edited_input_is_what_runs_and_a_second_decision_is_409(acme: Client) -> None:
    conversation = careful(acme)
    run_id = send(acme, conversation, "[[bash echo draft >> /workspace/ran.txt]]")
    request = wait_for(acme, conversation, "permission.request", run_id)["data"]

    edited = {"command": "echo edited >> /workspace/ran.txt", "description": "edited by a person"}
    decide(acme, request["approval_id"], decision="allow", updated_input=edited)
    again = acme.http.post(f"/api/tenants/{acme.tenant}/approvals/{request['approval_id']}", json={"decision": "deny"})
    terminal = acme.wait_for_terminal(conversation, run_id)

    assert again.status_code == 409, again.text
    assert terminal["type"] == "run.completed", terminal
    assert file_text(acme, conversation, "ran.txt") == "edited\n"


def test_another_tenants_approval_is_404_like_a_missing_one(acme: Client, globex: Client) -> None:
    conversation = careful(acme)
    run_id = send(acme, conversation, "[[bash echo mine >> /workspace/ran.txt]]")
    request = wait_for(acme, conversation, "permission.request", run_id)["data"]

    foreign = globex.http.post(
        f"/api/tenants/{globex.tenant}/approvals/{request['approval_id']}", json={"decision": "allow"}
    )
    pending = globex.http.get(f"/api/tenants/{globex.tenant}/approvals", params={"status": "pending"}).json()
    decide(acme, request["approval_id"], decision="allow")

    assert foreign.status_code == 404, foreign.text
    assert request["approval_id"] not in str(pending)
    assert acme.wait_for_terminal(conversation, run_id)["type"] == "run.completed"
    assert file_text(acme, conversation, "ran.txt") == "mine\n"


def test_an_approval_nobody_decides_expires_into_a_denial_the_model_reads(acme: Client) -> None:
    conversation = careful(acme, approval_timeout_seconds=10)
    run_id = send(acme, conversation, "[[bash echo late >> /workspace/ran.txt]]")

    terminal = acme.wait_for_terminal(conversation, run_id, timeout=60)

    assert terminal["type"] == "run.completed", terminal
    events = run_events(acme, conversation, run_id)
    (decision,) = of(events, "permission.decision")
    assert decision["decision"] == "expired" and decision["decided_by"] == {"kind": "system", "name": "platform"}
    (refused,) = of(events, "tool.result")
    assert refused["is_error"] and "Nobody approved this call within 1 minute" in refused["content"]
    assert file_text(acme, conversation, "ran.txt") is None


def test_the_agents_question_is_answered_and_the_answer_reaches_the_model(acme: Client) -> None:
    conversation = careful(acme)
    run_id = send(acme, conversation, "[[ask Which colour? | Blue | Red]]")
    asked = wait_for(acme, conversation, "question", run_id)["data"]

    assert [option["label"] for option in asked["questions"][0]["options"]] == ["Blue", "Red"]
    answer(acme, asked["question_id"], {"Which colour?": "Red"})
    terminal = acme.wait_for_terminal(conversation, run_id)

    assert terminal["type"] == "run.completed", terminal
    assert '"Which colour?"="Red"' in terminal["data"]["result"]


# --- Suspended: the run waits without a worker -------------------------------------------------------


@pytest.fixture(scope="module")
def suspending(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform whose runs wait in-process for one second before they suspend, with two workers."""
    with serving(
        database_url(connection.settings_dict),
        platform.env["REDIS_URL"],
        tmp_path_factory.mktemp("suspending"),
        APPROVAL_WAIT_SECONDS="1",
    ) as own:
        own.start_worker("second-worker", concurrency=4)
        yield own


@pytest.fixture
def initech(suspending: Platform, transactional_db: None) -> Client:
    return tenant_client(suspending.base_url, "initech")


def test_a_decision_after_suspension_resumes_the_run_on_another_worker_and_the_call_runs_once(
    initech: Client, suspending: Platform
) -> None:
    conversation = careful(initech)
    run_id = send(initech, conversation, "[[bash echo once >> /workspace/ran.txt]] [[reply done]]")
    waiting = wait_for(initech, conversation, "run.waiting", run_id)["data"]
    started = of(run_events(initech, conversation, run_id), "run.started")[0]

    # The worker that ran it dies; the run, waiting without it, loses nothing.
    first = next(worker for worker in suspending.workers if str(worker.pid) in started["worker"])
    suspending.kill(first)
    time.sleep(1)
    decide(initech, waiting["approval_id"], decision="allow")
    terminal = initech.wait_for_terminal(conversation, run_id)

    assert terminal["type"] == "run.completed" and terminal["data"]["result"] == "done", terminal
    events = run_events(initech, conversation, run_id)
    (resumed,) = of(events, "run.resumed")
    assert resumed["worker"] != started["worker"]
    assert resumed["after"]["approval_id"] == waiting["approval_id"]
    assert file_text(initech, conversation, "ran.txt") == "once\n"
    types = [event["type"] for event in events]
    assert types.index("run.waiting") < types.index("permission.decision") < types.index("run.resumed")
    assert sum(kind in TERMINAL for kind in types) == 1
    suspending.start_worker("replacement", concurrency=4)


def test_a_suspended_question_is_answered_later_and_the_turn_goes_on(initech: Client) -> None:
    conversation = careful(initech)
    run_id = send(initech, conversation, "[[ask Proceed? | Yes | No]] [[bash echo after >> /workspace/ran.txt]]")
    waiting = wait_for(initech, conversation, "run.waiting", run_id)["data"]
    assert waiting["kind"] == "question"

    answer(initech, waiting["question_id"], {"Proceed?": "Yes"})
    request = wait_for(initech, conversation, "permission.request", run_id)["data"]
    decide(initech, request["approval_id"], decision="allow")
    terminal = initech.wait_for_terminal(conversation, run_id)

    assert terminal["type"] == "run.completed", terminal
    assert '"Proceed?"="Yes"' in terminal["data"]["result"]
    assert file_text(initech, conversation, "ran.txt") == "after\n"


def test_twenty_runs_waiting_at_once_decided_in_random_order_each_take_their_own_decision(initech: Client) -> None:
    create_profile(Tenant.objects.get(pk=initech.tenant), "crowd", AgentSpec(permission_rules=ASKS))
    conversations = [initech.create_conversation(agent="crowd") for _ in range(20)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        runs = list(
            pool.map(
                lambda pair: send(initech, pair[1], f"[[bash echo run-{pair[0]} >> /workspace/ran.txt]]"),
                enumerate(conversations),
            )
        )
    waiting = [
        wait_for(initech, c, "run.waiting", r, timeout=120)["data"] for c, r in zip(conversations, runs, strict=True)
    ]
    order = list(range(20))
    random.Random(20).shuffle(order)
    allowed = set(order[:10])

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda n: decide(initech, waiting[n]["approval_id"], decision="allow" if n in allowed else "deny"),
                order,
            )
        )
    terminals = [initech.wait_for_terminal(c, r, timeout=120) for c, r in zip(conversations, runs, strict=True)]

    for n, (conversation, terminal) in enumerate(zip(conversations, terminals, strict=True)):
        assert terminal["type"] == "run.completed", terminal
        ran = file_text(initech, conversation, "ran.txt")
        assert ran == (f"run-{n}\n" if n in allowed else None), (n, ran)


# --- A worker killed while a call waits in-process --------------------------------------------------


@pytest.fixture(scope="module")
def patient(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform whose runs wait in-process for two minutes before they suspend, with two workers."""
    with serving(
        database_url(connection.settings_dict),
        platform.env["REDIS_URL"],
        tmp_path_factory.mktemp("patient"),
        APPROVAL_WAIT_SECONDS="120",
    ) as own:
        own.start_worker("second-worker")
        yield own


def test_a_worker_killed_while_a_call_waits_in_process_leaves_the_run_waiting_and_the_call_runs_once(
    patient: Platform, transactional_db: None
) -> None:
    hooli = tenant_client(patient.base_url, "hooli")
    conversation = careful(hooli)
    run_id = send(hooli, conversation, "[[bash echo once >> /workspace/ran.txt]] [[reply done]]")
    request = wait_for(hooli, conversation, "permission.request", run_id)["data"]
    started = of(run_events(hooli, conversation, run_id), "run.started")[0]
    deadline = time.monotonic() + 20
    # The run stores its session up to the waiting call (the CLI writes it a moment after asking).
    while not SessionEntry.objects.filter(conversation_id=conversation, data__contains=request["tool_use_id"]).exists():
        assert time.monotonic() < deadline, "the waiting call was never checkpointed"
        time.sleep(0.1)

    patient.kill(next(worker for worker in patient.workers if str(worker.pid) in started["worker"]))
    waiting = wait_for(hooli, conversation, "run.waiting", run_id, timeout=30)["data"]
    decide(hooli, request["approval_id"], decision="allow")
    terminal = hooli.wait_for_terminal(conversation, run_id)

    assert waiting["approval_id"] == request["approval_id"] and waiting["worker_lost"] == started["worker"]
    assert terminal["type"] == "run.completed" and terminal["data"]["result"] == "done", terminal
    assert file_text(hooli, conversation, "ran.txt") == "once\n"
    (resumed,) = of(run_events(hooli, conversation, run_id), "run.resumed")
    assert resumed["worker"] != started["worker"]
