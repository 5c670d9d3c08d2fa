"""An end user in a real browser (Debian's headless Chromium, driven by Playwright) chats through a chat link."""

import io
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from agents.services import create_profile
from agents.spec import AgentSpec
from conversations.events import EventItem
from conversations.models import Conversation, Run
from tenants.models import Tenant
from tenants.services import ensure_offline_model
from tests.chat.pages import completed, record_live, reopened, send
from tests.conftest import add_events
from tests.e2e.harness import Client, Platform
from tests.subagent_events import AGENT_CALL, STRUCTURED_OUTPUT, subagent_run_events

pytestmark = pytest.mark.usefixtures("orm_beside_playwright")


def conversations(acme: Client, status: str = "") -> list[dict[str, Any]]:
    response = acme.http.get(f"/api/tenants/{acme.tenant}/conversations", params={"status": status} if status else {})
    return response.json()["results"]


def test_a_message_streams_in_with_its_bash_tool_block(chat: Page) -> None:
    send(chat, "Look around [[bash echo seen by the chat]]")

    expect(chat.locator(".status[data-state='completed']")).to_have_count(1, timeout=30_000)
    tool = chat.locator("details.tool")
    expect(tool.locator("summary")).to_contain_text("Bash")
    tool.locator("summary").click()
    expect(tool.locator(".result")).to_contain_text("seen by the chat")
    expect(chat.locator(".assistant").last).to_contain_text("Offline model (not Claude) reply")
    expect(chat.locator(".user")).to_have_text(re.compile("Look around"))


def test_stop_ends_a_slow_run(chat: Page) -> None:
    send(chat, "[[slow 30]]")
    expect(chat.locator("#stop")).to_be_visible(timeout=15_000)
    expect(chat.locator(".assistant")).not_to_have_count(0, timeout=15_000)

    chat.click("#stop")

    expect(chat.locator(".status[data-state='interrupted']")).to_have_count(1, timeout=10_000)
    expect(chat.locator("#stop")).to_be_hidden()


def test_an_agents_html_is_rendered_inert(chat: Page) -> None:
    reply = (
        "<script>window.pwned = 1</script> <img src=x onerror='window.pwned = 2'>\n\n"
        "[click](javascript:window.pwned=3) **bold**"
    )
    send(chat, f"[[reply {reply}]]")

    expect(chat.locator(".status[data-state='completed']")).to_have_count(1, timeout=30_000)
    answer = chat.locator(".assistant").last
    expect(answer.locator("strong")).to_have_text("bold")
    assert answer.locator("script").count() == 0
    assert answer.locator("img[onerror]").count() == 0
    assert chat.locator("a[href^='javascript']").count() == 0
    for link in answer.locator("a").all():
        link.click()
    assert chat.evaluate("window.pwned") is None


def test_an_attached_file_is_read_by_the_agent_and_its_file_downloads(chat: Page, tmp_path: Path) -> None:
    attachment = tmp_path / "notes.txt"
    attachment.write_text("attached for the agent")
    chat.set_input_files("#attach", str(attachment))
    send(chat, "Read it [[bash cat notes.txt && mkdir -p outputs && echo from-the-agent > outputs/answer.txt]]")

    expect(chat.locator(".status[data-state='completed']")).to_have_count(1, timeout=30_000)
    chat.locator("details.tool summary").click()
    expect(chat.locator("details.tool .result")).to_contain_text("attached for the agent")
    chat.click("#files summary")
    link = chat.locator("#file-list a", has_text="outputs/answer.txt")
    expect(link).to_be_visible(timeout=10_000)
    with chat.expect_download() as download:
        link.click()
    assert Path(download.value.path()).read_text() == "from-the-agent\n"


def test_the_page_resumes_a_cut_socket_with_the_whole_text_and_no_duplicate(chat: Page) -> None:
    send(chat, "[[words 60]] [[slow 4]]")
    expect(chat.locator(".assistant")).not_to_have_count(0, timeout=15_000)

    chat.evaluate("document.dispatchEvent(new Event('cut-socket'))")  # the page's test hook: close the socket
    expect(chat.locator(".status[data-state='completed']")).to_have_count(1, timeout=30_000)

    words = chat.locator(".assistant").last.inner_text().split()
    assert words == [f"word{n}" for n in range(1, 61)]


def test_conversations_are_made_renamed_and_archived_from_the_keyboard(chat: Page) -> None:
    send(chat, "Where to go?")
    expect(chat.locator("#conversations button[aria-current]")).to_have_count(1, timeout=10_000)
    chat.fill("#title", "Holiday plans")
    chat.press("#title", "Tab")  # a change commits the new title
    expect(chat.locator("#conversations button[aria-current]")).to_have_text("Holiday plans", timeout=10_000)

    chat.locator("#new-conversation").focus()
    chat.keyboard.press("Enter")
    expect(chat.locator("#text")).to_be_focused()  # a new conversation is ready to type in
    send(chat, "And what to pack?")
    expect(chat.locator("#conversations button")).to_have_count(2, timeout=10_000)

    chat.locator("#archive").focus()
    chat.keyboard.press("Enter")
    expect(chat.locator("#archive-cancel")).to_be_focused()  # asked first; Enter now would keep it
    chat.keyboard.press("Shift+Tab")
    expect(chat.locator("#archive-confirm")).to_be_focused()
    chat.keyboard.press("Enter")
    expect(chat.locator("#conversations button")).to_have_count(1, timeout=10_000)
    expect(chat.locator("#conversations button")).to_have_text("Holiday plans")


GREET = """---
name: greet
description: Greets people by name with the script beside this file.
---
[[bash python3 ${CLAUDE_SKILL_DIR}/scripts/greet.py $ARGUMENTS]]
"""


def test_slash_commands_are_offered_as_you_type_and_run_their_skill(chat: Page, acme: Client) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("greet/SKILL.md", GREET)
        zipped.writestr("greet/scripts/greet.py", "import sys\nprint('hello,', *sys.argv[1:])\n")
    skills = f"/api/tenants/{acme.tenant}/skills"
    assert acme.http.post(skills, files={"archive": ("greet.zip", archive.getvalue())}).status_code == 201
    acme.http.patch(f"{skills}/greet", json={"slash_command": True, "title": "Greeter"})
    chat.reload()
    expect(chat.locator("#app[data-ready='true']")).to_have_count(1, timeout=15_000)

    chat.fill("#text", "/gr")
    expect(chat.locator("#commands li")).to_have_text(["/greetGreeter"])
    chat.press("#text", "Enter")  # picks the command rather than sending
    expect(chat.locator("#text")).to_have_value("/greet ")
    chat.locator("#text").press_sequentially("Ada")
    chat.press("#text", "Enter")

    expect(chat.locator(".status[data-state='completed']")).to_have_count(1, timeout=30_000)
    bash = chat.locator("details.tool").last
    bash.locator("summary").click()
    expect(bash.locator(".result")).to_have_text("hello, Ada")

    send(chat, "/nope")
    expect(chat.locator(".error").last).to_contain_text("/nope is not a command here. Commands: /greet.")


def test_the_page_shows_what_is_left_of_the_users_budget(chat: Page, acme: Client) -> None:
    expect(chat.locator("#budget")).to_be_hidden()  # no limits: nothing to show
    budget = acme.http.put(f"/api/tenants/{acme.tenant}/budgets/users/alice", json={"daily_calls": 10})
    assert budget.status_code == 200
    chat.reload()
    expect(chat.locator("#budget")).to_have_text("10 model calls left today")

    send(chat, "[[bash echo counted]]")

    expect(chat.locator(".status[data-state='completed']")).to_have_count(1, timeout=30_000)
    # The agent's two calls, and the title of the conversation's first turn.
    expect(chat.locator("#budget")).to_have_text("7 model calls left today")


def upload_skill(acme: Client, name: str, description: str) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(f"{name}/SKILL.md", f"---\nname: {name}\ndescription: {description}\n---\nDo it.\n")
    upload = acme.http.post(
        f"/api/tenants/{acme.tenant}/skills", files={"archive": (f"{name}.zip", archive.getvalue())}
    )
    assert upload.status_code == 201, upload.text


def test_the_user_chooses_the_conversations_skills_and_its_runs_get_only_those(chat: Page, acme: Client) -> None:
    expect(chat.locator("#skills")).to_be_hidden()  # the tenant has none
    upload_skill(acme, "greet", "Greets people.")
    upload_skill(acme, "shout", "Shouts.")
    chat.reload()
    expect(chat.locator("#app[data-ready='true']")).to_have_count(1, timeout=15_000)
    chat.click("#skills summary")
    expect(chat.locator("#skill-count")).to_have_text("(all)")

    chat.get_by_label(re.compile("shout")).uncheck()

    expect(chat.locator("#skill-count")).to_have_text("(1 of 2)")
    send(chat, "Hello")
    expect(chat.locator(".status[data-state='completed']")).to_have_count(1, timeout=30_000)
    conversation = acme.http.get(f"/api/tenants/{acme.tenant}/conversations").json()["results"][0]
    assert conversation["skills"] == ["greet"]
    started = next(e for e in acme.events(conversation["id"]) if e["type"] == "run.started")
    assert [skill["name"] for skill in started["data"]["skills"]] == ["greet"]
    chat.reload()
    chat.click("#skills summary")
    expect(chat.get_by_label(re.compile("shout"))).not_to_be_checked()
    expect(chat.get_by_label(re.compile("greet"))).to_be_checked()


def test_an_attached_file_shows_in_the_files_panel_at_once_and_as_a_chip_beside_what_was_typed(
    chat: Page, tmp_path: Path
) -> None:
    send(chat, "Hello")
    completed(chat)
    chat.click("#files summary")
    attachment = tmp_path / "notes.txt"
    attachment.write_text("attached")
    chat.set_input_files("#attach", str(attachment))

    send(chat, "Summarise it")

    expect(chat.locator("#file-list a", has_text="notes.txt")).to_be_visible(timeout=10_000)
    bubble = chat.locator(".user").last
    expect(bubble.locator(".text")).to_have_text("Summarise it")
    expect(bubble.locator(".attachment")).to_have_text(["notes.txt"])
    expect(bubble).not_to_contain_text("The user attached these files")


def test_archiving_asks_first_and_an_archived_conversation_is_restored_from_the_list(chat: Page, acme: Client) -> None:
    send(chat, "Keep this")
    expect(chat.locator("#conversations button")).to_have_count(1, timeout=10_000)
    chat.click("#archive")
    expect(chat.locator("#archive-dialog")).to_be_visible()
    chat.click("#archive-cancel")
    assert [c["status"] for c in conversations(acme)] == ["active"]  # cancelled: nothing changed

    chat.click("#archive")
    chat.click("#archive-confirm")
    expect(chat.locator("#conversations button")).to_have_count(0, timeout=10_000)
    chat.click("#archived summary")
    expect(chat.locator("#archived-list li")).to_have_count(1, timeout=10_000)
    chat.get_by_role("button", name="Restore").click()

    expect(chat.locator("#conversations button[aria-current]")).to_have_count(1, timeout=10_000)
    expect(chat.locator("#archived-list li")).to_have_count(0)
    expect(chat.locator(".user .text")).to_have_text("Keep this")
    assert [c["status"] for c in conversations(acme)] == ["active"]


def test_new_conversation_makes_no_empty_conversations_on_the_server(chat: Page, acme: Client) -> None:
    for _ in range(3):
        chat.click("#new-conversation")
    send(chat, "Hello")
    completed(chat)
    for _ in range(3):
        chat.click("#new-conversation")
    expect(chat.locator("#empty")).to_be_visible()

    assert [c["last_seq"] > 0 for c in conversations(acme)] == [True]


def test_the_empty_state_offers_the_offline_models_directives_to_try(chat: Page) -> None:
    empty = chat.locator("#empty")
    expect(empty).to_contain_text("offline model")

    empty.get_by_role("button", name="[[bash ls -la]]").click()
    expect(chat.locator("#text")).to_have_value("What is here? [[bash ls -la]]")
    chat.press("#text", "Enter")

    completed(chat)
    expect(empty).to_be_hidden()
    expect(chat.locator("details.tool summary")).to_contain_text("ls -la")


def test_a_code_block_has_a_copy_button_that_copies_its_code(chat: Page) -> None:
    chat.context.grant_permissions(["clipboard-read", "clipboard-write"])
    send(chat, "[[reply Run this:\n\n```\nmake run\nmake test\n```]]")
    completed(chat)

    chat.locator(".assistant pre").get_by_role("button", name="Copy the code").click()

    expect(chat.locator(".assistant pre .copy")).to_have_text("Copied")
    assert chat.evaluate("navigator.clipboard.readText()") == "make run\nmake test\n"


def test_tool_output_keeps_its_line_breaks_in_the_tool_block_and_the_answer(chat: Page) -> None:
    send(chat, "[[bash printf 'one\\ntwo\\nthree\\n']]")
    completed(chat)

    tool = chat.locator("details.tool")
    tool.locator("summary").click()
    assert tool.locator(".result").inner_text() == "one\ntwo\nthree"
    assert "[Bash result] one\ntwo\nthree" in chat.locator(".assistant").last.inner_text()


def test_a_failed_run_shows_its_error_once(chat: Page, acme: Client) -> None:
    send(chat, "[[error 403]]")

    expect(chat.locator(".status[data-state='failed']")).to_have_count(1, timeout=30_000)
    (conversation,) = conversations(acme)
    (failed,) = [e for e in acme.events(conversation["id"]) if e["type"] == "run.failed"]
    message = failed["data"]["error"]["message"]
    run = chat.locator("article.run")
    expect(run.locator(".status")).to_have_text(message)
    expect(run.locator(".assistant")).to_have_count(0)  # not the CLI's words of the failed call as well
    assert run.inner_text().count(message) == 1


# --- what the page shows of agent profiles: subagents, the agent, the context window, titles, structured output


def stored_conversation(acme: Client, events: list[EventItem], **fields: Any) -> tuple[Conversation, Run]:
    """alice's conversation with one finished run whose events are `events`, stored as a worker stores them."""
    conversation = Conversation.objects.get(pk=acme.create_conversation(user_id="alice"))
    Conversation.objects.filter(pk=conversation.pk).update(**fields)
    run = Run.objects.create(
        conversation=conversation, model=ensure_offline_model(), user_id="alice", status=Run.Status.COMPLETED
    )
    add_events(run, events)
    return conversation, run


def test_a_subagents_activity_is_nested_in_its_agent_call_and_folds_away(chat: Page, acme: Client) -> None:
    stored_conversation(acme, subagent_run_events(structured_output=STRUCTURED_OUTPUT))
    reopened(chat)

    call = chat.locator(f"details.tool[data-tool='{AGENT_CALL}']")
    expect(call.locator(":scope > summary")).to_have_text("Agent Find the notes researcher")
    call.locator(":scope > summary").click()
    section = call.locator(":scope > details.subagent")
    expect(section.locator(":scope > summary")).to_have_text("Subagent researcher")
    nested = section.locator(":scope > .nested")
    expect(nested.locator(":scope > .assistant")).to_have_text(
        ["SUB-LOOKING", "SUB-ANSWER The notes are in notes.txt."]
    )
    bash = nested.locator(":scope > details.tool[data-tool='toolu_sub_bash']")
    expect(bash.locator(":scope > summary")).to_have_text("Bash ls notes*")
    expect(bash.locator(":scope > .result")).to_have_text("notes.txt")
    expect(call.locator(":scope > .result")).to_have_text("AGENT-RESULT notes.txt")
    run = chat.locator("article.run")
    expect(run.locator(":scope > .assistant")).to_have_text(
        ["MAIN-BEFORE Let me ask for help.", "MAIN-AFTER Your notes are in notes.txt."]
    )
    expect(run.locator(":scope > .structured pre")).to_contain_text('"count": 1')

    section.locator(":scope > summary").click()

    expect(nested).to_be_hidden()
    expect(call.locator(":scope > .result")).to_be_visible()


def test_the_header_gauges_the_context_window_and_takes_the_title_given_live(chat: Page, acme: Client) -> None:
    usage = {"totalTokens": 12_345, "maxTokens": 200_000, "percentage": 6.2, "categories": []}
    _, run = stored_conversation(acme, subagent_run_events(), context_usage=usage)
    reopened(chat)
    expect(chat.locator("#context-label")).to_have_text("12k / 200k · 6%")
    expect(chat.locator("#conversations button[aria-current]")).to_have_text("Untitled conversation")

    fuller = {
        "totalTokens": 150_000,
        "maxTokens": 200_000,
        "percentage": 75,
        "categories": [
            {"name": "Messages", "tokens": 140_000, "color": "purple"},
            {"name": "System prompt", "tokens": 10_000},
        ],
    }
    record_live(run, [("context.usage", fuller), ("conversation.titled", {"title": "Where the notes are"})])

    expect(chat.locator("#context-label")).to_have_text("150k / 200k · 75%")
    expect(chat.locator("#context")).to_have_attribute("data-state", "high")
    expect(chat.locator("#context")).to_have_attribute(
        "title",
        "Context window: 150,000 of 200,000 tokens (75%)\nMessages: 140,000 tokens\nSystem prompt: 10,000 tokens",
    )
    assert chat.locator("#context-meter").evaluate("meter => meter.value") == 75
    expect(chat.locator("#title")).to_have_value("Where the notes are")
    expect(chat.locator("#conversations button[aria-current]")).to_have_text("Where the notes are")
    expect(chat.locator(".meta")).to_have_count(0)  # end users see no operator lines for either event


def test_the_agent_the_user_picks_runs_and_its_subagents_work_nests_in_its_call(chat: Page, acme: Client) -> None:
    expect(chat.locator("#agent-picker")).to_be_hidden()  # only the default: nothing to choose
    expect(chat.locator("#agent-name")).to_have_text("default")
    tenant = Tenant.objects.get(pk=acme.tenant)
    researcher = {"name": "researcher", "description": "Looks things up", "prompt": "You research.", "tools": ["Bash"]}
    lead = AgentSpec(subagents=[researcher])
    create_profile(tenant, "lead", lead, description="Delegates the research.", choosable=True)
    create_profile(tenant, "internal", AgentSpec())  # not choosable: never offered
    reopened(chat)
    expect(chat.locator("#agent option")).to_have_text(["default", "lead"])

    chat.select_option("#agent", "lead")
    expect(chat.locator("#agent-description")).to_have_text("lead · Delegates the research.")
    send(chat, "[[task researcher {{bash echo from-sub}}]]")

    completed(chat)
    (conversation,) = conversations(acme)
    assert conversation["agent"] == {"name": "lead", "version": None}
    started = next(e for e in acme.events(conversation["id"]) if e["type"] == "run.started")
    assert started["data"]["agent"]["name"] == "lead"
    expect(chat.locator("#agent-picker")).to_be_hidden()
    expect(chat.locator("#agent-name")).to_have_text("lead")
    # Through the real CLI: the subagent's Bash call and its answer, inside the Agent call.
    call = chat.locator("article.run > details.tool")
    expect(call.locator(":scope > summary")).to_contain_text("Agent")
    expect(call.locator(":scope > summary .agent-type")).to_have_text("researcher")
    call.locator(":scope > summary").click()
    nested = call.locator(":scope > details.subagent > .nested")
    bash = nested.locator(":scope > details.tool")
    expect(bash.locator(":scope > summary")).to_have_text("Bash echo from-sub")
    expect(bash.locator(":scope > .result")).to_have_text("from-sub")
    expect(nested.locator(":scope > .assistant")).to_contain_text(["[Bash result] from-sub"])
    chat.click("#new-conversation")
    expect(chat.locator("#agent-picker")).to_be_visible()


def test_a_link_to_one_conversation_opens_it_and_offers_no_other(
    browser: Browser, platform: Platform, acme: Client
) -> None:
    conversation = acme.create_conversation(user_id="alice", title="Only this one")
    acme.create_conversation(user_id="alice", title="Another")
    link = acme.http.post(
        f"/api/tenants/{acme.tenant}/chat-links", json={"user_id": "alice", "conversation": conversation}
    ).json()["url"]
    context = browser.new_context(base_url=platform.base_url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(link)

    expect(page.locator("#app[data-ready='true']")).to_have_count(1, timeout=15_000)
    expect(page.locator("#conversations button")).to_have_text(["Only this one"])
    expect(page.locator("#new-conversation")).to_have_count(0)
    context.close()
    assert errors == []
