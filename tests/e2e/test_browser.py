"""An operator in a real browser (headless Chromium) watches and steers a conversation live."""

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, Page, expect

from approvals import services as approvals
from approvals.models import Decider
from conversations.models import Conversation, Run
from tenants.services import ensure_offline_model
from tests.conftest import add_events
from tests.e2e.harness import Client, Platform
from tests.subagent_events import AGENT_CALL, STRUCTURED_OUTPUT, subagent_run_events


@pytest.fixture(autouse=True)
def _orm(orm_beside_playwright: None) -> None:
    pass


@pytest.fixture
def operator_page(browser: Browser, platform: Platform, transactional_db: None) -> Iterator[Page]:
    User.objects.create_superuser("operator", "op@example.com", "a-long-test-password")
    context = browser.new_context(base_url=platform.base_url)
    page = context.new_page()
    page.goto("/admin/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "a-long-test-password")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    yield page
    context.close()


def test_an_operator_sends_a_message_and_watches_the_answer_stream_in(operator_page: Page, acme: Client) -> None:
    page = operator_page
    conversation = acme.create_conversation(title="watched")

    page.goto(f"/admin/conversations/conversation/{conversation}/live/")
    page.wait_for_selector("#conn:text('open')")
    page.fill("#text", "Hello from the browser [[bash echo seen by chromium]]")
    page.click("#send")
    page.wait_for_selector("#run-status:text('completed')", timeout=30_000)

    feed = page.inner_text("#feed")
    assert "Hello from the browser" in feed
    assert "[Bash result] seen by chromium" in feed
    assert page.is_visible("#offline-badge")
    last_seq = int(page.inner_text("#last-seq"))
    assert last_seq == Conversation.objects.get(pk=conversation).last_seq


def test_an_operator_interrupts_a_slow_run_from_the_browser(operator_page: Page, acme: Client) -> None:
    page = operator_page
    conversation = acme.create_conversation()
    page.goto(f"/admin/conversations/conversation/{conversation}/live/")
    page.wait_for_selector("#conn:text('open')")

    run = acme.send(conversation, "[[slow 30]]")
    page.wait_for_selector("#interrupt:not([disabled])", timeout=30_000)
    page.click("#interrupt")
    page.wait_for_selector("#run-status:text('interrupted')", timeout=10_000)

    assert Run.objects.get(pk=run["id"]).status == Run.Status.INTERRUPTED


def test_the_live_page_nests_a_subagents_activity_with_its_usage_in_the_agent_call(
    operator_page: Page, acme: Client
) -> None:
    page = operator_page
    conversation = Conversation.objects.get(pk=acme.create_conversation())
    run = Run.objects.create(conversation=conversation, model=ensure_offline_model(), status=Run.Status.COMPLETED)
    add_events(run, subagent_run_events(structured_output=STRUCTURED_OUTPUT))

    page.goto(f"/admin/conversations/conversation/{conversation.pk}/live/")
    page.wait_for_selector("#conn:text('open')")

    call = page.locator(f"#feed details.tool[data-tool='{AGENT_CALL}']")
    nested = call.locator(":scope > details.subagent > .nested")
    expect(call.locator(":scope > details.subagent > summary")).to_have_text("Subagent researcher")
    expect(nested.locator(":scope > .assistant")).to_have_count(2)
    expect(nested.locator(":scope > details.tool summary")).to_contain_text("ls notes*")
    expect(nested.locator(":scope > p.meta")).to_contain_text("in 40 · out 12")  # the subagent's model call
    expect(page.locator("#feed article.run > .structured pre")).to_contain_text('"files": [')
    expect(page.locator("#feed article.run > p.meta").first).to_contain_text("agent default@1")


def test_the_live_page_shows_what_a_run_asked_and_who_decided_without_deciding_itself(
    operator_page: Page, acme: Client
) -> None:
    page = operator_page
    conversation = Conversation.objects.get(pk=acme.create_conversation(user_id="alice"))
    run = Run.objects.create(conversation=conversation, model=ensure_offline_model(), status=Run.Status.COMPLETED)
    call = {"type": "tool_use", "id": "toolu_echo", "name": "Bash", "input": {"command": "echo hi"}}
    add_events(run, [("run.started", {"model": "offline"}), ("message", {"block": call})])
    approval = approvals.ask_approval(run, "toolu_echo", "Bash", {"command": "echo hi"}, "Asks first.", 60)
    approvals.decide_approval(approval.pk, approvals.Who(Decider.END_USER, "alice"), allow=False, message="No")

    page.goto(f"/admin/conversations/conversation/{conversation.pk}/live/")
    page.wait_for_selector("#conn:text('open')")

    card = page.locator("#feed details.tool[data-tool='toolu_echo'] + section.request")
    expect(card).to_have_attribute("data-state", "denied")
    expect(card.locator(".outcome")).to_have_text("Denied by end user alice · “No”")
    expect(card.locator("button")).to_have_count(0)
