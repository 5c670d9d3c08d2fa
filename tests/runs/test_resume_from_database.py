"""A conversation continues on a machine with no local state: the transcript comes from the database."""

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from claude_agent_sdk import (
    ClaudeAgentOptions,
    ClaudeSDKClient,
    MirrorErrorMessage,
    ResultMessage,
    project_key_for_directory,
)
from claude_agent_sdk.types import SessionKey

from conversations.models import Conversation
from gateway.upstreams.offline import OFFLINE_LABEL
from runs.session_store import DatabaseSessionStore
from tests.gateway.test_offline_model import offline_base_url  # noqa: F401 (a fixture)


async def run_turn(
    prompt: str,
    *,
    store: DatabaseSessionStore,
    base_url: str,
    workspace: Path,
    machine: Path,
    resume: str | None = None,
) -> ResultMessage:
    """One turn of the real CLI on a "machine" whose config dir and home exist only for this turn."""
    config_dir, home = machine / "claude", machine / "home"
    config_dir.mkdir(parents=True)
    home.mkdir()
    options = ClaudeAgentOptions(
        cwd=str(workspace),
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(config_dir),
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
        session_store=store,
        resume=resume,
    )
    messages: list[Any] = []
    stored_at_result = None
    client = ClaudeSDKClient(options)
    await client.connect()
    try:
        await client.query(prompt)
        async for message in client.receive_response():
            messages.append(message)
            if isinstance(message, ResultMessage):
                stored_at_result = await store.load(session_key(workspace, message.session_id))
    finally:
        await client.disconnect()
    result = messages[-1]
    assert isinstance(result, ResultMessage) and not result.is_error, result
    assert not [m for m in messages if isinstance(m, MirrorErrorMessage)]
    # The SDK flushes the turn to the store before it hands out the result; closing adds nothing.
    assert await store.load(session_key(workspace, result.session_id)) == stored_at_result
    return result


def session_key(workspace: Path, session_id: str) -> SessionKey:
    # The SDK keys a session by its cwd: the conversation's workspace keeps its path on every machine.
    return {"project_key": project_key_for_directory(workspace), "session_id": session_id}


def texts(transcript: list[dict[str, Any]], role: str) -> list[str]:
    """The text blocks of a transcript's messages from `role`, in order."""
    messages = [e["message"] for e in transcript if e.get("type") == role]
    contents = [
        m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}] for m in messages
    ]
    return [block["text"] for content in contents for block in content if block.get("type") == "text"]


@pytest.mark.cli
@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_conversation_continues_on_a_machine_with_no_local_state(
    conversation: Conversation,
    offline_base_url: str,  # noqa: F811 (the imported fixture)
    tmp_path: Path,
) -> None:
    store = DatabaseSessionStore(conversation.pk)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    # The tool's output carries a NUL into the transcript, which PostgreSQL's jsonb would refuse.
    first_prompt = "My name is Ada. [[bash printf 'tea\\0time']]"
    first = await run_turn(
        first_prompt, store=store, base_url=offline_base_url, workspace=workspace, machine=tmp_path / "first"
    )
    key = session_key(workspace, first.session_id)
    after_first_turn = await store.load(key)
    # Nothing of the first machine is left; the workspace is recreated empty at the same path.
    shutil.rmtree(tmp_path / "first")
    shutil.rmtree(workspace)
    workspace.mkdir()

    second = await run_turn(
        "What did I say? [[recall]]",
        store=store,
        base_url=offline_base_url,
        workspace=workspace,
        machine=tmp_path / "second",
        resume=first.session_id,
    )

    assert first.result == f"{OFFLINE_LABEL} reply: My name is Ada.\n[Bash result] tea\x00time"
    assert second.result == f"Earlier turns: 1) {first_prompt}"
    assert second.session_id == first.session_id
    assert after_first_turn is not None and texts(after_first_turn, "assistant")[-1] == first.result
    transcript = await store.load(key)
    assert transcript is not None and transcript[: len(after_first_turn)] == after_first_turn
    assert texts(transcript, "user") == [first_prompt, "What did I say? [[recall]]"]
    assert texts(transcript, "assistant")[-1] == second.result
    assert await store.list_sessions(key["project_key"]) == [
        {"session_id": first.session_id, "mtime": pytest.approx(time.time() * 1000, abs=60_000)}
    ]
