"""Offline model: a deterministic, scriptable stand-in for the Anthropic Messages API.

It is NOT Claude. The gateway serves it in-process to runs of an `offline` model (the demo, which
needs no API key, and every test); the CLI speaks the Anthropic API to it. Routes: `POST /v1/messages` (SSE when `"stream": true`,
otherwise one JSON message) and `POST /v1/messages/count_tokens`.

The *current turn's text* is the latest user message that has text once tool_result blocks and
`<system-reminder>...</system-reminder>` sections are removed. Directives are `[[name args]]`
anywhere in it (args cannot contain `]]`); the text without them is the *prompt*.

- no directive: reply `Offline model (not Claude) reply: <prompt>`, about one text delta per word.
- Messages the user sent mid-turn, which the CLI hands on inside the turn (`The user sent a new message while you
  were working: …`: a reminder in a tool result, or a `system` message after it, as it writes to this model), are no
  turn of their own: the default reply gets one line `[sent while working] <text>` per such message of this turn,
  after its tool results.
- `[[reply TEXT]]`: the final reply is exactly TEXT.
- `[[think TEXT]]`: a thinking block with TEXT opens the first call of the turn.
- `[[tool NAME {json}]]`: a tool_use call of NAME with that input. Shorthands:
  `[[bash COMMAND]]`, `[[write PATH CONTENT]]`, `[[read PATH]]`, and `[[skill NAME ARGS]]` (the
  `Skill` tool: the CLI loads the skill's SKILL.md, whose body becomes the turn's text, so the
  directives written in it run next, with `${CLAUDE_SKILL_DIR}` and `$ARGUMENTS` filled in by the
  CLI), and `[[mcp SERVER TOOL {json}]]` (the MCP tool `mcp__SERVER__TOOL`). Tools run one per model call,
  in order; then the final reply follows. With tools, the default reply gets one line
  `[<tool name> result] <text>` per tool result of this turn (text truncated to 2000 chars).
- `[[slow SECONDS]]`: reply text deltas spread evenly over SECONDS (at least 20 deltas), with
  cancellable sleeps so interrupts can land mid-reply. Streaming requests only.
- `[[words N]]`: the reply is `word1 word2 ... wordN`, one delta per word.
- `[[error STATUS]]` / `[[error STATUS times=N]]`: answer with HTTP STATUS and Anthropic error
  JSON; with times=N only the first N calls of the turn fail (counted per session and turn; the
  CLI retries 429/5xx with backoff, and a 400 about six times with fewer betas).
- `[[usage input=N output=N cache_read=N cache_write_5m=N cache_write_1h=N]]`: exact usage
  figures for every call of the turn (missing keys are 0).
- `[[recall]]`: reply `Earlier turns: 1) <text>; 2) <text>` (or `Earlier turns: none`).
- `[[ask QUESTION | OPTION | OPTION]]`: the CLI's `AskUserQuestion` tool with one question and 2 to 4 options
  (each option's description is `Answer <label>`); its result says the user's answer. A tool like the others.
- A resumed session whose turn was deferred (a call waiting for a person) continues with the CLI's own
  `Continue from where you left off.`: that text is no turn of its own, so the deferred turn's directives go on.
  Nor is the CLI's `[Request interrupted by user]` (what it records of an interrupted turn): a run handed back
  mid-turn by a worker that shut down continues with both, and gets the interrupted turn's reply, whole
  (`[[recall]]` still lists that note among the earlier turns: the session kept it).
- `[[structured {json object}]]`: answer the way a run with `output_format` must, by calling the
  CLI's `StructuredOutput` tool (whose input schema is the run's schema) with exactly that object,
  after the turn's other tools. The CLI ends the turn on a fitting object (`structured_output` set,
  no further call); an object that does not fit comes back as an error tool_result, and the call is
  made again, one per model call (several `structured` directives are used in order, the last one
  repeats) until the CLI gives up (`error_max_structured_output_retries`, 5 attempts by default).
  It repeats only while the request offers `StructuredOutput`; without it the call is made once.
  The CLI's `[structured-output-enforce]` nudge after a plain-text reply belongs to the same turn.
- `[[task AGENT PROMPT]]`: launch subagent AGENT (the CLI's `Agent` tool, in the foreground:
  `run_in_background` false) with PROMPT. The subagent's own model calls see PROMPT as their turn's
  text, so directives in it run there; write them `{{name args}}` (args cannot contain `]]`):
  `[[task researcher look {{bash ls}}]]` has the subagent run `[[bash ls]]`. One level deep.
- `[[options]]`: reply one line of compact JSON (sorted keys) reporting what this request carried:
  `model`, `max_tokens`, `thinking`, `output_config`, `effort` (from `output_config`), `tools` (names,
  sorted), `temperature`, `metadata`, `anthropic_beta` (the header), `system_sha256` (first 16 hex
  digits) and `system_tail` (last 200 characters) of the system prompt: its text blocks joined by
  newlines, without the billing header block (its version suffix differs between conversations).

- `[[seen TEXT]]`: reply `seen: system=N messages=N tools=N`, how often TEXT occurs in the request's system
  prompt, messages (reminders and tool results included) and tool definitions, the directive itself left out:
  what the CLI told the model, e.g. that no host path reaches it.

Reply precedence: `reply`, then `options`, then `seen`, then `words`, then `recall`, then the default. A directive
with unreadable arguments is answered with a 400 `invalid_request_error` that names it.

Without `[[usage]]`: input_tokens = max(1, len(json of messages+system) // 4), output_tokens =
number of deltas, no cache. Ids derive from sha256 of the request body, so identical requests get
identical answers and nothing depends on randomness or the clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.calls import RunCalls, messages_tap
from gateway.upstreams import anthropic
from tenants.models import OFFLINE_LABEL

_ROUTES = ("/v1/messages", "/v1/messages/count_tokens")
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_NAMES = "reply|think|tool|bash|write|read|skill|mcp|task|ask|structured|options|seen|slow|words|error|usage|recall"
_DIRECTIVE = re.compile(rf"\[\[({_NAMES})(?:\s+(.*?))?\]\]", re.DOTALL)
_REMINDER = re.compile(r"<system-reminder>.*?</system-reminder>", re.DOTALL)
# How the CLI hands on a message the user sent while it worked (Claude Code 2.1, streaming input).
_SENT_WHILE_WORKING = re.compile(r"The user sent a new message while you were working:\n(.*?)\n\n", re.DOTALL)
# What the CLI sends after a plain-text reply when the run wants structured output: not a new turn.
_ENFORCE = "[structured-output-enforce]"
# `{{name args}}` inside a task's PROMPT: `[[name args]]` for the subagent.
_ESCAPED = re.compile(rf"\{{\{{(?=(?:{_NAMES})\b)")
_TOOL_DIRECTIVES = {"tool", "bash", "write", "read", "skill", "mcp", "task", "ask"}
# What the CLI says by itself when a resumed session continues a turn it deferred (a call waiting for a person's
# decision): not a new turn, so the turn's remaining directives run next.
_CONTINUE = "Continue from where you left off."
# What the CLI records of a turn it was interrupted in (`... for tool use]` when a tool was running): no turn either.
_INTERRUPTED = "[Request interrupted by user"
_STRUCTURED_TOOL = "StructuredOutput"
_BILLING_HEADER = "x-anthropic-billing-header:"
_SYSTEM_TAIL = 200
_USAGE_KEYS = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
_MIN_SLOW_DELTAS = 20
_RESULT_LIMIT = 2000
_MAX_ERROR_KEYS = 10_000
# Calls seen per (session, turn), so `[[error ... times=N]]` lets the CLI's own retries succeed.
_error_calls: OrderedDict[tuple[str, str], int] = OrderedDict()

Json = dict[str, Any]


@dataclass
class OfflineResponse:
    status: int
    content_type: str
    body: AsyncIterator[bytes]


class DirectiveError(ValueError):
    """A directive whose arguments cannot be understood; answered with a 400."""


@dataclass
class Turn:
    text: str
    prompt: str
    directives: list[tuple[str, str]]
    earlier: list[Any]  # messages before the turn's user message
    later: list[Any]  # messages after it: this turn's tool calls and results

    def directive(self, name: str) -> str | None:
        return next((args for found, args in self.directives if found == name), None)


@dataclass
class Block:
    start: Json
    deltas: list[Json]
    final: Json
    pace: float = 0.0  # seconds to wait before each delta


@dataclass
class Usage:
    input: int
    output: int | None = None  # None: the number of deltas emitted
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0

    def as_dict(self, output: int) -> Json:
        return {
            "input_tokens": self.input,
            "output_tokens": output,
            "cache_creation_input_tokens": self.cache_write_5m + self.cache_write_1h,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_write_5m,
                "ephemeral_1h_input_tokens": self.cache_write_1h,
            },
        }


async def respond(path: str, body: bytes, headers: Mapping[str, str]) -> OfflineResponse:
    route = path.rstrip("/")
    if route not in _ROUTES:
        return _error(404, f"Unknown path {path}; the offline model serves {', '.join(_ROUTES)}")
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return _error(400, f"Request body is not valid JSON: {exc}")
    if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
        return _error(400, "Request body must be a JSON object with a `messages` list")
    turn = _current_turn(request["messages"])
    digest = hashlib.sha256(body).hexdigest()[:24]
    try:
        usage = _usage(turn, request)
        if route == "/v1/messages/count_tokens":
            return _json(200, {"input_tokens": usage.input})
        lowered = {k.lower(): v for k, v in headers.items()}
        failure = _failure(turn, lowered)
        if failure:
            return _error(failure, f"{OFFLINE_LABEL}: scripted error {failure}")
        blocks, stop_reason = _plan(turn, request, lowered, f"toolu_offline_{digest}")
    except DirectiveError as exc:
        return _error(400, f"{OFFLINE_LABEL}: bad directive: {exc}")
    output = usage.output if usage.output is not None else sum(len(b.deltas) for b in blocks)
    message = {
        "id": f"msg_offline_{digest}",
        "type": "message",
        "role": "assistant",
        "model": request.get("model") or "offline",
        "content": [b.final for b in blocks],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage.as_dict(output),
    }
    if request.get("stream"):
        return OfflineResponse(200, "text/event-stream", _sse(message, blocks, usage))
    return _json(200, message)


# The CLI (and the platform's own calls) speak the Anthropic API to the offline model, with the run's token as its key.
cli_environment = anthropic.cli_environment
call_token = anthropic.call_token
side_call = anthropic.side_call
stream_events = anthropic.stream_events


async def serve(calls: RunCalls, request: web.BaseRequest) -> web.StreamResponse:
    body = await calls.read_messages_call(request)
    if isinstance(body, web.StreamResponse):
        return body
    reply = await respond(request.path, body, request.headers)
    headers = {"content-type": reply.content_type}
    return await calls.relay(request, reply.status, headers, reply.body, messages_tap(request, reply.status))


def _json(status: int, payload: Json) -> OfflineResponse:
    return OfflineResponse(status, "application/json", _once(json.dumps(payload).encode()))


def _error(status: int, message: str) -> OfflineResponse:
    kind = _ERROR_TYPES.get(status, "api_error")
    return _json(status, {"type": "error", "error": {"type": kind, "message": message}})


async def _once(chunk: bytes) -> AsyncIterator[bytes]:
    yield chunk


def _event(kind: str, data: Json) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


async def _sse(message: Json, blocks: list[Block], usage: Usage) -> AsyncIterator[bytes]:
    # The CLI takes input and cache figures from message_start and the final output from message_delta.
    start = {**message, "content": [], "stop_reason": None, "usage": usage.as_dict(0)}
    yield _event("message_start", {"message": start})
    for index, block in enumerate(blocks):
        yield _event("content_block_start", {"index": index, "content_block": block.start})
        for delta in block.deltas:
            if block.pace:
                await asyncio.sleep(block.pace)  # a real await, so an interrupt can cancel mid-reply
            yield _event("content_block_delta", {"index": index, "delta": delta})
        yield _event("content_block_stop", {"index": index})
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    yield _event("message_delta", {"delta": delta, "usage": message["usage"]})
    yield _event("message_stop", {})


# --- reading the conversation ---------------------------------------------------------------


def _blocks_of(message: Any) -> list[Json]:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _role_blocks(messages: list[Any], *roles: str) -> list[Json]:
    return [b for m in messages if isinstance(m, dict) and m.get("role") in roles for b in _blocks_of(m)]


def _user_text(message: Any, interrupted_counts: bool = False) -> str:
    """The newest prompt in a user message: its last text block with more than reminders in it.

    A turn that failed (a scripted error) leaves its prompt unanswered, and the CLI sends it again
    merged into the next user message; its directives belong to that failed turn, not to this one.
    """
    if not isinstance(message, dict) or message.get("role") != "user":
        return ""
    texts = [_REMINDER.sub("", str(b.get("text", ""))).strip() for b in _blocks_of(message) if b.get("type") == "text"]
    return next((text for text in reversed(texts) if text and not _continues_turn(text, interrupted_counts)), "")


def _continues_turn(text: str, interrupted_counts: bool) -> bool:
    """What the CLI itself says inside a turn, which is no turn of its own (its note of an interrupted turn is
    recalled among the earlier turns, `interrupted_counts`: the session kept it)."""
    if text.startswith(_INTERRUPTED):
        return not interrupted_counts
    return text.startswith(_ENFORCE) or text == _CONTINUE


def _current_turn(messages: list[Any]) -> Turn:
    # Tool results and reminder-only messages belong to the turn in progress, not to a new one.
    index = next((i for i in range(len(messages) - 1, -1, -1) if _user_text(messages[i])), -1)
    text = _user_text(messages[index]) if index >= 0 else ""
    directives = [(m[1], m[2] or "") for m in _DIRECTIVE.finditer(text)]
    prompt = _DIRECTIVE.sub("", text).strip()
    return Turn(text, prompt, directives, messages[: max(index, 0)], messages[index + 1 :])


def _integer(raw: str, what: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise DirectiveError(f"{what} expects an integer, got {raw!r}") from None


def _usage(turn: Turn, request: Json) -> Usage:
    args = turn.directive("usage")
    if args is None:
        size = len(json.dumps({"messages": request["messages"], "system": request.get("system")}))
        return Usage(input=max(1, size // 4))
    figures = dict.fromkeys(_USAGE_KEYS, 0)
    for pair in args.split():
        key, _, value = pair.partition("=")
        if key not in figures:
            raise DirectiveError(f"usage accepts {', '.join(_USAGE_KEYS)}, got {key!r}")
        figures[key] = _integer(value, f"usage {key}")
    return Usage(**figures)


def _failure(turn: Turn, headers: Mapping[str, str]) -> int | None:
    args = turn.directive("error")
    if args is None:
        return None
    status_raw, _, times_raw = args.strip().partition(" ")
    status = _integer(status_raw, "error")
    if not 400 <= status <= 599:
        raise DirectiveError(f"error expects an HTTP error status, got {status}")
    if not times_raw:
        return status
    times = _integer(times_raw.strip().removeprefix("times="), "error times")
    key = (headers.get("x-claude-code-session-id", ""), hashlib.sha256(turn.text.encode()).hexdigest())
    calls = _error_calls.pop(key, 0) + 1
    _error_calls[key] = calls
    while len(_error_calls) > _MAX_ERROR_KEYS:
        _error_calls.popitem(last=False)
    return status if calls <= times else None


# --- deciding what to say ---------------------------------------------------------------------


def _tool_call(name: str, args: str) -> tuple[str, Json]:
    if name == "bash":
        return "Bash", {"command": args.strip(), "description": "offline model command"}
    if name == "read":
        return "Read", {"file_path": args.strip()}
    if name == "skill":
        skill, _, skill_args = args.strip().partition(" ")
        if not skill:
            raise DirectiveError("skill expects `[[skill NAME ARGS]]`")
        return "Skill", {"skill": skill, **({"args": skill_args.strip()} if skill_args.strip() else {})}
    if name == "write":
        # Only the one separator is dropped, so CONTENT keeps any further whitespace.
        path, *content = re.split(r"\s", args.lstrip(), maxsplit=1)
        return "Write", {"file_path": path, "content": "".join(content)}
    if name == "task":
        agent, _, prompt = args.strip().partition(" ")
        if not agent or not prompt.strip():
            raise DirectiveError("task expects `[[task AGENT PROMPT]]`")
        task = {"subagent_type": agent, "description": "offline model task", "prompt": _unescape(prompt.strip())}
        return "Agent", {**task, "run_in_background": False}
    if name == "ask":
        question, *labels = [part.strip() for part in args.split("|")]
        if not question or not 2 <= len(labels) <= 4 or not all(labels):
            raise DirectiveError("ask expects `[[ask QUESTION | OPTION | OPTION]]` with 2 to 4 options")
        options = [{"label": label, "description": f"Answer {label}"} for label in labels]
        asked = {"question": question, "header": question[:12], "options": options, "multiSelect": False}
        return "AskUserQuestion", {"questions": [asked]}
    if name == "mcp":
        server, _, rest = args.strip().partition(" ")
        tool, _, raw = rest.strip().partition(" ")
        if not server or not tool:
            raise DirectiveError("mcp expects `[[mcp SERVER TOOL {json object}]]`")
        return _tool_call("tool", f"mcp__{server}__{tool} {raw}")
    tool, _, raw = args.strip().partition(" ")
    try:
        payload = json.loads(raw or "{}")
    except ValueError as exc:
        raise DirectiveError(f"tool {tool} input is not JSON: {exc}") from None
    if not tool or not isinstance(payload, dict):
        raise DirectiveError("tool expects `[[tool NAME {json object}]]`")
    return tool, payload


def _unescape(prompt: str) -> str:
    """PROMPT with each `{{name args}}` written `[[name args]]`; braces inside args (JSON) must balance."""
    out, index = [], 0
    for opening in _ESCAPED.finditer(prompt):
        if opening.start() < index:
            continue  # inside the directive just unescaped
        out.append(prompt[index : opening.start()] + "[[")
        depth, index = 0, opening.end()
        while index < len(prompt):
            char = prompt[index]
            if char == "}" and depth == 0 and prompt.startswith("}}", index):
                break
            depth += {"{": 1, "}": -1}.get(char, 0)
            out.append(char)
            index += 1
        else:
            raise DirectiveError(f"task prompt has `{{{{` with no closing `}}}}`: {prompt!r}")
        out.append("]]")
        index += 2
    return "".join(out) + prompt[index:]


def _structured(args: str) -> Json:
    try:
        payload = json.loads(args)
    except ValueError as exc:
        raise DirectiveError(f"structured input is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise DirectiveError("structured expects `[[structured {json object}]]`")
    return payload


def _tool_position(turn: Turn) -> int:
    assistants = [m for m in turn.later if isinstance(m, dict) and m.get("role") == "assistant"]
    return sum(1 for m in assistants if any(b.get("type") == "tool_use" for b in _blocks_of(m)))


def _tool_results(turn: Turn) -> str:
    calls = [b for b in _role_blocks(turn.later, "assistant") if b.get("type") == "tool_use"]
    names = {b.get("id"): b.get("name") for b in calls}
    lines = []
    for block in _role_blocks(turn.later, "user"):
        if block.get("type") != "tool_result":
            continue
        content = block.get("content")
        if isinstance(content, list):
            content = "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
        name = names.get(block.get("tool_use_id"), "unknown")
        lines.append(f"\n[{name} result] {str(content or '')[:_RESULT_LIMIT]}")
    return "".join(lines)


def _sent_while_working(turn: Turn) -> str:
    texts = []
    for block in _role_blocks(turn.later, "user", "system"):
        content = block.get("content") if block.get("type") == "tool_result" else block.get("text")
        if isinstance(content, list):
            content = "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
        texts += _SENT_WHILE_WORKING.findall(str(content or ""))
    return "".join(f"\n[sent while working] {text}" for text in texts)


def _earlier_turns(turn: Turn) -> str:
    texts = [t for t in (_user_text(message, interrupted_counts=True) for message in turn.earlier) if t]
    return "Earlier turns: " + ("; ".join(f"{n}) {t}" for n, t in enumerate(texts, 1)) or "none")


def _system_text(request: Json) -> str:
    system = request.get("system")
    blocks = [{"text": system}] if isinstance(system, str) else system if isinstance(system, list) else []
    texts = [str(b.get("text", "")) for b in blocks if isinstance(b, dict)]
    return "\n".join(t for t in texts if not t.startswith(_BILLING_HEADER))


def _options_report(request: Json, headers: Mapping[str, str]) -> str:
    output_config = request.get("output_config")
    tools = request.get("tools")
    system = _system_text(request)
    report = {
        "model": request.get("model"),
        "max_tokens": request.get("max_tokens"),
        "thinking": request.get("thinking"),
        "output_config": output_config,
        "effort": output_config.get("effort") if isinstance(output_config, dict) else None,
        "tools": sorted(str(t.get("name")) for t in tools if isinstance(t, dict)) if isinstance(tools, list) else [],
        "temperature": request.get("temperature"),
        "metadata": request.get("metadata"),
        "anthropic_beta": headers.get("anthropic-beta"),
        "system_sha256": hashlib.sha256(system.encode()).hexdigest()[:16],
        "system_tail": system[-_SYSTEM_TAIL:],
    }
    return json.dumps(report, sort_keys=True, separators=(",", ":"))


def _seen_report(request: Json, text: str) -> str:
    """How often `text` occurs in each part of the request (JSON-escaped as it travels), not counting `[[seen text]]`."""
    needle = json.dumps(text)[1:-1]
    directive = json.dumps(f"[[seen {text}]]")[1:-1]
    counts = {
        part: json.dumps(request.get(part) or "").replace(directive, "").count(needle)
        for part in ("system", "messages", "tools")
    }
    return "seen: " + " ".join(f"{part}={count}" for part, count in counts.items())


def _reply_text(turn: Turn, request: Json, headers: Mapping[str, str]) -> str:
    reply = turn.directive("reply")
    if reply is not None:
        return reply
    if turn.directive("options") is not None:
        return _options_report(request, headers)
    if (seen := turn.directive("seen")) is not None:
        return _seen_report(request, seen)
    words = turn.directive("words")
    if words is not None:
        return " ".join(f"word{n}" for n in range(1, _integer(words, "words") + 1))
    if turn.directive("recall") is not None:
        return _earlier_turns(turn)
    return f"{OFFLINE_LABEL} reply: {turn.prompt}{_tool_results(turn)}{_sent_while_working(turn)}"


def _pieces(text: str) -> list[str]:
    return re.findall(r"\S+\s*|\s+", text)


def _even_pieces(text: str, count: int) -> list[str]:
    bounds = [len(text) * n // count for n in range(count + 1)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if a < b]


def _text_block(turn: Turn, text: str) -> Block:
    pieces, pace = _pieces(text), 0.0
    slow = turn.directive("slow")
    if slow is not None:
        try:
            seconds = float(slow)
        except ValueError:
            raise DirectiveError(f"slow expects seconds, got {slow!r}") from None
        if len(pieces) < _MIN_SLOW_DELTAS:
            pieces = _even_pieces(text, _MIN_SLOW_DELTAS)
        pace = seconds / max(1, len(pieces))
    deltas = [{"type": "text_delta", "text": p} for p in pieces]
    return Block({"type": "text", "text": ""}, deltas, {"type": "text", "text": text}, pace)


def _thinking_block(text: str) -> Block:
    signature = "offline-" + hashlib.sha256(text.encode()).hexdigest()
    deltas: list[Json] = [{"type": "thinking_delta", "thinking": p} for p in _pieces(text)]
    deltas.append({"type": "signature_delta", "signature": signature})
    final = {"type": "thinking", "thinking": text, "signature": signature}
    return Block({"type": "thinking", "thinking": "", "signature": ""}, deltas, final)


def _tool_block(name: str, payload: Json, tool_id: str) -> Block:
    # Several partial_json chunks, as the real API sends, so clients must really accumulate them.
    chunks = _even_pieces(json.dumps(payload), 3)
    deltas = [{"type": "input_json_delta", "partial_json": c} for c in chunks]
    start = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
    return Block(start, deltas, {**start, "input": payload})


def _offers(request: Json, tool: str) -> bool:
    tools = request.get("tools")
    return isinstance(tools, list) and any(isinstance(t, dict) and t.get("name") == tool for t in tools)


def _plan(turn: Turn, request: Json, headers: Mapping[str, str], tool_id: str) -> tuple[list[Block], str]:
    position = _tool_position(turn)
    think = turn.directive("think")
    blocks = [_thinking_block(think)] if think is not None and position == 0 else []
    if (options := turn.directive("options")) is not None and options.strip():
        raise DirectiveError(f"options takes no arguments, got {options!r}")
    tools = [_tool_call(name, args) for name, args in turn.directives if name in _TOOL_DIRECTIVES]
    structured = [(_STRUCTURED_TOOL, _structured(args)) for name, args in turn.directives if name == "structured"]
    calls = tools + structured
    if position < len(calls):
        return [*blocks, _tool_block(*calls[position], tool_id)], "tool_use"
    if structured and _offers(request, _STRUCTURED_TOOL):
        # The CLI refused the object: a real model would try again, and the CLI counts the attempts.
        return [*blocks, _tool_block(*structured[-1], tool_id)], "tool_use"
    return [*blocks, _text_block(turn, _reply_text(turn, request, headers))], "end_turn"
