"""The chat page in a browser (Debian's headless Chromium, driven by Playwright), for the chat's browser tests:
opening it by a chat link, typing into it, and storing events beside it as a worker does."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection
from playwright.sync_api import Browser, Page, expect

from conversations.events import EventItem, record_events
from conversations.models import Run
from tests.e2e.harness import Client, Platform


@contextmanager
def chat_page(browser: Browser, platform: Platform, acme: Client, user_id: str = "alice") -> Iterator[Page]:
    """The chat page of `user_id`, opened by a chat link in a browser context of its own; no script error on it."""
    link = acme.http.post(f"/api/tenants/{acme.tenant}/chat-links", json={"user_id": user_id}).json()["url"]
    context = browser.new_context(base_url=platform.base_url, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(link)
    page.wait_for_url("**/chat/")
    expect(page.locator("#app[data-ready='true']")).to_have_count(1, timeout=15_000)
    yield page
    context.close()
    assert errors == []


def send(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def completed(page: Page, runs: int = 1) -> None:
    expect(page.locator(".status[data-state='completed']")).to_have_count(runs, timeout=30_000)


def reopened(chat: Page) -> Page:
    chat.reload()
    expect(chat.locator("#app[data-ready='true']")).to_have_count(1, timeout=15_000)
    return chat


def in_a_thread(work: object) -> None:
    """Run `work()` (database writes that broadcast, as a worker's or another surface's) in a thread of its own:
    Playwright's event loop holds this one."""

    def target() -> None:
        try:
            work()  # type: ignore[operator]
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()


def record_live(run: Run, events: list[EventItem]) -> None:
    """Store and broadcast events as a worker does."""
    in_a_thread(lambda: record_events(run, events))
