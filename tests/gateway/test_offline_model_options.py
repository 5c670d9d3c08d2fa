"""Through the real CLI and the Agent SDK, the offline model shows what agent options do to a run."""

import json
import os
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import (
    AgentDefinition,
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ResultMessage,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)
from claude_agent_sdk.types import SystemPromptPreset

from tests.gateway.test_offline_model import offline_base_url  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.cli, pytest.mark.asyncio]

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
    "required": ["city", "n"],
    "additionalProperties": False,
}


async def run_sdk(prompt: str, base_url: str, machine: Path, **options: Any) -> list[Any]:
    """One turn of the real CLI through the SDK, unsandboxed; `machine` keeps its config dir for a resume."""
    cwd, home = machine / "work", machine / "home"
    cwd.mkdir(parents=True, exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    client = ClaudeSDKClient(
        ClaudeAgentOptions(
            cwd=str(cwd),
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(home),
                "CLAUDE_CONFIG_DIR": str(home / ".claude"),
                "IS_SANDBOX": "1",  # tests run as root, where bypassPermissions is otherwise refused
                "ANTHROPIC_BASE_URL": base_url,
                "ANTHROPIC_API_KEY": "offline-test-key",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                "DISABLE_TELEMETRY": "1",
                "DISABLE_AUTOUPDATER": "1",
            },
            model="offline-1",
            permission_mode="bypassPermissions",
            setting_sources=[],
            **options,
        )
    )
    messages: list[Any] = []
    await client.connect()
    try:
        await client.query(prompt)
        messages = [message async for message in client.receive_response()]
    finally:
        await client.disconnect()
    assert isinstance(messages[-1], ResultMessage)
    return messages


def appended(text: str, *, snapshot: bool | None = None) -> SystemPromptPreset:
    preset: SystemPromptPreset = {"type": "preset", "preset": "claude_code", "append": text}
    if snapshot is not None:
        preset["snapshot"] = snapshot
    return preset


async def test_a_fitting_structured_object_becomes_the_results_structured_output(
    offline_base_url: str,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    messages = await run_sdk(
        'Where? [[structured {"city": "Paris", "n": 3}]]',
        offline_base_url,
        tmp_path,
        output_format={"type": "json_schema", "schema": SCHEMA},
    )

    result = messages[-1]
    assert (result.subtype, result.is_error) == ("success", False)
    assert result.structured_output == {"city": "Paris", "n": 3}
    assert json.loads(result.result) == {"city": "Paris", "n": 3}


async def test_an_object_that_does_not_fit_the_schema_ends_the_run_after_five_attempts(
    offline_base_url: str,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    messages = await run_sdk(
        'Where? [[structured {"city": "Paris"}]]',
        offline_base_url,
        tmp_path,
        output_format={"type": "json_schema", "schema": SCHEMA},
    )

    result = messages[-1]
    refusals = [
        block.content
        for message in messages
        if isinstance(message, UserMessage) and isinstance(message.content, list)
        for block in message.content
        if isinstance(block, ToolResultBlock) and block.is_error
    ]
    assert (result.subtype, result.is_error, result.structured_output) == (
        "error_max_structured_output_retries",
        True,
        None,
    )
    assert refusals == ["Output does not match required schema: root: must have required property 'n'"] * 5
    assert result.errors == [
        "Failed to provide valid structured output after 5 attempts — last StructuredOutput error: "
        "Output does not match required schema: root: must have required property 'n'"
    ]


async def test_a_subagents_messages_carry_the_tool_use_id_of_the_call_that_launched_it(
    offline_base_url: str,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    researcher = AgentDefinition(
        description="Looks things up", prompt="You look things up.", tools=["Bash", "Read"], model="offline-sub"
    )

    messages = await run_sdk(
        "Ask the researcher. [[task researcher {{bash echo from-the-subagent}} {{options}}]]",
        offline_base_url,
        tmp_path,
        agents={"researcher": researcher},
        forward_subagent_text=True,
    )

    launch = next(
        block
        for message in messages
        if isinstance(message, AssistantMessage) and message.parent_tool_use_id is None
        for block in message.content
        if isinstance(block, ToolUseBlock)
    )
    nested = [m for m in messages if getattr(m, "parent_tool_use_id", None) == launch.id]
    nested_blocks = [block for m in nested if isinstance(m.content, list) for block in m.content]
    report = json.loads(next(b.text for b in nested_blocks if isinstance(b, TextBlock) and b.text.startswith("{")))
    assert (launch.name, launch.input["subagent_type"]) == ("Agent", "researcher")
    assert [type(m).__name__ for m in nested] == ["UserMessage", "AssistantMessage", "UserMessage", "AssistantMessage"]
    assert [b.input["command"] for b in nested_blocks if isinstance(b, ToolUseBlock)] == ["echo from-the-subagent"]
    assert [b.content for b in nested_blocks if isinstance(b, ToolResultBlock)] == ["from-the-subagent"]
    assert (report["model"], report["tools"]) == ("offline-sub", ["Bash", "Read"])
    assert messages[-1].is_error is False


async def test_options_directive_shows_the_model_effort_tools_and_appended_instructions(
    offline_base_url: str,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    messages = await run_sdk(
        "What did you get? [[options]]",
        offline_base_url,
        tmp_path,
        system_prompt=appended("Always answer in French."),
        effort="low",
        thinking={"type": "disabled"},
        disallowed_tools=["Bash"],
    )

    report = json.loads(messages[-1].result)
    assert report["model"] == "offline-1"
    assert report["system_tail"].endswith("\n\nAlways answer in French.")
    assert (report["effort"], report["thinking"]) == ("low", None)
    assert "Write" in report["tools"] and "Bash" not in report["tools"]
    assert "effort-2025-11-24" in report["anthropic_beta"].split(",")


@pytest.mark.parametrize(("snapshot", "seen_on_resume"), [(False, "Second version."), (None, "First version.")])
async def test_a_resumed_session_sees_changed_instructions_only_without_a_snapshot(
    offline_base_url: str,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
    snapshot: bool | None,
    seen_on_resume: str,
) -> None:
    first = await run_sdk(
        "[[options]]", offline_base_url, tmp_path, system_prompt=appended("First version.", snapshot=snapshot)
    )

    second = await run_sdk(
        "[[options]]",
        offline_base_url,
        tmp_path,
        system_prompt=appended("Second version.", snapshot=snapshot),
        resume=first[-1].session_id,
    )

    assert json.loads(first[-1].result)["system_tail"].endswith("First version.")
    assert json.loads(second[-1].result)["system_tail"].endswith(seen_on_resume)
    assert second[-1].session_id == first[-1].session_id
