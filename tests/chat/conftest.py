from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.chat.pages import chat_page
from tests.e2e.harness import Client, Platform


@pytest.fixture
def chat(browser: Browser, platform: Platform, acme: Client) -> Iterator[Page]:
    """alice's chat page, opened by a chat link."""
    with chat_page(browser, platform, acme) as page:
        yield page
