"""The context gauge that cannot be read costs the run nothing. Through real runs: test_titles_and_context.py."""

from typing import Any

import pytest
from claude_agent_sdk import ClaudeSDKClient

from conversations.models import Run
from runs.context import read_context_usage, report_context_usage


@pytest.mark.asyncio
async def test_a_cli_that_cannot_say_how_full_its_context_is_costs_the_run_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    emitted: list[tuple[str, dict[str, Any]]] = []
    never_connected = ClaudeSDKClient()
    run = Run(conversation_id=None)

    usage = await read_context_usage(never_connected, run)
    await report_context_usage(usage, run, lambda *event: emitted.append(event))

    assert usage is None and emitted == []
    assert "did not say how full its context is" in caplog.text
