"""Messages the end user sends while the agent works, as the chat page shows them under each busy policy of the
conversation's agent (queue, steer, interrupt), on the running platform."""

import pytest
from playwright.sync_api import Page, expect

from agents.services import create_profile
from agents.spec import AgentSpec
from tenants.models import Tenant
from tests.chat.pages import completed, reopened, send
from tests.e2e.harness import Client

pytestmark = pytest.mark.usefixtures("orm_beside_playwright")


def default_agent_that(policy: str, acme: Client, chat: Page) -> None:
    create_profile(Tenant.objects.get(pk=acme.tenant), policy, AgentSpec(busy_policy=policy), is_default=True)
    reopened(chat)  # the page reads its agents' policies when it loads


def started_slowly(chat: Page, seconds: int) -> None:
    send(chat, f"[[slow {seconds}]]")
    expect(chat.locator(".assistant")).not_to_have_count(0, timeout=15_000)


def test_a_queued_message_waits_its_turn_below_the_answer_then_runs(chat: Page, acme: Client) -> None:
    default_agent_that("queue", acme, chat)
    started_slowly(chat, 6)
    expect(chat.locator("#busy-hint")).to_have_text("Your message waits its turn: it runs after the current answer.")

    send(chat, "Then this [[reply the queued answer]]")

    working, waiting = chat.locator("article.run").first, chat.locator("article.run").nth(1)
    expect(waiting.locator(".user")).to_have_text("Then this [[reply the queued answer]]")
    expect(waiting.locator(".status")).to_contain_text("Waiting its turn…")
    expect(waiting).to_have_attribute("data-behind", str(working.get_attribute("data-run")))
    completed(chat, runs=2)
    expect(chat.locator("article.run").last.locator(".assistant")).to_have_text("the queued answer")
    expect(chat.locator("article.run[data-behind]")).to_have_count(0)
    expect(chat.locator("#stop")).to_be_hidden()


def test_a_queued_message_is_cancelled_and_the_working_run_goes_on(chat: Page, acme: Client) -> None:
    default_agent_that("queue", acme, chat)
    started_slowly(chat, 6)
    send(chat, "Never mind this one")
    waiting = chat.locator("article.run").nth(1)

    waiting.get_by_role("button", name="Cancel this message").click()

    expect(waiting.locator(".status")).to_have_attribute("data-state", "interrupted")
    expect(waiting.locator(".status")).to_have_text("Cancelled")
    expect(chat.locator("#stop")).to_be_visible()  # the first run still works
    completed(chat)
    expect(chat.locator("#stop")).to_be_hidden()
    expect(chat.locator(".status[data-state='completed']")).to_have_count(1)


def test_a_steered_message_joins_the_running_answer_where_the_agent_read_it(chat: Page, acme: Client) -> None:
    default_agent_that("steer", acme, chat)
    started_slowly(chat, 8)
    expect(chat.locator("#busy-hint")).to_have_text("Your message reaches the agent while it works.")

    send(chat, "And one more thing")

    steered = chat.locator("article.run").first.locator(".user.steered")
    expect(steered).to_have_text("And one more thing", timeout=15_000)
    expect(chat.locator(".pending")).to_have_count(0)
    completed(chat)
    expect(chat.locator("article.run")).to_have_count(1)
    expect(chat.locator(".assistant").last).to_contain_text("And one more thing")


def test_an_interrupting_message_stops_the_answer_and_runs_next(chat: Page, acme: Client) -> None:
    default_agent_that("interrupt", acme, chat)
    started_slowly(chat, 30)
    expect(chat.locator("#busy-hint")).to_have_text("Sending stops the current answer and starts on your message.")

    send(chat, "Stop, do this instead [[reply the new answer]]")

    expect(chat.locator("article.run").first.locator(".status")).to_have_attribute(
        "data-state", "interrupted", timeout=15_000
    )
    expect(chat.locator("article.run").nth(1).locator(".assistant")).to_have_text("the new answer", timeout=30_000)
    completed(chat)
    expect(chat.locator("#stop")).to_be_hidden()
