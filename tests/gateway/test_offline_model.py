"""The offline model speaks the Anthropic Messages API well enough for the real Claude Code CLI."""

import asyncio
import hashlib
import importlib.util
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from gateway.upstreams.offline import OFFLINE_LABEL, respond

Event = tuple[str, dict[str, Any]]
# Located without importing the SDK: the project's own `mcp` app shadows the `mcp` package it imports.
_SDK = importlib.util.find_spec("claude_agent_sdk")
CLI = Path(_SDK.origin if _SDK and _SDK.origin else "").parent / "_bundled" / "claude"


def user(*texts: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": t} for t in texts]}


def assistant_tool_use(tool_id: str, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    block = {"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}
    return {"role": "assistant", "content": [block]}


def tool_result(tool_id: str, content: Any) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": content}]}


async def call(
    messages: list[dict[str, Any]],
    *,
    stream: bool = True,
    path: str = "/v1/messages",
    session: str = "session-1",
    extra: dict[str, Any] | None = None,
    beta: str | None = None,
) -> tuple[int, str, bytes]:
    request = {"model": "offline-1", "max_tokens": 100, "stream": stream, "messages": messages, **(extra or {})}
    body = json.dumps(request)
    headers = {"X-Claude-Code-Session-Id": session, "x-api-key": "anything"}
    if beta is not None:
        headers["anthropic-beta"] = beta
    response = await respond(path, body.encode(), headers)
    return response.status, response.content_type, b"".join([chunk async for chunk in response.body])


def parse_sse(raw: bytes) -> list[Event]:
    events = []
    for chunk in raw.decode().split("\n\n"):
        if chunk:
            kind_line, data_line = chunk.split("\n")
            kind, data = kind_line.removeprefix("event: "), json.loads(data_line.removeprefix("data: "))
            assert data["type"] == kind
            events.append((kind, data))
    return events


async def stream(messages: list[dict[str, Any]], **kwargs: Any) -> list[Event]:
    status, content_type, raw = await call(messages, **kwargs)
    assert (status, content_type) == (200, "text/event-stream")
    return parse_sse(raw)


def deltas(events: list[Event], kind: str) -> Iterator[dict[str, Any]]:
    return (data["delta"] for name, data in events if name == "content_block_delta" and data["delta"]["type"] == kind)


def reply_text(events: list[Event]) -> str:
    return "".join(d["text"] for d in deltas(events, "text_delta"))


def tool_use(events: list[Event]) -> tuple[str, str, dict[str, Any]]:
    start = next(
        d["content_block"] for n, d in events if n == "content_block_start" and d["content_block"]["type"] == "tool_use"
    )
    partial = "".join(d["partial_json"] for d in deltas(events, "input_json_delta"))
    return start["id"], start["name"], json.loads(partial)


def stop_reason(events: list[Event]) -> str:
    return next(d["delta"]["stop_reason"] for n, d in events if n == "message_delta")


@pytest.mark.asyncio
async def test_default_reply_is_labelled_and_streamed_word_by_word() -> None:
    events = await stream([user("hello there offline world")])

    assert reply_text(events) == f"{OFFLINE_LABEL} reply: hello there offline world"
    assert len(list(deltas(events, "text_delta"))) >= 8
    assert [n for n, _ in events][:2] == ["message_start", "content_block_start"]
    assert [n for n, _ in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    message = events[0][1]["message"]
    assert message["id"].startswith("msg_offline_") and len(message["id"]) == len("msg_offline_") + 24
    assert (message["model"], message["role"], message["content"], message["stop_reason"]) == (
        "offline-1",
        "assistant",
        [],
        None,
    )
    assert stop_reason(events) == "end_turn"


@pytest.mark.asyncio
async def test_message_ids_are_deterministic_and_distinct_per_request() -> None:
    first = await stream([user("one")])
    again = await stream([user("one")])
    other = await stream([user("two")])

    ids = [events[0][1]["message"]["id"] for events in (first, again, other)]
    assert ids[0] == ids[1] != ids[2]


@pytest.mark.asyncio
async def test_system_reminders_and_directives_are_left_out_of_the_prompt() -> None:
    events = await stream([user("<system-reminder>context</system-reminder>", "hi [[words 2]]")])
    reminder_only = await stream([user("<system-reminder>only</system-reminder>[[reply x]]")])

    assert reply_text(events) == "word1 word2"
    assert reply_text(reminder_only) == "x"


@pytest.mark.asyncio
async def test_reply_directive_sets_the_exact_text() -> None:
    events = await stream([user("ignored [[reply Exactly this.]]")])

    assert reply_text(events) == "Exactly this."


@pytest.mark.asyncio
async def test_think_directive_streams_a_signed_thinking_block_first() -> None:
    events = await stream([user("[[think Let me ponder this]] hi")])

    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "text"]
    assert "".join(d["thinking"] for d in deltas(events, "thinking_delta")) == "Let me ponder this"
    assert len(list(deltas(events, "signature_delta"))) == 1
    assert reply_text(events) == f"{OFFLINE_LABEL} reply: hi"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("directive", "name", "tool_input"),
    [
        (
            "[[bash echo hi && ls]]",
            "Bash",
            {"command": "echo hi && ls", "description": "offline model command"},
        ),
        (
            "[[write notes/a.txt two words\nand a line]]",
            "Write",
            {"file_path": "notes/a.txt", "content": "two words\nand a line"},
        ),
        ("[[read /tmp/x.txt]]", "Read", {"file_path": "/tmp/x.txt"}),
        ('[[tool Glob {"pattern": "**/*.py"}]]', "Glob", {"pattern": "**/*.py"}),
        ("[[skill csv-report sales.csv]]", "Skill", {"skill": "csv-report", "args": "sales.csv"}),
        ("[[skill hello]]", "Skill", {"skill": "hello"}),
        ('[[mcp tools echo {"text": "hi"}]]', "mcp__tools__echo", {"text": "hi"}),
        (
            "[[ask Which colour? | Blue | Red]]",
            "AskUserQuestion",
            {
                "questions": [
                    {
                        "question": "Which colour?",
                        "header": "Which colour",
                        "options": [
                            {"label": "Blue", "description": "Answer Blue"},
                            {"label": "Red", "description": "Answer Red"},
                        ],
                        "multiSelect": False,
                    }
                ]
            },
        ),
    ],
)
async def test_tool_directives_become_tool_use_calls(directive: str, name: str, tool_input: dict[str, Any]) -> None:
    events = await stream([user(f"do it {directive}")])

    tool_id, tool_name, streamed_input = tool_use(events)
    assert (tool_name, streamed_input) == (name, tool_input)
    assert tool_id.startswith("toolu_offline_")
    assert len(list(deltas(events, "input_json_delta"))) > 1
    assert stop_reason(events) == "tool_use"


@pytest.mark.asyncio
async def test_tools_run_one_per_call_then_the_reply_carries_their_results() -> None:
    turn = user("[[think plan]] list [[bash ls]] [[read a.txt]]")
    history = [user("earlier"), {"role": "assistant", "content": "ok"}]

    first = await stream([*history, turn])
    after_bash = [*history, turn, assistant_tool_use("t1", "Bash", {}), tool_result("t1", "a.txt\nb.txt\n")]
    second = await stream(after_bash)
    after_read = [
        *after_bash,
        assistant_tool_use("t2", "Read", {}),
        tool_result("t2", [{"type": "text", "text": "x" * 3000}]),
    ]
    final = await stream(after_read)

    assert tool_use(first)[1:] == ("Bash", {"command": "ls", "description": "offline model command"})
    assert len(list(deltas(first, "thinking_delta"))) == 1
    assert tool_use(second)[1:] == ("Read", {"file_path": "a.txt"})
    assert list(deltas(second, "thinking_delta")) == []
    assert reply_text(final) == f"{OFFLINE_LABEL} reply: list\n[Bash result] a.txt\nb.txt\n\n[Read result] {'x' * 2000}"
    assert stop_reason(final) == "end_turn"


@pytest.mark.asyncio
async def test_a_resumed_deferred_turn_goes_on_with_its_remaining_directives() -> None:
    turn = user("[[bash echo one]] [[bash echo two]]")
    resumed = [
        turn,
        assistant_tool_use("t1", "Bash", {}),
        tool_result("t1", "one"),
        user("Continue from where you left off."),
    ]

    events = await stream(resumed)

    assert tool_use(events)[1:] == ("Bash", {"command": "echo two", "description": "offline model command"})


@pytest.mark.asyncio
async def test_an_ask_directive_needs_a_question_and_two_to_four_options() -> None:
    status, _, body = await call([user("[[ask Go? | Yes]]")])

    assert status == 400
    assert "ask expects `[[ask QUESTION | OPTION | OPTION]]` with 2 to 4 options" in body.decode()


@pytest.mark.asyncio
async def test_messages_the_user_sent_mid_turn_are_answered_in_the_reply_in_order() -> None:
    def sent(text: str) -> str:
        return (
            f"The user sent a new message while you were working:\n{text}\n\nThis is how Claude Code surfaces "
            "messages the user sends mid-turn. Address the message above as you continue this turn."
        )

    turn = user("one [[bash sleep 1]] [[bash true]]")
    in_a_result = tool_result("t1", f"done\n\n<system-reminder>\n{sent('two')}\n</system-reminder>")
    as_system = {"role": "system", "content": [{"type": "text", "text": sent("three")}]}
    messages = [turn, assistant_tool_use("t1", "Bash", {}), in_a_result, as_system]

    final = await stream([*messages, assistant_tool_use("t2", "Bash", {}), tool_result("t2", "ok")])

    assert reply_text(final).endswith("\n[sent while working] two\n[sent while working] three")
    assert reply_text(final).startswith(f"{OFFLINE_LABEL} reply: one\n[Bash result] done")


@pytest.mark.asyncio
async def test_usage_directive_reports_exact_figures_in_start_and_delta() -> None:
    events = await stream([user("[[usage input=100 output=7 cache_read=30 cache_write_5m=5 cache_write_1h=2]] hi")])

    start_usage = events[0][1]["message"]["usage"]
    final_usage = next(d["usage"] for n, d in events if n == "message_delta")
    expected = {
        "input_tokens": 100,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 7,
        "cache_creation": {"ephemeral_5m_input_tokens": 5, "ephemeral_1h_input_tokens": 2},
    }
    assert start_usage == {**expected, "output_tokens": 0}
    assert final_usage == {**expected, "output_tokens": 7}


@pytest.mark.asyncio
async def test_default_usage_counts_request_size_and_emitted_deltas() -> None:
    events = await stream([user("[[words 5]]")])

    usage = next(d["usage"] for n, d in events if n == "message_delta")
    assert usage["output_tokens"] == 5
    assert usage["input_tokens"] >= 1
    assert usage["cache_read_input_tokens"] == usage["cache_creation_input_tokens"] == 0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (529, "overloaded_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (400, "invalid_request_error"),
    ],
)
async def test_error_directive_answers_with_the_status_and_anthropic_error(status: int, kind: str) -> None:
    result = await call([user(f"[[error {status}]]")])

    assert result[:2] == (status, "application/json")
    assert json.loads(result[2]) == {
        "type": "error",
        "error": {"type": kind, "message": f"{OFFLINE_LABEL}: scripted error {status}"},
    }


@pytest.mark.asyncio
async def test_error_times_fails_only_the_first_calls_of_the_turn_per_session() -> None:
    messages = [user("flaky [[error 529 times=2]]")]

    statuses = [(await call(messages, session="flaky-a"))[0] for _ in range(3)]
    other_session = (await call(messages, session="flaky-b"))[0]

    assert statuses == [529, 529, 200]
    assert other_session == 529


@pytest.mark.asyncio
async def test_recall_lists_earlier_user_turns() -> None:
    first_turn = await stream([user("<system-reminder>x</system-reminder>[[recall]]")])
    history = [
        user("my name is Ada"),
        {"role": "assistant", "content": "hi"},
        user("I like tea"),
        {"role": "assistant", "content": "ok"},
    ]
    later = await stream([*history, user("[[recall]]")])

    assert reply_text(first_turn) == "Earlier turns: none"
    assert reply_text(later) == "Earlier turns: 1) my name is Ada; 2) I like tea"


@pytest.mark.asyncio
async def test_slow_spreads_at_least_twenty_deltas_over_the_duration_and_can_be_cancelled() -> None:
    started = time.monotonic()
    events = await stream([user("[[slow 0.4]] hi")])
    elapsed = time.monotonic() - started

    assert reply_text(events) == f"{OFFLINE_LABEL} reply: hi"
    assert len(list(deltas(events, "text_delta"))) == 20
    assert elapsed >= 0.35
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(call([user("[[slow 5]] long one")]), timeout=0.2)


@pytest.mark.asyncio
async def test_words_emits_one_delta_per_word() -> None:
    events = await stream([user("[[words 50]]")])

    assert reply_text(events) == " ".join(f"word{n}" for n in range(1, 51))
    assert len(list(deltas(events, "text_delta"))) == 50


@pytest.mark.asyncio
async def test_non_streaming_request_gets_the_complete_message() -> None:
    status, content_type, raw = await call([user("[[think hmm]] [[reply done]]")], stream=False)

    message = json.loads(raw)
    assert (status, content_type) == (200, "application/json")
    assert message["type"] == "message" and message["stop_reason"] == "end_turn"
    assert [b["type"] for b in message["content"]] == ["thinking", "text"]
    assert message["content"][1] == {"type": "text", "text": "done"}
    assert message["usage"]["output_tokens"] == 3  # thinking, signature and text deltas


@pytest.mark.asyncio
async def test_count_tokens_reports_input_tokens() -> None:
    status, _, raw = await call([user("[[usage input=42]]")], path="/v1/messages/count_tokens")

    assert (status, json.loads(raw)) == (200, {"input_tokens": 42})


@pytest.mark.asyncio
async def test_malformed_json_is_a_400_invalid_request() -> None:
    response = await respond("/v1/messages", b"{not json", {})

    error = json.loads(b"".join([c async for c in response.body]))
    assert response.status == 400
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"


@pytest.mark.asyncio
async def test_bad_directive_arguments_are_a_400_naming_the_directive() -> None:
    status, _, raw = await call([user("[[tool Glob {oops]]")])

    assert status == 400
    assert "bad directive" in json.loads(raw)["error"]["message"]


@pytest.mark.asyncio
async def test_unknown_path_is_a_404_not_found() -> None:
    status, _, raw = await call([user("hi")], path="/v1/complete")

    assert status == 404
    assert json.loads(raw)["error"]["type"] == "not_found_error"


STRUCTURED_TOOL = {"name": "StructuredOutput", "input_schema": {"type": "object"}}


@pytest.mark.asyncio
async def test_structured_directive_calls_the_structured_output_tool_with_exactly_the_object() -> None:
    events = await stream(
        [user('answer [[structured {"city": "Paris", "n": [1, 2]}]]')], extra={"tools": [STRUCTURED_TOOL]}
    )

    assert tool_use(events)[1:] == ("StructuredOutput", {"city": "Paris", "n": [1, 2]})
    assert stop_reason(events) == "tool_use"


@pytest.mark.asyncio
async def test_structured_directives_follow_the_tools_and_the_last_repeats_while_the_tool_is_offered() -> None:
    turn = user('[[structured {"n": "bad"}]] [[bash ls]] [[structured {"n": 0}]]')
    history = [turn]
    calls = []
    for number in range(4):
        events = await stream(history, extra={"tools": [STRUCTURED_TOOL]})
        calls.append(tool_use(events)[1:])
        tool_id = f"t{number}"
        history += [assistant_tool_use(tool_id, *calls[-1]), tool_result(tool_id, "Output does not match")]

    assert calls == [
        ("Bash", {"command": "ls", "description": "offline model command"}),
        ("StructuredOutput", {"n": "bad"}),
        ("StructuredOutput", {"n": 0}),
        ("StructuredOutput", {"n": 0}),
    ]


@pytest.mark.asyncio
async def test_structured_directive_is_made_once_when_the_request_offers_no_structured_output_tool() -> None:
    turn = user('[[structured {"n": 1}]]')
    refused = tool_result("t1", "No such tool available: StructuredOutput")

    events = await stream([turn, assistant_tool_use("t1", "StructuredOutput", {"n": 1}), refused])

    assert stop_reason(events) == "end_turn"
    assert reply_text(events).endswith("[StructuredOutput result] No such tool available: StructuredOutput")


@pytest.mark.asyncio
async def test_the_clis_structured_output_nudge_continues_the_turn_it_follows() -> None:
    first = user("tell me [[words 2]]")
    nudge = user("[structured-output-enforce] You MUST call the StructuredOutput tool to complete this request.")

    events = await stream([first, {"role": "assistant", "content": "word1 word2"}, nudge])

    assert reply_text(events) == "word1 word2"


@pytest.mark.asyncio
async def test_task_directive_launches_the_subagent_in_the_foreground_with_unescaped_directives() -> None:
    events = await stream(
        [user('delegate [[task researcher look {{bash ls -a}} then {{tool Glob {"pattern": "*"}}}]]')]
    )

    assert tool_use(events)[1:] == (
        "Agent",
        {
            "subagent_type": "researcher",
            "description": "offline model task",
            "prompt": 'look [[bash ls -a]] then [[tool Glob {"pattern": "*"}]]',
            "run_in_background": False,
        },
    )


@pytest.mark.asyncio
async def test_a_subagent_turn_runs_the_directives_of_its_prompt() -> None:
    reminder = "<system-reminder>context</system-reminder>"
    prompt = "look [[bash ls -a]] then [[reply found it]]"

    first = await stream([user(reminder, prompt)])
    final = await stream([user(reminder, prompt), assistant_tool_use("t1", "Bash", {}), tool_result("t1", "a")])

    assert tool_use(first)[1:] == ("Bash", {"command": "ls -a", "description": "offline model command"})
    assert reply_text(final) == "found it"


@pytest.mark.asyncio
async def test_options_directive_reports_what_the_request_carried_in_one_json_line() -> None:
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.327.e78;"},
        {"type": "text", "text": "You are an agent."},
        {"type": "text", "text": "Preset prompt.\n\n" + "A" * 300 + " APPENDED"},
    ]
    extra = {
        "system": system,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "low"},
        "tools": [{"name": "Write"}, {"name": "Agent"}],
        "metadata": {"user_id": "u"},
    }

    events = await stream([user("[[options]]")], extra=extra, beta="effort-2025-11-24")

    text = reply_text(events)
    report = json.loads(text)
    system_text = "You are an agent.\nPreset prompt.\n\n" + "A" * 300 + " APPENDED"
    assert "\n" not in text
    assert report == {
        "model": "offline-1",
        "max_tokens": 100,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "low"},
        "effort": "low",
        "tools": ["Agent", "Write"],
        "temperature": None,
        "metadata": {"user_id": "u"},
        "anthropic_beta": "effort-2025-11-24",
        "system_sha256": hashlib.sha256(system_text.encode()).hexdigest()[:16],
        "system_tail": system_text[-200:],
    }


@pytest.mark.asyncio
async def test_options_directive_reports_a_plain_string_system_and_absent_fields_as_null() -> None:
    events = await stream([user("[[options]]")], extra={"system": "Be brief."})

    report = json.loads(reply_text(events))
    assert report["system_tail"] == "Be brief."
    assert report["tools"] == [] and report["thinking"] is None and report["effort"] is None
    assert report["anthropic_beta"] is None


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("directive", "named"),
    [
        ("[[structured {oops]]", "structured"),
        ("[[structured 42]]", "structured"),
        ("[[task researcher]]", "task"),
        ("[[task researcher look {{bash ls]]", "task"),
        ("[[options please]]", "options"),
    ],
)
async def test_new_directives_with_bad_arguments_are_a_400_naming_them(directive: str, named: str) -> None:
    status, _, raw = await call([user(directive)])

    message = json.loads(raw)["error"]["message"]
    assert status == 400
    assert f"bad directive: {named}" in message


# --- the real CLI -----------------------------------------------------------------------------


async def serve_offline_model(request: web.Request) -> web.StreamResponse:
    result = await respond(request.path, await request.read(), request.headers)
    response = web.StreamResponse(status=result.status, headers={"Content-Type": result.content_type})
    await response.prepare(request)
    async for chunk in result.body:
        await response.write(chunk)
    await response.write_eof()
    return response


@pytest_asyncio.fixture
async def offline_base_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", serve_offline_model)
    runner = web.AppRunner(app)
    await runner.setup()
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def run_cli(prompt: str, base_url: str, tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    cwd, home = tmp_path / "work", tmp_path / "home"
    cwd.mkdir(parents=True)
    home.mkdir(parents=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "IS_SANDBOX": "1",  # tests run as root, where bypassPermissions is otherwise refused
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "offline-test-key",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    args = ["-p", prompt, "--output-format", "stream-json", "--verbose", "--model", "offline-1"]
    process = await asyncio.create_subprocess_exec(
        str(CLI),
        *args,
        "--permission-mode",
        "bypassPermissions",
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode() + stdout.decode()
    return cwd, [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]


@pytest.mark.cli
@pytest.mark.asyncio
async def test_real_cli_gets_a_reply_and_runs_a_write_tool(offline_base_url: str, tmp_path: Path) -> None:
    _, plain = await run_cli("hello from the test", offline_base_url, tmp_path / "plain")
    cwd, tooled = await run_cli("make a file [[write hello.txt hi there]]", offline_base_url, tmp_path / "tool")

    plain_result = plain[-1]
    assert plain_result["type"] == "result" and plain_result["is_error"] is False
    assert plain_result["result"] == f"{OFFLINE_LABEL} reply: hello from the test"
    assert (cwd / "hello.txt").read_text() == "hi there"
    tool_result_ = tooled[-1]
    assert tool_result_["type"] == "result" and tool_result_["is_error"] is False
    assert tool_result_["result"].startswith(f"{OFFLINE_LABEL} reply: make a file\n[Write result] ")
