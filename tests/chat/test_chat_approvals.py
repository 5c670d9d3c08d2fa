"""People in the loop on the chat page: the end user allows, denies or edits the agent's tool call and answers its
question, in a real browser on the real platform; a request settled anywhere else settles on the page too."""

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, WebSocketRoute, expect

from agents.services import create_profile
from agents.spec import AgentSpec
from approvals import services as approvals
from approvals.models import Approval, Decider, Question
from conversations.events import EventItem, record_events
from conversations.models import Conversation, Run
from tenants.models import Tenant
from tenants.services import ensure_offline_model
from tests.chat.pages import completed, in_a_thread, record_live, reopened, send
from tests.e2e.harness import Client, Platform

pytestmark = pytest.mark.usefixtures("orm_beside_playwright")

ASK_BEFORE_ECHO = [{"pattern": "Bash(echo *)", "action": "ask"}]
REASON = "The agent profile 'careful' asks a person first (Bash(echo *))."
STARTED = {"model": "offline", "model_display_name": "Offline model (not Claude)"}


@pytest.fixture
def careful(acme: Client) -> None:
    """acme's default agent asks its user before any `echo`."""
    spec = AgentSpec(permission_rules=ASK_BEFORE_ECHO)
    create_profile(Tenant.objects.get(pk=acme.tenant), "careful", spec, is_default=True)


def approval_card(chat: Page) -> Any:
    card = chat.locator("section.request[data-kind='approval']")
    expect(card.locator(".title")).to_be_visible(timeout=30_000)
    return card


def question_card(chat: Page) -> Any:
    card = chat.locator("section.request[data-kind='question']")
    expect(card.locator("legend")).to_be_visible(timeout=30_000)
    return card


def bash_result(chat: Page) -> str:
    tool = chat.locator("details.tool").last
    tool.locator("summary").click()
    return tool.locator(".result").inner_text()


def the_run(acme: Client) -> Run:
    (conversation,) = acme.http.get(f"/api/tenants/{acme.tenant}/conversations").json()["results"]
    return Run.objects.filter(conversation_id=conversation["id"]).latest("created_at")


# --- on the running platform: the sandboxed CLI asks, the page decides over its WebSocket ----------------------


def test_the_user_allows_the_agents_call_and_sees_its_result_and_the_answer(careful: None, chat: Page) -> None:
    send(chat, "Greet me [[bash echo hello from the approved call]]")

    card = approval_card(chat)
    expect(card.locator(".title")).to_contain_text("The agent wants to use Bash")
    expect(card.locator(".reason")).to_have_text(REASON)
    expect(card.locator("details.input pre")).to_contain_text('"command": "echo hello from the approved call"')
    expect(chat.locator(".status")).to_have_text("Waiting for your approval…")
    card.get_by_role("button", name="Allow", exact=True).click()

    expect(card.locator(".outcome")).to_have_text("Allowed by you", timeout=10_000)
    expect(card.locator("button")).to_have_count(0)
    completed(chat)
    assert bash_result(chat) == "hello from the approved call"
    expect(chat.locator(".assistant").last).to_contain_text("[Bash result] hello from the approved call")
    (approval,) = Approval.objects.all()
    assert (approval.status, approval.decided_by_kind, approval.decided_by) == ("allowed", Decider.END_USER, "alice")


def test_the_user_answers_the_agents_question_with_one_click(chat: Page) -> None:
    send(chat, "[[ask Colour? | Blue | Red]]")

    card = question_card(chat)
    expect(card.locator("legend")).to_have_text("Colour?")
    expect(card.locator(".choice")).to_have_text(["Blue Answer Blue", "Red Answer Red"])
    expect(chat.locator(".status")).to_have_text("Waiting for your answer…")
    card.locator(".choice[data-label='Blue']").click()

    expect(card.locator(".outcome")).to_have_text("Answered by you", timeout=10_000)
    expect(card.locator(".answer")).to_have_text("Answer: Blue")
    expect(card.locator(".choice.chosen")).to_have_attribute("data-label", "Blue")
    completed(chat)
    reply = chat.locator(".assistant").last
    expect(reply).to_contain_text("[AskUserQuestion result]")
    expect(reply).to_contain_text('"Colour?"="Blue"')


def test_an_answer_in_the_users_own_words_reaches_the_agent(chat: Page) -> None:
    send(chat, "[[ask Which day? | Monday | Tuesday]]")

    card = question_card(chat)
    card.get_by_label("Your own answer to “Which day?”").fill("Thursday afternoon")
    card.get_by_label("Your own answer to “Which day?”").press("Enter")

    expect(card.locator(".answer")).to_have_text("Answer: Thursday afternoon", timeout=10_000)
    completed(chat)
    expect(chat.locator(".assistant").last).to_contain_text('"Which day?"="Thursday afternoon"')
    assert Question.objects.get().answers == {"Which day?": "Thursday afternoon"}


def test_a_denial_with_a_message_is_what_the_model_reads(careful: None, chat: Page) -> None:
    send(chat, "[[bash echo never shown]]")

    card = approval_card(chat)
    card.get_by_label("A message to the agent with your decision (optional)").fill("Not on a Friday")
    card.get_by_role("button", name="Deny").click()

    expect(card.locator(".outcome")).to_have_text("Denied by you · “Not on a Friday”", timeout=10_000)
    completed(chat)
    assert "The user denied this call. They said: Not on a Friday" in bash_result(chat)
    expect(chat.locator(".assistant").last).to_contain_text("They said: Not on a Friday")


def test_the_user_allows_the_call_with_an_edited_input(careful: None, chat: Page) -> None:
    send(chat, "[[bash echo as the agent wrote it]]")

    card = approval_card(chat)
    card.get_by_role("button", name="Edit input").click()
    editor = card.get_by_label("The input of Bash, as JSON")
    expect(editor).to_be_focused()
    editor.fill("not json")
    card.get_by_role("button", name="Allow with this input").click()
    expect(card.locator(".problem")).to_contain_text("The input is not JSON")
    editor.fill(json.dumps({"command": "echo as alice edited it"}))
    card.get_by_role("button", name="Allow with this input").click()

    expect(card.locator(".outcome")).to_have_text("Allowed by you, with an edited input", timeout=10_000)
    expect(card.locator("details.edited pre")).to_contain_text("echo as alice edited it")
    completed(chat)
    assert bash_result(chat) == "as alice edited it"


def test_allowing_for_the_conversation_asks_no_more_in_it(careful: None, chat: Page) -> None:
    send(chat, "[[bash echo first]]")
    card = approval_card(chat)
    card.get_by_role("button", name="Allow for this conversation").click()
    expect(card.locator(".outcome")).to_have_text(
        "Allowed by you, and Bash for the rest of this conversation", timeout=10_000
    )
    completed(chat)

    send(chat, "[[bash echo second]]")

    completed(chat, runs=2)
    expect(chat.locator("section.request")).to_have_count(1)  # the second call asked nobody
    assert bash_result(chat) == "second"


def test_a_request_the_tenants_backend_decides_settles_on_the_open_page(
    careful: None, chat: Page, acme: Client
) -> None:
    send(chat, "[[bash echo decided by the backend]]")
    card = approval_card(chat)
    (approval,) = Approval.objects.all()

    decided = acme.http.post(f"/api/tenants/{acme.tenant}/approvals/{approval.pk}", json={"decision": "allow"})

    assert decided.status_code == 200, decided.text
    expect(card.locator(".outcome")).to_have_text("Allowed by the application", timeout=10_000)
    expect(card.locator("button")).to_have_count(0)
    completed(chat)
    assert bash_result(chat) == "decided by the backend"


def test_a_decision_the_page_had_not_heard_of_is_refused_calmly_in_its_card(
    careful: None, chat: Page, acme: Client
) -> None:
    def hold_back_what_follows_a_decision(page_side: WebSocketRoute) -> None:
        # This page misses the decision made elsewhere, and everything after it, as a slow tab would.
        server = page_side.connect_to_server()
        missing = False

        def to_the_page(message: str | bytes) -> None:
            nonlocal missing
            missing = missing or '"permission.decision"' in str(message)
            if not (missing and '"seq"' in str(message)):
                page_side.send(message)

        server.on_message(to_the_page)

    chat.route_web_socket(re.compile(r"/ws/"), hold_back_what_follows_a_decision)
    send(chat, "[[bash echo decided twice]]")
    card = approval_card(chat)
    (approval,) = Approval.objects.all()
    acme.http.post(f"/api/tenants/{acme.tenant}/approvals/{approval.pk}", json={"decision": "allow"})

    card.get_by_role("button", name="Deny").click()

    expect(card.locator(".problem")).to_contain_text("already settled", timeout=10_000)
    expect(card.locator(".problem")).not_to_have_attribute("role", "alert")
    expect(card.get_by_role("button", name="Deny")).to_be_enabled()  # nothing stuck: the user may look again
    expect(chat.locator(".error")).to_have_count(0)
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by_kind) == ("allowed", Decider.API_KEY)
    deadline = time.monotonic() + 30  # the page hears nothing more, but the allowed call runs to its end
    while the_run(acme).status == Run.Status.RUNNING and time.monotonic() < deadline:
        time.sleep(0.2)
    assert the_run(acme).status == Run.Status.COMPLETED


@pytest.fixture
def suspends_soon(platform: Platform) -> Iterator[None]:
    """The platform's worker suspends a run whose call has waited a second (then restored as it was)."""
    for worker in list(platform.workers):
        platform.kill(worker)
    quick = platform.start_worker("suspends-soon", APPROVAL_WAIT_SECONDS="1")
    yield
    platform.kill(quick)
    platform.start_worker()


def test_a_run_suspended_for_the_user_waits_on_the_page_and_resumes_once_allowed(
    suspends_soon: None, careful: None, chat: Page, acme: Client
) -> None:
    send(chat, "[[bash echo after the wait]]")
    card = approval_card(chat)
    deadline = time.monotonic() + 30
    while the_run(acme).status != Run.Status.WAITING and time.monotonic() < deadline:
        time.sleep(0.2)
    assert the_run(acme).status == Run.Status.WAITING  # no worker holds it now

    expect(chat.locator(".status")).to_have_text("Waiting for your approval…")
    expect(chat.locator("#stop")).to_be_visible()
    card.get_by_role("button", name="Allow", exact=True).click()

    completed(chat)
    assert bash_result(chat) == "after the wait"
    expect(chat.locator(".assistant").last).to_contain_text("[Bash result] after the wait")
    expect(chat.locator("#stop")).to_be_hidden()
    types = [event["type"] for event in acme.events(str(the_run(acme).conversation_id))]
    assert types.index("run.waiting") < types.index("permission.decision") < types.index("run.resumed")


# --- what the page draws of requests stored before it opened, or settled while it looks ----------------------


def alices_run(acme: Client, status: str, events: list[EventItem], active: bool = False) -> Run:
    conversation = Conversation.objects.get(pk=acme.create_conversation(user_id="alice"))
    run = Run.objects.create(conversation=conversation, model=ensure_offline_model(), user_id="alice", status=status)
    if active:
        Conversation.objects.filter(pk=conversation.pk).update(active_run=run)
    in_a_thread(lambda: record_events(run, events))
    return run


def tool_call(tool_use_id: str, name: str, tool_input: dict[str, Any]) -> EventItem:
    block = {"type": "tool_use", "id": tool_use_id, "name": name, "input": tool_input}
    return ("message", {"block": block, "message_id": f"msg_{tool_use_id}"})


COLOUR = [
    {
        "question": "Colour?",
        "header": "Paint",
        "options": [{"label": "Blue", "description": "Calm"}, {"label": "Red", "description": "Loud"}],
        "multiSelect": False,
    },
    {
        "question": "Rooms?",
        "header": "Rooms",
        "options": [{"label": "Hall", "description": ""}, {"label": "Kitchen", "description": ""}],
        "multiSelect": True,
    },
]


def test_requests_settled_before_the_page_opened_are_drawn_settled(chat: Page, acme: Client) -> None:
    echo = {"command": "echo hi"}
    run = alices_run(
        acme,
        Run.Status.COMPLETED,
        [
            ("run.queued", {"text": "Paint it", "user_id": "alice"}),
            ("run.started", STARTED),
            tool_call("toolu_echo", "Bash", echo),
        ],
    )

    def asked_and_settled() -> None:
        approval = approvals.ask_approval(run, "toolu_echo", "Bash", echo, REASON, 3600)
        approvals.decide_approval(approval.pk, approvals.Who(Decider.END_USER, "alice"), allow=True, remember=True)
        record_events(run, [("tool.result", {"tool_use_id": "toolu_echo", "content": "hi", "is_error": False})])
        record_events(run, [tool_call("toolu_ask", "AskUserQuestion", {"questions": COLOUR})])
        question = approvals.ask_question(run, "toolu_ask", COLOUR, 3600)
        answers = {"Colour?": "Red", "Rooms?": ["Hall", "Kitchen"]}
        approvals.answer_question(question.pk, approvals.Who(Decider.API_KEY, "ak_1234"), answers)
        record_events(run, [("run.completed", {"result": "Painted."})])

    in_a_thread(asked_and_settled)
    reopened(chat)

    approval, question = chat.locator("section.request[data-kind='approval']"), chat.locator("section.request").last
    expect(approval).to_have_attribute("data-state", "allowed")
    expect(approval.locator(".outcome")).to_have_text("Allowed by you, and Bash for the rest of this conversation")
    expect(question).to_have_attribute("data-state", "answered")
    expect(question.locator(".outcome")).to_have_text("Answered by the application")
    expect(question.locator("legend")).to_have_text(["Paint Colour?", "Rooms Rooms?"])
    expect(question.locator(".answer")).to_have_text(["Answer: Red", "Answer: Hall, Kitchen"])
    expect(question.locator(".choice.chosen")).to_have_text(["Red Loud", "Hall", "Kitchen"])
    expect(chat.locator("section.request .control")).to_have_count(0)
    expect(chat.locator("section.request button:enabled, section.request input:enabled")).to_have_count(0)
    expect(chat.locator(".status[data-state='completed']")).to_have_count(1)


def test_a_waiting_run_settled_elsewhere_goes_on_on_the_open_page(chat: Page, acme: Client) -> None:
    echo = {"command": "echo later"}
    run = alices_run(
        acme,
        Run.Status.WAITING,
        [
            ("run.queued", {"text": "Later", "user_id": "alice"}),
            ("run.started", STARTED),
            tool_call("t1", "Bash", echo),
        ],
        active=True,
    )
    asked: list[Approval] = []

    def ask() -> None:
        asked.append(approvals.ask_approval(run, "t1", "Bash", echo, REASON, 3600))
        record_events(run, [("run.waiting", approvals.request_summary(asked[0]))])

    in_a_thread(ask)
    approval = asked[0]
    reopened(chat)
    card = chat.locator("section.request")
    expect(card.get_by_role("button", name="Allow", exact=True)).to_be_enabled()
    expect(chat.locator(".status")).to_have_text("Waiting for your approval…")
    expect(chat.locator("#stop")).to_be_visible()
    expect(chat.locator("#send")).to_be_disabled()  # the agent's policy for messages while it works: none said, refused

    in_a_thread(lambda: approvals.decide_approval(approval.pk, approvals.Who(Decider.OPERATOR, "op"), allow=False))

    expect(card.locator(".outcome")).to_have_text("Denied by an operator")
    expect(card.locator(".control")).to_have_count(0)
    record_live(run, [("run.resumed", {**STARTED, "after": approvals.request_summary(approval)})])
    expect(chat.locator(".status")).to_have_text("Running · Offline model (not Claude)")
    record_live(run, [("run.completed", {"result": "Done."})])
    expect(chat.locator(".status[data-state='completed']")).to_have_count(1)
    expect(chat.locator("#stop")).to_be_hidden()


def test_a_request_left_pending_when_its_run_ended_offers_nothing_more(chat: Page, acme: Client) -> None:
    run = alices_run(
        acme,
        Run.Status.INTERRUPTED,
        [("run.queued", {"text": "Ask me", "user_id": "alice"}), ("run.started", STARTED)],
    )

    def asked_then_ended() -> None:
        approvals.ask_question(run, "toolu_q", COLOUR[:1], 3600)
        record_events(run, [("run.interrupted", {"reason": "interrupted"})])

    in_a_thread(asked_then_ended)
    reopened(chat)

    card = chat.locator("section.request")
    expect(card.locator(".outcome")).to_have_text("The run ended before anyone answered.")
    expect(card.locator("button:enabled")).to_have_count(0)


def test_while_a_run_works_the_user_may_send_when_the_agents_policy_takes_messages(chat: Page, acme: Client) -> None:
    spec = AgentSpec(busy_policy="steer")
    create_profile(Tenant.objects.get(pk=acme.tenant), "helpful", spec, is_default=True)
    agent = {"name": "helpful", "version": 1, "kind": "agent"}  # run.started names no policy: the agents list's
    run = alices_run(
        acme,
        Run.Status.RUNNING,
        [("run.queued", {"text": "Work", "user_id": "alice"}), ("run.started", {**STARTED, "agent": agent})],
        active=True,
    )

    reopened(chat)

    expect(chat.locator("#stop")).to_be_visible()
    expect(chat.locator("#send")).to_be_enabled()
    expect(chat.locator("#busy-hint")).to_have_text("Your message reaches the agent while it works.")
    record_live(run, [("run.resumed", {**STARTED, "agent": {**agent, "busy_policy": "queue"}})])
    expect(chat.locator("#busy-hint")).to_have_text("Your message waits its turn: it runs after the current answer.")
    record_live(run, [("run.completed", {"result": "Done."})])
    expect(chat.locator("#busy-hint")).to_be_hidden()
    expect(chat.locator("#send")).to_be_enabled()
